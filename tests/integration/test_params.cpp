// Session parameters follow the client, not the server: two clients with different settings share one server
// connection in transaction mode and each always sees its own.
#include <string>
#include <utility>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

using Params = std::vector<std::pair<std::string, std::string>>;

// One round trip showing every setting under test, and their effect on formatting.
constexpr const char* kSettings =
    "SELECT concat_ws(' | ', current_setting('TimeZone'), current_setting('application_name'), "
    "current_setting('DateStyle'), current_setting('IntervalStyle'), current_setting('client_encoding'), "
    "current_setting('standard_conforming_strings'), '2024-03-01 12:00+00'::timestamptz::text, "
    "'1 day 2 hours'::interval::text)";

Params with_login(Params params) {
  params.insert(params.begin(), {{"user", kTrustUser}, {"database", kDatabase}});
  return params;
}

// What PostgreSQL itself reports for a session started with these parameters.
std::string direct_value(const Params& params, const std::string& sql) {
  RawClient client(pg_port());
  client.login(params);
  return client.query_value(sql);
}

PgwardConfig one_server_transaction_pool() {
  PgwardConfig config;
  config.pool = "mode = \"transaction\"\nsize = 1\n";
  return config;
}

TEST(Params, StartupParametersFollowTheClient) {
  const Params alpha = with_login({{"TimeZone", "America/New_York"},
                                   {"application_name", "alpha"},
                                   {"DateStyle", "SQL, DMY"},
                                   {"IntervalStyle", "postgres_verbose"},
                                   {"client_encoding", "LATIN1"}});
  const Params beta = with_login({{"TimeZone", "Asia/Tokyo"},
                                  {"application_name", "beta"},
                                  {"DateStyle", "German, DMY"},
                                  {"IntervalStyle", "iso_8601"},
                                  {"client_encoding", "UTF8"},
                                  {"standard_conforming_strings", "off"}});
  std::string expected_alpha = direct_value(alpha, kSettings);
  std::string expected_beta = direct_value(beta, kSettings);
  ASSERT_NE(expected_alpha, expected_beta);

  Pgward pgward(one_server_transaction_pool());
  RawClient a(pgward.port());
  RawClient b(pgward.port());
  a.login(alpha);
  b.login(beta);
  const std::string server = a.query_value("SELECT pg_backend_pid()");
  EXPECT_EQ(b.query_value("SELECT pg_backend_pid()"), server) << "a pool of size 1 has one server";

  for (int i = 0; i < 20; ++i) {
    SCOPED_TRACE("round " + std::to_string(i));
    EXPECT_EQ(a.query_value(kSettings), expected_alpha);
    EXPECT_EQ(b.query_value(kSettings), expected_beta);
    EXPECT_EQ(b.query_value(kSettings), expected_beta);
    EXPECT_EQ(a.query_value(kSettings), expected_alpha);
  }

  // A SET during the session sticks to that client, and only to it.
  const auto set = a.query("SET TimeZone = 'UTC'");
  EXPECT_EQ(message_signature(set), "C(SET) Z(I)");
  Params alpha_utc = alpha;
  alpha_utc.emplace_back("TimeZone", "UTC");
  expected_alpha = direct_value(alpha_utc, kSettings);
  ASSERT_NE(expected_alpha.find("UTC"), std::string::npos);
  for (int i = 0; i < 20; ++i) {
    SCOPED_TRACE("after SET, round " + std::to_string(i));
    EXPECT_EQ(a.query_value(kSettings), expected_alpha);
    EXPECT_EQ(b.query_value(kSettings), expected_beta);
  }
}

TEST(Params, LibpqApplicationNameAndOptions) {
  Pgward pgward(one_server_transaction_pool());
  const std::string alpha =
      " application_name=alpha options='-c TimeZone=Pacific/Auckland -c DateStyle=Postgres,DMY'";
  const std::string beta = " application_name=beta options='-c TimeZone=Europe/Lisbon -c DateStyle=ISO,YMD'";
  const std::string settings =
      "SELECT concat_ws(' | ', current_setting('application_name'), "
      "current_setting('TimeZone'), current_setting('DateStyle'))";
  std::string expected_alpha, expected_beta;
  {
    Conn direct_alpha = Conn::connect(direct_conninfo(kTrustUser) + alpha);
    Conn direct_beta = Conn::connect(direct_conninfo(kTrustUser) + beta);
    ASSERT_TRUE(direct_alpha.ok() && direct_beta.ok());
    expected_alpha = query_value(direct_alpha, settings);
    expected_beta = query_value(direct_beta, settings);
  }
  EXPECT_EQ(expected_alpha, "alpha | Pacific/Auckland | Postgres, DMY");

  Conn a = Conn::connect(pgward.conninfo() + alpha);
  Conn b = Conn::connect(pgward.conninfo() + beta);
  ASSERT_TRUE(a.ok()) << a.error();
  ASSERT_TRUE(b.ok()) << b.error();
  for (int i = 0; i < 20; ++i) {
    SCOPED_TRACE("round " + std::to_string(i));
    EXPECT_EQ(query_value(a, settings), expected_alpha);
    EXPECT_EQ(query_value(b, settings), expected_beta);
  }
  exec(b, "SET TimeZone = 'UTC'");
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(query_value(a, "SHOW TimeZone"), "Pacific/Auckland");
    EXPECT_EQ(query_value(b, "SHOW TimeZone"), "UTC");
  }
}

TEST(Params, OtherStartupParametersFollowTheClient) {
  const Params alpha = with_login({{"statement_timeout", "12345"}, {"search_path", "pg_catalog"}});
  const Params beta = with_login({{"statement_timeout", "54321"}, {"search_path", "public"}});
  const std::string settings =
      "SELECT current_setting('statement_timeout') || ' | ' || current_setting('search_path')";
  const std::string expected_alpha = direct_value(alpha, settings);
  const std::string expected_beta = direct_value(beta, settings);
  EXPECT_EQ(expected_alpha, "12345ms | pg_catalog");

  Pgward pgward(one_server_transaction_pool());
  RawClient a(pgward.port());
  RawClient b(pgward.port());
  a.login(alpha);
  b.login(beta);
  for (int i = 0; i < 10; ++i) {
    SCOPED_TRACE("round " + std::to_string(i));
    EXPECT_EQ(a.query_value(settings), expected_alpha);
    EXPECT_EQ(b.query_value(settings), expected_beta);
  }
}

}  // namespace
}  // namespace pgward::it
