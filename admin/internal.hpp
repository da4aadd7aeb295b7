// What http.cpp serves, kept out of the Beast translation unit.
#pragma once

#include <array>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "admin/browser_guard.hpp"
#include "proxy/proxy.hpp"
#include "proxy/stats.hpp"

namespace pgward::admin {

// Requests the admin port refused as ones a browser could have been made to send, indexed by Refusal.
using RefusalCounts = std::array<proxy::stats::Counter, kRefusals.size()>;

// The Prometheus text exposition of everything in proxy/stats.hpp, the pools and the admin port's own
// refusals.
std::string render_metrics(proxy::Proxy& proxy, const std::string& version, const RefusalCounts& refused);

// What the views show, read once from the pools and sessions (safe from any thread: atomics and short
// locks). The JSON views (/api/...) and the console's SHOW answers both format these rows.
struct PoolRow {
  std::string database, user, mode;
  std::int64_t size = 0, min_size = 0;
  bool paused = false, removed = false;
  std::int64_t clients_active = 0, clients_waiting = 0, clients_idle = 0;
  std::int64_t servers_active = 0, servers_idle = 0, servers_connecting = 0, servers_closing = 0;
  std::int64_t wait_timeouts = 0, transactions = 0, queries = 0, bytes_received = 0, bytes_sent = 0;
  // Sums of the wait, transaction and query histograms, and the servers closed so far.
  double wait_seconds = 0, transaction_seconds = 0, query_seconds = 0;
  std::int64_t servers_closed = 0;
};
struct ClientRow {
  std::uint64_t id = 0;
  std::string peer, state, phase, database, user;
  std::chrono::system_clock::time_point connected_at;
  std::optional<std::uint64_t> server_id;
  std::optional<std::string> pinned;
  std::string tls;  // "TLSv1.3 TLS_AES_256_GCM_SHA384", empty for a plain connection
};
struct ServerRow {
  std::uint64_t id = 0;
  std::string state, database, user;
  std::optional<std::string> host;
  std::optional<std::int64_t> port, idle_ms;
  std::optional<std::uint64_t> client_id;
  std::string tls;  // "TLSv1.3 TLS_AES_256_GCM_SHA384", empty for a plain connection
};
std::vector<PoolRow> pool_rows(proxy::Proxy& proxy);
std::vector<ClientRow> client_rows(proxy::Proxy& proxy);
std::vector<ServerRow> server_rows(proxy::Proxy& proxy);
// 2026-11-30T15:56:06Z
std::string iso_time(std::chrono::system_clock::time_point t);

std::string pools_json(proxy::Proxy& proxy);
std::string clients_json(proxy::Proxy& proxy);
std::string servers_json(proxy::Proxy& proxy);
std::string config_json(proxy::Proxy& proxy);
// The same for any configuration (`paused` and `draining` are the proxy's state); config_json(proxy) is this
// for the running one.
std::string config_json(const config::Config& cfg, const std::vector<std::string>& paused, bool draining);

struct Readiness {
  bool ready = true;
  std::string json;
};
// Not ready while draining, while paused, or while any configured database refuses a TCP connection.
boost::asio::awaitable<Readiness> check_ready(proxy::Proxy& proxy);

std::string json_string(std::string_view s);

// The JSON these views produce, one (dotted key, value as text) pair per leaf, in order: {"a":{"b":1}} =>
// ("a.b", "1"); an array of scalars is one value, its items joined with ", "; an array of objects gives
// "key[i].field". For SHOW CONFIG. Empty when the text is not such JSON.
std::vector<std::pair<std::string, std::string>> flatten_json(std::string_view json);

}  // namespace pgward::admin
