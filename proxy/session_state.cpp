// Session state in transaction and statement modes: what a client SETs follows it from server to server, and
// what cannot follow it (temporary tables, LISTEN, advisory locks, WITH HOLD cursors, LOAD) keeps it on its
// server until it ends. In session mode the client keeps its server anyway; only RESET needs pgward there.
//
// pgward does not compute settings from the SQL text: the text only tells it that a statement *may* have
// changed the session (protocol::sql::session_effects). When such a transaction has ended (ReadyForQuery
// idle), the server is asked what the session now holds, in one query of pgward's own (probe_sql). Its
// answer is PostgreSQL's own view after commits, rollbacks and savepoints, and of SETs made by DO blocks and
// set_config(): exactly what a direct connection would have. Transactions whose text changes no session
// state cost nothing extra.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "protocol/sqlstate.hpp"
#include "protocol/startup_params.hpp"
#include "proxy/session.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;

namespace {

// Settings that belong to the transaction, not the session: never replayed.
constexpr std::string_view kTransactionSettings[] = {"transaction_isolation", "transaction_read_only",
                                                     "transaction_deferrable"};

PinReason pin_reason(pr::sql::Pin pin) {
  switch (pin) {
    case pr::sql::Pin::none: return PinReason::none;
    case pr::sql::Pin::temp: return PinReason::temp;
    case pr::sql::Pin::listen: return PinReason::listen;
    case pr::sql::Pin::advisory_lock: return PinReason::advisory_lock;
    case pr::sql::Pin::cursor: return PinReason::cursor;
    case pr::sql::Pin::load: return PinReason::load;
    case pr::sql::Pin::prepared_transaction: return PinReason::prepared_transaction;
  }
  return PinReason::unknown;
}

// Custom setting names one client may have pgward follow; one more pins it (as "unknown").
constexpr std::size_t kMaxCustomSettings = 64;

// The probe's rows that stand for pins rather than settings: '.' + the reason, and a count.
constexpr std::pair<std::string_view, PinReason> kPinRows[] = {{".temp", PinReason::temp},
                                                               {".listen", PinReason::listen},
                                                               {".advisory_lock", PinReason::advisory_lock},
                                                               {".cursor", PinReason::cursor}};

}  // namespace

std::optional<std::string> Session::note_session_text(std::string_view sql, bool whole) {
  const bool session_mode = database_->pool.mode == config::PoolMode::session;
  parse_touches_session_ = true;
  if (!whole) {
    // Too large to look at: learnt afterwards (in session mode, a RESET in it would go unseen).
    if (!session_mode) state_dirty_ = true;
    return std::nullopt;
  }
  parse_touches_session_ = pr::sql::may_touch_session(sql);
  if (!parse_touches_session_) return std::nullopt;
  const pr::sql::SessionEffects fx = pr::sql::session_effects(sql, dialect());
  if (session_mode) {
    // Only RESET needs pgward here: the client keeps its server, and the server its state.
    if ((fx.resets || !fx.complete) && !connection_.empty()) state_dirty_ = state_resets_ = true;
    return std::nullopt;
  }
  if (fx.pin != pr::sql::Pin::none && database_->pool.session_state == config::SessionState::error) {
    std::string_view stmt = sql.substr(std::min(fx.pin_pos, sql.size()));
    stmt = stmt.substr(0, std::min<std::size_t>(fx.pin_len, 200));
    return "statement would leave session state that transaction pooling cannot carry (" +
           std::string(to_string(pin_reason(fx.pin))) + "): " + std::string(stmt) +
           " (session_state = \"error\")";
  }
  if (fx.settings || fx.resets || fx.releases || fx.pin != pr::sql::Pin::none || !fx.complete)
    state_dirty_ = true;
  if (fx.settings || fx.resets) {
    pr::sql::custom_setting_names(sql, custom_names_);
    if (custom_names_.size() > kMaxCustomSettings) {
      custom_names_.resize(kMaxCustomSettings);
      if (text_pin_ == PinReason::none) text_pin_ = PinReason::unknown;
    }
  }
  if (fx.resets || !fx.complete) state_resets_ = true;
  // What the probe cannot see pins on sight, until the client ends.
  if ((fx.pin == pr::sql::Pin::load || fx.pin == pr::sql::Pin::prepared_transaction) &&
      text_pin_ == PinReason::none)
    text_pin_ = pin_reason(fx.pin);
  return std::nullopt;
}

bool Session::settle_due() const { return track_state_ && state_dirty_ && server_ && quiet(); }

std::string Session::probe_sql(const ServerConn& s, bool snapshot) const {
  std::string sql;
  if (state_resets_ && !connection_.empty()) {
    // RESET returns a setting to the server connection's own startup value; the client's is its startup
    // value. Put those back where the session no longer has a value of its own.
    sql += "SELECT pg_catalog.count(pg_catalog.set_config(c.n, c.v, false)) FROM (VALUES ";
    bool first = true;
    for (const auto& [name, value] : connection_) {
      if (!std::exchange(first, false)) sql += ", ";
      sql += '(';
      put_sql_literal(sql, name);
      sql += "::pg_catalog.text, ";
      put_sql_literal(sql, value);
      sql += "::pg_catalog.text)";
    }
    sql +=
        ") AS c(n, v) WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_settings AS s WHERE "
        "pg_catalog.lower(s.name) OPERATOR(pg_catalog.=) pg_catalog.lower(c.n) AND s.source "
        "OPERATOR(pg_catalog.=) 'session');";
  }
  if (snapshot) {
    // Every name is schema-qualified and every operator spelt out: the client's search_path may hold
    // functions or operators of its own making.
    sql +=
        "SELECT s.name, pg_catalog.current_setting(s.name) FROM pg_catalog.pg_settings AS s WHERE s.source "
        "OPERATOR(pg_catalog.=) 'session' "
        "UNION ALL SELECT 'role', pg_catalog.current_setting('role') "
        "UNION ALL SELECT '.temp', ((SELECT pg_catalog.count(*) FROM pg_catalog.pg_class WHERE relnamespace "
        "OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()) OPERATOR(pg_catalog.+) (SELECT "
        "pg_catalog.count(*) FROM pg_catalog.pg_proc WHERE pronamespace OPERATOR(pg_catalog.=) "
        "pg_catalog.pg_my_temp_schema()))::pg_catalog.text "
        "UNION ALL SELECT '.listen', (SELECT pg_catalog.count(*) FROM "
        "pg_catalog.pg_listening_channels())::pg_catalog.text "
        "UNION ALL SELECT '.advisory_lock', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks WHERE "
        "locktype "
        "OPERATOR(pg_catalog.=) 'advisory' AND pid OPERATOR(pg_catalog.=) "
        "pg_catalog.pg_backend_pid())::pg_catalog.text "
        "UNION ALL SELECT '.cursor', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors WHERE "
        "is_holdable)::pg_catalog.text";
    // Custom settings by name: this client's, and those the server is known to hold for someone.
    auto ask = [&](const std::string& name) {
      sql += " UNION ALL SELECT ";
      put_sql_literal(sql, name);
      sql += ", pg_catalog.current_setting(";
      put_sql_literal(sql, name);
      sql += ", true)";
    };
    for (const auto& name : custom_names_) ask(name);
    for (const auto& name : s.set_unreported) {
      if (name.find('.') != std::string::npos &&
          std::find(custom_names_.begin(), custom_names_.end(), name) == custom_names_.end())
        ask(name);
    }
  }
  return sql;
}

PinReason Session::apply_probe(ServerConn& s, const std::vector<std::pair<std::string, std::string>>& rows) {
  PinReason pin = text_pin_;
  const auto reported = pool_->pool.server_params();
  Params seen;  // the session's own unreported settings, as the server has them now
  for (const auto& [name, value] : rows) {
    if (name.starts_with('.')) {
      for (const auto& [row, reason] : kPinRows) {
        if (row == name && value != "0" && pin == PinReason::none) pin = reason;
      }
      continue;
    }
    std::string canonical = pr::canonical_param_name(name);
    if (reported.contains(canonical) ||
        std::find(std::begin(kTransactionSettings), std::end(kTransactionSettings), canonical) !=
            std::end(kTransactionSettings))
      continue;  // reported settings follow ParameterStatus
    if (canonical == "role" && value == "none") continue;
    // A custom setting once set and then RESET reads '' (the placeholder stays): as good as unset.
    if (canonical.find('.') != std::string::npos && value.empty()) continue;
    seen[std::move(canonical)] = value;
  }
  // The client's unreported settings and the server's become exactly what the session has: what it SET,
  // what pgward SET for it, minus what it RESET.
  for (auto it = client_params_.begin(); it != client_params_.end();) {
    if (!reported.contains(it->first) && !seen.contains(it->first)) {
      it = client_params_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& name : s.set_unreported) s.params.erase(name);
  s.set_unreported.clear();
  for (const auto& [name, value] : seen) {
    client_params_[name] = value;
    s.params[name] = value;
    s.set_unreported.push_back(name);
  }
  client_params_changed_ = true;
  s.params_match = {};
  return pin;
}

void Session::set_pin(PinReason reason) {
  if (reason == pin_) return;
  if (reason != PinReason::none) {
    spdlog::info("client {} pinned to server {}: {}", id_, server_ ? server_->id() : 0, to_string(reason));
  } else {
    spdlog::info("client {} unpinned ({} released)", id_, to_string(pin_));
  }
  pin_ = reason;
  track_.set_pin(reason);
}

asio::awaitable<void> Session::settle_state(ServerConn& s) {
  const bool snapshot = database_->pool.mode != config::PoolMode::session;
  const std::string sql = probe_sql(s, snapshot);
  state_dirty_ = false;
  state_resets_ = false;
  // client_loop holds the client's next messages until this is done; the client already has its answer.
  pool::Lease lease = detach(Phase::resolving);
  const auto r = co_await s.run_query(sql, &client_params_);
  if (r.error && r.status == 0) {
    // The server died, and the session state with it: the client is told, as PostgreSQL's own connection
    // would have told it.
    give_back(std::move(lease), false);
    transition(unlinked_phase());
    if (resolved_) resolved_->cancel();
    spdlog::warn("client {}: server {} lost while learning the session state", id_, s.id());
    pr::put_error_response(farewell_, {"FATAL", ss::kConnectionFailure,
                                       "server connection lost; the session state could not be kept"});
    client_gone_ = true;  // client_loop says the farewell and ends
    boost::system::error_code ec;
    client_.cancel(ec);
    co_return;
  }
  // A notification that came in meanwhile is the client's (it LISTENs on this server): it goes on. (While the
  // phase is resolving, this coroutine is the only writer to the client.)
  if (!r.notifications.empty() && !client_gone_ && !co_await send_client(r.notifications))
    client_gone_ = true;
  PinReason pin = PinReason::unknown;
  if (!r.error && r.status == pr::kTxIdle) {
    pin = snapshot ? apply_probe(s, r.pairs) : pin_;
  } else {
    spdlog::warn("client {}: could not learn the session state on server {}: {}", id_, s.id(),
                 r.error ? r.error->message : std::string("server not idle"));
  }
  if (snapshot) set_pin(pin);
  if (client_gone_) {
    // The client left meanwhile: nothing of it may reach the next one.
    bool reusable = r.status == pr::kTxIdle && pin_ == PinReason::none;
    if (!reusable && r.status == pr::kTxIdle && pin_ != PinReason::load) reusable = co_await reset_server(s);
    give_back(std::move(lease), reusable);
    transition(Phase::closing);
  } else if (pin_ != PinReason::none || !snapshot) {
    attach(std::move(lease), r.status ? r.status : pr::kTxIdle);
  } else {
    give_back(std::move(lease), s.rpos == s.rend);
    transition(unlinked_phase());
  }
  if (resolved_) resolved_->cancel();
}

asio::awaitable<bool> Session::reset_server(ServerConn& s) {
  track_.closing_begin();
  const bool ok = !co_await s.run_internal("DISCARD ALL");
  track_.closing_end();
  // DISCARD ALL drops every prepared statement and RESETs every setting (reported ones come back in
  // ParameterStatus).
  for (const auto& name : s.set_unreported) s.params.erase(name);
  s.set_unreported.clear();
  s.params_match = {};
  s.statements.clear();
  s.sql_statements.clear();
  s.evicted.clear();
  co_return ok;
}

}  // namespace pgward::proxy
