// SQL text, read only as far as a pooler must: where a query names a prepared statement, and what it does to
// session state that outlives its transaction.
//
// PostgreSQL's SQL commands that name a prepared statement are PREPARE, EXECUTE, DEALLOCATE, EXPLAIN ...
// EXECUTE and CREATE TABLE ... AS EXECUTE ("SQL Commands" in the PostgreSQL docs). A pooler that gives each
// client its own statement namespace must find every such name to put the server's name in its place. The
// scanner here tokenises the text as PostgreSQL's lexer does for what matters (white space, -- and nested
// /* */ comments, '...' and E'...' strings, $tag$...$tag$ strings, "quoted" identifiers, several statements
// separated by ';') and reports each name with its byte range, so that the caller can rewrite the text in
// place. No I/O, no allocation beyond the result.
//
// A transaction pooler hands a server connection to another client once a transaction ends; whatever a
// statement left on the connection beyond the transaction (a setting, a temporary table, a LISTEN, a session
// advisory lock, a WITH HOLD cursor, a LOADed library, a prepared transaction) goes with it.
// session_effects() reads the same tokens, without allocating, and says which of these a text may leave.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pgward::protocol::sql {

struct StatementRef {
  enum class Kind {
    prepare,         // PREPARE name [(types)] AS statement
    execute,         // EXECUTE name, also after EXPLAIN [options] and in CREATE TABLE ... AS EXECUTE
    deallocate,      // DEALLOCATE [PREPARE] name
    deallocate_all,  // DEALLOCATE [PREPARE] ALL (no name)
    discard_all,     // DISCARD ALL (no name)
  };
  Kind kind = Kind::execute;
  std::string name;          // as PostgreSQL folds it: lower-case unless quoted
  std::size_t name_pos = 0;  // the name's bytes in the text, quotes included
  std::size_t name_len = 0;
  // prepare: the text after the name up to the end of the statement ("(int) AS SELECT $1"), trailing white
  // space aside.
  std::string_view body;
  // The statement's bytes, from its first token to its end (';' excluded).
  std::size_t stmt_pos = 0;
  std::size_t stmt_len = 0;
};

struct Scan {
  std::vector<StatementRef> refs;
  std::size_t statements = 0;  // how many statements the text holds (empty ones aside)
  bool complete = true;        // false when the text ends inside a string, comment or quoted identifier
};

// How the client's text is to be read, as PostgreSQL would read it in this session.
struct Dialect {
  // standard_conforming_strings = off: backslash escapes in every '...' string, not only in E'...'.
  bool backslash_quotes = false;
  // A client encoding whose multibyte characters may hold a 0x5C byte that is no backslash (SJIS, BIG5, GBK,
  // UHC, GB18030, JOHAB: PostgreSQL converts them before it lexes); empty for encodings where a 0x5C byte is
  // always a backslash.
  std::string_view client_only_encoding;
};

// Every prepared-statement name the text refers to, in order.
Scan scan_statement_refs(std::string_view sql, const Dialect& dialect = {});

// State a statement leaves on its server connection that a pooler cannot replay on another one.
enum class Pin : std::uint8_t {
  none,
  temp,           // CREATE TEMP ..., SELECT ... INTO TEMP, anything CREATE puts in pg_temp
  listen,         // LISTEN channel
  advisory_lock,  // pg_[try_]advisory_lock[_shared] (not the _xact_ variants, which end with the transaction)
  cursor,         // DECLARE ... CURSOR WITH HOLD
  load,           // LOAD 'library'
  prepared_transaction,  // PREPARE TRANSACTION 'gid'
};
// "temp", "listen", "advisory_lock", "cursor", "load", "prepared_transaction"; "" for none.
std::string_view pin_name(Pin pin);

// What a text (a simple Query's, or a Parse's, possibly several statements) may do to session state. Words
// count only outside strings and comments, ASCII case aside; a quoted identifier is never a keyword.
struct SessionEffects {
  // May change a session setting: SET (not SET LOCAL / SET TRANSACTION / SET CONSTRAINTS), RESET, SET ROLE,
  // SET SESSION AUTHORIZATION, SET TIME ZONE, SET SCHEMA, SET NAMES, SET SESSION CHARACTERISTICS AS
  // TRANSACTION ..., DISCARD (any), DO, and any statement that mentions set_config.
  bool settings = false;
  // May put a setting back to its reset value: RESET x, RESET ALL, SET [SESSION] x TO/= DEFAULT, SET TIME
  // ZONE DEFAULT / LOCAL, SET ROLE NONE, SET SESSION AUTHORIZATION DEFAULT, DISCARD ALL, DO.
  bool resets = false;
  // May end a pin: UNLISTEN, DISCARD, DROP, CLOSE, COMMIT / ROLLBACK PREPARED, any word starting with
  // pg_advisory_unlock (pg_advisory_unlock, _shared, _all), those words in a DO block's body.
  bool releases = false;
  // The first statement that leaves unreplayable state. A DO block's body (PL/pgSQL, not SQL) pins on its
  // words wherever they stand: temp, temporary, pg_temp, listen, the advisory lock functions, "with hold",
  // load.
  Pin pin = Pin::none;
  // That statement's bytes in the text, from its first token to its end (';' excluded); 0, 0 for none.
  std::size_t pin_pos = 0;
  std::size_t pin_len = 0;
  // False when the text ends inside a string, comment or quoted identifier: PostgreSQL rejects it whole, the
  // caller treats it as unknown.
  bool complete = true;
};

// Whether the text may touch session state at all: a cheap test (no tokenising, no allocation) for the hot
// path. False guarantees session_effects() finds no setting, reset, release or pin.
bool may_touch_session(std::string_view sql);
// What the text may do to session state, read as PostgreSQL reads it in this dialect. Allocates nothing.
// EXPLAIN's statement is read as if it stood alone.
SessionEffects session_effects(std::string_view sql, const Dialect& dialect = {});

// The names of custom settings ("app.tenant": a dot in the name) the text may SET or RESET, in SET / RESET
// statements and as set_config()'s first argument, anywhere in the text (DO blocks and strings included: a
// name too many costs nothing). Lower-case, appended to `out` unless already there. They need naming because
// PostgreSQL lists no placeholder setting in pg_settings.
void custom_setting_names(std::string_view sql, std::vector<std::string>& out);

// The encodings PostgreSQL accepts only from clients, as Dialect::client_only_encoding wants them ("" for the
// others); `client_encoding` is the setting's value in any case.
std::string_view client_only_encoding(std::string_view client_encoding);

// Whether the text may name a prepared statement at all: a cheap test (no tokenising) for the hot path. False
// guarantees scan_statement_refs() finds nothing.
bool may_name_statements(std::string_view sql);

// `word` (lower-case letters, digits, `_`) occurs in `text`, ASCII case aside.
bool mentions_ci(std::string_view text, std::string_view word);

// A short SQL command as lower-case words joined by single spaces ("commit work"), a trailing ';' aside;
// empty when the text holds anything but letters, white space and one final ';', or is over 64 bytes.
std::string short_command(std::string_view sql);
// COMMIT / END [WORK | TRANSACTION] and nothing else.
bool is_commit(std::string_view sql);
// ROLLBACK / ABORT [WORK | TRANSACTION] and nothing else.
bool is_rollback(std::string_view sql);
// Whether SQL text might commit (or prepare) a transaction. Errs towards yes: a false yes only turns the
// answer to a lost server from "rolled back" (08006) into "unknown" (08007).
bool may_commit(std::string_view sql);

// PostgreSQL counts positions in characters: the number of characters of UTF-8 text (bytes that do not
// continue a sequence).
std::size_t count_chars(std::string_view text);

}  // namespace pgward::protocol::sql
