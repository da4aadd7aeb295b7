#include "config/pgbouncer_import.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>

namespace pgward::config {

namespace {

namespace fs = std::filesystem;

constexpr int kMaxIncludeDepth = 10;
constexpr std::string_view kSpace = " \t\r\n";

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kSpace) - first + 1);
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// A TOML key: bare when it can be, quoted otherwise.
std::string toml_key(std::string_view key) {
  const bool bare = !key.empty() && std::ranges::all_of(key, [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
  return bare ? std::string(key) : toml_quote(key);
}

// One `key = value` of the ini, with where it was written.
struct Entry {
  std::string file;
  int line = 0;
  std::string section;  // lowercased
  std::string key;      // as written; lowercased in [pgbouncer]
  std::string value;
};

[[noreturn]] void fail(const std::string& file, int line, std::string reason) {
  throw ConfigError(file, line, std::move(reason));
}

std::vector<std::string> read_file_lines(const std::string& path, const std::string& cited_file,
                                         int cited_line) {
  std::ifstream in(path, std::ios::binary);
  if (!in || fs::is_directory(path)) fail(cited_file, cited_line, "cannot read " + toml_quote(path));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  return lines;
}

// Reads PATH into ENTRIES, following %include (relative to PATH's folder) with the current section carried
// over, as PgBouncer does.
void read_ini(const std::string& path, std::string& section, std::vector<Entry>& entries, int depth,
              const std::string& cited_file, int cited_line) {
  if (depth > kMaxIncludeDepth) fail(cited_file, cited_line, "%include nested too deep (a loop?)");
  const auto lines = read_file_lines(path, cited_file, cited_line);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const int line = static_cast<int>(i) + 1;
    const std::string_view text = trim(lines[i]);
    if (text.empty() || text.front() == ';' || text.front() == '#') continue;
    if (text.starts_with("%include")) {
      const std::string_view name = trim(text.substr(std::string_view("%include").size()));
      if (name.empty()) fail(path, line, "%include needs a file name");
      const fs::path included = fs::path(name).is_absolute()
                                    ? fs::path(name)
                                    : (fs::path(path).parent_path() / name).lexically_normal();
      read_ini(included.string(), section, entries, depth + 1, path, line);
      continue;
    }
    if (text.front() == '[') {
      if (text.back() != ']' || text.size() < 3) fail(path, line, "malformed section header");
      section = lower(trim(text.substr(1, text.size() - 2)));
      continue;
    }
    const auto eq = text.find('=');
    if (eq == std::string_view::npos) fail(path, line, "expected KEY = VALUE");
    const std::string_view key = trim(text.substr(0, eq));
    if (key.empty()) fail(path, line, "missing key before =");
    if (section.empty()) fail(path, line, "setting outside a section");
    entries.push_back(Entry{path, line, section, section == "pgbouncer" ? lower(key) : std::string(key),
                            std::string(trim(text.substr(eq + 1)))});
  }
}

// libpq-style "key=value key='quoted value'" (backslash escapes, and '' for a quote as PgBouncer allows).
std::vector<std::pair<std::string, std::string>> parse_connstring(const Entry& entry) {
  std::vector<std::pair<std::string, std::string>> pairs;
  const std::string_view text = entry.value;
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < text.size() && kSpace.find(text[i]) != std::string_view::npos) ++i;
  };
  for (skip_space(); i < text.size(); skip_space()) {
    const std::size_t key_start = i;
    while (i < text.size() && text[i] != '=' && kSpace.find(text[i]) == std::string_view::npos) ++i;
    std::string key = lower(text.substr(key_start, i - key_start));
    skip_space();
    if (i >= text.size() || text[i] != '=' || key.empty()) {
      fail(entry.file, entry.line, entry.key + ": expected key=value in the connection string");
    }
    ++i;
    skip_space();
    std::string value;
    if (i < text.size() && text[i] == '\'') {
      ++i;
      for (;;) {
        if (i >= text.size())
          fail(entry.file, entry.line, entry.key + ": unterminated quoted value of " + key);
        const char c = text[i++];
        if (c == '\\' && i < text.size()) {
          value += text[i++];
        } else if (c == '\'') {
          if (i < text.size() && text[i] == '\'') {
            value += '\'';
            ++i;
          } else {
            break;
          }
        } else {
          value += c;
        }
      }
    } else {
      while (i < text.size() && kSpace.find(text[i]) == std::string_view::npos) value += text[i++];
    }
    pairs.emplace_back(std::move(key), std::move(value));
  }
  return pairs;
}

std::optional<std::uint64_t> whole_number(std::string_view text) {
  std::uint64_t value = 0;
  if (text.empty() || !std::ranges::all_of(text, [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// PgBouncer durations are seconds, possibly fractional ("0.5"); a value with a unit is taken as pgward's.
std::optional<Duration> seconds(std::string_view text) {
  if (const auto with_unit = parse_duration(text)) return with_unit;
  const auto dot = text.find('.');
  const auto whole = whole_number(text.substr(0, dot));
  if (!whole) return std::nullopt;
  if (dot != std::string_view::npos && !whole_number(text.substr(dot + 1))) return std::nullopt;
  return parse_duration(std::string(text) + "s");
}

std::string duration_literal(Duration d) {
  const auto ms = d.count();
  return toml_quote(ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms");
}

bool is_pool_mode(std::string_view mode) {
  return mode == "session" || mode == "transaction" || mode == "statement";
}

// Keys of a TOML table in the order first set; a later setting of the same key replaces the value.
class Table {
 public:
  void set(const std::string& key, std::string literal) {
    for (auto& [k, v] : items_) {
      if (k == key) {
        v = std::move(literal);
        return;
      }
    }
    items_.emplace_back(key, std::move(literal));
  }
  bool has(std::string_view key) const {
    return std::ranges::any_of(items_, [&](const auto& item) { return item.first == key; });
  }
  bool empty() const { return items_.empty(); }
  void print(std::ostream& os) const {
    for (const auto& [k, v] : items_) os << k << " = " << v << "\n";
  }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

enum class Kind { count, positive_count, duration, nonzero_duration, pool_mode };

struct Mapping {
  std::string_view pgbouncer;
  std::string_view table;  // "proxy" or "pool"
  std::string_view key;
  Kind kind;
};

constexpr Mapping kMappings[] = {
    {"max_client_conn", "proxy", "max_client_conn", Kind::positive_count},
    {"client_login_timeout", "proxy", "client_login_timeout", Kind::nonzero_duration},
    {"pool_mode", "pool", "mode", Kind::pool_mode},
    {"default_pool_size", "pool", "size", Kind::positive_count},
    {"min_pool_size", "pool", "min_size", Kind::count},
    {"query_wait_timeout", "pool", "wait_timeout", Kind::nonzero_duration},
    {"server_idle_timeout", "pool", "server_idle_timeout", Kind::nonzero_duration},
    {"server_lifetime", "pool", "server_lifetime", Kind::nonzero_duration},
    {"server_connect_timeout", "pool", "server_connect_timeout", Kind::nonzero_duration},
    {"server_check_delay", "pool", "server_check_delay", Kind::duration},
    {"idle_transaction_timeout", "pool", "idle_in_transaction_timeout", Kind::duration},
    {"max_prepared_statements", "pool", "max_prepared_statements", Kind::count},
    {"max_user_connections", "pool", "max_user_connections", Kind::count},  // 0 = no limit in both
    {"max_db_connections", "pool", "max_db_connections", Kind::count},
};

// Why a [pgbouncer] setting without a pgward counterpart is left out.
std::string_view why_not_carried(std::string_view key) {
  constexpr std::pair<std::string_view, std::string_view> kReasons[] = {
      {"logfile", "not needed: pgward logs to stderr"},
      {"syslog", "not needed: pgward logs to stderr"},
      {"syslog_ident", "not needed: pgward logs to stderr"},
      {"syslog_facility", "not needed: pgward logs to stderr"},
      {"log_connections", "not needed: pgward logs connections at log_level info"},
      {"log_disconnections", "not needed: pgward logs connections at log_level info"},
      {"log_pooler_errors", "not needed: pgward logs its errors"},
      {"log_stats", "not needed: pgward serves its counters on /metrics"},
      {"stats_period", "not needed: pgward serves its counters on /metrics"},
      {"verbose", "not needed: set [proxy] log_level"},
      {"pidfile", "not needed: pgward runs in the foreground (systemd, container)"},
      {"user", "not needed: pgward runs in the foreground (systemd, container)"},
      {"unix_socket_dir", "not supported: pgward listens on TCP only"},
      {"unix_socket_mode", "not supported: pgward listens on TCP only"},
      {"unix_socket_group", "not supported: pgward listens on TCP only"},
      {"stats_users",
       "not carried over: pgward's console has no read-only users (add them to [admin] console_users for "
       "full console access, or read the admin HTTP port's /api views)"},
      {"auth_query", "not supported: list every user in the users file"},
      {"auth_user", "not supported: list every user in the users file"},
      {"auth_dbname", "not supported: list every user in the users file"},
      {"auth_hba_file", "not supported: pgward has no hba file"},
      {"reserve_pool_size", "not supported: pgward has no reserve pool ([pool] size is a hard bound)"},
      {"reserve_pool_timeout", "not supported: pgward has no reserve pool ([pool] size is a hard bound)"},
  };
  for (const auto& [name, why] : kReasons) {
    if (name == key) return why;
  }
  if (key.starts_with("client_tls_") || key.starts_with("server_tls_"))
    return "not supported: pgward has no TLS yet";
  return "not supported by pgward";
}

class Importer {
 public:
  explicit Importer(std::optional<std::string> userlist) : userlist_(std::move(userlist)) {}

  PgbouncerImport run(const std::string& ini_path) {
    std::string section;
    std::vector<Entry> entries;
    read_ini(ini_path, section, entries, 0, ini_path, 1);
    for (const Entry& entry : entries) {
      if (entry.section == "pgbouncer") {
        setting(entry);
      } else if (entry.section == "databases") {
        database(entry);
      } else if (entry.section == "users") {
        warn(entry, entry.key, "per-user pool settings are not supported by pgward");
      } else {
        warn(entry, entry.key, "unknown section [" + entry.section + "]");
      }
    }
    finish_listen();
    finish_auth();

    std::ostringstream os;
    os << "# pgward configuration converted from " << ini_path << " (pgward --import-pgbouncer)\n";
    print_table(os, "proxy", proxy_);
    print_table(os, "admin", admin_);
    print_table(os, "auth", auth_);
    print_table(os, "pool", pool_);
    for (const auto& [name, table] : databases_) {
      os << "\n[[database]]\nname = " << toml_quote(name) << "\n";
      table.print(os);
    }
    if (userlist_) os << users_block(*userlist_);
    return PgbouncerImport{os.str(), std::move(warnings_)};
  }

 private:
  void warn(const Entry& entry, std::string_view key, std::string_view why) {
    warnings_.push_back(entry.file + ":" + std::to_string(entry.line) + ": " + std::string(key) + ": " +
                        std::string(why));
  }

  static void print_table(std::ostream& os, std::string_view name, const Table& table) {
    if (table.empty()) return;
    os << "\n[" << name << "]\n";
    table.print(os);
  }

  // The TOML literal for VALUE of KIND, or nullopt (with a warning) when it cannot be carried over.
  std::optional<std::string> convert(const Entry& entry, std::string_view key, const std::string& value,
                                     Kind kind) {
    switch (kind) {
      case Kind::count:
      case Kind::positive_count: {
        const auto n = whole_number(value);
        if (!n || *n > 0xffffffffull)
          fail(entry.file, entry.line,
               std::string(key) + ": expected a whole number, got " + toml_quote(value));
        if (kind == Kind::positive_count && *n == 0) {
          warn(entry, key, "0 has no pgward equivalent; pgward's default applies");
          return std::nullopt;
        }
        return std::to_string(*n);
      }
      case Kind::duration:
      case Kind::nonzero_duration: {
        const auto d = seconds(value);
        if (!d)
          fail(entry.file, entry.line, std::string(key) + ": expected seconds, got " + toml_quote(value));
        if (kind == Kind::nonzero_duration && d->count() == 0) {
          warn(entry, key, "0 (disabled) has no pgward equivalent; pgward's default applies");
          return std::nullopt;
        }
        return duration_literal(*d);
      }
      case Kind::pool_mode:
        if (!is_pool_mode(value)) {
          fail(entry.file, entry.line,
               std::string(key) + ": unknown pool mode " + toml_quote(value) +
                   " (expected session, transaction or statement)");
        }
        return toml_quote(value);
    }
    return std::nullopt;
  }

  void setting(const Entry& entry) {
    const std::string& key = entry.key;
    if (key == "listen_addr") {
      listen_addr_ = entry;
    } else if (key == "listen_port") {
      listen_port_ = entry;
      const auto port = whole_number(entry.value);
      if (!port || *port > 65535)
        fail(entry.file, entry.line, "listen_port: bad port " + toml_quote(entry.value));
    } else if (key == "auth_type") {
      if (entry.value == "trust" || entry.value == "md5" || entry.value == "scram-sha-256") {
        auth_type_ = entry.value;
      } else {
        warn(
            entry, key,
            toml_quote(entry.value) + " is not supported by pgward (trust, md5 or scram-sha-256); using md5");
        auth_type_ = "md5";
      }
    } else if (key == "auth_file") {
      auth_file_ = entry;
    } else if (key == "admin_users") {
      console_users(entry);
    } else if (const auto* mapping = std::ranges::find(kMappings, key, &Mapping::pgbouncer);
               mapping != std::end(kMappings)) {
      if (auto literal = convert(entry, key, entry.value, mapping->kind)) {
        (mapping->table == "proxy" ? proxy_ : pool_).set(std::string(mapping->key), std::move(*literal));
      }
    } else {
      warn(entry, key, why_not_carried(key));
    }
  }

  void finish_listen() {
    if (!listen_addr_ && !listen_port_) return;
    const std::string port = listen_port_ ? listen_port_->value : "6432";
    std::vector<std::string> addresses;
    if (listen_addr_) {
      std::string_view rest = listen_addr_->value;
      while (!rest.empty()) {
        const auto comma = rest.find(',');
        const std::string_view host = trim(rest.substr(0, comma));
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        if (host.empty()) continue;
        const std::string address =
            (host.find(':') != std::string_view::npos ? "[" + std::string(host) + "]" : std::string(host)) +
            ":" + port;
        if (parse_endpoint(address)) {
          addresses.push_back(address);
        } else {
          warn(*listen_addr_, "listen_addr",
               toml_quote(host) +
                   " is not an address pgward can listen on (a numeric address, localhost or *)");
        }
      }
    }
    if (addresses.empty())
      addresses.push_back("127.0.0.1:" + port);  // PgBouncer's Unix socket only: TCP on loopback
    if (addresses.size() == 1) {
      proxy_.set("listen", toml_quote(addresses.front()));
    } else {
      std::string array = "[";
      for (std::size_t i = 0; i < addresses.size(); ++i) array += (i ? ", " : "") + toml_quote(addresses[i]);
      proxy_.set("listen", array + "]");
    }
  }

  // admin_users = a, b => [admin] console_users = ["a", "b"]
  void console_users(const Entry& entry) {
    std::vector<std::string> names;
    std::string_view rest = entry.value;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const std::string name(trim(rest.substr(0, comma)));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (!name.empty() && std::ranges::find(names, name) == names.end()) names.push_back(name);
    }
    std::string array = "[";
    for (std::size_t i = 0; i < names.size(); ++i) array += (i ? ", " : "") + toml_quote(names[i]);
    if (!names.empty()) admin_.set("console_users", array + "]");
  }

  void finish_auth() {
    auth_.set("type", toml_quote(auth_type_));
    if (auth_file_ && !userlist_) {
      warn(*auth_file_, "auth_file",
           "PgBouncer's userlist format is not pgward's: convert it with --userlist FILE and save it as "
           "users.toml");
    }
    if (auth_type_ != "trust" || userlist_) auth_.set("users_file", toml_quote("users.toml"));
  }

  void database(const Entry& entry) {
    const std::string& name = entry.key;
    if (std::ranges::any_of(databases_, [&](const auto& db) { return db.first == name; })) {
      fail(entry.file, entry.line, "duplicate database " + toml_quote(name));
    }
    Table table;
    bool has_host = false;
    for (const auto& [key, value] : parse_connstring(entry)) {
      const std::string cited = name + "." + key;
      if (key == "host") {
        std::string host = value.substr(0, value.find(','));
        if (host.size() != value.size())
          warn(entry, cited, "several hosts: pgward connects to the first one only");
        table.set("host", toml_quote(host));
        has_host = true;
      } else if (key == "port") {
        const auto port = whole_number(value.substr(0, value.find(',')));
        if (!port || *port == 0 || *port > 65535)
          fail(entry.file, entry.line, cited + ": bad port " + toml_quote(value));
        table.set("port", std::to_string(*port));
      } else if (key == "dbname" && name == kFallbackDatabase) {
        warn(entry, cited,
             "not supported: the fallback database serves each database under the client's name");
      } else if (key == "dbname" || key == "user" || key == "password") {
        table.set(key, toml_quote(value));
      } else if (key == "pool_size") {
        if (auto literal = convert(entry, cited, value, Kind::positive_count))
          table.set("pool_size", *literal);
      } else if (key == "min_pool_size") {
        if (auto literal = convert(entry, cited, value, Kind::count)) table.set("min_size", *literal);
      } else if (key == "pool_mode") {
        if (auto literal = convert(entry, cited, value, Kind::pool_mode)) table.set("pool_mode", *literal);
      } else if (key == "max_db_connections") {
        if (auto literal = convert(entry, cited, value, Kind::count))
          table.set("max_db_connections", *literal);
      } else {
        warn(entry, cited, "not supported by pgward");
      }
    }
    if (!has_host) {
      warn(entry, name + ".host",
           "not set: PgBouncer would use a Unix socket, pgward connects to 127.0.0.1 (set host to the socket "
           "directory to keep the socket)");
    }
    databases_.emplace_back(name, std::move(table));
  }

  // userlist.txt: `"user" "password or verifier"` per line, "" for a quote inside. Printed as a commented
  // users.toml so that stdout stays one valid pgward configuration.
  std::string users_block(const std::string& path) {
    std::ostringstream os;
    os << "\n# users.toml converted from " << path
       << ": save the lines below, without their leading \"# \", as users.toml next to this file.\n";
    const auto lines = read_file_lines(path, path, 1);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      const int line = static_cast<int>(i) + 1;
      std::string_view text = trim(lines[i]);
      if (text.empty() || text.front() == ';' || text.front() == '#') continue;
      std::string fields[2];
      for (std::string& field : fields) {
        text = trim(text);
        if (!text.starts_with('"')) fail(path, line, "expected \"user\" \"password\"");
        std::size_t j = 1;
        for (;; ++j) {
          if (j >= text.size()) fail(path, line, "unterminated quoted string");
          if (text[j] == '"') {
            if (j + 1 < text.size() && text[j + 1] == '"') {
              field += '"';
              ++j;
              continue;
            }
            break;
          }
          field += text[j];
        }
        text = text.substr(j + 1);
      }
      if (fields[0].empty()) fail(path, line, "empty user name");
      if (fields[1].empty()) {
        warnings_.push_back(path + ":" + std::to_string(line) + ": " + fields[0] +
                            ": empty password: not supported by pgward, user left out");
        continue;
      }
      os << "# " << toml_key(fields[0]) << " = " << toml_quote(fields[1]) << "\n";
    }
    return os.str();
  }

  std::optional<std::string> userlist_;
  std::vector<std::string> warnings_;
  Table proxy_;
  Table admin_;
  Table auth_;
  Table pool_;
  std::vector<std::pair<std::string, Table>> databases_;
  std::optional<Entry> listen_addr_;
  std::optional<Entry> listen_port_;
  std::optional<Entry> auth_file_;
  std::string auth_type_ = "md5";  // PgBouncer's default
};

}  // namespace

PgbouncerImport import_pgbouncer(const std::string& ini_path,
                                 const std::optional<std::string>& userlist_path) {
  return Importer(userlist_path).run(ini_path);
}

}  // namespace pgward::config
