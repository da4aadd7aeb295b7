#include "proxy/prepared.hpp"

#include <openssl/evp.h>

#include "protocol/sql_text.hpp"

namespace pgward::proxy {

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
  const std::string_view text = tail.substr(0, tail.find('\0'));
  def->touches_session = protocol::sql::may_touch_session(text);
  def->may_commit = protocol::sql::may_commit(text);
  return def;
}

StatementPtr make_unnamed_statement(std::string_view tail, bool plain, bool touches_session) {
  auto def = std::make_shared<StatementDef>();
  def->tail = tail;
  def->plain = plain;
  def->touches_session = touches_session;
  return def;
}

StatementPtr make_sql_statement(std::string_view client_name, std::string_view owner_key,
                                std::string_view sql) {
  auto def = std::make_shared<StatementDef>();
  // The client's own name, unless it is in pgward's part of the namespace: then a name from the owner key,
  // never equal to a Parse-made name (pgw_ + hex).
  def->server_name = client_name.starts_with(kReservedPrefix) ? server_name_for("pgw_q", owner_key)
                                                              : std::string(client_name);
  def->sql = sql;
  def->may_commit = protocol::sql::may_commit(sql);
  return def;
}

bool ServerStatements::touch(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) return false;
  lru_.splice(lru_.end(), lru_, it->second);
  return true;
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

}  // namespace pgward::proxy
