// Faults: what a client is told when its server dies under it (the plan is protocol/lost_server.hpp's), the
// verification of a COMMIT whose answer was lost, and the lost transaction answered until the client ends it.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "protocol/frontend.hpp"
#include "protocol/sqlstate.hpp"
#include "proxy/session.hpp"
#include "proxy/session_shared.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;
using asio::as_tuple;
using asio::use_awaitable;

void Session::note_in_flight(char type, std::string_view message, bool whole) {
  const bool implicit = gate_.tx_status() == pr::kTxIdle;  // a statement outside a block commits when it ends
  std::string_view sql;
  if (type == pr::fe::kParse) {
    // Only read inside a block, where the answer matters; outside one everything is in doubt anyway.
    auto p = whole && !implicit ? pr::parse_parse(message.substr(pr::kHeaderSize)) : std::nullopt;
    if (p) sql = p->tail.substr(0, p->tail.find('\0'));
    if (!p || p->name.empty()) unnamed_may_commit_ = !p || pr::sql::may_commit(sql);
  }
  if (in_doubt_) return;
  switch (type) {
    case pr::fe::kQuery:
      in_doubt_ = implicit || !whole || pr::sql::may_commit(pr::query_text(message));
      break;
    case pr::fe::kFunctionCall: in_doubt_ = true; break;
    case pr::fe::kExecute: in_doubt_ = implicit; break;
    case pr::fe::kParse: in_doubt_ = !whole || pr::sql::may_commit(sql); break;
    case pr::fe::kBind: {
      // What the portal will run: the unnamed statement's text is known from its Parse; a named one's only
      // when pgward keeps the client's statements.
      auto b = whole ? pr::parse_bind(message.substr(pr::kHeaderSize)) : std::nullopt;
      if (!b) {
        in_doubt_ = true;
      } else if (b->statement.empty()) {
        in_doubt_ = unnamed_may_commit_;
      } else {
        auto it = statements_.find(std::string(b->statement));
        in_doubt_ = it == statements_.end() || it->second->may_commit;
      }
      break;
    }
    default: break;
  }
}

asio::awaitable<void> Session::server_lost(ServerConn& s) {
  stats::add(pool_->stats.servers_lost);
  const std::optional<std::string> committed = expects_.committed_reply();
  // Requests that will never be answered: undo what pgward assumed of them (statements registered early).
  abandon_expected(s);
  const pr::LostPlan plan =
      pr::plan_lost_server({.mid_message = server_pass_ > 0,
                            .session_mode = database_->pool.mode == config::PoolMode::session,
                            .client_waits = gate_.client_waits(),
                            .batch_open = gate_.batch_open(),
                            .in_doubt = in_doubt_,
                            .tx_status = gate_.tx_status()});
  const std::optional<std::string> txid = commit_txid_;
  const std::string said = server_fatal_.empty() ? std::string() : "PostgreSQL said: " + server_fatal_;
  unlink(false, Phase::resolving);  // client_loop holds the client's next messages until the answer is out

  switch (plan.action) {
    case pr::LostPlan::Action::close: {
      boost::system::error_code ec;
      client_.close(ec);
      client_gone_ = true;
      break;
    }
    case pr::LostPlan::Action::fatal:
      if (plan.in_doubt) {
        co_await send_error(ss::kTransactionResolutionUnknown,
                            "server connection lost; whether the work in flight committed is unknown", true,
                            said);
      } else {
        co_await send_error(ss::kConnectionFailure, "server connection lost", true, said);
      }
      client_gone_ = true;
      break;
    case pr::LostPlan::Action::remember:
      // The client waits for nothing; if it sits in a transaction block, its next message learns the loss.
      if (plan.lost != Lost::none) {
        lost_ = plan.lost;
        lost_detail_ = said;
      }
      break;
    case pr::LostPlan::Action::answer: {
      std::string out = co_await lost_answer(plan, committed, txid, said);
      if (plan.lost != Lost::none) lost_ = plan.lost;
      if (plan.ready_now) {
        pr::put_ready_for_query(out, plan.end_status);
      } else {  // the extended-protocol batch has no Sync yet: its ReadyForQuery comes when it does
        discard_until_sync_ = true;
        discard_status_ = plan.end_status;
      }
      if (!co_await send_client(out)) client_gone_ = true;
      break;
    }
  }
  transition(unlinked_phase());
  if (resolved_) resolved_->cancel();
}

asio::awaitable<std::string> Session::lost_answer(const pr::LostPlan& plan,
                                                  const std::optional<std::string>& committed,
                                                  const std::optional<std::string>& txid,
                                                  const std::string& said) {
  std::string out;
  if (!plan.in_doubt) {
    if (plan.end_status != pr::kTxIdle) {
      append_error(out, ss::kConnectionFailure, "server connection lost; the transaction was rolled back",
                   said);
    } else {
      append_error(out, ss::kConnectionFailure, "server connection lost", said);
    }
    co_return out;
  }
  Outcome outcome = Outcome::unknown;
  if (txid && committed && database_->pool.commit_resolution == config::CommitResolution::verify) {
    outcome = txid->empty() ? Outcome::committed : co_await resolve_commit(*txid);
  }
  switch (outcome) {
    case Outcome::committed:
      stats::add(pool_->stats.commits_verified_committed);
      spdlog::info("client {}: COMMIT verified after the server was lost ({})", id_,
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
  co_return out;
}

asio::awaitable<void> Session::wait_resolved() {
  if (!resolved_) resolved_ = std::make_unique<asio::steady_timer>(client_.get_executor());
  // Several may wait (client_loop, a drain's terminate()): the expiry is set once, since setting it cancels
  // the others' waits; the end of the resolution cancels them all.
  while (phase_ == Phase::resolving) {
    if (resolved_->expiry() != asio::steady_timer::time_point::max())
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
    const auto delay = retry_backoff(attempt);
    if (pool::Clock::now() + delay >= deadline) co_return Outcome::unknown;
    asio::steady_timer pause(client_.get_executor(), delay);
    co_await pause.async_wait(as_tuple(use_awaitable));
  }
}

asio::awaitable<void> Session::answer_lost_transaction(char type, std::string_view message) {
  std::string out;
  const std::string_view sql = pr::query_text(message);
  if (pr::sql::is_rollback(sql)) {
    pr::put_command_complete(out, "ROLLBACK");
    pr::put_ready_for_query(out, pr::kTxIdle);
    lost_ = Lost::none;
  } else {
    append_error(out, ss::kConnectionFailure, "server connection lost; the transaction was rolled back",
                 lost_detail_.empty()
                     ? "The connection to the server died while the client was idle in a transaction block."
                     : lost_detail_);
    if (pr::sql::is_commit(sql)) {
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

}  // namespace pgward::proxy
