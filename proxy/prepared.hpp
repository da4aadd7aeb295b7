// Prepared statements that never collide: client statement names live in a per-client namespace, and each
// distinct statement (query text + parameter types) gets one server-side name, "pgw_" + 32 hex digits of its
// SHA-256, that no client name can equal once rewritten. Identical statements of different clients share one
// server statement.
//
// This file holds the pure parts: the statement definitions, the per-server LRU of names the server has, and
// the parsers/builders of the extended-protocol messages that carry statement names (PostgreSQL docs,
// "Message Formats": Parse, Bind, Describe, Close).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pgward::proxy {

// One distinct statement. `tail` is the Parse body after the statement name: query\0, Int16 n, n x Int32 type
// oids.
struct StatementDef {
  std::string server_name;
  std::string tail;
  // Made by SQL PREPARE: what follows the name ("(int) AS SELECT $1"); empty for a protocol-level Parse.
  std::string sql;
};
using StatementPtr = std::shared_ptr<const StatementDef>;

StatementPtr make_statement(std::string_view tail);
// A client's unnamed statement: it goes to the server unnamed, so it has no server name (no SHA-256 to
// compute on every unnamed Parse, which is every query of an extended-protocol client).
StatementPtr make_unnamed_statement(std::string_view tail);
// A statement made by SQL PREPARE. Its server name comes from `owner_key` (unique per client and name), so it
// never collides with another client's, even for the same text.
StatementPtr make_sql_statement(std::string_view owner_key, std::string_view sql);

// A name no statement ever gets: Bind/Describe of an unknown client name is sent with it, so that PostgreSQL
// itself answers 26000 (and aborts the transaction exactly as it would have), and the error text is then put
// back in the client's terms.
inline constexpr std::string_view kMissingStatement = "pgw_missing";
// Close of this never-existing name is a no-op that still yields a CloseComplete: it stands in on the wire
// for a client message pgward answers itself, so that every client message keeps exactly one response in
// order.
inline constexpr std::string_view kNoopStatement = "pgw_noop";

// Names of the statements one server connection has, least recently used first.
class ServerStatements {
 public:
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  void touch(const std::string& name);
  void add(const std::string& name);
  void erase(const std::string& name);
  // The least recently used name while more than `max` are held; nullopt when within bounds.
  std::optional<std::string> evict_over(std::size_t max);
  std::size_t size() const { return index_.size(); }
  void clear();

 private:
  std::list<std::string> lru_;  // front: least recently used
  std::unordered_map<std::string, std::list<std::string>::iterator> index_;
};

// Views of the name-carrying messages (bodies without the 5-byte header).
struct ParseView {
  std::string_view name;
  std::string_view tail;  // everything after the name
};
std::optional<ParseView> parse_parse(std::string_view body);

struct BindView {
  std::string_view portal;
  std::string_view statement;
  std::string_view rest;  // formats, parameters, result formats
};
std::optional<BindView> parse_bind(std::string_view body);

struct TargetView {  // Describe and Close
  char kind = 0;     // 'S' statement, 'P' portal
  std::string_view name;
};
std::optional<TargetView> parse_target(std::string_view body);

void put_parse(std::string& out, std::string_view name, std::string_view tail);
void put_bind(std::string& out, std::string_view portal, std::string_view statement, std::string_view rest);
void put_describe(std::string& out, char kind, std::string_view name);
void put_close(std::string& out, char kind, std::string_view name);

// The server's ErrorResponse with its SQLSTATE and message replaced and every other field (severity, file,
// line, routine, position...) kept, so that an error pgward provokes on the client's behalf reads exactly as
// PostgreSQL's. A body that does not parse gives a minimal ERROR with just those two.
std::string rewrite_error(std::string_view body, std::string_view sqlstate, std::string_view message);

// One statement name pgward replaced in a client's SQL text: where the server's name stands in the text sent
// (in characters, as PostgreSQL counts error positions) and what the client wrote there.
struct NameSwap {
  std::string server;          // the name sent (pgw_...)
  std::string client;          // the client's name as PostgreSQL would print it (folded, unquoted)
  std::size_t server_pos = 0;  // characters before it in the text sent
  std::size_t server_chars = 0;
  std::size_t client_chars = 0;  // what the client wrote in its place, quotes included
};
// The server's ErrorResponse as the client's own text would have produced it: server names in the message
// and detail put back to the client's, and the error position moved back into the client's text.
std::string translate_error(std::string_view body, const std::vector<NameSwap>& swaps);

}  // namespace pgward::proxy
