// Counters and gauges the data path bumps, read by the admin port at scrape time.
//
// Everything a session touches per message or per transaction is a relaxed std::atomic: no locks, no
// allocation, no string formatting. The only map here (errors by SQLSTATE) sits behind a mutex because errors
// are rare and their label set is open-ended. This header knows nothing of Prometheus: admin/ turns these
// into metric families.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>

namespace pgward::proxy::stats {

using Counter = std::atomic<std::uint64_t>;
using Gauge = std::atomic<std::int64_t>;

inline void add(Counter& c, std::uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
inline std::uint64_t get(const Counter& c) { return c.load(std::memory_order_relaxed); }
inline std::int64_t get(const Gauge& g) { return g.load(std::memory_order_relaxed); }

// Fixed buckets (upper bounds in seconds), shared by every duration histogram: from half a millisecond, what
// a pooled point query takes, up to a minute, where wait_timeout and long transactions live.
inline constexpr std::array<double, 16> kDurationBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0};

namespace detail {
constexpr std::array<std::uint64_t, kDurationBuckets.size()> bounds_ns() {
  std::array<std::uint64_t, kDurationBuckets.size()> b{};
  for (std::size_t i = 0; i < b.size(); ++i)
    b[i] = static_cast<std::uint64_t>(kDurationBuckets[i] * 1e9 + 0.5);
  return b;
}
}  // namespace detail

class Histogram {
 public:
  static constexpr std::size_t kBuckets = kDurationBuckets.size();

  void observe(std::chrono::steady_clock::duration d) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    const std::uint64_t v = ns > 0 ? static_cast<std::uint64_t>(ns) : 0;
    std::size_t i = 0;
    while (i < kBuckets && v > kBoundsNs[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(v, std::memory_order_relaxed);
  }

  // Per-bucket (not cumulative) counts, the last one being +Inf, and the sum in seconds.
  struct Snapshot {
    std::array<std::uint64_t, kBuckets + 1> counts{};
    double sum_seconds = 0;
  };
  Snapshot snapshot() const {
    Snapshot s;
    for (std::size_t i = 0; i <= kBuckets; ++i) s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    s.sum_seconds = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
    return s;
  }

 private:
  static constexpr std::array<std::uint64_t, kBuckets> kBoundsNs = detail::bounds_ns();

  std::array<std::atomic<std::uint64_t>, kBuckets + 1> counts_{};
  std::atomic<std::uint64_t> sum_ns_{0};
};

// One per pool, i.e. per (database, server user).
struct PoolStats {
  // Logged-in clients of this pool by state; see ClientState.
  Gauge clients_idle{0};
  Gauge clients_waiting{0};
  Gauge clients_active{0};
  // Servers being cleaned up (DISCARD ALL in session mode) after their client left, before they go back or
  // close.
  Gauge servers_closing{0};

  Counter transactions{0};
  Counter queries{0};
  Counter bytes_received{0};  // from clients
  Counter bytes_sent{0};      // to clients
  Histogram wait;             // time spent in checkout, per checkout
  Histogram transaction;      // first message of a transaction to its final ReadyForQuery 'I'
  Histogram query;            // Query/Sync sent to its ReadyForQuery

  Counter prepared_hits{0};
  Counter prepared_misses{0};
  Counter prepared_evictions{0};

  Counter connect_retries{0};             // failed server connects retried after a backoff
  Counter servers_lost{0};                // server connections that died under a linked client
  Counter idle_transaction_timeouts{0};   // clients closed by idle_in_transaction_timeout (25P03)
  Counter commits_verified_committed{0};  // commit_resolution = "verify": outcomes learnt after a loss
  Counter commits_verified_aborted{0};
  Counter commits_unresolved{0};

  // Clients held on their server by session state that cannot follow them, by PinReason (index), and the
  // pins so far.
  std::array<Gauge, 8> clients_pinned{};
  std::array<Counter, 8> pins{};
};

enum class ErrorOrigin { server, proxy };
inline std::string_view to_string(ErrorOrigin o) { return o == ErrorOrigin::server ? "server" : "proxy"; }

// ErrorResponses sent to clients, by (database, user, SQLSTATE, origin). database/user are empty before
// login.
class ErrorCounts {
 public:
  using Key = std::tuple<std::string, std::string, std::string, ErrorOrigin>;
  void add(std::string_view database, std::string_view user, std::string_view sqlstate, ErrorOrigin origin) {
    std::lock_guard lock(mu_);
    ++counts_[Key{std::string(database), std::string(user), std::string(sqlstate), origin}];
  }
  std::map<Key, std::uint64_t> snapshot() const {
    std::lock_guard lock(mu_);
    return counts_;
  }

 private:
  mutable std::mutex mu_;
  std::map<Key, std::uint64_t> counts_;
};

// Why a client's authentication failed: a closed set, so that no client can grow the label set (the name of
// an unknown user is never a label).
enum class AuthFailure : std::uint8_t {
  unknown_user,     // no such user in the users file
  wrong_password,   // a known user, a wrong password or SCRAM proof
  unusable_secret,  // the stored secret cannot check this method (an md5 verifier for SCRAM, a SCRAM one for
                    // md5)
  protocol,         // a malformed or unexpected message during authentication
  lookup_failed,    // auth_query failed or timed out: the login is refused
};
inline constexpr std::size_t kAuthFailureReasons = 5;
constexpr std::string_view to_string(AuthFailure r) {
  constexpr std::string_view kNames[] = {"unknown_user", "wrong_password", "unusable_secret", "protocol",
                                         "lookup_failed"};
  return kNames[static_cast<std::size_t>(r)];
}

// Process-wide.
struct GlobalStats {
  Counter clients_accepted{0};              // TCP connections accepted
  Counter clients_refused_max_conn{0};      // FATAL 53300 at login
  Counter clients_refused_max_fallback{0};  // FATAL 53300: max_fallback_databases reached
  Counter client_login_timeouts{0};         // FATAL 08P01: not logged in within client_login_timeout
  Counter clients_refused_console{0};       // FATAL 28000: the console database, not a console user
  std::array<Counter, kAuthFailureReasons> auth_failures{};  // by AuthFailure
  Counter cancel_forwarded{0};
  Counter cancel_ignored{0};    // unknown key, or the client has no server linked
  Counter cancel_coalesced{0};  // one for the same client was still on its way
  Counter cancel_unsure{0};     // PostgreSQL did not confirm it: the server is closed, not reused
  // Memory held for unfinished client messages beyond the usual buffer (max_buffer_total), and the messages
  // refused because of it.
  Gauge client_buffer_bytes{0};
  Counter client_buffer_refusals{0};
  Counter client_message_timeouts{0};  // clients closed by client_message_timeout
  Counter commit_unknown{0};           // 08007 sent to a client
  Counter reloads_ok{0};
  Counter reloads_failed{0};
  // TLS handshakes towards clients and towards servers, by outcome.
  Counter tls_client_ok{0};
  Counter tls_client_failed{0};
  Counter tls_server_ok{0};
  Counter tls_server_failed{0};
  std::atomic<double> last_reload_success_time{0};  // Unix time
  std::atomic<double> start_time{0};
  ErrorCounts errors;
};

}  // namespace pgward::proxy::stats
