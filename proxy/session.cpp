#include "proxy/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <random>

#include "protocol/auth.hpp"
#include "protocol/sqlstate.hpp"
#include "protocol/startup_params.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;
using asio::as_tuple;
using asio::use_awaitable;
using protocol::sql::mentions_ci;

namespace {

constexpr std::size_t kClientBufferSize = 16 * 1024;
// Authentication messages are small; anything larger during login is an attack or a bug.
constexpr std::uint32_t kMaxLoginMessage = 8 * 1024;
// Largest server message the relay looks inside (ReadyForQuery, ParameterStatus); the rest stream through.
constexpr std::uint32_t kMaxServerMessage = 0x40000000 + 64;
constexpr std::string_view kParseComplete{"1\0\0\0\4", 5};

// Parameters the server reports (ParameterStatus) that no session can SET: they are the server's, not the
// client's, and never restored. Every other reported parameter is part of each client's session.
constexpr std::string_view kServerOwnedParams[] = {"server_version",    "server_encoding",
                                                   "integer_datetimes", "in_hot_standby",
                                                   "is_superuser",      "session_authorization"};

bool server_owned(std::string_view name) {
  return std::find(std::begin(kServerOwnedParams), std::end(kServerOwnedParams), name) !=
         std::end(kServerOwnedParams);
}

}  // namespace

Session::Session(Proxy& proxy, tcp::socket socket, std::uint64_t id)
    : proxy_(proxy), client_(std::move(socket)), id_(id) {
  boost::system::error_code ec;
  auto ep = client_.remote_endpoint(ec);
  peer_ = ec ? std::string("unknown") : ep.address().to_string() + ":" + std::to_string(ep.port());
  client_.set_option(tcp::no_delay(true), ec);
}

Session::~Session() {
  if (buffer_reserved_ > 0) proxy_.release_buffer(buffer_reserved_);
  if (registered_) proxy_.unregister_client(key_);
  if (counted_) proxy_.client_left();
}

void Session::start() {
  track_.start(proxy_, shared_from_this(), id_, peer_, client_.get_executor());
  asio::co_spawn(
      client_.get_executor(), [self = shared_from_this()] { return self->run(); }, asio::detached);
}

// ---------------------------------------------------------------------------------------------------------------
// client I/O

std::string_view Session::client_unread() const {
  return std::string_view(cbuf_).substr(cpos_, cend_ - cpos_);
}

void Session::consume_client(std::size_t n) {
  cpos_ += n;
  if (cpos_ == cend_) cpos_ = cend_ = 0;
}

void Session::shrink_client_buffer() {
  std::string small(kClientBufferSize, '\0');
  std::memcpy(small.data(), cbuf_.data() + cpos_, cend_ - cpos_);
  cend_ -= cpos_;
  cpos_ = 0;
  cbuf_.swap(small);
  proxy_.release_buffer(std::exchange(buffer_reserved_, 0));
}

void Session::watch_stall(bool mid_message) {
  if (!mid_message) {
    if (stall_armed_) {
      stall_armed_ = false;
      stall_timer_->cancel();
    }
    return;
  }
  // The deadline runs from the start of the message now unfinished: a client streaming many messages (a
  // long COPY) is never stalled, one that stops inside a message is. The clock is read only on reads that
  // end inside a message.
  if (!stall_armed_ || stall_messages_ != messages_seen_) {
    stall_messages_ = messages_seen_;
    stall_since_ = std::chrono::steady_clock::now();
  }
  if (stall_armed_) return;
  if (!stall_timer_) stall_timer_ = std::make_unique<asio::steady_timer>(client_.get_executor());
  stall_armed_ = true;
  arm_stall_timer(stall_since_ + config_->client_message_timeout);
}

void Session::arm_stall_timer(std::chrono::steady_clock::time_point at) {
  stall_timer_->expires_at(at);
  stall_timer_->async_wait(
      [weak = weak_from_this(), gen = ++stall_generation_](const boost::system::error_code& ec) {
        if (ec) return;
        if (auto self = weak.lock()) self->stall_expired(gen);
      });
}

void Session::stall_expired(std::uint64_t generation) {
  if (!stall_armed_ || generation != stall_generation_) return;
  const auto now = std::chrono::steady_clock::now();
  const auto deadline = stall_since_ + config_->client_message_timeout;
  if (now < deadline || !reading_client_) {
    // A newer message started since the timer was set, or pgward itself is busy (writing to a slow server):
    // not the client's stall.
    arm_stall_timer(now < deadline ? deadline : now + config_->client_message_timeout);
    return;
  }
  stalled_ = true;
  stats::add(proxy_.stats().client_message_timeouts);
  boost::system::error_code ec;
  client_.cancel(ec);  // client_loop wakes, and the session ends with 08P01
}

asio::awaitable<bool> Session::fill_client() {
  // A message is unfinished when unread bytes are left (client_loop handles every whole one) or one is being
  // passed through or dropped.
  if (relaying_) watch_stall(cend_ != cpos_ || client_pass_ > 0 || client_drop_ > 0);
  if (buffer_reserved_ > 0 && client_want_ == 0 && cend_ - cpos_ <= kClientBufferSize) shrink_client_buffer();
  if (cend_ == 0 && !server_) {
    // Idle client: hold no buffer while waiting, so that thousands of idle clients cost little memory. (A
    // swap: assigning an empty string keeps the old allocation in libstdc++.)
    std::string().swap(cbuf_);
    reading_client_ = true;
    auto [wec] = co_await client_.async_wait(tcp::socket::wait_read, as_tuple(use_awaitable));
    reading_client_ = false;
    if (wec) co_return false;
  }
  if (cpos_ > 0) {
    std::memmove(cbuf_.data(), cbuf_.data() + cpos_, cend_ - cpos_);
    cend_ -= cpos_;
    cpos_ = 0;
  }
  // A message that must be seen whole (rewritten prepared-statement messages) may need more than the usual
  // buffer: it grows as the bytes arrive, never ahead of them (its length was checked against
  // max_buffer_per_client and taken from max_buffer_total before we got here).
  if (cbuf_.size() < kClientBufferSize) {
    cbuf_.resize(kClientBufferSize);
  } else if (cend_ == cbuf_.size() && client_want_ > cbuf_.size()) {
    cbuf_.resize(std::min(client_want_, cbuf_.size() * 2));
  }
  client_want_ = 0;
  if (cend_ == cbuf_.size()) co_return false;
  reading_client_ = true;
  auto [ec, n] = co_await client_.async_read_some(asio::buffer(cbuf_.data() + cend_, cbuf_.size() - cend_),
                                                  as_tuple(asio::deferred));
  reading_client_ = false;
  if (ec) co_return false;
  cend_ += n;
  track_.received(n);
  co_return true;
}

asio::awaitable<std::optional<pr::Message>> Session::read_client_message(std::uint32_t max_length) {
  for (;;) {
    auto r = pr::decode_message(client_unread(), std::min<std::uint32_t>(max_length, kClientBufferSize - 5));
    if (r.status == pr::Status::error) {
      co_await send_error(ss::kProtocolViolation, r.error, true);
      co_return std::nullopt;
    }
    if (r.status == pr::Status::ok) {
      consume_client(r.consumed);
      co_return r.message;
    }
    if (!co_await fill_client()) co_return std::nullopt;
  }
}

asio::awaitable<bool> Session::send_client(std::string_view bytes) {
  auto [ec, n] =
      co_await asio::async_write(client_, asio::buffer(bytes.data(), bytes.size()), as_tuple(asio::deferred));
  track_.sent(n);
  co_return !ec;
}

asio::awaitable<void> Session::send_error(std::string_view sqlstate, std::string_view message, bool fatal,
                                          std::string_view detail) {
  std::string out;
  pr::put_error_response(out, {fatal ? "FATAL" : "ERROR", sqlstate, message, detail});
  track_.proxy_error(sqlstate);
  if (fatal) {
    spdlog::info("client {} closed by pgward: {} ({})", id_, message, sqlstate);
  } else {
    spdlog::debug("client {} error {}: {}", id_, sqlstate, message);
  }
  co_await send_client(out);
  if (fatal) {
    boost::system::error_code ec;
    client_.shutdown(tcp::socket::shutdown_both, ec);
    client_.close(ec);
  }
}

asio::awaitable<void> Session::send_ready_for_query(char status) {
  std::string out;
  pr::put_ready_for_query(out, status);
  co_await send_client(out);
}

// ---------------------------------------------------------------------------------------------------------------
// startup and login ("Message Flow: Start-up")

asio::awaitable<void> Session::run() {
  spdlog::info("client {} connected from {}", id_, peer_);
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(client_.get_executor(), proxy_.config()->client_login_timeout);
  auto started = co_await (startup() || deadline.async_wait(as_tuple(use_awaitable)));
  if (started.index() == 1) {
    stats::add(proxy_.stats().client_login_timeouts);
    co_await send_error(ss::kProtocolViolation, "timeout expired during login", true);
  } else if (std::get<0>(started) == LoginResult::ok && co_await finish_login()) {
    co_await client_loop();
  }
  spdlog::info("client {} closed", id_);
}

asio::awaitable<Session::LoginResult> Session::startup() {
  for (;;) {
    auto r = pr::decode_startup(client_unread());
    if (r.status == pr::Status::need_more) {
      if (!co_await fill_client()) co_return LoginResult::closed;
      continue;
    }
    if (r.status == pr::Status::error) {
      co_await send_error(ss::kProtocolViolation, r.error, true);
      co_return LoginResult::closed;
    }
    consume_client(r.consumed);

    if (std::holds_alternative<pr::SslRequest>(r.message) ||
        std::holds_alternative<pr::GssEncRequest>(r.message)) {
      // Bytes that arrived with the request were sent before our answer: a client must wait for it, so they
      // can only be an injection attempt (CVE-2021-23214). PostgreSQL refuses them the same way.
      if (cend_ != cpos_) {
        co_await send_error(ss::kProtocolViolation, "received unencrypted data after SSL request", true);
        co_return LoginResult::closed;
      }
      if (!co_await send_client("N")) co_return LoginResult::closed;
      continue;
    }
    if (auto* cancel = std::get_if<pr::CancelRequest>(&r.message)) {
      proxy_.cancel(*cancel);
      co_return LoginResult::cancel_request;
    }

    auto& sp = std::get<pr::StartupPacket>(r.message);
    std::vector<std::string_view> unrecognized;
    for (const auto& [k, v] : sp.params)
      if (k.starts_with("_pq_.")) unrecognized.push_back(k);
    if (sp.minor > pr::kProtocolMinor || !unrecognized.empty()) {
      // "NegotiateProtocolVersion": we speak 3.0 and no protocol extensions; the client decides whether to go
      // on.
      std::string out;
      pr::put_negotiate_protocol_version(out, pr::kProtocolMinor, unrecognized);
      if (!co_await send_client(out)) co_return LoginResult::closed;
    }

    if (!proxy_.client_arrived()) {
      const std::string what = "sorry, too many clients already (max_client_conn = " +
                               std::to_string(proxy_.config()->max_client_conn) + ")";
      co_await send_error(ss::kTooManyConnections, what, true);
      co_return LoginResult::closed;
    }
    counted_ = true;

    const std::string* user = sp.find("user");
    if (!user || user->empty()) {
      co_await send_error(ss::kInvalidAuthorizationSpecification,
                          "no PostgreSQL user name specified in startup packet", true);
      co_return LoginResult::closed;
    }
    user_ = *user;
    const std::string* dbname = sp.find("database");
    const std::string database = dbname && !dbname->empty() ? *dbname : user_;

    auto settings = pr::startup_settings(sp);
    if (!settings) {
      co_await send_error(ss::kFeatureNotSupported, "unsupported startup option in \"options\"", true,
                          "pgward accepts only -c name=value and --name=value");
      co_return LoginResult::closed;
    }

    // As PostgreSQL, the database is looked up only once the password is right: a client that cannot log
    // in learns nothing about which databases exist.
    config_ = proxy_.config();
    if (!co_await authenticate()) co_return LoginResult::closed;
    resolved_database_ = config_->resolve_database(database);
    database_ = resolved_database_ ? &*resolved_database_ : nullptr;
    if (!database_) {
      const std::string what = "database \"" + database + "\" does not exist";
      co_await send_error(ss::kInvalidCatalogName, what, true);
      co_return LoginResult::closed;
    }
    for (auto& [k, v] : *settings) client_params_[k] = std::move(v);
    co_return LoginResult::ok;
  }
}

asio::awaitable<bool> Session::authenticate() {
  const std::string failed = "password authentication failed for user \"" + user_ + "\"";
  const std::string* secret = config_->find_user_secret(user_);
  std::string out;

  switch (config_->auth_type) {
    case config::AuthType::trust: break;

    case config::AuthType::md5: {
      std::array<std::uint8_t, 4> salt;
      pr::auth::random_bytes(salt.data(), salt.size());
      pr::put_authentication_md5(out, salt);
      if (!co_await send_client(out)) co_return false;
      auto msg = co_await read_client_message(kMaxLoginMessage);
      if (!msg) co_return false;
      auto pw = msg->type == pr::fe::kPassword ? pr::parse_password_message(msg->body) : std::nullopt;
      if (!pw || !secret || !pr::auth::md5_check(*secret, user_, salt, *pw)) {
        co_await send_error(ss::kInvalidPassword, failed, true);
        co_return false;
      }
      break;
    }

    case config::AuthType::scram_sha_256: {
      // Verifiers are derived when the users file is loaded, never here. An unknown user (or one with only
      // an md5 verifier) still goes through the whole exchange, as PostgreSQL does, against a mock verifier
      // whose salt is stable per name and that costs no key derivation: neither the salt nor the time taken
      // tells which user names exist.
      const pr::auth::ScramVerifier* verifier = config_->find_scram_verifier(user_);
      const bool usable = verifier != nullptr;
      pr::auth::ScramServer scram(
          usable ? *verifier : pr::auth::mock_scram_verifier(pr::auth::process_auth_key(), user_));
      pr::put_authentication_sasl(out, {"SCRAM-SHA-256"});
      if (!co_await send_client(out)) co_return false;

      auto first = co_await read_client_message(kMaxLoginMessage);
      if (!first) co_return false;
      auto init =
          first->type == pr::fe::kPassword ? pr::parse_sasl_initial_response(first->body) : std::nullopt;
      if (!init || init->mechanism != "SCRAM-SHA-256") {
        co_await send_error(ss::kProtocolViolation,
                            "client selected an invalid SASL authentication mechanism", true);
        co_return false;
      }
      auto server_first = scram.handle_client_first(init->data);
      if (!server_first) {
        co_await send_error(ss::kProtocolViolation, "malformed SCRAM message", true);
        co_return false;
      }
      out.clear();
      pr::put_authentication_sasl_continue(out, *server_first);
      if (!co_await send_client(out)) co_return false;

      auto final_msg = co_await read_client_message(kMaxLoginMessage);
      if (!final_msg) co_return false;
      if (final_msg->type != pr::fe::kPassword) {
        co_await send_error(ss::kProtocolViolation, "expected SASL response", true);
        co_return false;
      }
      auto server_final = scram.handle_client_final(final_msg->body);
      if (!server_final || !usable) {
        co_await send_error(ss::kInvalidPassword, failed, true);
        co_return false;
      }
      out.clear();
      pr::put_authentication_sasl_final(out, *server_final);
      if (!co_await send_client(out)) co_return false;
      break;
    }
  }
  out.clear();
  pr::put_authentication_ok(out);
  co_return co_await send_client(out);
}

asio::awaitable<bool> Session::finish_login() {
  pool_ = proxy_.pool_for(*database_, user_);
  if (!pool_) {
    const std::string what =
        "too many databases served through the fallback database (max_fallback_databases = " +
        std::to_string(config_->max_fallback_databases) + ")";
    co_await send_error(ss::kTooManyConnections, what, true);
    co_return false;
  }
  const auto mode = database_->pool.mode;
  // A session-mode client owns its server: its statement names cannot collide, so they go through untouched.
  rewrite_ = mode != config::PoolMode::session && database_->pool.max_prepared_statements > 0;

  // The server's defaults tell the client what it has unless it asked otherwise. When pgward knows no
  // defaults yet, or the client asked for values of its own, one server checks them now: a bad value then
  // fails the login as it would on PostgreSQL, and the values come back in the server's spelling ("ISO" =>
  // "ISO, MDY").
  bool need_server = mode == config::PoolMode::session || !pool_->pool.has_server_params();
  if (!need_server) {
    const auto defaults = pool_->pool.server_params();
    for (const auto& [k, v] : client_params_) {
      auto it = defaults.find(k);
      if (it == defaults.end() || it->second != v) need_server = true;
    }
  }
  if (need_server) {
    if (mode == config::PoolMode::session) {
      if (!co_await link(true)) co_return false;
    } else {
      auto lease = co_await acquire(true);
      if (!lease) co_return false;
      lease.release(true);
    }
  }

  // A client that did not ask for a reported setting has the server's default for it, wherever it lands: a
  // value another client gave at startup (default_transaction_read_only, say) never reaches it.
  const auto defaults = pool_->pool.server_params();
  for (const auto& [name, value] : defaults) {
    if (!server_owned(name) && !client_params_.contains(name)) client_params_.emplace(name, value);
  }
  client_params_changed_ = true;

  key_ = proxy_.register_client(
      std::make_shared<CancelSlot>(CancelSlot{weak_from_this(), client_.get_executor()}));
  registered_ = true;

  std::string out;
  for (const auto& [k, v] : defaults) {
    auto it = client_params_.find(k);
    pr::put_parameter_status(out, k, it != client_params_.end() ? it->second : v);
  }
  pr::put_backend_key_data(out, key_.process_id, key_.secret_key);
  pr::put_ready_for_query(out, pr::kTxIdle);
  if (!co_await send_client(out)) co_return false;
  spdlog::info("client {} logged in: user {} database {} ({} mode)", id_, user_, database_->name,
               config::to_string(mode));
  track_.logged_in(pool_, database_->name, user_, server_ != nullptr);
  co_return true;
}

// ---------------------------------------------------------------------------------------------------------------
// server checkout

asio::awaitable<std::optional<ProxyError>> Session::restore_params(ServerConn& server) {
  // The common case: the server was last found to match settings equal to this client's. One comparison.
  if (std::exchange(client_params_changed_, false)) client_fingerprint_ = params_fingerprint(client_params_);
  if (server.params_match == client_fingerprint_) co_return std::nullopt;
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
  std::string sql;
  std::vector<std::string> unreported;
  for (const std::string* k : differing) {
    sql += set_statement(*k, client_params_[*k]);
    sql += ';';
    if (!defaults.contains(*k)) unreported.push_back(*k);
  }
  for (const auto& name : server.set_unreported) {
    if (client_params_.contains(name)) continue;
    sql += "RESET \"" + name + "\";";
    server.params.erase(name);
  }
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

namespace {

// Connect failures worth retrying: the server is unreachable, starting up, shutting down or full. A refused
// login (bad password, unknown database) is not.
bool retryable(std::string_view sqlstate) {
  return sqlstate.starts_with("08") || sqlstate == ss::kAdminShutdown || sqlstate == ss::kCannotConnectNow ||
         sqlstate == ss::kCrashShutdown || sqlstate == ss::kTooManyConnections;
}

// Exponential backoff with full jitter: 50 ms doubling per attempt up to 2 s, then a uniform draw in
// [delay/2, delay], so that clients that failed together do not retry together.
std::chrono::milliseconds backoff(std::uint32_t attempt) {
  thread_local std::minstd_rand rng{std::random_device{}()};
  const std::int64_t ceiling =
      std::min<std::int64_t>(2000, std::int64_t{50} << std::min<std::uint32_t>(attempt, 6));
  std::uniform_int_distribution<std::int64_t> pick(ceiling / 2, ceiling);
  return std::chrono::milliseconds(pick(rng));
}

}  // namespace

asio::awaitable<pool::Lease> Session::checkout(pool::Clock::time_point deadline,
                                               std::optional<ProxyError>& error) {
  auto exec = client_.get_executor();
  const auto wait_start = track_.begin_wait(pool_);
  auto checkout = co_await pool_->pool.checkout(exec, deadline);
  track_.end_wait(wait_start);

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

  // A new server: the checkout's cost hardly matters next to a connect and login. Should this coroutine end
  // early (the session torn down mid-connect), the slot, dropped, is given back as a failed connect.
  const auto settings = pool_->pool.settings();
  const ServerTarget target = pool_->target();
  for (std::uint32_t attempt = 0;; ++attempt) {
    auto server = std::make_shared<ServerConn>(exec);
    auto err = co_await server->login(target);
    if (!err) {
      auto lease = checkout.slot.connected(server);
      pool_->pool.set_server_params(server->params);
      co_return lease;
    }
    const auto delay = backoff(attempt);
    if (!retryable(err->sqlstate) || attempt >= settings.server_retry_max || proxy_.draining() ||
        pool::Clock::now() + delay >= deadline) {
      checkout.slot.failed(err->sqlstate, err->message);
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
  auto server = lease.server_as<ServerConn>();
  if (auto perr = co_await restore_params(*server)) {
    lease.release(server->healthy());
    co_await send_error(perr->sqlstate, perr->message, fatal, perr->detail);
    co_return pool::Lease();
  }
  co_return std::move(lease);
}

asio::awaitable<bool> Session::link(bool fatal) {
  auto lease = co_await acquire(fatal);
  if (!lease) co_return false;
  auto server = lease.server_as<ServerConn>();
  char status = pr::kTxIdle;
  if (lost_ == Lost::aborted) {
    // The client's transaction died with its server and it knows: this server plays the failed transaction,
    // so that PostgreSQL itself answers what follows (25P02 until ROLLBACK, COMMIT reported as ROLLBACK).
    auto r = co_await server->run_query(
        "BEGIN; DO $pgward$BEGIN RAISE EXCEPTION 'transaction lost with its server connection'; END$pgward$");
    if (r.status != pr::kTxFailed) {
      lease.release(false);
      co_await send_error(ss::kConnectionFailure, "server connection lost", fatal);
      co_return false;
    }
    status = pr::kTxFailed;
    lost_ = Lost::none;
  }
  server_ = server;
  lease_ = std::move(lease);
  server_fatal_.clear();
  pending_ = 0;
  client_waits_ = 0;
  in_doubt_ = false;
  ext_open_ = false;
  tx_status_ = status;
  server_pass_ = 0;
  server_drop_ = 0;
  expects_.clear();
  unnamed_on_server_ = false;  // whatever unnamed statement that server holds is not this client's
  release_wanted_ = false;
  cancel_unsure_ = false;
  proxy_.server_linked();
  track_.linked(server->id());
  spdlog::debug("client {} linked to server {}", id_, server->id());
  asio::co_spawn(client_.get_executor(), server_loop(std::move(server)), asio::detached);
  co_return true;
}

void Session::unlink(bool reusable) {
  if (!server_) return;
  reusable = reusable && !cancel_unsure_;
  spdlog::debug("client {} unlinked from server {} ({})", id_, server_->id(),
                reusable ? "reusable" : "closed");
  proxy_.server_unlinked();
  track_.unlinked();
  lease_.release(reusable);
  server_.reset();
}

bool Session::releasable() const {
  // Messages in flight both ways, whole (pending_, ext_open_) or in part (server_pass_, client_pass_, a write
  // under way), and cancels on their way to this server all keep it: released, it would carry the rest of a
  // message, or a cancel, to the next client.
  return pending_ == 0 && !ext_open_ && tx_status_ == pr::kTxIdle && server_pass_ == 0 && client_pass_ == 0 &&
         !server_write_busy_ && server_->cancels_in_flight == 0 &&
         database_->pool.mode != config::PoolMode::session;
}

void Session::request_release() {
  release_wanted_ = true;
  boost::system::error_code ec;
  server_->socket().cancel(ec);  // server_loop's read ends, and it sees release_wanted_
}

void Session::forward_cancel() {
  auto& global = proxy_.stats();
  if (!server_ || client_gone_) {
    stats::add(global.cancel_ignored);
    spdlog::info("client {}: cancel request while no server is linked: ignored", id_);
    return;
  }
  if (server_->cancels_in_flight > 0) {  // one is on its way to this very server: a second adds nothing
    stats::add(global.cancel_coalesced);
    return;
  }
  ++server_->cancels_in_flight;
  stats::add(global.cancel_forwarded);
  asio::co_spawn(
      client_.get_executor(),
      [self = shared_from_this(), server = server_]() -> asio::awaitable<void> {
        const CancelDelivery delivery = co_await send_cancel_request(self->client_.get_executor(),
                                                                     server->target(), server->backend_key());
        self->cancel_done(*server, delivery);
      },
      asio::detached);
}

void Session::cancel_done(ServerConn& server, CancelDelivery delivery) {
  --server.cancels_in_flight;
  if (delivery == CancelDelivery::unsure) {
    stats::add(proxy_.stats().cancel_unsure);
    spdlog::warn("client {}: PostgreSQL did not confirm a cancel for server {}: it will not be reused", id_,
                 server.id());
    if (server_.get() == &server) cancel_unsure_ = true;
  }
  if (server_ && releasable()) request_release();
}

void Session::track_frontend(char type) {
  if (type == pr::fe::kQuery || type == pr::fe::kFunctionCall || type == pr::fe::kSync) {
    track_.query_sent(pending_);
    ++client_waits_;
  }
  switch (type) {
    case pr::fe::kQuery:
    case pr::fe::kFunctionCall: ++pending_; break;
    case pr::fe::kSync:
      ++pending_;
      ext_open_ = false;
      break;
    case pr::fe::kParse:
    case pr::fe::kBind:
    case pr::fe::kDescribe:
    case pr::fe::kExecute:
    case pr::fe::kClose:
    case pr::fe::kFlush: ext_open_ = true; break;
    default: break;  // CopyData/CopyDone/CopyFail belong to a Query or Sync already counted
  }
}

// ---------------------------------------------------------------------------------------------------------------
// prepared statements

void Session::expect(char request, Expect::On on) {
  Expect& e = expects_.emplace_back();
  e.request = request;
  e.on = on;
}

void Session::ensure_on_server(const StatementPtr& stmt, std::string& wire) {
  ServerStatements& held = server_->statements;
  if (held.contains(stmt->server_name)) {
    held.touch(stmt->server_name);
    stats::add(pool_->stats.prepared_hits);
    return;
  }
  if (!stmt->sql.empty())
    return;  // made by SQL PREPARE: only a simple query re-creates it (see rewrite_prepare_execute)
  stats::add(pool_->stats.prepared_misses);
  const std::size_t max = database_->pool.max_prepared_statements;
  while (auto victim = held.evict_over(max - 1)) {
    stats::add(pool_->stats.prepared_evictions);
    put_close(wire, 'S', *victim);
    expect(pr::fe::kClose, Expect::On::swallow);
    expects_.back().more().server_removed = std::move(*victim);
  }
  // Close first: harmless when the statement is absent, and it keeps a server whose statements were dropped
  // behind pgward's back (DISCARD ALL inside a function, say) from answering the Parse with 42P05.
  put_close(wire, 'S', stmt->server_name);
  expect(pr::fe::kClose, Expect::On::swallow);
  put_parse(wire, stmt->server_name, stmt->tail);
  expect(pr::fe::kParse, Expect::On::swallow);
  expects_.back().more().server_added = stmt->server_name;
  held.add(stmt->server_name);
}

bool Session::rewrite_message(char type, std::string_view message, std::string& wire) {
  const std::string_view body = message.substr(pr::kHeaderSize);
  switch (type) {
    case pr::fe::kParse: {
      auto p = parse_parse(body);
      if (!p) return false;
      // PREPARE, EXECUTE, DEALLOCATE and DISCARD may come through the extended protocol too (psycopg sends
      // DEALLOCATE ALL so after a rollback): they act on this client's names, as in a simple query.
      std::string rewritten;
      const std::size_t text_end = p->tail.find('\0');
      const std::string_view text = p->tail.substr(0, text_end);
      if (pr::sql::may_name_statements(text)) {
        const pr::sql::Scan scan = pr::sql::scan_statement_refs(text, dialect());
        if (scan.refs.empty()) {
          if (mentions_ci(text, "dealloc") || mentions_ci(text, "discard")) forget_server_statements();
        } else {
          Expect::Extra notes;
          rewritten = rewrite_statement_names(text, scan, wire, false, notes);
          if (!notes.error_code.empty()) {
            refuse_message(wire, type, notes.error_code, std::move(notes.error));
            return true;
          }
          rewritten += p->tail.substr(text_end);  // the parameter types
          p->tail = rewritten;
          // It runs at an Execute later in the batch, or never: the client's names go now, as they always did
          // through the extended protocol.
          forget_on_success(notes);
        }
      }
      if (p->name.empty()) {
        // The unnamed statement keeps PostgreSQL's meaning: it goes to the server as it is, and pgward
        // remembers it so that a Bind in a later transaction (another server) still finds it.
        expect(type);
        Expect::Extra& x = expects_.back().more();
        x.unnamed_parse = true;
        x.prev_unnamed = unnamed_;
        x.prev_unnamed_on_server = unnamed_on_server_;
        unnamed_ = make_unnamed_statement(p->tail);
        unnamed_on_server_ = true;
        put_parse(wire, "", p->tail);
        return true;
      }
      std::string name(p->name);
      if (statements_.contains(name)) {
        // PostgreSQL's own answer, produced by the server so that a transaction block is aborted as it would
        // be.
        refuse_message(wire, type, "42P05", "prepared statement \"" + name + "\" already exists");
        return true;
      }
      StatementPtr stmt = make_statement(p->tail);
      statements_[name] = stmt;
      if (server_->statements.contains(stmt->server_name)) {
        server_->statements.touch(stmt->server_name);
        stats::add(pool_->stats.prepared_hits);
        put_close(wire, 'S', kNoopStatement);
        expect(pr::fe::kClose, Expect::On::parse_complete);
      } else {
        ensure_on_server(stmt, wire);
        // The Parse that creates it answers for the client's Parse: its ParseComplete (or error) goes
        // through.
        expects_.back().on = Expect::On::forward;
      }
      expects_.back().more().client_name = std::move(name);
      expects_.back().more().stmt = std::move(stmt);
      return true;
    }

    case pr::fe::kBind:
    case pr::fe::kDescribe: {
      std::string_view statement;
      std::optional<BindView> bind;
      if (type == pr::fe::kBind) {
        bind = parse_bind(body);
        if (!bind) return false;
        statement = bind->statement;
      } else {
        auto t = parse_target(body);
        if (!t) return false;
        if (t->kind == 'P') {
          wire.append(message);
          expect(type);
          return true;
        }
        statement = t->name;
      }

      std::string_view server_name;
      std::string missing;
      if (statement.empty()) {
        if (!unnamed_) {
          missing = "unnamed prepared statement does not exist";
        } else if (!unnamed_on_server_) {
          put_parse(wire, "", unnamed_->tail);
          expect(pr::fe::kParse, Expect::On::swallow);
          expects_.back().more().injected_unnamed = true;
          unnamed_on_server_ = true;
        }
      } else if (auto it = statements_.find(std::string(statement));
                 it != statements_.end() &&
                 (it->second->sql.empty() || server_->statements.contains(it->second->server_name))) {
        // (A statement made by SQL PREPARE cannot be re-created inside an extended-protocol batch: only a
        // simple query can carry PREPARE, and it would end the batch's implicit transaction.)
        ensure_on_server(it->second, wire);
        server_name = it->second->server_name;
      } else {
        missing = "prepared statement \"" + std::string(statement) + "\" does not exist";
      }
      if (!missing.empty()) {
        server_name = kMissingStatement;
        close_missing(wire, false);
      }

      if (type == pr::fe::kBind) {
        put_bind(wire, bind->portal, server_name, bind->rest);
      } else {
        put_describe(wire, 'S', server_name);
      }
      expect(type, missing.empty() ? Expect::On::forward : Expect::On::error);
      if (!missing.empty()) {
        expects_.back().more().error_code = "26000";
        expects_.back().more().error = std::move(missing);
      }
      return true;
    }

    case pr::fe::kClose: {
      auto t = parse_target(body);
      if (!t) return false;
      if (t->kind == 'S' && !t->name.empty()) {
        // Only this client's name goes; the server statement may serve other clients and stays (LRU).
        statements_.erase(std::string(t->name));
        put_close(wire, 'S', kNoopStatement);
      } else {
        if (t->kind == 'S') {
          unnamed_.reset();
          unnamed_on_server_ = false;
        }
        wire.append(message);
      }
      expect(type);
      return true;
    }

    default: break;
  }
  return false;
}

void Session::forget_server_statements() {
  // The server may have dropped statements behind pgward's back (a DEALLOCATE or DISCARD that pgward cannot
  // see, in a function or a DO block): the next use of each parses it again, Close first. The names of SQL
  // statements stay listed so that another client's checkout still closes them.
  server_->statements.clear();
}

void Session::evict_for_one(std::string& wire) {
  const std::size_t max = database_->pool.max_prepared_statements;
  bool closed = false;
  while (auto victim = server_->statements.evict_over(max - 1)) {
    stats::add(pool_->stats.prepared_evictions);
    put_close(wire, 'S', *victim);
    expect(pr::fe::kClose, Expect::On::swallow);
    expects_.back().more().server_removed = std::move(*victim);
    closed = true;
  }
  if (closed) {
    pr::put_sync(wire);
    expect(pr::fe::kSync, Expect::On::swallow);
    ++pending_;
  }
}

bool Session::make_present(const StatementPtr& stmt, std::string& wire, bool simple_query) {
  if (server_->statements.contains(stmt->server_name)) {
    server_->statements.touch(stmt->server_name);
    stats::add(pool_->stats.prepared_hits);
    return true;
  }
  if (stmt->sql.empty()) {
    // Made by a Parse: Close + Parse, completed by a Sync of its own when a simple query follows.
    ensure_on_server(stmt, wire);
    if (simple_query) {
      pr::put_sync(wire);
      expect(pr::fe::kSync, Expect::On::swallow);
      ++pending_;
    }
    return true;
  }
  // Made by SQL PREPARE: only a simple query can re-create it (inside an extended-protocol batch a PREPARE
  // query would end the batch's implicit transaction). Close first, in case the server still has it.
  if (!simple_query) return false;
  stats::add(pool_->stats.prepared_misses);
  evict_for_one(wire);
  put_close(wire, 'S', stmt->server_name);
  expect(pr::fe::kClose, Expect::On::swallow);
  pr::put_sync(wire);
  expect(pr::fe::kSync, Expect::On::swallow);
  pr::put_query(wire, "PREPARE " + stmt->server_name + " " + stmt->sql);
  expect(pr::fe::kQuery, Expect::On::swallow);
  expects_.back().more().server_added = stmt->server_name;
  pending_ += 2;
  server_->statements.add(stmt->server_name);
  server_->sql_owner = id_;
  server_->sql_statements.push_back(stmt->server_name);
  return true;
}

void Session::drop_foreign_sql_statements(std::string& wire) {
  ServerConn& s = *server_;
  if (s.sql_owner == id_ || s.sql_statements.empty()) {
    s.sql_owner = id_;
    return;
  }
  for (const std::string& name : s.sql_statements) s.statements.erase(name);
  close_on_server(wire, s.sql_statements);
  s.sql_statements.clear();
  s.sql_owner = id_;
}

void Session::close_on_server(std::string& wire, const std::vector<std::string>& names) {
  // Close, not DEALLOCATE: closing a statement that is gone already is no error.
  bool any = false;
  for (const std::string& name : names) {
    if (server_->statements.contains(name)) continue;  // made again since
    put_close(wire, 'S', name);
    expect(pr::fe::kClose, Expect::On::swallow);
    any = true;
  }
  if (!any) return;
  pr::put_sync(wire);
  expect(pr::fe::kSync, Expect::On::swallow);
  ++pending_;
}

void Session::close_missing(std::string& wire, bool simple_query) {
  put_close(wire, 'S', kMissingStatement);
  expect(pr::fe::kClose, Expect::On::swallow);
  if (simple_query) {
    pr::put_sync(wire);
    expect(pr::fe::kSync, Expect::On::swallow);
    ++pending_;
  }
}

pr::sql::Dialect Session::dialect() const {
  pr::sql::Dialect d;
  if (auto it = client_params_.find("standard_conforming_strings"); it != client_params_.end())
    d.backslash_quotes = it->second == "off";
  if (auto it = client_params_.find("client_encoding"); it != client_params_.end())
    d.client_only_encoding = pr::sql::client_only_encoding(it->second);
  return d;
}

void Session::forget_on_success(const Expect::Extra& x) {
  if (x.forget_all) statements_.clear();
  for (const std::string& name : x.forget) statements_.erase(name);
}

std::string Session::rewrite_statement_names(std::string_view sql, const pr::sql::Scan& scan,
                                             std::string& wire, bool simple_query, Expect::Extra& notes) {
  using Kind = pr::sql::StatementRef::Kind;
  std::string text;
  std::size_t copied = 0;      // bytes of `sql` already in `text`
  std::size_t text_chars = 0;  // characters in `text`
  for (const pr::sql::StatementRef& ref : scan.refs) {
    std::string server_name;
    switch (ref.kind) {
      case Kind::deallocate_all:
      case Kind::discard_all:
        // DEALLOCATE ALL / DISCARD ALL reach the server as they are: they drop every statement there, which
        // pgward forgets at once (other clients' shared statements are parsed again on their next use, Close
        // first). The client's own names go only if the query succeeds. SQL-made names stay listed, so that
        // the next client's checkout closes them whatever happened.
        server_->statements.clear();
        notes.forget_all = true;
        if (ref.kind == Kind::discard_all) {
          for (const auto& name : server_->set_unreported) server_->params.erase(name);
          server_->set_unreported.clear();
          server_->params_match = {};
        }
        continue;
      case Kind::prepare: {
        if (auto it = statements_.find(ref.name); it != statements_.end()) {
          // PostgreSQL's 42P05, raised by the server itself at this very statement.
          if (!make_present(it->second, wire, simple_query)) {
            notes.error_code = "42P05";  // the caller has the server fail in its place
            notes.error = "prepared statement \"" + ref.name + "\" already exists";
            return {};
          }
          server_name = it->second->server_name;
          break;
        }
        // A server name of its own for every PREPARE: one that failed may still exist on some server.
        StatementPtr stmt =
            make_sql_statement(std::to_string(id_) + '\0' + std::to_string(++sql_prepares_), ref.body);
        statements_[ref.name] = stmt;
        // Room is made after the query has run: a victim may be a statement this same query creates.
        server_->statements.add(stmt->server_name);
        // (Inside an extended-protocol batch the PREPARE runs at Execute, so nothing is evicted for it there;
        // the next client's checkout closes it anyway.)
        while (simple_query && server_->statements.size() > database_->pool.max_prepared_statements) {
          notes.evicted.push_back(*server_->statements.evict_over(database_->pool.max_prepared_statements));
        }
        server_->sql_owner = id_;
        server_->sql_statements.push_back(stmt->server_name);
        server_name = stmt->server_name;
        notes.prepared.emplace_back(ref.name, std::move(stmt));
        break;
      }
      case Kind::execute:
      case Kind::deallocate: {
        auto it = statements_.find(ref.name);
        if (it == statements_.end() || !make_present(it->second, wire, simple_query)) {
          // Not this client's: whatever the name looks like, PostgreSQL answers 26000 for it.
          server_name = kMissingStatement;
          if (!notes.uses_missing) close_missing(wire, simple_query);
          notes.uses_missing = true;
          break;
        }
        server_name = it->second->server_name;
        if (ref.kind == Kind::deallocate) {
          // The server copy goes, so that the command tag and any error are PostgreSQL's own; other clients
          // that share it get it parsed again on their next use. The client's name goes once it succeeded.
          server_->statements.erase(server_name);
          notes.forget.push_back(ref.name);
        }
        break;
      }
    }
    const std::string_view before = sql.substr(copied, ref.name_pos - copied);
    text += before;
    text_chars += pr::sql::count_chars(before);
    const std::string_view written = sql.substr(ref.name_pos, ref.name_len);
    notes.swaps.push_back(
        {server_name, ref.name, text_chars, server_name.size(), pr::sql::count_chars(written)});
    text += server_name;
    text_chars += server_name.size();
    copied = ref.name_pos + ref.name_len;
  }
  text += sql.substr(copied);
  return text;
}

bool Session::note_simple_query(std::string_view message, std::string& wire, std::size_t& span,
                                std::size_t& pos) {
  // "a simple Query message also destroys the unnamed statement" (Extended Query).
  unnamed_.reset();
  unnamed_on_server_ = false;
  auto sql = pr::parse_query(message.substr(pr::kHeaderSize));
  if (!sql || !pr::sql::may_name_statements(*sql)) {
    expect(pr::fe::kQuery);
    return false;
  }
  const pr::sql::Scan scan = pr::sql::scan_statement_refs(*sql, dialect());
  if (scan.refs.empty()) {
    if (mentions_ci(*sql, "dealloc") || mentions_ci(*sql, "discard")) forget_server_statements();
    expect(pr::fe::kQuery);
    return false;
  }
  wire.append(cbuf_, span, pos - span);
  Expect::Extra notes;
  const std::string text = rewrite_statement_names(*sql, scan, wire, true, notes);
  pr::put_query(wire, text);
  expect(pr::fe::kQuery);
  if (!notes.swaps.empty() || !notes.prepared.empty() || notes.forget_all || !notes.forget.empty()) {
    Expect::Extra& x = expects_.back().more();
    x.swaps = std::move(notes.swaps);
    x.prepared = std::move(notes.prepared);
    x.forget = std::move(notes.forget);
    x.forget_all = notes.forget_all;
  }
  // Closed before the client's next batch, once this query has made them (see client_loop).
  stats::add(pool_->stats.prepared_evictions, notes.evicted.size());
  for (std::string& name : notes.evicted) server_->evicted.push_back(std::move(name));
  pos += message.size();
  span = pos;
  return true;
}

namespace {

// The SQL of a whole Query message; empty for anything else.
std::string_view query_text(std::string_view message) {
  if (message.size() <= pr::kHeaderSize || message[0] != pr::fe::kQuery) return {};
  return pr::parse_query(message.substr(pr::kHeaderSize)).value_or(std::string_view());
}

// The SQL of a whole Parse message; empty for anything else.
std::string_view parse_text(std::string_view message) {
  if (message.size() <= pr::kHeaderSize || message[0] != pr::fe::kParse) return {};
  auto p = parse_parse(message.substr(pr::kHeaderSize));
  return p ? p->tail.substr(0, p->tail.find('\0')) : std::string_view();
}

// A short SQL command as lowercase words joined by single spaces ("commit work"), a trailing
// ';' aside; empty when the text holds anything but letters, white space and one final ';'.
std::string short_command(std::string_view sql) {
  if (sql.size() > 64) return {};
  std::string out;
  bool space = false;
  bool ended = false;
  for (char c : sql) {
    if (ended && c != ';' && !std::isspace(static_cast<unsigned char>(c))) return {};
    if (std::isalpha(static_cast<unsigned char>(c))) {
      if (space && !out.empty()) out += ' ';
      space = false;
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (std::isspace(static_cast<unsigned char>(c))) {
      space = true;
    } else if (c == ';') {
      ended = true;
    } else {
      return {};
    }
  }
  return out;
}

bool is_commit(std::string_view sql) {
  const std::string cmd = short_command(sql);
  return cmd == "commit" || cmd == "commit work" || cmd == "commit transaction" || cmd == "end" ||
         cmd == "end work" || cmd == "end transaction";
}

bool is_rollback(std::string_view sql) {
  const std::string cmd = short_command(sql);
  return cmd == "rollback" || cmd == "rollback work" || cmd == "rollback transaction" || cmd == "abort" ||
         cmd == "abort work" || cmd == "abort transaction";
}

// Whether SQL text might commit (or prepare) a transaction. Errs towards yes: a false yes only turns the
// answer to a lost server from "rolled back" (08006) into "unknown" (08007).
bool may_commit(std::string_view sql) {
  return mentions_ci(sql, "commit") || mentions_ci(sql, "end") || mentions_ci(sql, "prepare");
}

// The message of an ErrorResponse whose severity ends the connection (FATAL, PANIC); nullopt for others.
std::optional<std::string> fatal_message(std::string_view body) {
  auto fields = pr::parse_fields(body);
  if (!fields) return std::nullopt;
  std::string_view severity = pr::find_field(*fields, 'V');
  if (severity.empty()) severity = pr::find_field(*fields, 'S');
  if (severity != "FATAL" && severity != "PANIC") return std::nullopt;
  return std::string(pr::find_field(*fields, 'M'));
}

bool ends_with_sync(char request) {
  return request == pr::fe::kSync || request == pr::fe::kQuery || request == pr::fe::kFunctionCall;
}

// The response that completes an extended-protocol request ("Extended Query" in "Message Flow").
bool completes(char request, char response) {
  switch (request) {
    case pr::fe::kParse: return response == pr::be::kParseComplete;
    case pr::fe::kBind: return response == pr::be::kBindComplete;
    case pr::fe::kClose: return response == pr::be::kCloseComplete;
    case pr::fe::kDescribe: return response == pr::be::kRowDescription || response == pr::be::kNoData;
    case pr::fe::kExecute:
      return response == pr::be::kCommandComplete || response == pr::be::kEmptyQueryResponse ||
             response == pr::be::kPortalSuspended;
    default: return false;
  }
}

}  // namespace

Session::Disposition Session::answer(char type, std::string_view body, ServerConn& server,
                                     std::string_view& replacement) {
  // Messages the server may send at any time belong to no request.
  if (type == pr::be::kNoticeResponse || type == pr::be::kNotificationResponse ||
      type == pr::be::kParameterStatus)
    return Disposition::forward;
  if (type == pr::be::kReadyForQuery) {
    // Ends the first Sync/Query/FunctionCall; requests queued before it were skipped after an error.
    while (!expects_.empty()) {
      Expect e = std::move(expects_.front());
      expects_.pop_front();
      if (ends_with_sync(e.request)) {
        if (e.extra) forget_on_success(*e.extra);  // still there: no error undid it
        return e.on == Expect::On::swallow || e.on == Expect::On::txid ? Disposition::drop
                                                                       : Disposition::forward;
      }
      undo(e, server, false);
    }
    return Disposition::forward;
  }
  Expect& front = expects_.front();
  if (ends_with_sync(front.request)) {      // output of a simple query, function call or Sync
    if (front.on == Expect::On::swallow) {  // a preamble pgward injected
      if (type == pr::be::kErrorResponse && front.extra) {
        undo(front, server, true);
        front.extra.reset();
      }
      return Disposition::drop;
    }
    if (front.on == Expect::On::txid) {
      if (type == pr::be::kDataRow) {
        // 0 (InvalidTransactionId) when the transaction wrote nothing and so has no id: kept as "".
        if (auto v = pr::parse_first_column(body)) commit_txid_ = *v == "0" ? std::string() : std::string(*v);
      }
      return Disposition::drop;
    }
    if (type != pr::be::kErrorResponse || !front.extra) return Disposition::forward;
    bool replace = front.on == Expect::On::error;
    undo(front, server, true);
    if (replace) {
      replacement_ = rewrite_error(body, front.extra->error_code, front.extra->error);
    } else if (!front.extra->swaps.empty()) {
      replacement_ = translate_error(body, front.extra->swaps);
      replace = !replacement_.empty();
    }
    front.extra.reset();  // one error per query is enough to undo
    if (!replace) return Disposition::forward;
    replacement = replacement_;
    return Disposition::replace;
  }

  if (type == pr::be::kErrorResponse) {
    Expect failed = std::move(front);
    expects_.pop_front();
    undo(failed, server, true);
    // PostgreSQL skips every extended message up to the next Sync.
    while (!expects_.empty() && !ends_with_sync(expects_.front().request)) {
      undo(expects_.front(), server, false);
      expects_.pop_front();
    }
    if (failed.on != Expect::On::error) return Disposition::forward;
    replacement_ =
        failed.extra ? rewrite_error(body, failed.extra->error_code, failed.extra->error) : std::string();
    replacement = replacement_;
    return Disposition::replace;
  }
  if (!completes(front.request, type)) return Disposition::forward;  // ParameterDescription, DataRow, ...
  const Expect::On on = front.on;
  expects_.pop_front();
  switch (on) {
    case Expect::On::swallow:
    case Expect::On::txid: return Disposition::drop;
    case Expect::On::parse_complete: replacement = kParseComplete; return Disposition::replace;
    case Expect::On::forward:
    case Expect::On::error: break;
  }
  return Disposition::forward;
}

void Session::undo(const Expect& e, ServerConn& server, bool failed) {
  if (!e.extra) return;
  const Expect::Extra& x = *e.extra;
  if (!x.client_name.empty()) {
    auto it = statements_.find(x.client_name);
    if (it != statements_.end() && it->second == x.stmt) statements_.erase(it);
  }
  // A failed query with PREPAREs: which of its statements ran before the error is not known, so none of its
  // names is kept (a later PREPARE of the same name then works; the server copy, if any, is closed first).
  for (const auto& [name, stmt] : x.prepared) {
    auto it = statements_.find(name);
    if (failed && it != statements_.end() && it->second == stmt) statements_.erase(it);
    if (failed) server.statements.erase(stmt->server_name);
  }
  if (!x.server_added.empty()) server.statements.erase(x.server_added);
  if (!x.server_removed.empty() && !failed) server.statements.add(x.server_removed);  // skipped: still there
  if (x.unnamed_parse) {
    if (failed) {  // PostgreSQL drops the old unnamed statement before parsing the new one
      unnamed_.reset();
      unnamed_on_server_ = false;
    } else {
      unnamed_ = x.prev_unnamed;
      unnamed_on_server_ = x.prev_unnamed_on_server;
    }
  }
  if (x.injected_unnamed) unnamed_on_server_ = false;
}

// ---------------------------------------------------------------------------------------------------------------
// the relay

asio::awaitable<void> Session::client_loop() {
  const std::uint32_t max_len = config_->max_message_size;
  const std::uint32_t max_whole = config_->max_buffer_per_client;
  const bool verify = database_->pool.commit_resolution == config::CommitResolution::verify;
  auto self = shared_from_this();
  relaying_ = true;
  for (;;) {
    if (!co_await fill_client()) break;
    if (idle_transaction_timer_) idle_transaction_timer_->cancel();
    if (resolving_) {
      co_await wait_resolved();
      if (client_gone_) break;
    }

    std::size_t pos = cpos_;
    std::size_t span = cpos_;  // [span, pos) is forwarded to the server in one write
    bool stop = false;
    while (pos < cend_ && !stop) {
      if (client_pass_ > 0) {
        const std::size_t n = std::min(client_pass_, cend_ - pos);
        pos += n;
        client_pass_ -= n;
        continue;
      }
      if (client_drop_ > 0) {
        const std::size_t n = std::min(client_drop_, cend_ - pos);
        pos += n;
        client_drop_ -= n;
        span = pos;
        continue;
      }
      auto h = pr::read_header(std::string_view(cbuf_).substr(pos, cend_ - pos), max_len);
      if (h.status == pr::Status::need_more) break;
      const char type = h.header.type;
      if (h.status == pr::Status::error || !pr::is_frontend_type(type) || type == pr::fe::kPassword) {
        if (server_) {
          // server_loop may be writing to the client right now: close both sides rather than interleave an
          // error.
          spdlog::info("client {} closed by pgward: protocol violation while linked", id_);
          server_->close();
          stop = true;
          break;
        }
        // Built before the co_await: GCC 12 destroys temporaries of a conditional inside co_await twice.
        std::string what =
            h.status == pr::Status::error
                ? std::string(h.error)
                : "invalid frontend message type " + std::to_string(static_cast<unsigned char>(type));
        co_await send_error(ss::kProtocolViolation, what, true);
        stop = true;
        client_gone_ = true;
        break;
      }
      spdlog::trace("client {} -> {} ({} bytes)", id_, pr::frontend_type_name(type), h.header.total());

      if (type == pr::fe::kTerminate) {
        stop = true;
        break;
      }
      const std::size_t total = h.header.total();
      const bool rewritten =
          rewrite_ && (type == pr::fe::kParse || type == pr::fe::kBind || type == pr::fe::kDescribe ||
                       type == pr::fe::kClose || type == pr::fe::kQuery);
      // A message pgward must see whole but may not buffer: the server is made to fail in its place.
      const bool too_big = rewritten && total > max_whole;
      // Whole messages larger than the usual buffer also draw on max_buffer_total, shared by all clients.
      bool over_budget = false;
      if (rewritten && !too_big && total > kClientBufferSize && cend_ - pos < total &&
          buffer_reserved_ < total - kClientBufferSize) {
        const std::size_t more = total - kClientBufferSize - buffer_reserved_;
        if (proxy_.reserve_buffer(more)) {
          buffer_reserved_ += more;
        } else {
          over_budget = true;
        }
      }
      // After a lost transaction, a ROLLBACK is answered without a server: its text must be seen whole.
      const bool lost_query =
          lost_ != Lost::none && !server_ && type == pr::fe::kQuery && total <= kClientBufferSize;
      if ((rewritten || lost_query) && !too_big && !over_budget && cend_ - pos < total) {
        client_want_ = total;  // fill_client makes room for it (bounded by max_buffer_per_client)
        break;
      }
      ++messages_seen_;  // taken up from here on (a message read whole comes back here until it is)
      const bool whole = cend_ - pos >= total;
      const std::string_view message = std::string_view(cbuf_).substr(pos, std::min(total, cend_ - pos));
      if (discard_until_sync_) {
        client_drop_ = total;
        if (type == pr::fe::kSync) {
          discard_until_sync_ = false;
          co_await send_ready_for_query(discard_status_);
          discard_status_ = pr::kTxIdle;
        }
        continue;
      }
      if (!server_) {
        if (type == pr::fe::kCopyData || type == pr::fe::kCopyDone || type == pr::fe::kCopyFail) {
          client_drop_ = h.header.total();  // stray copy messages: PostgreSQL ignores them too
          continue;
        }
        if (proxy_.draining()) {
          co_await send_error(ss::kAdminShutdown, "pgward is shutting down", true);
          stop = true;
          break;
        }
        if (lost_ != Lost::none &&
            (lost_ == Lost::unreported || (lost_query && is_rollback(query_text(message))))) {
          client_drop_ = total;
          co_await answer_lost_transaction(type, whole ? message : std::string_view());
          continue;
        }
        if (!co_await link(false)) {
          // As PostgreSQL after an error: a simple query ends with ReadyForQuery, the extended protocol skips
          // to the next Sync.
          client_drop_ = h.header.total();
          if (type == pr::fe::kQuery || type == pr::fe::kFunctionCall || type == pr::fe::kSync) {
            co_await send_ready_for_query();
          } else {
            discard_until_sync_ = true;
          }
          continue;
        }
        span = pos;
        if (rewrite_) drop_foreign_sql_statements(wire_);
      }
      const bool fresh = pending_ == 0 && !ext_open_;  // this message starts a new batch
      if (fresh && !server_->evicted.empty() && type != pr::fe::kCopyData && type != pr::fe::kCopyDone &&
          type != pr::fe::kCopyFail) {
        wire_.append(cbuf_, span, pos - span);
        span = pos;
        close_on_server(wire_, server_->evicted);
        server_->evicted.clear();
      }
      track_frontend(type);
      note_in_flight(type, message, whole);
      if (too_big || over_budget) {
        wire_.append(cbuf_, span, pos - span);
        refuse_message(wire_, type, too_big ? ss::kProgramLimitExceeded : ss::kOutOfMemory,
                       too_big ? "message of " + std::to_string(total) +
                                     " bytes exceeds max_buffer_per_client (" + std::to_string(max_whole) +
                                     " bytes)"
                               : "out of memory for unfinished client messages: message of " +
                                     std::to_string(total) + " bytes refused (max_buffer_total)");
        client_drop_ = total;
        span = pos;
        continue;
      }
      if (verify && fresh && whole && tx_status_ == pr::kTxInBlock &&
          ((type == pr::fe::kQuery && is_commit(query_text(message))) ||
           (type == pr::fe::kParse && rewrite_ && is_commit(parse_text(message))))) {
        // Learn the transaction id in the same round trip as the COMMIT, in case the server dies before
        // answering it (see server_lost()). Through the extended protocol only with rewriting on: the queue
        // of expected answers is what lets pgward complete the batch's replies if the COMMIT is verified.
        wire_.append(cbuf_, span, pos - span);
        span = pos;
        pr::put_query(wire_, "SELECT coalesce(pg_catalog.txid_current_if_assigned(), 0)");
        expect(pr::fe::kQuery, Expect::On::txid);
        ++pending_;
        commit_txid_.reset();
        if (!rewrite_) expect(pr::fe::kQuery);  // the COMMIT: the queue covers every answer in flight
      }
      if (rewrite_ && type != pr::fe::kCopyData && type != pr::fe::kCopyDone && type != pr::fe::kCopyFail &&
          type != pr::fe::kFlush) {
        if (type == pr::fe::kQuery) {
          if (note_simple_query(message, wire_, span, pos)) continue;
        } else if (type != pr::fe::kParse && type != pr::fe::kBind && type != pr::fe::kDescribe &&
                   type != pr::fe::kClose) {
          expect(type);  // Execute, Sync, FunctionCall
        } else {
          wire_.append(cbuf_, span, pos - span);
          if (!rewrite_message(type, message, wire_)) {
            // PostgreSQL would end the connection; pgward refuses the one message and the session goes on.
            refuse_message(wire_, type, ss::kProtocolViolation,
                           "invalid " + std::string(pr::frontend_type_name(type)) + " message format");
          }
          pos += h.header.total();
          span = pos;
          continue;
        }
      }
      client_pass_ = h.header.total();
    }
    if (server_) {
      auto server = server_;  // server_loop may unlink it while the write is under way
      bool ok = true;
      server_write_busy_ = true;
      if (!wire_.empty()) {
        // Something in this batch was rewritten: send the rewritten copy.
        wire_.append(cbuf_, span, pos - span);
        ok = co_await server->write(wire_);
        wire_.clear();
      } else if (pos > span) {
        ok = co_await server->write(std::string_view(cbuf_).substr(span, pos - span));
      }
      server_write_busy_ = false;
      if (!ok) server->close();
      // What held the server may be gone now (the rest of a message that went out in part).
      if (ok && server_ == server && releasable()) request_release();
    }
    wire_.clear();
    consume_client(pos - cpos_);
    if (stop) break;
  }

  client_gone_ = true;
  if (stalled_) {
    pr::put_error_response(farewell_, {"FATAL", ss::kProtocolViolation,
                                       "terminating connection: a message was not finished within "
                                       "client_message_timeout"});
    track_.proxy_error(ss::kProtocolViolation);
    spdlog::info("client {} closed by pgward: stalled in the middle of a message", id_);
  }
  boost::system::error_code ec;
  if (server_) {
    // Wake server_loop so that it cleans the server up (DISCARD ALL in session mode) or closes it, and says
    // the farewell: while a server is linked, only server_loop writes to the client.
    server_->socket().cancel(ec);
    if (farewell_.empty()) client_.close(ec);
  } else {
    if (!farewell_.empty()) co_await send_client(farewell_);
    client_.close(ec);
  }
}

void Session::refuse_message(std::string& wire, char type, std::string_view sqlstate, std::string message) {
  // The server fails a stand-in for it (a Query or a Describe of a statement that does not exist), so that a
  // transaction block or an extended-protocol batch is aborted exactly as PostgreSQL would; the error text is
  // then replaced with pgward's.
  close_missing(wire, type == pr::fe::kQuery);
  if (type == pr::fe::kQuery) {
    pr::put_query(wire, "EXECUTE " + std::string(kMissingStatement));
  } else {
    put_describe(wire, 'S', kMissingStatement);
  }
  expect(type == pr::fe::kQuery ? pr::fe::kQuery : pr::fe::kDescribe, Expect::On::error);
  expects_.back().more().error_code = sqlstate;
  expects_.back().more().error = std::move(message);
}

asio::awaitable<void> Session::server_loop(std::shared_ptr<ServerConn> server) {
  auto self = shared_from_this();
  ServerConn& s = *server;
  const bool statement_mode = database_->pool.mode == config::PoolMode::statement;

  for (;;) {
    if (client_gone_) break;
    if (release_wanted_ && releasable()) {
      release_wanted_ = false;
      unlink(s.rpos == s.rend);
      co_return;
    }
    if (!co_await s.fill()) {
      // Woken by request_release() (the read was cancelled), or the server is gone.
      if (std::exchange(release_wanted_, false) && server_ == server && !client_gone_) {
        if (releasable()) {
          unlink(s.rpos == s.rend);
          co_return;
        }
        continue;  // something new went out meanwhile: keep reading
      }
      break;
    }

    std::size_t pos = s.rpos;
    std::size_t span = s.rpos;
    bool release = false;
    bool statement_violation = false;
    bool bad = false;
    while (pos < s.rend) {
      if (server_pass_ > 0) {
        const std::size_t n = std::min(server_pass_, s.rend - pos);
        pos += n;
        server_pass_ -= n;
        continue;
      }
      if (server_drop_ > 0) {
        const std::size_t n = std::min(server_drop_, s.rend - pos);
        pos += n;
        server_drop_ -= n;
        span = pos;
        continue;
      }
      const std::string_view rest = std::string_view(s.rbuf).substr(pos, s.rend - pos);
      auto h = pr::read_header(rest, kMaxServerMessage);
      if (h.status == pr::Status::need_more) break;
      if (h.status == pr::Status::error) {
        bad = true;
        break;
      }
      const char type = h.header.type;
      // Messages looked inside are handled only once they are whole, and nothing below runs twice for one
      // message (a split message breaks out here before any state changes).
      const bool inspected = type == pr::be::kReadyForQuery || type == pr::be::kParameterStatus;
      if (inspected && h.header.total() > ServerConn::kBufferSize) {
        bad = true;
        break;
      }
      if ((inspected || (type == pr::be::kErrorResponse && h.header.total() <= ServerConn::kBufferSize)) &&
          rest.size() < h.header.total()) {
        break;  // read the rest of it first
      }
      if (type == pr::be::kErrorResponse && h.header.total() <= ServerConn::kBufferSize) {
        const std::string_view error = rest.substr(pr::kHeaderSize, h.header.body_size());
        if (auto fatal = fatal_message(error)) {
          // PostgreSQL closes the connection after a FATAL. The client keeps its own connection: it hears of
          // the loss from server_lost(), as one ERROR that quotes this message.
          server_fatal_ = std::move(*fatal);
          server_wire_.append(s.rbuf, span, pos - span);
          server_drop_ = h.header.total();
          continue;
        }
        track_.server_error(error);
      }
      if (!expects_.empty()) {
        std::string_view replacement;
        const std::string_view body =
            rest.substr(pr::kHeaderSize, std::min(h.header.body_size(), rest.size() - 5));
        switch (answer(type, body, s, replacement)) {
          case Disposition::forward: break;
          case Disposition::drop:
          case Disposition::replace:
            if (type == pr::be::kReadyForQuery && pending_ > 0) --pending_;  // an injected preamble's
            // Cut this message out of what goes to the client (and put the replacement in its place).
            server_wire_.append(s.rbuf, span, pos - span);
            server_wire_.append(replacement);
            server_drop_ = h.header.total();
            continue;
        }
      }
      if (inspected) {
        const std::string_view body = rest.substr(pr::kHeaderSize, h.header.body_size());
        if (type == pr::be::kParameterStatus) {
          if (auto ps = pr::parse_parameter_status(body)) {
            s.params[std::string(ps->first)] = ps->second;
            s.params_match = {};
            if (auto it = client_params_.find(ps->first); it != client_params_.end()) {
              it->second = ps->second;
              client_params_changed_ = true;
            }
          }
        } else {
          auto st = pr::parse_ready_for_query(body);
          if (!st) {
            bad = true;
            break;
          }
          if (pending_ > 0) --pending_;
          if (client_waits_ > 0) --client_waits_;
          tx_status_ = *st;
          track_.ready_for_query(*st, pending_);
          if (client_waits_ == 0 && !ext_open_) {
            in_doubt_ = false;
            commit_txid_.reset();
            if (tx_status_ != pr::kTxIdle) arm_idle_transaction_timer();
          }
          if (statement_mode && tx_status_ != pr::kTxIdle && pending_ == 0 && !ext_open_) {
            statement_violation = true;  // forward up to this ReadyForQuery, then roll back
            break;
          }
          if (releasable()) {
            pos += h.header.total();
            release = true;
            break;
          }
        }
        pos += h.header.total();
        continue;
      }
      server_pass_ = h.header.total();
    }

    bool sent = true;
    if (!server_wire_.empty()) {
      server_wire_.append(s.rbuf, span, pos - span);
      sent = co_await send_client(server_wire_);
      server_wire_.clear();
    } else if (pos > span) {
      sent = co_await send_client(std::string_view(s.rbuf).substr(span, pos - span));
    }
    if (!sent) {
      client_gone_ = true;
      client_write_failed_ = true;
      s.consume(pos - s.rpos);
      break;
    }
    s.consume(pos - s.rpos);

    if (bad) {
      spdlog::warn("client {}: server {} sent a malformed message", id_, s.id());
      break;
    }
    if (statement_violation) {
      s.consume(6);  // the ReadyForQuery reporting the open transaction
      if (pending_ != 0 || ext_open_ || server_write_busy_ || client_pass_ > 0) {
        // The client pipelined more behind the transaction block: its replies would mix with the rollback's.
        co_await send_error(ss::kFeatureNotSupported,
                            "transaction blocks are not allowed in statement pooling mode", true);
        unlink(false);
        co_return;
      }
      resolving_ = true;  // client_loop holds the client's next messages until this is answered
      auto err = co_await s.run_internal("ROLLBACK");
      co_await send_error(ss::kFeatureNotSupported,
                          "transaction blocks are not allowed in statement pooling mode", false);
      tx_status_ = pr::kTxIdle;
      co_await send_ready_for_query();
      resolving_ = false;
      if (resolved_) resolved_->cancel();
      unlink(!err && s.rpos == s.rend && s.cancels_in_flight == 0);
      co_return;
    }
    // Decided before the write to the client, checked again after it: while that write was under way,
    // client_loop may have sent the next batch to this still-linked server, and releasing now would strand it
    // there.
    if (release && releasable()) {
      // Anything after the final ReadyForQuery was unsolicited (a notice, a notification): keep no server
      // that has unread bytes.
      unlink(s.rpos == s.rend);
      co_return;
    }
  }

  if (server_ != server) co_return;  // already released
  if (client_gone_) {
    const bool clean = pending_ == 0 && !ext_open_ && tx_status_ == pr::kTxIdle && server_pass_ == 0 &&
                       client_pass_ == 0 && !server_write_busy_ && s.cancels_in_flight == 0 &&
                       s.rpos == s.rend;
    if (!farewell_.empty()) {
      // Nothing is half-written to the client unless a server message is, or a write broke off: then the
      // farewell cannot be said.
      if (server_pass_ == 0 && !client_write_failed_) co_await send_client(farewell_);
      farewell_.clear();
      boost::system::error_code ec;
      client_.close(ec);
    }
    bool reusable = false;
    if (clean) {
      // Session mode: what this client left behind must not reach the next one.
      track_.closing_begin();
      reusable = !co_await s.run_internal("DISCARD ALL");
      track_.closing_end();
      for (const auto& name : s.set_unreported) s.params.erase(name);
      s.set_unreported.clear();
      s.params_match = {};
    }
    unlink(reusable);
    co_return;
  }
  if (proxy_.draining()) {  // terminate() closed it: shutdown_timeout passed during the drain
    // The error goes out before the unlink so that client_loop, which writes to the client only while
    // unlinked, cannot write at the same time.
    co_await send_error(ss::kAdminShutdown, "terminating connection because pgward is shutting down", true);
    unlink(false);
    co_return;
  }
  spdlog::warn("client {}: server {} connection lost", id_, s.id());
  co_await server_lost(s);
}

// ---------------------------------------------------------------------------------------------------------------
// faults

void Session::note_in_flight(char type, std::string_view message, bool whole) {
  const bool implicit = tx_status_ == pr::kTxIdle;  // a statement outside a block commits when it ends
  std::string_view sql;
  if (type == pr::fe::kParse) {
    // Only read inside a block, where the answer matters; outside one everything is in doubt anyway.
    auto p = whole && !implicit ? parse_parse(message.substr(pr::kHeaderSize)) : std::nullopt;
    if (p) sql = p->tail.substr(0, p->tail.find('\0'));
    if (!p || p->name.empty()) unnamed_may_commit_ = !p || may_commit(sql);
  }
  if (in_doubt_) return;
  switch (type) {
    case pr::fe::kQuery: in_doubt_ = implicit || !whole || may_commit(query_text(message)); break;
    case pr::fe::kFunctionCall: in_doubt_ = true; break;
    case pr::fe::kExecute: in_doubt_ = implicit; break;
    case pr::fe::kParse: in_doubt_ = !whole || may_commit(sql); break;
    case pr::fe::kBind: {
      // What the portal will run: the unnamed statement's text is known from its Parse; a named one's only
      // when pgward keeps the client's statements.
      auto b = whole ? parse_bind(message.substr(pr::kHeaderSize)) : std::nullopt;
      if (!b) {
        in_doubt_ = true;
      } else if (b->statement.empty()) {
        in_doubt_ = unnamed_may_commit_;
      } else {
        auto it = statements_.find(std::string(b->statement));
        in_doubt_ = it == statements_.end() ||
                    may_commit(it->second->tail.substr(0, it->second->tail.find('\0'))) ||
                    may_commit(it->second->sql);
      }
      break;
    }
    default: break;
  }
}

void Session::append_error(std::string& out, std::string_view sqlstate, std::string_view message,
                           std::string_view detail) {
  pr::put_error_response(out, {"ERROR", sqlstate, message, detail});
  track_.proxy_error(sqlstate);
  spdlog::info("client {} error {}: {}", id_, sqlstate, message);
}

std::optional<std::string> Session::committed_reply() const {
  std::string out;
  int commits = 0;
  for (const Expect& e : expects_) {
    switch (e.on) {
      case Expect::On::swallow: continue;  // pgward's own requests
      case Expect::On::txid:
      case Expect::On::error: return std::nullopt;
      case Expect::On::parse_complete: pr::put_parse_complete(out); continue;
      case Expect::On::forward: break;
    }
    switch (e.request) {
      case pr::fe::kParse: pr::put_parse_complete(out); break;
      case pr::fe::kBind: pr::put_bind_complete(out); break;
      case pr::fe::kClose: pr::put_close_complete(out); break;
      case pr::fe::kDescribe: pr::put_no_data(out); break;  // a COMMIT returns no rows
      case pr::fe::kQuery:
      case pr::fe::kExecute:
        pr::put_command_complete(out, "COMMIT");
        ++commits;
        break;
      case pr::fe::kSync: break;  // its ReadyForQuery is added by the caller
      default: return std::nullopt;
    }
  }
  if (commits != 1) return std::nullopt;
  return out;
}

asio::awaitable<void> Session::server_lost(ServerConn& s) {
  stats::add(pool_->stats.servers_lost);
  const std::optional<std::string> committed = committed_reply();
  // Requests that will never be answered: undo what pgward assumed of them (statements registered early).
  for (const Expect& e : expects_) undo(e, s, true);
  expects_.clear();
  const bool mid_message = server_pass_ > 0;
  const std::int64_t waits = client_waits_;
  const bool open = ext_open_;
  const bool doubt = in_doubt_;
  const char status = tx_status_;
  const std::optional<std::string> txid = commit_txid_;
  const std::string said = server_fatal_.empty() ? std::string() : "PostgreSQL said: " + server_fatal_;
  resolving_ = true;  // client_loop holds the client's next messages until the answer is out
  unlink(false);

  if (mid_message || database_->pool.mode == config::PoolMode::session || waits > 1 || (waits == 1 && open)) {
    // Nothing sensible can follow: half a message went out, a session's state is gone, or several batches
    // are in flight whose answers cannot be made up.
    if (mid_message) {
      boost::system::error_code ec;
      client_.close(ec);
    } else if (doubt) {
      co_await send_error(ss::kTransactionResolutionUnknown,
                          "server connection lost; whether the work in flight committed is unknown", true,
                          said);
    } else {
      co_await send_error(ss::kConnectionFailure, "server connection lost", true, said);
    }
    client_gone_ = true;
  } else if (waits == 0 && !open) {
    // The client waits for nothing; if it sits in a transaction block, its next message learns the loss.
    if (status != pr::kTxIdle) {
      lost_ = status == pr::kTxFailed ? Lost::aborted : Lost::unreported;
      lost_detail_ = said;
    }
  } else {
    std::string out;
    char end = pr::kTxIdle;
    if (doubt) {
      Outcome outcome = Outcome::unknown;
      if (txid && committed && database_->pool.commit_resolution == config::CommitResolution::verify) {
        outcome = txid->empty() ? Outcome::committed : co_await resolve_commit(*txid);
      }
      switch (outcome) {
        case Outcome::committed:
          stats::add(pool_->stats.commits_verified_committed);
          spdlog::info(
              "client {}: COMMIT verified after the server was lost ({})", id_,
              txid->empty() ? "the transaction wrote nothing" : "transaction " + *txid + " committed");
          out += *committed;
          break;
        case Outcome::aborted:
          stats::add(pool_->stats.commits_verified_aborted);
          append_error(out, ss::kStatementCompletionUnknown,
                       "server connection lost during COMMIT; the transaction was rolled back",
                       "pgward verified the outcome of transaction " + *txid + " on another connection.");
          break;
        case Outcome::unknown:
          if (txid) stats::add(pool_->stats.commits_unresolved);
          append_error(out, ss::kTransactionResolutionUnknown,
                       "server connection lost; whether the work in flight committed is unknown",
                       said.empty() ? "The connection died after a COMMIT or a statement outside a "
                                      "transaction block was sent and before its answer arrived."
                                    : said);
          break;
      }
    } else if (status != pr::kTxIdle) {
      append_error(out, ss::kConnectionFailure, "server connection lost; the transaction was rolled back",
                   said);
      end = pr::kTxFailed;
      lost_ = Lost::aborted;
    } else {
      append_error(out, ss::kConnectionFailure, "server connection lost", said);
    }
    if (waits == 1) {
      pr::put_ready_for_query(out, end);
    } else {  // the extended-protocol batch has no Sync yet: its ReadyForQuery comes when it does
      discard_until_sync_ = true;
      discard_status_ = end;
    }
    if (!co_await send_client(out)) client_gone_ = true;
  }
  resolving_ = false;
  if (resolved_) resolved_->cancel();
}

asio::awaitable<void> Session::wait_resolved() {
  if (!resolved_) resolved_ = std::make_unique<asio::steady_timer>(client_.get_executor());
  while (resolving_) {
    resolved_->expires_at(asio::steady_timer::time_point::max());
    co_await resolved_->async_wait(as_tuple(use_awaitable));
  }
}

asio::awaitable<Session::Outcome> Session::resolve_commit(const std::string& txid) {
  if (txid.empty() || !std::all_of(txid.begin(), txid.end(), [](char c) { return c >= '0' && c <= '9'; }))
    co_return Outcome::unknown;
  const auto deadline = pool::Clock::now() + pool_->pool.settings().wait_timeout;
  const std::string sql = "SELECT pg_catalog.txid_status(" + txid + ")";
  for (std::uint32_t attempt = 0;; ++attempt) {
    std::optional<ProxyError> err;
    auto lease = co_await checkout(deadline, err);
    if (!lease) co_return Outcome::unknown;
    auto server = lease.server_as<ServerConn>();
    auto r = co_await server->run_query(sql);
    lease.release(!r.error && r.status == pr::kTxIdle && server->unread().empty());
    if (!r.error) {
      if (r.value == "committed") co_return Outcome::committed;
      if (r.value == "aborted") co_return Outcome::aborted;
      if (!r.value) co_return Outcome::unknown;  // too old to tell
      // "in progress": the old backend has not noticed yet that its connection is gone
    }
    const auto delay = backoff(attempt);
    if (pool::Clock::now() + delay >= deadline) co_return Outcome::unknown;
    asio::steady_timer pause(client_.get_executor(), delay);
    co_await pause.async_wait(as_tuple(use_awaitable));
  }
}

asio::awaitable<void> Session::answer_lost_transaction(char type, std::string_view message) {
  std::string out;
  const std::string_view sql = query_text(message);
  if (is_rollback(sql)) {
    pr::put_command_complete(out, "ROLLBACK");
    pr::put_ready_for_query(out, pr::kTxIdle);
    lost_ = Lost::none;
  } else {
    append_error(out, ss::kConnectionFailure, "server connection lost; the transaction was rolled back",
                 lost_detail_.empty()
                     ? "The connection to the server died while the client was idle in a transaction block."
                     : lost_detail_);
    if (is_commit(sql)) {
      pr::put_ready_for_query(out, pr::kTxIdle);
      lost_ = Lost::none;
    } else {
      lost_ = Lost::aborted;
      if (type == pr::fe::kQuery || type == pr::fe::kFunctionCall || type == pr::fe::kSync) {
        pr::put_ready_for_query(out, pr::kTxFailed);
      } else {
        discard_until_sync_ = true;
        discard_status_ = pr::kTxFailed;
      }
    }
  }
  co_await send_client(out);
}

void Session::arm_idle_transaction_timer() {
  const auto timeout = database_->pool.idle_in_transaction_timeout;
  if (timeout.count() <= 0) return;
  if (!idle_transaction_timer_)
    idle_transaction_timer_ = std::make_unique<asio::steady_timer>(client_.get_executor());
  idle_transaction_timer_->expires_after(timeout);
  idle_transaction_timer_->async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->idle_transaction_expired();
  });
}

void Session::idle_transaction_expired() {
  if (!server_ || tx_status_ == pr::kTxIdle || client_waits_ != 0 || ext_open_ || cend_ != cpos_ ||
      resolving_ || client_gone_)
    return;
  stats::add(pool_->stats.idle_transaction_timeouts);
  // Closing the server ends the backend, and PostgreSQL rolls the transaction back; server_loop then drops
  // the server (never reused: its transaction was open).
  client_gone_ = true;
  server_->close();
  asio::co_spawn(
      client_.get_executor(),
      [self = shared_from_this()]() -> asio::awaitable<void> {
        co_await self->send_error(ss::kIdleInTransactionSessionTimeout,
                                  "terminating connection due to idle-in-transaction timeout", true);
      },
      asio::detached);
}

}  // namespace pgward::proxy
