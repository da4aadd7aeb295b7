// Prepared statements that never collide: client statement names live in a per-client namespace, and each
// distinct statement (query text + parameter types) gets one server-side name, "pgw_" + 32 hex digits of its
// SHA-256, that no client name can equal once rewritten. Identical statements of different clients share one
// server statement.
//
// This file holds the statement definitions and the per-server LRU of names the server has; the messages that
// carry statement names are read and built by protocol/frontend.hpp.
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
  // Its text may change session state (protocol::sql::may_touch_session): each Bind of it is looked at.
  bool touches_session = false;
  // Its text may end a transaction (protocol::sql::may_commit), read once here rather than at each Bind.
  bool may_commit = true;
  // An unnamed statement whose text names no prepared statement: a Parse of the same bytes again goes to
  // the server as the client wrote it, without being read (Session::rewrite_parse).
  bool plain = false;
};
using StatementPtr = std::shared_ptr<const StatementDef>;

StatementPtr make_statement(std::string_view tail);
// A client's unnamed statement: it goes to the server unnamed, so it has no server name (no SHA-256 to
// compute on every unnamed Parse, which is every query of an extended-protocol client). `touches_session`:
// what the caller found of its text (true when it did not look).
StatementPtr make_unnamed_statement(std::string_view tail, bool plain, bool touches_session);
// Server names pgward makes all start with this; no statement a client names gets one unless pgward made it.
inline constexpr std::string_view kReservedPrefix = "pgw_";
// A statement made by SQL PREPARE. It keeps the client's name on the server (so pg_prepared_statements and
// dynamic SQL in functions see it as on a direct connection): a server holds one client's SQL statements
// only, the next client's checkout closes them. A client name starting with kReservedPrefix gets a server
// name from `owner_key` (unique per client and PREPARE) instead, so that it never meets pgward's own names.
StatementPtr make_sql_statement(std::string_view client_name, std::string_view owner_key,
                                std::string_view sql);

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
  // Marks `name` most recently used; false when it is not held.
  bool touch(const std::string& name);
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

}  // namespace pgward::proxy
