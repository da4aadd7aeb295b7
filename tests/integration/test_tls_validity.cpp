// Certificates outside their validity period, on each side: pgward's own towards clients, PostgreSQL's
// towards pgward, a client's towards pgward. Each is refused as libpq/PostgreSQL would, and counted.
#include <string>

#include "harness.hpp"
#include "tls_env.hpp"

namespace pgward::it {
namespace {

double handshakes(const Pgward& pgward, std::string_view side, std::string_view result) {
  const std::string metrics = http(pgward.admin_port(), "GET", "/metrics").body;
  const std::string labels = "result=\"" + std::string(result) + "\",side=\"" + std::string(side) + "\"";
  return sample(metrics, "pgward_tls_handshakes_total", labels).value_or(0);
}

// libpq keywords for a TLS login with CERT ("" for none) and ROOT as root certificates (a file that does not
// exist: none, and then "require" checks nothing, where with a root it checks the chain).
std::string libpq_tls(std::string_view sslmode, std::string_view cert = "",
                      std::string_view root = "ca.crt") {
  const TlsFiles& f = tls_files();
  const std::string name = cert.empty() ? "none" : std::string(cert);
  return " sslmode=" + std::string(sslmode) + " sslrootcert=" + f.path(std::string(root)) +
         " sslcert=" + f.path(name + ".crt") + " sslkey=" + f.path(name + ".key");
}

TEST(TlsValidity, ExpiredCertificateOfPgwardFailsAVerifyingClient) {
  const TlsFiles& f = tls_files();
  PgwardConfig config;
  config.databases += "\n[client_tls]\nmode = \"require\"\ncert_file = \"" + f.path("pgward_expired.crt") +
                      "\"\nkey_file = \"" + f.path("pgward_expired.key") + "\"\n";
  Pgward pgward(config);
  Conn refused = Conn::connect(pgward.conninfo() + libpq_tls("verify-ca"));
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.error().find("certificate verify failed"), std::string::npos) << refused.error();
  // The client gave up on pgward's certificate, pgward counts the handshake that failed under it.
  EXPECT_TRUE(wait_until([&] { return handshakes(pgward, "client", "failed") == 1; }, 5s))
      << http(pgward.admin_port(), "GET", "/metrics").body;
  // Without verification (libpq's require) the same certificate is taken: the date is what failed above.
  Conn unverified = Conn::connect(pgward.conninfo() + libpq_tls("require", "", "none.crt"));
  ASSERT_TRUE(unverified.ok()) << unverified.error();
  EXPECT_EQ(handshakes(pgward, "client", "ok"), 1);
}

TEST(TlsValidity, ClientCertificateOutOfDateIsRefused) {
  const TlsFiles& f = tls_files();
  PgwardConfig config;
  config.databases += "\n[client_tls]\nmode = \"verify-ca\"\ncert_file = \"" + f.path("pgward.crt") +
                      "\"\nkey_file = \"" + f.path("pgward.key") + "\"\nca_file = \"" + f.path("ca.crt") +
                      "\"\n";
  Pgward pgward(config);
  for (const char* cert : {"client_expired", "client_future"}) {
    Conn conn = Conn::connect(pgward.conninfo() + libpq_tls("verify-full", cert));
    EXPECT_FALSE(conn.ok()) << cert;
    EXPECT_EQ(conn.connect_sqlstate(), "") << cert << ": the handshake fails, " << conn.error();
  }
  EXPECT_TRUE(wait_until([&] { return handshakes(pgward, "client", "failed") == 2; }, 5s));
  // The same key with its certificate in date is accepted.
  Conn valid = Conn::connect(pgward.conninfo() + libpq_tls("verify-full", "client"));
  ASSERT_TRUE(valid.ok()) << valid.error();
  EXPECT_EQ(query_value(valid, "SELECT 'in date'"), "in date");
}

// Points the TLS PostgreSQL at another certificate for its key (ALTER SYSTEM, reload) until destroyed.
class TlsPgCertificate {
 public:
  explicit TlsPgCertificate(const std::string& file) {
    set("ALTER SYSTEM SET ssl_cert_file = '" + file + "'");
  }
  ~TlsPgCertificate() { set("ALTER SYSTEM RESET ssl_cert_file"); }

 private:
  static std::string conninfo() { return "host=localhost port=" + std::to_string(tls_pg_port()) + " "; }
  static void set(const std::string& sql) {
    Conn admin =
        Conn::connect(conninfo() + "user=postgres dbname=postgres" + libpq_tls("require", "", "none.crt"));
    ASSERT_TRUE(admin.ok()) << admin.error();
    exec(admin, sql);
    exec(admin, "SELECT pg_reload_conf()");
    // The postmaster reloads its TLS files after the settings: wait until a new connection sees the new
    // certificate (whether the original verifies).
    const bool original = sql.find("RESET") != std::string::npos;
    EXPECT_TRUE(wait_until(
        [&] {
          Conn probe = Conn::connect(conninfo() + "user=pgward_trust dbname=app" + libpq_tls("verify-full"));
          return probe.ok() == original;
        },
        10s))
        << sql << "\n"
        << [] {
             const std::string log = tls_pg_log();
             return log.substr(log.size() > 1500 ? log.size() - 1500 : 0);
           }();
  }
};

// Database "app" on the TLS PostgreSQL, its certificate checked against the test CA.
PgwardConfig verify_ca_config() {
  PgwardConfig config;
  config.databases =
      "[[database]]\nname = \"app\"\nhost = \"localhost\"\nport = " + std::to_string(tls_pg_port()) +
      "\ndbname = \"app\"\nserver_tls_mode = \"verify-ca\"\n" + "server_tls_ca_file = \"" +
      tls_files().path("ca.crt") + "\"\n";
  return config;
}

TEST(TlsValidity, ServerCertificateOutOfDateFailsTheCheckoutAtOnce) {
  const TlsFiles& f = tls_files();
  const struct {
    const char* file;
    const char* reason;
  } cases[] = {{"pg_expired.crt", "certificate has expired"},
               {"pg_future.crt", "certificate is not yet valid"}};
  for (const auto& c : cases) {
    TlsPgCertificate swapped(f.path(c.file));
    Pgward pgward(verify_ca_config());
    const auto start = Clock::now();
    Conn conn = Conn::connect(pgward.conninfo());
    EXPECT_FALSE(conn.ok()) << c.file;
    EXPECT_EQ(conn.connect_sqlstate(), "08001") << c.file << ": " << conn.error();
    EXPECT_NE(conn.error().find(c.reason), std::string::npos) << conn.error();
    EXPECT_LT(Clock::now() - start, 5s) << "not retried";
    EXPECT_EQ(handshakes(pgward, "server", "failed"), 1) << c.file;
    EXPECT_EQ(handshakes(pgward, "server", "ok"), 0) << c.file;
  }
  // Back to the certificate in date: the same configuration logs in.
  Pgward pgward(verify_ca_config());
  Conn conn = Conn::connect(pgward.conninfo());
  ASSERT_TRUE(conn.ok()) << conn.error();
}

}  // namespace
}  // namespace pgward::it
