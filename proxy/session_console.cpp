// The admin console database (console.hpp) on the proxy port: PgBouncer's "psql -p 6432 pgbouncer" habit.
// Only the simple query protocol ("Simple Query"); what each command does is the Console's, run on the main
// io_context like the HTTP admin port's handlers, so that both see and change the proxy the same way.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "protocol/sqlstate.hpp"
#include "proxy/session.hpp"
#include "proxy/session_shared.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;

namespace {

// The largest console message: a command is a few words, and the usual client buffer holds it whole. A
// longer one is refused with FATAL 08P01 (counted with the other errors pgward sends).
constexpr std::uint32_t kMaxConsoleMessage = kClientBufferSize - 5;

// A plain function rather than a capturing lambda: its arguments live in the coroutine frame.
asio::awaitable<ConsoleReply> run_command(Console* console, std::string sql) {
  co_return console->answer(sql);
}

}  // namespace

asio::awaitable<Session::LoginResult> Session::accept_console() {
  const auto& users = config_->console_users;
  if (std::find(users.begin(), users.end(), user_) == users.end()) {
    // As PostgreSQL refuses a role it does not let in (pg_hba.conf, NOLOGIN): 28000, once the password
    // was right, so that only a client who could log in anyway learns who may use the console.
    stats::add(proxy_.stats().clients_refused_console);
    co_await send_error(ss::kInvalidAuthorizationSpecification,
                        "user \"" + user_ + "\" is not a console user", true,
                        "Only the users in [admin] console_users may log in to database \"" +
                            std::string(config::kConsoleDatabase) + "\".");
    co_return LoginResult::closed;
  }
  co_return LoginResult::console;
}

asio::awaitable<void> Session::serve_console() {
  track_.logged_in(config::kConsoleDatabase, user_);
  transition(Phase::idle);  // registers the cancel key (a cancel finds no server and is ignored)
  std::string out;
  for (const auto& [name, value] : proxy_.console()->welcome_params())
    pr::put_parameter_status(out, name, value);
  pr::put_backend_key_data(out, key_.process_id, key_.secret_key);
  pr::put_ready_for_query(out, pr::kTxIdle);
  if (!co_await send_client(out)) co_return;
  spdlog::info("client {} logged in to the console: user {}", id_, user_);
  for (;;) {
    auto msg = co_await read_client_message(kMaxConsoleMessage);
    if (!msg || !co_await console_message(*msg)) co_return;
  }
}

asio::awaitable<bool> Session::console_send(std::string bytes) {
  const bool ok = co_await send_client(bytes);
  console_busy_ = false;
  if (console_terminate_ && ok) {
    co_await send_error(ss::kAdminShutdown, "terminating connection because pgward is shutting down", true);
    co_return false;
  }
  co_return ok;
}

asio::awaitable<bool> Session::console_message(const pr::Message& msg) {
  if (console_discard_ && msg.type != pr::fe::kSync && msg.type != pr::fe::kTerminate) co_return true;
  console_busy_ = true;
  std::string out;
  switch (msg.type) {
    case pr::fe::kQuery: {
      const auto sql = pr::parse_query(msg.body);
      if (!sql) {
        console_busy_ = false;
        co_await send_error(ss::kProtocolViolation, "malformed Query message", true);
        co_return false;
      }
      // The command runs where the HTTP admin port's do; the answer comes back to this session's executor.
      ConsoleReply reply = co_await asio::co_spawn(
          proxy_.main_context(), run_command(proxy_.console(), std::string(*sql)), asio::use_awaitable);
      if (!reply.error_sqlstate.empty()) track_.proxy_error(reply.error_sqlstate);
      out = std::move(reply.wire);
      pr::put_ready_for_query(out, pr::kTxIdle);
      break;
    }
    case pr::fe::kParse:
    case pr::fe::kBind:
    case pr::fe::kDescribe:
    case pr::fe::kExecute:
    case pr::fe::kClose:
    case pr::fe::kFlush:
    case pr::fe::kFunctionCall:
      // As PostgreSQL after an error in an extended-protocol batch: one ErrorResponse, the rest of the batch
      // dropped up to its Sync. (A FunctionCall is a batch of its own.)
      pr::put_error_response(out, {"ERROR",
                                   ss::kFeatureNotSupported,
                                   "the pgward console accepts only the simple query protocol",
                                   {},
                                   "Send each command as a simple Query (psql -c does)."});
      track_.proxy_error(ss::kFeatureNotSupported);
      console_discard_ = msg.type != pr::fe::kFunctionCall;
      if (msg.type == pr::fe::kFunctionCall) pr::put_ready_for_query(out, pr::kTxIdle);
      break;
    case pr::fe::kSync:
      console_discard_ = false;
      pr::put_ready_for_query(out, pr::kTxIdle);
      break;
    case pr::fe::kCopyData:
    case pr::fe::kCopyDone:
    case pr::fe::kCopyFail: break;  // outside COPY, PostgreSQL ignores these too
    case pr::fe::kTerminate: console_busy_ = false; co_return false;
    default:
      console_busy_ = false;
      co_await send_error(
          ss::kProtocolViolation,
          "invalid frontend message type " + std::to_string(static_cast<unsigned char>(msg.type)), true);
      co_return false;
  }
  if (out.empty()) {
    console_busy_ = false;
    co_return true;
  }
  co_return co_await console_send(std::move(out));
}

}  // namespace pgward::proxy
