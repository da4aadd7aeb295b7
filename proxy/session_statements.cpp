// Prepared statements in transaction and statement modes: each client's statement names live in a namespace
// of its own, on servers shared with other clients (see prepared.hpp for the naming, protocol/sql_text.hpp
// for the SQL scanner). Every message pgward sends in a client's place queues what its response means
// (protocol/response_queue.hpp).
#include "protocol/frontend.hpp"
#include "protocol/sqlstate.hpp"
#include "proxy/session.hpp"

namespace pgward::proxy {

namespace pr = protocol;
using pr::parse_bind;
using pr::parse_parse;
using pr::parse_target;
using pr::put_bind;
using pr::put_close;
using pr::put_describe;
using pr::put_parse;
using pr::sql::mentions_ci;

// What the response queue asks of the session: the undo of a failed request, the client's names a
// successful DEALLOCATE drops, the client's text for an error, the transaction id learnt before a COMMIT.
struct Session::QueueHooks {
  Session& session;
  ServerConn& server;

  void undo(Notes& n, bool failed) { session.undo(n, server, failed); }
  void undo_mark(std::uint8_t mark, bool failed) { session.undo_mark(mark, failed); }
  void succeeded(Notes& n) { session.forget_on_success(n); }
  std::string rewrite(Notes* n, std::string_view body, bool stand_in) {
    if (!n) return {};
    if (stand_in) return pr::rewrite_error(body, n->error_code, n->error);
    if (!n->swaps.empty()) return pr::translate_error(body, n->swaps);
    return {};
  }
  void txid(std::string_view row) {
    // 0 (InvalidTransactionId) when the transaction wrote nothing and so has no id: kept as "".
    if (auto v = pr::parse_first_column(row))
      session.commit_txid_ = *v == "0" ? std::string() : std::string(*v);
  }
};

pr::ResponseQueue<Session::Notes>::Answer Session::answer(char type, std::string_view body,
                                                          ServerConn& server) {
  QueueHooks hooks{*this, server};
  return expects_.answer(type, body, hooks);
}

void Session::abandon_expected(ServerConn& server) {
  QueueHooks hooks{*this, server};
  expects_.abandon(hooks);
}

void Session::inject_sync(std::string& wire) {
  pr::put_sync(wire);
  expect(pr::fe::kSync, pr::On::swallow);
  gate_.injected();
}

Session::Expected& Session::expect(char request, pr::On on) { return expects_.push(request, on); }

void Session::ensure_on_server(const StatementPtr& stmt, std::string& wire) {
  ServerStatements& held = server_->statements;
  if (held.touch(stmt->server_name)) {
    stats::add(pool_->stats.prepared_hits);
    return;
  }
  if (!stmt->sql.empty())
    return;  // made by SQL PREPARE: only a simple query re-creates it (see rewrite_prepare_execute)
  stats::add(pool_->stats.prepared_misses);
  evict_for_one(wire);
  // Close first: harmless when the statement is absent, and it keeps a server whose statements were dropped
  // behind pgward's back (DISCARD ALL inside a function, say) from answering the Parse with 42P05.
  put_close(wire, 'S', stmt->server_name);
  expect(pr::fe::kClose, pr::On::swallow);
  put_parse(wire, stmt->server_name, stmt->tail);
  expect(pr::fe::kParse, pr::On::swallow).more().server_added = stmt->server_name;
  held.add(stmt->server_name);
}

std::string& Session::wire_for(Cursor& c) {
  wire_.append(cbuf_, c.span, c.pos - c.span);
  c.span = c.pos;
  return wire_;
}

Session::Rewrite Session::rewrite_message(char type, std::string_view message, Cursor& c, bool parse_again) {
  const std::string_view body = message.substr(pr::kHeaderSize);
  switch (type) {
    case pr::fe::kParse: return rewrite_parse(body, c, parse_again);
    case pr::fe::kBind:
    case pr::fe::kDescribe: return rewrite_bind_describe(type, message, c);
    case pr::fe::kClose: {
      auto t = parse_target(body);
      if (!t) return Rewrite::malformed;
      if (t->kind == 'S' && !t->name.empty()) {
        // Only this client's name goes; the server statement may serve other clients and stays (LRU).
        statements_.erase(std::string(t->name));
        put_close(wire_for(c), 'S', kNoopStatement);
        expect(type);
        return Rewrite::rewritten;
      }
      if (t->kind == 'S') {
        unnamed_.reset();
        unnamed_on_server_ = false;
      }
      expect(type);
      return Rewrite::as_is;
    }

    default: break;
  }
  return Rewrite::malformed;
}

bool Session::unnamed_again(std::string_view parse_body) const {
  // The tail stored was validated when it was parsed: the same bytes need no parsing again.
  return unnamed_ && unnamed_->plain && !parse_body.empty() && parse_body[0] == '\0' &&
         parse_body.substr(1) == unnamed_->tail;
}

Session::Rewrite Session::rewrite_parse(std::string_view body, Cursor& c, bool again) {
  constexpr char type = pr::fe::kParse;
  if (again) {
    // The statement every query of an extended-protocol client parses: nothing in it to rename, the
    // statement kept is the same, and what a failure or a skip undoes fits in the entry's mark.
    expect(type).mark = kUnnamedAgain | (unnamed_on_server_ ? kWasOnServer : 0);
    unnamed_on_server_ = true;
    return Rewrite::as_is;
  }
  auto p = parse_parse(body);
  if (!p) return Rewrite::malformed;
  bool plain = true;  // the text names no statement: it goes as the client wrote it
  // PREPARE, EXECUTE, DEALLOCATE and DISCARD may come through the extended protocol too (psycopg sends
  // DEALLOCATE ALL so after a rollback): they act on this client's names, as in a simple query.
  std::string rewritten;
  const std::size_t text_end = p->tail.find('\0');
  const std::string_view text = p->tail.substr(0, text_end);
  if (pr::sql::may_name_statements(text)) {
    const pr::sql::Scan scan = pr::sql::scan_statement_refs(text, dialect());
    if (scan.refs.empty()) {
      if (mentions_ci(text, "dealloc") || mentions_ci(text, "discard")) {
        forget_server_statements();
        plain = false;
      }
    } else {
      plain = false;
      Notes notes;
      rewritten = rewrite_statement_names(text, scan, wire_for(c), false, notes);
      if (!notes.error_code.empty()) {
        refuse_message(wire_, type, notes.error_code, std::move(notes.error));
        return Rewrite::rewritten;
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
    Notes& x = expect(type).more();
    x.unnamed_parse = true;
    x.prev_unnamed = unnamed_;
    x.prev_unnamed_on_server = unnamed_on_server_;
    // (note_session_text() has just looked at this same text when session state is followed.)
    unnamed_ = make_unnamed_statement(p->tail, plain, !track_state_ || parse_touches_session_);
    unnamed_on_server_ = true;
    if (plain) return Rewrite::as_is;
    put_parse(wire_for(c), "", p->tail);
    return Rewrite::rewritten;
  }
  std::string& wire = wire_for(c);
  std::string name(p->name);
  if (statements_.contains(name)) {
    // PostgreSQL's own answer, produced by the server so that a transaction block is aborted as it would
    // be.
    refuse_message(wire, type, "42P05", "prepared statement \"" + name + "\" already exists");
    return Rewrite::rewritten;
  }
  StatementPtr stmt = make_statement(p->tail);
  statements_[name] = stmt;
  // A client's Parse makes a plan of the schema as it is now, even of a statement this server already holds
  // for other clients: it is prepared again (ensure_on_server closes it first), so that a client preparing
  // after an ALTER TABLE never gets "cached plan must not change result type" from a plan made before it.
  // Bind and Describe, which make no new plan on PostgreSQL either, keep using what the server holds.
  server_->statements.erase(stmt->server_name);
  ensure_on_server(stmt, wire);
  // The Parse that creates it answers for the client's Parse: its ParseComplete (or error) goes through.
  expects_.back().on = pr::On::forward;
  expects_.back().more().client_name = std::move(name);
  expects_.back().more().stmt = std::move(stmt);
  return Rewrite::rewritten;
}

Session::Rewrite Session::rewrite_bind_describe(char type, std::string_view message, Cursor& c) {
  const std::string_view body = message.substr(pr::kHeaderSize);
  std::string_view statement;
  std::optional<pr::BindView> bind;
  if (type == pr::fe::kBind) {
    bind = parse_bind(body);
    if (!bind) return Rewrite::malformed;
    statement = bind->statement;
  } else {
    auto t = parse_target(body);
    if (!t) return Rewrite::malformed;
    if (t->kind == 'P') {
      expect(type);
      return Rewrite::as_is;
    }
    statement = t->name;
  }

  if (statement.empty() && unnamed_) {
    // The unnamed statement keeps its name on the server: the message goes as it is, after a Parse of the
    // statement when this server does not hold it yet (a Bind in a later transaction than its Parse).
    if (!unnamed_on_server_) {
      put_parse(wire_for(c), "", unnamed_->tail);
      expect(pr::fe::kParse, pr::On::swallow).mark = kInjectedUnnamed;
      unnamed_on_server_ = true;
    }
    expect(type);
    return Rewrite::as_is;
  }
  std::string& wire = wire_for(c);
  std::string_view server_name;
  std::string missing;
  if (statement.empty()) {
    missing = "unnamed prepared statement does not exist";
  } else if (auto it = statements_.find(std::string(statement));
             it != statements_.end() &&
             (it->second->sql.empty() || server_->statements.contains(it->second->server_name))) {
    // (A statement made by SQL PREPARE cannot be re-created inside an extended-protocol batch: only a
    // simple query can carry PREPARE, and it would end the batch's implicit transaction.)
    ensure_on_server(it->second, wire);
    server_name = it->second->server_name;
    if (type == pr::fe::kBind && track_state_ && it->second->touches_session) {
      // A statement that may change session state, run again in a later transaction.
      const std::string_view text = std::string_view(it->second->tail).substr(0, it->second->tail.find('\0'));
      note_session_text(text, true);
    }
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
  expect(type, missing.empty() ? pr::On::forward : pr::On::error);
  if (!missing.empty()) {
    expects_.back().more().error_code = "26000";
    expects_.back().more().error = std::move(missing);
  }
  return Rewrite::rewritten;
}

void Session::forget_server_statements() {
  // The server may have dropped statements behind pgward's back (a DEALLOCATE or DISCARD that pgward cannot
  // see, in a function or a DO block): the next use of each parses it again, Close first. The names of SQL
  // statements stay listed so that another client's checkout still closes them.
  server_->statements.clear();
}

bool Session::evict_for_one(std::string& wire) {
  const std::size_t max = database_->pool.max_prepared_statements;
  bool closed = false;
  while (auto victim = server_->statements.evict_over(max - 1)) {
    stats::add(pool_->stats.prepared_evictions);
    put_close(wire, 'S', *victim);
    expect(pr::fe::kClose, pr::On::swallow).more().server_removed = std::move(*victim);
    closed = true;
  }
  return closed;
}

void Session::close_on_server(std::string& wire, const std::vector<std::string>& names) {
  // Close, not DEALLOCATE: closing a statement that is gone already is no error.
  bool any = false;
  for (const std::string& name : names) {
    if (server_->statements.contains(name)) continue;  // made again since
    put_close(wire, 'S', name);
    expect(pr::fe::kClose, pr::On::swallow);
    any = true;
  }
  if (!any) return;
  inject_sync(wire);
}

void Session::close_missing(std::string& wire, bool simple_query) {
  put_close(wire, 'S', kMissingStatement);
  expect(pr::fe::kClose, pr::On::swallow);
  if (simple_query) inject_sync(wire);
}

pr::sql::Dialect Session::dialect() const {
  pr::sql::Dialect d;
  if (auto it = client_params_.find("standard_conforming_strings"); it != client_params_.end())
    d.backslash_quotes = it->second == "off";
  if (auto it = client_params_.find("client_encoding"); it != client_params_.end())
    d.client_only_encoding = pr::sql::client_only_encoding(it->second);
  return d;
}

void Session::forget_on_success(const Notes& x) {
  if (x.forget_all) statements_.clear();
  for (const std::string& name : x.forget) statements_.erase(name);
}

void Session::undo(const Notes& x, ServerConn& server, bool failed) {
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
}

void Session::undo_mark(std::uint8_t mark, bool failed) {
  if (mark & kInjectedUnnamed) unnamed_on_server_ = false;
  if (!(mark & kUnnamedAgain)) return;
  if (failed) {  // as for any unnamed Parse (see undo())
    unnamed_.reset();
    unnamed_on_server_ = false;
  } else {  // skipped: the statement is the one kept already, only where it is changes back
    unnamed_on_server_ = (mark & kWasOnServer) != 0;
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
  Notes& x = expect(type == pr::fe::kQuery ? pr::fe::kQuery : pr::fe::kDescribe, pr::On::error).more();
  x.error_code = sqlstate;
  x.error = std::move(message);
}

}  // namespace pgward::proxy
