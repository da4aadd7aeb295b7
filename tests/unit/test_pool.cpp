// pool/pool.hpp: the bounded server pool and its handles (Lease, ConnectSlot), with a fake server in place of
// a PostgreSQL connection. Checkouts run as coroutines on an io_context the test drives by hand, so every
// interleaving is the one written here; only the deadline tests wait, a few milliseconds.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "pool/pool.hpp"

namespace pgward::pool {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// A server that is only a flag: closed or not. `open`, when given, counts the fakes not yet closed.
class FakeServer final : public Server {
 public:
  explicit FakeServer(std::atomic<int>* open = nullptr) : open_(open) {
    if (open_) ++*open_;
  }
  void close() override {
    if (!closed.exchange(true) && open_) --*open_;
  }
  bool healthy() override { return !closed; }
  std::atomic<bool> closed{false};

 private:
  std::atomic<int>* open_;
};

config::PoolSettings sized(std::uint32_t size) {
  config::PoolSettings s;
  s.size = size;
  return s;
}

std::uint32_t total(const PoolStats& s) { return s.idle + s.active + s.connecting; }

// One checkout started on the test's io_context; `checkout` is valid once `done`.
struct Pending {
  int tag = 0;
  bool done = false;
  Pool::Checkout checkout;
};

class PoolTest : public ::testing::Test {
 protected:
  // The pool under test. It outlives the io_context, whose destructor ends checkouts still waiting.
  Pool& make_pool(config::PoolSettings settings) {
    pool_ = std::make_unique<Pool>("db", "u", settings);
    return *pool_;
  }
  // Further pools, e.g. sharing a limit; they outlive the io_context too.
  Pool& add_pool(const std::string& db, config::PoolSettings settings, std::vector<SharedLimitPtr> limits) {
    more_pools_.push_back(std::make_unique<Pool>(db, "u", settings, std::move(limits)));
    return *more_pools_.back();
  }

  // Starts a checkout that gives up after `wait`; it runs as far as it can at the next settle().
  // Its finishing is recorded in finished() when `record`.
  std::shared_ptr<Pending> start(Pool& pool, Clock::duration wait = 30s, bool record = true) {
    auto p = std::make_shared<Pending>();
    p->tag = next_tag_++;
    asio::co_spawn(io_, run_checkout(pool, Clock::now() + wait, p, record ? &finished_ : nullptr),
                   asio::detached);
    return p;
  }

  // Runs everything that is ready, without waiting for any timer.
  void settle() {
    io_.restart();
    io_.poll();
  }

  // Runs, waiting for timers, until `p` has finished (or 5 s have passed: a deadline that never fires fails
  // the test instead of hanging it).
  void run_until(const Pending& p) {
    io_.restart();
    const auto give_up = Clock::now() + 5s;
    while (!p.done && Clock::now() < give_up) io_.run_one_until(give_up);
  }

  // A checkout that must finish at once.
  Pool::Checkout checkout_now(Pool& pool) {
    auto p = start(pool, 30s, false);
    settle();
    EXPECT_TRUE(p->done);
    return std::move(p->checkout);
  }

  // A server opened through a fresh slot, leased to the test.
  Lease open(Pool& pool, std::shared_ptr<FakeServer>* server = nullptr) {
    auto c = checkout_now(pool);
    if (c.outcome != Pool::Outcome::connect) {
      ADD_FAILURE() << "no free slot to open a server with";
      return Lease();
    }
    auto s = std::make_shared<FakeServer>();
    if (server) *server = s;
    return c.slot.connected(s);
  }

  asio::any_io_executor io_executor() { return io_.get_executor(); }

  // Tags of the checkouts start()ed in the order they finished (checkout_now() and open() leave them out).
  const std::vector<int>& finished() const { return finished_; }

 private:
  static asio::awaitable<void> run_checkout(Pool& pool, Clock::time_point deadline,
                                            std::shared_ptr<Pending> p, std::vector<int>* finished) {
    p->checkout = co_await pool.checkout(co_await asio::this_coro::executor, deadline);
    p->done = true;
    if (finished) finished->push_back(p->tag);
  }

  std::unique_ptr<Pool> pool_;
  std::vector<std::unique_ptr<Pool>> more_pools_;
  asio::io_context io_;
  int next_tag_ = 0;
  std::vector<int> finished_;
};

// With workers > 1 a checkout prefers an idle server whose socket runs on the caller's own event loop (its
// reads then complete on the caller's thread), else it takes the warmest, as with one worker.
TEST_F(PoolTest, CheckoutPrefersAServerAtTheCallersEventLoop) {
  Pool& pool = make_pool(sized(3));
  asio::io_context other;
  std::shared_ptr<FakeServer> here, away, unknown;
  Lease a = open(pool, &here);
  Lease b = open(pool, &away);
  Lease c = open(pool, &unknown);
  here->home = event_loop_of(io_executor());
  away->home = event_loop_of(other.get_executor());
  // Idle, warmest last: here, away, unknown.
  a.release(true);
  b.release(true);
  c.release(true);
  auto first = checkout_now(pool);
  ASSERT_EQ(first.outcome, Pool::Outcome::server);
  EXPECT_EQ(first.lease.server(), here);
  // Nothing left at this loop: the warmest of the others.
  auto second = checkout_now(pool);
  ASSERT_EQ(second.outcome, Pool::Outcome::server);
  EXPECT_EQ(second.lease.server(), unknown);
  auto third = checkout_now(pool);
  ASSERT_EQ(third.outcome, Pool::Outcome::server);
  EXPECT_EQ(third.lease.server(), away);
}

TEST_F(PoolTest, WaitersAreServedInArrivalOrder) {
  Pool& pool = make_pool(sized(1));
  std::shared_ptr<FakeServer> server;
  Lease lease = open(pool, &server);

  auto first = start(pool);
  auto second = start(pool);
  auto third = start(pool);
  settle();
  EXPECT_EQ(pool.stats().waiting, 3u);
  EXPECT_TRUE(finished().empty());

  // Each server given back goes to the longest waiter, never to an idle list others could jump.
  lease.release(true);
  settle();
  ASSERT_TRUE(first->done);
  EXPECT_FALSE(second->done);
  EXPECT_EQ(first->checkout.outcome, Pool::Outcome::server);
  EXPECT_EQ(first->checkout.lease.server(), server);
  EXPECT_EQ(pool.stats().idle, 0u);

  first->checkout.lease.release(true);
  settle();
  ASSERT_TRUE(second->done);
  EXPECT_FALSE(third->done);
  EXPECT_EQ(second->checkout.lease.server(), server);

  second->checkout.lease.release(true);
  settle();
  ASSERT_TRUE(third->done);
  EXPECT_EQ(finished(), (std::vector<int>{first->tag, second->tag, third->tag}));
  const auto s = pool.stats();
  EXPECT_EQ(s.waiting, 0u);
  EXPECT_EQ(s.active, 1u);
}

TEST_F(PoolTest, WaiterTimesOutAtItsDeadline) {
  Pool& pool = make_pool(sized(1));
  Lease lease = open(pool);

  const auto started = Clock::now();
  auto waiter = start(pool, 5ms);
  run_until(*waiter);
  ASSERT_TRUE(waiter->done);
  EXPECT_EQ(waiter->checkout.outcome, Pool::Outcome::timeout);
  EXPECT_FALSE(waiter->checkout.lease);
  EXPECT_FALSE(waiter->checkout.slot);
  EXPECT_GE(Clock::now() - started, 5ms);
  const auto s = pool.stats();
  EXPECT_EQ(s.wait_timeouts, 1u);
  EXPECT_EQ(s.waiting, 0u);
  EXPECT_EQ(s.active, 1u);
}

TEST_F(PoolTest, TimedOutWaiterDoesNotTakeTheNextServer) {
  Pool& pool = make_pool(sized(1));
  std::shared_ptr<FakeServer> server;
  Lease lease = open(pool, &server);

  auto impatient = start(pool, 5ms);
  auto patient = start(pool, 30s);
  run_until(*impatient);
  ASSERT_TRUE(impatient->done);
  EXPECT_EQ(impatient->checkout.outcome, Pool::Outcome::timeout);
  EXPECT_FALSE(patient->done);

  // The server goes to the waiter still there, not to the one that left.
  lease.release(true);
  settle();
  ASSERT_TRUE(patient->done);
  EXPECT_EQ(patient->checkout.outcome, Pool::Outcome::server);
  EXPECT_EQ(patient->checkout.lease.server(), server);

  // With nobody waiting, a server given back is idle, and the next checkout takes it at once.
  patient->checkout.lease.release(true);
  EXPECT_EQ(pool.stats().idle, 1u);
  auto next = checkout_now(pool);
  EXPECT_EQ(next.outcome, Pool::Outcome::server);
  EXPECT_EQ(next.lease.server(), server);
}

TEST_F(PoolTest, PauseQueuesEvenWithIdleServersAndResumeServesInOrder) {
  Pool& pool = make_pool(sized(3));
  Lease busy = open(pool);
  {
    Lease a = open(pool);
    Lease b = open(pool);
    a.release(true);
    b.release(true);
  }
  ASSERT_EQ(pool.stats().idle, 2u);

  pool.pause();
  EXPECT_TRUE(pool.paused());
  std::vector<std::shared_ptr<Pending>> waiters;
  for (int i = 0; i < 4; ++i) waiters.push_back(start(pool));
  settle();
  EXPECT_TRUE(finished().empty());
  EXPECT_EQ(pool.stats().waiting, 4u);
  EXPECT_EQ(pool.stats().idle, 2u);

  // A server in use comes back to the idle list as usual while paused.
  busy.release(true);
  settle();
  EXPECT_TRUE(finished().empty());
  EXPECT_EQ(pool.stats().idle, 3u);

  // Three servers for four waiters: the first three in arrival order get them, the last one waits on.
  pool.resume();
  settle();
  EXPECT_EQ(finished(), (std::vector<int>{waiters[0]->tag, waiters[1]->tag, waiters[2]->tag}));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(waiters[i]->checkout.outcome, Pool::Outcome::server) << i;
  EXPECT_FALSE(waiters[3]->done);
  const auto s = pool.stats();
  EXPECT_EQ(s.idle, 0u);
  EXPECT_EQ(s.active, 3u);
  EXPECT_EQ(s.waiting, 1u);
}

TEST_F(PoolTest, ShrinkingReloadClosesExtrasAsTheyComeBack) {
  Pool& pool = make_pool(sized(4));
  std::vector<std::shared_ptr<FakeServer>> servers(4);
  std::vector<Lease> leases;
  for (auto& s : servers) leases.push_back(open(pool, &s));
  auto waiter = start(pool);
  settle();

  pool.update_settings(sized(2));
  // Over the new bound, servers given back close, however reusable, and free no slot for the waiter...
  leases[0].release(true);
  leases[1].release(true);
  settle();
  EXPECT_TRUE(servers[0]->closed);
  EXPECT_TRUE(servers[1]->closed);
  EXPECT_FALSE(waiter->done);
  EXPECT_EQ(total(pool.stats()), 2u);
  // ...and once within it, they serve as usual.
  leases[2].release(true);
  settle();
  EXPECT_FALSE(servers[2]->closed);
  ASSERT_TRUE(waiter->done);
  EXPECT_EQ(waiter->checkout.lease.server(), servers[2]);
  leases[3].release(true);
  waiter->checkout.lease.release(true);
  const auto s = pool.stats();
  EXPECT_EQ(s.idle, 2u);
  EXPECT_EQ(s.active, 0u);
  EXPECT_EQ(s.servers_closed, 2u);
  EXPECT_LE(total(s), 2u);
}

TEST_F(PoolTest, ShrinkingReloadClosesIdleExtrasAtUpkeep) {
  Pool& pool = make_pool(sized(4));
  std::vector<Lease> leases;
  for (int i = 0; i < 4; ++i) leases.push_back(open(pool));
  for (auto& l : leases) l.release(true);
  ASSERT_EQ(pool.stats().idle, 4u);

  pool.update_settings(sized(2));
  EXPECT_TRUE(pool.maintain(Clock::now()).empty());
  EXPECT_EQ(pool.stats().idle, 2u);
  EXPECT_EQ(pool.stats().servers_closed, 2u);
  // The bound holds afterwards: two servers out, the third checkout waits.
  auto a = checkout_now(pool);
  auto b = checkout_now(pool);
  EXPECT_EQ(a.outcome, Pool::Outcome::server);
  EXPECT_EQ(b.outcome, Pool::Outcome::server);
  auto c = start(pool);
  settle();
  EXPECT_FALSE(c->done);
  EXPECT_EQ(total(pool.stats()), 2u);
}

TEST_F(PoolTest, FailedConnectHandsTheSlotToTheNextWaiter) {
  Pool& pool = make_pool(sized(1));
  auto first = checkout_now(pool);
  ASSERT_EQ(first.outcome, Pool::Outcome::connect);
  auto waiter = start(pool);
  settle();
  EXPECT_FALSE(waiter->done);

  first.slot.failed("08006", "connection refused");
  EXPECT_FALSE(first.slot);
  settle();
  ASSERT_TRUE(waiter->done);
  EXPECT_EQ(waiter->checkout.outcome, Pool::Outcome::connect);
  auto s = pool.stats();
  EXPECT_EQ(s.connect_failures, 1u);
  EXPECT_EQ(s.connecting, 1u);
  auto error = pool.last_connect_error();
  ASSERT_TRUE(error);
  EXPECT_EQ(error->sqlstate, "08006");
  EXPECT_EQ(error->message, "connection refused");

  // A success clears the error.
  Lease lease = waiter->checkout.slot.connected(std::make_shared<FakeServer>());
  EXPECT_FALSE(pool.last_connect_error());
  s = pool.stats();
  EXPECT_EQ(s.connecting, 0u);
  EXPECT_EQ(s.active, 1u);
  EXPECT_EQ(s.servers_opened, 1u);
}

TEST_F(PoolTest, AbandonedConnectSlotHandsTheSlotToTheNextWaiter) {
  Pool& pool = make_pool(sized(1));
  std::shared_ptr<Pending> waiter;
  {
    auto first = checkout_now(pool);
    ASSERT_EQ(first.outcome, Pool::Outcome::connect);
    waiter = start(pool);
    settle();
    EXPECT_FALSE(waiter->done);
  }
  // Dropped without a verdict, the slot counts as a failed connect and passes to the waiter; the last error
  // stays as it was (none), since nothing is known of one.
  settle();
  ASSERT_TRUE(waiter->done);
  EXPECT_EQ(waiter->checkout.outcome, Pool::Outcome::connect);
  EXPECT_EQ(pool.stats().connect_failures, 1u);
  EXPECT_EQ(pool.stats().connecting, 1u);
  EXPECT_FALSE(pool.last_connect_error());
}

TEST_F(PoolTest, DroppedLeaseClosesTheServerAndFreesTheSlot) {
  Pool& pool = make_pool(sized(1));
  std::shared_ptr<FakeServer> server;
  {
    Lease lease = open(pool, &server);
    Lease moved = std::move(lease);  // one owner: the moved-from lease gives nothing back
    EXPECT_FALSE(lease);
    EXPECT_TRUE(moved);
    EXPECT_FALSE(server->closed);
  }
  EXPECT_TRUE(server->closed);
  auto s = pool.stats();
  EXPECT_EQ(s.active, 0u);
  EXPECT_EQ(s.idle, 0u);
  EXPECT_EQ(s.servers_closed, 1u);

  // The freed slot goes to a waiter as a slot to connect, never with the dropped server.
  Lease again = open(pool, &server);
  auto waiter = start(pool);
  settle();
  again.reset();
  EXPECT_TRUE(server->closed);
  settle();
  ASSERT_TRUE(waiter->done);
  EXPECT_EQ(waiter->checkout.outcome, Pool::Outcome::connect);
  EXPECT_FALSE(waiter->checkout.lease);
}

TEST_F(PoolTest, MaintainReservesWarmUpSlots) {
  auto settings = sized(3);
  settings.min_size = 2;
  Pool& pool = make_pool(settings);
  auto slots = pool.maintain(Clock::now());
  ASSERT_EQ(slots.size(), 2u);
  EXPECT_EQ(pool.stats().connecting, 2u);
  EXPECT_TRUE(pool.maintain(Clock::now()).empty());  // already on their way

  slots[0].add_idle(std::make_shared<FakeServer>());
  slots.pop_back();  // a warm-up that never reported: its slot is free again
  auto s = pool.stats();
  EXPECT_EQ(s.idle, 1u);
  EXPECT_EQ(s.connecting, 0u);
  EXPECT_EQ(s.servers_opened, 1u);
  EXPECT_EQ(s.connect_failures, 1u);
  EXPECT_EQ(pool.maintain(Clock::now()).size(), 1u);  // and the next upkeep tries again
}

// max_user_connections: two pools of one user, each with room of its own, share a limit of 2.
TEST_F(PoolTest, SharedLimitHoldsAcrossPoolsAndFreesForTheOther) {
  auto limit = std::make_shared<SharedLimit>(SharedLimit::Kind::user, "u", 2);
  Pool& a = add_pool("a", sized(5), {limit});
  Pool& b = add_pool("b", sized(5), {limit});
  Lease a1 = open(a);
  Lease b1 = open(b);
  auto waiting = start(b);
  settle();
  EXPECT_FALSE(waiting->done);
  EXPECT_EQ(limit->stats().used, 2u);
  EXPECT_EQ(limit->stats().waits, 1u);
  EXPECT_EQ(b.stats().waiting, 1u);
  a1.release(false);  // a server of the other pool closes: its unit goes to b's waiter
  settle();
  ASSERT_TRUE(waiting->done);
  EXPECT_EQ(waiting->checkout.outcome, Pool::Outcome::connect);
  EXPECT_EQ(limit->stats().used, 2u);
  waiting->checkout.slot.failed("08006", "refused");
  EXPECT_EQ(limit->stats().used, 1u);
}

// A server parked idle in one pool does not starve another pool of the same user: it is closed for it.
TEST_F(PoolTest, SharedLimitClosesAnIdleServerOfAnotherPool) {
  auto limit = std::make_shared<SharedLimit>(SharedLimit::Kind::user, "u", 1);
  Pool& a = add_pool("a", sized(5), {limit});
  Pool& b = add_pool("b", sized(5), {limit});
  std::shared_ptr<FakeServer> parked;
  open(a, &parked).release(true);
  EXPECT_EQ(a.stats().idle, 1u);
  auto waiting = start(b);
  settle();
  ASSERT_TRUE(waiting->done);
  EXPECT_EQ(waiting->checkout.outcome, Pool::Outcome::connect);
  EXPECT_TRUE(parked->closed);
  EXPECT_EQ(a.stats().idle, 0u);
  EXPECT_EQ(limit->stats().evictions, 1u);
  EXPECT_EQ(limit->stats().used, 1u);
}

// max_db_connections beside max_user_connections: a pool counts against both; when the second refuses, the
// unit of the first is given back.
TEST_F(PoolTest, SharedLimitsRefusedTimeOutAndGiveBackPartialUnits) {
  auto user = std::make_shared<SharedLimit>(SharedLimit::Kind::user, "u", 0);
  auto db = std::make_shared<SharedLimit>(SharedLimit::Kind::database, "a", 1);
  Pool& a = add_pool("a", sized(5), {user, db});
  Lease held = open(a);
  auto waiting = start(a, 20ms);
  run_until(*waiting);
  EXPECT_EQ(waiting->checkout.outcome, Pool::Outcome::timeout);
  EXPECT_EQ(a.stats().wait_timeouts, 1u);
  EXPECT_EQ(db->stats().waits, 1u);
  EXPECT_EQ(user->stats().used, 1u);
  EXPECT_EQ(db->stats().used, 1u);
  // A raised limit (a reload) lets the next checkout connect.
  db->set_max(2);
  EXPECT_EQ(checkout_now(a).outcome, Pool::Outcome::connect);
}

// Two worker threads, each running an io_context full of sessions that take servers, open them (some
// connects fail or are abandoned), use them and give them back every way there is, while the main thread
// keeps warm-up slots coming: idle + active + connecting never exceeds `size`, nor do the servers open.
TEST(PoolThreads, BoundHoldsWithTwoWorkers) {
  constexpr std::uint32_t kSize = 3;
  constexpr int kSessions = 40;
  constexpr int kRounds = 40;
  auto settings = sized(kSize);
  settings.min_size = 2;
  Pool pool("db", "u", settings);

  std::atomic<int> open{0};  // fake servers not closed
  std::atomic<int> held{0};  // leases and slots the sessions hold
  std::atomic<int> most_held{0};
  std::atomic<int> over_bound{0};  // times a check saw the bound broken
  std::atomic<int> timeouts{0};
  std::atomic<int> sessions_left{2 * kSessions};
  auto check = [&] {
    const auto s = pool.stats();
    if (total(s) > kSize || open.load() > static_cast<int>(kSize) || held.load() > static_cast<int>(kSize))
      ++over_bound;
  };
  auto take = [&] {
    const int now = ++held;
    int seen = most_held.load();
    while (now > seen && !most_held.compare_exchange_weak(seen, now)) {
    }
    check();
  };

  auto session = [&](int id) -> asio::awaitable<void> {
    auto exec = co_await asio::this_coro::executor;
    for (int round = 0; round < kRounds; ++round) {
      auto c = co_await pool.checkout(exec, Clock::now() + 5s);
      if (c.outcome == Pool::Outcome::timeout) {  // a slot was lost: no use waiting out every round
        ++timeouts;
        break;
      }
      take();
      Lease lease;
      const int kind = (id * 7 + round) % 10;
      if (c.outcome == Pool::Outcome::connect) {
        co_await asio::post(exec, asio::use_awaitable);  // the connect takes a while
        if (kind == 0) {
          --held;  // counted out before the slot is, so that `held` never runs ahead of the pool
          c.slot.failed("08006", "refused");
          check();
          continue;
        }
        if (kind == 1) {
          --held;
          c.slot = ConnectSlot();  // abandoned
          check();
          continue;
        }
        lease = c.slot.connected(std::make_shared<FakeServer>(&open));
      } else {
        lease = std::move(c.lease);
      }
      check();
      co_await asio::post(exec, asio::use_awaitable);  // the transaction
      --held;
      if (kind < 5) {
        lease.release(true);
      } else if (kind < 8) {
        lease.release(false);
      } else {
        lease = Lease();  // dropped: closed
      }
      check();
    }
    --sessions_left;
  };

  asio::io_context a(1), b(1);
  for (int i = 0; i < kSessions; ++i) {
    asio::co_spawn(a, session(2 * i), asio::detached);
    asio::co_spawn(b, session(2 * i + 1), asio::detached);
  }
  std::thread ta([&] { a.run(); });
  std::thread tb([&] { b.run(); });
  while (sessions_left.load() > 0) {
    for (auto& slot : pool.maintain(Clock::now())) {
      if (sessions_left.load() % 2 == 0) {
        slot.add_idle(std::make_shared<FakeServer>(&open));
      } else {
        slot.failed("08006", "refused");
      }
      check();
    }
    std::this_thread::yield();
  }
  ta.join();
  tb.join();

  EXPECT_EQ(over_bound.load(), 0);
  EXPECT_EQ(timeouts.load(), 0);
  EXPECT_EQ(most_held.load(), static_cast<int>(kSize));  // the sessions did contend for every slot
  const auto s = pool.stats();
  EXPECT_EQ(s.active, 0u);
  EXPECT_EQ(s.connecting, 0u);
  EXPECT_EQ(s.waiting, 0u);
  EXPECT_EQ(open.load(), static_cast<int>(s.idle));
  pool.close_idle();
  EXPECT_EQ(open.load(), 0);
}

}  // namespace
}  // namespace pgward::pool

namespace pgward::pool {
namespace {

// max_user_connections under two workers: sessions on both threads take servers from two pools of one user
// (each pool allowing 3) under a shared limit of 3; servers are kept idle, closed or evicted every which way.
// The servers open never exceed the limit, and no session waits out its deadline.
TEST(PoolThreads, SharedLimitHoldsWithTwoWorkers) {
  constexpr std::uint32_t kLimit = 3;
  auto limit = std::make_shared<SharedLimit>(SharedLimit::Kind::user, "u", kLimit);
  Pool a("a", "u", sized(kLimit), {limit});
  Pool b("b", "u", sized(kLimit), {limit});
  std::atomic<int> open{0};
  std::atomic<int> over{0};
  std::atomic<int> timeouts{0};
  std::atomic<int> left{40};
  auto session = [&](int id) -> asio::awaitable<void> {
    auto exec = co_await asio::this_coro::executor;
    for (int round = 0; round < 40; ++round) {
      Pool& pool = (id + round) % 3 == 0 ? a : b;
      auto c = co_await pool.checkout(exec, Clock::now() + 5s);
      if (c.outcome == Pool::Outcome::timeout) {
        ++timeouts;
        break;
      }
      Lease lease = c.outcome == Pool::Outcome::server
                        ? std::move(c.lease)
                        : c.slot.connected(std::make_shared<FakeServer>(&open));
      if (open.load() > static_cast<int>(kLimit) || limit->stats().used > kLimit) ++over;
      co_await asio::post(exec, asio::use_awaitable);
      lease.release((id + round) % 4 != 0);
    }
    --left;
  };
  asio::io_context ca(1), cb(1);
  for (int i = 0; i < 20; ++i) {
    asio::co_spawn(ca, session(2 * i), asio::detached);
    asio::co_spawn(cb, session(2 * i + 1), asio::detached);
  }
  std::thread ta([&] { ca.run(); });
  std::thread tb([&] { cb.run(); });
  ta.join();
  tb.join();
  EXPECT_EQ(left.load(), 0);
  EXPECT_EQ(over.load(), 0);
  EXPECT_EQ(timeouts.load(), 0);
  EXPECT_GT(limit->stats().waits, 0u);  // the limit did bite
  EXPECT_EQ(limit->stats().used, a.stats().idle + b.stats().idle);
  a.close_idle();
  b.close_idle();
  EXPECT_EQ(open.load(), 0);
  EXPECT_EQ(limit->stats().used, 0u);
}

}  // namespace
}  // namespace pgward::pool
