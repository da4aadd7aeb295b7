// TLS towards clients ([client_tls]): each libpq sslmode against each pgward mode, client certificates,
// PostgreSQL 17 direct TLS with ALPN, hostile input around the handshake, and the relay over TLS.
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <vector>

#include "harness.hpp"
#include "tls_env.hpp"

namespace pgward::it {
namespace {

// A pgward in front of the plain test PostgreSQL with [client_tls] in MODE, its certificate signed by the
// test CA (which also signs the client certificates it accepts).
PgwardConfig client_tls_config(std::string_view mode, std::string_view proxy_extra = "") {
  const TlsFiles& f = tls_files();
  PgwardConfig config;
  config.proxy += std::string(proxy_extra);
  config.databases += "\n[client_tls]\nmode = \"" + std::string(mode) + "\"\ncert_file = \"" +
                      f.path("pgward.crt") + "\"\nkey_file = \"" + f.path("pgward.key") + "\"\nca_file = \"" +
                      f.path("ca.crt") + "\"\n";
  return config;
}

// libpq's TLS keywords: SSLMODE, the test CA as root, and the client certificate CERT ("" for none).
std::string ssl_keywords(std::string_view sslmode, std::string_view cert = "",
                         std::string_view root = "ca.crt") {
  const TlsFiles& f = tls_files();
  std::string s = " sslmode=" + std::string(sslmode) + " sslrootcert=" + f.path(std::string(root));
  // A name that does not exist: libpq then sends no certificate (rather than ~/.postgresql's).
  s += " sslcert=" + (cert.empty() ? f.path("none.crt") : f.path(std::string(cert) + ".crt"));
  s += " sslkey=" + (cert.empty() ? f.path("none.key") : f.path(std::string(cert) + ".key"));
  return s;
}

struct Case {
  const char* pgward_mode;
  const char* sslmode;
  const char* cert;      // client certificate, "" for none
  bool ok;               // the login succeeds
  bool tls;              // ... over TLS
  const char* sqlstate;  // when it fails: the SQLSTATE pgward sent ("" when the handshake failed)
};

void check(const Pgward& pgward, const Case& c) {
  const std::string what = std::string("pgward ") + c.pgward_mode + ", libpq sslmode=" + c.sslmode +
                           (*c.cert ? std::string(", certificate ") + c.cert : std::string());
  Conn conn = Conn::connect(pgward.conninfo() + ssl_keywords(c.sslmode, c.cert));
  if (!c.ok) {
    EXPECT_FALSE(conn.ok()) << what;
    EXPECT_EQ(conn.connect_sqlstate(), c.sqlstate) << what << ": " << conn.error();
    return;
  }
  ASSERT_TRUE(conn.ok()) << what << ": " << conn.error();
  EXPECT_EQ(PQsslInUse(conn) == 1, c.tls) << what;
  EXPECT_EQ(query_value(conn, "SELECT 'through ' || current_user"), "through pgward_trust") << what;
}

TEST(ClientTls, EachSslmodeAgainstDisable) {
  Pgward pgward(client_tls_config("disable"));
  for (const Case& c :
       {Case{"disable", "disable", "", true, false, ""}, Case{"disable", "prefer", "", true, false, ""},
        Case{"disable", "require", "", false, false, ""}})
    check(pgward, c);
}

TEST(ClientTls, EachSslmodeAgainstAllowAndPrefer) {
  for (const char* mode : {"allow", "prefer"}) {
    Pgward pgward(client_tls_config(mode));
    for (const Case& c :
         {Case{mode, "disable", "", true, false, ""}, Case{mode, "prefer", "", true, true, ""},
          Case{mode, "require", "", true, true, ""}, Case{mode, "verify-ca", "", true, true, ""},
          Case{mode, "verify-full", "", true, true, ""}})
      check(pgward, c);
  }
}

TEST(ClientTls, RequireRefusesPlainText) {
  Pgward pgward(client_tls_config("require"));
  for (const Case& c :
       {Case{"require", "disable", "", false, false, "28000"}, Case{"require", "prefer", "", true, true, ""},
        Case{"require", "require", "", true, true, ""}})
    check(pgward, c);
  Conn plain = Conn::connect(pgward.conninfo() + " sslmode=disable");
  EXPECT_NE(plain.error().find("TLS"), std::string::npos) << plain.error();
}

TEST(ClientTls, VerifyCaNeedsACertificateFromTheCa) {
  Pgward pgward(client_tls_config("verify-ca"));
  for (const Case& c : {Case{"verify-ca", "require", "", false, false, "28000"},
                        Case{"verify-ca", "require", "client", true, true, ""},
                        Case{"verify-ca", "verify-full", "stranger", true, true, ""},  // no name check
                        Case{"verify-ca", "require", "rogue", false, false, ""},       // handshake fails
                        Case{"verify-ca", "disable", "client", false, false, "28000"}})
    check(pgward, c);
}

TEST(ClientTls, VerifyFullChecksTheNameAgainstTheUser) {
  Pgward pgward(client_tls_config("verify-full"));
  for (const Case& c : {Case{"verify-full", "verify-full", "client", true, true, ""},
                        Case{"verify-full", "require", "stranger", false, false, "28000"},
                        Case{"verify-full", "require", "", false, false, "28000"}})
    check(pgward, c);
  Conn stranger = Conn::connect(pgward.conninfo() + ssl_keywords("require", "stranger"));
  EXPECT_NE(stranger.error().find("CN mismatch"), std::string::npos) << stranger.error();
}

TEST(ClientTls, LibpqRefusesPgwardUnderAnotherCa) {
  Pgward pgward(client_tls_config("prefer"));
  Conn conn = Conn::connect(pgward.conninfo() + ssl_keywords("verify-ca", "", "other_ca.crt"));
  EXPECT_FALSE(conn.ok());
  EXPECT_NE(conn.error().find("certificate verify failed"), std::string::npos) << conn.error();
  // pgward's certificate names localhost and 127.0.0.1, nothing else.
  Conn wrong_host = Conn::connect("host=127.0.0.1 hostaddr=127.0.0.1 port=" + std::to_string(pgward.port()) +
                                  " user=pgward_trust dbname=app" + ssl_keywords("verify-full"));
  EXPECT_TRUE(wrong_host.ok()) << wrong_host.error();
}

TEST(ClientTls, RelayCarriesLargeResultsAndCopyOverTls) {
  Pgward pgward(client_tls_config("require"));
  Conn conn = Conn::connect(pgward.conninfo() + ssl_keywords("require"));
  ASSERT_TRUE(conn.ok()) << conn.error();
  ASSERT_EQ(PQsslInUse(conn), 1);
  // About 6.4 MB towards the client, in rows that straddle TLS records.
  Result big = exec(conn, "SELECT repeat(md5(i::text), 100) FROM generate_series(1, 2000) i");
  ASSERT_EQ(PQntuples(big.get()), 2000);
  for (int i = 0; i < 2000; ++i) ASSERT_EQ(PQgetlength(big.get(), i, 0), 3200) << "row " << i;
  // And about 6.4 MB the other way, with COPY.
  const std::string table = unique_name("tls_copy");
  exec(conn, "CREATE TABLE " + table + " (t text)");
  Result copy(PQexec(conn, ("COPY " + table + " FROM STDIN").c_str()));
  ASSERT_EQ(PQresultStatus(copy.get()), PGRES_COPY_IN) << PQerrorMessage(conn);
  const std::string line = std::string(3199, 'y') + "\n";
  for (int i = 0; i < 2000; ++i)
    ASSERT_EQ(PQputCopyData(conn, line.data(), static_cast<int>(line.size())), 1);
  ASSERT_EQ(PQputCopyEnd(conn, nullptr), 1);
  Result done(PQgetResult(conn));
  ASSERT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn);
  while (Result more{PQgetResult(conn)}) {
  }
  EXPECT_EQ(query_value(conn, "SELECT count(*) || ' ' || sum(length(t)) FROM " + table), "2000 6398000");
  exec(conn, "DROP TABLE " + table);
}

TEST(ClientTls, ScramChannelBinding) {
  PgwardConfig config = client_tls_config("prefer");
  config.auth = "type = \"scram-sha-256\"\n";
  config.users = "app = \"apppass\"\n";
  Pgward pgward(config);
  // Over TLS libpq picks SCRAM-SHA-256-PLUS (tls-server-end-point); require insists on it.
  for (const char* binding : {"require", "prefer", "disable"}) {
    Conn conn = Conn::connect(pgward.conninfo(kAppUser, kDatabase, kAppPassword) +
                              ssl_keywords("verify-full") + " channel_binding=" + binding);
    ASSERT_TRUE(conn.ok()) << "channel_binding=" << binding << ": " << conn.error();
    EXPECT_EQ(query_value(conn, "SELECT current_user"), kAppUser);
  }
  // Without TLS there is nothing to bind to: libpq's require refuses pgward's plain SCRAM.
  Conn plain = Conn::connect(pgward.conninfo(kAppUser, kDatabase, kAppPassword) +
                             " sslmode=disable channel_binding=require");
  EXPECT_FALSE(plain.ok());
  Conn wrong = Conn::connect(pgward.conninfo(kAppUser, kDatabase, "wrong") + ssl_keywords("require") +
                             " channel_binding=require");
  EXPECT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.connect_sqlstate(), "28P01") << wrong.error();
}

// ---- hostile input around the handshake ----

std::string gssenc_request() { return wire::u32(8) + wire::u32(80877104); }

TEST(ClientTls, PlaintextPipelinedAfterSslRequestIsRefused) {
  Pgward pgward(client_tls_config("prefer"));
  RawClient client(pgward.port(), 5s);
  client.send(wire::ssl_request() + wire::startup(trust_login_params()));
  // Refused before any 'S': the startup packet would otherwise be read as if it had come over TLS.
  auto message = client.read_message();
  ASSERT_TRUE(message) << "no answer";
  ASSERT_EQ(message->type, 'E');
  EXPECT_EQ(parse_error(*message)['C'], "08P01");
  EXPECT_NE(parse_error(*message)['M'].find("unencrypted data after SSL request"), std::string::npos);
  EXPECT_TRUE(client.wait_closed());
}

TEST(ClientTls, GssEncRequestIsStillDeclined) {
  Pgward pgward(client_tls_config("prefer"));
  RawClient client(pgward.port(), 5s);
  ASSERT_TRUE(client.send(gssenc_request()));
  EXPECT_EQ(client.read_bytes(1), std::optional<std::string>("N"));
  client.login(trust_login_params());
  EXPECT_EQ(client.query_value("SELECT 'plain after GSSENC'"), "plain after GSSENC");
}

TEST(ClientTls, StalledAndGarbageHandshakesEndAndCountWhileOthersGoOn) {
  Pgward pgward(client_tls_config("prefer", "client_login_timeout = \"1s\"\n"));
  Conn other = Conn::connect(pgward.conninfo() + ssl_keywords("require"));
  ASSERT_TRUE(other.ok()) << other.error();

  RawClient stalled(pgward.port(), 10s);
  ASSERT_TRUE(stalled.send(wire::ssl_request()));
  ASSERT_EQ(stalled.read_bytes(1), std::optional<std::string>("S"));
  const auto start = Clock::now();
  EXPECT_TRUE(stalled.wait_closed())
      << "a client silent inside the handshake is closed at client_login_timeout";
  EXPECT_LT(Clock::now() - start, 8s);

  RawClient garbage(pgward.port(), 10s);
  ASSERT_TRUE(garbage.send(wire::ssl_request()));
  ASSERT_EQ(garbage.read_bytes(1), std::optional<std::string>("S"));
  garbage.send("GET / HTTP/1.1\r\nHost: pgward\r\n\r\n");
  EXPECT_TRUE(garbage.wait_closed());

  EXPECT_EQ(query_value(other, "SELECT 'still here'"), "still here");
  const auto metrics = http(pgward.admin_port(), "GET", "/metrics").body;
  EXPECT_GE(sample(metrics, "pgward_tls_handshakes_total", "result=\"failed\",side=\"client\"").value_or(0),
            2)
      << metrics;
  EXPECT_GE(sample(metrics, "pgward_tls_handshakes_total", "result=\"ok\",side=\"client\"").value_or(0), 1);
  EXPECT_TRUE(sample(metrics, "pgward_tls_certificate_expiry_timestamp_seconds", "side=\"client\""));
}

// ---- PostgreSQL 17 direct TLS ----

// Speaks direct TLS with Python's ssl module (libpq 15 cannot): prints the answer to SELECT 1, or what went
// wrong. argv: port, CA file, ALPN protocol ("" for none).
constexpr const char* kDirectTlsClient = R"py(
import socket, ssl, struct, sys
port, ca, alpn = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
if alpn:
    ctx.set_alpn_protocols([alpn])
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
except (ssl.SSLError, OSError) as e:
    print("handshake failed:", e); sys.exit(0)
def send(b): s.sendall(b)
def msg():
    head = b""
    while len(head) < 5:
        part = s.recv(5 - len(head))
        if not part: return None, None
        head += part
    n = struct.unpack("!I", head[1:])[0] - 4
    body = b""
    while len(body) < n:
        part = s.recv(n - len(body))
        if not part: return None, None
        body += part
    return head[:1], body
params = b"user\0pgward_trust\0database\0app\0\0"
try:
    send(struct.pack("!II", 8 + len(params), 196608) + params)
    while True:
        t, body = msg()
        if t is None: print("closed"); sys.exit(0)
        if t == b"E": print("error:", body); sys.exit(0)
        if t == b"Z": break
    q = b"SELECT 'direct ' || 1\0"
    send(b"Q" + struct.pack("!I", 4 + len(q)) + q)
    while True:
        t, body = msg()
        if t == b"D": print(body[6:].decode())
        if t is None or t == b"Z": break
except (ssl.SSLError, OSError) as e:
    print("closed:", e)
)py";

std::string run_direct_tls(int port, const std::string& alpn) {
  const TlsFiles& f = tls_files();
  const std::string script = f.path("direct_tls.py");
  write_text_file(script, kDirectTlsClient);
  const std::string out = f.path(unique_name("direct") + ".out");
  run_program({"/usr/bin/python3", script, std::to_string(port), f.path("ca.crt"), alpn}, out);
  return read_text_file(out);
}

TEST(ClientTls, DirectTlsWithAlpn) {
  Pgward pgward(client_tls_config("require"));
  EXPECT_EQ(run_direct_tls(pgward.port(), "postgresql"), "direct 1\n");
  // PostgreSQL 17 refuses direct TLS without ALPN "postgresql", and so does pgward.
  const std::string without = run_direct_tls(pgward.port(), "");
  EXPECT_EQ(without.find("direct 1"), std::string::npos) << without;
  const std::string other = run_direct_tls(pgward.port(), "http/1.1");
  EXPECT_NE(other.find("handshake failed"), std::string::npos) << other;
}

TEST(ClientTls, DirectTlsNeedsTlsEnabled) {
  Pgward pgward(client_tls_config("disable"));
  const std::string out = run_direct_tls(pgward.port(), "postgresql");
  EXPECT_EQ(out.find("direct 1"), std::string::npos) << out;
  Conn plain = pgward.connect();
  EXPECT_TRUE(plain.ok()) << plain.error();
}

// ---- reload ----

// SIGHUP, then waits until pgward has counted a reload with RESULT ("ok" or "failed").
void reload(const Pgward& pgward, const char* result, double expected) {
  ASSERT_EQ(kill(pgward.pid(), SIGHUP), 0);
  const std::string label = std::string("result=\"") + result + "\"";
  EXPECT_TRUE(wait_until(
      [&] {
        const auto metrics = http(pgward.admin_port(), "GET", "/metrics").body;
        return sample(metrics, "pgward_config_reloads_total", label) == expected;
      },
      10s))
      << "no reload counted as " << result;
}

TEST(ClientTls, CertificateReloadKeepsConnectionsAndABadKeyKeepsTheOldFiles) {
  const TlsFiles& f = tls_files();
  const std::string live = unique_name("live");
  const std::string cert = f.path(live + ".crt");
  const std::string key = f.path(live + ".key");
  write_text_file(cert, read_text_file(f.path("pgward.crt")));
  write_text_file(key, read_text_file(f.path("pgward.key")));
  PgwardConfig config;
  config.databases +=
      "\n[client_tls]\nmode = \"require\"\ncert_file = \"" + cert + "\"\nkey_file = \"" + key + "\"\n";
  Pgward pgward(config);
  Conn kept = Conn::connect(pgward.conninfo() + ssl_keywords("verify-ca"));
  ASSERT_TRUE(kept.ok()) << kept.error();

  // New files: a certificate from the other CA (rogue.crt serves as a server certificate here).
  write_text_file(cert, read_text_file(f.path("rogue.crt")));
  write_text_file(key, read_text_file(f.path("rogue.key")));
  reload(pgward, "ok", 1);
  EXPECT_EQ(query_value(kept, "SELECT 'kept across the reload'"), "kept across the reload");
  Conn old_ca = Conn::connect(pgward.conninfo() + ssl_keywords("verify-ca"));
  EXPECT_FALSE(old_ca.ok()) << "new handshakes use the new certificate";
  Conn new_ca = Conn::connect(pgward.conninfo() + ssl_keywords("verify-ca", "", "other_ca.crt"));
  EXPECT_TRUE(new_ca.ok()) << new_ca.error();

  // A key that does not match: the reload fails and the running files stay.
  write_text_file(key, read_text_file(f.path("client.key")));
  reload(pgward, "failed", 1);
  EXPECT_NE(pgward.log().find("does not match the certificate"), std::string::npos);
  Conn still = Conn::connect(pgward.conninfo() + ssl_keywords("verify-ca", "", "other_ca.crt"));
  EXPECT_TRUE(still.ok()) << still.error();
  EXPECT_EQ(query_value(kept, "SELECT 'still kept'"), "still kept");
  EXPECT_EQ(query_value(new_ca, "SELECT 'new kept'"), "new kept");
}

// ---- --check-config ----

// `pgward --check-config` on TEXT: its exit code and output.
std::pair<int, std::string> check_config(const std::string& text) {
  const std::string path = tls_files().path(unique_name("check") + ".toml");
  write_text_file(path, text);
  std::string output;
  FILE* p = popen((std::string(PGWARD_BINARY) + " --check-config " + path + " 2>&1").c_str(), "r");
  if (!p) return {-1, ""};
  char buf[512];
  while (fgets(buf, sizeof buf, p)) output += buf;
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST(TlsConfig, CheckConfigNamesTheLineOfABadCertificateOrKey) {
  const TlsFiles& f = tls_files();
  const std::string head = "[auth]\ntype = \"trust\"\n[[database]]\nname = \"app\"\n[client_tls]\n";
  const struct {
    std::string table;  // after head, which ends on line 5
    std::string expected;
  } cases[] = {
      {"mode = \"require\"\ncert_file = \"" + f.path("pgward.crt") + "\"\nkey_file = \"" +
           f.path("client.key") + "\"\n",
       ":8: client_tls.key_file: the key in"},
      {"mode = \"require\"\ncert_file = \"" + f.path("missing.crt") + "\"\nkey_file = \"" +
           f.path("pgward.key") + "\"\n",
       ":7: client_tls.cert_file: cannot read"},
      {"mode = \"require\"\ncert_file = \"" + f.path("pgward.key") + "\"\nkey_file = \"" +
           f.path("pgward.key") + "\"\n",
       ":7: client_tls.cert_file: "},
      {"mode = \"require\"\n", ":5: client_tls: mode \"require\" needs cert_file and key_file"},
      {"mode = \"verify-ca\"\ncert_file = \"" + f.path("pgward.crt") + "\"\nkey_file = \"" +
           f.path("pgward.key") + "\"\n",
       ":5: client_tls: mode \"verify-ca\" needs ca_file"},
      {"mode = \"sometimes\"\n", ":6: client_tls.mode: unknown value"},
  };
  for (const auto& c : cases) {
    const auto [code, output] = check_config(head + c.table);
    EXPECT_EQ(code, 1) << c.table << output;
    EXPECT_NE(output.find(c.expected), std::string::npos) << c.table << "\n" << output;
  }
  const auto [ok_code, ok_output] =
      check_config(head + "mode = \"verify-full\"\ncert_file = \"" + f.path("pgward.crt") +
                   "\"\nkey_file = \"" + f.path("pgward.key") + "\"\nca_file = \"" + f.path("ca.crt") +
                   "\"\n[server_tls]\nmode = \"verify-full\"\nca_file = \"" + f.path("ca.crt") + "\"\n");
  EXPECT_EQ(ok_code, 0) << ok_output;
  const auto [db_code, db_output] = check_config(
      "[auth]\ntype = \"trust\"\n[[database]]\nname = \"app\"\nserver_tls_mode = \"verify-ca\"\n"
      "server_tls_cert_file = \"" +
      f.path("cert_user.crt") + "\"\n");
  EXPECT_EQ(db_code, 1);
  EXPECT_NE(db_output.find("cert_file and key_file go together"), std::string::npos) << db_output;
}

}  // namespace
}  // namespace pgward::it
