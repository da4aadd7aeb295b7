// --import-pgbouncer: pgbouncer.ini (and userlist.txt) => pgward TOML, checked by loading the result.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/config.hpp"
#include "config/pgbouncer_import.hpp"

namespace pgward::config {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

class PgbouncerImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "pgward-import-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr) << std::strerror(errno);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Writes NAME in the test folder; a leading newline is dropped so that line 1 follows R"(.
  std::string write(const fs::path& name, std::string_view text) {
    if (text.starts_with('\n')) text.remove_prefix(1);
    const fs::path path = dir_ / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
    return path.string();
  }

  std::string ini(std::string_view text) { return write("pgbouncer.ini", text); }

  // Converts, then loads the result as pgward would (users.toml written from the comment block if any).
  Config load_converted(const PgbouncerImport& result) {
    std::string users;
    std::istringstream in(result.toml);
    bool in_users = false;
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with("# users.toml")) {
        in_users = true;
      } else if (in_users && line.starts_with("# ")) {
        users += line.substr(2) + "\n";
      }
    }
    if (in_users) write("users.toml", users);
    return load_config(write("pgward.toml", result.toml));
  }

  std::string at(int line, std::string_view what) const {
    return (dir_ / "pgbouncer.ini").string() + ":" + std::to_string(line) + ": " + std::string(what);
  }

  std::string error(const std::string& path, const std::optional<std::string>& userlist = std::nullopt) {
    try {
      import_pgbouncer(path, userlist);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "converted";
  }

  fs::path dir_;
};

TEST_F(PgbouncerImportTest, TypicalIniConvertsAndLoads) {
  const std::string path = ini(R"(
;; a typical production file
[databases]
app = host=10.0.0.5 port=5433 dbname=app_prod user=app_rw password='s3cr et''x' pool_size=40
reports = host=db.internal dbname=reports pool_mode=session min_pool_size=2 max_db_connections=8
# local socket server
local = host=/var/run/postgresql dbname=local

[pgbouncer]
listen_addr = *
listen_port = 6433
auth_type = trust
pool_mode = transaction
max_client_conn = 500
default_pool_size = 25
min_pool_size = 1
query_wait_timeout = 12.5
server_idle_timeout = 300
server_lifetime = 1800
server_connect_timeout = 3
idle_transaction_timeout = 0
max_prepared_statements = 100
server_check_delay = 30
max_user_connections = 30
max_db_connections = 50
)");
  const PgbouncerImport result = import_pgbouncer(path);
  EXPECT_TRUE(result.warnings.empty()) << ::testing::PrintToString(result.warnings);
  const Config cfg = load_converted(result);
  ASSERT_EQ(cfg.listen.size(), 1u);
  EXPECT_EQ(cfg.listen[0], (Endpoint{"0.0.0.0", 6433}));
  EXPECT_EQ(cfg.max_client_conn, 500u);
  EXPECT_EQ(cfg.auth_type, AuthType::trust);
  EXPECT_EQ(cfg.pool.mode, PoolMode::transaction);
  EXPECT_EQ(cfg.pool.size, 25u);
  EXPECT_EQ(cfg.pool.min_size, 1u);
  EXPECT_EQ(cfg.pool.wait_timeout, milliseconds(12'500));
  EXPECT_EQ(cfg.pool.server_idle_timeout, seconds(300));
  EXPECT_EQ(cfg.pool.server_lifetime, seconds(1800));
  EXPECT_EQ(cfg.pool.server_connect_timeout, seconds(3));
  EXPECT_EQ(cfg.pool.idle_in_transaction_timeout, seconds(0));
  EXPECT_EQ(cfg.pool.max_prepared_statements, 100u);
  EXPECT_EQ(cfg.pool.server_check_delay, seconds(30));
  EXPECT_EQ(cfg.pool.max_user_connections, 30u);
  EXPECT_EQ(cfg.pool.max_db_connections, 50u);

  ASSERT_EQ(cfg.databases.size(), 3u);
  const Database& app = cfg.databases[0];
  EXPECT_EQ(app.name, "app");
  EXPECT_EQ(app.host, "10.0.0.5");
  EXPECT_EQ(app.port, 5433);
  EXPECT_EQ(app.dbname, "app_prod");
  EXPECT_EQ(app.user, "app_rw");
  EXPECT_EQ(app.password, "s3cr et'x");
  EXPECT_EQ(app.pool.size, 40u);
  EXPECT_EQ(app.pool.mode, PoolMode::transaction);
  const Database& reports = cfg.databases[1];
  EXPECT_EQ(reports.host, "db.internal");
  EXPECT_EQ(reports.port, 5432);
  EXPECT_EQ(reports.pool.mode, PoolMode::session);
  EXPECT_EQ(reports.pool.min_size, 2u);
  EXPECT_EQ(reports.pool.max_db_connections, 8u);
  EXPECT_EQ(app.pool.max_db_connections, 50u);
  EXPECT_EQ(reports.pool.size, 25u);
  EXPECT_EQ(cfg.databases[2].host, "/var/run/postgresql");
}

TEST_F(PgbouncerImportTest, UnsupportedSettingsWarnWithFileAndLine) {
  const std::string path = ini(R"(
[databases]
app = host=127.0.0.1 reserve_pool=5 client_encoding=UTF8
* = host=127.0.0.1 dbname=ignored
nohost = dbname=x

[users]
alice = pool_mode=session

[pgbouncer]
logfile = /var/log/pgbouncer.log
admin_users = admin
stats_users = stats
reserve_pool_size = 3
client_tls_sslmode = require
unix_socket_dir = /tmp
query_wait_timeout = 0
auth_type = hba
)");
  const PgbouncerImport result = import_pgbouncer(path);
  const std::vector<std::string> expected = {
      at(2, "app.reserve_pool: not supported by pgward"),
      at(2, "app.client_encoding: not supported by pgward"),
      at(3, "*.dbname: not supported: the fallback database serves each database under the client's name"),
      at(4,
         "nohost.host: not set: PgBouncer would use a Unix socket, pgward connects to 127.0.0.1 (set host to "
         "the socket directory to keep the socket)"),
      at(7, "alice: per-user pool settings are not supported by pgward"),
      at(10, "logfile: not needed: pgward logs to stderr"),
      at(12,
         "stats_users: not carried over: pgward's console has no read-only users (add them to [admin] "
         "console_users for full console access, or read the admin HTTP port's /api views)"),
      at(13, "reserve_pool_size: not supported: pgward has no reserve pool ([pool] size is a hard bound)"),
      at(14, "client_tls_sslmode: not supported: pgward has no TLS yet"),
      at(15, "unix_socket_dir: not supported: pgward listens on TCP only"),
      at(16, "query_wait_timeout: 0 (disabled) has no pgward equivalent; pgward's default applies"),
      at(17, "auth_type: \"hba\" is not supported by pgward (trust, md5 or scram-sha-256); using md5"),
  };
  EXPECT_EQ(result.warnings, expected);
  EXPECT_TRUE(contains(result.toml, "type = \"md5\"\nusers_file = \"users.toml\"\n")) << result.toml;
  EXPECT_TRUE(contains(result.toml, "[[database]]\nname = \"*\"\nhost = \"127.0.0.1\"\n")) << result.toml;
  EXPECT_TRUE(contains(result.toml, "[admin]\nconsole_users = [\"admin\"]\n")) << result.toml;
}

TEST_F(PgbouncerImportTest, AdminUsersBecomeConsoleUsers) {
  const std::string path = ini("[pgbouncer]\nadmin_users = ops, admin , ops,\n");
  const PgbouncerImport result = import_pgbouncer(path);
  EXPECT_TRUE(result.warnings.empty());
  EXPECT_TRUE(contains(result.toml, "[admin]\nconsole_users = [\"ops\", \"admin\"]\n")) << result.toml;
}

TEST_F(PgbouncerImportTest, IncludeIsRelativeToTheIniFolderAndWarningsNameTheIncludedFile) {
  const std::string included = write("conf.d/databases.ini", R"(
[databases]
app = host=127.0.0.1 dbname=app reserve_pool=2
)");
  const PgbouncerImport result = import_pgbouncer(ini(R"(
[pgbouncer]
auth_type = trust
%include conf.d/databases.ini
[pgbouncer]
default_pool_size = 7
)"));
  EXPECT_EQ(result.warnings,
            std::vector<std::string>{included + ":2: app.reserve_pool: not supported by pgward"});
  const Config cfg = load_converted(result);
  ASSERT_EQ(cfg.databases.size(), 1u);
  EXPECT_EQ(cfg.databases[0].dbname, "app");
  EXPECT_EQ(cfg.pool.size, 7u);

  write("conf.d/bad.ini", "[databases]\napp = host=x port=notaport\n");
  EXPECT_EQ(error(write("inc-bad.ini", "%include conf.d/bad.ini\n")),
            (dir_ / "conf.d/bad.ini").string() + ":2: app.port: bad port \"notaport\"");
  EXPECT_EQ(
      error(write("inc-missing.ini", "[pgbouncer]\n%include nowhere.ini\n")),
      (dir_ / "inc-missing.ini").string() + ":2: cannot read \"" + (dir_ / "nowhere.ini").string() + "\"");
  EXPECT_TRUE(contains(error(write("loop.ini", "%include loop.ini\n")), "nested too deep"));
}

TEST_F(PgbouncerImportTest, UserlistBecomesACommentedUsersFile) {
  const std::string userlist = write("userlist.txt", R"(
"alice" "md54a0a68b43b6cd5cf266fa02f196e2371"
;; a comment
"bob ""the"" builder" "plain pass"
"carol" ""
)");
  const std::string path = ini(R"(
[pgbouncer]
auth_type = md5
auth_file = /etc/pgbouncer/userlist.txt
[databases]
app = host=127.0.0.1
)");
  const PgbouncerImport without = import_pgbouncer(path);
  ASSERT_EQ(without.warnings.size(), 1u);
  EXPECT_EQ(without.warnings[0], at(3,
                                    "auth_file: PgBouncer's userlist format is not pgward's: convert it with "
                                    "--userlist FILE and save it as users.toml"));

  const PgbouncerImport with = import_pgbouncer(path, userlist);
  ASSERT_EQ(with.warnings.size(), 1u);
  EXPECT_EQ(with.warnings[0], userlist + ":4: carol: empty password: not supported by pgward, user left out");
  const Config cfg = load_converted(with);
  EXPECT_EQ(cfg.auth_type, AuthType::md5);
  ASSERT_EQ(cfg.users.size(), 2u);
  EXPECT_EQ(*cfg.find_user_secret("alice"), "md54a0a68b43b6cd5cf266fa02f196e2371");
  EXPECT_EQ(*cfg.find_user_secret("bob \"the\" builder"), "plain pass");

  EXPECT_EQ(error(path, write("bad-userlist.txt", "\"alice\" md5abc\n")),
            (dir_ / "bad-userlist.txt").string() + ":1: expected \"user\" \"password\"");
}

TEST_F(PgbouncerImportTest, ListenForms) {
  auto listen_of = [&](std::string_view pgbouncer) {
    const std::string path = ini("[pgbouncer]\nauth_type = trust\n" + std::string(pgbouncer));
    return load_converted(import_pgbouncer(path)).listen;
  };
  EXPECT_EQ(listen_of("listen_addr = 127.0.0.1, ::1\nlisten_port = 7000\n"),
            (std::vector<Endpoint>{{"127.0.0.1", 7000}, {"::1", 7000}}));
  EXPECT_EQ(listen_of("listen_addr = localhost\n"), (std::vector<Endpoint>{{"localhost", 6432}}));
  // Unset listen_addr: PgBouncer listens on its Unix socket only; pgward keeps to loopback.
  EXPECT_EQ(listen_of("listen_port = 7001\n"), (std::vector<Endpoint>{{"127.0.0.1", 7001}}));
  const PgbouncerImport named = import_pgbouncer(ini("[pgbouncer]\nlisten_addr = db.example.com\n"));
  ASSERT_EQ(named.warnings.size(), 1u);
  EXPECT_EQ(named.warnings[0], at(2,
                                  "listen_addr: \"db.example.com\" is not an address pgward can listen on (a "
                                  "numeric address, localhost or *)"));
}

TEST_F(PgbouncerImportTest, MalformedInputIsAnErrorWithFileAndLine) {
  const struct {
    std::string text;
    std::string expected;
  } cases[] = {
      {"[pgbouncer]\nlisten_port 6432\n", at(2, "expected KEY = VALUE")},
      {"listen_port = 6432\n", at(1, "setting outside a section")},
      {"[pgbouncer\n", at(1, "malformed section header")},
      {"[pgbouncer]\n\nmax_client_conn = lots\n",
       at(3, "max_client_conn: expected a whole number, got \"lots\"")},
      {"[pgbouncer]\nserver_lifetime = 1h30\n", at(2, "server_lifetime: expected seconds, got \"1h30\"")},
      {"[pgbouncer]\npool_mode = sometimes\n",
       at(2, "pool_mode: unknown pool mode \"sometimes\" (expected session, transaction or statement)")},
      {"[databases]\napp = host='unterminated\n", at(2, "app: unterminated quoted value of host")},
      {"[databases]\napp = host\n", at(2, "app: expected key=value in the connection string")},
      {"[databases]\napp = host=a\napp = host=b\n", at(3, "duplicate database \"app\"")},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(error(ini(c.text)), c.expected);
  }
  EXPECT_EQ(error((dir_ / "missing.ini").string()),
            (dir_ / "missing.ini").string() + ":1: cannot read \"" + (dir_ / "missing.ini").string() + "\"");
}

}  // namespace
}  // namespace pgward::config
