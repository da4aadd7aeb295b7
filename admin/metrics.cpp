// /metrics: a fresh prometheus-cpp registry per scrape, filled from the atomics in proxy/stats.hpp and the
// pools' own counts, then serialized with prometheus::TextSerializer. Building at scrape time keeps every
// cost off the data path (sessions only bump relaxed atomics) and makes series of removed pools disappear by
// themselves.
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "admin/internal.hpp"
#include "asio/backend.hpp"
#include "protocol/auth.hpp"

namespace pgward::admin {

namespace {

using prometheus::Labels;

prometheus::Family<prometheus::Gauge>& gauge(prometheus::Registry& r, const std::string& name,
                                             const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

prometheus::Family<prometheus::Counter>& counter(prometheus::Registry& r, const std::string& name,
                                                 const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

prometheus::Family<prometheus::Histogram>& histogram(prometheus::Registry& r, const std::string& name,
                                                     const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r);
}

void set_counter(prometheus::Family<prometheus::Counter>& f, const Labels& labels, double value) {
  f.Add(labels).Increment(value);
}

void set_histogram(prometheus::Family<prometheus::Histogram>& f, const Labels& labels,
                   const proxy::stats::Histogram& h) {
  static const prometheus::Histogram::BucketBoundaries bounds(proxy::stats::kDurationBuckets.begin(),
                                                              proxy::stats::kDurationBuckets.end());
  const auto snap = h.snapshot();
  std::vector<double> increments(snap.counts.begin(), snap.counts.end());
  f.Add(labels, bounds).ObserveMultiple(increments, snap.sum_seconds);
}

// max_user_connections and max_db_connections: one series per limit that is set (or has ever made a client
// wait), labelled with the user or database it bounds.
void add_shared_limits(prometheus::Registry& r, proxy::Proxy& p) {
  auto& limit_servers = gauge(r, "pgward_connection_limit_servers",
                              "Server connections counted against max_user_connections (name = the server "
                              "user) or max_db_connections (name = the database), where one is set");
  auto& limit_max = gauge(r, "pgward_connection_limit_max", "The value of that limit");
  auto& limit_waits = counter(r, "pgward_connection_limit_waits_total",
                              "Checkouts that had to wait because that limit was reached");
  auto& limit_evictions = counter(r, "pgward_connection_limit_evictions_total",
                                  "Idle servers of another pool closed to make room under that limit");
  for (const auto& l : p.shared_limits()) {
    const auto ls = l->stats();
    if (ls.max == 0 && ls.waits == 0) continue;  // no limit set: no series per user
    const Labels labels{
        {"limit", l->kind() == pool::SharedLimit::Kind::user ? "max_user_connections" : "max_db_connections"},
        {"name", l->name()}};
    limit_servers.Add(labels).Set(ls.used);
    limit_max.Add(labels).Set(ls.max);
    set_counter(limit_waits, labels, static_cast<double>(ls.waits));
    set_counter(limit_evictions, labels, static_cast<double>(ls.evictions));
  }
}

}  // namespace

std::string render_metrics(proxy::Proxy& p, const std::string& version, const RefusalCounts& refused) {
  namespace st = proxy::stats;
  prometheus::Registry r;
  auto& g = p.stats();
  const auto cfg = p.config();

  gauge(r, "pgward_build_info", "pgward version and event loop (epoll or io_uring); always 1")
      .Add({{"version", version}, {"io_backend", std::string(kIoBackend)}})
      .Set(1);
  gauge(r, "pgward_start_time_seconds", "Unix time pgward started").Add({}).Set(g.start_time.load());
  gauge(r, "pgward_draining", "1 while pgward drains (SIGTERM): no new clients, transactions finish")
      .Add({})
      .Set(p.draining() ? 1 : 0);
  gauge(r, "pgward_max_client_connections", "[proxy] max_client_conn").Add({}).Set(cfg->max_client_conn);
  gauge(r, "pgward_client_connections_logged_in", "Client connections counted against max_client_conn")
      .Add({})
      .Set(static_cast<double>(p.logged_in_clients()));

  set_counter(counter(r, "pgward_client_connections_accepted_total", "Client TCP connections accepted"), {},
              st::get(g.clients_accepted));
  auto& logins_refused =
      counter(r, "pgward_client_connections_refused_total", "Client connections refused at login, by reason");
  set_counter(logins_refused, {{"reason", "max_client_conn"}}, st::get(g.clients_refused_max_conn));
  set_counter(logins_refused, {{"reason", "max_fallback_databases"}},
              st::get(g.clients_refused_max_fallback));
  set_counter(logins_refused, {{"reason", "not_console_user"}}, st::get(g.clients_refused_console));
  auto& auth_failures =
      counter(r, "pgward_auth_failures_total",
              "Client authentications refused, by reason (a closed set: never a user name)");
  for (std::size_t i = 0; i < st::kAuthFailureReasons; ++i) {
    set_counter(auth_failures, {{"reason", std::string(st::to_string(static_cast<st::AuthFailure>(i)))}},
                static_cast<double>(st::get(g.auth_failures[i])));
  }
  auto& lookups = counter(r, "pgward_auth_query_lookups_total",
                          "auth_query lookups of users not in the users file, by result");
  const auto ls = p.auth_lookup().stats();
  set_counter(lookups, {{"result", "cached"}}, static_cast<double>(ls.cached));
  set_counter(lookups, {{"result", "found"}}, static_cast<double>(ls.found));
  set_counter(lookups, {{"result", "not_found"}}, static_cast<double>(ls.not_found));
  set_counter(lookups, {{"result", "failed"}}, static_cast<double>(ls.failed));
  auto& lookup_conns = gauge(r, "pgward_auth_query_connections",
                             "auth_query lookup connections open (idle and busy), by database; at most "
                             "[auth] query_pool_size each");
  for (const auto& [database, open] : ls.connections)
    lookup_conns.Add({{"database", database}}).Set(static_cast<double>(open));
  set_counter(counter(r, "pgward_auth_query_connection_waits_total",
                      "auth_query lookups that waited for a connection: query_pool_size was reached"),
              {}, static_cast<double>(ls.waits));
  set_counter(counter(r, "pgward_client_login_timeouts_total",
                      "Clients closed with 08P01 for not logging in within client_login_timeout"),
              {}, st::get(g.client_login_timeouts));
  set_counter(counter(r, "pgward_scram_key_derivations_total",
                      "SCRAM key derivations (PBKDF2): users-file passwords at load, logins to servers"),
              {}, static_cast<double>(protocol::auth::key_derivations()));
  auto& cancels =
      counter(r, "pgward_cancel_requests_total", "CancelRequests received, by what became of them");
  set_counter(cancels, {{"result", "forwarded"}}, st::get(g.cancel_forwarded));
  set_counter(cancels, {{"result", "ignored"}}, st::get(g.cancel_ignored));
  set_counter(cancels, {{"result", "coalesced"}}, st::get(g.cancel_coalesced));
  set_counter(cancels, {{"result", "unsure"}}, st::get(g.cancel_unsure));
  gauge(r, "pgward_client_buffer_bytes",
        "Bytes held for unfinished client messages beyond each client's usual buffer (max_buffer_total)")
      .Add({})
      .Set(static_cast<double>(st::get(g.client_buffer_bytes)));
  gauge(r, "pgward_client_buffer_max_bytes", "[proxy] max_buffer_total")
      .Add({})
      .Set(static_cast<double>(cfg->max_buffer_total));
  set_counter(counter(r, "pgward_client_buffer_refusals_total",
                      "Client messages refused with 53200 because max_buffer_total was reached"),
              {}, st::get(g.client_buffer_refusals));
  set_counter(counter(r, "pgward_client_message_timeouts_total",
                      "Clients closed with 08P01 for not finishing a message within client_message_timeout"),
              {}, st::get(g.client_message_timeouts));
  set_counter(counter(r, "pgward_commit_outcome_unknown_total",
                      "Clients told 08007: the connection broke while a COMMIT was in flight"),
              {}, st::get(g.commit_unknown));
  auto& reloads =
      counter(r, "pgward_config_reloads_total", "Configuration reloads (SIGHUP, POST /api/reload)");
  set_counter(reloads, {{"result", "ok"}}, st::get(g.reloads_ok));
  set_counter(reloads, {{"result", "failed"}}, st::get(g.reloads_failed));
  auto& tls =
      counter(r, "pgward_tls_handshakes_total",
              "TLS handshakes, by side (client: towards clients; server: towards PostgreSQL) and result");
  set_counter(tls, {{"side", "client"}, {"result", "ok"}}, st::get(g.tls_client_ok));
  set_counter(tls, {{"side", "client"}, {"result", "failed"}}, st::get(g.tls_client_failed));
  set_counter(tls, {{"side", "server"}, {"result", "ok"}}, st::get(g.tls_server_ok));
  set_counter(tls, {{"side", "server"}, {"result", "failed"}}, st::get(g.tls_server_failed));
  const auto contexts = p.tls();
  auto& expiry = gauge(r, "pgward_tls_certificate_expiry_timestamp_seconds",
                       "notAfter (Unix time) of the certificate pgward shows: to clients ([client_tls]), to "
                       "servers ([server_tls] cert_file); absent when there is none");
  if (contexts->client_cert_expiry() != 0)
    expiry.Add({{"side", "client"}}).Set(static_cast<double>(contexts->client_cert_expiry()));
  if (contexts->server_cert_expiry() != 0)
    expiry.Add({{"side", "server"}}).Set(static_cast<double>(contexts->server_cert_expiry()));
  auto& admin_refused =
      counter(r, "pgward_admin_requests_refused_total",
              "Admin HTTP requests refused as ones a web browser could have been made to send, by reason");
  for (const Refusal reason : kRefusals)
    set_counter(admin_refused, {{"reason", std::string(to_string(reason))}},
                static_cast<double>(st::get(refused[static_cast<std::size_t>(reason)])));
  gauge(r, "pgward_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful reload (0: none)")
      .Add({})
      .Set(g.last_reload_success_time.load());

  auto& errors =
      counter(r, "pgward_errors_total",
              "ErrorResponses sent to clients, by SQLSTATE and origin (server: relayed from PostgreSQL; "
              "proxy: made by pgward)");
  for (const auto& [key, n] : g.errors.snapshot()) {
    const auto& [database, user, sqlstate, origin] = key;
    set_counter(errors,
                {{"database", database},
                 {"user", user},
                 {"sqlstate", sqlstate},
                 {"origin", std::string(st::to_string(origin))}},
                static_cast<double>(n));
  }

  auto& clients = gauge(r, "pgward_client_connections", "Logged-in client connections by state");
  auto& servers = gauge(r, "pgward_server_connections", "Server connections by state");
  auto& size_max =
      gauge(r, "pgward_pool_max_server_connections", "Pool size: the bound on server connections");
  auto& size_min =
      gauge(r, "pgward_pool_min_server_connections", "Pool min_size: server connections kept warm");
  auto& paused = gauge(r, "pgward_pool_paused", "1 while the pool is paused (POST /api/pause)");
  auto& wait_timeouts = counter(r, "pgward_pool_wait_timeouts_total",
                                "Clients that waited wait_timeout for a server and got 53300");
  auto& opened = counter(r, "pgward_server_connections_opened_total", "Server connections opened");
  auto& closed = counter(r, "pgward_server_connections_closed_total", "Server connections closed");
  auto& attempts =
      counter(r, "pgward_server_connect_attempts_total", "Server connection attempts (TCP + login)");
  auto& failures =
      counter(r, "pgward_server_connect_failures_total", "Server connection attempts that failed");
  auto& transactions = counter(r, "pgward_transactions_total", "Transactions completed (ReadyForQuery idle)");
  auto& queries =
      counter(r, "pgward_queries_total", "Queries completed (Query, FunctionCall or Sync answered)");
  auto& received = counter(r, "pgward_client_received_bytes_total", "Bytes received from clients");
  auto& sent = counter(r, "pgward_client_sent_bytes_total", "Bytes sent to clients");
  auto& wait = histogram(r, "pgward_pool_wait_seconds", "Time a client waited for a server at checkout");
  auto& tx_seconds = histogram(r, "pgward_transaction_duration_seconds",
                               "Transaction duration seen at the proxy: first query to ReadyForQuery idle");
  auto& query_seconds = histogram(r, "pgward_query_duration_seconds",
                                  "Query duration seen at the proxy: sent to ReadyForQuery");
  auto& ps_hits = counter(r, "pgward_prepared_statement_cache_hits_total",
                          "Prepared statements a server already had under pgward's name");
  auto& ps_misses = counter(r, "pgward_prepared_statement_cache_misses_total",
                            "Prepared statements pgward had to prepare on the server");
  auto& ps_evictions =
      counter(r, "pgward_prepared_statement_cache_evictions_total",
              "Prepared statements closed on a server to stay within max_prepared_statements");

  auto& retries = counter(r, "pgward_server_connect_retries_total",
                          "Failed server connects retried after a backoff (server_retry_max)");
  auto& lost = counter(r, "pgward_server_lost_total", "Server connections that died under a linked client");
  auto& idle_tx = counter(r, "pgward_idle_transaction_timeouts_total",
                          "Clients closed by idle_in_transaction_timeout (25P03)");
  auto& resolutions = counter(r, "pgward_commit_resolutions_total",
                              "COMMITs in flight when their server died, by the outcome pgward learnt");

  auto& pinned = gauge(r, "pgward_clients_pinned",
                       "Clients held on their server by session state that cannot follow them, by reason");
  auto& pins = counter(r, "pgward_pins_total", "Clients pinned to their server, by reason");
  std::array<double, proxy::kPinReasons> pins_by_reason{};

  for (proxy::PoolEntry* e : p.pools()) {
    const Labels base{{"database", e->pool.database()}, {"user", e->pool.user()}};
    auto with = [&](const char* key, const char* value) {
      Labels l = base;
      l.emplace(key, value);
      return l;
    };
    const auto ps = e->pool.stats();
    const auto& s = e->stats;
    for (std::size_t i = 1; i < proxy::kPinReasons; ++i) {
      const char* reason = proxy::to_string(static_cast<proxy::PinReason>(i));
      pinned.Add(with("reason", reason)).Set(static_cast<double>(st::get(s.clients_pinned[i])));
      pins_by_reason[i] += static_cast<double>(st::get(s.pins[i]));
    }
    clients.Add(with("state", "active")).Set(static_cast<double>(st::get(s.clients_active)));
    clients.Add(with("state", "waiting")).Set(static_cast<double>(st::get(s.clients_waiting)));
    clients.Add(with("state", "idle")).Set(static_cast<double>(st::get(s.clients_idle)));
    const auto closing = std::max<std::int64_t>(0, st::get(s.servers_closing));
    servers.Add(with("state", "active")).Set(std::max<double>(0, static_cast<double>(ps.active) - closing));
    servers.Add(with("state", "idle")).Set(ps.idle);
    servers.Add(with("state", "connecting")).Set(ps.connecting);
    servers.Add(with("state", "closing")).Set(static_cast<double>(closing));
    size_max.Add(base).Set(ps.size);
    size_min.Add(base).Set(ps.min_size);
    paused.Add(base).Set(ps.paused ? 1 : 0);
    set_counter(wait_timeouts, base, static_cast<double>(ps.wait_timeouts));
    set_counter(opened, base, static_cast<double>(ps.servers_opened));
    set_counter(closed, base, static_cast<double>(ps.servers_closed));
    set_counter(attempts, base, static_cast<double>(ps.servers_opened + ps.connect_failures));
    set_counter(failures, base, static_cast<double>(ps.connect_failures));
    set_counter(transactions, base, static_cast<double>(st::get(s.transactions)));
    set_counter(queries, base, static_cast<double>(st::get(s.queries)));
    set_counter(received, base, static_cast<double>(st::get(s.bytes_received)));
    set_counter(sent, base, static_cast<double>(st::get(s.bytes_sent)));
    set_histogram(wait, base, s.wait);
    set_histogram(tx_seconds, base, s.transaction);
    set_histogram(query_seconds, base, s.query);
    set_counter(ps_hits, base, static_cast<double>(st::get(s.prepared_hits)));
    set_counter(ps_misses, base, static_cast<double>(st::get(s.prepared_misses)));
    set_counter(ps_evictions, base, static_cast<double>(st::get(s.prepared_evictions)));
    set_counter(retries, base, static_cast<double>(st::get(s.connect_retries)));
    set_counter(lost, base, static_cast<double>(st::get(s.servers_lost)));
    set_counter(idle_tx, base, static_cast<double>(st::get(s.idle_transaction_timeouts)));
    set_counter(resolutions, with("outcome", "committed"),
                static_cast<double>(st::get(s.commits_verified_committed)));
    set_counter(resolutions, with("outcome", "aborted"),
                static_cast<double>(st::get(s.commits_verified_aborted)));
    set_counter(resolutions, with("outcome", "unknown"), static_cast<double>(st::get(s.commits_unresolved)));
  }
  add_shared_limits(r, p);
  for (std::size_t i = 1; i < proxy::kPinReasons; ++i)
    set_counter(pins, {{"reason", proxy::to_string(static_cast<proxy::PinReason>(i))}}, pins_by_reason[i]);

  return prometheus::TextSerializer().Serialize(r.Collect());
}

}  // namespace pgward::admin
