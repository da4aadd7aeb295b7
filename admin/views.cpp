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

namespace {

std::string iso_time(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

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

std::string pools_json(proxy::Proxy& p) {
  std::vector<std::string> items;
  for (proxy::PoolEntry* e : p.pools()) {
    const auto ps = e->pool.stats();
    const auto settings = e->pool.settings();
    const auto& s = e->stats;
    const auto closing = std::max<std::int64_t>(0, st::get(s.servers_closing));
    items.push_back(Obj()
                        .str("database", e->pool.database())
                        .str("user", e->pool.user())
                        .str("mode", config::to_string(settings.mode))
                        .num("size", ps.size)
                        .num("min_size", ps.min_size)
                        .boolean("paused", ps.paused)
                        .boolean("removed", e->removed.load())
                        .num("clients_active", st::get(s.clients_active))
                        .num("clients_waiting", st::get(s.clients_waiting))
                        .num("clients_idle", st::get(s.clients_idle))
                        .num("servers_active", std::max<std::int64_t>(0, std::int64_t{ps.active} - closing))
                        .num("servers_idle", ps.idle)
                        .num("servers_connecting", ps.connecting)
                        .num("servers_closing", closing)
                        .num("wait_timeouts", ps.wait_timeouts)
                        .num("transactions", st::get(s.transactions))
                        .num("queries", st::get(s.queries))
                        .num("bytes_received", st::get(s.bytes_received))
                        .num("bytes_sent", st::get(s.bytes_sent))
                        .done());
  }
  return join(items);
}

// A TLS description ("TLSv1.3 TLS_AES_256_GCM_SHA384") as JSON: null for a plain connection.
std::string tls_json(const std::string& tls) { return tls.empty() ? "null" : json_string(tls); }

std::string clients_json(proxy::Proxy& p) {
  std::vector<std::string> items;
  for (const auto& c : p.clients()) {
    const auto id = c->identity();
    const auto server = c->server_id.load(std::memory_order_relaxed);
    Obj o;
    const auto phase = c->phase.load(std::memory_order_relaxed);
    o.num("id", c->id)
        .str("peer", c->peer)
        .str("state", proxy::to_string(proxy::client_state(phase)))
        .str("phase", proxy::to_string(phase))
        .str("database", id.database)
        .str("user", id.user)
        .str("connected_at", iso_time(c->connected_at));
    o.raw("tls", tls_json(c->tls()));
    if (server) {
      o.num("server_id", server);
    } else {
      o.raw("server_id", "null");
    }
    if (const auto pin = c->pin.load(std::memory_order_relaxed); pin != proxy::PinReason::none) {
      o.str("pinned", proxy::to_string(pin));
    } else {
      o.raw("pinned", "null");
    }
    items.push_back(o.done());
  }
  return join(items);
}

std::string servers_json(proxy::Proxy& p) {
  std::vector<std::string> items;
  std::map<std::pair<std::string, std::string>, proxy::PoolEntry*> pools;
  for (proxy::PoolEntry* e : p.pools()) pools[{e->pool.database(), e->pool.user()}] = e;
  // Active servers are known through the clients linked to them; idle ones through their pools.
  for (const auto& c : p.clients()) {
    const auto server = c->server_id.load(std::memory_order_relaxed);
    if (!server) continue;
    const auto id = c->identity();
    Obj o;
    o.num("id", server).str("state", "active").str("database", id.database).str("user", id.server_user);
    if (auto it = pools.find({id.database, id.server_user}); it != pools.end()) {
      const proxy::ServerTarget target = it->second->target();
      o.str("host", target.host).num("port", target.port);
    }
    o.num("client_id", c->id);
    items.push_back(o.done());
  }
  for (proxy::PoolEntry* e : p.pools()) {
    for (const auto& s : e->pool.idle_servers()) {
      const auto* conn = dynamic_cast<const proxy::ServerConn*>(s.get());
      if (!conn) continue;
      const auto idle_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(pool::Clock::now() - s->idle_since).count();
      items.push_back(Obj()
                          .num("id", conn->id())
                          .str("state", "idle")
                          .str("database", e->pool.database())
                          .str("user", e->pool.user())
                          .str("host", conn->target().host)
                          .num("port", conn->target().port)
                          .num("idle_ms", idle_ms)
                          .raw("client_id", "null")
                          .raw("tls", tls_json(conn->tls_description()))
                          .done());
    }
  }
  return join(items);
}

std::string config_json(proxy::Proxy& p) {
  const auto cfg = p.config();
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
  const auto paused = p.paused();
  std::vector<std::string> paused_json;
  for (const auto& d : paused) paused_json.push_back(json_string(d));

  Obj admin;
  admin.raw("listen", endpoints_json(cfg->admin_listen));
  if (cfg->admin_token) admin.str("token", kRedacted);
  return Obj()
      .str("source_path", cfg->source_path)
      .raw("proxy", Obj()
                        .raw("listen", endpoints_json(cfg->listen))
                        .num("max_client_conn", cfg->max_client_conn)
                        .num("workers", cfg->workers)
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
      .boolean("draining", p.draining())
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
