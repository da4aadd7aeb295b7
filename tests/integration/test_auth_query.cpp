// auth_query: users known only to PostgreSQL log in through pgward with the verifier PostgreSQL stores,
// looked up by the SECURITY DEFINER function README recommends, run as a role of its own.
#include <string>
#include <thread>

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
