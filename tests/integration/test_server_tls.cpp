// TLS towards PostgreSQL ([server_tls] and per-database server_tls_*): libpq's sslmode semantics against a
// PostgreSQL that accepts TLS only, and against one without TLS; certificate authentication to the server.
#include <map>
#include <regex>
#include <string>

#include "harness.hpp"
#include "tls_env.hpp"

namespace pgward::it {
namespace {

// A pgward whose database "app" is the TLS-only PostgreSQL at HOST, with these server_tls_* keys (and
// `extra` [[database]] keys).
PgwardConfig server_tls_config(std::string_view host, std::string_view tls_keys,
                               std::string_view extra = "") {
  PgwardConfig config;
  config.databases = "[[database]]\nname = \"app\"\nhost = \"" + std::string(host) +
                     "\"\nport = " + std::to_string(tls_pg_port()) + "\ndbname = \"app\"\n" +
                     std::string(tls_keys) + std::string(extra);
  return config;
}

std::string ca_key(std::string_view file) {
  return "server_tls_ca_file = \"" + tls_files().path(std::string(file)) + "\"\n";
}

// Logs in through pgward as USER and asks the TLS PostgreSQL whether this backend's link is TLS.
std::string backend_ssl(const Pgward& pgward, Conn& conn, const std::string& user = kTrustUser) {
  conn = Conn::connect(pgward.conninfo(user));
  if (!conn.ok()) return "failed: " + conn.error();
  return query_value(conn,
                     "SELECT ssl::text || ' ' || current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
}

TEST(ServerTls, ModesAgainstATlsOnlyServer) {
  const struct {
    const char* host;
    std::string keys;
    std::string expect;  // "true pgward_trust", or a piece of the error
  } cases[] = {
      {"localhost", "server_tls_mode = \"prefer\"\n", "true pgward_trust"},
      {"localhost", "server_tls_mode = \"require\"\n", "true pgward_trust"},
      {"localhost", "server_tls_mode = \"allow\"\n", "true pgward_trust"},  // plain refused, then TLS
      {"localhost", "server_tls_mode = \"verify-ca\"\n" + ca_key("ca.crt"), "true pgward_trust"},
      {"localhost", "server_tls_mode = \"verify-full\"\n" + ca_key("ca.crt"), "true pgward_trust"},
      {"127.0.0.1", "server_tls_mode = \"verify-ca\"\n" + ca_key("ca.crt"), "true pgward_trust"},
      // The certificate names localhost only.
      {"127.0.0.1", "server_tls_mode = \"verify-full\"\n" + ca_key("ca.crt"),
       "server certificate does not match host name \"127.0.0.1\""},
      {"localhost", "server_tls_mode = \"verify-ca\"\n" + ca_key("other_ca.crt"),
       "certificate verify failed"},
      // No ca_file: the system's roots, which do not hold the test CA.
      {"localhost", "server_tls_mode = \"verify-full\"\n", "certificate verify failed"},
      {"localhost", "server_tls_mode = \"disable\"\n", "no encryption"},
  };
  for (const auto& c : cases) {
    Pgward pgward(server_tls_config(c.host, c.keys));
    Conn conn;
    const std::string got = backend_ssl(pgward, conn);
    EXPECT_NE(got.find(c.expect), std::string::npos) << c.host << " " << c.keys << " => " << got;
  }
}

TEST(ServerTls, RequireNeverFallsBackToPlainText) {
  // The usual test PostgreSQL has no TLS: it answers the SSLRequest with 'N'.
  PgwardConfig config;
  config.databases = PgwardConfig::database_toml(kDatabase, kDatabase, "server_tls_mode = \"require\"\n");
  Pgward pgward(config);
  Conn conn = Conn::connect(pgward.conninfo());
  EXPECT_FALSE(conn.ok());
  EXPECT_NE(conn.error().find("server does not support SSL, but SSL was required"), std::string::npos)
      << conn.error();
  // prefer: the 'N' means plain text.
  PgwardConfig prefer;
  prefer.databases = PgwardConfig::database_toml(kDatabase, kDatabase, "server_tls_mode = \"prefer\"\n");
  Pgward fallback(prefer);
  Conn plain = fallback.connect();
  ASSERT_TRUE(plain.ok()) << plain.error();
  EXPECT_EQ(query_value(plain, "SELECT 'plain'"), "plain");
}

TEST(ServerTls, CertificateAuthenticationToTheServer) {
  const TlsFiles& f = tls_files();
  const std::string cert = "server_tls_cert_file = \"" + f.path("cert_user.crt") +
                           "\"\nserver_tls_key_file = \"" + f.path("cert_user.key") + "\"\n";
  Pgward pgward(server_tls_config("localhost",
                                  "server_tls_mode = \"verify-full\"\n" + ca_key("ca.crt") + cert,
                                  "user = \"pgward_cert\"\n"));
  Conn conn;
  EXPECT_EQ(backend_ssl(pgward, conn), "true pgward_cert");
  // Without the certificate PostgreSQL refuses the cert login.
  Pgward without(server_tls_config("localhost", "server_tls_mode = \"verify-full\"\n" + ca_key("ca.crt"),
                                   "user = \"pgward_cert\"\n"));
  Conn refused;
  const std::string got = backend_ssl(without, refused);
  EXPECT_NE(got.find("failed"), std::string::npos) << got;
}

// The "tls" column of each row of a console SHOW, by the value of its "state" column.
std::map<std::string, std::string> tls_by_state(PGconn* console, const std::string& show) {
  std::map<std::string, std::string> out;
  Result r = exec(console, show);
  const int state = PQfnumber(r.get(), "state");
  const int tls = PQfnumber(r.get(), "tls");
  for (int row = 0; state >= 0 && tls >= 0 && row < PQntuples(r.get()); ++row)
    out[PQgetvalue(r.get(), row, state)] =
        PQgetisnull(r.get(), row, tls) ? "NULL" : PQgetvalue(r.get(), row, tls);
  return out;
}

TEST(ServerTls, ScramOverTlsAndTheAdminViews) {
  const TlsFiles& f = tls_files();
  const int admin_port = free_port();
  PgwardConfig config = server_tls_config(
      "localhost", "server_tls_mode = \"verify-full\"\n" + ca_key("ca.crt"),
      "user = \"app\"\npassword = \"apppass\"\n[admin]\nlisten = \"127.0.0.1:" + std::to_string(admin_port) +
          "\"\nconsole_users = [\"" + kTrustUser + "\"]\n[client_tls]\nmode = \"prefer\"\ncert_file = \"" +
          f.path("pgward.crt") + "\"\nkey_file = \"" + f.path("pgward.key") + "\"\n");
  Pgward pgward(config);
  Conn conn;
  EXPECT_EQ(backend_ssl(pgward, conn), "true app");
  // In a transaction the server stays linked: active servers show their TLS too, in /api and the console.
  exec(conn, "BEGIN");
  const std::string active = http(admin_port, "GET", "/api/servers").body;
  EXPECT_TRUE(std::regex_search(active, std::regex(R"("state":"active"[^}]*"tls":"TLSv1\.3 )"))) << active;
  Conn console = Conn::connect(pgward.conninfo(kTrustUser, "pgward") + " sslmode=disable");
  ASSERT_TRUE(console.ok()) << console.error();
  const auto servers_shown = tls_by_state(console, "SHOW SERVERS");
  EXPECT_EQ(servers_shown.count("active"), 1u);
  EXPECT_EQ(servers_shown.count("active") ? servers_shown.at("active").rfind("TLSv1.3 ", 0) : 1, 0u);
  // The client came over TLS (libpq's default prefer); the console session in plain text.
  const auto clients_shown = tls_by_state(console, "SHOW CLIENTS");
  EXPECT_EQ(clients_shown.count("active") ? clients_shown.at("active").rfind("TLSv1.3 ", 0) : 1, 0u);
  EXPECT_EQ(clients_shown.count("idle") ? clients_shown.at("idle") : "", "NULL");
  exec(conn, "COMMIT");
  conn = Conn();
  const std::string servers = http(admin_port, "GET", "/api/servers").body;
  EXPECT_TRUE(std::regex_search(servers, std::regex(R"("state":"idle"[^}]*"tls":"TLSv1\.3 )"))) << servers;
  EXPECT_EQ(tls_by_state(console, "SHOW SERVERS").at("idle").rfind("TLSv1.3 ", 0), 0u);
  const std::string metrics = http(admin_port, "GET", "/metrics").body;
  EXPECT_GE(sample(metrics, "pgward_tls_handshakes_total", "result=\"ok\",side=\"server\"").value_or(0), 1)
      << metrics;
}

// The TLS PostgreSQL offers SCRAM-SHA-256-PLUS: pgward binds the exchange to the server's certificate, with a
// password and in SCRAM pass-through alike. (PostgreSQL 15 shows no binding in a view; pgward's log names
// the mechanism it used.)
TEST(ServerTls, ScramBindsToTheServerCertificate) {
  const std::string verify = "server_tls_mode = \"verify-full\"\n" + ca_key("ca.crt");
  {
    Pgward pgward(server_tls_config("localhost", verify, "user = \"app\"\npassword = \"apppass\"\n"));
    Conn conn;
    EXPECT_EQ(backend_ssl(pgward, conn), "true app");
    EXPECT_NE(pgward.log().find("user app, SCRAM-SHA-256-PLUS)"), std::string::npos) << pgward.log_tail(20);
  }
  // Pass-through: the keys a client's proof revealed, checked against the TLS PostgreSQL's own verifier.
  Conn direct = Conn::connect("host=127.0.0.1 port=" + std::to_string(tls_pg_port()) +
                              " user=postgres dbname=postgres sslmode=require");
  ASSERT_TRUE(direct.ok()) << direct.error();
  const std::string verifier = query_value(direct, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
  ASSERT_EQ(verifier.rfind("SCRAM-SHA-256$", 0), 0u) << verifier;
  PgwardConfig config = server_tls_config("localhost", verify);
  config.auth = "type = \"scram-sha-256\"\n";
  config.users = "app = \"" + verifier + "\"\n";
  Pgward pgward(config);
  Conn conn = pgward.connect("app", "app", "apppass");
  ASSERT_TRUE(conn.ok()) << conn.error();
  EXPECT_EQ(query_value(conn, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"), "true");
  EXPECT_NE(pgward.log().find("user app, SCRAM-SHA-256-PLUS)"), std::string::npos) << pgward.log_tail(20);
}

// A TLS server pgward closes on idle timeout gets Terminate and close_notify: PostgreSQL logs an orderly
// disconnection, no reset or unexpected EOF.
TEST(ServerTls, IdleServerIsClosedInOrder) {
  PgwardConfig config = server_tls_config("localhost", "server_tls_mode = \"require\"\n");
  config.pool = "mode = \"transaction\"\nsize = 2\nserver_idle_timeout = \"1s\"\n";
  const std::size_t log_from = tls_pg_log().size();
  Pgward pgward(config);
  std::string pid;
  {
    Conn conn = Conn::connect(pgward.conninfo());
    ASSERT_TRUE(conn.ok()) << conn.error();
    pid = query_value(conn, "SELECT pg_backend_pid()");
  }
  ASSERT_FALSE(pid.empty());
  const std::string tag = "[" + pid + "] ";
  std::string log;
  // pgward closed it (idle timeout), and PostgreSQL has ended that backend.
  EXPECT_TRUE(wait_until(
      [&] {
        log = tls_pg_log().substr(log_from);
        return pgward.log().find("closed (localhost:") != std::string::npos &&
               log.find(tag + "LOG:  disconnection") != std::string::npos;
      },
      10s))
      << log << pgward.log_tail(20);
  for (const char* bad : {"Connection reset by peer", "unexpected EOF", "SSL error"}) {
    for (std::size_t at = log.find(tag); at != std::string::npos; at = log.find(tag, at + 1)) {
      const std::string line = log.substr(at, log.find('\n', at) - at);
      EXPECT_EQ(line.find(bad), std::string::npos) << line;
    }
  }
}

TEST(ServerTls, FailedVerificationIsCountedAndNotRetried) {
  Pgward pgward(server_tls_config("127.0.0.1", "server_tls_mode = \"verify-full\"\n" + ca_key("ca.crt")));
  const auto start = Clock::now();
  Conn conn = Conn::connect(pgward.conninfo());
  EXPECT_FALSE(conn.ok());
  EXPECT_EQ(conn.connect_sqlstate(), "08001") << conn.error();
  // A certificate that does not verify will not verify on a retry: the client hears at once.
  EXPECT_LT(Clock::now() - start, 5s);
  const std::string metrics = http(pgward.admin_port(), "GET", "/metrics").body;
  EXPECT_EQ(sample(metrics, "pgward_tls_handshakes_total", "result=\"failed\",side=\"server\""), 1)
      << metrics;
}

}  // namespace
}  // namespace pgward::it
