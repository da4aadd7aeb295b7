#include "protocol/frontend.hpp"

#include "protocol/codec.hpp"

namespace pgward::protocol {

std::optional<ParseView> parse_parse(std::string_view body) {
  Reader rd(body);
  ParseView v;
  if (!rd.cstring(v.name)) return std::nullopt;
  v.tail = rd.rest();
  // Validate the tail now so that a malformed Parse is refused before it is stored or hashed.
  std::string_view query;
  // The count is an Int16 that PostgreSQL reads unsigned: up to 65,535 parameter types.
  std::int16_t n = 0;
  if (!rd.cstring(query) || !rd.i16(n) ||
      rd.remaining() != static_cast<std::size_t>(static_cast<std::uint16_t>(n)) * 4) {
    return std::nullopt;
  }
  return v;
}

std::optional<BindView> parse_bind(std::string_view body) {
  Reader rd(body);
  BindView v;
  if (!rd.cstring(v.portal) || !rd.cstring(v.statement)) return std::nullopt;
  v.rest = rd.rest();
  return v;
}

std::optional<TargetView> parse_target(std::string_view body) {
  Reader rd(body);
  std::uint8_t kind = 0;
  TargetView v;
  if (!rd.u8(kind) || (kind != 'S' && kind != 'P') || !rd.cstring(v.name) || !rd.at_end())
    return std::nullopt;
  v.kind = static_cast<char>(kind);
  return v;
}

void put_parse(std::string& out, std::string_view name, std::string_view tail) {
  MessageWriter(out, fe::kParse).cstring(name).raw(tail);
}

void put_bind(std::string& out, std::string_view portal, std::string_view statement, std::string_view rest) {
  MessageWriter(out, fe::kBind).cstring(portal).cstring(statement).raw(rest);
}

void put_describe(std::string& out, char kind, std::string_view name) {
  MessageWriter(out, fe::kDescribe).i8(static_cast<std::uint8_t>(kind)).cstring(name);
}

void put_close(std::string& out, char kind, std::string_view name) {
  MessageWriter(out, fe::kClose).i8(static_cast<std::uint8_t>(kind)).cstring(name);
}

std::string_view query_text(std::string_view message) {
  if (message.size() <= kHeaderSize || message[0] != fe::kQuery) return {};
  return parse_query(message.substr(kHeaderSize)).value_or(std::string_view());
}

std::string_view parse_text(std::string_view message) {
  if (message.size() <= kHeaderSize || message[0] != fe::kParse) return {};
  auto p = parse_parse(message.substr(kHeaderSize));
  return p ? p->tail.substr(0, p->tail.find('\0')) : std::string_view();
}

}  // namespace pgward::protocol
