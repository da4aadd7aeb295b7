// A bounded pool of server connections for one (database, user).
//
// `size` is a hard upper bound on idle + active + connecting servers. Clients beyond it wait in FIFO order
// until a server is released or their deadline passes. All state sits behind one mutex held only for a few
// list operations, so sessions on several worker threads can share a pool without a rewrite; with workers = 1
// it is never contended. A waiter is woken by posting to its own executor, so a release on one thread never
// runs another thread's code.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace pgward::pool {

using Clock = std::chrono::steady_clock;

// What the pool needs of a server connection; the proxy's ServerConn implements it.
class Server {
 public:
  virtual ~Server() = default;
  virtual void close() = 0;    // closes the socket now; idempotent
  virtual bool healthy() = 0;  // cheap non-blocking check that an idle server is still usable
  Clock::time_point created_at = Clock::now();
  Clock::time_point idle_since = Clock::now();
};
using ServerPtr = std::shared_ptr<Server>;

struct PoolStats {
  std::uint32_t idle = 0;
  std::uint32_t active = 0;
  std::uint32_t connecting = 0;
  std::uint32_t waiting = 0;
  std::uint32_t size = 0;
  std::uint64_t wait_timeouts = 0;  // clients that gave up waiting (53300)
  std::uint64_t servers_opened = 0;
  std::uint64_t servers_closed = 0;
  std::uint64_t connect_failures = 0;
  std::uint32_t min_size = 0;
  bool paused = false;
};

class Pool {
 public:
  Pool(std::string database, std::string user, config::PoolSettings settings);
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  enum class Outcome {
    server,   // an idle server, now active for the caller
    connect,  // a slot is reserved: the caller opens a server and reports connected() or connect_failed()
    timeout,  // the deadline passed first
  };
  struct Checkout {
    Outcome outcome = Outcome::timeout;
    ServerPtr server;
  };
  // Waits (FIFO) until a server or a slot is free, or until `deadline`. `exec` is the caller's executor.
  boost::asio::awaitable<Checkout> checkout(boost::asio::any_io_executor exec, Clock::time_point deadline);

  // The caller of an Outcome::connect checkout reports how it went. A connected server is active for the
  // caller. A failure's SQLSTATE and text are kept until the next success, so that clients who time out
  // waiting while the database is down learn why (last_connect_error()).
  void connected(const ServerPtr& server);
  void connect_failed(std::string sqlstate = {}, std::string message = {});
  struct ConnectError {
    std::string sqlstate;
    std::string message;
  };
  // The error of the latest connect attempt, when it failed and none has succeeded since.
  std::optional<ConnectError> last_connect_error() const;

  // Returns an active server. reusable = false (or an expired lifetime) closes it and frees its slot.
  void release(ServerPtr server, bool reusable);
  // Hands a server opened for warm-up (an Outcome::connect slot from maintain()) straight to the idle list.
  void add_idle(ServerPtr server);

  // Periodic upkeep: closes idle servers past server_idle_timeout (down to min_size) or server_lifetime, and
  // returns how many new servers to open to reach min_size; slots for them are already reserved.
  std::uint32_t maintain(Clock::time_point now);
  // Closes every idle server (shutdown).
  void close_idle();

  // While paused, checkout() queues every caller (FIFO, same deadline) even when a server is idle; servers in
  // use are unaffected and come back to the idle list as usual. resume() serves the queue in order.
  void pause();
  void resume();
  bool paused() const;
  // The idle servers right now (for the admin views).
  std::vector<ServerPtr> idle_servers() const;

  void update_settings(const config::PoolSettings& settings);
  config::PoolSettings settings() const;
  PoolStats stats() const;
  const std::string& database() const { return database_; }
  const std::string& user() const { return user_; }

  // ParameterStatus values the first server reported: what clients are told at login unless they asked
  // otherwise.
  using Params = std::map<std::string, std::string, std::less<>>;
  bool has_server_params() const;
  Params server_params() const;
  void set_server_params(const Params& params);

 private:
  struct Waiter;
  using WaiterPtr = std::shared_ptr<Waiter>;

  bool expired(const Server& s, Clock::time_point now) const;
  // An idle server may be handed out: not past its lifetime and, once idle for server_check_delay, still
  // connected.
  bool usable(Server& s, Clock::time_point now) const;
  void close_locked(const ServerPtr& s);
  // Gives a free slot or server to the first waiter; caller holds mu_. Returns true when one was served.
  bool hand_to_waiter_locked(ServerPtr server);
  // Serves waiters from the idle list and free slots while any are available; caller holds mu_.
  void serve_waiters_locked(Clock::time_point now);

  const std::string database_;
  const std::string user_;
  mutable std::mutex mu_;
  config::PoolSettings settings_;
  std::vector<ServerPtr> idle_;  // LIFO: the most recently used server is the warmest
  std::uint32_t active_ = 0;
  std::uint32_t connecting_ = 0;
  std::deque<WaiterPtr> waiters_;
  std::uint64_t wait_timeouts_ = 0;
  std::uint64_t opened_ = 0;
  std::uint64_t closed_ = 0;
  std::uint64_t connect_failures_ = 0;
  bool paused_ = false;
  std::optional<ConnectError> last_connect_error_;
  Params server_params_;
  bool have_params_ = false;
};

}  // namespace pgward::pool
