#include "pool/pool.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cassert>

namespace pgward::pool {

namespace asio = boost::asio;

// ---- handles ----

Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), server_(std::move(other.server_)) {}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    reset();
    pool_ = std::exchange(other.pool_, nullptr);
    server_ = std::move(other.server_);
  }
  return *this;
}

void Lease::release(bool reusable) {
  if (!server_) return;
  Pool* pool = std::exchange(pool_, nullptr);
  pool->give_back(std::exchange(server_, nullptr), reusable);
}

ConnectSlot& ConnectSlot::operator=(ConnectSlot&& other) noexcept {
  if (this != &other) {
    abandon();
    pool_ = std::exchange(other.pool_, nullptr);
  }
  return *this;
}

Lease ConnectSlot::connected(ServerPtr server) {
  assert(pool_ && server);
  Pool* pool = std::exchange(pool_, nullptr);
  pool->slot_connected();
  return Lease(pool, std::move(server));
}

void ConnectSlot::add_idle(ServerPtr server) {
  assert(pool_ && server);
  std::exchange(pool_, nullptr)->slot_to_idle(std::move(server));
}

void ConnectSlot::failed(std::string sqlstate, std::string message) {
  assert(pool_);
  std::exchange(pool_, nullptr)->slot_failed(Pool::ConnectError{std::move(sqlstate), std::move(message)});
}

void ConnectSlot::abandon() {
  if (pool_) std::exchange(pool_, nullptr)->slot_failed(std::nullopt);
}

// ---- the pool ----

// A checkout waiting in the queue. Whatever it is served with is held here as a handle until its coroutine
// takes it, so that a waiter whose coroutine never resumes (its io_context destroyed) still gives it back.
struct Pool::Waiter {
  explicit Waiter(asio::any_io_executor exec) : timer(std::move(exec)) {}
  asio::steady_timer timer;
  bool queued = true;  // in waiters_; guarded by the pool's mutex, like the handles below
  Lease lease;         // served with an idle server
  ConnectSlot slot;    // served with a slot
};

Pool::Pool(std::string database, std::string user, config::PoolSettings settings,
           std::vector<SharedLimitPtr> limits)
    : database_(std::move(database)),
      user_(std::move(user)),
      limits_(std::move(limits)),
      settings_(settings) {
  for (const auto& l : limits_) l->join(this);
}

Pool::~Pool() {
  for (const auto& l : limits_) l->leave(this);
}

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
  unreserve_locked();
}

bool Pool::reserve_locked(const asio::any_io_executor* exec, SharedLimit** refused) {
  if (idle_.size() + active_ + connecting_ >= settings_.size) return false;
  for (std::size_t i = 0; i < limits_.size(); ++i) {
    if (limits_[i]->acquire(this, exec)) continue;
    if (refused != nullptr) *refused = limits_[i].get();
    while (i > 0) limits_[--i]->release();
    return false;
  }
  return true;
}

void Pool::unreserve_locked() {
  for (const auto& l : limits_) l->release();
}

void Pool::offer_slot_locked() {
  if (waiters_.empty() || paused_) return;
  const asio::any_io_executor exec = waiters_.front()->timer.get_executor();
  if (reserve_locked(&exec)) hand_to_waiter_locked(nullptr);
}

asio::awaitable<Pool::Checkout> Pool::checkout(asio::any_io_executor exec, Clock::time_point deadline) {
  WaiterPtr waiter;  // made only when the caller has to wait: a timer per checkout is not free
  {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    // Waiters ahead of us keep their turn: only take from the idle list when nobody queues.
    const void* home = event_loop_of(exec);
    while (!paused_ && waiters_.empty() && !idle_.empty()) {
      // The warmest server at the caller's loop, else the warmest.
      auto pick = idle_.end() - 1;
      if ((*pick)->home != home) {
        const auto stop = idle_.end() - static_cast<std::ptrdiff_t>(std::min(idle_.size(), kHomeScan));
        for (auto it = pick; it != stop;) {
          if ((*--it)->home == home) {
            pick = it;
            break;
          }
        }
      }
      ServerPtr s = std::move(*pick);
      idle_.erase(pick);
      if (!usable(*s, now)) {
        close_locked(s);
        continue;
      }
      ++active_;
      co_return Checkout{Outcome::server, Lease(this, std::move(s)), {}};
    }
    SharedLimit* refused = nullptr;
    if (!paused_ && waiters_.empty() && reserve_locked(&exec, &refused)) {
      ++connecting_;
      co_return Checkout{Outcome::connect, {}, ConnectSlot(this)};
    }
    if (refused != nullptr) refused->count_wait();
    waiter = std::make_shared<Waiter>(exec);
    waiter->timer.expires_at(deadline);
    waiters_.push_back(waiter);
  }

  // Leaves the queue however the wait ends, also when this coroutine is destroyed mid-wait (its io_context
  // shut down): nobody would take what a waiter left in the queue is handed.
  struct Dequeue {
    Pool& pool;
    const WaiterPtr& waiter;
    ~Dequeue() {
      std::lock_guard lock(pool.mu_);
      pool.dequeue_locked(waiter);
    }
  } dequeue{*this, waiter};

  co_await waiter->timer.async_wait(asio::as_tuple(asio::use_awaitable));

  std::lock_guard lock(mu_);
  if (waiter->queued) {
    dequeue_locked(waiter);
    ++wait_timeouts_;
    co_return Checkout{};
  }
  if (waiter->lease) co_return Checkout{Outcome::server, std::move(waiter->lease), {}};
  co_return Checkout{Outcome::connect, {}, std::move(waiter->slot)};
}

void Pool::dequeue_locked(const WaiterPtr& waiter) {
  if (!waiter->queued) return;
  waiter->queued = false;
  waiters_.erase(std::find(waiters_.begin(), waiters_.end(), waiter));
}

bool Pool::hand_to_waiter_locked(ServerPtr server) {
  if (waiters_.empty() || paused_) return false;
  WaiterPtr w = std::move(waiters_.front());
  waiters_.pop_front();
  w->queued = false;
  // The waiter's handles are empty: assigning to them gives nothing back, so takes no lock.
  if (server) {
    ++active_;
    w->lease = Lease(this, std::move(server));
  } else {
    ++connecting_;
    w->slot = ConnectSlot(this);
  }
  // Cancel on the waiter's own executor: timers are not safe to touch from another thread.
  asio::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
  return true;
}

void Pool::slot_connected() {
  std::lock_guard lock(mu_);
  --connecting_;
  ++active_;
  ++opened_;
  last_connect_error_.reset();
}

void Pool::slot_failed(std::optional<ConnectError> error) {
  std::lock_guard lock(mu_);
  --connecting_;
  ++connect_failures_;
  unreserve_locked();
  if (error) last_connect_error_ = std::move(error);
  // The freed slot goes to the next waiter, which tries to connect in turn.
  offer_slot_locked();
}

void Pool::give_back(ServerPtr server, bool reusable) {
  std::lock_guard lock(mu_);
  --active_;
  const auto now = Clock::now();
  const bool over_bound = idle_.size() + active_ + connecting_ >= settings_.size;  // after a shrinking reload
  if (!reusable || expired(*server, now) || over_bound) {
    close_locked(server);
    offer_slot_locked();
    return;
  }
  if (hand_to_waiter_locked(server)) return;
  if (wanted_elsewhere_locked()) {
    close_locked(server);
    return;
  }
  park_locked(std::move(server), now);
}

void Pool::park_locked(ServerPtr server, Clock::time_point now) {
  server->idle_since = now;
  const std::uint64_t period = ++server->idle_period;
  idle_.push_back(std::move(server));
  idle_.back()->watch_idle(*this, idle_.back(), period);
}

void Pool::idle_died(const ServerPtr& server, std::uint64_t period) {
  std::lock_guard lock(mu_);
  if (server->idle_period != period) return;  // a later spell: the death seen was of an earlier one
  const auto it = std::find(idle_.begin(), idle_.end(), server);
  if (it == idle_.end()) return;  // checked out meanwhile: its holder sees the loss itself
  idle_.erase(it);
  close_locked(server);
  offer_slot_locked();
}

bool Pool::wanted_elsewhere_locked() const {
  return std::any_of(limits_.begin(), limits_.end(),
                     [&](const auto& l) { return l->wanted_elsewhere(this); });
}

void Pool::slot_to_idle(ServerPtr server) {
  std::lock_guard lock(mu_);
  --connecting_;
  ++opened_;
  last_connect_error_.reset();
  if (hand_to_waiter_locked(server)) return;
  if (wanted_elsewhere_locked()) {
    close_locked(server);
    return;
  }
  park_locked(std::move(server), Clock::now());
}

std::vector<ConnectSlot> Pool::maintain(Clock::time_point now) {
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
  std::vector<ConnectSlot> slots;
  const std::size_t total = idle_.size() + active_ + connecting_;
  const std::uint32_t want = std::min(settings_.min_size, settings_.size);
  if (total >= want) return slots;
  // Allocated before any slot exists: should it throw, no slot is reserved, and no handle is destroyed (which
  // would take mu_) while it is held.
  slots.reserve(want - total);
  while (slots.size() < slots.capacity() && idle_.size() + active_ + connecting_ < want &&
         reserve_locked(nullptr)) {
    ++connecting_;
    slots.push_back(ConnectSlot(this));
  }
  return slots;
}

void Pool::close_idle() {
  std::lock_guard lock(mu_);
  for (auto& s : idle_) close_locked(s);
  idle_.clear();
}

bool Pool::close_one_idle() {
  std::lock_guard lock(mu_);
  if (idle_.empty()) return false;
  close_locked(idle_.front());  // LIFO list: the front has been idle the longest
  idle_.erase(idle_.begin());
  return true;
}

void Pool::limit_freed() {
  std::lock_guard lock(mu_);
  serve_waiters_locked(Clock::now());
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
    } else {
      const asio::any_io_executor exec = waiters_.front()->timer.get_executor();
      if (!reserve_locked(&exec)) break;
      hand_to_waiter_locked(nullptr);
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
