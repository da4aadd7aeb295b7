// The proxy process: listeners, worker io_contexts, the pools, the cancel-key registry, signals and upkeep.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "pool/pool.hpp"
#include "protocol/codec.hpp"
#include "proxy/auth_lookup.hpp"
#include "proxy/client_info.hpp"
#include "proxy/console.hpp"
#include "proxy/server_conn.hpp"
#include "proxy/stats.hpp"
#include "proxy/tls.hpp"

namespace pgward::proxy {

class Session;

// Whose key a CancelRequest carries: the session it goes to, on that session's own executor. Only the session
// knows which server it has linked right now and can hold that server until the cancel has been delivered
// (see Session::forward_cancel), so that a cancel never reaches a server serving another client.
struct CancelSlot {
  std::weak_ptr<Session> session;
  boost::asio::any_io_executor executor;
};

struct PoolEntry {
  pool::Pool pool;
  stats::PoolStats stats;
  // The database left the configuration on a reload: no new clients; the pool empties as its clients leave.
  std::atomic<bool> removed{false};
  PoolEntry(std::string db, std::string user, config::PoolSettings s, ServerTarget t,
            std::vector<pool::SharedLimitPtr> limits)
      : pool(std::move(db), std::move(user), s, std::move(limits)), target_(std::move(t)) {}

  // Where new servers connect. A reload may change it while sessions on other workers read it, hence the
  // copy under a lock (taken once per server connect, never per query).
  ServerTarget target() const {
    std::lock_guard lock(target_mu_);
    return target_;
  }
  // A reload's new target keeps the pass-through keys the previous one had.
  void set_target(ServerTarget t) {
    std::lock_guard lock(target_mu_);
    if (!t.scram_keys) t.scram_keys = std::move(target_.scram_keys);
    target_ = std::move(t);
  }
  // SCRAM pass-through: the keys of the latest SCRAM login of this pool's user, used when pgward has no
  // password for it. Held until the next such login replaces them or the process ends.
  void set_scram_keys(const protocol::auth::ScramKeys& keys) {
    std::lock_guard lock(target_mu_);
    target_.scram_keys = keys;
  }

 private:
  mutable std::mutex target_mu_;
  ServerTarget target_;
};

// Something that runs beside the proxy on its main io_context (the admin HTTP server): started by run() once
// the listeners are bound, stopped when the proxy stops.
class Service {
 public:
  virtual ~Service() = default;
  virtual void start() = 0;
  virtual void stop() = 0;
};

struct ReloadResult {
  bool ok = false;
  std::string message;  // the reason when !ok
};

// The server that pools of database `db` log in to as `server_user` (proxy_pools.cpp).
ServerTarget server_target_for(const config::Config& cfg, const TlsContexts& tls, const config::Database& db,
                               const std::string& server_user);

class Proxy {
 public:
  explicit Proxy(std::shared_ptr<const config::Config> config, std::string config_path);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Binds the listeners (throws on failure) and serves until stopped. Returns the process exit code.
  int run();

  std::shared_ptr<const config::Config> config() const;
  // The TLS contexts of the running configuration (swapped with it on a reload).
  std::shared_ptr<const TlsContexts> tls() const;
  void count_tls_handshake(TlsSide side, bool ok) {
    if (side == TlsSide::client) {
      stats::add(ok ? stats_.tls_client_ok : stats_.tls_client_failed);
    } else {
      stats::add(ok ? stats_.tls_server_ok : stats_.tls_server_failed);
    }
  }
  // The pool for (database, server user), created on first use; null when `db` comes from the `*` fallback
  // and max_fallback_databases other names already have pools.
  PoolEntry* pool_for(const config::Database& db, const std::string& client_user);

  // A fresh random key for a new client, registered until unregister_client().
  protocol::CancelRequest register_client(std::shared_ptr<CancelSlot> slot);
  void unregister_client(const protocol::CancelRequest& key);
  // Handles a client's CancelRequest: hands it to the session that owns the key, which forwards it to its
  // server if it has one linked.
  void cancel(const protocol::CancelRequest& key);
  // max_buffer_total: takes n bytes of the budget for unfinished client messages; false when it is spent.
  bool reserve_buffer(std::size_t n);
  void release_buffer(std::size_t n);

  // max_client_conn accounting: false when the limit is reached (the caller must not call client_left()).
  bool client_arrived();
  void client_left();
  void server_linked() { ++linked_; }
  void server_unlinked() { --linked_; }
  bool draining() const { return draining_; }

  // --- used by the admin port (and signals) ---
  void add_service(std::unique_ptr<Service> service) { services_.push_back(std::move(service)); }
  // The admin console's commands; set once before run(). Null: the console database does not exist.
  void set_console(std::unique_ptr<Console> console) { console_ = std::move(console); }
  Console* console() const { return console_.get(); }
  boost::asio::io_context& main_context() { return main_; }
  stats::GlobalStats& stats() { return stats_; }
  // Every pool created so far (entries live as long as the proxy).
  std::vector<PoolEntry*> pools();
  // auth_query lookups and their cache.
  AuthLookup& auth_lookup() { return auth_lookup_; }
  // max_user_connections and max_db_connections of every server user and database with a pool so far.
  std::vector<pool::SharedLimitPtr> shared_limits();
  // Every live session, in arrival order.
  std::vector<std::shared_ptr<ClientInfo>> clients();
  void register_session(std::shared_ptr<ClientInfo> info);
  void unregister_session(std::uint64_t id);
  std::size_t logged_in_clients() const { return clients_.load(std::memory_order_relaxed); }

  // Re-reads the config file; a bad file keeps the running configuration. Counted in the reload metrics.
  ReloadResult reload();
  // Pause/resume one database (or all when empty): transactions in flight finish, new ones wait in the pool.
  // pause() returns false for an unknown database.
  bool pause(const std::string& database);
  bool resume(const std::string& database);
  // Databases paused right now ("*" when all are).
  std::vector<std::string> paused() const;
  // Starts the drain (SIGTERM).
  void drain();

 private:
  void start_accept(boost::asio::ip::tcp::acceptor& acceptor);
  boost::asio::io_context& next_worker();
  void start_upkeep();
  void stop();
  bool is_paused_locked(const std::string& database) const;
  // Sends FATAL 57P01 to every remaining client (end of a drain).
  void terminate_clients();

  const std::string config_path_;
  mutable std::mutex config_mu_;
  std::shared_ptr<const config::Config> config_;
  std::shared_ptr<const TlsContexts> tls_;

  // Run by one thread only (workers get their own): lets Asio keep completions in a thread-private queue.
  boost::asio::io_context main_{1};
  std::vector<std::unique_ptr<boost::asio::io_context>> workers_;  // empty when workers = 1 (main serves)
  std::size_t next_worker_ = 0;
  std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>> acceptors_;

  std::mutex pools_mu_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<PoolEntry>> pools_;
  // The shared bounds of the pools, which also hold them (so a limit outlives its pools). Under pools_mu_.
  std::map<std::string, pool::SharedLimitPtr> user_limits_;  // by server user
  std::map<std::string, pool::SharedLimitPtr> db_limits_;    // by database name
  std::set<std::string>
      fallback_databases_;  // names served through the `*` fallback (max_fallback_databases)

  AuthLookup auth_lookup_;

  std::mutex cancel_mu_;
  std::map<std::pair<std::int32_t, std::int32_t>, std::shared_ptr<CancelSlot>> cancel_slots_;

  std::atomic<std::uint32_t> clients_{0};
  std::atomic<std::int64_t> linked_{0};
  std::atomic<bool> draining_{false};
  std::uint64_t next_client_id_ = 1;

  stats::GlobalStats stats_;
  std::vector<std::unique_ptr<Service>> services_;
  std::unique_ptr<Console> console_;

  std::mutex sessions_mu_;
  std::map<std::uint64_t, std::shared_ptr<ClientInfo>> sessions_;

  mutable std::mutex pause_mu_;
  bool paused_all_ = false;
  std::vector<std::string> paused_dbs_;
};

}  // namespace pgward::proxy
