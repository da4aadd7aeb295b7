#include "config/config.hpp"

#include <arpa/inet.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <thread>
#include <utility>

#include "config/tls_files.hpp"
#include "protocol/auth.hpp"

namespace pgward::config {

namespace {

constexpr std::int64_t kMaxUint32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kMinMessageSize = 8u << 10;
constexpr std::uint64_t kMaxMessageSize = 1u << 30;
constexpr std::int64_t kMaxAuthQueryPoolSize = 100;  // lookup connections per database: a sane ceiling
// Far beyond any sensible timeout, yet small enough that adding it to a clock's now() (nanoseconds since
// 1970 for system_clock) cannot overflow.
constexpr Duration kMaxDuration = std::chrono::hours(24 * 365 * 100);
constexpr std::string_view kEnvPrefix = "env:";
constexpr std::string_view kScramPrefix = "SCRAM-SHA-256$";
constexpr std::string_view kServerTlsPrefix = "server_tls_";  // [[database]] overrides of [server_tls] keys

constexpr std::pair<std::string_view, PoolMode> kPoolModes[] = {{"session", PoolMode::session},
                                                                {"transaction", PoolMode::transaction},
                                                                {"statement", PoolMode::statement}};
constexpr std::pair<std::string_view, AuthType> kAuthTypes[] = {
    {"trust", AuthType::trust}, {"md5", AuthType::md5}, {"scram-sha-256", AuthType::scram_sha_256}};
constexpr std::pair<std::string_view, CommitResolution> kCommitResolutions[] = {
    {"off", CommitResolution::off}, {"verify", CommitResolution::verify}};
constexpr std::pair<std::string_view, SessionState> kSessionStates[] = {
    {"track", SessionState::track}, {"error", SessionState::error}, {"ignore", SessionState::ignore}};
constexpr std::pair<std::string_view, TlsMode> kTlsModes[] = {
    {"disable", TlsMode::disable}, {"allow", TlsMode::allow},         {"prefer", TlsMode::prefer},
    {"require", TlsMode::require}, {"verify-ca", TlsMode::verify_ca}, {"verify-full", TlsMode::verify_full}};
constexpr std::pair<std::string_view, TlsVersion> kTlsVersions[] = {{"TLSv1.2", TlsVersion::tls1_2},
                                                                    {"TLSv1.3", TlsVersion::tls1_3}};
constexpr std::pair<std::string_view, std::string_view> kIoBackends[] = {
    {"auto", "auto"}, {"epoll", "epoll"}, {"io_uring", "io_uring"}};
constexpr std::pair<std::string_view, std::string_view> kLogLevels[] = {
    {"trace", "trace"}, {"debug", "debug"}, {"info", "info"}, {"warn", "warn"}, {"error", "error"}};

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_lower_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }
bool is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return std::ranges::equal(a, b, [](char x, char y) { return to_lower(x) == to_lower(y); });
}

// Quotes a value for an error message, as TOML would: the message stays on one line.
std::string in_quotes(std::string_view text) { return toml_quote(text); }

// Parses an unsigned decimal with no sign, spaces or other characters; nullopt on overflow.
std::optional<std::uint64_t> parse_unsigned(std::string_view text) {
  std::uint64_t value = 0;
  if (text.empty() || !std::ranges::all_of(text, is_digit)) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

bool is_ipv4(const std::string& host) {
  in_addr addr{};
  return inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

bool is_ipv6(const std::string& host) {
  in6_addr addr{};
  return inet_pton(AF_INET6, host.c_str(), &addr) == 1;
}

// RFC 1123 host names, plus '_' which container and service-discovery names commonly use.
bool is_host_name(std::string_view host) {
  if (host.ends_with('.')) host.remove_suffix(1);
  if (host.empty() || host.size() > 253) return false;
  std::string_view last_label;
  while (!host.empty()) {
    const auto dot = host.find('.');
    const std::string_view label = host.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    if (!std::ranges::all_of(label, [](char c) { return is_alnum(c) || c == '-' || c == '_'; })) return false;
    last_label = label;
    host = dot == std::string_view::npos ? std::string_view() : host.substr(dot + 1);
  }
  // No top-level domain is numeric, so "10.0.0.300" is a mistyped address rather than a name.
  return !std::ranges::all_of(last_label, is_digit);
}

// Why a users-file secret is unusable, or nullopt. Like PostgreSQL, anything that is not a verifier is a
// plain password; but a string shaped like a verifier and yet malformed is almost surely a pasting mistake.
std::optional<std::string> secret_problem(std::string_view secret) {
  if (secret.empty()) return "empty password";
  if (secret.starts_with(kScramPrefix) && !protocol::auth::parse_scram_verifier(secret)) {
    return "malformed SCRAM-SHA-256 verifier (expected "
           "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)";
  }
  if (secret.size() == 35 && secret.starts_with("md5") &&
      !std::ranges::all_of(secret.substr(3), is_lower_hex)) {
    return "malformed md5 verifier (expected md5 followed by 32 lowercase hex digits)";
  }
  return std::nullopt;
}

std::string format_endpoint(const Endpoint& endpoint) {
  const bool v6 = endpoint.host.find(':') != std::string::npos;
  return (v6 ? "[" + endpoint.host + "]" : endpoint.host) + ":" + std::to_string(endpoint.port);
}

// parse_endpoint with the reason for a rejection, so that the config error can say what is wrong.
std::optional<Endpoint> parse_endpoint_explained(std::string_view text, std::string& why) {
  std::string host;
  std::string_view port_text;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      why = "missing ] after the IPv6 address";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    if (!is_ipv6(host)) {
      why = in_quotes(host) + " is not an IPv6 address";
      return std::nullopt;
    }
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      why = "missing port (expected [address]:port)";
      return std::nullopt;
    }
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      why = "missing port (expected host:port)";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      why = "IPv6 addresses must be in brackets, e.g. [::1]:6432";
      return std::nullopt;
    }
    if (host.empty()) {
      why = "missing host (use * for all interfaces)";
      return std::nullopt;
    }
    if (host == "*") {
      host = "0.0.0.0";  // the contract promises a numeric address or localhost
    } else if (iequals(host, "localhost")) {
      host = "localhost";
    } else if (!is_ipv4(host)) {
      why = in_quotes(host) + " is not an IP address (use a numeric address, localhost or *)";
      return std::nullopt;
    }
  }
  const auto port = parse_unsigned(port_text);
  if (!port || *port > std::numeric_limits<std::uint16_t>::max()) {
    why = "bad port " + in_quotes(port_text) + " (expected 0..65535)";
    return std::nullopt;
  }
  return Endpoint{std::move(host), static_cast<std::uint16_t>(*port)};
}

std::string_view type_name(toml::node_type type) {
  switch (type) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

int line_of(const toml::source_region& region) {
  return region.begin.line > 0 ? static_cast<int>(region.begin.line) : 1;
}

// One `key = value` of a table, named as in messages ("pool.size").
struct Field {
  std::string name;
  std::string key;
  const toml::node* value;
  int line;
};

// toml::table is ordered by key; visiting in file order makes the first error reported the first one in
// the file.
std::vector<Field> fields_of(const toml::table& table, std::string_view prefix) {
  std::vector<std::pair<toml::source_position, Field>> sorted;
  for (auto&& [key, value] : table) {
    std::string name =
        prefix.empty() ? std::string(key.str()) : std::string(prefix) + "." + std::string(key.str());
    sorted.push_back(
        {key.source().begin, Field{std::move(name), std::string(key.str()), &value, line_of(key.source())}});
  }
  std::ranges::stable_sort(sorted, [](const auto& a, const auto& b) {
    return std::pair(a.first.line, a.first.column) < std::pair(b.first.line, b.first.column);
  });
  std::vector<Field> fields;
  for (auto& entry : sorted) fields.push_back(std::move(entry.second));
  return fields;
}

// A file being read: turns problems into "FILE:LINE: reason".
class Source {
 public:
  explicit Source(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  [[noreturn]] void fail(int line, std::string reason) const {
    throw ConfigError(path_, line, std::move(reason));
  }
  [[noreturn]] void fail(const Field& field, std::string_view reason) const {
    fail(field.line, field.name + ": " + std::string(reason));
  }

  // The file's contents, or nullopt with ERROR set to why it cannot be read.
  std::optional<std::string> read_text(std::string& error) const {
    struct Closer {
      void operator()(std::FILE* file) const { std::fclose(file); }
    };
    errno = 0;
    const std::unique_ptr<std::FILE, Closer> file(std::fopen(path_.c_str(), "rb"));
    if (file) {
      std::string text;
      char buf[64 * 1024];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, file.get())) > 0) text.append(buf, n);
      if (!std::ferror(file.get())) return text;
    }
    error = std::strerror(errno != 0 ? errno : EIO);  // a directory fails in fread() with EISDIR
    return std::nullopt;
  }

  toml::table parse(const std::string& text) const {
    try {
      return toml::parse(std::string_view(text), std::string_view(path_));
    } catch (const toml::parse_error& e) {
      fail(line_of(e.source()), std::string(e.description()));
    }
  }

  const toml::table& table(const Field& field) const {
    const auto* table = field.value->as_table();
    if (!table) fail(field, "expected a table, got " + std::string(type_name(field.value->type())));
    return *table;
  }

  const std::string& string(const Field& field) const {
    const auto* value = field.value->as_string();
    if (!value) fail(field, "expected a string, got " + std::string(type_name(field.value->type())));
    return value->get();
  }

  std::string non_empty_string(const Field& field) const {
    const std::string& value = string(field);
    if (value.empty()) fail(field, "must not be empty");
    return value;
  }

  std::int64_t integer(const Field& field, std::int64_t min, std::int64_t max) const {
    const auto* value = field.value->as_integer();
    if (!value) fail(field, "expected an integer, got " + std::string(type_name(field.value->type())));
    const std::int64_t n = value->get();
    if (n < min) fail(field, "must be at least " + std::to_string(min) + ", got " + std::to_string(n));
    if (n > max) fail(field, "must be at most " + std::to_string(max) + ", got " + std::to_string(n));
    return n;
  }

  std::uint32_t uint32(const Field& field, std::int64_t min) const {
    return static_cast<std::uint32_t>(integer(field, min, kMaxUint32));
  }

  Duration duration(const Field& field) const {
    std::string text;
    if (const auto* s = field.value->as_string()) {
      text = s->get();
    } else if (const auto* i = field.value->as_integer()) {
      text = std::to_string(i->get());  // so that `30` gets the same advice as "30"
    } else if (const auto* f = field.value->as_floating_point()) {
      char buf[64];
      text.assign(buf, std::to_chars(buf, buf + sizeof buf, f->get()).ptr);
    } else {
      fail(field,
           "expected a duration string such as \"30s\", got " + std::string(type_name(field.value->type())));
    }
    const auto value = parse_duration(text);
    if (!value) fail(field, "bad duration " + in_quotes(text) + " (use a unit: ms, s, m, h)");
    return *value;
  }

  std::uint64_t size(const Field& field) const {
    if (const auto* i = field.value->as_integer()) {
      if (i->get() < 0) fail(field, "must not be negative, got " + std::to_string(i->get()));
      return static_cast<std::uint64_t>(i->get());
    }
    const auto* s = field.value->as_string();
    if (!s) {
      fail(field,
           "expected a size such as 1048576 or \"64MB\", got " + std::string(type_name(field.value->type())));
    }
    const auto value = parse_size(s->get());
    if (!value) fail(field, "bad size " + in_quotes(s->get()) + " (use bytes or a unit: kB, MB, GB)");
    return *value;
  }

  template <typename T, std::size_t N>
  T choice(const Field& field, const std::pair<std::string_view, T> (&choices)[N]) const {
    const std::string& value = string(field);
    for (const auto& [name, result] : choices) {
      if (name == value) return result;
    }
    std::string expected;
    for (std::size_t i = 0; i < N; ++i) {
      if (i > 0) expected += i + 1 == N ? " or " : ", ";
      expected += choices[i].first;
    }
    fail(field, "unknown value " + in_quotes(value) + " (expected " + expected + ")");
  }

  // A string where secrets are accepted: "env:VAR" reads the environment variable VAR.
  std::string secret(const Field& field, const std::string& value) const {
    if (!value.starts_with(kEnvPrefix)) return value;
    const std::string variable = value.substr(kEnvPrefix.size());
    if (variable.empty()) fail(field, "\"env:\" needs an environment variable name");
    const char* resolved = std::getenv(variable.c_str());
    if (!resolved) fail(field.line, "environment variable " + variable + " is not set");
    return resolved;
  }

  // An array of distinct non-empty strings (user names).
  std::vector<std::string> names(const Field& field) const {
    const auto* array = field.value->as_array();
    if (!array) fail(field, "expected an array of names, got " + std::string(type_name(field.value->type())));
    std::vector<std::string> out;
    for (const toml::node& element : *array) {
      const auto* item = element.as_string();
      const int line = line_of(element.source());
      if (!item) fail(line, field.name + ": expected strings, got " + std::string(type_name(element.type())));
      if (item->get().empty()) fail(line, field.name + ": a name must not be empty");
      if (std::ranges::find(out, item->get()) != out.end())
        fail(line, field.name + ": " + in_quotes(item->get()) + " is listed twice");
      out.push_back(item->get());
    }
    return out;
  }

  // "host:port" or a non-empty array of them.
  std::vector<Endpoint> listen(const Field& field) const {
    std::vector<std::pair<std::string, int>> items;  // text, line
    if (const auto* s = field.value->as_string()) {
      items.emplace_back(s->get(), field.line);
    } else if (const auto* array = field.value->as_array()) {
      for (const toml::node& element : *array) {
        const auto* item = element.as_string();
        if (!item) {
          fail(line_of(element.source()), field.name + ": expected \"host:port\" strings, got " +
                                              std::string(type_name(element.type())));
        }
        items.emplace_back(item->get(), line_of(element.source()));
      }
      if (items.empty()) fail(field, "needs at least one address");
    } else {
      fail(field,
           "expected \"host:port\" or an array of them, got " + std::string(type_name(field.value->type())));
    }
    std::vector<Endpoint> endpoints;
    for (const auto& [text, line] : items) {
      std::string why;
      auto endpoint = parse_endpoint_explained(text, why);
      if (!endpoint) fail(line, field.name + ": bad address " + in_quotes(text) + ": " + why);
      if (endpoint->port != 0 && std::ranges::find(endpoints, *endpoint) != endpoints.end()) {
        fail(line, field.name + ": " + format_endpoint(*endpoint) + " is listed twice");
      }
      endpoints.push_back(std::move(*endpoint));
    }
    return endpoints;
  }

 private:
  std::string path_;
};

[[noreturn]] void unknown_key(const Source& source, const Field& field) {
  source.fail(field.line, "unknown key " + in_quotes(field.name));
}

// Lines where size and min_size were set in one table, to point a min_size > size error at the cause.
struct PoolLines {
  int size = 0;
  int min_size = 0;
};

// Applies a [pool] key (as named in [pool]) to POOL; false when KEY is not one.
bool apply_pool_field(const Source& source, const Field& field, std::string_view key, PoolSettings& pool,
                      PoolLines& lines) {
  if (key == "mode") {
    pool.mode = source.choice(field, kPoolModes);
  } else if (key == "size") {
    pool.size = source.uint32(field, 1);
    lines.size = field.line;
  } else if (key == "min_size") {
    pool.min_size = source.uint32(field, 0);
    lines.min_size = field.line;
  } else if (key == "wait_timeout") {
    pool.wait_timeout = source.duration(field);
  } else if (key == "server_idle_timeout") {
    pool.server_idle_timeout = source.duration(field);
  } else if (key == "server_lifetime") {
    pool.server_lifetime = source.duration(field);
  } else if (key == "server_connect_timeout") {
    pool.server_connect_timeout = source.duration(field);
  } else if (key == "server_retry_max") {
    pool.server_retry_max = source.uint32(field, 0);
  } else if (key == "server_check_delay") {
    pool.server_check_delay = source.duration(field);
  } else if (key == "idle_in_transaction_timeout") {
    pool.idle_in_transaction_timeout = source.duration(field);
  } else if (key == "commit_resolution") {
    pool.commit_resolution = source.choice(field, kCommitResolutions);
  } else if (key == "session_state") {
    pool.session_state = source.choice(field, kSessionStates);
  } else if (key == "max_prepared_statements") {
    pool.max_prepared_statements = source.uint32(field, 0);
  } else if (key == "max_user_connections") {
    pool.max_user_connections = source.uint32(field, 0);
  } else if (key == "max_db_connections") {
    pool.max_db_connections = source.uint32(field, 0);
  } else {
    return false;
  }
  return true;
}

// Where a server lives: a host name, an IP address or the directory of a Unix socket.
bool is_server_host(const std::string& host) {
  return host.starts_with('/') || is_ipv4(host) || is_ipv6(host) || is_host_name(host);
}

// Applies a TLS key (as named in [client_tls] / [server_tls]) to TLS; false when KEY is not one. File names
// are resolved against the config file's folder.
bool apply_tls_field(const Source& source, const Field& field, std::string_view key, TlsSettings& tls) {
  auto file = [&](std::string& path, int& line) {
    const std::string& value = source.string(field);
    const auto dir = std::filesystem::path(source.path()).parent_path();
    path = value.empty() ? std::string() : (dir / value).lexically_normal().string();
    line = field.line;
  };
  if (key == "mode") {
    tls.mode = source.choice(field, kTlsModes);
  } else if (key == "cert_file") {
    file(tls.cert_file, tls.cert_line);
  } else if (key == "key_file") {
    file(tls.key_file, tls.key_line);
  } else if (key == "ca_file") {
    file(tls.ca_file, tls.ca_line);
  } else if (key == "min_protocol") {
    tls.min_protocol = source.choice(field, kTlsVersions);
  } else {
    return false;
  }
  return true;
}

// What TLS settings need beyond their keys, and their files readable and consistent. CLIENT_SIDE:
// [client_tls] (a certificate is needed to offer TLS at all, a CA to verify clients); else a server side (a
// client certificate needs its key, and the other way round). WHERE names the table in messages, LINE is its
// line.
void check_tls(const Source& source, const TlsSettings& tls, bool client_side, const std::string& where,
               int line) {
  const bool verify = tls.mode == TlsMode::verify_ca || tls.mode == TlsMode::verify_full;
  if (client_side && tls.mode != TlsMode::disable && (tls.cert_file.empty() || tls.key_file.empty())) {
    source.fail(line, where + ": mode " + in_quotes(to_string(tls.mode)) + " needs cert_file and key_file");
  }
  if (client_side && verify && tls.ca_file.empty()) {
    source.fail(line, where + ": mode " + in_quotes(to_string(tls.mode)) +
                          " needs ca_file (the CA that signs client certificates)");
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    source.fail(tls.cert_file.empty() ? tls.key_line : tls.cert_line,
                where + ": cert_file and key_file go together");
  }
  if (!tls.cert_file.empty()) {
    if (auto why = tls_cert_problem(tls.cert_file)) source.fail(tls.cert_line, where + ".cert_file: " + *why);
    if (auto why = tls_key_problem(tls.key_file, tls.cert_file)) {
      source.fail(tls.key_line, where + ".key_file: " + *why);
    }
  }
  if (!tls.ca_file.empty()) {
    if (auto why = tls_cert_problem(tls.ca_file)) source.fail(tls.ca_line, where + ".ca_file: " + *why);
  }
}

// Reads a whole config file into a Config. Tables are read in a fixed order ([pool] before [[database]],
// whose settings start from it) regardless of where they appear in the file.
class ConfigReader {
 public:
  ConfigReader(const std::string& path, const Config* previous) : source_(path), previous_(previous) {
    config_.source_path = path;
  }

  Config read() {
    std::string error;
    const auto text = source_.read_text(error);
    if (!text) source_.fail(1, "cannot read file: " + error);
    const toml::table root = source_.parse(*text);
    const toml::table* proxy = nullptr;
    const toml::table* admin = nullptr;
    const toml::table* auth = nullptr;
    const toml::table* pool = nullptr;
    const toml::table* client_tls = nullptr;
    const toml::table* server_tls = nullptr;
    const Field* databases = nullptr;
    const std::vector<Field> fields = fields_of(root, "");
    for (const Field& field : fields) {
      if (field.key == "proxy") {
        proxy = &source_.table(field);
      } else if (field.key == "admin") {
        admin = &source_.table(field);
      } else if (field.key == "auth") {
        auth = &source_.table(field);
      } else if (field.key == "pool") {
        pool = &source_.table(field);
      } else if (field.key == "client_tls") {
        client_tls = &source_.table(field);
      } else if (field.key == "server_tls") {
        server_tls = &source_.table(field);
      } else if (field.key == "database") {
        databases = &field;
      } else {
        unknown_key(source_, field);
      }
    }
    if (proxy) read_proxy(*proxy);
    if (admin) read_admin(*admin);
    read_auth(auth);
    if (pool) read_pool(*pool);
    if (client_tls) read_tls(*client_tls, "client_tls", config_.client_tls);
    if (server_tls) read_tls(*server_tls, "server_tls", config_.server_tls);
    if (databases) read_databases(*databases);
    const bool any_query =
        !config_.auth_query.empty() ||
        std::ranges::any_of(config_.databases, [](const Database& d) { return !!d.auth_query; });
    if (any_query && config_.auth_query_user.empty()) {
      source_.fail(auth_line_, "an auth query needs auth.query_user, the role that runs it");
    }
    return std::move(config_);
  }

 private:
  void read_proxy(const toml::table& table) {
    for (const Field& field : fields_of(table, "proxy")) {
      if (field.key == "listen") {
        config_.listen = source_.listen(field);
      } else if (field.key == "max_client_conn") {
        config_.max_client_conn = source_.uint32(field, 1);
      } else if (field.key == "workers") {
        config_.workers = source_.uint32(field, 0);
        if (config_.workers == 0) config_.workers = std::max(1u, std::thread::hardware_concurrency());
      } else if (field.key == "shutdown_timeout") {
        config_.shutdown_timeout = source_.duration(field);
      } else if (field.key == "max_message_size") {
        const std::uint64_t size = source_.size(field);
        if (size < kMinMessageSize || size > kMaxMessageSize) {
          source_.fail(field, std::to_string(size) + " bytes is out of range (8kB..1GB)");
        }
        config_.max_message_size = static_cast<std::uint32_t>(size);
      } else if (field.key == "max_buffer_per_client") {
        const std::uint64_t size = source_.size(field);
        if (size < kMinMessageSize || size > kMaxMessageSize) {
          source_.fail(field, std::to_string(size) + " bytes is out of range (8kB..1GB)");
        }
        config_.max_buffer_per_client = static_cast<std::uint32_t>(size);
      } else if (field.key == "max_buffer_total") {
        const std::uint64_t size = source_.size(field);
        if (size < kMinMessageSize || size > (std::uint64_t{64} << 30)) {
          source_.fail(field, std::to_string(size) + " bytes is out of range (8kB..64GB)");
        }
        config_.max_buffer_total = size;
      } else if (field.key == "max_fallback_databases") {
        config_.max_fallback_databases = source_.uint32(field, 1);
      } else if (field.key == "client_message_timeout") {
        config_.client_message_timeout = source_.duration(field);
        if (config_.client_message_timeout.count() <= 0) source_.fail(field, "must be greater than 0");
      } else if (field.key == "log_level") {
        config_.log_level = source_.choice(field, kLogLevels);
      } else if (field.key == "io_backend") {
        config_.io_backend = source_.choice(field, kIoBackends);
      } else if (field.key == "client_login_timeout") {
        config_.client_login_timeout = source_.duration(field);
        if (config_.client_login_timeout <= Duration(0)) source_.fail(field, "must be greater than 0");
      } else {
        unknown_key(source_, field);
      }
    }
  }

  void read_admin(const toml::table& table) {
    for (const Field& field : fields_of(table, "admin")) {
      if (field.key == "listen") {
        config_.admin_listen = source_.listen(field);
        for (const Endpoint& endpoint : config_.admin_listen) {
          if (endpoint.port != 0 && std::ranges::find(config_.listen, endpoint) != config_.listen.end()) {
            source_.fail(field, format_endpoint(endpoint) + " is also a proxy.listen address");
          }
        }
      } else if (field.key == "token") {
        const std::string token = source_.secret(field, source_.string(field));
        if (token.empty()) source_.fail(field, "must not be empty");
        config_.admin_token = token;
      } else if (field.key == "console_users") {
        config_.console_users = source_.names(field);
      } else {
        unknown_key(source_, field);
      }
    }
  }

  void read_auth(const toml::table* table) {
    const int table_line = table ? line_of(table->source()) : 1;
    auth_line_ = table_line;
    int users_file_line = 0;
    if (table) {
      for (const Field& field : fields_of(*table, "auth")) {
        if (field.key == "type") {
          config_.auth_type = source_.choice(field, kAuthTypes);
        } else if (field.key == "query") {
          config_.auth_query = source_.non_empty_string(field);
        } else if (field.key == "query_user") {
          config_.auth_query_user = source_.non_empty_string(field);
        } else if (field.key == "query_cache") {
          config_.auth_query_cache = source_.duration(field);
        } else if (field.key == "query_pool_size") {
          config_.auth_query_pool_size = static_cast<int>(source_.integer(field, 1, kMaxAuthQueryPoolSize));
        } else if (field.key == "users_file") {
          const std::filesystem::path users_file = source_.non_empty_string(field);
          const auto dir = std::filesystem::path(source_.path()).parent_path();
          config_.users_file = (dir / users_file).lexically_normal().string();
          users_file_line = field.line;
        } else {
          unknown_key(source_, field);
        }
      }
    }
    if (users_file_line != 0) {
      read_users(users_file_line);
      if (config_.auth_type == AuthType::scram_sha_256) derive_scram_verifiers();
    } else if (config_.auth_type != AuthType::trust) {
      source_.fail(table_line,
                   "auth.users_file is required with auth.type " + in_quotes(to_string(config_.auth_type)));
    }
  }

  // The users file: `name = "secret"` lines, reported against its own path.
  void read_users(int users_file_line) {
    const Source users(config_.users_file);
    std::string error;
    const auto text = users.read_text(error);
    if (!text) {
      source_.fail(users_file_line, "auth.users_file: cannot read " + in_quotes(users.path()) + ": " + error);
    }
    const toml::table table = users.parse(*text);
    for (Field field : fields_of(table, "")) {
      if (field.key.empty()) users.fail(field.line, "empty user name");
      field.name = "user " + in_quotes(field.key);
      const auto* value = field.value->as_string();
      if (!value) {
        users.fail(field, "expected a password or verifier string, got " +
                              std::string(type_name(field.value->type())));
      }
      std::string secret = users.secret(field, value->get());
      if (const auto problem = secret_problem(secret)) users.fail(field, *problem);
      config_.users.emplace(field.key, std::move(secret));
    }
  }

  // One verifier per user that can do SCRAM (an md5 verifier cannot). A plain password whose user and
  // secret are as in the previous snapshot keeps that snapshot's verifier: same process key, same salt, so
  // deriving it again would give the same bytes.
  void derive_scram_verifiers() {
    for (const auto& [name, secret] : config_.users) {
      if (previous_ && protocol::auth::classify_secret(secret) == protocol::auth::SecretKind::kPlain) {
        const std::string* old_secret = previous_->find_user_secret(name);
        const auto* old_verifier = previous_->find_scram_verifier(name);
        if (old_secret && *old_secret == secret && old_verifier) {
          config_.scram_verifiers.emplace(name, *old_verifier);
          continue;
        }
      }
      auto verifier =
          protocol::auth::scram_verifier_for_secret(secret, name, protocol::auth::process_auth_key());
      if (verifier) config_.scram_verifiers.emplace(name, std::move(*verifier));
    }
  }

  void read_tls(const toml::table& table, const std::string& name, TlsSettings& tls) {
    for (const Field& field : fields_of(table, name)) {
      if (!apply_tls_field(source_, field, field.key, tls)) unknown_key(source_, field);
    }
    check_tls(source_, tls, &tls == &config_.client_tls, name, line_of(table.source()));
  }

  void read_pool(const toml::table& table) {
    PoolLines lines;
    for (const Field& field : fields_of(table, "pool")) {
      if (!apply_pool_field(source_, field, field.key, config_.pool, lines)) unknown_key(source_, field);
    }
    if (config_.pool.min_size > config_.pool.size) {
      source_.fail(lines.min_size != 0 ? lines.min_size : lines.size,
                   "pool.min_size (" + std::to_string(config_.pool.min_size) +
                       ") is greater than pool.size (" + std::to_string(config_.pool.size) + ")");
    }
  }

  void read_databases(const Field& field) {
    const auto* array = field.value->as_array();
    if (!array || (!array->empty() && !array->is_array_of_tables())) {
      source_.fail(field, "expected [[database]] tables, got " + std::string(type_name(field.value->type())));
    }
    for (const toml::node& element : *array) {
      Database database = read_database(*element.as_table());
      if (database.name == kConsoleDatabase && !config_.console_users.empty()) {
        source_.fail(database.line, "database " + in_quotes(database.name) +
                                        " is the admin console's while [admin] console_users is set");
      }
      if (const Database* first = config_.find_database(database.name)) {
        source_.fail(database.line, "duplicate database " + in_quotes(database.name) +
                                        " (first defined at line " + std::to_string(first->line) + ")");
      }
      config_.databases.push_back(std::move(database));
    }
  }

  Database read_database(const toml::table& table) {
    Database database;
    database.line = line_of(table.source());
    database.pool = config_.pool;
    database.server_tls = config_.server_tls;
    PoolLines lines;
    std::map<std::string, std::string> pool_keys_set;  // canonical key => name as written
    bool has_name = false;
    for (const Field& field : fields_of(table, "database")) {
      if (field.key == "name") {
        database.name = source_.non_empty_string(field);
        has_name = true;
      } else if (field.key == "host") {
        database.host = source_.non_empty_string(field);
        if (!is_server_host(database.host)) {
          source_.fail(field, in_quotes(database.host) +
                                  " is not a host name, an IP address or an absolute Unix socket directory");
        }
      } else if (field.key == "port") {
        database.port = static_cast<std::uint16_t>(source_.integer(field, 1, 65535));
      } else if (field.key == "dbname") {
        database.dbname = source_.non_empty_string(field);
      } else if (field.key == "user") {
        database.user = source_.non_empty_string(field);
      } else if (field.key == "password") {
        database.password = source_.secret(field, source_.string(field));
      } else if (field.key == "auth_query") {
        database.auth_query = source_.non_empty_string(field);
      } else if (field.key.starts_with(kServerTlsPrefix)) {
        const std::string_view key = std::string_view(field.key).substr(kServerTlsPrefix.size());
        if (!apply_tls_field(source_, field, key, database.server_tls)) unknown_key(source_, field);
      } else {
        if (field.key == "max_user_connections") {
          source_.fail(field,
                       "max_user_connections counts a user's servers across every database: set it in "
                       "[pool]");
        }
        const std::string_view key = field.key == "pool_size"   ? "size"
                                     : field.key == "pool_mode" ? "mode"
                                                                : std::string_view(field.key);
        if (!apply_pool_field(source_, field, key, database.pool, lines)) unknown_key(source_, field);
        const auto [previous, inserted] = pool_keys_set.emplace(key, field.name);
        if (!inserted) source_.fail(field, "sets the same thing as " + previous->second);
      }
    }
    if (!has_name) source_.fail(database.line, "[[database]] needs a name");
    if (database.name == kFallbackDatabase && !database.dbname.empty()) {
      source_.fail(database.line,
                   "the fallback database \"*\" serves each database under the client's name: it "
                   "takes no dbname");
    }
    if (database.dbname.empty()) database.dbname = database.name;
    if (database.server_tls != config_.server_tls) {
      check_tls(source_, database.server_tls, false, "database " + in_quotes(database.name) + " server_tls",
                database.line);
    }
    if (database.pool.min_size > database.pool.size) {
      source_.fail(lines.min_size != 0 ? lines.min_size
                   : lines.size != 0   ? lines.size
                                       : database.line,
                   "database " + in_quotes(database.name) + ": pool min_size (" +
                       std::to_string(database.pool.min_size) + ") is greater than size (" +
                       std::to_string(database.pool.size) + ")");
    }
    return database;
  }

  Source source_;
  int auth_line_ = 1;  // where [auth] starts, for problems of the table as a whole
  const Config* previous_;
  Config config_;
};

}  // namespace

std::string_view to_string(PoolMode mode) {
  for (const auto& [name, value] : kPoolModes) {
    if (value == mode) return name;
  }
  return "unknown";
}

std::string_view to_string(TlsMode mode) {
  for (const auto& [name, value] : kTlsModes) {
    if (value == mode) return name;
  }
  return "unknown";
}

std::string_view to_string(CommitResolution resolution) {
  for (const auto& [name, value] : kCommitResolutions) {
    if (value == resolution) return name;
  }
  return "unknown";
}

std::string_view to_string(SessionState state) {
  for (const auto& [name, value] : kSessionStates) {
    if (value == state) return name;
  }
  return "unknown";
}

std::string_view to_string(AuthType type) {
  for (const auto& [name, value] : kAuthTypes) {
    if (value == type) return name;
  }
  return "unknown";
}

ConfigError::ConfigError(std::string file, int line, std::string reason)
    : std::runtime_error(file + ":" + std::to_string(line) + ": " + reason),
      file_(std::move(file)),
      line_(line),
      reason_(std::move(reason)) {}

const Database* Config::find_database(std::string_view name) const {
  const auto it = std::ranges::find(databases, name, &Database::name);
  return it == databases.end() ? nullptr : &*it;
}

std::optional<Database> Config::resolve_database(std::string_view name) const {
  if (name == kFallbackDatabase) return std::nullopt;  // the fallback itself is not a database to connect to
  if (const Database* database = find_database(name)) return *database;
  const Database* fallback = find_database(kFallbackDatabase);
  if (!fallback) return std::nullopt;
  Database database = *fallback;
  database.name = name;
  database.dbname = name;
  database.from_fallback = true;
  return database;
}

const std::string* Config::auth_query_for(const Database& db) const {
  if (db.auth_query) return &*db.auth_query;
  return auth_query.empty() ? nullptr : &auth_query;
}

const std::string* Config::find_user_secret(std::string_view name) const {
  const auto it = users.find(name);
  return it == users.end() ? nullptr : &it->second;
}

const protocol::auth::ScramVerifier* Config::find_scram_verifier(std::string_view name) const {
  const auto it = scram_verifiers.find(name);
  return it == scram_verifiers.end() ? nullptr : &it->second;
}

Config load_config(const std::string& path, const Config* previous) {
  try {
    return ConfigReader(path, previous).read();
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    // Whatever else goes wrong (say, allocation) is still reported in the one format callers expect.
    throw ConfigError(path, 1, e.what());
  }
}

std::optional<Duration> parse_duration(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && is_digit(text[i])) ++i;
  const auto whole = parse_unsigned(text.substr(0, i));
  if (!whole) return std::nullopt;

  // Fraction digits beyond nine cannot change a millisecond count and are only checked, not kept.
  std::uint64_t fraction = 0;
  std::uint64_t scale = 1;
  if (i < text.size() && text[i] == '.') {
    const std::size_t start = ++i;
    for (; i < text.size() && is_digit(text[i]); ++i) {
      if (scale < 1'000'000'000) {
        fraction = fraction * 10 + static_cast<std::uint64_t>(text[i] - '0');
        scale *= 10;
      }
    }
    if (i == start) return std::nullopt;
  }

  const std::string_view unit = text.substr(i);
  std::uint64_t unit_ms;
  if (unit == "ms") {
    unit_ms = 1;
  } else if (unit == "s") {
    unit_ms = 1'000;
  } else if (unit == "m") {
    unit_ms = 60'000;
  } else if (unit == "h") {
    unit_ms = 3'600'000;
  } else {
    return std::nullopt;
  }

  const auto max_ms = static_cast<std::uint64_t>(kMaxDuration.count());
  if (*whole > max_ms / unit_ms) return std::nullopt;
  // Rounded to the nearest millisecond: "1.0005s" is 1001ms rather than an error.
  const std::uint64_t ms = *whole * unit_ms + (fraction * unit_ms + scale / 2) / scale;
  if (ms > max_ms) return std::nullopt;
  return Duration(static_cast<Duration::rep>(ms));
}

std::string toml_quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::optional<Endpoint> parse_endpoint(std::string_view text) {
  std::string why;
  return parse_endpoint_explained(text, why);
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && is_digit(text[digits])) ++digits;
  const auto number = parse_unsigned(text.substr(0, digits));
  if (!number) return std::nullopt;

  std::string_view unit = text.substr(digits);
  while (unit.starts_with(' ')) unit.remove_prefix(1);            // "64 MB" reads as well as "64MB"
  if (unit.empty() && digits < text.size()) return std::nullopt;  // trailing spaces only

  constexpr std::pair<std::string_view, int> kUnits[] = {{"", 0},    {"B", 0},   {"kB", 10},
                                                         {"MB", 20}, {"GB", 30}, {"TB", 40}};
  for (const auto& [name, shift] : kUnits) {
    if (!iequals(unit, name)) continue;
    if (*number > (std::numeric_limits<std::uint64_t>::max() >> shift)) return std::nullopt;
    return *number << shift;
  }
  return std::nullopt;
}

}  // namespace pgward::config
