// A server from the pool for the client: checkout, connect retries with backoff, and the client's settings
// brought onto it.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>

#include "protocol/sqlstate.hpp"
#include "proxy/session.hpp"
#include "proxy/session_shared.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;
using asio::as_tuple;
using asio::use_awaitable;

namespace {

// Connect failures worth retrying: the server is unreachable, starting up, shutting down or full. A refused
// login (bad password, unknown database) is not.
// 08001: the server's TLS answer or certificate refused by [server_tls] (server_tls.cpp), which no retry
// changes.
bool retryable(std::string_view sqlstate) {
  return (sqlstate.starts_with("08") && sqlstate != ss::kSqlclientUnableToEstablishSqlconnection) ||
         sqlstate == ss::kAdminShutdown || sqlstate == ss::kCannotConnectNow ||
         sqlstate == ss::kCrashShutdown || sqlstate == ss::kTooManyConnections;
}

}  // namespace

std::chrono::milliseconds retry_backoff(std::uint32_t attempt) {
  thread_local std::minstd_rand rng{std::random_device{}()};
  const std::int64_t ceiling =
      std::min<std::int64_t>(2000, std::int64_t{50} << std::min<std::uint32_t>(attempt, 6));
  std::uniform_int_distribution<std::int64_t> pick(ceiling / 2, ceiling);
  return std::chrono::milliseconds(pick(rng));
}

asio::awaitable<pool::Lease> Session::checkout(pool::Clock::time_point deadline,
                                               std::optional<ProxyError>& error) {
  // A checkout during login leaves the client in `login`; the time it waits is observed either way.
  const bool counted = phase_ == Phase::idle;
  if (counted) transition(Phase::waiting);
  const auto wait_start = pool::Clock::now();
  auto checkout = co_await pool_->pool.checkout(client_.get_executor(), deadline);
  track_.waited(pool::Clock::now() - wait_start);
  if (counted && phase_ == Phase::waiting) transition(Phase::idle);

  switch (checkout.outcome) {
    case pool::Pool::Outcome::timeout: {
      const auto settings = pool_->pool.settings();
      std::string what = "no server connection available for database \"" + database_->name + "\" within " +
                         std::to_string(settings.wait_timeout.count()) + " ms (pool size " +
                         std::to_string(settings.size) + ")";
      // While the database is down the reason is the database, not a busy pool.
      if (auto down = pool_->pool.last_connect_error()) {
        error = ProxyError{down->sqlstate, what + ": " + down->message, {}};
      } else {
        error = ProxyError{std::string(ss::kTooManyConnections), std::move(what), {}};
      }
      co_return pool::Lease();
    }
    case pool::Pool::Outcome::server: co_return std::move(checkout.lease);
    case pool::Pool::Outcome::connect: break;
  }

  co_return co_await connect(std::move(checkout.slot), deadline, error);
}

asio::awaitable<pool::Lease> Session::connect(pool::ConnectSlot slot, pool::Clock::time_point deadline,
                                              std::optional<ProxyError>& error) {
  auto exec = client_.get_executor();
  // A new server: the checkout's cost hardly matters next to a connect and login. Should this coroutine end
  // early (the session torn down mid-connect), the slot, dropped, is given back as a failed connect.
  const auto settings = pool_->pool.settings();
  const ServerTarget target = pool_->target();
  for (std::uint32_t attempt = 0;; ++attempt) {
    auto server = std::make_shared<ServerConn>(exec);
    auto err = co_await server->login(target);
    if (auto tls = server->tls_handshake()) proxy_.count_tls_handshake(TlsSide::server, *tls);
    if (!err) {
      auto lease = slot.connected(server);
      pool_->pool.set_server_params(server->params);
      co_return lease;
    }
    const auto delay = retry_backoff(attempt);
    if (!retryable(err->sqlstate) || attempt >= settings.server_retry_max || proxy_.draining() ||
        pool::Clock::now() + delay >= deadline) {
      slot.failed(err->sqlstate, err->message);
      spdlog::warn("client {}: {} (after {} attempts)", id_, err->message, attempt + 1);
      error = std::move(err);
      co_return pool::Lease();
    }
    spdlog::debug("client {}: {}; retrying in {} ms", id_, err->message, delay.count());
    stats::add(pool_->stats.connect_retries);
    asio::steady_timer pause(exec, delay);
    co_await pause.async_wait(as_tuple(use_awaitable));
  }
}

asio::awaitable<pool::Lease> Session::acquire(bool fatal) {
  std::optional<ProxyError> err;
  auto lease = co_await checkout(pool::Clock::now() + pool_->pool.settings().wait_timeout, err);
  if (!lease) {
    co_await send_error(err->sqlstate, err->message, fatal, err->detail);
    co_return pool::Lease();
  }
  ServerConn& server = static_cast<ServerConn&>(*lease.server());
  if (params_in_line(server)) co_return std::move(lease);
  if (auto perr = co_await restore_params(server)) {
    lease.release(server.healthy());
    co_await send_error(perr->sqlstate, perr->message, fatal, perr->detail);
    co_return pool::Lease();
  }
  co_return std::move(lease);
}

bool Session::params_in_line(const ServerConn& server) {
  if (std::exchange(client_params_changed_, false)) client_fingerprint_ = params_fingerprint(client_params_);
  return server.params_match == client_fingerprint_;
}

asio::awaitable<std::optional<ProxyError>> Session::restore_params(ServerConn& server) {
  if (params_in_line(server)) co_return std::nullopt;
  std::vector<const std::string*> differing;
  for (const auto& [k, v] : client_params_) {
    auto it = server.params.find(k);
    if (it == server.params.end() || it->second != v) differing.push_back(&k);
  }
  const bool stale_unreported =
      std::any_of(server.set_unreported.begin(), server.set_unreported.end(),
                  [&](const std::string& n) { return !client_params_.contains(n); });
  if (differing.empty() && !stale_unreported) {
    server.params_match = client_fingerprint_;
    co_return std::nullopt;
  }
  server.params_match = {};
  client_params_changed_ = true;  // the server's reports may respell what the client asked for

  const auto defaults = pool_->pool.server_params();
  // The session user first (it decides what may be SET), the role last (a role of fewer rights could not SET
  // the rest), and any role the server has is dropped before the rest.
  std::string first;
  std::string sql;
  std::string last;
  std::vector<std::string> unreported;
  // The role is set again whenever it or the session user changes (a new session user drops the role).
  const auto server_role = server.params.find("role");
  const auto client_role = client_params_.find("role");
  bool role_changes = false;
  for (const std::string* k : differing) {
    if (*k == "role" || *k == "session_authorization") role_changes = true;
    if (*k == "role") continue;
    (*k == "session_authorization" ? first : sql) += set_statement(*k, client_params_[*k]) + ';';
    if (!defaults.contains(*k)) unreported.push_back(*k);
  }
  role_changes =
      role_changes || (server_role != server.params.end()) != (client_role != client_params_.end());
  if (role_changes && server_role != server.params.end()) first += "RESET \"role\";";
  if (role_changes && client_role != client_params_.end()) {
    last += set_statement("role", client_role->second) + ';';
    unreported.push_back("role");
  }
  for (const auto& name : server.set_unreported) {
    if (client_params_.contains(name)) continue;
    if (name != "role") sql += "RESET \"" + name + "\";";
    server.params.erase(name);
  }
  sql = first + sql + last;
  if (sql.empty()) co_return std::nullopt;
  server.set_unreported.erase(
      std::remove_if(server.set_unreported.begin(), server.set_unreported.end(),
                     [&](const std::string& n) { return !client_params_.contains(n); }),
      server.set_unreported.end());
  spdlog::debug("client {} restores session state on server {}: {}", id_, server.id(), sql);
  auto err = co_await server.run_internal(sql, &client_params_);
  if (err) co_return err;
  // PostgreSQL reports a setting only when its value changed, so a SET of a value the server already had in
  // another spelling ("Postgres,MDY" over "Postgres, MDY") comes back silent: the server's last report is the
  // value in force either way, spelt as PostgreSQL spells it.
  for (const std::string* k : differing) {
    if (auto it = server.params.find(*k); it != server.params.end() && defaults.contains(*k))
      client_params_[*k] = it->second;
  }
  // The server does not report these; remember what we set.
  for (auto& name : unreported) {
    server.params[name] = client_params_[name];
    if (std::find(server.set_unreported.begin(), server.set_unreported.end(), name) ==
        server.set_unreported.end())
      server.set_unreported.push_back(std::move(name));
  }
  co_return std::nullopt;
}

}  // namespace pgward::proxy
