#include "proxy/auth_lookup.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "protocol/codec.hpp"
#include "protocol/frontend.hpp"
#include "proxy/server_conn.hpp"

namespace pgward::proxy {

namespace pr = protocol;

namespace {

// Parse/Bind/Execute/Sync of the query with the user name as its one text parameter ("Extended Query").
std::string lookup_messages(const std::string& query, const std::string& user) {
  std::string out;
  std::string tail = query;
  tail.push_back('\0');
  tail.append(2, '\0');  // no parameter types: PostgreSQL infers text for $1
  pr::put_parse(out, "", tail);
  std::string rest;
  {
    // int16 0 formats (all text), int16 1 parameter, int32 length + bytes, int16 0 result formats (text)
    std::string scratch;
    pr::MessageWriter w(scratch, 0);
    w.i16(0).i16(1).i32(static_cast<std::int32_t>(user.size())).raw(user).i16(0);
    w.finish();
    rest = scratch.substr(4);  // an untyped writer starts with the length word: drop it
  }
  pr::put_bind(out, "", "", rest);
  pr::MessageWriter(out, pr::fe::kExecute).cstring("").i32(0);
  pr::put_sync(out);
  return out;
}

// The first two columns of a DataRow; nullopt for a NULL or a malformed row.
std::optional<std::pair<std::string, std::string>> two_columns(std::string_view body) {
  auto u16 = [&](std::size_t at) {
    return (std::uint16_t(std::uint8_t(body[at])) << 8) | std::uint8_t(body[at + 1]);
  };
  if (body.size() < 2 || u16(0) < 2) return std::nullopt;
  std::size_t pos = 2;
  std::string cols[2];
  for (auto& col : cols) {
    if (body.size() - pos < 4) return std::nullopt;
    const std::int32_t len = static_cast<std::int32_t>(
        (std::uint32_t(std::uint8_t(body[pos])) << 24) | (std::uint32_t(std::uint8_t(body[pos + 1])) << 16) |
        (std::uint32_t(std::uint8_t(body[pos + 2])) << 8) | std::uint32_t(std::uint8_t(body[pos + 3])));
    pos += 4;
    if (len < 0 || body.size() - pos < static_cast<std::size_t>(len)) return std::nullopt;
    col.assign(body.substr(pos, static_cast<std::size_t>(len)));
    pos += static_cast<std::size_t>(len);
  }
  return std::pair{std::move(cols[0]), std::move(cols[1])};
}

// Runs the lookup on a logged-in connection: the secret of the first row, "" when no row has one.
asio::awaitable<std::optional<std::string>> run_lookup(ServerConn& conn, const std::string& query,
                                                       const std::string& user, std::string& error) {
  if (!co_await conn.write(lookup_messages(query, user))) {
    error = "the lookup connection was lost";
    co_return std::nullopt;
  }
  std::string secret;
  bool have_row = false;
  for (;;) {
    auto msg = co_await conn.read_message();
    if (!msg) {
      error = "the lookup connection was lost";
      co_return std::nullopt;
    }
    switch (msg->type) {
      case pr::be::kDataRow:
        if (!have_row) {
          have_row = true;
          if (auto row = two_columns(msg->body); row && row->first == user) secret = std::move(row->second);
        }
        break;
      case pr::be::kErrorResponse:
        if (error.empty()) error = error_from_fields(msg->body, "the auth query failed").message;
        break;
      case pr::be::kReadyForQuery:
        if (!error.empty()) co_return std::nullopt;
        co_return secret;
      default: break;  // ParseComplete, BindComplete, CommandComplete, notices, ParameterStatus
    }
  }
}

}  // namespace

asio::awaitable<AuthLookup::Result> AuthLookup::find(asio::any_io_executor exec, const config::Config& cfg,
                                                     const config::Database& db, const std::string& user) {
  using namespace asio::experimental::awaitable_operators;
  const auto key = std::pair{db.name, user};
  {
    std::lock_guard lock(mu_);
    if (auto it = cache_.find(key); it != cache_.end()) {
      if (std::chrono::steady_clock::now() < it->second.expires) {
        ++stats_.cached;
        co_return Result{Status::found, it->second.secret, {}};
      }
      cache_.erase(it);
    }
  }
  const std::string* query = cfg.auth_query_for(db);
  ServerTarget target;
  target.host = db.host;
  target.port = db.port;
  target.dbname = db.dbname.empty() ? db.name : db.dbname;
  target.user = cfg.auth_query_user;
  if (const std::string* pw = cfg.find_user_secret(cfg.auth_query_user);
      pw && pr::auth::classify_secret(*pw) == pr::auth::SecretKind::kPlain) {
    target.password = *pw;
  }
  target.connect_timeout = db.pool.server_connect_timeout;

  std::string error;
  std::shared_ptr<ServerConn> conn = take_idle(db.name);
  auto work = [&]() -> asio::awaitable<std::optional<std::string>> {
    if (conn) {  // kept from an earlier lookup: PostgreSQL may have closed it since, so one fresh try follows
      if (auto secret = co_await run_lookup(*conn, *query, user, error)) co_return secret;
      conn->close();
      error.clear();
    }
    conn = std::make_shared<ServerConn>(exec);
    if (auto err = co_await conn->login(target)) {
      error = err->message;
      co_return std::nullopt;
    }
    co_return co_await run_lookup(*conn, *query, user, error);
  };
  asio::steady_timer deadline(exec, db.pool.server_connect_timeout);
  auto outcome = co_await (work() || deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
  std::optional<std::string> secret;
  if (outcome.index() == 0) secret = std::get<0>(std::move(outcome));
  if (outcome.index() == 1)
    error = "no answer within " + std::to_string(db.pool.server_connect_timeout.count()) + " ms";

  std::lock_guard lock(mu_);
  if (!secret) {
    if (conn) conn->close();
    ++stats_.failed;
    spdlog::warn("auth_query for user {} in database {} failed: {}", user, db.name, error);
    co_return Result{Status::failed, nullptr, error};
  }
  if (!idle_.contains(db.name)) {
    idle_.emplace(db.name, std::move(conn));
  } else {
    conn->close();
  }
  if (secret->empty()) {
    ++stats_.not_found;
    co_return Result{Status::not_found, nullptr, {}};
  }
  auto found = std::make_shared<LookedUpSecret>();
  found->secret = std::move(*secret);
  if (pr::auth::classify_secret(found->secret) == pr::auth::SecretKind::kScram)
    found->scram = pr::auth::parse_scram_verifier(found->secret);
  ++stats_.found;
  cache_[key] = Entry{found, std::chrono::steady_clock::now() + cfg.auth_query_cache};
  co_return Result{Status::found, std::move(found), {}};
}

std::shared_ptr<ServerConn> AuthLookup::take_idle(const std::string& database) {
  std::lock_guard lock(mu_);
  auto it = idle_.find(database);
  if (it == idle_.end()) return nullptr;
  auto conn = std::move(it->second);
  idle_.erase(it);
  return conn;
}

void AuthLookup::clear() {
  std::lock_guard lock(mu_);
  cache_.clear();
  for (auto& [db, conn] : idle_) conn->close();
  idle_.clear();
}

AuthLookup::Stats AuthLookup::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace pgward::proxy
