// The pools: one per (database, server user), made on first use with the connection limits they share.
#include <memory>
#include <utility>

#include "protocol/auth.hpp"
#include "proxy/proxy.hpp"
#include "proxy/tls.hpp"

namespace pgward::proxy {

namespace {

// The password pgward logs in to the server with: the database's own, else the user's if it is a plain
// password (a stored md5 or SCRAM verifier cannot be replayed towards a server).
std::optional<std::string> server_password(const config::Config& cfg, const config::Database& db,
                                           const std::string& server_user) {
  if (db.password) return db.password;
  const std::string* secret = cfg.find_user_secret(server_user);
  if (!secret) return std::nullopt;
  if (protocol::auth::classify_secret(*secret) != protocol::auth::SecretKind::kPlain) return std::nullopt;
  return *secret;
}

}  // namespace

ServerTarget server_target_for(const config::Config& cfg, const TlsContexts& tls, const config::Database& db,
                               const std::string& server_user) {
  ServerTarget t;
  t.tls = server_tls_target(db, tls.server(db.server_tls));
  t.host = db.host;
  t.port = db.port;
  t.dbname = db.dbname.empty() ? db.name : db.dbname;
  t.user = server_user;
  t.password = server_password(cfg, db, server_user);
  t.connect_timeout = db.pool.server_connect_timeout;
  return t;
}

PoolEntry* Proxy::pool_for(const config::Database& db, const std::string& client_user) {
  const std::string server_user = db.user ? *db.user : client_user;
  std::lock_guard lock(pools_mu_);
  const auto key = std::pair{db.name, server_user};
  if (auto it = pools_.find(key); it != pools_.end()) return it->second.get();
  auto cfg = config();
  auto contexts = tls();
  if (db.from_fallback && !fallback_databases_.contains(db.name)) {
    if (fallback_databases_.size() >= cfg->max_fallback_databases) {
      stats::add(stats_.clients_refused_max_fallback);
      return nullptr;
    }
    fallback_databases_.insert(db.name);
  }
  auto& slot = pools_[key];
  {
    auto& user_limit = user_limits_[server_user];
    if (!user_limit) {
      user_limit = std::make_shared<pool::SharedLimit>(pool::SharedLimit::Kind::user, server_user,
                                                       cfg->pool.max_user_connections);
    }
    auto& db_limit = db_limits_[db.name];
    if (!db_limit) {
      db_limit = std::make_shared<pool::SharedLimit>(pool::SharedLimit::Kind::database, db.name,
                                                     db.pool.max_db_connections);
    }
    slot = std::make_unique<PoolEntry>(db.name, server_user, db.pool,
                                       server_target_for(*cfg, *contexts, db, server_user),
                                       std::vector{user_limit, db_limit});
    std::lock_guard pause_lock(pause_mu_);
    if (is_paused_locked(db.name)) slot->pool.pause();
  }
  return slot.get();
}

std::vector<PoolEntry*> Proxy::pools() {
  std::lock_guard lock(pools_mu_);
  std::vector<PoolEntry*> out;
  out.reserve(pools_.size());
  for (auto& [k, e] : pools_) out.push_back(e.get());
  return out;
}

std::vector<pool::SharedLimitPtr> Proxy::shared_limits() {
  std::lock_guard lock(pools_mu_);
  std::vector<pool::SharedLimitPtr> out;
  out.reserve(user_limits_.size() + db_limits_.size());
  for (auto& [k, l] : user_limits_) out.push_back(l);
  for (auto& [k, l] : db_limits_) out.push_back(l);
  return out;
}

}  // namespace pgward::proxy
