// The proxy process: listeners, worker io_contexts, the pools, the cancel-key registry, signals and upkeep.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "pool/pool.hpp"
#include "protocol/codec.hpp"
#include "proxy/server_conn.hpp"

namespace pgward::proxy {

// Where a cancel for one client goes right now: the server linked to it, if any. A session updates its slot when
// it links or unlinks; a CancelRequest reads it. Never the server's own key towards the client.
struct CancelSlot {
  std::mutex mu;
  std::optional<ServerTarget> target;
  protocol::CancelRequest server_key{};
};

struct PoolEntry {
  pool::Pool pool;
  ServerTarget target;
  PoolEntry(std::string db, std::string user, config::PoolSettings s, ServerTarget t)
      : pool(std::move(db), std::move(user), s), target(std::move(t)) {}
};

class Proxy {
 public:
  explicit Proxy(std::shared_ptr<const config::Config> config, std::string config_path);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Binds the listeners (throws on failure) and serves until stopped. Returns the process exit code.
  int run();

  std::shared_ptr<const config::Config> config() const;
  // The pool for (database, server user), created on first use.
  PoolEntry& pool_for(const config::Database& db, const std::string& client_user);

  // A fresh random key for a new client, registered until unregister_client().
  protocol::CancelRequest register_client(std::shared_ptr<CancelSlot> slot);
  void unregister_client(const protocol::CancelRequest& key);
  // Handles a client's CancelRequest: forwards it to the server linked to that client at this moment, if any.
  void cancel(const protocol::CancelRequest& key, boost::asio::any_io_executor exec);

  // max_client_conn accounting: false when the limit is reached (the caller must not call client_left()).
  bool client_arrived();
  void client_left();
  void server_linked() { ++linked_; }
  void server_unlinked() { --linked_; }
  bool draining() const { return draining_; }

 private:
  void start_accept(boost::asio::ip::tcp::acceptor& acceptor);
  boost::asio::io_context& next_worker();
  void start_upkeep();
  void reload();
  void drain();
  void stop();

  const std::string config_path_;
  mutable std::mutex config_mu_;
  std::shared_ptr<const config::Config> config_;

  boost::asio::io_context main_;
  std::vector<std::unique_ptr<boost::asio::io_context>> workers_;  // empty when workers = 1 (main serves)
  std::size_t next_worker_ = 0;
  std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>> acceptors_;

  std::mutex pools_mu_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<PoolEntry>> pools_;

  std::mutex cancel_mu_;
  std::map<std::pair<std::int32_t, std::int32_t>, std::shared_ptr<CancelSlot>> cancel_slots_;

  std::atomic<std::uint32_t> clients_{0};
  std::atomic<std::int64_t> linked_{0};
  std::atomic<bool> draining_{false};
  std::uint64_t next_client_id_ = 1;
};

}  // namespace pgward::proxy
