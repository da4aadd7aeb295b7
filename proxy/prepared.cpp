#include "proxy/prepared.hpp"

#include <openssl/evp.h>

#include "protocol/codec.hpp"

namespace pgward::proxy {

namespace pr = protocol;

namespace {
// prefix + 32 hex digits (128 bits) of SHA-256(key): collisions are out of reach.
std::string server_name_for(std::string_view prefix, std::string_view key) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(key.data(), key.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name(prefix);
  for (int i = 0; i < 16; ++i) {
    name += kHex[digest[i] >> 4];
    name += kHex[digest[i] & 15];
  }
  return name;
}
}  // namespace

StatementPtr make_statement(std::string_view tail) {
  auto def = std::make_shared<StatementDef>();
  def->server_name = server_name_for("pgw_", tail);
  def->tail = tail;
  return def;
}

StatementPtr make_unnamed_statement(std::string_view tail) {
  auto def = std::make_shared<StatementDef>();
  def->tail = tail;
  return def;
}

StatementPtr make_sql_statement(std::string_view owner_key, std::string_view sql) {
  auto def = std::make_shared<StatementDef>();
  def->server_name = server_name_for("pgw_q", owner_key);  // never equal to a Parse-made name (pgw_ + hex)
  def->sql = sql;
  return def;
}

void ServerStatements::touch(const std::string& name) {
  auto it = index_.find(name);
  if (it != index_.end()) lru_.splice(lru_.end(), lru_, it->second);
}

void ServerStatements::add(const std::string& name) {
  if (index_.count(name)) {
    touch(name);
    return;
  }
  lru_.push_back(name);
  index_.emplace(name, std::prev(lru_.end()));
}

void ServerStatements::erase(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) return;
  lru_.erase(it->second);
  index_.erase(it);
}

std::optional<std::string> ServerStatements::evict_over(std::size_t max) {
  if (index_.size() <= max) return std::nullopt;
  std::string victim = std::move(lru_.front());
  lru_.pop_front();
  index_.erase(victim);
  return victim;
}

void ServerStatements::clear() {
  lru_.clear();
  index_.clear();
}

std::optional<ParseView> parse_parse(std::string_view body) {
  pr::Reader rd(body);
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
  pr::Reader rd(body);
  BindView v;
  if (!rd.cstring(v.portal) || !rd.cstring(v.statement)) return std::nullopt;
  v.rest = rd.rest();
  return v;
}

std::optional<TargetView> parse_target(std::string_view body) {
  pr::Reader rd(body);
  std::uint8_t kind = 0;
  TargetView v;
  if (!rd.u8(kind) || (kind != 'S' && kind != 'P') || !rd.cstring(v.name) || !rd.at_end())
    return std::nullopt;
  v.kind = static_cast<char>(kind);
  return v;
}

void put_parse(std::string& out, std::string_view name, std::string_view tail) {
  pr::MessageWriter(out, pr::fe::kParse).cstring(name).raw(tail);
}

void put_bind(std::string& out, std::string_view portal, std::string_view statement, std::string_view rest) {
  pr::MessageWriter(out, pr::fe::kBind).cstring(portal).cstring(statement).raw(rest);
}

void put_describe(std::string& out, char kind, std::string_view name) {
  pr::MessageWriter(out, pr::fe::kDescribe).i8(static_cast<std::uint8_t>(kind)).cstring(name);
}

void put_close(std::string& out, char kind, std::string_view name) {
  pr::MessageWriter(out, pr::fe::kClose).i8(static_cast<std::uint8_t>(kind)).cstring(name);
}

std::string rewrite_error(std::string_view body, std::string_view sqlstate, std::string_view message) {
  std::string out;
  auto fields = pr::parse_fields(body);
  if (!fields) {
    pr::put_error_response(out, {"ERROR", sqlstate, message});
    return out;
  }
  pr::MessageWriter w(out, pr::be::kErrorResponse);
  for (const auto& f : *fields) {
    w.i8(static_cast<std::uint8_t>(f.code));
    w.cstring(f.code == 'C' ? sqlstate : f.code == 'M' ? message : f.value);
  }
  w.i8(0);
  w.finish();
  return out;
}

namespace {
// 1-based character position in the text sent => the same place in the client's text.
std::string client_position(std::string_view server_pos, const std::vector<NameSwap>& swaps) {
  std::size_t p = 0;
  for (char c : server_pos) {
    if (c < '0' || c > '9' || p > (1u << 30)) return std::string(server_pos);
    p = p * 10 + static_cast<std::size_t>(c - '0');
  }
  if (p == 0) return std::string(server_pos);
  std::size_t at = p - 1;
  std::ptrdiff_t shift = 0;
  for (const NameSwap& s : swaps) {  // in text order
    if (at >= s.server_pos + s.server_chars) {
      shift += static_cast<std::ptrdiff_t>(s.server_chars) - static_cast<std::ptrdiff_t>(s.client_chars);
    } else if (at >= s.server_pos) {
      at = s.server_pos;  // inside a name pgward put there: point at the client's name
      break;
    } else {
      break;
    }
  }
  return std::to_string(static_cast<std::ptrdiff_t>(at) - shift + 1);
}

std::string client_names(std::string_view text, const std::vector<NameSwap>& swaps) {
  std::string out(text);
  for (const NameSwap& s : swaps) {
    for (std::size_t at = out.find(s.server); at != std::string::npos;
         at = out.find(s.server, at + s.client.size()))
      out.replace(at, s.server.size(), s.client);
  }
  return out;
}
}  // namespace

std::string translate_error(std::string_view body, const std::vector<NameSwap>& swaps) {
  auto fields = pr::parse_fields(body);
  if (!fields) return std::string();
  std::string out;
  pr::MessageWriter w(out, pr::be::kErrorResponse);
  for (const auto& f : *fields) {
    w.i8(static_cast<std::uint8_t>(f.code));
    if (f.code == 'M' || f.code == 'D') {
      w.cstring(client_names(f.value, swaps));
    } else if (f.code == 'P') {
      w.cstring(client_position(f.value, swaps));
    } else {
      w.cstring(f.value);
    }
  }
  w.i8(0);
  w.finish();
  return out;
}

}  // namespace pgward::proxy
