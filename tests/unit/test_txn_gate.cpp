// The transaction gate, fed the message sequences the integration tests drive through a real server.
#include <gtest/gtest.h>

#include "protocol/txn_gate.hpp"

namespace pgward::protocol {
namespace {

using V = TxnGate::Verdict;

// Sends each client message type in `types` through the gate.
void send(TxnGate& g, std::string_view types) {
  for (char t : types) g.client_message(t);
}

TEST(TxnGate, SimpleQueryOutsideABlockReleasesAtItsReadyForQuery) {
  TxnGate g;
  EXPECT_TRUE(g.client_message(fe::kQuery));
  EXPECT_FALSE(g.quiet());
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::release);
  EXPECT_TRUE(g.quiet());
  EXPECT_TRUE(g.answered());
}

TEST(TxnGate, TransactionBlockKeepsTheServerUntilCommit) {
  TxnGate g;
  g.client_message(fe::kQuery);  // BEGIN
  EXPECT_EQ(g.ready_for_query(kTxInBlock, false), V::keep);
  EXPECT_TRUE(g.answered());  // the client waits for nothing, but the block holds the server
  EXPECT_FALSE(g.quiet());
  g.client_message(fe::kQuery);  // INSERT
  EXPECT_EQ(g.ready_for_query(kTxInBlock, false), V::keep);
  g.client_message(fe::kQuery);  // an error
  EXPECT_EQ(g.ready_for_query(kTxFailed, false), V::keep);
  g.client_message(fe::kQuery);  // ROLLBACK
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::release);
}

TEST(TxnGate, ExtendedBatchIsOpenUntilItsSync) {
  TxnGate g;
  EXPECT_FALSE(g.client_message(fe::kParse));
  send(g, "BDE");
  EXPECT_TRUE(g.batch_open());
  EXPECT_FALSE(g.fresh());
  EXPECT_TRUE(g.client_message(fe::kSync));
  EXPECT_FALSE(g.batch_open());
  EXPECT_EQ(g.pending(), 1);
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::release);
}

TEST(TxnGate, FlushedPortalWithoutSyncHoldsTheServer) {
  // A driver that Flushes and reads rows before its Sync (cursor-style fetching): a ReadyForQuery of an
  // earlier batch must not release the server under the open one.
  TxnGate g;
  send(g, "PBES");
  send(g, "PBEH");  // a second batch, flushed, no Sync yet
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::keep);
  EXPECT_TRUE(g.batch_open());
  EXPECT_FALSE(g.answered());
  g.client_message(fe::kSync);
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::release);
}

TEST(TxnGate, PipelinedSyncsReleaseOnlyAtTheLastReadyForQuery) {
  TxnGate g;
  send(g, "PBES");
  send(g, "BES");
  send(g, "BES");
  EXPECT_EQ(g.pending(), 3);
  EXPECT_EQ(g.client_waits(), 3);
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::keep);
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::keep);
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::release);
}

TEST(TxnGate, InjectedPreambleIsOwedButNotTheClients) {
  // pgward's own Close + Sync ahead of the client's Query (evicting a statement): two ReadyForQuery come
  // back, the first swallowed.
  TxnGate g;
  g.injected();
  g.client_message(fe::kQuery);
  EXPECT_EQ(g.pending(), 2);
  EXPECT_EQ(g.client_waits(), 1);
  g.injected_ready();
  EXPECT_FALSE(g.quiet());
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::release);
  g.injected_ready();  // never below zero
  EXPECT_EQ(g.pending(), 0);
}

TEST(TxnGate, CopyMessagesBelongToTheirQuery) {
  TxnGate g;
  g.client_message(fe::kQuery);  // COPY t FROM STDIN
  send(g, "ddddc");
  EXPECT_EQ(g.pending(), 1);
  EXPECT_FALSE(g.batch_open());
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::release);
}

TEST(TxnGate, StatementModeRefusesATransactionBlock) {
  TxnGate g;
  g.client_message(fe::kQuery);  // BEGIN
  EXPECT_EQ(g.ready_for_query(kTxInBlock, true), V::violation);
}

TEST(TxnGate, StatementModePipelinedBehindABlockIsNotAViolationYet) {
  // BEGIN and a statement sent together: the first ReadyForQuery still has one owed behind it.
  TxnGate g;
  g.client_message(fe::kQuery);
  g.client_message(fe::kQuery);
  EXPECT_EQ(g.ready_for_query(kTxInBlock, true), V::keep);
  EXPECT_EQ(g.ready_for_query(kTxInBlock, true), V::violation);
}

TEST(TxnGate, ALostTransactionReplayStartsFailed) {
  TxnGate g;
  g.reset(kTxFailed);
  EXPECT_TRUE(g.fresh());
  EXPECT_FALSE(g.quiet());
  g.client_message(fe::kQuery);  // ROLLBACK
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::release);
}

TEST(TxnGate, FunctionCallIsAwaitedLikeAQuery) {
  TxnGate g;
  EXPECT_TRUE(g.client_message(fe::kFunctionCall));
  EXPECT_EQ(g.client_waits(), 1);
  EXPECT_EQ(g.ready_for_query(kTxIdle, false), V::release);
}

}  // namespace
}  // namespace pgward::protocol
