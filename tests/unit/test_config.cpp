#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "config/config.hpp"

namespace pgward::config {
namespace {

namespace fs = std::filesystem;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

constexpr std::string_view kScramVerifier =
    "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:"
    "jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20=";
constexpr std::string_view kMd5Verifier = "md54a0a68b43b6cd5cf266fa02f196e2371";
// SCRAM authentication against users.toml in the test folder.
constexpr std::string_view kScramAuth = R"(
[auth]
type = "scram-sha-256"
users_file = "users.toml"
)";

// Sets an environment variable for the lifetime of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

// Each test gets its own temporary folder holding pgward.toml (and users files), removed afterwards.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "pgward-config-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr) << std::strerror(errno);
    dir_ = templ;
    config_path_ = (dir_ / "pgward.toml").string();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Writes NAME (relative to the test folder). The first newline is dropped so that the line right after
  // R"( is line 1, which keeps the line numbers asserted below easy to check by eye.
  std::string write(const fs::path& name, std::string_view text) {
    if (text.starts_with('\n')) text.remove_prefix(1);
    const fs::path path = dir_ / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
    return path.string();
  }

  // The default auth type (scram-sha-256) needs a users file; tests that are not about [auth] get
  // `type = "trust"` appended after their text, so their line numbers do not move.
  std::string with_trust(std::string_view text) {
    std::string full(text);
    if (full.find("[auth]") == std::string::npos) full += "\n[auth]\ntype = \"trust\"\n";
    return full;
  }

  Config load(std::string_view text) { return load_config(write("pgward.toml", with_trust(text))); }

  // What load_config() throws for TEXT, or "loaded" when it does not throw.
  std::string error(std::string_view text) { return error_as_written(with_trust(text)); }

  // Like error(), without the [auth] table added.
  std::string error_as_written(std::string_view text) {
    try {
      load_config(write("pgward.toml", text));
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "loaded";
  }

  // The message expected for a problem at LINE of pgward.toml.
  std::string at(int line, std::string_view reason) const {
    return config_path_ + ":" + std::to_string(line) + ": " + std::string(reason);
  }

  std::string users_at(int line, std::string_view reason) const {
    return (dir_ / "users.toml").string() + ":" + std::to_string(line) + ": " + std::string(reason);
  }

  fs::path dir_;
  std::string config_path_;
};

TEST_F(ConfigTest, FullConfigWithEveryKey) {
  ScopedEnv password("PGWARD_TEST_CONFIG_DB_PASSWORD", "from-env");
  ScopedEnv token("PGWARD_TEST_CONFIG_ADMIN_TOKEN", "admin-token");
  write("users.toml", R"(
alice = "secret"
bob = "md54a0a68b43b6cd5cf266fa02f196e2371"
)");
  const Config config = load(R"(
[proxy]
listen = "127.0.0.1:6432"          # host:port, several allowed as an array
max_client_conn = 10000
workers = 1                        # threads; 0 = one per core
shutdown_timeout = "30s"
max_message_size = "16MB"
log_level = "debug"
client_login_timeout = "45s"

[admin]
listen = "127.0.0.1:9930"
token = "env:PGWARD_TEST_CONFIG_ADMIN_TOKEN"

[auth]
type = "scram-sha-256"             # trust | md5 | scram-sha-256
users_file = "users.toml"

[pool]                             # defaults for every database
mode = "transaction"               # session | transaction | statement
size = 20
min_size = 0
wait_timeout = "30s"
server_idle_timeout = "600s"
server_lifetime = "3600s"
server_connect_timeout = "2s"
max_prepared_statements = 200

[[database]]
name = "app"                       # what clients put in dbname
host = "127.0.0.1"
port = 5432
dbname = "app"
user = "app"
password = "env:PGWARD_TEST_CONFIG_DB_PASSWORD"
pool_size = 20
)");
  EXPECT_EQ(config.source_path, config_path_);
  EXPECT_EQ(config.listen, (std::vector<Endpoint>{{"127.0.0.1", 6432}}));
  EXPECT_EQ(config.max_client_conn, 10000u);
  EXPECT_EQ(config.workers, 1u);
  EXPECT_EQ(config.shutdown_timeout, seconds(30));
  EXPECT_EQ(config.max_message_size, 16u << 20);
  EXPECT_EQ(config.log_level, "debug");
  EXPECT_EQ(config.client_login_timeout, seconds(45));
  EXPECT_EQ(config.admin_listen, (std::vector<Endpoint>{{"127.0.0.1", 9930}}));
  EXPECT_EQ(config.admin_token, "admin-token");
  EXPECT_EQ(config.auth_type, AuthType::scram_sha_256);
  EXPECT_EQ(config.users_file, (dir_ / "users.toml").string());
  EXPECT_EQ(config.users.size(), 2u);
  EXPECT_EQ(config.scram_verifiers.size(), 1u);  // bob's md5 verifier cannot do SCRAM
  EXPECT_EQ(config.pool.mode, PoolMode::transaction);
  EXPECT_EQ(config.pool.size, 20u);
  EXPECT_EQ(config.pool.min_size, 0u);
  EXPECT_EQ(config.pool.wait_timeout, seconds(30));
  EXPECT_EQ(config.pool.server_idle_timeout, seconds(600));
  EXPECT_EQ(config.pool.server_lifetime, seconds(3600));
  EXPECT_EQ(config.pool.server_connect_timeout, seconds(2));
  EXPECT_EQ(config.pool.max_prepared_statements, 200u);
  ASSERT_EQ(config.databases.size(), 1u);
  const Database& db = config.databases[0];
  EXPECT_EQ(db.name, "app");
  EXPECT_EQ(db.host, "127.0.0.1");
  EXPECT_EQ(db.port, 5432);
  EXPECT_EQ(db.dbname, "app");
  EXPECT_EQ(db.user, "app");
  EXPECT_EQ(db.password, "from-env");
  EXPECT_EQ(db.pool, config.pool);
  EXPECT_EQ(db.line, 28);
}

TEST_F(ConfigTest, DefaultsWhenOnlyAuthIsSet) {
  const Config config = load(R"(
[auth]
type = "trust"
)");
  const Config defaults;
  EXPECT_EQ(config.listen, defaults.listen);
  EXPECT_EQ(config.max_client_conn, defaults.max_client_conn);
  EXPECT_EQ(config.workers, 1u);
  EXPECT_EQ(config.shutdown_timeout, defaults.shutdown_timeout);
  EXPECT_EQ(config.max_message_size, defaults.max_message_size);
  EXPECT_EQ(config.log_level, "info");
  EXPECT_EQ(config.client_login_timeout, seconds(60));
  EXPECT_EQ(config.admin_listen, defaults.admin_listen);
  EXPECT_FALSE(config.admin_token);
  EXPECT_EQ(config.auth_type, AuthType::trust);
  EXPECT_EQ(config.users_file, "");
  EXPECT_TRUE(config.users.empty());
  EXPECT_EQ(config.pool, PoolSettings{});
  EXPECT_TRUE(config.databases.empty());
}

TEST_F(ConfigTest, DefaultAuthNeedsAUsersFile) {
  EXPECT_EQ(error_as_written(""), at(1, "auth.users_file is required with auth.type \"scram-sha-256\""));
  EXPECT_EQ(error_as_written(R"(
[proxy]
workers = 2

[auth]
type = "md5"
)"),
            at(4, "auth.users_file is required with auth.type \"md5\""));
}

TEST_F(ConfigTest, WorkersZeroMeansOnePerCore) {
  const Config config = load(R"(
[proxy]
workers = 0
)");
  EXPECT_EQ(config.workers, std::max(1u, std::thread::hardware_concurrency()));
}

TEST_F(ConfigTest, ListenForms) {
  const Config config = load(R"(
[proxy]
listen = ["127.0.0.1:6432", "[::1]:6432", "localhost:7000", "*:0"]

[admin]
listen = ["0.0.0.0:9930"]
)");
  EXPECT_EQ(config.listen,
            (std::vector<Endpoint>{{"127.0.0.1", 6432}, {"::1", 6432}, {"localhost", 7000}, {"0.0.0.0", 0}}));
  EXPECT_EQ(config.admin_listen, (std::vector<Endpoint>{{"0.0.0.0", 9930}}));
}

TEST_F(ConfigTest, ListenErrors) {
  EXPECT_EQ(error(R"(
[proxy]
listen = "db.example.com:6432"
)"),
            at(2,
               "proxy.listen: bad address \"db.example.com:6432\": \"db.example.com\" is not an IP address "
               "(use a numeric address, localhost or *)"));
  EXPECT_EQ(error(R"(
[proxy]
listen = [
  "127.0.0.1:6432",
  "127.0.0.1",
]
)"),
            at(4, "proxy.listen: bad address \"127.0.0.1\": missing port (expected host:port)"));
  EXPECT_EQ(error(R"(
[proxy]
listen = []
)"),
            at(2, "proxy.listen: needs at least one address"));
  EXPECT_EQ(error(R"(
[proxy]
listen = 6432
)"),
            at(2, "proxy.listen: expected \"host:port\" or an array of them, got an integer"));
  EXPECT_EQ(error(R"(
[proxy]
listen = ["127.0.0.1:6432", 6433]
)"),
            at(2, "proxy.listen: expected \"host:port\" strings, got an integer"));
  EXPECT_EQ(error(R"(
[admin]
listen = "127.0.0.1:99999"
)"),
            at(2, "admin.listen: bad address \"127.0.0.1:99999\": bad port \"99999\" (expected 0..65535)"));
  EXPECT_EQ(error(R"(
[proxy]
listen = ["127.0.0.1:6432", "127.0.0.1:6432"]
)"),
            at(2, "proxy.listen: 127.0.0.1:6432 is listed twice"));
  EXPECT_EQ(error(R"(
[proxy]
listen = "[::1]:6432"

[admin]
listen = "[::1]:6432"
)"),
            at(5, "admin.listen: [::1]:6432 is also a proxy.listen address"));
}

TEST_F(ConfigTest, DatabaseDefaults) {
  const Config config = load(R"(
[pool]
size = 7

[[database]]
name = "app"
)");
  ASSERT_EQ(config.databases.size(), 1u);
  const Database& db = config.databases[0];
  EXPECT_EQ(db.name, "app");
  EXPECT_EQ(db.host, "127.0.0.1");
  EXPECT_EQ(db.port, 5432);
  EXPECT_EQ(db.dbname, "app");
  EXPECT_FALSE(db.user);
  EXPECT_FALSE(db.password);
  EXPECT_EQ(db.pool.size, 7u);
  EXPECT_EQ(db.pool, config.pool);
  EXPECT_EQ(db.line, 4);
}

TEST_F(ConfigTest, FallbackDatabaseServesUnlistedNamesUnderTheirOwnName) {
  const Config config = load(R"(
[[database]]
name = "app"
dbname = "app_prod"

[[database]]
name = "*"
host = "10.0.0.9"
port = 5433
pool_size = 3
)");
  const auto listed = config.resolve_database("app");
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->dbname, "app_prod");
  EXPECT_EQ(listed->host, "127.0.0.1");

  const auto other = config.resolve_database("reports");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->name, "reports");  // pools are keyed by name: one per database actually asked for
  EXPECT_EQ(other->dbname, "reports");
  EXPECT_EQ(other->host, "10.0.0.9");
  EXPECT_EQ(other->port, 5433);
  EXPECT_EQ(other->pool.size, 3u);
  EXPECT_FALSE(config.resolve_database("*"));
  EXPECT_EQ(config.find_database("reports"), nullptr);

  EXPECT_FALSE(load("[[database]]\nname = \"app\"\n").resolve_database("reports"));
  EXPECT_EQ(
      error("[[database]]\nname = \"*\"\ndbname = \"x\"\n"),
      at(1, "the fallback database \"*\" serves each database under the client's name: it takes no dbname"));
}

TEST_F(ConfigTest, DatabaseOverridesEveryPoolKey) {
  const Config config = load(R"(
[[database]]
name = "reports"
host = "/var/run/postgresql"
port = 5433
dbname = "reporting"
mode = "session"
size = 5
min_size = 2
wait_timeout = "250ms"
server_idle_timeout = "1m"
server_lifetime = "2h"
server_connect_timeout = "1.5s"
server_retry_max = 3
server_check_delay = "2s"
idle_in_transaction_timeout = "10s"
commit_resolution = "verify"
max_prepared_statements = 0
session_state = "error"
max_db_connections = 7

[pool]
mode = "statement"
size = 50
)");
  EXPECT_EQ(config.pool.mode, PoolMode::statement);
  EXPECT_EQ(config.pool.size, 50u);
  ASSERT_EQ(config.databases.size(), 1u);
  const Database& db = config.databases[0];
  EXPECT_EQ(db.host, "/var/run/postgresql");
  EXPECT_EQ(db.port, 5433);
  EXPECT_EQ(db.dbname, "reporting");
  const PoolSettings expected{PoolMode::session,
                              5,
                              2,
                              milliseconds(250),
                              minutes(1),
                              hours(2),
                              milliseconds(1500),
                              3,
                              seconds(2),
                              seconds(10),
                              CommitResolution::verify,
                              0,
                              SessionState::error,
                              0,
                              7};
  EXPECT_EQ(db.pool, expected);
}

TEST_F(ConfigTest, AuthQueryKeys) {
  const Config defaults = load("");
  EXPECT_TRUE(defaults.auth_query.empty());
  EXPECT_EQ(defaults.auth_query_cache, seconds(60));
  EXPECT_EQ(defaults.auth_query_pool_size, 2);
  const Config set = load(R"toml(
[auth]
type = "trust"
query = "SELECT usename, passwd FROM pgward.user_lookup($1)"
query_user = "pgward_auth"
query_cache = "5s"
query_pool_size = 5

[[database]]
name = "a"
auth_query = "SELECT u, p FROM other.lookup($1)"

[[database]]
name = "b"
)toml");
  EXPECT_EQ(set.auth_query_user, "pgward_auth");
  EXPECT_EQ(set.auth_query_cache, seconds(5));
  EXPECT_EQ(set.auth_query_pool_size, 5);
  ASSERT_EQ(set.databases.size(), 2u);
  EXPECT_EQ(*set.auth_query_for(set.databases[0]), "SELECT u, p FROM other.lookup($1)");
  EXPECT_EQ(*set.auth_query_for(set.databases[1]), "SELECT usename, passwd FROM pgward.user_lookup($1)");
  EXPECT_EQ(defaults.auth_query_for(Database{}), nullptr);
  EXPECT_EQ(error_as_written("[auth]\ntype = \"trust\"\nquery = \"SELECT 1\"\n"),
            at(1, "an auth query needs auth.query_user, the role that runs it"));
  using Bad = std::pair<const char*, const char*>;  // query_pool_size as written, the problem reported
  for (const auto& [value, problem] :
       {Bad{"0", "must be at least 1, got 0"}, Bad{"101", "must be at most 100, got 101"},
        Bad{"\"2\"", "expected an integer, got a string"}}) {
    EXPECT_EQ(error_as_written("[auth]\ntype = \"trust\"\nquery_pool_size = " + std::string(value) + "\n"),
              at(3, "auth.query_pool_size: " + std::string(problem)));
  }
}

TEST_F(ConfigTest, SharedConnectionLimits) {
  const Config defaults = load("");
  EXPECT_EQ(defaults.pool.max_user_connections, 0u);
  EXPECT_EQ(defaults.pool.max_db_connections, 0u);
  const Config set = load("[pool]\nmax_user_connections = 10\nmax_db_connections = 30\n");
  EXPECT_EQ(set.pool.max_user_connections, 10u);
  EXPECT_EQ(set.pool.max_db_connections, 30u);
  // A user's servers are counted across databases: a per-database value would have no meaning.
  EXPECT_NE(error("[[database]]\nname = \"a\"\nmax_user_connections = 1\n")
                .find("max_user_connections counts a user's servers across every database: set it in [pool]"),
            std::string::npos);
}

TEST_F(ConfigTest, FaultToleranceKeys) {
  const Config defaults = load("");
  EXPECT_EQ(defaults.pool.server_retry_max, 20u);
  EXPECT_EQ(defaults.pool.server_check_delay, milliseconds(30'000));
  EXPECT_EQ(defaults.pool.idle_in_transaction_timeout, milliseconds(0));
  EXPECT_EQ(defaults.pool.commit_resolution, CommitResolution::off);
  EXPECT_EQ(defaults.max_buffer_per_client, 16u << 20);
  EXPECT_EQ(load("[proxy]\nmax_buffer_per_client = \"256kB\"\n").max_buffer_per_client, 256u << 10);
  EXPECT_EQ(error("[proxy]\nmax_buffer_per_client = 100\n"),
            at(2, "proxy.max_buffer_per_client: 100 bytes is out of range (8kB..1GB)"));
  EXPECT_EQ(defaults.pool.session_state, SessionState::track);
  EXPECT_EQ(error("[pool]\nsession_state = \"pin\"\n"),
            at(2, "pool.session_state: unknown value \"pin\" (expected track, error or ignore)"));
  EXPECT_EQ(error("[pool]\ncommit_resolution = \"maybe\"\n"),
            at(2, "pool.commit_resolution: unknown value \"maybe\" (expected off or verify)"));
  EXPECT_EQ(error("[pool]\nserver_retry_max = -1\n"),
            at(2, "pool.server_retry_max: must be at least 0, got -1"));
}

TEST_F(ConfigTest, DatabasePoolAliases) {
  const Config config = load(R"(
[pool]
mode = "transaction"
size = 20
min_size = 1

[[database]]
name = "a"
pool_size = 3
pool_mode = "session"

[[database]]
name = "b"
)");
  ASSERT_EQ(config.databases.size(), 2u);
  EXPECT_EQ(config.databases[0].pool.size, 3u);
  EXPECT_EQ(config.databases[0].pool.mode, PoolMode::session);
  EXPECT_EQ(config.databases[0].pool.min_size, 1u);
  EXPECT_EQ(config.databases[0].line, 6);
  EXPECT_EQ(config.databases[1].pool, config.pool);
  EXPECT_EQ(config.databases[1].line, 11);
  ASSERT_NE(config.find_database("b"), nullptr);
  EXPECT_EQ(config.find_database("b")->name, "b");
  EXPECT_EQ(config.find_database("c"), nullptr);

  EXPECT_EQ(error(R"(
[[database]]
name = "a"
size = 3
pool_size = 4
)"),
            at(4, "database.pool_size: sets the same thing as database.size"));
}

TEST_F(ConfigTest, DatabaseHosts) {
  const Config config = load(R"(
[[database]]
name = "a"
host = "db-1.internal.example.com"

[[database]]
name = "b"
host = "::1"

[[database]]
name = "c"
host = "postgres_primary"
)");
  EXPECT_EQ(config.databases[0].host, "db-1.internal.example.com");
  EXPECT_EQ(config.databases[1].host, "::1");
  EXPECT_EQ(config.databases[2].host, "postgres_primary");

  for (const char* bad : {"not a host", "run/postgresql", "10.0.0.300", "-db"}) {
    EXPECT_EQ(error(std::string("[[database]]\nname = \"a\"\nhost = \"") + bad + "\"\n"),
              at(3, std::string("database.host: \"") + bad +
                        "\" is not a host name, an IP address or an absolute Unix socket directory"));
  }
}

TEST_F(ConfigTest, DatabaseErrors) {
  EXPECT_EQ(error(R"(
[[database]]
name = "app"

[[database]]
name = "other"

[[database]]
name = "app"
)"),
            at(7, "duplicate database \"app\" (first defined at line 1)"));
  EXPECT_EQ(error(R"(
[[database]]
host = "localhost"
)"),
            at(1, "[[database]] needs a name"));
  EXPECT_EQ(error(R"(
[[database]]
name = ""
)"),
            at(2, "database.name: must not be empty"));
  EXPECT_EQ(error(R"(
[[database]]
name = "app"
port = 0
)"),
            at(3, "database.port: must be at least 1, got 0"));
  EXPECT_EQ(error(R"(
[[database]]
name = "app"
port = 65536
)"),
            at(3, "database.port: must be at most 65535, got 65536"));
  EXPECT_EQ(error(R"(
[database]
name = "app"
)"),
            at(1, "database: expected [[database]] tables, got a table"));
  EXPECT_EQ(error(R"(
[pool]
min_size = 4

[[database]]
name = "app"
pool_size = 2
)"),
            at(6, "database \"app\": pool min_size (4) is greater than size (2)"));
}

TEST_F(ConfigTest, DatabasesAsInlineTables) {
  const Config config = load(R"(
database = [
  { name = "a", port = 6000 },
  { name = "b", pool_mode = "statement" },
]
)");
  ASSERT_EQ(config.databases.size(), 2u);
  EXPECT_EQ(config.databases[0].port, 6000);
  EXPECT_EQ(config.databases[0].line, 2);
  EXPECT_EQ(config.databases[1].pool.mode, PoolMode::statement);
  EXPECT_EQ(config.databases[1].line, 3);
}

TEST_F(ConfigTest, ZeroDatabasesIsValid) { EXPECT_TRUE(load("database = []\n").databases.empty()); }

TEST_F(ConfigTest, UnknownKeys) {
  EXPECT_EQ(error(R"(
[proxy]
listen = "127.0.0.1:6432"
foo = 1
)"),
            at(3, "unknown key \"proxy.foo\""));
  EXPECT_EQ(error(R"(
[admin]
port = 9930
)"),
            at(2, "unknown key \"admin.port\""));
  EXPECT_EQ(error(R"(
[auth]
type = "trust"
method = "md5"
)"),
            at(3, "unknown key \"auth.method\""));
  EXPECT_EQ(error(R"(
[pool]
pool_size = 20
)"),
            at(2, "unknown key \"pool.pool_size\""));
  EXPECT_EQ(error(R"(
[[database]]
name = "app"
hots = "localhost"
)"),
            at(3, "unknown key \"database.hots\""));
  EXPECT_EQ(error(R"(
[proxy]

[logging]
level = "info"
)"),
            at(3, "unknown key \"logging\""));
  EXPECT_EQ(error("title = \"pgward\"\n"), at(1, "unknown key \"title\""));
  EXPECT_EQ(error(R"(
[proxy.tls]
cert = "x"
)"),
            at(1, "unknown key \"proxy.tls\""));
}

TEST_F(ConfigTest, FirstProblemInFileOrderIsReported) {
  // Keys are stored sorted by name; "zzz" sorts after "size" but comes first in the file.
  EXPECT_EQ(error(R"(
[pool]
zzz = 1
size = "x"
)"),
            at(2, "unknown key \"pool.zzz\""));
}

TEST_F(ConfigTest, WrongTypes) {
  EXPECT_EQ(error(R"(
[pool]
size = "x"
)"),
            at(2, "pool.size: expected an integer, got a string"));
  EXPECT_EQ(error(R"(
[proxy]
max_client_conn = 1.5
)"),
            at(2, "proxy.max_client_conn: expected an integer, got a floating-point number"));
  EXPECT_EQ(error(R"(
[pool]
mode = true
)"),
            at(2, "pool.mode: expected a string, got a boolean"));
  EXPECT_EQ(error("proxy = 5\n"), at(1, "proxy: expected a table, got an integer"));
  EXPECT_EQ(error(R"(
[[database]]
name = ["app"]
)"),
            at(2, "database.name: expected a string, got an array"));
  EXPECT_EQ(error(R"(
[pool]
wait_timeout = true
)"),
            at(2, "pool.wait_timeout: expected a duration string such as \"30s\", got a boolean"));
}

TEST_F(ConfigTest, BadEnumValues) {
  EXPECT_EQ(error(R"(
[pool]
mode = "sessions"
)"),
            at(2, "pool.mode: unknown value \"sessions\" (expected session, transaction or statement)"));
  EXPECT_EQ(error(R"(
[auth]
type = "password"
)"),
            at(2, "auth.type: unknown value \"password\" (expected trust, md5 or scram-sha-256)"));
  EXPECT_EQ(error(R"(
[proxy]
log_level = "verbose"
)"),
            at(2, "proxy.log_level: unknown value \"verbose\" (expected trace, debug, info, warn or error)"));
}

TEST_F(ConfigTest, OutOfRangeNumbers) {
  EXPECT_EQ(error(R"(
[proxy]
max_client_conn = 0
)"),
            at(2, "proxy.max_client_conn: must be at least 1, got 0"));
  EXPECT_EQ(error(R"(
[proxy]
workers = -1
)"),
            at(2, "proxy.workers: must be at least 0, got -1"));
  EXPECT_EQ(error(R"(
[pool]
size = 0
)"),
            at(2, "pool.size: must be at least 1, got 0"));
  EXPECT_EQ(error(R"(
[pool]
size = 4294967296
)"),
            at(2, "pool.size: must be at most 4294967295, got 4294967296"));
  EXPECT_EQ(error(R"(
[pool]
max_prepared_statements = -5
)"),
            at(2, "pool.max_prepared_statements: must be at least 0, got -5"));
  EXPECT_EQ(error(R"(
[pool]
size = 2
min_size = 3
)"),
            at(3, "pool.min_size (3) is greater than pool.size (2)"));
}

TEST_F(ConfigTest, MaxMessageSize) {
  EXPECT_EQ(load("[proxy]\nmax_message_size = 8192\n").max_message_size, 8192u);
  EXPECT_EQ(load("[proxy]\nmax_message_size = \"1GB\"\n").max_message_size, 1u << 30);
  EXPECT_EQ(load("[proxy]\nmax_message_size = \"512kB\"\n").max_message_size, 512u << 10);
  EXPECT_EQ(error("[proxy]\nmax_message_size = 8191\n"),
            at(2, "proxy.max_message_size: 8191 bytes is out of range (8kB..1GB)"));
  EXPECT_EQ(error("[proxy]\nmax_message_size = \"2GB\"\n"),
            at(2, "proxy.max_message_size: 2147483648 bytes is out of range (8kB..1GB)"));
  EXPECT_EQ(error("[proxy]\nmax_message_size = \"64 megs\"\n"),
            at(2, "proxy.max_message_size: bad size \"64 megs\" (use bytes or a unit: kB, MB, GB)"));
  EXPECT_EQ(error("[proxy]\nmax_message_size = -1\n"),
            at(2, "proxy.max_message_size: must not be negative, got -1"));
}

TEST_F(ConfigTest, ClientLoginTimeout) {
  EXPECT_EQ(load("[proxy]\nclient_login_timeout = \"1s\"\n").client_login_timeout, seconds(1));
  EXPECT_EQ(load("[proxy]\nclient_login_timeout = \"250ms\"\n").client_login_timeout, milliseconds(250));
  EXPECT_EQ(load("[proxy]\nclient_login_timeout = \"2m\"\n").client_login_timeout, minutes(2));
  EXPECT_EQ(error("[proxy]\nclient_login_timeout = \"0s\"\n"),
            at(2, "proxy.client_login_timeout: must be greater than 0"));
  EXPECT_EQ(error("[proxy]\nclient_login_timeout = \"60\"\n"),
            at(2, "proxy.client_login_timeout: bad duration \"60\" (use a unit: ms, s, m, h)"));
  EXPECT_EQ(error("[proxy]\nworkers = 1\nclient_login_timeout = true\n"),
            at(3, "proxy.client_login_timeout: expected a duration string such as \"30s\", got a boolean"));
}

TEST_F(ConfigTest, DurationsInToml) {
  EXPECT_EQ(error(R"(
[pool]
wait_timeout = "30"
)"),
            at(2, "pool.wait_timeout: bad duration \"30\" (use a unit: ms, s, m, h)"));
  EXPECT_EQ(error(R"(
[pool]
wait_timeout = 30
)"),
            at(2, "pool.wait_timeout: bad duration \"30\" (use a unit: ms, s, m, h)"));
  EXPECT_EQ(error(R"(
[proxy]
shutdown_timeout = "-5s"
)"),
            at(2, "proxy.shutdown_timeout: bad duration \"-5s\" (use a unit: ms, s, m, h)"));
  EXPECT_EQ(error(R"(
[[database]]
name = "app"
server_lifetime = "1d"
)"),
            at(3, "database.server_lifetime: bad duration \"1d\" (use a unit: ms, s, m, h)"));
}

TEST_F(ConfigTest, TomlSyntaxErrorHasTheParserLine) {
  try {
    load(R"(
[proxy]
listen = "127.0.0.1:6432"
workers =
)");
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file(), config_path_);
    EXPECT_EQ(e.line(), 3);
    EXPECT_EQ(std::string(e.what()), at(3, e.reason()));
    EXPECT_FALSE(e.reason().empty());
  }
}

TEST_F(ConfigTest, MissingFile) {
  const std::string path = (dir_ / "absent.toml").string();
  try {
    load_config(path);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), path + ":1: cannot read file: No such file or directory");
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.line(), 1);
  }
  try {
    load_config(dir_.string());
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), dir_.string() + ":1: cannot read file: Is a directory");
  }
}

TEST_F(ConfigTest, EnvironmentSecrets) {
  ScopedEnv set("PGWARD_TEST_CONFIG_SET", "s3cret");
  ::unsetenv("PGWARD_TEST_CONFIG_UNSET");
  const Config config = load(R"(
[admin]
token = "env:PGWARD_TEST_CONFIG_SET"

[[database]]
name = "app"
password = "env:PGWARD_TEST_CONFIG_SET"
)");
  EXPECT_EQ(config.admin_token, "s3cret");
  EXPECT_EQ(config.databases.at(0).password, "s3cret");

  EXPECT_EQ(error(R"(
[[database]]
name = "app"
password = "env:PGWARD_TEST_CONFIG_UNSET"
)"),
            at(3, "environment variable PGWARD_TEST_CONFIG_UNSET is not set"));
  EXPECT_EQ(error(R"(
[admin]
token = "env:PGWARD_TEST_CONFIG_UNSET"
)"),
            at(2, "environment variable PGWARD_TEST_CONFIG_UNSET is not set"));
  EXPECT_EQ(error(R"(
[admin]
token = "env:"
)"),
            at(2, "admin.token: \"env:\" needs an environment variable name"));
  EXPECT_EQ(error(R"(
[admin]
token = ""
)"),
            at(2, "admin.token: must not be empty"));
}

TEST_F(ConfigTest, UsersFileSecrets) {
  ScopedEnv env("PGWARD_TEST_CONFIG_USER", "from-env");
  write("users.toml", std::string("plain = \"pencil\"\n") + "hashed = \"" + std::string(kMd5Verifier) +
                          "\"\n" + "scram = \"" + std::string(kScramVerifier) + "\"\n" +
                          "\"with space\" = \"env:PGWARD_TEST_CONFIG_USER\"\n" + "md5short = \"md5abc\"\n");
  const Config config = load(R"(
[auth]
type = "md5"
users_file = "users.toml"
)");
  EXPECT_EQ(config.auth_type, AuthType::md5);
  EXPECT_EQ(config.users.size(), 5u);
  ASSERT_NE(config.find_user_secret("plain"), nullptr);
  EXPECT_EQ(*config.find_user_secret("plain"), "pencil");
  EXPECT_EQ(*config.find_user_secret("hashed"), kMd5Verifier);
  EXPECT_EQ(*config.find_user_secret("scram"), kScramVerifier);
  EXPECT_EQ(*config.find_user_secret("with space"), "from-env");
  EXPECT_EQ(*config.find_user_secret("md5short"), "md5abc");  // not verifier-shaped: a plain password
  EXPECT_EQ(config.find_user_secret("nobody"), nullptr);
}

TEST_F(ConfigTest, ScramVerifiersAreDerivedAtLoad) {
  write("users.toml", std::string("plain = \"pencil\"\n") + "hashed = \"" + std::string(kMd5Verifier) +
                          "\"\n" + "scram = \"" + std::string(kScramVerifier) + "\"\n");
  const std::uint64_t before = protocol::auth::key_derivations();
  const Config config = load(kScramAuth);
  EXPECT_EQ(protocol::auth::key_derivations(), before + 1);  // the plain password only
  ASSERT_NE(config.find_scram_verifier("plain"), nullptr);
  const auto& plain = *config.find_scram_verifier("plain");
  const auto expected = protocol::auth::make_scram_verifier(
      "pencil", protocol::auth::stable_salt(protocol::auth::process_auth_key(), "plain"));
  EXPECT_EQ(protocol::auth::format_scram_verifier(plain), protocol::auth::format_scram_verifier(expected));
  ASSERT_NE(config.find_scram_verifier("scram"), nullptr);
  EXPECT_EQ(protocol::auth::format_scram_verifier(*config.find_scram_verifier("scram")), kScramVerifier);
  EXPECT_EQ(config.find_scram_verifier("hashed"), nullptr);
  EXPECT_EQ(config.find_scram_verifier("nobody"), nullptr);

  // md5 and trust never need them.
  EXPECT_TRUE(load("[auth]\ntype = \"md5\"\nusers_file = \"users.toml\"\n").scram_verifiers.empty());
}

TEST_F(ConfigTest, ReloadKeepsVerifiersOfUnchangedPasswords) {
  write("users.toml", "alice = \"pencil\"\nbob = \"crayon\"\n");
  const Config first = load(kScramAuth);
  write("users.toml", "alice = \"pencil\"\nbob = \"marker\"\ncarol = \"chalk\"\n");
  const std::uint64_t before = protocol::auth::key_derivations();
  const Config second = load_config(write("pgward.toml", kScramAuth), &first);
  EXPECT_EQ(protocol::auth::key_derivations(), before + 2);  // bob's new password and carol
  EXPECT_EQ(protocol::auth::format_scram_verifier(*second.find_scram_verifier("alice")),
            protocol::auth::format_scram_verifier(*first.find_scram_verifier("alice")));
  const auto bob = protocol::auth::make_scram_verifier(
      "marker", protocol::auth::stable_salt(protocol::auth::process_auth_key(), "bob"));
  EXPECT_EQ(protocol::auth::format_scram_verifier(*second.find_scram_verifier("bob")),
            protocol::auth::format_scram_verifier(bob));
  EXPECT_NE(second.find_scram_verifier("carol"), nullptr);
}

TEST_F(ConfigTest, UsersFileIsRelativeToTheConfigFolder) {
  write("etc/secrets/users.toml", "alice = \"pw\"\n");
  const std::string path = write("etc/pgward.toml", R"(
[auth]
users_file = "secrets/users.toml"
)");
  const Config config = load_config(path);
  EXPECT_EQ(config.users_file, (dir_ / "etc/secrets/users.toml").string());
  EXPECT_EQ(*config.find_user_secret("alice"), "pw");

  // Absolute paths are kept as they are.
  const std::string absolute = (dir_ / "etc/secrets/users.toml").string();
  write("etc/pgward.toml", "[auth]\nusers_file = \"" + absolute + "\"\n");
  EXPECT_EQ(load_config(path).users_file, absolute);
}

TEST_F(ConfigTest, UsersFileErrors) {
  const std::string_view auth = kScramAuth;
  EXPECT_EQ(error(auth), at(3, "auth.users_file: cannot read \"" + (dir_ / "users.toml").string() +
                                   "\": No such file or directory"));

  write("users.toml", "alice = \"pw\"\nbob = \"SCRAM-SHA-256$4096:c2FsdA==$short:keys\"\n");
  EXPECT_EQ(error(auth), users_at(2,
                                  "user \"bob\": malformed SCRAM-SHA-256 verifier (expected "
                                  "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)"));

  write("users.toml",
        "alice = \"MD54A0A68B43B6CD5CF266FA02F196E2371\"\n"
        "bob = \"md54A0A68B43B6CD5CF266FA02F196E2371\"\n");
  EXPECT_EQ(error(auth), users_at(2,
                                  "user \"bob\": malformed md5 verifier (expected md5 followed by 32 "
                                  "lowercase hex digits)"));

  write("users.toml", "alice = \"pw\"\n\nbob = 42\n");
  EXPECT_EQ(error(auth), users_at(3, "user \"bob\": expected a password or verifier string, got an integer"));

  write("users.toml", "alice = \"\"\n");
  EXPECT_EQ(error(auth), users_at(1, "user \"alice\": empty password"));

  write("users.toml", "alice = \"pw\"\nbob = \"env:PGWARD_TEST_CONFIG_UNSET\"\n");
  ::unsetenv("PGWARD_TEST_CONFIG_UNSET");
  EXPECT_EQ(error(auth), users_at(2, "environment variable PGWARD_TEST_CONFIG_UNSET is not set"));

  write("users.toml", "alice = \"pw\"\nbob = \n");
  const std::string syntax = error(auth);
  EXPECT_TRUE(syntax.starts_with(users_at(2, ""))) << syntax;
}

TEST_F(ConfigTest, ErrorFormat) {
  const ConfigError e("a/b.toml", 12, "something is wrong");
  EXPECT_STREQ(e.what(), "a/b.toml:12: something is wrong");
  EXPECT_EQ(e.file(), "a/b.toml");
  EXPECT_EQ(e.line(), 12);
  EXPECT_EQ(e.reason(), "something is wrong");
}

TEST(ConfigNames, ToString) {
  EXPECT_EQ(to_string(PoolMode::session), "session");
  EXPECT_EQ(to_string(PoolMode::transaction), "transaction");
  EXPECT_EQ(to_string(PoolMode::statement), "statement");
  EXPECT_EQ(to_string(AuthType::trust), "trust");
  EXPECT_EQ(to_string(AuthType::md5), "md5");
  EXPECT_EQ(to_string(AuthType::scram_sha_256), "scram-sha-256");
}

TEST(Duration, Parses) {
  EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(parse_duration("30s"), seconds(30));
  EXPECT_EQ(parse_duration("5m"), minutes(5));
  EXPECT_EQ(parse_duration("1h"), hours(1));
  EXPECT_EQ(parse_duration("1.5s"), milliseconds(1500));
  EXPECT_EQ(parse_duration("0.25h"), minutes(15));
  EXPECT_EQ(parse_duration("0s"), milliseconds(0));
  EXPECT_EQ(parse_duration("1.0005s"), milliseconds(1001));  // rounded to the millisecond
  EXPECT_EQ(parse_duration("876000h"), hours(876000));       // 100 years, the largest accepted
}

TEST(Duration, Rejects) {
  for (const char* bad : {"", "30", "s", "-5s", "+5s", "5 s", " 5s", "5s ", "5d", "5S", "5sec", "1.s", ".5s",
                          "1..5s", "1.5.s", "876001h", "99999999999999999999ms", "18446744073709551615h"}) {
    EXPECT_EQ(parse_duration(bad), std::nullopt) << bad;
  }
}

TEST(Endpoint, Parses) {
  EXPECT_EQ(parse_endpoint("127.0.0.1:6432"), (Endpoint{"127.0.0.1", 6432}));
  EXPECT_EQ(parse_endpoint("[::1]:6432"), (Endpoint{"::1", 6432}));
  EXPECT_EQ(parse_endpoint("[fe80::1:2]:1"), (Endpoint{"fe80::1:2", 1}));
  EXPECT_EQ(parse_endpoint("localhost:6432"), (Endpoint{"localhost", 6432}));
  EXPECT_EQ(parse_endpoint("0.0.0.0:6432"), (Endpoint{"0.0.0.0", 6432}));
  EXPECT_EQ(parse_endpoint("*:6432"), (Endpoint{"0.0.0.0", 6432}));
  EXPECT_EQ(parse_endpoint("127.0.0.1:0"), (Endpoint{"127.0.0.1", 0}));
  EXPECT_EQ(parse_endpoint("127.0.0.1:65535"), (Endpoint{"127.0.0.1", 65535}));
}

TEST(Endpoint, Rejects) {
  for (const char* bad : {"",
                          "127.0.0.1",
                          "127.0.0.1:",
                          ":6432",
                          "127.0.0.1:65536",
                          "127.0.0.1:-1",
                          "127.0.0.1:+1",
                          "127.0.0.1:64 32",
                          "127.0.0.1:0x10",
                          "127.0.0.1:99999999999999999999",
                          "local host:6432",
                          " 127.0.0.1:6432",
                          "db.example.com:6432",
                          "256.0.0.1:6432",
                          "1.2.3:6432",
                          "::1:6432",
                          "[::1]",
                          "[::1]6432",
                          "[::1:6432",
                          "[127.0.0.1]:6432",
                          "[]:6432",
                          "[::1]:"}) {
    EXPECT_EQ(parse_endpoint(bad), std::nullopt) << bad;
  }
}

TEST(Size, Parses) {
  EXPECT_EQ(parse_size("1048576"), 1048576u);
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("100B"), 100u);
  EXPECT_EQ(parse_size("512kB"), 512u << 10);
  EXPECT_EQ(parse_size("64MB"), 64u << 20);
  EXPECT_EQ(parse_size("1GB"), 1u << 30);
  EXPECT_EQ(parse_size("2TB"), std::uint64_t{2} << 40);
  EXPECT_EQ(parse_size("64 MB"), 64u << 20);
  EXPECT_EQ(parse_size("8KB"), 8u << 10);
}

TEST(Size, Rejects) {
  for (const char* bad : {"", "MB", "-1", "+1", "1.5MB", "64M", "64 megs", "64MB ", " 64MB", "64 ", "1PB",
                          "99999999999999999999", "17179869184GB"}) {
    EXPECT_EQ(parse_size(bad), std::nullopt) << bad;
  }
}

}  // namespace
}  // namespace pgward::config

namespace pgward::config {
namespace {
TEST_F(ConfigTest, IsolationLimits) {
  const Config defaults = load("");
  EXPECT_EQ(defaults.max_buffer_total, 256ull << 20);
  EXPECT_EQ(defaults.client_message_timeout, milliseconds(60'000));
  const Config set = load("[proxy]\nmax_buffer_total = \"1GB\"\nclient_message_timeout = \"5s\"\n");
  EXPECT_EQ(set.max_buffer_total, 1ull << 30);
  EXPECT_EQ(set.client_message_timeout, milliseconds(5'000));
  EXPECT_EQ(error("[proxy]\nmax_buffer_total = 100\n"),
            at(2, "proxy.max_buffer_total: 100 bytes is out of range (8kB..64GB)"));
  EXPECT_EQ(defaults.max_fallback_databases, 100u);
  EXPECT_EQ(load("[proxy]\nmax_fallback_databases = 3\n").max_fallback_databases, 3u);
  EXPECT_EQ(error("[proxy]\nclient_message_timeout = \"0s\"\n"),
            at(2, "proxy.client_message_timeout: must be greater than 0"));
}
}  // namespace
}  // namespace pgward::config

namespace pgward::config {
namespace {

TEST_F(ConfigTest, ConsoleUsers) {
  EXPECT_TRUE(load("").console_users.empty());
  EXPECT_EQ(load("[admin]\nconsole_users = [\"admin\", \"ops\"]\n").console_users,
            (std::vector<std::string>{"admin", "ops"}));
  EXPECT_EQ(error("[admin]\nconsole_users = \"admin\"\n"),
            at(2, "admin.console_users: expected an array of names, got a string"));
  EXPECT_EQ(error("[admin]\nconsole_users = [\"admin\", 3]\n"),
            at(2, "admin.console_users: expected strings, got an integer"));
  EXPECT_EQ(error("[admin]\nconsole_users = [\"\"]\n"),
            at(2, "admin.console_users: a name must not be empty"));
  EXPECT_EQ(error("[admin]\nconsole_users = [\"a\", \"a\"]\n"),
            at(2, "admin.console_users: \"a\" is listed twice"));
  // The console's database name is taken while the console is on, free otherwise.
  const std::string db = "[[database]]\nname = \"pgward\"\nhost = \"127.0.0.1\"\n";
  EXPECT_EQ(error("[admin]\nconsole_users = [\"admin\"]\n" + db),
            at(3, "database \"pgward\" is the admin console's while [admin] console_users is set"));
  EXPECT_EQ(load(db).databases.size(), 1u);
}

}  // namespace
}  // namespace pgward::config
