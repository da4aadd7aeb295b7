// Session parameters follow the client, not the server: two clients with different settings share one server
// connection in transaction mode and each always sees its own.
#include <map>
#include <memory>
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

// The ParameterStatus messages of a login, by name.
std::map<std::string, std::string> parameter_status(const std::vector<Message>& login) {
  std::map<std::string, std::string> out;
  for (const auto& m : login) {
    if (m.type != 'S') continue;
    const auto nul = m.body.find('\0');
    out[m.body.substr(0, nul)] = m.body.substr(nul + 1, m.body.find('\0', nul + 1) - nul - 1);
  }
  return out;
}

// SHOW and current_setting() under any spelling of the names, and the formatting they drive.
constexpr const char* kStyleSettings =
    "SELECT concat_ws(' | ', current_setting('intervalstyle'), current_setting('TIMEZONE'), "
    "current_setting('DateStyle'), current_setting('application_name'), "
    "'2024-03-01 12:00+00'::timestamptz::text, '1 day 2 hours 3 seconds'::interval::text, "
    "'{\"1 day\"}'::interval[]::text)";

// pg_regress starts its sessions with PGOPTIONS="-c intervalstyle=postgres_verbose -c timezone=PST8PDT -c
// datestyle=Postgres,MDY": names in lower case, in `options`. Those, the same names as startup parameters in
// any case, and an `options` value that a startup parameter overrides must give what PostgreSQL gives: the
// same ParameterStatus at login (names and values) and the same values in force, also on a server another
// client left with different values.
TEST(Params, OptionsAndAnyCaseNamesMatchADirectConnection) {
  const std::vector<Params> clients = {
      with_login(
          {{"options", "-c intervalstyle=postgres_verbose -c timezone=PST8PDT -c datestyle=Postgres,MDY"}}),
      // On the server client 0 leaves behind, this DateStyle is already in force: PostgreSQL reports nothing
      // for the SET, and the login must still report PostgreSQL's spelling.
      with_login({{"options", "-c datestyle=postgres,mdy"}}),
      with_login({{"INTERVALSTYLE", "iso_8601"}, {"timezone", "Asia/Tokyo"}, {"DATESTYLE", "German, DMY"}}),
      with_login({{"options", "--TimeZone=UTC -c IntervalStyle=sql_standard -c application-name=opt"},
                  {"TIMEZONE", "America/New_York"},
                  {"datestyle", "sql,dmy"}}),
      with_login({{"intervalstyle", "postgres_verbose"}, {"Application_Name", "plain"}}),
  };
  struct Expected {
    std::map<std::string, std::string> status;
    std::string settings;
  };
  std::vector<Expected> expected;
  for (const auto& params : clients) {
    RawClient direct(pg_port());
    const auto login = direct.login(params);
    expected.push_back({parameter_status(login), direct.query_value(kStyleSettings)});
  }
  ASSERT_EQ(expected[0].status["IntervalStyle"], "postgres_verbose");
  ASSERT_EQ(expected[0].status["DateStyle"], "Postgres, MDY");
  ASSERT_EQ(expected[1].status["DateStyle"], "Postgres, MDY");
  ASSERT_EQ(expected[3].status["TimeZone"], "America/New_York") << "a startup parameter beats options";
  ASSERT_EQ(expected[3].status["application_name"], "opt");

  Pgward pgward(one_server_transaction_pool());
  std::vector<std::unique_ptr<RawClient>> through;
  for (std::size_t i = 0; i < clients.size(); ++i) {
    SCOPED_TRACE("client " + std::to_string(i));
    through.push_back(std::make_unique<RawClient>(pgward.port()));
    const auto status = parameter_status(through.back()->login(clients[i]));
    EXPECT_EQ(status, expected[i].status);
    // The next client logs in on the server this one has just left with its own values.
    EXPECT_EQ(through.back()->query_value(kStyleSettings), expected[i].settings);
  }
  for (int round = 0; round < 5; ++round) {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      SCOPED_TRACE("round " + std::to_string(round) + ", client " + std::to_string(i));
      EXPECT_EQ(through[i]->query_value(kStyleSettings), expected[i].settings);
      EXPECT_EQ(through[i]->query_value("SHOW intervalstyle"), expected[i].status["IntervalStyle"]);
    }
  }
}

// The same through libpq, as pg_regress connects: PQparameterStatus agrees with a direct connection for every
// parameter PostgreSQL reports.
TEST(Params, LibpqOptionsReportWhatPostgresReports) {
  const std::string options =
      " options='-c intervalstyle=postgres_verbose -c timezone=PST8PDT -c datestyle=Postgres,MDY'";
  std::map<std::string, std::string> direct_status;
  std::string direct_settings;
  {
    RawClient raw(pg_port());
    Params params = with_login({{"options",
                                 "-c intervalstyle=postgres_verbose -c timezone=PST8PDT "
                                 "-c datestyle=Postgres,MDY"}});
    direct_status = parameter_status(raw.login(params));
    Conn direct = Conn::connect(direct_conninfo(kTrustUser) + options);
    ASSERT_TRUE(direct.ok()) << direct.error();
    direct_settings = query_value(direct, kStyleSettings);
  }
  ASSERT_FALSE(direct_status.empty());

  Pgward pgward(one_server_transaction_pool());
  // Another client first leaves the only server with other values.
  Conn other = Conn::connect(pgward.conninfo() +
                             " options='-c IntervalStyle=iso_8601 -c TimeZone=UTC -c DateStyle=ISO,YMD'");
  ASSERT_TRUE(other.ok()) << other.error();
  EXPECT_EQ(query_value(other, "SHOW DateStyle"), "ISO, YMD");
  Conn c = Conn::connect(pgward.conninfo() + options);
  ASSERT_TRUE(c.ok()) << c.error();
  for (const auto& [name, value] : direct_status) {
    const char* got = PQparameterStatus(c, name.c_str());
    EXPECT_EQ(got ? std::string(got) : "<none>", value) << name;
  }
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(query_value(c, kStyleSettings), direct_settings);
    EXPECT_EQ(query_value(other, "SHOW intervalstyle"), "iso_8601");
  }
}

}  // namespace
}  // namespace pgward::it
