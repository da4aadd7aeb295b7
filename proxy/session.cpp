#include "proxy/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

#include "protocol/auth.hpp"
#include "protocol/sqlstate.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;
using asio::as_tuple;
using asio::use_awaitable;

namespace {

constexpr std::size_t kClientBufferSize = 16 * 1024;
// Authentication messages are small; anything larger during login is an attack or a bug.
constexpr std::uint32_t kMaxLoginMessage = 8 * 1024;
// Largest server message the relay looks inside (ReadyForQuery, ParameterStatus); the rest stream through.
constexpr std::uint32_t kMaxServerMessage = 0x40000000 + 64;
constexpr auto kLoginTimeout = std::chrono::seconds(60);

// The session parameters every client keeps across servers (the GUC_REPORT ones clients care about).
constexpr std::string_view kTrackedParams[] = {"client_encoding",  "DateStyle",
                                               "TimeZone",         "IntervalStyle",
                                               "standard_conforming_strings", "application_name"};

// Startup parameters that are not session settings.
bool is_connection_param(std::string_view name) {
  return name == "user" || name == "database" || name == "options" || name == "replication" ||
         name.starts_with("_pq_.");
}

// PostgreSQL's startup names are case-insensitive GUC names; report them with the server's spelling.
std::string canonical_param_name(std::string_view name) {
  for (auto t : kTrackedParams) {
    if (t.size() == name.size() &&
        std::equal(t.begin(), t.end(), name.begin(), [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
      return std::string(t);
  }
  return std::string(name);
}

// The "options" startup parameter: "-c name=value" and "--name=value" switches, backslash escapes spaces
// (as PostgreSQL's pg_split_opts). Returns false for anything else.
bool parse_options(std::string_view text, std::vector<std::pair<std::string, std::string>>& out) {
  std::vector<std::string> words;
  std::string cur;
  bool have = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      cur += text[++i];
      have = true;
    } else if (c == ' ' || c == '\t' || c == '\n') {
      if (have) words.push_back(std::move(cur));
      cur.clear();
      have = false;
    } else {
      cur += c;
      have = true;
    }
  }
  if (have) words.push_back(std::move(cur));
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::string_view w = words[i];
    std::string_view setting;
    if (w == "-c" && i + 1 < words.size()) {
      setting = words[++i];
    } else if (w.starts_with("-c") && w.size() > 2) {
      setting = w.substr(2);
    } else if (w.starts_with("--")) {
      setting = w.substr(2);
    } else {
      return false;
    }
    const auto eq = setting.find('=');
    if (eq == std::string_view::npos || eq == 0) return false;
    std::string name(setting.substr(0, eq));
    std::replace(name.begin(), name.end(), '-', '_');
    out.emplace_back(std::move(name), std::string(setting.substr(eq + 1)));
  }
  return true;
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
  if (registered_) proxy_.unregister_client(key_);
  if (counted_) proxy_.client_left();
}

void Session::start() {
  asio::co_spawn(client_.get_executor(), [self = shared_from_this()] { return self->run(); }, asio::detached);
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

asio::awaitable<bool> Session::fill_client() {
  if (cend_ == 0 && !server_) {
    // Idle client: hold no buffer while waiting, so that thousands of idle clients cost little memory.
    cbuf_ = std::string();
    auto [wec] = co_await client_.async_wait(tcp::socket::wait_read, as_tuple(use_awaitable));
    if (wec) co_return false;
  }
  if (cbuf_.size() != kClientBufferSize) cbuf_.resize(kClientBufferSize);
  if (cpos_ > 0) {
    std::memmove(cbuf_.data(), cbuf_.data() + cpos_, cend_ - cpos_);
    cend_ -= cpos_;
    cpos_ = 0;
  }
  if (cend_ == cbuf_.size()) co_return false;
  auto [ec, n] = co_await client_.async_read_some(asio::buffer(cbuf_.data() + cend_, cbuf_.size() - cend_),
                                                  as_tuple(use_awaitable));
  if (ec) co_return false;
  cend_ += n;
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
      co_await asio::async_write(client_, asio::buffer(bytes.data(), bytes.size()), as_tuple(use_awaitable));
  co_return !ec;
}

asio::awaitable<void> Session::send_error(std::string_view sqlstate, std::string_view message, bool fatal,
                                          std::string_view detail) {
  std::string out;
  pr::put_error_response(out, {fatal ? "FATAL" : "ERROR", sqlstate, message, detail});
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

asio::awaitable<void> Session::send_ready_for_query() {
  std::string out;
  pr::put_ready_for_query(out, pr::kTxIdle);
  co_await send_client(out);
}

// ---------------------------------------------------------------------------------------------------------------
// startup and login ("Message Flow: Start-up")

asio::awaitable<void> Session::run() {
  spdlog::info("client {} connected from {}", id_, peer_);
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(client_.get_executor(), kLoginTimeout);
  auto started = co_await (startup() || deadline.async_wait(as_tuple(use_awaitable)));
  if (started.index() == 1) {
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

    if (std::holds_alternative<pr::SslRequest>(r.message) || std::holds_alternative<pr::GssEncRequest>(r.message)) {
      // Bytes that arrived with the request were sent before our answer: a client must wait for it, so they can
      // only be an injection attempt (CVE-2021-23214). PostgreSQL refuses them the same way.
      if (cend_ != cpos_) {
        co_await send_error(ss::kProtocolViolation, "received unencrypted data after SSL request", true);
        co_return LoginResult::closed;
      }
      if (!co_await send_client("N")) co_return LoginResult::closed;
      continue;
    }
    if (auto* cancel = std::get_if<pr::CancelRequest>(&r.message)) {
      proxy_.cancel(*cancel, client_.get_executor());
      co_return LoginResult::cancel_request;
    }

    auto& sp = std::get<pr::StartupPacket>(r.message);
    std::vector<std::string_view> unrecognized;
    for (const auto& [k, v] : sp.params)
      if (k.starts_with("_pq_.")) unrecognized.push_back(k);
    if (sp.minor > pr::kProtocolMinor || !unrecognized.empty()) {
      // "NegotiateProtocolVersion": we speak 3.0 and no protocol extensions; the client decides whether to go on.
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
      co_await send_error(ss::kInvalidAuthorizationSpecification, "no PostgreSQL user name specified in startup packet",
                          true);
      co_return LoginResult::closed;
    }
    user_ = *user;
    const std::string* dbname = sp.find("database");
    const std::string database = dbname && !dbname->empty() ? *dbname : user_;

    std::vector<std::pair<std::string, std::string>> settings;
    for (const auto& [k, v] : sp.params)
      if (!is_connection_param(k)) settings.emplace_back(canonical_param_name(k), v);
    if (const std::string* options = sp.find("options")) {
      if (!parse_options(*options, settings)) {
        co_await send_error(ss::kFeatureNotSupported, "unsupported startup option in \"options\"", true,
                            "pgward accepts only -c name=value and --name=value");
        co_return LoginResult::closed;
      }
    }

    config_ = proxy_.config();
    database_ = config_->find_database(database);
    if (!database_) {
      const std::string what = "database \"" + database + "\" does not exist";
      co_await send_error(ss::kInvalidCatalogName, what, true);
      co_return LoginResult::closed;
    }
    if (!co_await authenticate()) co_return LoginResult::closed;
    for (auto& [k, v] : settings) client_params_[k] = std::move(v);
    co_return LoginResult::ok;
  }
}

asio::awaitable<bool> Session::authenticate() {
  const std::string failed = "password authentication failed for user \"" + user_ + "\"";
  const std::string* secret = config_->find_user_secret(user_);
  std::string out;

  switch (config_->auth_type) {
    case config::AuthType::trust:
      break;

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
      // An unknown user (or one with only an md5 verifier) still goes through the whole exchange against a
      // random verifier, as PostgreSQL does, so that the answer does not tell which user names exist.
      auto verifier = secret ? pr::auth::scram_verifier_for_secret(*secret) : std::nullopt;
      const bool usable = verifier.has_value();
      if (!usable) verifier = pr::auth::scram_verifier_for_secret("pgward-mock-" + std::to_string(id_));
      pr::auth::ScramServer scram(*verifier);
      pr::put_authentication_sasl(out, {"SCRAM-SHA-256"});
      if (!co_await send_client(out)) co_return false;

      auto first = co_await read_client_message(kMaxLoginMessage);
      if (!first) co_return false;
      auto init = first->type == pr::fe::kPassword ? pr::parse_sasl_initial_response(first->body) : std::nullopt;
      if (!init || init->mechanism != "SCRAM-SHA-256") {
        co_await send_error(ss::kProtocolViolation, "client selected an invalid SASL authentication mechanism", true);
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
  pool_ = &proxy_.pool_for(*database_, user_);
  const auto mode = database_->pool.mode;

  // The server's defaults tell the client what it has unless it asked otherwise. When pgward knows no defaults
  // yet, or the client asked for values of its own, one server checks them now: a bad value then fails the
  // login as it would on PostgreSQL, and the values come back in the server's spelling ("ISO" => "ISO, MDY").
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
      auto server = co_await acquire(true);
      if (!server) co_return false;
      pool_->pool.release(server, true);
    }
  }

  const auto defaults = pool_->pool.server_params();
  for (auto name : kTrackedParams) {
    auto it = defaults.find(name);
    if (it != defaults.end() && !client_params_.contains(name)) client_params_.emplace(name, it->second);
  }

  cancel_slot_ = std::make_shared<CancelSlot>();
  if (server_) {
    std::lock_guard lock(cancel_slot_->mu);
    cancel_slot_->target = server_->target();
    cancel_slot_->server_key = server_->backend_key();
  }
  key_ = proxy_.register_client(cancel_slot_);
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
  co_return true;
}

// ---------------------------------------------------------------------------------------------------------------
// server checkout

asio::awaitable<std::optional<ProxyError>> Session::restore_params(ServerConn& server) {
  const auto defaults = pool_->pool.server_params();
  std::string sql;
  std::vector<std::string> unreported;
  for (const auto& [k, v] : client_params_) {
    auto it = server.params.find(k);
    if (it != server.params.end() && it->second == v) continue;
    sql += set_statement(k, v);
    sql += ';';
    if (!defaults.contains(k)) unreported.push_back(k);
  }
  for (const auto& name : server.set_unreported) {
    if (client_params_.contains(name)) continue;
    sql += "RESET \"" + name + "\";";
    server.params.erase(name);
  }
  if (sql.empty()) co_return std::nullopt;
  server.set_unreported.erase(std::remove_if(server.set_unreported.begin(), server.set_unreported.end(),
                                             [&](const std::string& n) { return !client_params_.contains(n); }),
                              server.set_unreported.end());
  spdlog::debug("client {} restores session state on server {}: {}", id_, server.id(), sql);
  auto err = co_await server.run_internal(sql, &client_params_);
  if (err) co_return err;
  // The server does not report these; remember what we set.
  for (auto& name : unreported) {
    server.params[name] = client_params_[name];
    if (std::find(server.set_unreported.begin(), server.set_unreported.end(), name) == server.set_unreported.end())
      server.set_unreported.push_back(std::move(name));
  }
  co_return std::nullopt;
}

asio::awaitable<std::shared_ptr<ServerConn>> Session::acquire(bool fatal) {
  const auto settings = pool_->pool.settings();
  auto exec = client_.get_executor();
  auto checkout = co_await pool_->pool.checkout(exec, pool::Clock::now() + settings.wait_timeout);

  std::shared_ptr<ServerConn> server;
  switch (checkout.outcome) {
    case pool::Pool::Outcome::timeout:
    {
      const std::string what = "no server connection available for database \"" + database_->name + "\" within " +
                               std::to_string(settings.wait_timeout.count()) + " ms (pool size " +
                               std::to_string(settings.size) + ")";
      co_await send_error(ss::kTooManyConnections, what, fatal);
    }
      co_return nullptr;
    case pool::Pool::Outcome::server:
      server = std::static_pointer_cast<ServerConn>(checkout.server);
      break;
    case pool::Pool::Outcome::connect: {
      server = std::make_shared<ServerConn>(exec);
      auto err = co_await server->login(pool_->target);
      if (err) {
        pool_->pool.connect_failed();
        spdlog::warn("client {}: {}", id_, err->message);
        co_await send_error(err->sqlstate, err->message, fatal, err->detail);
        co_return nullptr;
      }
      pool_->pool.connected(server);
      pool_->pool.set_server_params(server->params);
      break;
    }
  }

  if (auto err = co_await restore_params(*server)) {
    pool_->pool.release(server, server->healthy());
    co_await send_error(err->sqlstate, err->message, fatal, err->detail);
    co_return nullptr;
  }
  co_return server;
}

asio::awaitable<bool> Session::link(bool fatal) {
  auto server = co_await acquire(fatal);
  if (!server) co_return false;
  server_ = server;
  pending_ = 0;
  ext_open_ = false;
  tx_status_ = pr::kTxIdle;
  server_pass_ = 0;
  proxy_.server_linked();
  if (cancel_slot_) {
    std::lock_guard lock(cancel_slot_->mu);
    cancel_slot_->target = server->target();
    cancel_slot_->server_key = server->backend_key();
  }
  spdlog::debug("client {} linked to server {}", id_, server->id());
  asio::co_spawn(client_.get_executor(), server_loop(std::move(server)), asio::detached);
  co_return true;
}

void Session::unlink(bool reusable) {
  if (!server_) return;
  if (cancel_slot_) {
    std::lock_guard lock(cancel_slot_->mu);
    cancel_slot_->target.reset();
  }
  spdlog::debug("client {} unlinked from server {} ({})", id_, server_->id(), reusable ? "reusable" : "closed");
  proxy_.server_unlinked();
  pool_->pool.release(std::move(server_), reusable);
  server_.reset();
}

bool Session::releasable() const {
  return pending_ == 0 && !ext_open_ && tx_status_ == pr::kTxIdle && server_pass_ == 0 &&
         database_->pool.mode != config::PoolMode::session;
}

void Session::track_frontend(char type) {
  switch (type) {
    case pr::fe::kQuery:
    case pr::fe::kFunctionCall:
      ++pending_;
      break;
    case pr::fe::kSync:
      ++pending_;
      ext_open_ = false;
      break;
    case pr::fe::kParse:
    case pr::fe::kBind:
    case pr::fe::kDescribe:
    case pr::fe::kExecute:
    case pr::fe::kClose:
    case pr::fe::kFlush:
      ext_open_ = true;
      break;
    default:
      break;  // CopyData/CopyDone/CopyFail belong to a Query or Sync already counted
  }
}

// ---------------------------------------------------------------------------------------------------------------
// the relay

asio::awaitable<void> Session::client_loop() {
  const std::uint32_t max_len = config_->max_message_size;
  auto self = shared_from_this();
  for (;;) {
    if (!co_await fill_client()) break;

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
          // server_loop may be writing to the client right now: close both sides rather than interleave an error.
          spdlog::info("client {} closed by pgward: protocol violation while linked", id_);
          server_->close();
          stop = true;
          break;
        }
        // Built before the co_await: GCC 12 destroys temporaries of a conditional inside co_await twice.
        std::string what = h.status == pr::Status::error
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
      if (discard_until_sync_) {
        client_drop_ = h.header.total();
        if (type == pr::fe::kSync) {
          discard_until_sync_ = false;
          co_await send_ready_for_query();
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
        if (!co_await link(false)) {
          // As PostgreSQL after an error: a simple query ends with ReadyForQuery, the extended protocol skips to
          // the next Sync.
          client_drop_ = h.header.total();
          if (type == pr::fe::kQuery || type == pr::fe::kFunctionCall || type == pr::fe::kSync) {
            co_await send_ready_for_query();
          } else {
            discard_until_sync_ = true;
          }
          continue;
        }
        span = pos;
      }
      track_frontend(type);
      client_pass_ = h.header.total();
    }
    if (server_ && pos > span) {
      if (!co_await server_->write(std::string_view(cbuf_).substr(span, pos - span))) server_->close();
    }
    consume_client(pos - cpos_);
    if (stop) break;
  }

  client_gone_ = true;
  if (server_) {
    // Wake server_loop so that it cleans the server up (DISCARD ALL in session mode) or closes it.
    boost::system::error_code ec;
    server_->socket().cancel(ec);
  }
  boost::system::error_code ec;
  client_.close(ec);
}

asio::awaitable<void> Session::server_loop(std::shared_ptr<ServerConn> server) {
  auto self = shared_from_this();
  ServerConn& s = *server;
  const bool statement_mode = database_->pool.mode == config::PoolMode::statement;

  for (;;) {
    if (client_gone_) break;
    if (!co_await s.fill()) break;

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
      const std::string_view rest = std::string_view(s.rbuf).substr(pos, s.rend - pos);
      auto h = pr::read_header(rest, kMaxServerMessage);
      if (h.status == pr::Status::need_more) break;
      if (h.status == pr::Status::error) {
        bad = true;
        break;
      }
      const char type = h.header.type;
      if (type == pr::be::kReadyForQuery || type == pr::be::kParameterStatus) {
        if (h.header.total() > ServerConn::kBufferSize) {
          bad = true;
          break;
        }
        if (rest.size() < h.header.total()) break;  // read the rest of it first
        const std::string_view body = rest.substr(pr::kHeaderSize, h.header.body_size());
        if (type == pr::be::kParameterStatus) {
          if (auto ps = pr::parse_parameter_status(body)) {
            s.params[std::string(ps->first)] = ps->second;
            if (auto it = client_params_.find(ps->first); it != client_params_.end()) it->second = ps->second;
          }
        } else {
          auto st = pr::parse_ready_for_query(body);
          if (!st) {
            bad = true;
            break;
          }
          if (pending_ > 0) --pending_;
          tx_status_ = *st;
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

    if (pos > span && !co_await send_client(std::string_view(s.rbuf).substr(span, pos - span))) {
      client_gone_ = true;
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
      auto err = co_await s.run_internal("ROLLBACK");
      co_await send_error(ss::kFeatureNotSupported, "transaction blocks are not allowed in statement pooling mode",
                          false);
      tx_status_ = pr::kTxIdle;
      co_await send_ready_for_query();
      unlink(!err && s.rpos == s.rend);
      co_return;
    }
    if (release) {
      // Anything after the final ReadyForQuery was unsolicited (a notice, a notification): keep no server that
      // has unread bytes.
      unlink(s.rpos == s.rend);
      co_return;
    }
  }

  if (server_ != server) co_return;  // already released
  if (client_gone_) {
    const bool clean = pending_ == 0 && !ext_open_ && tx_status_ == pr::kTxIdle && server_pass_ == 0 &&
                       s.rpos == s.rend;
    bool reusable = false;
    if (clean) {
      // Session mode: what this client left behind must not reach the next one.
      reusable = !co_await s.run_internal("DISCARD ALL");
      for (const auto& name : s.set_unreported) s.params.erase(name);
      s.set_unreported.clear();
    }
    unlink(reusable);
    co_return;
  }
  // The server went away under a linked client. The error goes out before the unlink so that client_loop, which
  // writes to the client only while unlinked, cannot write at the same time.
  spdlog::warn("client {}: server {} connection lost", id_, s.id());
  co_await send_error(ss::kConnectionFailure, "server connection lost", true);
  unlink(false);
}

}  // namespace pgward::proxy
