// Startup and login ("Message Flow: Start-up"): SSL/GSSENC answers, NegotiateProtocolVersion, authentication,
// the welcome.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "protocol/auth.hpp"
#include "protocol/sqlstate.hpp"
#include "protocol/startup_params.hpp"
#include "proxy/session.hpp"
#include "proxy/session_shared.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;

namespace {

// Parameters the server reports (ParameterStatus) that no session can SET: they are the server's, not the
// client's, and never restored. Every other reported parameter is part of each client's session.
// (session_authorization is the client's: SET SESSION AUTHORIZATION changes it, and is_superuser follows.)
constexpr std::string_view kServerOwnedParams[] = {"server_version", "server_encoding", "integer_datetimes",
                                                   "in_hot_standby", "is_superuser"};

bool server_owned(std::string_view name) {
  return std::find(std::begin(kServerOwnedParams), std::end(kServerOwnedParams), name) !=
         std::end(kServerOwnedParams);
}

void count_failure(Proxy& proxy, stats::AuthFailure reason) {
  stats::add(proxy.stats().auth_failures[static_cast<std::size_t>(reason)]);
}

// Why a user's login failed once the password check did: no secret, a secret of the wrong kind for the
// method, or the wrong password.
stats::AuthFailure why_refused(const std::string* secret, pr::auth::SecretKind unusable_kind) {
  if (secret == nullptr) return stats::AuthFailure::unknown_user;
  return pr::auth::classify_secret(*secret) == unusable_kind ? stats::AuthFailure::unusable_secret
                                                             : stats::AuthFailure::wrong_password;
}

}  // namespace

asio::awaitable<Session::LoginResult> Session::startup() {
  if (!co_await detect_direct_tls()) co_return LoginResult::closed;
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
      bool answered = false;
      if (std::holds_alternative<pr::SslRequest>(r.message)) {
        answered = co_await answer_ssl_request();
      } else {
        answered = co_await send_client("N");
      }
      if (!answered) co_return LoginResult::closed;
      continue;
    }
    if (auto* cancel = std::get_if<pr::CancelRequest>(&r.message)) {
      proxy_.cancel(*cancel);
      co_return LoginResult::cancel_request;
    }

    co_return co_await accept_startup(std::get<pr::StartupPacket>(r.message));
  }
}

asio::awaitable<Session::LoginResult> Session::accept_startup(pr::StartupPacket& sp) {
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
  if (!co_await check_client_tls()) co_return LoginResult::closed;
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
  const bool console =
      database == config::kConsoleDatabase && proxy_.console() && !config_->console_users.empty();
  if (!console)
    resolved_database_ = config_->resolve_database(database);  // for auth_query; not told before the password
  if (!co_await authenticate()) co_return LoginResult::closed;
  if (console) co_return co_await accept_console();
  database_ = resolved_database_ ? &*resolved_database_ : nullptr;
  if (!database_) {
    const std::string what = "database \"" + database + "\" does not exist";
    co_await send_error(ss::kInvalidCatalogName, what, true);
    co_return LoginResult::closed;
  }
  for (auto& [k, v] : *settings) {
    connection_[k] = v;
    client_params_[k] = std::move(v);
  }
  co_return LoginResult::ok;
}

asio::awaitable<bool> Session::authenticate() {
  const std::string failed = "password authentication failed for user \"" + user_ + "\"";
  const std::string* secret = config_->find_user_secret(user_);
  const pr::auth::ScramVerifier* verifier = config_->find_scram_verifier(user_);
  std::string out;
  // A user not in the users file: its verifier from auth_query, in the database asked for (an unknown
  // database has none, and the client learns that only after a right password, which it cannot give).
  std::shared_ptr<const LookedUpSecret> looked_up;
  if (!secret && config_->auth_type != config::AuthType::trust && resolved_database_ &&
      config_->auth_query_for(*resolved_database_)) {
    auto r = co_await proxy_.auth_lookup().find(client_.get_executor(), *config_, *resolved_database_, user_);
    if (r.status == AuthLookup::Status::failed) {
      count_failure(proxy_, stats::AuthFailure::lookup_failed);
      co_await send_error(ss::kConnectionFailure,
                          "could not look up the password of user \"" + user_ + "\" (auth_query): " + r.error,
                          true);
      co_return false;
    }
    looked_up = std::move(r.secret);
    if (looked_up) {
      secret = &looked_up->secret;
      verifier = looked_up->scram ? &*looked_up->scram : nullptr;
    }
  }

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
        count_failure(proxy_,
                      pw ? why_refused(secret, pr::auth::SecretKind::kScram) : stats::AuthFailure::protocol);
        co_await send_error(ss::kInvalidPassword, failed, true);
        co_return false;
      }
      break;
    }

    case config::AuthType::scram_sha_256:
      if (!co_await authenticate_scram(out, failed, verifier, secret)) co_return false;
      break;
  }
  out.clear();
  pr::put_authentication_ok(out);
  co_return co_await send_client(out);
}

asio::awaitable<bool> Session::authenticate_scram(std::string& out, const std::string& failed,
                                                  const pr::auth::ScramVerifier* verifier,
                                                  const std::string* secret) {
  // Verifiers are derived when the users file is loaded, never here. An unknown user (or one with only
  // an md5 verifier) still goes through the whole exchange, as PostgreSQL does, against a mock verifier
  // whose salt is stable per name and that costs no key derivation: neither the salt nor the time taken
  // tells which user names exist.
  const bool usable = verifier != nullptr;
  pr::auth::ScramServer scram(usable ? *verifier
                                     : pr::auth::mock_scram_verifier(pr::auth::process_auth_key(), user_));
  // Over TLS, SCRAM-SHA-256-PLUS (tls-server-end-point) is offered first, as PostgreSQL does.
  const std::string binding = client_.tls() ? client_.tls()->server_end_point() : std::string();
  if (!binding.empty()) scram.set_channel_binding(binding);
  if (binding.empty()) {
    pr::put_authentication_sasl(out, {"SCRAM-SHA-256"});
  } else {
    pr::put_authentication_sasl(out, {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"});
  }
  if (!co_await send_client(out)) co_return false;

  auto first = co_await read_client_message(kMaxLoginMessage);
  if (!first) co_return false;
  auto init = first->type == pr::fe::kPassword ? pr::parse_sasl_initial_response(first->body) : std::nullopt;
  const bool plus = init && !binding.empty() && init->mechanism == "SCRAM-SHA-256-PLUS";
  if (!init || (init->mechanism != "SCRAM-SHA-256" && !plus)) {
    count_failure(proxy_, stats::AuthFailure::protocol);
    co_await send_error(ss::kProtocolViolation, "client selected an invalid SASL authentication mechanism",
                        true);
    co_return false;
  }
  auto server_first = scram.handle_client_first(init->data);
  if (server_first && scram.bound() != plus) {
    // "-PLUS" without binding, or binding under the plain mechanism.
    count_failure(proxy_, stats::AuthFailure::protocol);
    co_await send_error(ss::kProtocolViolation, "SCRAM channel binding negotiation error", true);
    co_return false;
  }
  if (!server_first) {
    count_failure(proxy_, stats::AuthFailure::protocol);
    co_await send_error(ss::kProtocolViolation, "malformed SCRAM message", true);
    co_return false;
  }
  out.clear();
  pr::put_authentication_sasl_continue(out, *server_first);
  if (!co_await send_client(out)) co_return false;

  auto final_msg = co_await read_client_message(kMaxLoginMessage);
  if (!final_msg) co_return false;
  if (final_msg->type != pr::fe::kPassword) {
    count_failure(proxy_, stats::AuthFailure::protocol);
    co_await send_error(ss::kProtocolViolation, "expected SASL response", true);
    co_return false;
  }
  auto server_final = scram.handle_client_final(final_msg->body);
  if (!server_final || !usable) {
    count_failure(proxy_, usable ? stats::AuthFailure::wrong_password
                                 : why_refused(secret, pr::auth::SecretKind::kMd5));
    co_await send_error(ss::kInvalidPassword, failed, true);
    co_return false;
  }
  scram_keys_ = scram.keys();
  out.clear();
  pr::put_authentication_sasl_final(out, *server_final);
  if (!co_await send_client(out)) co_return false;
  co_return true;
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
  track_.set_pool(pool_);
  // SCRAM pass-through: pgward logs in to PostgreSQL as this user with the keys the client's proof revealed,
  // when it has no password of its own for it (and the server user is the client's).
  if (scram_keys_ && !database_->user && !pool_->target().password) pool_->set_scram_keys(*scram_keys_);
  scram_keys_.reset();
  const auto mode = database_->pool.mode;
  // A session-mode client owns its server: its statement names cannot collide, so they go through untouched.
  rewrite_ = mode != config::PoolMode::session && database_->pool.max_prepared_statements > 0;
  track_state_ = database_->pool.session_state != config::SessionState::ignore;

  // The server's defaults tell the client what it has unless it asked otherwise. When pgward knows no
  // defaults yet, or the client asked for values of its own, one server checks them now: a bad value then
  // fails the login as it would on PostgreSQL, and the values come back in the server's spelling ("ISO" =>
  // "ISO, MDY").
  // The session authorization a previous client left on a server must be put back before anything else on
  // it, at this login's checkout too: what the rest needs may depend on it. (A pool with no defaults yet has
  // had no server, so none with anything left on it.)
  if (pool_->pool.has_server_params()) {
    const auto defaults = pool_->pool.server_params();
    if (auto it = defaults.find("session_authorization"); it != defaults.end())
      client_params_.emplace(it->first, it->second);
  }
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

  track_.logged_in(database_->name, user_);
  if (phase_ == Phase::login) transition(Phase::idle);  // (session mode: linked already)

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
  co_return true;
}

}  // namespace pgward::proxy
