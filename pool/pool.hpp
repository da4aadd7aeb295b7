// A bounded pool of server connections for one (database, user).
//
// `size` is a hard upper bound on idle + active + connecting servers. Clients beyond it wait in FIFO order
// until a server is released or their deadline passes. All state sits behind one mutex held only for a few
// list operations, so sessions on several worker threads can share a pool without a rewrite; with workers = 1
// it is never contended. A waiter is woken by posting to its own executor, so a release on one thread never
// runs another thread's code.
//
// What a caller holds of the pool is a handle: a Lease for a server in use, a ConnectSlot for a server being
// opened. Both are move-only and give their slot back when destroyed, on whatever thread that happens (the
// mutex makes that safe), so no exception or early return can leak a slot. The pool must outlive its handles.
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
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "pool/limit.hpp"

namespace pgward::pool {

using Clock = std::chrono::steady_clock;

// The event loop an executor runs on, as Server::home holds it.
inline const void* event_loop_of(const boost::asio::any_io_executor& exec) {
  return &boost::asio::query(exec, boost::asio::execution::context_as<boost::asio::execution_context&>);
}

// What the pool needs of a server connection; the proxy's ServerConn implements it.
class Server {
 public:
  virtual ~Server() = default;
  virtual void close() = 0;    // closes the socket now; idempotent
  virtual bool healthy() = 0;  // cheap non-blocking check that an idle server is still usable
  // Called under the pool's lock as the server is parked on the idle list: it watches its connection from
  // now on, and should the server close it or say anything while idle (a FATAL from pg_terminate_backend, a
  // shutdown), calls pool.idle_died(self, period) from whichever thread noticed. `period` tells this idle
  // spell from later ones. Whoever checks the server out ends the watch (the proxy's first read does).
  virtual void watch_idle(Pool& /*pool*/, const std::shared_ptr<Server>& /*self*/, std::uint64_t /*period*/) {
  }
  // The event loop (io_context) its socket's completions run on; null when unknown. With workers > 1 a
  // checkout prefers a server at the caller's own loop, whose reads then complete on the caller's thread
  // without a hop.
  const void* home = nullptr;
  Clock::time_point created_at = Clock::now();
  Clock::time_point idle_since = Clock::now();
  std::uint64_t idle_period = 0;  // bumped each time the server is parked idle; guarded by the pool's lock
};
using ServerPtr = std::shared_ptr<Server>;

class Pool;

// A server checked out of a pool, active for the holder until given back. release(reusable) gives it back
// with a verdict; a lease destroyed or reset() without one closes the server and frees its slot: nobody
// vouched for its state (a transaction may be open, half a message sent), so it is never reused.
class Lease {
 public:
  Lease() = default;
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;  // gives back (closes) what this lease held first
  ~Lease() { reset(); }

  explicit operator bool() const { return server_ != nullptr; }
  const ServerPtr& server() const { return server_; }
  Server* operator->() const { return server_.get(); }
  // The server as the type its opener made (the proxy's ServerConn): a pool only ever holds one kind.
  template <class T>
  std::shared_ptr<T> server_as() const {
    return std::static_pointer_cast<T>(server_);
  }

  // Gives the server back: to the next waiter or the idle list when `reusable` (and within its lifetime and
  // the pool's bound), else it is closed. The lease is empty afterwards; a no-op on an empty lease.
  void release(bool reusable);
  void reset() { release(false); }

 private:
  friend class Pool;
  friend class ConnectSlot;
  Lease(Pool* pool, ServerPtr server) noexcept : pool_(pool), server_(std::move(server)) {}

  Pool* pool_ = nullptr;
  ServerPtr server_;
};

// A slot reserved for a server the holder is opening (a checkout found no idle server but room under the
// bound, or maintain() wants one warm). connected() turns it into the new server's Lease, add_idle() puts a
// warm-up server on the idle list, failed() reports why the connect failed. A slot destroyed without any of
// these (an exception, an abandoned attempt) counts as a failed connect. A failed slot goes to the next
// waiter, who tries to connect in turn.
class ConnectSlot {
 public:
  ConnectSlot() = default;
  ConnectSlot(ConnectSlot&& other) noexcept : pool_(std::exchange(other.pool_, nullptr)) {}
  ConnectSlot& operator=(ConnectSlot&& other) noexcept;  // abandons what this slot held first
  ~ConnectSlot() { abandon(); }

  explicit operator bool() const { return pool_ != nullptr; }

  // The server opened for this slot, now active for the caller. Requires a held slot; empties it.
  Lease connected(ServerPtr server);
  // The server opened for this slot (a warm-up), straight to the next waiter or the idle list.
  void add_idle(ServerPtr server);
  // The connect failed: the SQLSTATE and text are kept as the pool's last_connect_error().
  void failed(std::string sqlstate, std::string message);

 private:
  friend class Pool;
  explicit ConnectSlot(Pool* pool) noexcept : pool_(pool) {}
  void abandon();

  Pool* pool_ = nullptr;
};

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
  // `limits`: the shared bounds this pool's servers count against besides its own `size` (limit.hpp).
  Pool(std::string database, std::string user, config::PoolSettings settings,
       std::vector<SharedLimitPtr> limits = {});
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  enum class Outcome {
    server,   // an idle server, now active for the caller: `lease`
    connect,  // a slot is reserved: the caller opens a server with `slot`
    timeout,  // the deadline passed first
  };
  struct Checkout {
    Outcome outcome = Outcome::timeout;
    Lease lease;       // Outcome::server
    ConnectSlot slot;  // Outcome::connect
  };
  // Waits (FIFO) until a server or a slot is free, or until `deadline`. `exec` is the caller's executor.
  boost::asio::awaitable<Checkout> checkout(boost::asio::any_io_executor exec, Clock::time_point deadline);

  // A failed connect's SQLSTATE and text (ConnectSlot::failed) are kept until the next success, so that
  // clients who time out waiting while the database is down learn why.
  struct ConnectError {
    std::string sqlstate;
    std::string message;
  };
  // The error of the latest connect attempt, when it failed and none has succeeded since.
  std::optional<ConnectError> last_connect_error() const;

  // Periodic upkeep: closes idle servers past server_idle_timeout (down to min_size) or server_lifetime, and
  // returns one reserved slot for each new server to open to reach min_size (ConnectSlot::add_idle).
  std::vector<ConnectSlot> maintain(Clock::time_point now);
  // Server::watch_idle saw `server` die in its idle spell `period`: closed and taken off the idle list,
  // unless it was checked out since (its holder then sees the loss itself). Any thread.
  void idle_died(const ServerPtr& server, std::uint64_t period);
  // Closes every idle server (shutdown).
  void close_idle();
  // Closes the idle server idle the longest; false when none is idle. A shared limit calls it to make room
  // for another pool.
  bool close_one_idle();
  // A shared limit has room again: serves waiters that were held back by it.
  void limit_freed();

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
  friend class Lease;
  friend class ConnectSlot;
  struct Waiter;
  using WaiterPtr = std::shared_ptr<Waiter>;

  // What the handles report; each takes mu_.
  void give_back(ServerPtr server, bool reusable);  // Lease::release
  void slot_connected();                            // ConnectSlot::connected
  void slot_to_idle(ServerPtr server);              // ConnectSlot::add_idle
  // ConnectSlot::failed (with the error) and an abandoned slot (none: the last error stays as it was).
  void slot_failed(std::optional<ConnectError> error);

  bool expired(const Server& s, Clock::time_point now) const;
  // An idle server may be handed out: not past its lifetime and, once idle for server_check_delay, still
  // connected.
  bool usable(Server& s, Clock::time_point now) const;
  void close_locked(const ServerPtr& s);
  // Reserves room for one more server: under `size` and one unit of every shared limit. When a shared limit
  // refuses, *refused names it and, with an executor, this pool is woken on it when the limit frees up.
  bool reserve_locked(const boost::asio::any_io_executor* exec, SharedLimit** refused = nullptr);
  // A server left the count (closed, or its connect failed): its units go back to the shared limits.
  void unreserve_locked();
  // A free slot, if there is room, to the first waiter; caller holds mu_.
  void offer_slot_locked();
  // A server about to be parked idle (no waiter here) is wanted by another pool of a shared limit.
  bool wanted_elsewhere_locked() const;
  // Puts a server on the idle list and starts its watch; caller holds mu_.
  void park_locked(ServerPtr server, Clock::time_point now);
  // Takes a waiter out of the queue if it is still there; caller holds mu_.
  void dequeue_locked(const WaiterPtr& waiter);
  // Gives a free slot or server to the first waiter; caller holds mu_. Returns true when one was served.
  bool hand_to_waiter_locked(ServerPtr server);
  // Serves waiters from the idle list and free slots while any are available; caller holds mu_.
  void serve_waiters_locked(Clock::time_point now);

  const std::string database_;
  const std::string user_;
  const std::vector<SharedLimitPtr> limits_;
  mutable std::mutex mu_;
  config::PoolSettings settings_;
  std::vector<ServerPtr> idle_;  // LIFO: the most recently used server is the warmest
  // How many idle servers from the back a checkout looks through for one at the caller's loop (Server::home).
  static constexpr std::size_t kHomeScan = 8;
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
