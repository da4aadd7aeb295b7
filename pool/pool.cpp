#include "pool/pool.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace pgward::pool {

namespace asio = boost::asio;

struct Pool::Waiter {
  explicit Waiter(asio::any_io_executor exec) : timer(std::move(exec)) {}
  asio::steady_timer timer;
  bool served = false;  // guarded by the pool's mutex
  ServerPtr server;     // set when served with a server; empty when served with a slot
};

Pool::Pool(std::string database, std::string user, config::PoolSettings settings)
    : database_(std::move(database)), user_(std::move(user)), settings_(settings) {}

bool Pool::expired(const Server& s, Clock::time_point now) const {
  return now - s.created_at >= settings_.server_lifetime;
}

bool Pool::usable(Server& s, Clock::time_point now) const {
  if (expired(s, now)) return false;
  return now - s.idle_since < settings_.server_check_delay || s.healthy();
}

void Pool::close_locked(const ServerPtr& s) {
  s->close();
  ++closed_;
}

asio::awaitable<Pool::Checkout> Pool::checkout(asio::any_io_executor exec, Clock::time_point deadline) {
  WaiterPtr waiter;  // made only when the caller has to wait: a timer per checkout is not free
  {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    // Waiters ahead of us keep their turn: only take from the idle list when nobody queues.
    while (!paused_ && waiters_.empty() && !idle_.empty()) {
      ServerPtr s = std::move(idle_.back());
      idle_.pop_back();
      if (!usable(*s, now)) {
        close_locked(s);
        continue;
      }
      ++active_;
      co_return Checkout{Outcome::server, std::move(s)};
    }
    if (!paused_ && waiters_.empty() && idle_.size() + active_ + connecting_ < settings_.size) {
      ++connecting_;
      co_return Checkout{Outcome::connect, nullptr};
    }
    waiter = std::make_shared<Waiter>(exec);
    waiters_.push_back(waiter);
    waiter->timer.expires_at(deadline);
  }

  co_await waiter->timer.async_wait(asio::as_tuple(asio::use_awaitable));

  std::lock_guard lock(mu_);
  if (!waiter->served) {
    waiters_.erase(std::remove(waiters_.begin(), waiters_.end(), waiter), waiters_.end());
    ++wait_timeouts_;
    co_return Checkout{Outcome::timeout, nullptr};
  }
  if (waiter->server) co_return Checkout{Outcome::server, std::move(waiter->server)};
  co_return Checkout{Outcome::connect, nullptr};
}

bool Pool::hand_to_waiter_locked(ServerPtr server) {
  if (waiters_.empty() || paused_) return false;
  WaiterPtr w = std::move(waiters_.front());
  waiters_.pop_front();
  w->served = true;
  if (server) {
    ++active_;
    w->server = std::move(server);
  } else {
    ++connecting_;
  }
  // Cancel on the waiter's own executor: timers are not safe to touch from another thread.
  asio::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
  return true;
}

void Pool::connected(const ServerPtr&) {
  std::lock_guard lock(mu_);
  --connecting_;
  ++active_;
  ++opened_;
  last_connect_error_.reset();
}

void Pool::connect_failed(std::string sqlstate, std::string message) {
  std::lock_guard lock(mu_);
  --connecting_;
  ++connect_failures_;
  last_connect_error_ = ConnectError{std::move(sqlstate), std::move(message)};
  // The freed slot goes to the next waiter, which tries to connect in turn.
  if (idle_.size() + active_ + connecting_ < settings_.size) hand_to_waiter_locked(nullptr);
}

void Pool::release(ServerPtr server, bool reusable) {
  std::lock_guard lock(mu_);
  --active_;
  const auto now = Clock::now();
  const bool over_bound = idle_.size() + active_ + connecting_ >= settings_.size;  // after a shrinking reload
  if (!reusable || expired(*server, now) || over_bound) {
    close_locked(server);
    if (idle_.size() + active_ + connecting_ < settings_.size) hand_to_waiter_locked(nullptr);
    return;
  }
  if (hand_to_waiter_locked(server)) return;
  server->idle_since = now;
  idle_.push_back(std::move(server));
}

void Pool::add_idle(ServerPtr server) {
  std::lock_guard lock(mu_);
  --connecting_;
  ++opened_;
  last_connect_error_.reset();
  if (hand_to_waiter_locked(server)) return;
  server->idle_since = Clock::now();
  idle_.push_back(std::move(server));
}

std::uint32_t Pool::maintain(Clock::time_point now) {
  std::lock_guard lock(mu_);
  // idle_ is LIFO, so the front holds the servers idle the longest.
  for (auto it = idle_.begin(); it != idle_.end();) {
    const std::size_t total = idle_.size() + active_ + connecting_;
    const bool idle_too_long =
        now - (*it)->idle_since >= settings_.server_idle_timeout && total > settings_.min_size;
    if (idle_too_long || expired(**it, now) || total > settings_.size || !(*it)->healthy()) {
      close_locked(*it);
      it = idle_.erase(it);
    } else {
      ++it;
    }
  }
  const std::size_t total = idle_.size() + active_ + connecting_;
  const std::uint32_t want = std::min(settings_.min_size, settings_.size);
  if (total >= want) return 0;
  const auto n = static_cast<std::uint32_t>(want - total);
  connecting_ += n;
  return n;
}

void Pool::close_idle() {
  std::lock_guard lock(mu_);
  for (auto& s : idle_) close_locked(s);
  idle_.clear();
}

void Pool::update_settings(const config::PoolSettings& settings) {
  std::lock_guard lock(mu_);
  settings_ = settings;
  // A larger bound may let waiters connect right away.
  serve_waiters_locked(Clock::now());
}

void Pool::serve_waiters_locked(Clock::time_point now) {
  while (!waiters_.empty() && !paused_) {
    if (!idle_.empty()) {
      ServerPtr s = std::move(idle_.back());
      idle_.pop_back();
      if (!usable(*s, now)) {
        close_locked(s);
        continue;
      }
      hand_to_waiter_locked(std::move(s));
    } else if (idle_.size() + active_ + connecting_ < settings_.size) {
      hand_to_waiter_locked(nullptr);
    } else {
      break;
    }
  }
}

void Pool::pause() {
  std::lock_guard lock(mu_);
  paused_ = true;
}

void Pool::resume() {
  std::lock_guard lock(mu_);
  paused_ = false;
  serve_waiters_locked(Clock::now());
}

bool Pool::paused() const {
  std::lock_guard lock(mu_);
  return paused_;
}

std::vector<ServerPtr> Pool::idle_servers() const {
  std::lock_guard lock(mu_);
  return idle_;
}

config::PoolSettings Pool::settings() const {
  std::lock_guard lock(mu_);
  return settings_;
}

PoolStats Pool::stats() const {
  std::lock_guard lock(mu_);
  PoolStats s;
  s.idle = static_cast<std::uint32_t>(idle_.size());
  s.active = active_;
  s.connecting = connecting_;
  s.waiting = static_cast<std::uint32_t>(waiters_.size());
  s.size = settings_.size;
  s.wait_timeouts = wait_timeouts_;
  s.servers_opened = opened_;
  s.servers_closed = closed_;
  s.connect_failures = connect_failures_;
  s.min_size = settings_.min_size;
  s.paused = paused_;
  return s;
}

std::optional<Pool::ConnectError> Pool::last_connect_error() const {
  std::lock_guard lock(mu_);
  return last_connect_error_;
}

bool Pool::has_server_params() const {
  std::lock_guard lock(mu_);
  return have_params_;
}

Pool::Params Pool::server_params() const {
  std::lock_guard lock(mu_);
  return server_params_;
}

void Pool::set_server_params(const Params& params) {
  std::lock_guard lock(mu_);
  if (have_params_) return;
  server_params_ = params;
  have_params_ = true;
}

}  // namespace pgward::pool
