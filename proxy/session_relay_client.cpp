// The relay, client side: client_loop() moves the client's bytes to the linked server (server_loop() in
// session_relay_server.cpp does the way back). Whole messages pass through untouched unless pgward must look
// inside them (prepared statements, a COMMIT to verify); bytes are read into one buffer and written on in
// spans, so the common path copies nothing. The per-message work is synchronous: only what must wait (an
// error to send, a server to link) leaves the loop for a coroutine of its own.
#include <spdlog/spdlog.h>

#include "protocol/frontend.hpp"
#include "protocol/sqlstate.hpp"
#include "proxy/session.hpp"
#include "proxy/session_shared.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;

namespace {

bool is_copy(char type) {
  return type == pr::fe::kCopyData || type == pr::fe::kCopyDone || type == pr::fe::kCopyFail;
}

}  // namespace

asio::awaitable<void> Session::client_loop() {
  auto self = shared_from_this();
  relaying_ = true;
  ClientMessage m;
  for (;;) {
    if (!co_await fill_client()) break;
    if (idle_transaction_timer_) idle_transaction_timer_->cancel();
    if (phase_ == Phase::resolving) {
      co_await wait_resolved();
      if (client_gone_) break;
    }

    Cursor c{cpos_, cpos_};
    Step step = Step::next;
    while (c.pos < cend_ && step == Step::next) {
      if (client_pass_ > 0) {
        const std::size_t n = std::min(client_pass_, cend_ - c.pos);
        c.pos += n;
        client_pass_ -= n;
        continue;
      }
      if (client_drop_ > 0) {
        const std::size_t n = std::min(client_drop_, cend_ - c.pos);
        c.pos += n;
        client_drop_ -= n;
        c.span = c.pos;
        continue;
      }
      step = take_client_message(c, m);
      if (step == Step::wait) {
        // (Awaited into a local of its own: GCC 12 frees the callee's frame twice when the co_await is the
        // right side of an assignment here, or the condition of an if.)
        const Step slow = co_await take_client_message_slowly(m, c);
        step = slow;
      }
    }
    if (server_) {
      auto server = server_;  // server_loop may unlink it while the write is under way
      bool ok = true;
      server_write_busy_ = true;
      if (!wire_.empty()) {
        // Something in this batch was rewritten: send the rewritten copy.
        wire_.append(cbuf_, c.span, c.pos - c.span);
        ok = co_await server->write(wire_);
        wire_.clear();
      } else if (c.pos > c.span) {
        ok = co_await server->write(std::string_view(cbuf_).substr(c.span, c.pos - c.span));
      }
      server_write_busy_ = false;
      if (!ok) server->close();
      // What held the server may be gone now (the rest of a message that went out in part).
      if (ok && server_ == server && let_go_due()) request_release();
    }
    wire_.clear();
    consume_client(c.pos - cpos_);
    if (step == Step::stop) break;
  }
  co_await client_finished();
}

Session::Step Session::take_client_message(Cursor& c, ClientMessage& m) {
  auto h = pr::read_header(std::string_view(cbuf_).substr(c.pos, cend_ - c.pos), config_->max_message_size);
  if (h.status == pr::Status::need_more) return Step::need_more;
  const char type = h.header.type;
  m = ClientMessage{};
  m.type = type;
  if (h.status == pr::Status::error || !pr::is_frontend_type(type) || type == pr::fe::kPassword) {
    if (server_) {
      // server_loop may be writing to the client right now: close both sides rather than interleave an error.
      spdlog::info("client {} closed by pgward: protocol violation while linked", id_);
      server_->close();
      return Step::stop;
    }
    m.violation = true;
    m.header_error = h.error;  // empty for a well-framed message of a type no client may send
    return Step::wait;
  }
  if (log_trace_)
    spdlog::trace("client {} -> {} ({} bytes)", id_, pr::frontend_type_name(type), h.header.total());
  if (type == pr::fe::kTerminate) return Step::stop;

  const std::size_t total = h.header.total();
  m.total = total;
  const bool rewritten =
      rewrite_ && (type == pr::fe::kParse || type == pr::fe::kBind || type == pr::fe::kDescribe ||
                   type == pr::fe::kClose || type == pr::fe::kQuery);
  // A message pgward must see whole but may not buffer: the server is made to fail in its place.
  m.too_big = rewritten && total > config_->max_buffer_per_client;
  // Whole messages larger than the usual buffer also draw on max_buffer_total, shared by all clients.
  m.over_budget = rewritten && !m.too_big && !reserve_for(total, cend_ - c.pos);
  // After a lost transaction, a ROLLBACK is answered without a server: its text must be seen whole.
  m.lost_query = lost_ != Lost::none && !server_ && type == pr::fe::kQuery && total <= kClientBufferSize;
  // Session state is followed from the text of queries that fit the usual buffer (larger ones are learnt
  // afterwards, see note_session_text()).
  const bool classified =
      track_state_ && (type == pr::fe::kQuery || type == pr::fe::kParse) && total <= kClientBufferSize;
  if ((rewritten || m.lost_query || classified) && !m.too_big && !m.over_budget && cend_ - c.pos < total) {
    client_want_ = total;  // fill_client makes room for it (bounded by max_buffer_per_client)
    return Step::need_more;
  }
  ++messages_seen_;  // taken up from here on (a message read whole comes back here until it is)
  m.whole = cend_ - c.pos >= total;
  m.message = std::string_view(cbuf_).substr(c.pos, std::min(total, cend_ - c.pos));
  if (discard_until_sync_) {
    client_drop_ = total;
    return type == pr::fe::kSync ? Step::wait : Step::next;
  }
  if (!server_) return Step::wait;
  forward_client_message(m, c);
  return Step::next;
}

bool Session::reserve_for(std::size_t total, std::size_t available) {
  if (total <= kClientBufferSize || available >= total || buffer_reserved_ >= total - kClientBufferSize)
    return true;
  const std::size_t more = total - kClientBufferSize - buffer_reserved_;
  if (!proxy_.reserve_buffer(more)) return false;
  buffer_reserved_ += more;
  return true;
}

asio::awaitable<Session::Step> Session::take_client_message_slowly(const ClientMessage& m, Cursor& c) {
  if (m.violation) {
    // Built before the co_await: GCC 12 destroys temporaries of a conditional inside co_await twice.
    const std::string what = m.header_error.empty() ? "invalid frontend message type " +
                                                          std::to_string(static_cast<unsigned char>(m.type))
                                                    : std::string(m.header_error);
    co_await send_error(ss::kProtocolViolation, what, true);
    client_gone_ = true;
    co_return Step::stop;
  }
  if (discard_until_sync_) {  // the Sync that ends the discarding
    discard_until_sync_ = false;
    co_await send_ready_for_query(discard_status_);
    discard_status_ = pr::kTxIdle;
    co_return Step::next;
  }
  // No server is linked.
  if (is_copy(m.type)) {
    client_drop_ = m.total;  // stray copy messages: PostgreSQL ignores them too
    co_return Step::next;
  }
  if (proxy_.draining()) {
    co_await send_error(ss::kAdminShutdown, "pgward is shutting down", true);
    co_return Step::stop;
  }
  if (lost_ != Lost::none &&
      (lost_ == Lost::unreported || (m.lost_query && pr::sql::is_rollback(pr::query_text(m.message))))) {
    client_drop_ = m.total;
    const std::string_view text = m.whole ? m.message : std::string_view();
    co_await answer_lost_transaction(m.type, text);
    co_return Step::next;
  }
  const bool linked = co_await link(false);
  if (!linked) {
    // As PostgreSQL after an error: a simple query ends with ReadyForQuery, the extended protocol skips to
    // the next Sync.
    client_drop_ = m.total;
    if (m.type == pr::fe::kQuery || m.type == pr::fe::kFunctionCall || m.type == pr::fe::kSync) {
      co_await send_ready_for_query();
    } else {
      discard_until_sync_ = true;
    }
    co_return Step::next;
  }
  c.span = c.pos;
  if (rewrite_) drop_foreign_sql_statements(wire_);
  forward_client_message(m, c);
  co_return Step::next;
}

void Session::forward_client_message(const ClientMessage& m, Cursor& c) {
  const char type = m.type;
  const bool fresh = gate_.fresh();  // this message starts a new batch
  if (fresh && !server_->evicted.empty() && !is_copy(type)) {
    close_on_server(wire_for(c), server_->evicted);
    server_->evicted.clear();
  }
  const std::int64_t outstanding = gate_.pending();
  if (gate_.client_message(type)) track_.query_sent(outstanding);
  note_in_flight(type, m.message, m.whole);
  if (m.too_big || m.over_budget) {
    refuse_message(wire_for(c), type, m.too_big ? ss::kProgramLimitExceeded : ss::kOutOfMemory,
                   m.too_big
                       ? "message of " + std::to_string(m.total) + " bytes exceeds max_buffer_per_client (" +
                             std::to_string(config_->max_buffer_per_client) + " bytes)"
                       : "out of memory for unfinished client messages: message of " +
                             std::to_string(m.total) + " bytes refused (max_buffer_total)");
    client_drop_ = m.total;
    return;
  }
  if (database_->pool.commit_resolution == config::CommitResolution::verify && fresh && m.whole &&
      gate_.tx_status() == pr::kTxInBlock &&
      ((type == pr::fe::kQuery && pr::sql::is_commit(pr::query_text(m.message))) ||
       (type == pr::fe::kParse && rewrite_ && pr::sql::is_commit(pr::parse_text(m.message))))) {
    // Learn the transaction id in the same round trip as the COMMIT, in case the server dies before
    // answering it (see server_lost()). Through the extended protocol only with rewriting on: the queue of
    // expected answers is what lets pgward complete the batch's replies if the COMMIT is verified.
    pr::put_query(wire_for(c), "SELECT coalesce(pg_catalog.txid_current_if_assigned(), 0)");
    expect(pr::fe::kQuery, pr::On::txid);
    gate_.injected();
    commit_txid_.reset();
    if (!rewrite_) expect(pr::fe::kQuery);  // the COMMIT: the queue covers every answer in flight
  }
  // The unnamed statement parsed again (a rewritable message is whole here): found once, for both uses below.
  const bool parse_again =
      type == pr::fe::kParse && rewrite_ && unnamed_again(m.message.substr(pr::kHeaderSize));
  // (Its text, found not to touch session state when it was first parsed, is not read again.)
  if (track_state_ && (type == pr::fe::kQuery || type == pr::fe::kParse) &&
      !(parse_again && !unnamed_touches_session())) {
    const std::string_view text = !m.whole                 ? std::string_view()
                                  : type == pr::fe::kQuery ? pr::query_text(m.message)
                                                           : pr::parse_text(m.message);
    if (auto refusal = note_session_text(text, m.whole)) {
      refuse_message(wire_for(c), type, ss::kFeatureNotSupported, std::move(*refusal));
      client_drop_ = m.total;
      return;
    }
  }
  if (rewrite_ && !is_copy(type) && type != pr::fe::kFlush) {
    if (type == pr::fe::kQuery) {
      if (note_simple_query(m.message, c)) return;
    } else if (type != pr::fe::kParse && type != pr::fe::kBind && type != pr::fe::kDescribe &&
               type != pr::fe::kClose) {
      expect(type);  // Execute, Sync, FunctionCall
    } else {
      const Rewrite r = rewrite_message(type, m.message, c, parse_again);
      if (r == Rewrite::as_is) {
        client_pass_ = m.total;  // in the span, straight from the client's buffer
        return;
      }
      if (r == Rewrite::malformed) {
        // PostgreSQL would end the connection; pgward refuses the one message and the session goes on.
        refuse_message(wire_for(c), type, ss::kProtocolViolation,
                       "invalid " + std::string(pr::frontend_type_name(type)) + " message format");
      }
      c.pos += m.total;
      c.span = c.pos;
      return;
    }
  }
  client_pass_ = m.total;
}

asio::awaitable<void> Session::client_finished() {
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

}  // namespace pgward::proxy
