// Malformed and hostile input: each case gets an ErrorResponse (08P01) or a clean close, on its own
// connection, while a healthy client keeps running queries that must never notice.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "harness.hpp"

namespace pgward::it {
namespace {

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    healthy_ = std::thread([this] {
      Conn conn = Conn::connect(pgward_.conninfo());
      if (!conn.ok()) return record_error("connect: " + conn.error());
      while (!stop_) {
        auto r = exec_within(conn, "SELECT 'healthy'", 10s);
        if (!r) return record_error("query timed out");
        if (PQresultStatus(r->get()) != PGRES_TUPLES_OK) return record_error(PQerrorMessage(conn));
        ++queries_;
        std::this_thread::sleep_for(1ms);
      }
    });
    ASSERT_TRUE(wait_until([this] { return queries_ > 0 || failed(); }, 10s));
  }

  void TearDown() override {
    // Let the healthy client run a few more queries after the bad input before judging it.
    const int seen = queries_;
    wait_until([&] { return queries_ >= seen + 5 || failed(); }, 10s);
    stop_ = true;
    healthy_.join();
    EXPECT_TRUE(pgward_.running()) << "pgward died";
    std::lock_guard lock(mutex_);
    EXPECT_EQ(healthy_error_, "") << "the healthy client was disturbed";
    EXPECT_GE(queries_.load(), seen + 5);
  }

  void record_error(const std::string& error) {
    std::lock_guard lock(mutex_);
    healthy_error_ = error;
  }
  bool failed() {
    std::lock_guard lock(mutex_);
    return !healthy_error_.empty();
  }

  // The connection must end: an optional ErrorResponse with 08P01, then a close. Anything else fails.
  static void expect_rejected(RawClient& client) {
    for (;;) {
      auto m = client.read_message();
      if (!m) {
        EXPECT_EQ(client.last_status(), RawClient::ReadStatus::closed)
            << "pgward neither answered nor closed";
        return;
      }
      if (m->type == 'E') {
        EXPECT_EQ(parse_error(*m)['C'], "08P01") << parse_error(*m)['M'];
        EXPECT_TRUE(client.wait_closed()) << "no close after the error";
        return;
      }
      if (m->type != 'N') {  // a notice before the error would be fine; anything else means it was accepted
        ADD_FAILURE() << "unexpected message '" << m->type << "'";
        return;
      }
    }
  }

  static void login(RawClient& client) {
    const auto messages = client.login(trust_login_params());
    ASSERT_EQ(messages.back().type, 'Z');
  }

  Pgward pgward_;
  std::thread healthy_;
  std::atomic<bool> stop_{false};
  std::atomic<int> queries_{0};
  std::mutex mutex_;
  std::string healthy_error_;
};

TEST_F(BadInput, GarbageBeforeStartup) {
  RawClient client(pgward_.port(), 5s);
  client.send("GET / HTTP/1.1\r\nHost: pgward\r\n\r\n" + wire::startup(trust_login_params()));
  expect_rejected(client);
}

TEST_F(BadInput, StartupLengthThree) {
  RawClient client(pgward_.port(), 5s);
  client.send(wire::u32(3) + wire::u32(3 << 16));
  expect_rejected(client);
}

TEST_F(BadInput, StartupLengthHuge) {
  RawClient client(pgward_.port(), 5s);
  client.send(wire::u32(0x7fffffff) + wire::u32(3 << 16) + std::string(100, 'x'));
  expect_rejected(client);
}

TEST_F(BadInput, StartupPacketTooLong) {
  RawClient client(pgward_.port(), 5s);
  auto params = trust_login_params();
  params.emplace_back("application_name", std::string(20'000, 'a'));
  client.send(wire::startup(params));
  expect_rejected(client);
}

TEST_F(BadInput, UnknownMessageTypeAfterLogin) {
  RawClient client(pgward_.port(), 5s);
  login(client);
  client.send(wire::message('Z', "I"));
  expect_rejected(client);
}

TEST_F(BadInput, MessageLengthHugeAfterLogin) {
  RawClient client(pgward_.port(), 5s);
  login(client);
  client.send(std::string("Q") + wire::u32(0x7fffffff) + "SELECT 1");
  expect_rejected(client);
}

TEST_F(BadInput, DataAfterSslRequestInTheSameWrite) {
  RawClient client(pgward_.port(), 5s);
  client.send(wire::ssl_request() + wire::startup(trust_login_params()));
  // The answer to SSLRequest is one byte ('N' or 'S') unless pgward rejects at once with an ErrorResponse.
  auto first = client.read_bytes(1);
  if (!first) {
    EXPECT_EQ(client.last_status(), RawClient::ReadStatus::closed) << "pgward neither answered nor closed";
    return;
  }
  if (*first == "E") {
    auto length = client.read_bytes(4);
    ASSERT_TRUE(length);
    auto body = client.read_bytes(read_u32(*length, 0) - 4);
    ASSERT_TRUE(body);
    EXPECT_EQ(parse_error(Message{'E', *body})['C'], "08P01");
    EXPECT_TRUE(client.wait_closed());
    return;
  }
  ASSERT_TRUE(*first == "N" || *first == "S") << "unexpected answer to SSLRequest: " << *first;
  // The startup packet arrived before the answer: it must not be taken as a login (CVE-2021-23214).
  expect_rejected(client);
}

TEST_F(BadInput, SslRequestDeclinedThenStartupWorks) {
  RawClient client(pgward_.port(), 5s);
  ASSERT_TRUE(client.send(wire::ssl_request()));
  auto answer = client.read_bytes(1);
  ASSERT_TRUE(answer) << "no answer to SSLRequest";
  ASSERT_EQ(*answer, "N");
  login(client);
  EXPECT_EQ(client.query_value("SELECT 'after SSLRequest'"), "after SSLRequest");
}

TEST_F(BadInput, Protocol32IsNegotiatedDownTo30) {
  RawClient client(pgward_.port(), 5s);
  const auto messages = client.login(trust_login_params(), 3, 2);
  std::size_t negotiate = messages.size();
  std::size_t auth_ok = messages.size();
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].type == 'v' && negotiate == messages.size()) negotiate = i;
    if (messages[i].type == 'R' && read_u32(messages[i].body, 0) == 0) auth_ok = i;
  }
  ASSERT_LT(negotiate, messages.size()) << "no NegotiateProtocolVersion in " << message_signature(messages);
  EXPECT_LT(negotiate, auth_ok) << message_signature(messages);
  // "Newest minor protocol version supported": PostgreSQL itself sends the whole version word there (3.0 is
  // 0x00030000), so only the minor half is pinned down.
  const std::uint32_t version = read_u32(messages[negotiate].body, 0);
  EXPECT_EQ(version & 0xffff, 0u) << "newest minor version supported";
  EXPECT_TRUE(version >> 16 == 0 || version >> 16 == 3) << version;
  EXPECT_EQ(read_u32(messages[negotiate].body, 4), 0u) << "no unrecognised protocol options were sent";
  EXPECT_EQ(client.query_value("SELECT 'protocol 3.0'"), "protocol 3.0");
  EXPECT_EQ(message_signature(client.query("SELECT 1/0")), "E(22012) Z(I)");
}

}  // namespace
}  // namespace pgward::it
