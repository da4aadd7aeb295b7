// auth_query: the stored verifier of a user who is not in the users file, asked of PostgreSQL itself.
//
// The query runs in the database the client asked for, as [auth] query_user, on connections of this module's
// own: no client pool ever holds one, and their startup packets carry only that user and the database name,
// never anything a client sent (its options, search_path or other settings), so a client cannot change what
// the query resolves to. The user name reaches the query only as the bound parameter $1 (extended protocol),
// never as SQL text. At most [auth] query_pool_size lookup connections exist per database at once, idle and
// busy; connections are kept idle for the next lookups. A lookup beyond that bound waits for one (within its
// deadline), so clients hammering logins with made-up names cannot open more connections to PostgreSQL.
//
// A found verifier is cached for [auth] query_cache; a user that is not found is not cached, so that names
// made up by clients cannot grow the cache. A lookup that fails or does not finish within the database's
// server_connect_timeout reports `failed`: the caller refuses the login.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
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
#include "protocol/auth.hpp"

namespace pgward::proxy {

class ServerConn;

// What the lookup found for a user: the stored text ("SCRAM-SHA-256$...", "md5...") and, for a SCRAM
// verifier, its parsed form.
struct LookedUpSecret {
  std::string secret;
  std::optional<protocol::auth::ScramVerifier> scram;
};

class AuthLookup {
 public:
  enum class Status { found, not_found, failed };
  struct Result {
    Status status = Status::failed;
    std::shared_ptr<const LookedUpSecret> secret;  // found
    std::string error;                             // failed: why, for the client's message and the log
  };
  boost::asio::awaitable<Result> find(boost::asio::any_io_executor exec, const config::Config& cfg,
                                      const config::Database& db, const std::string& user);
  // A reload: the cache and the idle connections belong to the previous configuration.
  void clear();

  struct Stats {
    std::uint64_t cached = 0;  // answered from the cache
    std::uint64_t found = 0;
    std::uint64_t not_found = 0;
    std::uint64_t failed = 0;
    std::uint64_t waits = 0;  // lookups that had to wait for a connection (query_pool_size reached)
    std::map<std::string, std::size_t> connections;  // lookup connections open (idle + busy), by database
  };
  Stats stats() const;

 private:
  struct Entry {
    std::shared_ptr<const LookedUpSecret> secret;
    std::chrono::steady_clock::time_point expires;
  };
  struct Waiter;
  struct GiveBack;
  // A lookup's claim on one of its database's connections: an idle one (conn) or room to open one.
  struct Lease {
    bool held = false;
    std::shared_ptr<ServerConn> conn;
    std::shared_ptr<Waiter> waiter;  // while queued for a connection
  };
  struct Slots {
    std::size_t open = 0;  // idle + busy
    std::size_t max = 1;   // query_pool_size of the latest lookup
    std::vector<std::shared_ptr<ServerConn>> idle;
    std::deque<std::shared_ptr<Waiter>> waiters;
  };
  boost::asio::awaitable<void> acquire(boost::asio::any_io_executor exec, const std::string& database,
                                       std::size_t max, Lease& lease);
  void settle_locked(const std::string& database, Lease& lease);
  // Ends a lookup's lease: its connection kept for the next lookup (keep) or closed.
  void finish_locked(const std::string& database, Lease& lease, bool keep);
  // Gives a lease back: conn kept for the next lookup, or null when it was closed.
  void release_locked(const std::string& database, std::shared_ptr<ServerConn> conn);

  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, Entry> cache_;  // (database, user)
  std::map<std::string, Slots> slots_;                          // by database
  Stats stats_;
};

}  // namespace pgward::proxy
