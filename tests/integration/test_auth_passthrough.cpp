// SCRAM pass-through: roles that PostgreSQL asks for scram-sha-256 (kScramGroup), with no password for them
// anywhere in pgward's configuration. pgward logs in to PostgreSQL with the ClientKey the client's proof
// revealed, checked against PostgreSQL's own verifier (copied into the users file, or found by auth_query).
#include <string>

#include "harness.hpp"

namespace pgward::it {
namespace {

std::string verifier_of(const std::string& role) {
  Conn direct = connect_direct("postgres");
  return query_value(direct, "SELECT rolpassword FROM pg_authid WHERE rolname = '" + role + "'");
}

TEST(AuthPassthrough, VerifierInUsersFileLogsInToAScramServer) {
  TestRole role("pass-through-pw", "scram-sha-256", true);
  TestRole same_password_other_salt("pass-through-pw", "scram-sha-256", true);
  PgwardConfig config;
  config.auth = "type = \"scram-sha-256\"\n";
  // The other role's entry holds a verifier of the same password with another salt (the first role's).
  config.users = role.name() + " = \"" + verifier_of(role.name()) + "\"\n" + same_password_other_salt.name() +
                 " = \"" + verifier_of(role.name()) + "\"\n";
  Pgward pgward(config);
  EXPECT_EQ(pgward.config_text().find("pass-through-pw"), std::string::npos);
  for (int i = 0; i < 2; ++i) {  // the second login may reuse the first's server or open another
    Conn conn = pgward.connect(role.name(), kDatabase, "pass-through-pw");
    ASSERT_TRUE(conn.ok()) << conn.error();
    EXPECT_EQ(query_value(conn, "SELECT current_user"), role.name());
    EXPECT_EQ(query_value(conn, "SELECT 6 * 7"), "42");
  }
  // The keys fit only the verifier they were checked against: a client checked against a verifier with
  // another salt cannot be passed through, and is told why instead of hanging.
  Conn other = Conn::connect(pgward.conninfo(same_password_other_salt.name(), kDatabase, "pass-through-pw"));
  EXPECT_FALSE(other.ok());
  EXPECT_EQ(other.connect_sqlstate(), "28P01") << other.error();
  EXPECT_NE(other.error().find("SCRAM pass-through needs PostgreSQL's own verifier"), std::string::npos)
      << other.error();
}

TEST(AuthPassthrough, AuthQueryUserLogsInToAScramServer) {
  TestRole role("looked-up-pw", "scram-sha-256", true);
  Conn admin = connect_direct("postgres");
  exec(admin, "DO $$ BEGIN CREATE ROLE pgward_auth LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  exec(admin, "CREATE SCHEMA IF NOT EXISTS pgward");
  exec(admin,
       "CREATE OR REPLACE FUNCTION pgward.user_lookup(i_username text, OUT usename name, OUT passwd text) "
       "RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ "
       "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = i_username AND rolcanlogin "
       "AND NOT rolsuper AND (rolvaliduntil IS NULL OR rolvaliduntil > now()) $$");
  exec(admin, "GRANT USAGE ON SCHEMA pgward TO pgward_auth");
  exec(admin, "GRANT EXECUTE ON FUNCTION pgward.user_lookup(text) TO pgward_auth");
  PgwardConfig config;
  config.auth =
      "type = \"scram-sha-256\"\nquery = \"SELECT usename, passwd FROM pgward.user_lookup($1)\"\n"
      "query_user = \"pgward_auth\"\n";
  config.users = "nobody_here = \"x\"\n";
  Pgward pgward(config);
  Conn conn = pgward.connect(role.name(), kDatabase, "looked-up-pw");
  ASSERT_TRUE(conn.ok()) << conn.error();
  EXPECT_EQ(query_value(conn, "SELECT current_user"), role.name());
  EXPECT_EQ(count_backends(admin, role.name()), 1);
}

}  // namespace
}  // namespace pgward::it
