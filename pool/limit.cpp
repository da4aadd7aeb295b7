#include "pool/limit.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>

#include "pool/pool.hpp"

namespace pgward::pool {

void SharedLimit::set_max(std::uint32_t max) {
  std::vector<Blocked> wake;
  {
    std::lock_guard lock(mu_);
    max_ = max;
    if (max_ == 0 || used_ < max_) wake.swap(blocked_);
  }
  for (auto& b : wake) boost::asio::post(b.exec, [p = b.pool] { p->limit_freed(); });
}

bool SharedLimit::acquire(Pool* pool, const boost::asio::any_io_executor* exec) {
  std::lock_guard lock(mu_);
  if (max_ == 0 || used_ < max_) {
    ++used_;
    return true;
  }
  if (exec == nullptr) return false;
  if (std::none_of(blocked_.begin(), blocked_.end(), [&](const Blocked& b) { return b.pool == pool; })) {
    blocked_.push_back({pool, *exec});
  }
  // Servers idle in another member pool hold units nobody uses: close one (on the blocked caller's executor,
  // outside every pool lock). One eviction at a time; the next blocked checkout asks again.
  if (!evicting_ && members_.size() > 1) {
    evicting_ = true;
    boost::asio::post(*exec, [self = shared_from_this(), pool] { self->evict_for(pool); });
  }
  return false;
}

void SharedLimit::release() {
  std::vector<Blocked> wake;
  {
    std::lock_guard lock(mu_);
    if (used_ > 0) --used_;
    wake.swap(blocked_);
  }
  // Every noted pool tries again; those that lose the race note themselves anew.
  for (auto& b : wake) boost::asio::post(b.exec, [p = b.pool] { p->limit_freed(); });
}

bool SharedLimit::wanted_elsewhere(const Pool* pool) const {
  std::lock_guard lock(mu_);
  return std::any_of(blocked_.begin(), blocked_.end(), [&](const Blocked& b) { return b.pool != pool; });
}

void SharedLimit::evict_for(Pool* blocked) {
  std::vector<Pool*> others;
  {
    std::lock_guard lock(mu_);
    evicting_ = false;
    if (blocked_.empty()) return;  // a unit came back meanwhile
    for (Pool* p : members_)
      if (p != blocked) others.push_back(p);
  }
  for (Pool* p : others) {
    if (p->close_one_idle()) {  // its release() wakes the blocked pools
      std::lock_guard lock(mu_);
      ++evictions_;
      return;
    }
  }
}

void SharedLimit::join(Pool* pool) {
  std::lock_guard lock(mu_);
  members_.push_back(pool);
}

void SharedLimit::leave(Pool* pool) {
  std::lock_guard lock(mu_);
  std::erase(members_, pool);
  std::erase_if(blocked_, [&](const Blocked& b) { return b.pool == pool; });
}

void SharedLimit::count_wait() {
  std::lock_guard lock(mu_);
  ++waits_;
}

SharedLimit::Stats SharedLimit::stats() const {
  std::lock_guard lock(mu_);
  return {used_, max_, waits_, evictions_};
}

}  // namespace pgward::pool
