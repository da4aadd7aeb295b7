// Readers and builders of the frontend messages that carry a statement or portal name (PostgreSQL docs,
// "Message Formats": Parse, Bind, Describe, Close), and the SQL text of a whole Query or Parse. Pure: bodies
// in, views out; no I/O, no allocation beyond what a builder appends.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pgward::protocol {

// Views into message bodies (the bytes after the 5-byte header).
struct ParseView {
  std::string_view name;
  std::string_view tail;  // everything after the name: query\0, Int16 n, n x Int32 type oids
};
// Checks the whole body, the parameter-type count against what is there included.
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

// The SQL of a whole Query message (header included); empty for anything else.
std::string_view query_text(std::string_view message);
// The SQL of a whole Parse message (header included); empty for anything else.
std::string_view parse_text(std::string_view message);

}  // namespace pgward::protocol
