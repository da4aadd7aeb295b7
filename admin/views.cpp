// The JSON views (/api/pools, /api/clients, /api/servers, /api/config) and the readiness check.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <ctime>
#include <sstream>

#include "admin/internal.hpp"

namespace pgward::admin {

namespace asio = boost::asio;
namespace st = proxy::stats;
using asio::as_tuple;
using asio::use_awaitable;

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string iso_time(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {

// A comma-separated JSON object builder that keeps the views readable.
class Obj {
 public:
  Obj& str(std::string_view key, std::string_view value) { return raw(key, json_string(value)); }
  template <class N>
  Obj& num(std::string_view key, N value) {
    std::ostringstream os;
    os << value;
    return raw(key, os.str());
  }
  Obj& boolean(std::string_view key, bool value) { return raw(key, value ? "true" : "false"); }
  Obj& raw(std::string_view key, std::string_view json) {
    out_ += out_.empty() ? "{" : ",";
    out_ += json_string(key);
    out_ += ':';
    out_ += json;
    return *this;
  }
  std::string done() const { return out_.empty() ? "{}" : out_ + "}"; }

 private:
  std::string out_;
};

std::string join(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ",";
    out += items[i];
  }
  return out + "]";
}

std::string duration_text(config::Duration d) { return std::to_string(d.count()) + "ms"; }

std::string pool_settings_json(const config::PoolSettings& s) {
  return Obj()
      .str("mode", config::to_string(s.mode))
      .num("size", s.size)
      .num("min_size", s.min_size)
      .str("wait_timeout", duration_text(s.wait_timeout))
      .str("server_idle_timeout", duration_text(s.server_idle_timeout))
      .str("server_lifetime", duration_text(s.server_lifetime))
      .str("server_connect_timeout", duration_text(s.server_connect_timeout))
      .num("server_retry_max", s.server_retry_max)
      .str("server_check_delay", duration_text(s.server_check_delay))
      .str("idle_in_transaction_timeout", duration_text(s.idle_in_transaction_timeout))
      .str("commit_resolution", config::to_string(s.commit_resolution))
      .num("max_prepared_statements", s.max_prepared_statements)
      .str("session_state", config::to_string(s.session_state))
      .done();
}

std::string endpoints_json(const std::vector<config::Endpoint>& eps) {
  std::vector<std::string> items;
  for (const auto& ep : eps) {
    const bool v6 = ep.host.find(':') != std::string::npos;
    items.push_back(json_string((v6 ? "[" + ep.host + "]" : ep.host) + ":" + std::to_string(ep.port)));
  }
  return join(items);
}

}  // namespace

std::vector<PoolRow> pool_rows(proxy::Proxy& p) {
  std::vector<PoolRow> rows;
  for (proxy::PoolEntry* e : p.pools()) {
    const auto ps = e->pool.stats();
    const auto& s = e->stats;
    PoolRow r;
    r.database = e->pool.database();
    r.user = e->pool.user();
    r.mode = config::to_string(e->pool.settings().mode);
    r.size = ps.size;
    r.min_size = ps.min_size;
    r.paused = ps.paused;
    r.removed = e->removed.load();
    r.clients_active = st::get(s.clients_active);
    r.clients_waiting = st::get(s.clients_waiting);
    r.clients_idle = st::get(s.clients_idle);
    r.servers_closing = std::max<std::int64_t>(0, st::get(s.servers_closing));
    r.servers_active = std::max<std::int64_t>(0, std::int64_t{ps.active} - r.servers_closing);
    r.servers_idle = ps.idle;
    r.servers_connecting = ps.connecting;
    r.wait_timeouts = static_cast<std::int64_t>(ps.wait_timeouts);
    r.transactions = static_cast<std::int64_t>(st::get(s.transactions));
    r.queries = static_cast<std::int64_t>(st::get(s.queries));
    r.bytes_received = static_cast<std::int64_t>(st::get(s.bytes_received));
    r.bytes_sent = static_cast<std::int64_t>(st::get(s.bytes_sent));
    r.wait_seconds = s.wait.snapshot().sum_seconds;
    r.transaction_seconds = s.transaction.snapshot().sum_seconds;
    r.query_seconds = s.query.snapshot().sum_seconds;
    r.servers_closed = static_cast<std::int64_t>(ps.servers_closed);
    rows.push_back(std::move(r));
  }
  return rows;
}

std::string pools_json(proxy::Proxy& p) {
  std::vector<std::string> items;
  for (const PoolRow& r : pool_rows(p)) {
    items.push_back(Obj()
                        .str("database", r.database)
                        .str("user", r.user)
                        .str("mode", r.mode)
                        .num("size", r.size)
                        .num("min_size", r.min_size)
                        .boolean("paused", r.paused)
                        .boolean("removed", r.removed)
                        .num("clients_active", r.clients_active)
                        .num("clients_waiting", r.clients_waiting)
                        .num("clients_idle", r.clients_idle)
                        .num("servers_active", r.servers_active)
                        .num("servers_idle", r.servers_idle)
                        .num("servers_connecting", r.servers_connecting)
                        .num("servers_closing", r.servers_closing)
                        .num("wait_timeouts", r.wait_timeouts)
                        .num("transactions", r.transactions)
                        .num("queries", r.queries)
                        .num("bytes_received", r.bytes_received)
                        .num("bytes_sent", r.bytes_sent)
                        .done());
  }
  return join(items);
}

// A TLS description ("TLSv1.3 TLS_AES_256_GCM_SHA384") as JSON: null for a plain connection.
std::string tls_json(const std::string& tls) { return tls.empty() ? "null" : json_string(tls); }

std::vector<ClientRow> client_rows(proxy::Proxy& p) {
  std::vector<ClientRow> rows;
  for (const auto& c : p.clients()) {
    const auto id = c->identity();
    const auto phase = c->phase.load(std::memory_order_relaxed);
    ClientRow r;
    r.id = c->id;
    r.peer = c->peer;
    r.state = proxy::to_string(proxy::client_state(phase));
    r.phase = proxy::to_string(phase);
    r.database = id.database;
    r.user = id.user;
    r.connected_at = c->connected_at;
    if (const auto server = c->server_id.load(std::memory_order_relaxed)) r.server_id = server;
    if (const auto pin = c->pin.load(std::memory_order_relaxed); pin != proxy::PinReason::none)
      r.pinned = proxy::to_string(pin);
    r.tls = c->tls();
    rows.push_back(std::move(r));
  }
  return rows;
}

std::string clients_json(proxy::Proxy& p) {
  std::vector<std::string> items;
  for (const ClientRow& r : client_rows(p)) {
    Obj o;
    o.num("id", r.id)
        .str("peer", r.peer)
        .str("state", r.state)
        .str("phase", r.phase)
        .str("database", r.database)
        .str("user", r.user)
        .str("connected_at", iso_time(r.connected_at));
    r.server_id ? o.num("server_id", *r.server_id) : o.raw("server_id", "null");
    r.pinned ? o.str("pinned", *r.pinned) : o.raw("pinned", "null");
    o.raw("tls", tls_json(r.tls));
    items.push_back(o.done());
  }
  return join(items);
}

std::vector<ServerRow> server_rows(proxy::Proxy& p) {
  std::vector<ServerRow> rows;
  std::map<std::pair<std::string, std::string>, proxy::PoolEntry*> pools;
  for (proxy::PoolEntry* e : p.pools()) pools[{e->pool.database(), e->pool.user()}] = e;
  // Active servers are known through the clients linked to them; idle ones through their pools.
  for (const auto& c : p.clients()) {
    const auto server = c->server_id.load(std::memory_order_relaxed);
    if (!server) continue;
    const auto id = c->identity();
    ServerRow r;
    r.id = server;
    r.state = "active";
    r.database = id.database;
    r.user = id.server_user;
    if (auto it = pools.find({id.database, id.server_user}); it != pools.end()) {
      const proxy::ServerTarget target = it->second->target();
      r.host = target.host;
      r.port = target.port;
    }
    r.client_id = c->id;
    r.tls = c->server_tls(server);
    rows.push_back(std::move(r));
  }
  for (proxy::PoolEntry* e : p.pools()) {
    for (const auto& s : e->pool.idle_servers()) {
      const auto* conn = dynamic_cast<const proxy::ServerConn*>(s.get());
      if (!conn) continue;
      ServerRow r;
      r.id = conn->id();
      r.state = "idle";
      r.database = e->pool.database();
      r.user = e->pool.user();
      r.host = conn->target().host;
      r.port = conn->target().port;
      r.idle_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(pool::Clock::now() - s->idle_since).count();
      r.tls = conn->tls_description();
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

std::string servers_json(proxy::Proxy& p) {
  std::vector<std::string> items;
  for (const ServerRow& r : server_rows(p)) {
    Obj o;
    o.num("id", r.id).str("state", r.state).str("database", r.database).str("user", r.user);
    if (r.host) o.str("host", *r.host).num("port", *r.port);
    if (r.idle_ms) o.num("idle_ms", *r.idle_ms);
    r.client_id ? o.num("client_id", *r.client_id) : o.raw("client_id", "null");
    o.raw("tls", tls_json(r.tls));
    items.push_back(o.done());
  }
  return join(items);
}

std::string config_json(proxy::Proxy& p) { return config_json(*p.config(), p.paused(), p.draining()); }

std::string config_json(const config::Config& config, const std::vector<std::string>& paused, bool draining) {
  const config::Config* cfg = &config;
  constexpr std::string_view kRedacted = "<redacted>";
  std::vector<std::string> dbs;
  for (const auto& db : cfg->databases) {
    Obj o;
    o.str("name", db.name)
        .str("host", db.host)
        .num("port", db.port)
        .str("dbname", db.dbname.empty() ? db.name : db.dbname);
    if (db.user) o.str("user", *db.user);
    if (db.password) o.str("password", kRedacted);
    o.raw("pool", pool_settings_json(db.pool));
    dbs.push_back(o.done());
  }
  std::vector<std::string> users;
  for (const auto& [name, secret] : cfg->users) users.push_back(json_string(name));
  std::vector<std::string> paused_json;
  for (const auto& d : paused) paused_json.push_back(json_string(d));

  Obj admin;
  admin.raw("listen", endpoints_json(cfg->admin_listen));
  std::vector<std::string> console_users;
  for (const auto& name : cfg->console_users) console_users.push_back(json_string(name));
  admin.raw("console_users", join(console_users));
  if (cfg->admin_token) admin.str("token", kRedacted);
  return Obj()
      .str("source_path", cfg->source_path)
      .raw("proxy", Obj()
                        .raw("listen", endpoints_json(cfg->listen))
                        .num("max_client_conn", cfg->max_client_conn)
                        .num("workers", cfg->workers)
                        .str("io_backend", cfg->io_backend)
                        .str("shutdown_timeout", duration_text(cfg->shutdown_timeout))
                        .num("max_message_size", cfg->max_message_size)
                        .num("max_buffer_per_client", cfg->max_buffer_per_client)
                        .num("max_buffer_total", static_cast<double>(cfg->max_buffer_total))
                        .str("client_message_timeout", duration_text(cfg->client_message_timeout))
                        .num("max_fallback_databases", cfg->max_fallback_databases)
                        .str("log_level", cfg->log_level)
                        .done())
      .raw("admin", admin.done())
      .raw("auth", Obj()
                       .str("type", config::to_string(cfg->auth_type))
                       .str("users_file", cfg->users_file)
                       .raw("users", join(users))
                       .done())
      .raw("pool", pool_settings_json(cfg->pool))
      .raw("databases", join(dbs))
      .raw("paused", join(paused_json))
      .boolean("draining", draining)
      .done();
}

namespace {

constexpr auto kProbeTimeout = std::chrono::seconds(1);

// Whether the database's server accepts a connection right now; empty when it does, else why not.
asio::awaitable<std::string> probe(const config::Database& db) {
  using namespace asio::experimental::awaitable_operators;
  auto exec = co_await asio::this_coro::executor;
  asio::steady_timer timer(exec, kProbeTimeout);
  if (db.host.starts_with('/')) {
    asio::local::stream_protocol::socket sock(exec);
    const asio::local::stream_protocol::endpoint ep(db.host + "/.s.PGSQL." + std::to_string(db.port));
    auto r = co_await (sock.async_connect(ep, as_tuple(use_awaitable)) ||
                       timer.async_wait(as_tuple(use_awaitable)));
    if (r.index() == 1) co_return "connect timed out";
    if (auto [ec] = std::get<0>(r); ec) co_return ec.message();
    co_return "";
  }
  asio::ip::tcp::resolver resolver(exec);
  auto resolved =
      co_await (resolver.async_resolve(db.host, std::to_string(db.port), as_tuple(use_awaitable)) ||
                timer.async_wait(as_tuple(use_awaitable)));
  if (resolved.index() == 1) co_return "name resolution timed out";
  auto [rec, eps] = std::get<0>(resolved);
  if (rec) co_return rec.message();
  asio::ip::tcp::socket sock(exec);
  auto r = co_await (asio::async_connect(sock, eps, as_tuple(use_awaitable)) ||
                     timer.async_wait(as_tuple(use_awaitable)));
  if (r.index() == 1) co_return "connect timed out";
  if (auto [ec, ep] = std::get<0>(r); ec) co_return ec.message();
  co_return "";
}

}  // namespace

asio::awaitable<Readiness> check_ready(proxy::Proxy& p) {
  Readiness out;
  std::vector<std::string> reasons;
  if (p.draining()) reasons.push_back(json_string("draining"));
  const auto paused = p.paused();
  if (!paused.empty()) reasons.push_back(json_string("paused"));
  const auto cfg = p.config();
  Obj unreachable;
  bool any_unreachable = false;
  for (const auto& db : cfg->databases) {
    if (db.name == config::kFallbackDatabase) continue;  // no database of its own to reach
    const std::string why = co_await probe(db);
    if (why.empty()) continue;
    any_unreachable = true;
    unreachable.str(db.name, why);
  }
  if (any_unreachable) reasons.push_back(json_string("database unreachable"));
  out.ready = reasons.empty();
  Obj body;
  body.str("status", out.ready ? "ready" : "not ready").raw("reasons", join(reasons));
  if (any_unreachable) body.raw("unreachable", unreachable.done());
  if (!paused.empty()) {
    std::vector<std::string> names;
    for (const auto& d : paused) names.push_back(json_string(d));
    body.raw("paused", join(names));
  }
  out.json = body.done();
  co_return out;
}

}  // namespace pgward::admin
