// A bound on server connections shared by several pools: max_user_connections (every pool of one server
// user, across databases) and max_db_connections (every pool of one database, across users), PgBouncer's
// names. A pool takes one unit for each server it counts (idle, active or connecting) and gives it back when
// the server closes or its connect fails, so the bound holds exactly whatever the number of workers.
//
// A pool whose checkout finds the shared bound reached has its caller wait in its own FIFO queue, as for its
// own bound. The limit notes the pool, and when a unit comes back it wakes every noted pool by posting to
// the executor of the waiting caller. It also asks another member pool to close one idle server, so that
// servers parked idle for one database cannot starve another database of the same user. Nothing here runs
// another pool's code inline: every cross-pool call is posted, so no thread ever holds two pools' locks.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pgward::pool {

class Pool;

class SharedLimit : public std::enable_shared_from_this<SharedLimit> {
 public:
  enum class Kind { user, database };
  // `name`: the user or the database it bounds.
  SharedLimit(Kind kind, std::string name, std::uint32_t max)
      : kind_(kind), name_(std::move(name)), max_(max) {}
  SharedLimit(const SharedLimit&) = delete;
  SharedLimit& operator=(const SharedLimit&) = delete;

  Kind kind() const { return kind_; }
  const std::string& name() const { return name_; }
  // 0 = no limit. A lower bound than the servers open now closes none; new ones wait until enough left.
  void set_max(std::uint32_t max);

  // One unit for a new server of `pool`. When the bound is reached: false, and `pool` is woken on `exec`
  // (Pool::limit_freed) once a unit comes back, and one idle server of another member pool is closed if
  // there is one. Without an executor nothing is noted (a warm-up that simply does not happen).
  bool acquire(Pool* pool, const boost::asio::any_io_executor* exec);
  void release();
  // Whether a pool other than `pool` waits for a unit: a server `pool` would park idle is then closed
  // instead, so that its unit goes where it is wanted.
  bool wanted_elsewhere(const Pool* pool) const;

  // Member pools, asked to close an idle server when another member is blocked.
  void join(Pool* pool);
  void leave(Pool* pool);

  struct Stats {
    std::uint32_t used = 0;
    std::uint32_t max = 0;
    std::uint64_t waits = 0;      // checkouts that queued because this bound was reached
    std::uint64_t evictions = 0;  // idle servers closed to make room for a blocked pool
  };
  Stats stats() const;
  void count_wait();

 private:
  struct Blocked {
    Pool* pool;
    boost::asio::any_io_executor exec;
  };
  void evict_for(Pool* blocked);

  const Kind kind_;
  const std::string name_;
  mutable std::mutex mu_;
  std::uint32_t max_;
  std::uint32_t used_ = 0;
  std::uint64_t waits_ = 0;
  std::uint64_t evictions_ = 0;
  std::vector<Pool*> members_;
  std::vector<Blocked> blocked_;
  bool evicting_ = false;  // an eviction is posted and has not run yet
};

using SharedLimitPtr = std::shared_ptr<SharedLimit>;

}  // namespace pgward::pool
