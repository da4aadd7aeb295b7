// Authentication on both sides of pgward: clients against the users file (trust, md5, SCRAM, plain passwords
// and stored verifiers), and pgward against PostgreSQL (md5, SCRAM, clear text).
#include <string>

#include "harness.hpp"

namespace pgward::it {
namespace {

// Client-side tests log in to PostgreSQL as pgward_trust, so only pgward's own check is under test.
PgwardConfig client_auth(const std::string& type, const std::string& users) {
  PgwardConfig config;
  config.auth = "type = \"" + type + "\"\n";
  config.users = users;
  config.databases = PgwardConfig::database_toml(kDatabase, kDatabase, "user = \"pgward_trust\"");
  return config;
}

std::string stored_verifier(const std::string& role) {
  Conn direct = connect_direct("postgres");
  return query_value(direct, "SELECT rolpassword FROM pg_authid WHERE rolname = '" + role + "'");
}

// Expects the login to be refused with sqlstate (an ErrorResponse, not a dropped connection).
void expect_refused(const Pgward& pgward, const std::string& user, const std::string& db,
                    const std::string& password, const std::string& expected_sqlstate) {
  Conn conn = Conn::connect(pgward.conninfo(user, db, password));
  EXPECT_FALSE(conn.ok()) << user << " logged in to " << db << " with password '" << password << "'";
  EXPECT_EQ(conn.connect_sqlstate(), expected_sqlstate) << conn.error();
}

void expect_login(const Pgward& pgward, const std::string& user, const std::string& password) {
  Conn conn = pgward.connect(user, kDatabase, password);
  ASSERT_TRUE(conn.ok());
  EXPECT_EQ(query_value(conn, "SELECT current_user"), kTrustUser);
  EXPECT_EQ(query_value(conn, "SELECT 1 + 1"), "2");
}

TEST(Auth, ClientTrust) {
  Pgward pgward(client_auth("trust", ""));
  expect_login(pgward, kTrustUser, "");
  expect_refused(pgward, kTrustUser, "no_such_database", "", "3D000");
}

TEST(Auth, ClientMd5WithPlainPassword) {
  Pgward pgward(client_auth("md5", "alice = \"alicepass\"\nbob = \"bobpass\"\n"));
  expect_login(pgward, "alice", "alicepass");
  expect_login(pgward, "bob", "bobpass");
  expect_refused(pgward, "alice", kDatabase, "wrong", "28P01");
  expect_refused(pgward, "alice", kDatabase, "bobpass", "28P01");
  expect_refused(pgward, "nobody", kDatabase, "alicepass", "28P01");
  expect_refused(pgward, "alice", "no_such_database", "alicepass", "3D000");
}

TEST(Auth, ClientScramWithPlainPassword) {
  Pgward pgward(client_auth("scram-sha-256", "alice = \"alicepass\"\nbob = \"bobpass\"\n"));
  expect_login(pgward, "alice", "alicepass");
  expect_login(pgward, "bob", "bobpass");
  expect_refused(pgward, "alice", kDatabase, "wrong", "28P01");
  expect_refused(pgward, "bob", kDatabase, "alicepass", "28P01");
  expect_refused(pgward, "nobody", kDatabase, "alicepass", "28P01");
  expect_refused(pgward, "alice", "no_such_database", "alicepass", "3D000");
}

TEST(Auth, ClientScramWithStoredVerifier) {
  const std::string verifier = stored_verifier(kScramUser);
  ASSERT_TRUE(verifier.starts_with("SCRAM-SHA-256$")) << verifier;
  Pgward pgward(client_auth("scram-sha-256", std::string(kScramUser) + " = \"" + verifier + "\"\n"));
  expect_login(pgward, kScramUser, kScramPassword);
  expect_refused(pgward, kScramUser, kDatabase, "wrong", "28P01");
}

TEST(Auth, ClientMd5WithStoredVerifier) {
  const std::string verifier = stored_verifier(kMd5User);
  ASSERT_TRUE(verifier.starts_with("md5")) << verifier;
  Pgward pgward(client_auth("md5", std::string(kMd5User) + " = \"" + verifier + "\"\n"));
  expect_login(pgward, kMd5User, kMd5Password);
  expect_refused(pgward, kMd5User, kDatabase, "wrong", "28P01");
}

// Server-side tests: clients log in to pgward with SCRAM; pgward logs in to PostgreSQL as configured.
PgwardConfig server_auth() {
  PgwardConfig config;
  config.auth = "type = \"scram-sha-256\"\n";
  config.users = "client = \"clientpass\"\napp = \"apppass\"\n";
  config.databases =
      PgwardConfig::database_toml("srv_md5", kDatabase, "user = \"pgward_md5\"\npassword = \"md5pass\"") +
      PgwardConfig::database_toml("srv_scram", kDatabase,
                                  "user = \"pgward_scram\"\npassword = \"scrampass\"") +
      PgwardConfig::database_toml("srv_clear", kDatabase,
                                  "user = \"pgward_clear\"\npassword = \"clearpass\"") +
      PgwardConfig::database_toml("srv_bad", kDatabase,
                                  "user = \"pgward_scram\"\npassword = \"not-the-password\"") +
      PgwardConfig::database_toml("srv_app", kDatabase);
  return config;
}

void expect_server_login(const Pgward& pgward, const std::string& db, const std::string& server_user) {
  SCOPED_TRACE("database " + db);
  Conn conn = pgward.connect("client", db, "clientpass");
  ASSERT_TRUE(conn.ok());
  EXPECT_EQ(query_value(conn, "SELECT current_user"), server_user);
  EXPECT_EQ(query_value(conn, "SELECT current_database()"), kDatabase);
}

TEST(Auth, ServerMd5) {
  Pgward pgward(server_auth());
  expect_server_login(pgward, "srv_md5", kMd5User);
}

TEST(Auth, ServerScram) {
  Pgward pgward(server_auth());
  expect_server_login(pgward, "srv_scram", kScramUser);
}

TEST(Auth, ServerCleartext) {
  Pgward pgward(server_auth());
  expect_server_login(pgward, "srv_clear", kClearUser);
}

TEST(Auth, ServerLoginWithClientsPasswordFromUsersFile) {
  Pgward pgward(server_auth());
  Conn conn = pgward.connect(kAppUser, "srv_app", kAppPassword);
  ASSERT_TRUE(conn.ok());
  EXPECT_EQ(query_value(conn, "SELECT current_user"), kAppUser);
  EXPECT_EQ(query_value(conn, "SELECT 6 * 7"), "42");
}

TEST(Auth, WrongServerPasswordFailsCleanly) {
  Pgward pgward(server_auth());
  for (int attempt = 0; attempt < 2; ++attempt) {
    SCOPED_TRACE("attempt " + std::to_string(attempt));
    const auto start = Clock::now();
    Conn conn = Conn::connect(pgward.conninfo("client", "srv_bad", "clientpass"));
    bool failed = !conn.ok();
    std::string error = conn.error();
    if (conn.ok()) {  // pgward may log in to the server only at the first query
      auto r = exec_within(conn, "SELECT 1", 15s);
      ASSERT_TRUE(r.has_value()) << "the query hung";
      failed = PQresultStatus(r->get()) != PGRES_TUPLES_OK;
      error = PQerrorMessage(conn);
    }
    EXPECT_TRUE(failed) << "logged in to PostgreSQL with a wrong password";
    EXPECT_FALSE(error.empty());
    EXPECT_LT(Clock::now() - start, 20s);
  }
  EXPECT_TRUE(pgward.running());
  expect_server_login(pgward, "srv_scram", kScramUser);
}

}  // namespace
}  // namespace pgward::it
