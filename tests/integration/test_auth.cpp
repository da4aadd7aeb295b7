// Authentication on both sides of pgward: clients against the users file (trust, md5, SCRAM, plain passwords
// and stored verifiers), and pgward against PostgreSQL (md5, SCRAM, clear text).
#include <cstdint>
#include <string>
#include <thread>

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

// ---- What a client that cannot log in learns, and what it costs pgward ----

double metric(const Pgward& pgward, const std::string& name) {
  const HttpResponse response = http(pgward.admin_port(), "GET", "/metrics");
  EXPECT_EQ(response.status, 200);
  const auto value = sample(response.body, name);
  EXPECT_TRUE(value.has_value()) << name << " missing from /metrics";
  return value.value_or(-1);
}

// The salt and iteration count pgward's SCRAM server-first-message offers `user`, read over a raw connection
// (the exchange then stops: no proof is sent).
struct ScramChallenge {
  std::string salt;  // base64, as sent
  std::string iterations;
};

ScramChallenge scram_challenge(const Pgward& pgward, const std::string& user) {
  RawClient client(pgward.port());
  EXPECT_TRUE(client.send(wire::startup({{"user", user}, {"database", kDatabase}})));
  const auto request = client.read_message();
  if (!request || request->type != 'R' || read_u32(request->body, 0) != 10) {  // AuthenticationSASL
    ADD_FAILURE() << "no AuthenticationSASL for " << user;
    return {};
  }
  const std::string client_first = "n,,n=,r=pgwardtestnonce";
  EXPECT_TRUE(client.send(wire::message('p', std::string("SCRAM-SHA-256\0", 14) +
                                                 wire::u32(static_cast<std::uint32_t>(client_first.size())) +
                                                 client_first)));
  const auto cont = client.read_message();
  if (!cont || cont->type != 'R' || read_u32(cont->body, 0) != 11) {  // AuthenticationSASLContinue
    ADD_FAILURE() << "no AuthenticationSASLContinue for " << user;
    return {};
  }
  // r=<nonce>,s=<salt>,i=<iterations>
  const std::string server_first = cont->body.substr(4);
  const auto s = server_first.find(",s=");
  const auto i = server_first.find(",i=");
  if (s == std::string::npos || i == std::string::npos || i < s) {
    ADD_FAILURE() << "malformed server-first-message " << server_first;
    return {};
  }
  return {server_first.substr(s + 3, i - s - 3), server_first.substr(i + 3)};
}

PgwardConfig isolation_config() {
  return client_auth("scram-sha-256", "alice = \"alicepass\"\n" + std::string(kScramUser) + " = \"" +
                                          stored_verifier(kScramUser) + "\"\n");
}

double auth_failures(const Pgward& pgward, const std::string& reason, std::string* exposition = nullptr) {
  const HttpResponse response = http(pgward.admin_port(), "GET", "/metrics");
  if (exposition) *exposition = response.body;
  return sample(response.body, "pgward_auth_failures_total", "reason=\"" + reason + "\"").value_or(-1);
}

// pgward_auth_failures_total counts refusals by a closed set of reasons; the name an unknown user gave never
// appears in /metrics, however many different ones are tried.
TEST(AuthIsolation, FailuresAreCountedByReasonWithoutNames) {
  PgwardConfig config = isolation_config();
  config.users += std::string(kMd5User) + " = \"" + stored_verifier(kMd5User) + "\"\n";
  Pgward pgward(config);
  for (const char* reason : {"unknown_user", "wrong_password", "unusable_secret", "protocol"})
    EXPECT_EQ(auth_failures(pgward, reason), 0) << reason;

  expect_refused(pgward, "alice", kDatabase, "wrong", "28P01");
  expect_refused(pgward, kScramUser, kDatabase, "alicepass", "28P01");
  for (int i = 0; i < 3; ++i) expect_refused(pgward, "probe_" + std::to_string(i), kDatabase, "x", "28P01");
  expect_refused(pgward, kMd5User, kDatabase, kMd5Password, "28P01");  // an md5 verifier cannot do SCRAM
  {
    RawClient client(pgward.port());
    ASSERT_TRUE(client.send(wire::startup({{"user", "alice"}, {"database", kDatabase}})));
    ASSERT_TRUE(client.read_message().has_value());  // AuthenticationSASL
    ASSERT_TRUE(client.send(wire::message('p', std::string("NOT-A-MECHANISM\0", 16) + wire::u32(0))));
    const auto error = client.read_message();
    ASSERT_TRUE(error && error->type == 'E');
    EXPECT_EQ(parse_error(*error)['C'], "08P01");
  }
  std::string exposition;
  EXPECT_EQ(auth_failures(pgward, "wrong_password", &exposition), 2);
  EXPECT_EQ(auth_failures(pgward, "unknown_user"), 3);
  EXPECT_EQ(auth_failures(pgward, "unusable_secret"), 1);
  EXPECT_EQ(auth_failures(pgward, "protocol"), 1);
  EXPECT_EQ(exposition.find("probe_"), std::string::npos);
}

// A plain password is turned into a SCRAM verifier once, when the users file is loaded; a login attempt,
// whoever it names, runs no key derivation (PBKDF2) at all.
TEST(AuthIsolation, BogusLoginsRunNoKeyDerivation) {
  Pgward pgward(isolation_config());
  const double at_load = metric(pgward, "pgward_scram_key_derivations_total");
  EXPECT_EQ(at_load, 1);  // alice's plain password; the stored verifier is only parsed
  constexpr int kAttempts = 20;
  for (int n = 0; n < kAttempts; ++n) {
    SCOPED_TRACE("attempt " + std::to_string(n));
    expect_refused(pgward, "nobody_" + std::to_string(n), kDatabase, "guess", "28P01");
    expect_refused(pgward, "alice", kDatabase, "guess", "28P01");
    expect_refused(pgward, kScramUser, kDatabase, "guess", "28P01");
    // A startup packet alone, as a flood would send it: the challenge comes back, the proof never does.
    RawClient flood(pgward.port());
    ASSERT_TRUE(flood.send(wire::startup({{"user", n % 2 ? "alice" : "nobody"}, {"database", kDatabase}})));
    const auto request = flood.read_message();
    ASSERT_TRUE(request.has_value());
    EXPECT_EQ(request->type, 'R');
  }
  EXPECT_EQ(metric(pgward, "pgward_scram_key_derivations_total"), at_load);
  expect_login(pgward, "alice", "alicepass");
  expect_login(pgward, kScramUser, kScramPassword);
  EXPECT_EQ(metric(pgward, "pgward_scram_key_derivations_total"), at_load);
}

// An unknown user's salt is the same at every attempt and differs between names, with the shape of a stored
// user's: repeating a login does not tell which names exist.
TEST(AuthIsolation, UnknownUserSaltIsStablePerNameAndLooksStored) {
  Pgward pgward(isolation_config());
  const ScramChallenge nobody = scram_challenge(pgward, "nobody");
  const ScramChallenge nobody_again = scram_challenge(pgward, "nobody");
  const ScramChallenge someone_else = scram_challenge(pgward, "someone_else");
  const ScramChallenge stored = scram_challenge(pgward, kScramUser);
  const ScramChallenge stored_again = scram_challenge(pgward, kScramUser);
  const ScramChallenge plain = scram_challenge(pgward, "alice");
  const ScramChallenge plain_again = scram_challenge(pgward, "alice");
  ASSERT_FALSE(nobody.salt.empty());
  EXPECT_EQ(nobody.salt, nobody_again.salt);
  EXPECT_EQ(nobody.iterations, nobody_again.iterations);
  EXPECT_NE(nobody.salt, someone_else.salt);
  EXPECT_EQ(stored.salt, stored_again.salt);
  EXPECT_EQ(plain.salt, plain_again.salt);
  // The same shape as what PostgreSQL stored: same iteration count, same salt length (base64 of 16 bytes).
  EXPECT_EQ(nobody.iterations, stored.iterations);
  EXPECT_EQ(nobody.salt.size(), stored.salt.size());
  EXPECT_EQ(someone_else.salt.size(), stored.salt.size());
  EXPECT_EQ(plain.iterations, stored.iterations);
  EXPECT_EQ(plain.salt.size(), stored.salt.size());
}

// PostgreSQL authenticates before it looks the database up, so a client without the password cannot probe
// which databases exist.
TEST(AuthIsolation, UnknownDatabaseWithWrongPasswordIs28P01) {
  Pgward pgward(isolation_config());
  expect_refused(pgward, "alice", "no_such_database", "guess", "28P01");
  expect_refused(pgward, "alice", kDatabase, "guess", "28P01");
  expect_refused(pgward, "nobody", "no_such_database", "alicepass", "28P01");
  expect_refused(pgward, kScramUser, "no_such_database", "guess", "28P01");
}

TEST(AuthIsolation, UnknownDatabaseWithRightPasswordIs3D000) {
  Pgward pgward(isolation_config());
  expect_refused(pgward, "alice", "no_such_database", "alicepass", "3D000");
  expect_refused(pgward, kScramUser, "no_such_database", kScramPassword, "3D000");
  expect_login(pgward, "alice", "alicepass");
}

TEST(AuthIsolation, UnknownDatabaseWithWrongMd5PasswordIs28P01) {
  Pgward pgward(client_auth("md5", "alice = \"alicepass\"\n"));
  expect_refused(pgward, "alice", "no_such_database", "guess", "28P01");
  expect_refused(pgward, "alice", "no_such_database", "alicepass", "3D000");
}

// ---- client_login_timeout ----

void expect_login_timeout(RawClient& client) {
  const auto error = client.read_message();
  ASSERT_TRUE(error.has_value()) << "no answer before the client's own receive timeout";
  ASSERT_EQ(error->type, 'E');
  auto fields = parse_error(*error);
  EXPECT_EQ(fields['S'], "FATAL");
  EXPECT_EQ(fields['C'], "08P01");
  EXPECT_TRUE(client.wait_closed());
}

TEST(AuthIsolation, ClientLoginTimeoutClosesClientsThatDoNotLogIn) {
  PgwardConfig config = client_auth("scram-sha-256", "alice = \"alicepass\"\n");
  config.proxy += "client_login_timeout = \"1s\"\n";
  Pgward pgward(config);
  EXPECT_EQ(metric(pgward, "pgward_client_login_timeouts_total"), 0);

  RawClient silent(pgward.port());
  expect_login_timeout(silent);

  RawClient half_startup(pgward.port());
  ASSERT_TRUE(half_startup.send(wire::startup(trust_login_params()).substr(0, 6)));
  expect_login_timeout(half_startup);

  RawClient no_proof(pgward.port());  // stops in the middle of the SCRAM exchange
  ASSERT_TRUE(no_proof.send(wire::startup({{"user", "alice"}, {"database", kDatabase}})));
  const auto request = no_proof.read_message();
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->type, 'R');
  expect_login_timeout(no_proof);

  EXPECT_EQ(metric(pgward, "pgward_client_login_timeouts_total"), 3);

  // The limit is on logging in only: a logged-in client may stay idle past it.
  Conn conn = pgward.connect("alice", kDatabase, "alicepass");
  ASSERT_TRUE(conn.ok()) << conn.error();
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(query_value(conn, "SELECT 1 + 1"), "2");
  EXPECT_EQ(metric(pgward, "pgward_client_login_timeouts_total"), 3);
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
