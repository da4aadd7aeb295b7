// auth_query: the stored verifier of a user who is not in the users file, asked of PostgreSQL itself.
//
// The query runs in the database the client asked for, as [auth] query_user, on connections of this module's
// own: no client pool ever holds one, and their startup packets carry only that user and the database name,
// never anything a client sent (its options, search_path or other settings), so a client cannot change what
// the query resolves to. The user name reaches the query only as the bound parameter $1 (extended protocol),
// never as SQL text. One idle connection per database is kept for the next lookup.
//
// A found verifier is cached for [auth] query_cache; a user that is not found is not cached, so that names
// made up by clients cannot grow the cache. A lookup that fails or does not finish within the database's
// server_connect_timeout reports `failed`: the caller refuses the login.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
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
  };
  Stats stats() const;

 private:
  struct Entry {
    std::shared_ptr<const LookedUpSecret> secret;
    std::chrono::steady_clock::time_point expires;
  };
  std::shared_ptr<ServerConn> take_idle(const std::string& database);

  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, Entry> cache_;  // (database, user)
  std::map<std::string, std::shared_ptr<ServerConn>> idle_;     // by database
  Stats stats_;
};

}  // namespace pgward::proxy
