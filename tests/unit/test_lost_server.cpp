// The plan for a server lost under its client, case by case (the integration counterparts are in
// tests/integration/test_faults.cpp).
#include <gtest/gtest.h>

#include "protocol/lost_server.hpp"

namespace pgward::protocol {
namespace {

using A = LostPlan::Action;
using L = LostPlan::Lost;

TEST(LostServer, HalfAMessageOutClosesWithoutAWord) {
  const auto p = plan_lost_server({.mid_message = true, .client_waits = 1, .in_doubt = true});
  EXPECT_EQ(p.action, A::close);
}

TEST(LostServer, SessionModeIsFatal) {
  const auto p = plan_lost_server({.session_mode = true, .client_waits = 1});
  EXPECT_EQ(p.action, A::fatal);
  EXPECT_FALSE(p.in_doubt);
}

TEST(LostServer, SeveralBatchesInFlightAreFatalAndUnknownWhenInDoubt) {
  const auto p = plan_lost_server({.client_waits = 2, .in_doubt = true});
  EXPECT_EQ(p.action, A::fatal);
  EXPECT_TRUE(p.in_doubt);
  EXPECT_EQ(plan_lost_server({.client_waits = 1, .batch_open = true}).action, A::fatal);
}

TEST(LostServer, IdleInABlockIsRememberedUnreported) {
  const auto p = plan_lost_server({.tx_status = kTxInBlock});
  EXPECT_EQ(p.action, A::remember);
  EXPECT_EQ(p.lost, L::unreported);
  EXPECT_EQ(plan_lost_server({.tx_status = kTxFailed}).lost, L::aborted);
  EXPECT_EQ(plan_lost_server({}).lost, L::none);
}

TEST(LostServer, StatementInABlockIsRolledBackAndTheClientStaysFailed) {
  const auto p = plan_lost_server({.client_waits = 1, .tx_status = kTxInBlock});
  EXPECT_EQ(p.action, A::answer);
  EXPECT_FALSE(p.in_doubt);
  EXPECT_EQ(p.end_status, kTxFailed);
  EXPECT_EQ(p.lost, L::aborted);
  EXPECT_TRUE(p.ready_now);
}

TEST(LostServer, CommitInFlightIsInDoubtAndEndsIdle) {
  const auto p = plan_lost_server({.client_waits = 1, .in_doubt = true, .tx_status = kTxInBlock});
  EXPECT_EQ(p.action, A::answer);
  EXPECT_TRUE(p.in_doubt);
  EXPECT_EQ(p.end_status, kTxIdle);
  EXPECT_EQ(p.lost, L::none);
}

TEST(LostServer, OpenBatchWithoutSyncGetsItsReadyForQueryAtTheSync) {
  const auto p = plan_lost_server({.batch_open = true, .tx_status = kTxInBlock});
  EXPECT_EQ(p.action, A::answer);
  EXPECT_FALSE(p.ready_now);
  EXPECT_EQ(p.end_status, kTxFailed);
}

}  // namespace
}  // namespace pgward::protocol
