#include "proxy/session.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cassert>

#include "protocol/sqlstate.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;
using asio::as_tuple;
using asio::use_awaitable;

Session::Session(Proxy& proxy, tcp::socket socket, std::uint64_t id)
    : proxy_(proxy),
      client_(std::move(socket)),
      id_(id),
      log_trace_(spdlog::should_log(spdlog::level::trace)),
      log_debug_(spdlog::should_log(spdlog::level::debug)) {
  boost::system::error_code ec;
  auto ep = client_.socket().remote_endpoint(ec);
  peer_ = ec ? std::string("unknown") : ep.address().to_string() + ":" + std::to_string(ep.port());
  client_.socket().set_option(tcp::no_delay(true), ec);
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

asio::awaitable<void> Session::run() {
  spdlog::info("client {} connected from {}", id_, peer_);
  tls_ = proxy_.tls();
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(client_.get_executor(), proxy_.config()->client_login_timeout);
  auto started = co_await (startup() || deadline.async_wait(as_tuple(use_awaitable)));
  if (started.index() == 1) {
    stats::add(proxy_.stats().client_login_timeouts);
    co_await send_error(ss::kProtocolViolation, "timeout expired during login", true);
  } else if (std::get<0>(started) == LoginResult::console) {
    co_await serve_console();
  } else if (std::get<0>(started) == LoginResult::ok && co_await finish_login()) {
    co_await client_loop();
  }
  if (!server_) transition(Phase::closing);  // else server_loop unlinks it, closing
  spdlog::info("client {} closed", id_);
}

void Session::transition(Phase next) {
  if (next == phase_) return;
  if (log_trace_) spdlog::trace("client {}: {} -> {}", id_, to_string(phase_), to_string(next));
  // The cancel slot: a client can be cancelled from its welcome (which hands it the key) until it closes.
  if (phase_ == Phase::login && next != Phase::closing && !registered_) {
    key_ = proxy_.register_client(
        std::make_shared<CancelSlot>(CancelSlot{weak_from_this(), client_.get_executor()}));
    registered_ = true;
  } else if (next == Phase::closing && registered_) {
    proxy_.unregister_client(key_);
    registered_ = false;
  }
  phase_ = next;
  track_.set_phase(next);
  track_.set_server(server_ ? server_->id() : 0, server_ ? server_->tls_text() : nullptr);
  assert((server_ != nullptr) == (phase_ == Phase::linked));
}

// ---------------------------------------------------------------------------------------------------------------
// link and unlink

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
  attach(std::move(lease), status);
  co_return true;
}

void Session::attach(pool::Lease lease, char tx_status) {
  auto server = lease.server_as<ServerConn>();
  server_ = server;
  lease_ = std::move(lease);
  server_fatal_.clear();
  gate_.reset(tx_status);
  in_doubt_ = false;
  server_pass_ = 0;
  server_drop_ = 0;
  expects_.clear();
  unnamed_on_server_ = false;  // whatever unnamed statement that server holds is not this client's
  release_wanted_ = false;
  cancel_unsure_ = false;
  proxy_.server_linked();
  transition(Phase::linked);
  if (log_debug_) spdlog::debug("client {} linked to server {}", id_, server->id());
  asio::co_spawn(client_.get_executor(), server_loop(std::move(server)), asio::detached);
}

pool::Lease Session::detach(Phase next) {
  if (!server_) return {};
  server_.reset();
  pool::Lease lease = std::move(lease_);
  proxy_.server_unlinked();
  transition(next);
  return lease;
}

void Session::unlink(bool reusable, Phase next) {
  if (auto lease = detach(next)) give_back(std::move(lease), reusable);
}

void Session::give_back(pool::Lease lease, bool reusable) {
  reusable = reusable && !cancel_unsure_;
  if (log_debug_) {
    spdlog::debug("client {} gave back server {} ({})", id_,
                  static_cast<const ServerConn&>(*lease.server()).id(), reusable ? "reusable" : "closed");
  }
  lease.release(reusable);
}

bool Session::quiet() const {
  // Messages in flight both ways, whole (the gate) or in part (server_pass_, client_pass_, a write under
  // way), and cancels on their way to this server all keep it: released, it would carry the rest of a
  // message, or a cancel, to the next client.
  return gate_.quiet() && server_pass_ == 0 && client_pass_ == 0 && !server_write_busy_ &&
         server_->cancels_in_flight == 0;
}

bool Session::releasable() const {
  // Session state not yet learnt, or state that cannot follow the client, keeps the server too.
  return quiet() && database_->pool.mode != config::PoolMode::session && !state_dirty_ &&
         pin_ == PinReason::none;
}

asio::awaitable<void> Session::let_go(ServerConn& s) {
  if (settle_due()) {
    co_await settle_state(s);
  } else {
    unlink(s.rpos == s.rend, unlinked_phase());
  }
}

void Session::request_release() {
  release_wanted_ = true;
  boost::system::error_code ec;
  server_->socket().cancel(ec);  // server_loop's read ends, and it sees release_wanted_
}

// ---------------------------------------------------------------------------------------------------------------
// cancel and drain

void Session::forward_cancel() {
  auto& global = proxy_.stats();
  if (phase_ != Phase::linked || client_gone_) {
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
  if (server_ && let_go_due()) request_release();
}

void Session::terminate() {
  if (!client_.is_open()) return;
  if (server_) {
    // Still inside a transaction past shutdown_timeout. server_loop may be writing to the client right now,
    // so it sends the 57P01 itself once the server is gone (after whatever it already forwarded).
    server_->close();
    return;
  }
  // Unlinked: client_loop only reads, so this is the one writer, once pgward's own answer to a lost server or
  // a refused transaction block (phase resolving) is out.
  asio::co_spawn(
      client_.get_executor(),
      [self = shared_from_this()]() -> asio::awaitable<void> {
        co_await self->wait_resolved();
        if (self->server_ || !self->client_.is_open()) co_return;
        if (self->console_busy_) {
          self->console_terminate_ = true;  // serve_console says it once the answer it is writing is out
          co_return;
        }
        co_await self->send_error(ss::kAdminShutdown,
                                  "terminating connection because pgward is shutting down", true);
      },
      asio::detached);
}

// ---------------------------------------------------------------------------------------------------------------
// idle_in_transaction_timeout

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
  if (phase_ != Phase::linked || gate_.tx_status() == pr::kTxIdle || !gate_.answered() || cend_ != cpos_ ||
      client_gone_)
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
