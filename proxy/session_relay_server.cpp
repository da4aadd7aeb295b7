// The relay, server side: server_loop() moves the linked server's bytes to the client, looks inside
// ReadyForQuery, ParameterStatus and errors, answers for what pgward sent in the client's place (the response
// queue) and gives the server back when the transaction gate says nothing is owed.
#include <spdlog/spdlog.h>

#include "protocol/sqlstate.hpp"
#include "proxy/session.hpp"
#include "proxy/session_shared.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;

asio::awaitable<void> Session::server_loop(std::shared_ptr<ServerConn> server) {
  auto self = shared_from_this();
  ServerConn& s = *server;
  for (;;) {
    if (client_gone_) break;
    if (release_wanted_ && let_go_due()) {
      release_wanted_ = false;
      co_await let_go(s);
      co_return;
    }
    if (!co_await s.fill()) {
      // Woken by request_release() (the read was cancelled), or the server is gone.
      if (std::exchange(release_wanted_, false) && server_ == server && !client_gone_) {
        if (let_go_due()) {
          co_await let_go(s);
          co_return;
        }
        continue;  // something new went out meanwhile: keep reading
      }
      break;
    }

    Cursor c{s.rpos, s.rpos};
    const ServerScan scan = scan_server(s, c);
    bool sent = true;
    if (!server_wire_.empty()) {
      server_wire_.append(s.rbuf, c.span, c.pos - c.span);
      sent = co_await send_client(server_wire_);
      server_wire_.clear();
    } else if (c.pos > c.span) {
      sent = co_await send_client(std::string_view(s.rbuf).substr(c.span, c.pos - c.span));
    }
    s.consume(c.pos - s.rpos);
    if (!sent) {
      client_gone_ = true;
      client_write_failed_ = true;
      break;
    }
    if (scan.bad) {
      spdlog::warn("client {}: server {} sent a malformed message", id_, s.id());
      break;
    }
    if (scan.statement_violation) {
      co_await end_statement_violation(s);
      co_return;
    }
    // Decided before the write to the client, checked again after it: while that write was under way,
    // client_loop may have sent the next batch to this still-linked server, and releasing now would strand it
    // there. Anything after the final ReadyForQuery was unsolicited (a notice, a notification): keep no
    // server that has unread bytes.
    if (scan.release && let_go_due()) {
      co_await let_go(s);
      co_return;
    }
  }
  if (server_ != server) co_return;  // already released
  co_await server_finished(s);
}

Session::ServerScan Session::scan_server(ServerConn& s, Cursor& c) {
  ServerScan scan;
  while (c.pos < s.rend) {
    if (server_pass_ > 0) {
      const std::size_t n = std::min(server_pass_, s.rend - c.pos);
      c.pos += n;
      server_pass_ -= n;
      continue;
    }
    if (server_drop_ > 0) {
      const std::size_t n = std::min(server_drop_, s.rend - c.pos);
      c.pos += n;
      server_drop_ -= n;
      c.span = c.pos;
      continue;
    }
    const std::string_view rest = std::string_view(s.rbuf).substr(c.pos, s.rend - c.pos);
    auto h = pr::read_header(rest, kMaxServerMessage);
    if (h.status == pr::Status::need_more) break;
    if (h.status == pr::Status::error) {
      scan.bad = true;
      break;
    }
    const char type = h.header.type;
    const std::size_t total = h.header.total();
    // Messages looked inside are handled only once they are whole, and nothing below runs twice for one
    // message (a split message breaks out here before any state changes).
    const bool inspected = type == pr::be::kReadyForQuery || type == pr::be::kParameterStatus;
    const bool small_error = type == pr::be::kErrorResponse && total <= ServerConn::kBufferSize;
    if (inspected && total > ServerConn::kBufferSize) {
      scan.bad = true;
      break;
    }
    if ((inspected || small_error) && rest.size() < total) break;  // read the rest of it first
    const std::string_view body =
        rest.substr(pr::kHeaderSize, std::min(h.header.body_size(), rest.size() - 5));
    if (small_error) {
      if (auto fatal = pr::fatal_message(body)) {
        // PostgreSQL closes the connection after a FATAL. The client keeps its own connection: it hears of
        // the loss from server_lost(), as one ERROR that quotes this message.
        server_fatal_ = std::move(*fatal);
        server_wire_.append(s.rbuf, c.span, c.pos - c.span);
        server_drop_ = total;
        continue;
      }
      track_.server_error(body);
    }
    if (!expects_.empty()) {
      const Answer a = answer(type, body, s);
      if (a.disposition != pr::Disposition::forward) {
        if (type == pr::be::kReadyForQuery) gate_.injected_ready();  // an injected preamble's
        // Cut this message out of what goes to the client (and put the replacement in its place).
        server_wire_.append(s.rbuf, c.span, c.pos - c.span);
        server_wire_.append(a.replacement);
        server_drop_ = total;
        continue;
      }
    }
    if (!inspected) {
      server_pass_ = total;
      continue;
    }
    const Seen seen = inspect_server_message(type, body, s);
    if (seen == Seen::bad) {
      scan.bad = true;
      break;
    }
    if (seen == Seen::violation) {  // forward up to this ReadyForQuery, then roll back
      scan.statement_violation = true;
      break;
    }
    c.pos += total;
    if (seen == Seen::release) {
      scan.release = true;
      break;
    }
  }
  return scan;
}

Session::Seen Session::inspect_server_message(char type, std::string_view body, ServerConn& s) {
  if (type == pr::be::kParameterStatus) {
    if (auto ps = pr::parse_parameter_status(body)) {
      s.params[std::string(ps->first)] = ps->second;
      s.params_match = {};
      if (auto it = client_params_.find(ps->first); it != client_params_.end()) {
        it->second = ps->second;
        client_params_changed_ = true;
      }
    }
    return Seen::ok;
  }
  auto st = pr::parse_ready_for_query(body);
  if (!st) return Seen::bad;
  const auto verdict = gate_.ready_for_query(*st, database_->pool.mode == config::PoolMode::statement);
  track_.ready_for_query(*st, gate_.pending());
  if (gate_.answered()) {
    in_doubt_ = false;
    commit_txid_.reset();
    if (*st != pr::kTxIdle) arm_idle_transaction_timer();
  }
  if (verdict == pr::TxnGate::Verdict::violation) return Seen::violation;
  return let_go_due() ? Seen::release : Seen::ok;
}

asio::awaitable<void> Session::end_statement_violation(ServerConn& s) {
  s.consume(6);  // the ReadyForQuery reporting the open transaction
  if (!gate_.fresh() || server_write_busy_ || client_pass_ > 0) {
    // The client pipelined more behind the transaction block: its replies would mix with the rollback's.
    co_await send_error(ss::kFeatureNotSupported,
                        "transaction blocks are not allowed in statement pooling mode", true);
    unlink(false, unlinked_phase());
    co_return;
  }
  // client_loop holds the client's next messages until this is answered.
  pool::Lease lease = detach(Phase::resolving);
  auto err = co_await s.run_internal("ROLLBACK");
  co_await send_error(ss::kFeatureNotSupported,
                      "transaction blocks are not allowed in statement pooling mode", false);
  co_await send_ready_for_query();
  // ROLLBACK undoes the block's settings, not what outlives a transaction (a session advisory lock taken in
  // it, say): a block whose text may have left such state costs its server.
  give_back(std::move(lease), !err && s.rpos == s.rend && s.cancels_in_flight == 0 && !state_dirty_);
  state_dirty_ = false;
  transition(unlinked_phase());
  if (resolved_) resolved_->cancel();
}

asio::awaitable<void> Session::server_finished(ServerConn& s) {
  if (client_gone_) {
    const bool clean = gate_.quiet() && server_pass_ == 0 && client_pass_ == 0 && !server_write_busy_ &&
                       s.cancels_in_flight == 0 && s.rpos == s.rend;
    if (!farewell_.empty()) {
      // Nothing is half-written to the client unless a server message is, or a write broke off: then the
      // farewell cannot be said.
      if (server_pass_ == 0 && !client_write_failed_) co_await send_client(farewell_);
      farewell_.clear();
      boost::system::error_code ec;
      client_.close(ec);
    }
    pool::Lease lease = detach(Phase::closing);
    bool reusable = false;
    if (clean && database_->pool.mode != config::PoolMode::session && !state_dirty_ &&
        pin_ == PinReason::none) {
      // Transaction and statement modes: nothing in flight, as at any release; the settings the client left
      // are known and the next client's checkout replaces them; the shared prepared statements stay (the
      // client's own SQL-made ones are closed at the next checkout).
      reusable = true;
    } else if (clean && pin_ != PinReason::load) {
      // Session mode, a pinned client, or state not yet learnt: what this client left behind must not reach
      // the next one. (A loaded library cannot be unloaded: that server is closed.)
      reusable = co_await reset_server(s);
    }
    give_back(std::move(lease), reusable);
    co_return;
  }
  if (proxy_.draining()) {  // terminate() closed it: shutdown_timeout passed during the drain
    // The error goes out before the unlink so that client_loop, which writes to the client only while
    // unlinked, cannot write at the same time.
    co_await send_error(ss::kAdminShutdown, "terminating connection because pgward is shutting down", true);
    unlink(false, unlinked_phase());
    co_return;
  }
  spdlog::warn("client {}: server {} connection lost", id_, s.id());
  co_await server_lost(s);
}

}  // namespace pgward::proxy
