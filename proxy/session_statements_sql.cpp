// Prepared statements named in SQL text: PREPARE, EXECUTE and DEALLOCATE in a client's queries act on this
// client's names, as in its own session (see session_statements.cpp for the protocol-level ones, prepared.hpp
// for the naming).
#include "protocol/frontend.hpp"
#include "proxy/session.hpp"

namespace pgward::proxy {

namespace pr = protocol;
using pr::put_close;
using pr::sql::mentions_ci;

bool Session::make_present(const StatementPtr& stmt, std::string& wire, bool simple_query) {
  if (server_->statements.touch(stmt->server_name)) {
    stats::add(pool_->stats.prepared_hits);
    return true;
  }
  if (stmt->sql.empty()) {
    // Made by a Parse: Close + Parse, completed by a Sync of its own when a simple query follows.
    ensure_on_server(stmt, wire);
    if (simple_query) inject_sync(wire);
    return true;
  }
  // Made by SQL PREPARE: only a simple query can re-create it (inside an extended-protocol batch a PREPARE
  // query would end the batch's implicit transaction). Close first, in case the server still has it.
  if (!simple_query) return false;
  stats::add(pool_->stats.prepared_misses);
  if (evict_for_one(wire)) inject_sync(wire);
  put_close(wire, 'S', stmt->server_name);
  expect(pr::fe::kClose, pr::On::swallow);
  inject_sync(wire);
  std::string prepare = "PREPARE \"";
  for (char ch : stmt->server_name) {
    if (ch == '"') prepare += '"';
    prepare += ch;
  }
  pr::put_query(wire, prepare + "\" " + stmt->sql);
  expect(pr::fe::kQuery, pr::On::swallow).more().server_added = stmt->server_name;
  gate_.injected();
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

std::string Session::rewrite_statement_names(std::string_view sql, const pr::sql::Scan& scan,
                                             std::string& wire, bool simple_query, Notes& notes) {
  using Kind = pr::sql::StatementRef::Kind;
  std::string text;
  std::size_t copied = 0;      // bytes of `sql` already in `text`
  std::size_t text_chars = 0;  // characters in `text`
  for (const pr::sql::StatementRef& ref : scan.refs) {
    if (ref.kind == Kind::deallocate_all || ref.kind == Kind::discard_all) {
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
    }
    const std::string server_name = server_name_for(ref, wire, simple_query, notes);
    if (server_name.empty()) return {};     // refused: `notes` holds the error
    if (server_name == ref.name) continue;  // the client's own name (SQL PREPARE): the text stays as written
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

std::string Session::server_name_for(const pr::sql::StatementRef& ref, std::string& wire, bool simple_query,
                                     Notes& notes) {
  using Kind = pr::sql::StatementRef::Kind;
  auto it = statements_.find(ref.name);
  if (ref.kind == Kind::prepare) {
    if (it != statements_.end()) {
      // PostgreSQL's 42P05, raised by the server itself at this very statement.
      if (!make_present(it->second, wire, simple_query)) {
        notes.error_code = "42P05";  // the caller has the server fail in its place
        notes.error = "prepared statement \"" + ref.name + "\" already exists";
        return {};
      }
      return it->second->server_name;
    }
    // (A PREPARE whose query failed may still exist on the server: prepared statements outlive a rollback.
    // Its name stays in sql_statements, so the next client's checkout closes it.)
    StatementPtr stmt =
        make_sql_statement(ref.name, std::to_string(id_) + '\0' + std::to_string(++sql_prepares_), ref.body);
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
    std::string server_name = stmt->server_name;
    notes.prepared.emplace_back(ref.name, std::move(stmt));
    return server_name;
  }
  // EXECUTE, DEALLOCATE
  if (it == statements_.end() || !make_present(it->second, wire, simple_query)) {
    // Not this client's: whatever the name looks like, PostgreSQL answers 26000 for it.
    if (!notes.uses_missing) close_missing(wire, simple_query);
    notes.uses_missing = true;
    return std::string(kMissingStatement);
  }
  if (ref.kind == Kind::deallocate) {
    // The server copy goes, so that the command tag and any error are PostgreSQL's own; other clients that
    // share it get it parsed again on their next use. The client's name goes once it succeeded.
    server_->statements.erase(it->second->server_name);
    notes.forget.push_back(ref.name);
  }
  return it->second->server_name;
}

bool Session::note_simple_query(std::string_view message, Cursor& c) {
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
  std::string& wire = wire_for(c);
  Notes notes;
  const std::string text = rewrite_statement_names(*sql, scan, wire, true, notes);
  pr::put_query(wire, text);
  Expected& e = expect(pr::fe::kQuery);
  if (!notes.swaps.empty() || !notes.prepared.empty() || notes.forget_all || !notes.forget.empty()) {
    Notes& x = e.more();
    x.swaps = std::move(notes.swaps);
    x.prepared = std::move(notes.prepared);
    x.forget = std::move(notes.forget);
    x.forget_all = notes.forget_all;
  }
  // Closed before the client's next batch, once this query has made them (see client_loop).
  stats::add(pool_->stats.prepared_evictions, notes.evicted.size());
  for (std::string& name : notes.evicted) server_->evicted.push_back(std::move(name));
  c.pos += message.size();
  c.span = c.pos;
  return true;
}

}  // namespace pgward::proxy
