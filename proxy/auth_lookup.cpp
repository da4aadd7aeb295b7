#include "proxy/auth_lookup.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
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

// The lease goes back on every path out of find, an exception included.
struct AuthLookup::GiveBack {
  AuthLookup& self;
  const std::string& database;
  Lease& lease;
  ~GiveBack() {
    if (!lease.held && !lease.waiter) return;
    std::lock_guard lock(self.mu_);
    self.finish_locked(database, lease, false);
  }
};

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
  Lease lease;
  GiveBack give_back{*this, db.name, lease};
  auto work = [&]() -> asio::awaitable<std::optional<std::string>> {
    co_await acquire(exec, db.name, static_cast<std::size_t>(cfg.auth_query_pool_size), lease);
    if (!lease.held) co_return std::nullopt;  // the deadline passed while waiting
    // kept from an earlier lookup: PostgreSQL may have closed it since; one fresh try follows
    if (lease.conn) {
      if (auto secret = co_await run_lookup(*lease.conn, *query, user, error)) co_return secret;
      lease.conn->close();
      error.clear();
    }
    lease.conn = std::make_shared<ServerConn>(exec);
    if (auto err = co_await lease.conn->login(target)) {
      error = err->message;
      co_return std::nullopt;
    }
    co_return co_await run_lookup(*lease.conn, *query, user, error);
  };
  // The deadline covers the wait for a connection too: a lookup queued behind slow ones is refused in time.
  asio::steady_timer deadline(exec, db.pool.server_connect_timeout);
  auto outcome = co_await (work() || deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
  std::optional<std::string> secret;
  if (outcome.index() == 0) secret = std::get<0>(std::move(outcome));
  if (outcome.index() == 1)
    error = "no answer within " + std::to_string(db.pool.server_connect_timeout.count()) + " ms";

  std::lock_guard lock(mu_);
  finish_locked(db.name, lease, secret.has_value());
  if (!secret) {
    ++stats_.failed;
    spdlog::warn("auth_query for user {} in database {} failed: {}", user, db.name, error);
    co_return Result{Status::failed, nullptr, error};
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

// A lookup queued for a connection. Its timer is only touched on its executor (one thread per worker): a
// release posts the wake-up there.
struct AuthLookup::Waiter {
  explicit Waiter(asio::any_io_executor e) : exec(e), wake(e, asio::steady_timer::time_point::max()) {}
  asio::any_io_executor exec;
  asio::steady_timer wake;
  bool granted = false;              // under mu_: the lease is this waiter's
  std::shared_ptr<ServerConn> conn;  // handed over idle, or null: room to open one
};

asio::awaitable<void> AuthLookup::acquire(asio::any_io_executor exec, const std::string& database,
                                          std::size_t max, Lease& lease) {
  {
    std::lock_guard lock(mu_);
    Slots& s = slots_[database];
    s.max = max;
    if (!s.idle.empty()) {
      lease.conn = std::move(s.idle.back());
      s.idle.pop_back();
      lease.held = true;
      co_return;
    }
    if (s.open < s.max) {
      ++s.open;
      lease.held = true;
      co_return;
    }
    lease.waiter = std::make_shared<Waiter>(exec);
    s.waiters.push_back(lease.waiter);
    ++stats_.waits;
  }
  for (;;) {
    co_await lease.waiter->wake.async_wait(asio::as_tuple(asio::use_awaitable));
    const bool cancelled =
        (co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none;
    std::lock_guard lock(mu_);
    if (lease.waiter->granted || cancelled) {
      settle_locked(database, lease);
      co_return;
    }
  }
}

// Ends a lease's wait: the connection it was granted, or its place in the queue given up.
void AuthLookup::settle_locked(const std::string& database, Lease& lease) {
  if (!lease.waiter) return;
  if (lease.waiter->granted) {
    lease.held = true;
    lease.conn = std::move(lease.waiter->conn);
  } else if (auto it = slots_.find(database); it != slots_.end()) {
    std::erase(it->second.waiters, lease.waiter);
  }
  lease.waiter.reset();
}

void AuthLookup::finish_locked(const std::string& database, Lease& lease, bool keep) {
  settle_locked(database, lease);
  if (!keep && lease.conn) lease.conn->close();
  if (lease.held) release_locked(database, keep ? std::move(lease.conn) : nullptr);
  lease.held = false;
  lease.conn.reset();
}

void AuthLookup::release_locked(const std::string& database, std::shared_ptr<ServerConn> conn) {
  auto it = slots_.find(database);
  if (it == slots_.end()) return;
  Slots& s = it->second;
  auto grant = [&](std::shared_ptr<ServerConn> c) {
    auto w = std::move(s.waiters.front());
    s.waiters.pop_front();
    w->granted = true;
    w->conn = std::move(c);
    asio::post(w->exec, [w] { w->wake.cancel(); });
  };
  if (conn && s.open > s.max) {  // query_pool_size was lowered by a reload
    conn->close();
    conn.reset();
  }
  if (!conn) {
    --s.open;
  } else if (!s.waiters.empty()) {
    grant(std::move(conn));
  } else {
    s.idle.push_back(std::move(conn));
  }
  while (!s.waiters.empty() && s.open < s.max) {
    ++s.open;
    grant(nullptr);
  }
  if (s.open == 0 && s.waiters.empty()) slots_.erase(it);
}

void AuthLookup::clear() {
  std::lock_guard lock(mu_);
  cache_.clear();
  for (auto it = slots_.begin(); it != slots_.end();) {
    Slots& s = it->second;
    for (auto& conn : s.idle) conn->close();
    s.open -= s.idle.size();
    s.idle.clear();
    it = (s.open == 0 && s.waiters.empty()) ? slots_.erase(it) : std::next(it);
  }
}

AuthLookup::Stats AuthLookup::stats() const {
  std::lock_guard lock(mu_);
  Stats out = stats_;
  for (const auto& [database, s] : slots_) out.connections[database] = s.open;
  return out;
}

}  // namespace pgward::proxy
