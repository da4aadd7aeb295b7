// The queue of expected responses, replaying what pgward sends in transaction mode with prepared statements
// (tests/integration/test_prepared.cpp and test_isolation.cpp drive the same sequences through PostgreSQL).
#include <gtest/gtest.h>

#include "protocol/response_queue.hpp"

namespace pgward::protocol {
namespace {

struct TestNotes {
  int id = 0;
};

struct Hooks {
  std::vector<std::string> calls;
  std::string rewritten = "<rewritten>";
  void undo(TestNotes& n, bool failed) {
    calls.push_back((failed ? "failed " : "skipped ") + std::to_string(n.id));
  }
  void undo_mark(std::uint8_t mark, bool failed) {
    calls.push_back((failed ? "failed mark " : "skipped mark ") + std::to_string(mark));
  }
  void succeeded(TestNotes& n) { calls.push_back("ok " + std::to_string(n.id)); }
  std::string rewrite(TestNotes* n, std::string_view, bool stand_in) {
    calls.push_back(std::string(stand_in ? "stand-in " : "translate ") + (n ? std::to_string(n->id) : "-"));
    return n ? rewritten : std::string();
  }
  void txid(std::string_view row) { calls.push_back("txid " + std::string(*parse_first_column(row))); }
};

using Q = ResponseQueue<TestNotes>;
using D = Disposition;

std::string error_body() {
  std::string m;
  put_error_response(m, {"ERROR", "26000", "prepared statement \"pgw_missing\" does not exist"});
  return m.substr(kHeaderSize);
}

std::string data_row(std::string_view v) {
  std::string m;
  MessageWriter(m, be::kDataRow).i16(1).i32(static_cast<std::int32_t>(v.size())).raw(v);
  return m.substr(kHeaderSize);
}

D answer(Q& q, Hooks& h, char type, std::string_view body = {}) {
  return q.answer(type, body, h).disposition;
}

TEST(ResponseQueue, InjectedCloseAndParseAreSwallowedTheClientsBindGoesThrough) {
  // A named statement the server lacks: Close + Parse of pgw_<hash> before the client's Bind/Execute/Sync.
  Q q;
  Hooks h;
  q.push(fe::kClose, On::swallow);
  q.push(fe::kParse, On::swallow).more().id = 1;
  q.push(fe::kBind);
  q.push(fe::kExecute);
  q.push(fe::kSync);
  EXPECT_EQ(answer(q, h, be::kCloseComplete), D::drop);
  EXPECT_EQ(answer(q, h, be::kParseComplete), D::drop);
  EXPECT_EQ(answer(q, h, be::kBindComplete), D::forward);
  EXPECT_EQ(answer(q, h, be::kDataRow), D::forward);
  EXPECT_EQ(answer(q, h, be::kCommandComplete), D::forward);
  EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::forward);
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(h.calls.empty());  // nothing failed, and the Parse's notes are not a Sync's
}

TEST(ResponseQueue, NoopCloseStandsInForAParseTheServerHasAlready) {
  Q q;
  Hooks h;
  q.push(fe::kClose, On::parse_complete);
  const auto a = q.answer(be::kCloseComplete, {}, h);
  EXPECT_EQ(a.disposition, D::replace);
  EXPECT_EQ(a.replacement, std::string_view("1\0\0\0\4", 5));
}

TEST(ResponseQueue, ErrorSkipsToTheSyncAndUndoesWhatWasAssumed) {
  Q q;
  Hooks h;
  q.push(fe::kParse).more().id = 1;
  q.push(fe::kBind).more().id = 2;
  q.push(fe::kExecute);
  q.push(fe::kSync).more().id = 3;
  const std::string err = error_body();
  EXPECT_EQ(answer(q, h, be::kErrorResponse, err), D::forward);
  EXPECT_EQ(h.calls, (std::vector<std::string>{"failed 1", "skipped 2"}));
  EXPECT_EQ(q.size(), 1u);  // the Sync
  EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::forward);
  EXPECT_EQ(h.calls.back(), "ok 3");
}

TEST(ResponseQueue, MarksAreUndoneLikeNotesWithoutAllocatingAny) {
  const std::string err = error_body();
  {  // a marked request that fails, a marked one the server then skips
    Q q;
    Hooks h;
    q.push(fe::kParse).mark = 1;
    q.push(fe::kBind).mark = 6;
    q.push(fe::kExecute);
    q.push(fe::kSync);
    EXPECT_FALSE(q.begin()->notes);
    EXPECT_EQ(answer(q, h, be::kErrorResponse, err), D::forward);
    EXPECT_EQ(h.calls, (std::vector<std::string>{"failed mark 1", "skipped mark 6"}));
  }
  {  // one that succeeded is left alone; one skipped before a ReadyForQuery is undone as skipped
    Q q;
    Hooks h;
    q.push(fe::kParse).mark = 3;
    q.push(fe::kSync);
    EXPECT_EQ(answer(q, h, be::kParseComplete), D::forward);
    EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::forward);
    EXPECT_TRUE(h.calls.empty());
    q.push(fe::kParse).mark = 2;
    q.push(fe::kSync);
    EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::forward);
    EXPECT_EQ(h.calls, (std::vector<std::string>{"skipped mark 2"}));
  }
  {  // a lost server: everything queued failed, notes and marks alike
    Q q;
    Hooks h;
    q.push(fe::kParse).mark = 1;
    q.push(fe::kBind).more().id = 5;
    q.abandon(h);
    EXPECT_EQ(h.calls, (std::vector<std::string>{"failed mark 1", "failed 5"}));
  }
}

TEST(ResponseQueue, StandInErrorIsReplacedByPgwardsText) {
  // A Bind of a name the client does not have goes to the server as pgw_missing; the 26000 comes back in the
  // client's words.
  Q q;
  Hooks h;
  q.push(fe::kDescribe, On::error).more().id = 7;
  q.push(fe::kSync);
  const std::string err = error_body();
  const auto a = q.answer(be::kErrorResponse, err, h);
  EXPECT_EQ(a.disposition, D::replace);
  EXPECT_EQ(a.replacement, "<rewritten>");
  EXPECT_EQ(h.calls, (std::vector<std::string>{"failed 7", "stand-in 7"}));
}

TEST(ResponseQueue, QueryErrorIsTranslatedOnlyWhenTheHookRewritesIt) {
  const std::string err = error_body();
  {
    Q q;
    Hooks h;
    q.push(fe::kQuery).more().id = 4;  // EXECUTE pgw_... rewritten from the client's name
    EXPECT_EQ(answer(q, h, be::kErrorResponse, err), D::replace);
    EXPECT_EQ(h.calls, (std::vector<std::string>{"failed 4", "translate 4"}));
    EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::forward);
    EXPECT_EQ(h.calls.size(), 2u);  // one error per query is enough to undo: no "ok 4"
  }
  {
    Q q;
    Hooks h;
    h.rewritten.clear();  // nothing to translate
    q.push(fe::kQuery).more().id = 5;
    EXPECT_EQ(answer(q, h, be::kErrorResponse, err), D::forward);
  }
  {
    Q q;
    Hooks h;
    q.push(fe::kQuery);  // a plain query: its error is the server's
    EXPECT_EQ(answer(q, h, be::kErrorResponse, err), D::forward);
    EXPECT_TRUE(h.calls.empty());
  }
}

TEST(ResponseQueue, InjectedSyncIsSwallowedWholeEvenAfterAnError) {
  Q q;
  Hooks h;
  q.push(fe::kClose, On::swallow);
  q.push(fe::kSync, On::swallow).more().id = 9;
  q.push(fe::kQuery);
  EXPECT_EQ(answer(q, h, be::kCloseComplete), D::drop);
  EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::drop);
  EXPECT_EQ(answer(q, h, be::kCommandComplete), D::forward);
  EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::forward);
  EXPECT_TRUE(q.empty());

  // An injected PREPARE that fails: its error is dropped too, its notes undone.
  q.push(fe::kQuery, On::swallow).more().id = 10;
  EXPECT_EQ(answer(q, h, be::kErrorResponse, error_body()), D::drop);
  EXPECT_EQ(h.calls.back(), "failed 10");
  EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::drop);
}

TEST(ResponseQueue, TransactionIdQueryHandsItsRowOverAndIsDropped) {
  Q q;
  Hooks h;
  q.push(fe::kQuery, On::txid);
  q.push(fe::kQuery);  // the COMMIT
  const std::string row = data_row("742");
  EXPECT_EQ(answer(q, h, be::kRowDescription), D::drop);
  EXPECT_EQ(answer(q, h, be::kDataRow, row), D::drop);
  EXPECT_EQ(answer(q, h, be::kCommandComplete), D::drop);
  EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::drop);
  EXPECT_EQ(h.calls, (std::vector<std::string>{"txid 742"}));
  EXPECT_EQ(answer(q, h, be::kCommandComplete), D::forward);
  EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::forward);
}

TEST(ResponseQueue, AsynchronousMessagesBelongToNoRequest) {
  Q q;
  Hooks h;
  q.push(fe::kClose, On::swallow);
  EXPECT_EQ(answer(q, h, be::kNoticeResponse), D::forward);
  EXPECT_EQ(answer(q, h, be::kParameterStatus), D::forward);
  EXPECT_EQ(answer(q, h, be::kNotificationResponse), D::forward);
  EXPECT_EQ(q.size(), 1u);
}

TEST(ResponseQueue, ReadyForQueryAfterAnErrorUndoesTheSkippedAndKeepsTheSyncsNotes) {
  // The server skipped a Close pgward sent after an error it already reported: a statement evicted by it is
  // still on the server.
  Q q;
  Hooks h;
  q.push(fe::kClose, On::swallow).more().id = 1;
  q.push(fe::kSync).more().id = 2;
  EXPECT_EQ(answer(q, h, be::kReadyForQuery), D::forward);
  EXPECT_EQ(h.calls, (std::vector<std::string>{"skipped 1", "ok 2"}));
}

TEST(ResponseQueue, CommittedReplyMadeFromTheQueue) {
  Q q;
  q.push(fe::kClose, On::swallow);
  q.push(fe::kParse);
  q.push(fe::kBind);
  q.push(fe::kDescribe);
  q.push(fe::kExecute);
  q.push(fe::kSync);
  std::string expected;
  put_parse_complete(expected);
  put_bind_complete(expected);
  put_no_data(expected);
  put_command_complete(expected, "COMMIT");
  EXPECT_EQ(q.committed_reply(), expected);

  q.push(fe::kQuery);  // a second statement that could commit: pgward cannot answer for both
  EXPECT_EQ(q.committed_reply(), std::nullopt);
  Q t;
  t.push(fe::kQuery, On::txid);
  t.push(fe::kQuery);
  EXPECT_EQ(t.committed_reply(), std::nullopt);  // the transaction id never came back
}

TEST(ResponseQueue, AbandonUndoesEveryRequestAsFailed) {
  Q q;
  Hooks h;
  q.push(fe::kParse).more().id = 1;
  q.push(fe::kBind);
  q.push(fe::kSync).more().id = 2;
  q.abandon(h);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(h.calls, (std::vector<std::string>{"failed 1", "failed 2"}));
}

}  // namespace
}  // namespace pgward::protocol
