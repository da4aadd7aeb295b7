// The session's side of the statistics: the gauges and the admin views follow the session's phase
// (Session::transition() calls set_phase(), and nothing else moves them), and protocol events become counter
// bumps. Everything here runs on the session's executor; what it shares with other threads is relaxed atomics
// (and the errors map, behind its own mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>

#include "proxy/client_info.hpp"
#include "proxy/stats.hpp"

namespace pgward::proxy {

class Proxy;
struct PoolEntry;

class ClientTracker {
 public:
  using Clock = std::chrono::steady_clock;

  ClientTracker() = default;
  ClientTracker(const ClientTracker&) = delete;
  ClientTracker& operator=(const ClientTracker&) = delete;
  ~ClientTracker();

  // Registers the session with the proxy (admin views, drain).
  void start(Proxy& proxy, std::shared_ptr<Session> session, std::uint64_t id, std::string peer,
             boost::asio::any_io_executor exec);
  // The pool the client's counters go to, once known (before its first checkout).
  void set_pool(PoolEntry* pool);
  // Login succeeded.
  void logged_in(std::string_view database, std::string_view user);

  // The session's phase changed: moves the per-pool client gauges and what /api/clients shows.
  void set_phase(Phase phase);
  void set_tls(std::string text) {
    if (info_) info_->set_tls(std::move(text));
  }
  // The server linked to the client (0: none) and its TLS description (null: plain), for /api/clients and
  // /api/servers.
  void set_server(std::uint64_t server_id, const std::shared_ptr<const std::string>& tls);
  // The client is held on its server for `reason` (PinReason::none: no longer): the pinned gauge, the pin
  // counter and /api/clients.
  void set_pin(PinReason reason);
  // The time a pool checkout took.
  void waited(Clock::duration d);

  // A Query, FunctionCall or Sync goes to the server; `pending` is how many were outstanding before it.
  void query_sent(std::int64_t pending);
  // A ReadyForQuery came back; `pending` is how many are still outstanding after it.
  void ready_for_query(char tx_status, std::int64_t pending);

  void received(std::size_t n) {
    if (stats_) stats::add(stats_->bytes_received, n);
  }
  void sent(std::size_t n) {
    if (stats_) stats::add(stats_->bytes_sent, n);
  }

  // An ErrorResponse from the server on its way to the client (the message body after the length word).
  void server_error(std::string_view body);
  // An ErrorResponse pgward itself sends.
  void proxy_error(std::string_view sqlstate);

  // Server cleanup after the client left (DISCARD ALL): counted as a closing server while it runs.
  void closing_begin() {
    if (stats_) stats_->servers_closing.fetch_add(1, std::memory_order_relaxed);
  }
  void closing_end() {
    if (stats_) stats_->servers_closing.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  void count_error(std::string_view sqlstate, stats::ErrorOrigin origin);
  static stats::Gauge* gauge(stats::PoolStats& s, ClientState state);

  Proxy* proxy_ = nullptr;
  std::shared_ptr<ClientInfo> info_;
  PoolEntry* pool_ = nullptr;
  stats::PoolStats* stats_ = nullptr;
  ClientState state_ = ClientState::login;  // client_state() of the phase last set
  PinReason pin_ = PinReason::none;
  std::uint64_t server_id_ = 0;                 // the last set_server()
  const std::string* published_tls_ = nullptr;  // the server TLS text last given to info_
  Clock::time_point query_start_{};
  Clock::time_point tx_start_{};
  bool in_tx_ = false;
};

}  // namespace pgward::proxy
