// The admin console's commands (proxy/console.hpp): PgBouncer's SHOW POOLS / CLIENTS / SERVERS / STATS /
// DATABASES / CONFIG / VERSION and PAUSE / RESUME / RELOAD / SHUTDOWN, answered from the same rows and the
// same operations as the HTTP admin port. Columns carry PgBouncer's names, in its order, where pgward has the
// same figure; pgward's own figures follow them. Runs on the main io_context.
#include "admin/console.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <map>

#include "admin/internal.hpp"
#include "protocol/codec.hpp"
#include "protocol/sqlstate.hpp"

namespace pgward::admin {

namespace {

namespace pr = protocol;
namespace ss = protocol::sqlstate;

constexpr std::int32_t kBool = 16;
constexpr std::int32_t kInt8 = 20;
constexpr std::int32_t kInt4 = 23;
constexpr std::int32_t kText = 25;
constexpr std::int32_t kTimestamptz = 1184;

using Value = std::optional<std::string>;

Value text(std::string_view s) { return std::string(s); }
Value num(std::int64_t n) { return std::to_string(n); }
Value flag(bool b) { return std::string(b ? "t" : "f"); }
Value micros(double seconds) { return num(static_cast<std::int64_t>(seconds * 1e6)); }
template <class T>
Value maybe(const std::optional<T>& v) {
  if (!v) return std::nullopt;
  if constexpr (std::is_same_v<T, std::string>) {
    return *v;
  } else {
    return std::to_string(*v);
  }
}
// NULL for "" (a plain connection's tls, as /api shows null).
Value maybe_text(const std::string& s) { return s.empty() ? Value() : Value(s); }

// What PostgreSQL prints for a timestamptz in UTC ("2026-11-30 15:56:06+00").
Value timestamp(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S+00", &tm);
  return std::string(buf);
}

// "10.0.0.1:5000" / "::1:5000" => address, port (the peer text ClientInfo keeps).
std::pair<Value, Value> split_peer(const std::string& peer) {
  const auto colon = peer.rfind(':');
  if (colon == std::string::npos) return {peer, std::nullopt};
  return {peer.substr(0, colon), peer.substr(colon + 1)};
}

// One SHOW answer: RowDescription, DataRows, CommandComplete "SHOW".
class Table {
 public:
  explicit Table(std::vector<pr::ColumnSpec> columns) : columns_(std::move(columns)) {}
  void row(std::vector<Value> values) { rows_.push_back(std::move(values)); }
  proxy::ConsoleReply done() const {
    proxy::ConsoleReply r;
    pr::put_row_description(r.wire, columns_);
    for (const auto& values : rows_) pr::put_data_row(r.wire, values);
    pr::put_command_complete(r.wire, "SHOW");
    return r;
  }

 private:
  std::vector<pr::ColumnSpec> columns_;
  std::vector<std::vector<Value>> rows_;
};

proxy::ConsoleReply error(std::string_view sqlstate, const std::string& message, std::string_view hint = {}) {
  proxy::ConsoleReply r;
  pr::put_error_response(r.wire, {"ERROR", sqlstate, message, {}, hint});
  r.error_sqlstate = std::string(sqlstate);
  return r;
}

proxy::ConsoleReply done(std::string_view tag) {
  proxy::ConsoleReply r;
  pr::put_command_complete(r.wire, tag);
  return r;
}

proxy::ConsoleReply show_pools(proxy::Proxy& p) {
  Table t({{"database", kText},
           {"user", kText},
           {"cl_active", kInt8},
           {"cl_waiting", kInt8},
           {"sv_active", kInt8},
           {"sv_idle", kInt8},
           {"sv_login", kInt8},
           {"pool_mode", kText},
           // pgward's own: cl_active split into linked and idle clients, servers closing, the pool's bounds
           {"cl_linked", kInt8},
           {"cl_idle", kInt8},
           {"sv_closing", kInt8},
           {"pool_size", kInt8},
           {"min_pool_size", kInt8},
           {"paused", kBool},
           {"removed", kBool},
           {"wait_timeouts", kInt8}});
  for (const PoolRow& r : pool_rows(p)) {
    t.row({text(r.database), text(r.user), num(r.clients_active + r.clients_idle), num(r.clients_waiting),
           num(r.servers_active), num(r.servers_idle), num(r.servers_connecting), text(r.mode),
           num(r.clients_active), num(r.clients_idle), num(r.servers_closing), num(r.size), num(r.min_size),
           flag(r.paused), flag(r.removed), num(r.wait_timeouts)});
  }
  return t.done();
}

proxy::ConsoleReply show_clients(proxy::Proxy& p) {
  Table t({{"type", kText},
           {"user", kText},
           {"database", kText},
           {"state", kText},
           {"addr", kText},
           {"port", kInt4},
           {"connect_time", kTimestamptz},
           {"link", kInt8},
           {"id", kInt8},
           {"phase", kText},
           {"pinned", kText},
           {"tls", kText}});
  for (const ClientRow& r : client_rows(p)) {
    auto [addr, port] = split_peer(r.peer);
    t.row({text("C"), text(r.user), text(r.database), text(r.state), addr, port, timestamp(r.connected_at),
           maybe(r.server_id), num(static_cast<std::int64_t>(r.id)), text(r.phase), maybe(r.pinned),
           maybe_text(r.tls)});
  }
  return t.done();
}

proxy::ConsoleReply show_servers(proxy::Proxy& p) {
  Table t({{"type", kText},
           {"user", kText},
           {"database", kText},
           {"state", kText},
           {"addr", kText},
           {"port", kInt4},
           {"link", kInt8},
           {"id", kInt8},
           {"idle_ms", kInt8},
           {"tls", kText}});
  for (const ServerRow& r : server_rows(p)) {
    t.row({text("S"), text(r.user), text(r.database), text(r.state), maybe(r.host), maybe(r.port),
           maybe(r.client_id), num(static_cast<std::int64_t>(r.id)), maybe(r.idle_ms), maybe_text(r.tls)});
  }
  return t.done();
}

// Per database, summed over its pools (one per server user), as PgBouncer's SHOW STATS.
proxy::ConsoleReply show_stats(proxy::Proxy& p) {
  std::map<std::string, PoolRow> by_db;
  for (const PoolRow& r : pool_rows(p)) {
    PoolRow& s = by_db[r.database];
    s.transactions += r.transactions;
    s.queries += r.queries;
    s.servers_closed += r.servers_closed;
    s.bytes_received += r.bytes_received;
    s.bytes_sent += r.bytes_sent;
    s.transaction_seconds += r.transaction_seconds;
    s.query_seconds += r.query_seconds;
    s.wait_seconds += r.wait_seconds;
    s.wait_timeouts += r.wait_timeouts;
  }
  Table t({{"database", kText},
           {"total_xact_count", kInt8},
           {"total_query_count", kInt8},
           {"total_server_closed_count", kInt8},
           {"total_received", kInt8},
           {"total_sent", kInt8},
           {"total_xact_time", kInt8},
           {"total_query_time", kInt8},
           {"total_wait_time", kInt8},
           {"total_wait_timeouts", kInt8}});
  for (const auto& [db, s] : by_db) {
    t.row({text(db), num(s.transactions), num(s.queries), num(s.servers_closed), num(s.bytes_received),
           num(s.bytes_sent), micros(s.transaction_seconds), micros(s.query_seconds), micros(s.wait_seconds),
           num(s.wait_timeouts)});
  }
  return t.done();
}

proxy::ConsoleReply show_databases(proxy::Proxy& p) {
  const auto cfg = p.config();
  const auto paused = p.paused();
  const bool all_paused = std::ranges::find(paused, "*") != paused.end();
  std::map<std::string, std::int64_t> servers;
  for (const PoolRow& r : pool_rows(p))
    servers[r.database] += r.servers_active + r.servers_idle + r.servers_connecting + r.servers_closing;
  Table t({{"name", kText},
           {"host", kText},
           {"port", kInt4},
           {"database", kText},
           {"force_user", kText},
           {"pool_size", kInt4},
           {"min_pool_size", kInt4},
           {"server_lifetime", kInt4},
           {"pool_mode", kText},
           {"current_connections", kInt8},
           {"paused", kInt4}});
  for (const auto& db : cfg->databases) {
    const bool is_paused = all_paused || std::ranges::find(paused, db.name) != paused.end();
    const auto it = servers.find(db.name);
    t.row({text(db.name), text(db.host), num(db.port), text(db.dbname.empty() ? db.name : db.dbname),
           maybe(db.user), num(db.pool.size), num(db.pool.min_size),
           num(std::chrono::duration_cast<std::chrono::seconds>(db.pool.server_lifetime).count()),
           text(config::to_string(db.pool.mode)), num(it == servers.end() ? 0 : it->second),
           num(is_paused ? 1 : 0)});
  }
  return t.done();
}

proxy::ConsoleReply show_config(proxy::Proxy& p) {
  // The settings /api/config shows (secrets redacted there already), flattened to one row per key. The
  // databases have SHOW DATABASES; pause and drain are state, not settings.
  const auto running = flatten_json(config_json(p));
  std::map<std::string, std::string> defaults;
  for (auto& [key, value] : flatten_json(config_json(config::Config{}, {}, false))) defaults[key] = value;
  // What a reload cannot change: the listeners are bound once, the worker threads and their event loop
  // started once.
  constexpr std::string_view kFixed[] = {"proxy.listen", "proxy.workers", "proxy.io_backend", "admin.listen"};
  Table t({{"key", kText}, {"value", kText}, {"default", kText}, {"changeable", kText}});
  for (const auto& [key, value] : running) {
    if (key.starts_with("databases") || key == "paused" || key == "draining" || key == "source_path")
      continue;
    const auto d = defaults.find(key);
    const bool fixed = std::ranges::find(kFixed, key) != std::end(kFixed);
    t.row({text(key), text(value), d == defaults.end() ? Value{} : text(d->second),
           text(fixed ? "no" : "yes")});
  }
  return t.done();
}

class ConsoleImpl final : public proxy::Console {
 public:
  ConsoleImpl(proxy::Proxy& proxy, std::string version) : proxy_(proxy), version_(std::move(version)) {}

  std::vector<std::pair<std::string, std::string>> welcome_params() const override {
    return {{"server_version", version_}, {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"},
            {"DateStyle", "ISO, MDY"},    {"integer_datetimes", "on"}, {"standard_conforming_strings", "on"},
            {"application_name", ""}};
  }

  proxy::ConsoleReply answer(std::string_view sql) override {
    const ConsoleCommand cmd = parse_console_command(sql);
    if (!cmd.error.empty()) return error(ss::kSyntaxError, cmd.error, kCommandsHint);
    if (cmd.words.empty()) {
      proxy::ConsoleReply r;
      pr::put_empty_query_response(r.wire);
      return r;
    }
    const std::string& verb = cmd.words[0];
    if (verb == "show") return show(cmd);
    if (verb == "pause" || verb == "resume") return pause_resume(cmd);
    if (cmd.words.size() > 1) return error(ss::kSyntaxError, "\"" + cmd.original[0] + "\" takes no argument");
    if (verb == "reload") {
      const auto result = proxy_.reload();
      if (!result.ok) return error(ss::kConfigFileError, "reload failed: " + result.message);
      return done("RELOAD");
    }
    if (verb == "shutdown") {
      proxy_.drain();  // as SIGTERM: no new clients, transactions finish, then everyone hears 57P01
      return done("SHUTDOWN");
    }
    return error(ss::kSyntaxError, "unknown command \"" + cmd.original[0] + "\"", kCommandsHint);
  }

 private:
  static constexpr std::string_view kCommandsHint =
      "Commands: SHOW POOLS|CLIENTS|SERVERS|STATS|DATABASES|CONFIG|VERSION, PAUSE [db], RESUME [db], RELOAD, "
      "SHUTDOWN.";

  proxy::ConsoleReply show(const ConsoleCommand& cmd) {
    if (cmd.words.size() != 2) return error(ss::kSyntaxError, "SHOW takes one word", kCommandsHint);
    const std::string& what = cmd.words[1];
    if (what == "pools") return show_pools(proxy_);
    if (what == "clients") return show_clients(proxy_);
    if (what == "servers") return show_servers(proxy_);
    if (what == "stats") return show_stats(proxy_);
    if (what == "databases") return show_databases(proxy_);
    if (what == "config") return show_config(proxy_);
    if (what == "version") {
      Table t({{"version", kText}});
      t.row({text("pgward " + version_)});
      return t.done();
    }
    return error(ss::kUndefinedObject, "unknown SHOW item \"" + cmd.original[1] + "\"", kCommandsHint);
  }

  proxy::ConsoleReply pause_resume(const ConsoleCommand& cmd) {
    const bool pause = cmd.words[0] == "pause";
    const std::string_view tag = pause ? "PAUSE" : "RESUME";
    if (cmd.words.size() > 2)
      return error(ss::kSyntaxError, std::string(tag) + " takes at most one database");
    const std::string database = cmd.words.size() == 2 ? cmd.original[1] : "";
    if (!(pause ? proxy_.pause(database) : proxy_.resume(database)))
      return error(ss::kInvalidCatalogName, "database \"" + database + "\" does not exist");
    return done(tag);
  }

  proxy::Proxy& proxy_;
  const std::string version_;
};

}  // namespace

ConsoleCommand parse_console_command(std::string_view sql) {
  ConsoleCommand cmd;
  auto trim = [](std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
  };
  sql = trim(sql);
  if (sql.ends_with(';')) sql = trim(sql.substr(0, sql.size() - 1));
  if (sql.find(';') != std::string_view::npos) {
    cmd.error = "the console runs one command at a time";
    return cmd;
  }
  while (!sql.empty()) {
    std::size_t end = 0;
    std::string word;
    if (sql.front() == '"') {  // a quoted name, "" for a quote inside it
      for (end = 1; end < sql.size(); ++end) {
        if (sql[end] != '"') {
          word += sql[end];
        } else if (end + 1 < sql.size() && sql[end + 1] == '"') {
          word += '"';
          ++end;
        } else {
          break;
        }
      }
      if (end >= sql.size()) {
        cmd.error = "unterminated quoted name";
        return cmd;
      }
      ++end;
    } else {
      while (end < sql.size() && !std::isspace(static_cast<unsigned char>(sql[end]))) ++end;
      word = std::string(sql.substr(0, end));
    }
    std::string lower = word;
    std::ranges::transform(lower, lower.begin(), [](unsigned char c) { return std::tolower(c); });
    cmd.original.push_back(std::move(word));
    cmd.words.push_back(std::move(lower));
    sql = trim(sql.substr(end));
  }
  return cmd;
}

std::unique_ptr<proxy::Console> make_console(proxy::Proxy& proxy, std::string version) {
  return std::make_unique<ConsoleImpl>(proxy, std::move(version));
}

}  // namespace pgward::admin
