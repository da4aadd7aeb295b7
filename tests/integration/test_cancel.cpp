// Query cancellation through pgward: the key pgward hands out cancels that client's query and nothing else.
#include <cstdint>
#include <random>
#include <string>

#include "harness.hpp"

namespace pgward::it {
namespace {

// Waits until a query containing marker is running on the server.
bool wait_until_running(PGconn* direct, const std::string& marker) {
  const std::string sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%" +
                          marker + "%' AND pid <> pg_backend_pid()";
  return wait_until([&] { return query_value(direct, sql) == "1"; }, 10s);
}

TEST(Cancel, BackendKeyIsPgwardsOwn) {
  Pgward pgward;
  Conn a = pgward.connect();
  Conn b = pgward.connect();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(std::to_string(PQbackendPID(a)), query_value(a, "SELECT pg_backend_pid()"))
      << "the client was given the server's pid";
  EXPECT_NE(PQbackendPID(a), PQbackendPID(b));
}

TEST(Cancel, CancelStopsTheClientsQuery) {
  Pgward pgward;
  Conn victim = pgward.connect();
  Conn bystander = pgward.connect();
  Conn monitor = connect_direct();
  ASSERT_TRUE(victim.ok() && bystander.ok() && monitor.ok());

  const std::string victim_marker = unique_name("cancel_me");
  const std::string bystander_marker = unique_name("leave_me");
  ASSERT_EQ(PQsendQuery(bystander, ("SELECT pg_sleep(1.5) /* " + bystander_marker + " */").c_str()), 1);
  ASSERT_EQ(PQsendQuery(victim, ("SELECT pg_sleep(10) /* " + victim_marker + " */").c_str()), 1);
  ASSERT_TRUE(wait_until_running(monitor, victim_marker));
  ASSERT_TRUE(wait_until_running(monitor, bystander_marker));

  const auto start = Clock::now();
  PGcancel* cancel = PQgetCancel(victim);
  ASSERT_NE(cancel, nullptr);
  char error[256] = "";
  EXPECT_EQ(PQcancel(cancel, error, sizeof error), 1) << error;
  PQfreeCancel(cancel);

  auto result = finish_within(victim, 8s);
  ASSERT_TRUE(result.has_value()) << "the query was not cancelled";
  EXPECT_EQ(PQresultStatus(result->get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(result->get()), "57014") << PQerrorMessage(victim);
  EXPECT_LT(Clock::now() - start, 5s);
  EXPECT_EQ(query_value(victim, "SELECT 'usable'"), "usable");

  auto other = finish_within(bystander, 10s);
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(PQresultStatus(other->get()), PGRES_TUPLES_OK) << "another client's query was cancelled too";
}

TEST(Cancel, WrongKeyCancelsNothing) {
  Pgward pgward;
  Conn victim = pgward.connect();
  Conn monitor = connect_direct();
  ASSERT_TRUE(victim.ok() && monitor.ok());
  const std::string marker = unique_name("wrong_key");
  ASSERT_EQ(PQsendQuery(victim, ("SELECT pg_sleep(1) /* " + marker + " */").c_str()), 1);
  ASSERT_TRUE(wait_until_running(monitor, marker));

  std::mt19937 random(std::random_device{}());
  const std::uint32_t pid = static_cast<std::uint32_t>(PQbackendPID(victim));
  for (std::uint32_t target : {static_cast<std::uint32_t>(random()), pid}) {
    RawClient canceller(pgward.port(), 5s);
    ASSERT_TRUE(canceller.send(wire::cancel_request(target, static_cast<std::uint32_t>(random()))));
    EXPECT_TRUE(canceller.wait_closed()) << "pgward did not close the cancel connection";
  }

  auto result = finish_within(victim, 10s);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(PQresultStatus(result->get()), PGRES_TUPLES_OK)
      << "cancelled by a wrong key: " << PQerrorMessage(victim);
}

}  // namespace
}  // namespace pgward::it
