// auth_query: users known only to PostgreSQL log in through pgward with the verifier PostgreSQL stores,
// looked up by the SECURITY DEFINER function README recommends, run as a role of its own.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

constexpr const char* kQueryUser = "pgward_auth";
constexpr const char* kQuery = "SELECT usename, passwd FROM pgward.user_lookup($1)";

// The lookup function of README's "Authentication" section, and the role that may run it.
void install_lookup_function() {
  Conn admin = connect_direct("postgres");
  exec(admin, "DO $$ BEGIN CREATE ROLE pgward_auth LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  for (const char* sql : {
           "CREATE SCHEMA IF NOT EXISTS pgward",
           "CREATE OR REPLACE FUNCTION pgward.user_lookup(i_username text, OUT usename name, OUT passwd "
           "text) "
           "RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ "
           "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = i_username AND rolcanlogin "
           "AND NOT rolsuper AND (rolvaliduntil IS NULL OR rolvaliduntil > now()) $$",
           "REVOKE ALL ON FUNCTION pgward.user_lookup(text) FROM PUBLIC",
           "GRANT USAGE ON SCHEMA pgward TO pgward_auth",
           "GRANT EXECUTE ON FUNCTION pgward.user_lookup(text) TO pgward_auth",
       }) {
    exec(admin, sql);
  }
}

PgwardConfig query_config(const std::string& type = "scram-sha-256", const std::string& extra = "") {
  install_lookup_function();
  PgwardConfig config;
  config.auth = "type = \"" + type + "\"\nquery = \"" + kQuery + "\"\nquery_user = \"" + kQueryUser +
                "\"\nquery_cache = \"1s\"\n" + extra;
  config.users = "someone_else = \"not-looked-up\"\n";
  return config;
}

void expect_login_as(const Pgward& pgward, const std::string& user, const std::string& password,
                     const std::string& options = "") {
  std::string conninfo = pgward.conninfo(user, kDatabase, password);
  if (!options.empty()) conninfo += " options=" + conninfo_quote(options);
  Conn conn = Conn::connect(conninfo);
  ASSERT_TRUE(conn.ok()) << conn.error();
  EXPECT_EQ(query_value(conn, "SELECT current_user"), user);
}

std::string refused_with(const Pgward& pgward, const std::string& user, const std::string& password,
                         const std::string& options = "") {
  std::string conninfo = pgward.conninfo(user, kDatabase, password);
  if (!options.empty()) conninfo += " options=" + conninfo_quote(options);
  Conn conn = Conn::connect(conninfo);
  EXPECT_FALSE(conn.ok()) << user << " logged in with '" << password << "'";
  return conn.connect_sqlstate() + " " + conn.error();
}

TEST(AuthQuery, ScramAndMd5VerifiersFromPostgres) {
  TestRole scram("pw-scram");
  TestRole md5("pw-md5", "md5");
  {
    Pgward pgward(query_config("scram-sha-256"));
    expect_login_as(pgward, scram.name(), "pw-scram");
    EXPECT_EQ(refused_with(pgward, scram.name(), "wrong").substr(0, 5), "28P01");
    EXPECT_EQ(refused_with(pgward, md5.name(), "pw-md5").substr(0, 5), "28P01");  // md5 cannot do SCRAM
    EXPECT_EQ(refused_with(pgward, "aq_nobody", "x").substr(0, 5), "28P01");
  }
  Pgward pgward(query_config("md5"));
  expect_login_as(pgward, md5.name(), "pw-md5");
  EXPECT_EQ(refused_with(pgward, md5.name(), "wrong").substr(0, 5), "28P01");
  EXPECT_EQ(refused_with(pgward, scram.name(), "pw-scram").substr(0, 5), "28P01");
}

// A changed password and a dropped role take effect once the cached verifier is older than query_cache.
TEST(AuthQuery, PasswordChangeAndDropTakeEffectAfterTheCache) {
  TestRole role("first");
  Pgward pgward(query_config());
  expect_login_as(pgward, role.name(), "first");
  Conn direct = connect_direct("postgres");
  exec(direct, "SET password_encryption = 'scram-sha-256'");
  exec(direct, "ALTER ROLE " + role.name() + " PASSWORD 'second'");
  std::this_thread::sleep_for(1300ms);
  EXPECT_EQ(refused_with(pgward, role.name(), "first").substr(0, 5), "28P01");
  expect_login_as(pgward, role.name(), "second");
  exec(direct, "REVOKE ALL ON DATABASE " + std::string(kDatabase) + " FROM " + role.name());
  exec(direct, "DROP ROLE " + role.name());
  std::this_thread::sleep_for(1300ms);
  EXPECT_EQ(refused_with(pgward, role.name(), "second").substr(0, 5), "28P01");
}

// A lookup that cannot run refuses the login with 08006 and says why; it never lets the client in.
TEST(AuthQuery, FailingLookupRefuses) {
  TestRole role("pw");
  TestRole no_rights("x");
  {
    PgwardConfig config = query_config();
    config.auth = "type = \"scram-sha-256\"\nquery = \"" + std::string(kQuery) + "\"\nquery_user = \"" +
                  no_rights.name() + "\"\n";
    Pgward pgward(config);
    const std::string refused = refused_with(pgward, role.name(), "pw");
    EXPECT_EQ(refused.substr(0, 5), "08006") << refused;
    EXPECT_NE(refused.find("auth_query"), std::string::npos) << refused;
    EXPECT_NE(refused.find("permission denied"), std::string::npos) << refused;
  }
  Pgward pgward(query_config());
  PostgresRestarter restart;
  stop_postgres_server("fast");
  const std::string refused = refused_with(pgward, role.name(), "pw");
  EXPECT_EQ(refused.substr(0, 5), "08006") << refused;
  start_postgres_server();
  expect_login_as(pgward, role.name(), "pw");
}

double metric(const Pgward& pgward, const std::string& name, const std::string& label_part = "") {
  return sample(http(pgward.admin_port(), "GET", "/metrics").body, name, label_part).value_or(-1);
}

// [auth] query_pool_size bounds the lookup connections of a database: with 1, six concurrent logins of users
// known only to PostgreSQL, each lookup taking 0.3 s, all succeed one lookup after another, and PostgreSQL
// never sees more than one backend of the query user (each used to open a connection of its own).
TEST(AuthQuery, LookupConnectionsStayWithinQueryPoolSize) {
  std::vector<std::unique_ptr<TestRole>> roles;
  for (int i = 0; i < 6; ++i) roles.push_back(std::make_unique<TestRole>("pw" + std::to_string(i)));
  PgwardConfig config = query_config();
  config.auth =
      "type = \"scram-sha-256\"\nquery = \"SELECT usename, passwd FROM pgward.user_lookup($1), "
      "pg_sleep(0.3)\"\nquery_user = \"" +
      std::string(kQueryUser) + "\"\nquery_pool_size = 1\n";
  config.pool += "server_connect_timeout = \"20s\"\n";
  Pgward pgward(config);
  Conn direct = connect_direct("postgres");
  std::atomic<int> logged_in{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&, i] {
      Conn conn = Conn::connect(pgward.conninfo(roles[i]->name(), kDatabase, "pw" + std::to_string(i)));
      EXPECT_TRUE(conn.ok()) << conn.error();
      if (conn.ok() && query_value(conn, "SELECT current_user") == roles[i]->name()) ++logged_in;
    });
  }
  int most = 0;
  int samples = 0;
  std::thread watcher([&] {
    while (!done) {
      most = std::max(most, count_backends(direct.get(), kQueryUser));
      ++samples;
      std::this_thread::sleep_for(20ms);
    }
  });
  for (auto& t : clients) t.join();
  done = true;
  watcher.join();
  EXPECT_EQ(logged_in, 6);
  EXPECT_EQ(most, 1) << "over " << samples << " samples";
  EXPECT_GE(metric(pgward, "pgward_auth_query_connection_waits_total"), 1);
  EXPECT_EQ(metric(pgward, "pgward_auth_query_connections", "database=\"app\""), 1);  // kept idle
  EXPECT_EQ(metric(pgward, "pgward_auth_query_lookups_total", "result=\"found\""), 6);
}

// A lookup that outlasts the database's server_connect_timeout is refused with 08006 and says so, and so is
// one that waited for the only lookup connection meanwhile; a users-file user logs in unaffected.
TEST(AuthQuery, SlowLookupRefusedWithinItsDeadline) {
  TestRole first("pw1");
  TestRole second("pw2");
  PgwardConfig config = query_config();
  config.auth =
      "type = \"scram-sha-256\"\nquery = \"SELECT usename, passwd FROM pgward.user_lookup($1), "
      "pg_sleep(3)\"\nquery_user = \"" +
      std::string(kQueryUser) + "\"\nquery_pool_size = 1\n";
  config.users = std::string(kAppUser) + " = \"" + kAppPassword + "\"\n";
  config.pool += "server_connect_timeout = \"700ms\"\n";
  Pgward pgward(config);
  std::string refused[2];
  std::chrono::milliseconds took[2]{};
  std::atomic<int> finished{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      const auto start = std::chrono::steady_clock::now();
      refused[i] = refused_with(pgward, (i == 0 ? first : second).name(), i == 0 ? "pw1" : "pw2");
      took[i] =
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
      ++finished;
    });
  }
  std::this_thread::sleep_for(200ms);  // both lookups are under way: one runs, one waits
  {
    Conn app = Conn::connect(pgward.conninfo(kAppUser, kDatabase, kAppPassword));
    EXPECT_TRUE(app.ok()) << app.error();
    if (app.ok()) {
      EXPECT_EQ(query_value(app, "SELECT current_user"), kAppUser);
    }
  }
  EXPECT_EQ(finished, 0);  // logged in while both lookups were still pending
  for (auto& t : clients) t.join();
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(refused[i].substr(0, 5), "08006") << refused[i];
    EXPECT_NE(refused[i].find("auth_query"), std::string::npos) << refused[i];
    EXPECT_NE(refused[i].find("no answer within 700 ms"), std::string::npos) << refused[i];
    EXPECT_LT(took[i], 2500ms);  // not held until pg_sleep(3) ends
  }
  EXPECT_GE(metric(pgward, "pgward_auth_query_connection_waits_total"), 1);
  EXPECT_EQ(metric(pgward, "pgward_auth_query_lookups_total", "result=\"failed\""), 2);
}

// PgBouncer CVE-2025-12819: a search_path sent in the startup packet reached its auth query. Here the query
// names the function without a schema, the query user finds it through its own search_path, and a schema
// `evil` holds a function of the same name that hands out a verifier the attacker knows. Directly, with the
// attacker's search_path, the lookup would be redirected; through pgward it is not.
TEST(AuthQuery, StartupSearchPathCannotRedirectTheLookup) {
  TestRole victim("victim-pw");
  TestRole attacker("attacker-pw");
  install_lookup_function();
  Conn admin = connect_direct("postgres");
  const std::string forged =
      query_value(admin, "SELECT rolpassword FROM pg_authid WHERE rolname = '" + attacker.name() + "'");
  exec(admin, "CREATE SCHEMA IF NOT EXISTS evil");
  exec(admin, "GRANT USAGE ON SCHEMA evil TO PUBLIC");
  exec(admin,
       "CREATE OR REPLACE FUNCTION evil.user_lookup(i_username text, OUT usename name, OUT passwd text) "
       "RETURNS record LANGUAGE sql AS $$ SELECT i_username::name, '" +
           forged + "'::text $$");
  exec(admin, "ALTER ROLE pgward_auth SET search_path = pgward");
  const std::string redirect = "-c search_path=evil";
  {  // The trap works: with the attacker's search_path the unqualified lookup returns the forged verifier.
    Conn as_query_user = Conn::connect(direct_conninfo(kQueryUser) + " options=" + conninfo_quote(redirect));
    ASSERT_TRUE(as_query_user.ok()) << as_query_user.error();
    EXPECT_EQ(query_value(as_query_user, "SELECT passwd FROM user_lookup('" + victim.name() + "')"), forged);
  }
  PgwardConfig config = query_config();
  config.auth =
      "type = \"scram-sha-256\"\nquery = \"SELECT usename, passwd FROM user_lookup($1)\"\n"
      "query_user = \"pgward_auth\"\n";
  Pgward pgward(config);
  for (const std::string& options :
       {redirect, std::string("-c search_path=evil,pgward"), std::string("--search_path=evil")}) {
    SCOPED_TRACE(options);
    EXPECT_EQ(refused_with(pgward, victim.name(), "attacker-pw", options).substr(0, 5), "28P01");
    Conn conn = Conn::connect(pgward.conninfo(victim.name(), kDatabase, "victim-pw") +
                              " options=" + conninfo_quote(options));
    ASSERT_TRUE(conn.ok()) << conn.error();
    EXPECT_EQ(query_value(conn, "SHOW search_path").substr(0, 4), "evil");  // the client's own session has it
  }
  exec(admin, "ALTER ROLE pgward_auth RESET search_path");
  exec(admin, "DROP SCHEMA evil CASCADE");
}

}  // namespace
}  // namespace pgward::it
