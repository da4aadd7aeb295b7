// The admin console (database "pgward" on the proxy port) through psql and libpq: each SHOW's columns and
// rows against the HTTP API's view of the same state, PAUSE/RESUME seen by a real client, RELOAD of a changed
// file, SHUTDOWN draining, who may log in, and what happens to unknown commands and the extended protocol.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "harness.hpp"

namespace pgward::it {
namespace {

constexpr const char* kAdmin = "admin";
constexpr const char* kAdminPassword = "adminpass";
constexpr const char* kTrustPassword = "trustpass";

std::string psql_binary() {
  const char* pg15 = "/usr/lib/postgresql/15/bin/psql";
  return access(pg15, X_OK) == 0 ? pg15 : "psql";
}

// A pgward with SCRAM logins, a users file and the console for "admin"; the admin port is the harness's.
PgwardConfig console_config(const std::string& pool = "mode = \"transaction\"\nsize = 4\n",
                            const std::string& admin_extra = "") {
  PgwardConfig config;
  config.auth = "type = \"scram-sha-256\"\n";
  config.users = std::string(kAdmin) + " = \"" + kAdminPassword + "\"\nbob = \"bobpass\"\n" + kTrustUser +
                 " = \"" + kTrustPassword + "\"\n";
  config.pool = pool;
  config.databases = PgwardConfig::database_toml(kDatabase) +
                     "[admin]\nlisten = \"127.0.0.1:" + std::to_string(free_port()) +
                     "\"\nconsole_users = [\"" + kAdmin + "\"]\n" + admin_extra;
  return config;
}

int admin_port_of(const PgwardConfig& config) {
  std::smatch m;
  static const std::regex re(R"re(\[admin\]\nlisten = "127\.0\.0\.1:(\d+)")re");
  return std::regex_search(config.databases, m, re) ? std::stoi(m[1].str()) : 0;
}

struct Psql {
  int status = -1;
  std::string out;  // stdout and stderr
};

// psql -c for each command, in one session, unaligned output with '|' between columns, no footers, and
// verbose errors (the SQLSTATE in each message).
Psql psql(int port, const std::vector<std::string>& commands, const std::string& user = kAdmin,
          const std::string& password = kAdminPassword, const std::string& db = "pgward") {
  std::string cmd = "PGPASSWORD='" + password + "' PGCONNECT_TIMEOUT=10 " + psql_binary() +
                    " -X -A -F '|' -P footer=off -v VERBOSITY=verbose -h 127.0.0.1 -p " +
                    std::to_string(port) + " -U '" + user + "' -d '" + db + "'";
  for (const auto& c : commands) cmd += " -c '" + c + "'";
  cmd += " 2>&1";
  Psql r;
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return r;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) r.out.append(buf, n);
  const int st = pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(line);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!line.empty() && line.back() == sep) out.emplace_back();
  return out;
}

// One SHOW through psql: its column names and its rows, each a column name => value map.
struct Shown {
  std::vector<std::string> columns;
  std::vector<std::map<std::string, std::string>> rows;
  std::string raw;
};
Shown show(int port, const std::string& what) {
  Shown s;
  const Psql r = psql(port, {"SHOW " + what});
  s.raw = r.out;
  EXPECT_EQ(r.status, 0) << r.out;
  std::istringstream in(r.out);
  std::string line;
  if (!std::getline(in, line)) return s;
  s.columns = split(line, '|');
  while (std::getline(in, line)) {
    const auto values = split(line, '|');
    EXPECT_EQ(values.size(), s.columns.size()) << line;
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < values.size() && i < s.columns.size(); ++i) row[s.columns[i]] = values[i];
    s.rows.push_back(std::move(row));
  }
  return s;
}

const std::map<std::string, std::string>* find_row(const Shown& s, const std::string& column,
                                                   const std::string& value) {
  for (const auto& row : s.rows)
    if (auto it = row.find(column); it != row.end() && it->second == value) return &row;
  return nullptr;
}

// The value in `column` of the row whose `key_column` is `key`; "<no row>" when there is none.
std::string cell(const Shown& s, const std::string& key_column, const std::string& key,
                 const std::string& column) {
  const auto* row = find_row(s, key_column, key);
  if (!row) return "<no row>";
  auto it = row->find(column);
  return it == row->end() ? "<no column>" : it->second;
}

// "key":number in a JSON object text.
std::string json_number(const std::string& json, const std::string& key) {
  std::smatch m;
  const std::regex re("\"" + key + "\":(-?[0-9]+)");
  return std::regex_search(json, m, re) ? m[1].str() : "";
}

// The JSON objects of an array such as /api/clients, each as its text.
std::vector<std::string> json_objects(const std::string& array) {
  std::vector<std::string> out;
  static const std::regex object(R"re(\{[^{}]*\})re");
  for (auto it = std::sregex_iterator(array.begin(), array.end(), object); it != std::sregex_iterator(); ++it)
    out.push_back(it->str());
  return out;
}

std::string json_text(const std::string& json, const std::string& key) {
  std::smatch m;
  const std::regex re("\"" + key + "\":\"([^\"]*)\"");
  return std::regex_search(json, m, re) ? m[1].str() : "";
}

TEST(Console, ShowAnswersMatchTheHttpViews) {
  const PgwardConfig config = console_config("mode = \"transaction\"\nsize = 1\nwait_timeout = \"20s\"\n");
  const int admin_port = admin_port_of(config);
  Pgward pgward(config);
  // One client linked to the only server, one waiting for it.
  Conn linked = pgward.connect(kTrustUser, kDatabase, kTrustPassword);
  Conn waiting = pgward.connect(kTrustUser, kDatabase, kTrustPassword);
  ASSERT_TRUE(linked.ok() && waiting.ok()) << linked.error() << waiting.error();
  exec(linked, "BEGIN");
  ASSERT_EQ(PQsendQuery(waiting, "SELECT 2"), 1);
  ASSERT_TRUE(wait_until(
      [&] { return json_number(http(admin_port, "GET", "/api/pools").body, "clients_waiting") == "1"; }, 5s));

  const Shown pools = show(pgward.port(), "POOLS");
  EXPECT_EQ(pools.columns,
            (std::vector<std::string>{"database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle",
                                      "sv_login", "pool_mode", "cl_linked", "cl_idle", "sv_closing",
                                      "pool_size", "min_pool_size", "paused", "removed", "wait_timeouts"}))
      << pools.raw;
  const std::string pools_json = http(admin_port, "GET", "/api/pools").body;
  const auto* pool = find_row(pools, "database", kDatabase);
  ASSERT_NE(pool, nullptr) << pools.raw;
  EXPECT_EQ(pool->at("user"), kTrustUser);
  EXPECT_EQ(pool->at("cl_active"), "1");  // the linked client; the waiting one is cl_waiting
  EXPECT_EQ(pool->at("cl_waiting"), json_number(pools_json, "clients_waiting"));
  EXPECT_EQ(pool->at("cl_waiting"), "1");
  EXPECT_EQ(pool->at("cl_linked"), json_number(pools_json, "clients_active"));
  EXPECT_EQ(pool->at("sv_active"), json_number(pools_json, "servers_active"));
  EXPECT_EQ(pool->at("sv_active"), "1");
  EXPECT_EQ(pool->at("sv_idle"), json_number(pools_json, "servers_idle"));
  EXPECT_EQ(pool->at("pool_size"), "1");
  EXPECT_EQ(pool->at("pool_mode"), "transaction");
  EXPECT_EQ(pool->at("paused"), "f");

  const Shown clients = show(pgward.port(), "CLIENTS");
  EXPECT_EQ(clients.columns,
            (std::vector<std::string>{"type", "user", "database", "state", "addr", "port", "connect_time",
                                      "link", "id", "phase", "pinned", "tls"}))
      << clients.raw;
  // Every client the HTTP view shows, with the same state and server; and psql's own console session.
  std::string linked_id, server_id;
  std::vector<std::string> client_objects;
  for (const auto& c : json_objects(http(admin_port, "GET", "/api/clients").body))
    if (json_text(c, "database") != "pgward") client_objects.push_back(c);  // psql's console sessions
  EXPECT_EQ(client_objects.size(), 2u);
  for (const auto& c : client_objects) {
    const auto* row = find_row(clients, "id", json_number(c, "id"));
    ASSERT_NE(row, nullptr) << c << "\n" << clients.raw;
    EXPECT_EQ(row->at("type"), "C");
    EXPECT_EQ(row->at("state"), json_text(c, "state"));
    EXPECT_EQ(row->at("phase"), json_text(c, "phase"));
    EXPECT_EQ(row->at("database"), kDatabase);
    EXPECT_EQ(row->at("addr") + ":" + row->at("port"), json_text(c, "peer"));
    EXPECT_EQ(row->at("link"), json_number(c, "server_id"));
    EXPECT_EQ(row->at("tls"), "") << "NULL for a plain client";
    if (json_text(c, "state") == "active") {
      linked_id = row->at("id");
      server_id = row->at("link");
    }
  }
  EXPECT_NE(find_row(clients, "state", "waiting"), nullptr) << clients.raw;
  const auto* console = find_row(clients, "database", "pgward");
  ASSERT_NE(console, nullptr) << clients.raw;
  EXPECT_EQ(console->at("user"), kAdmin);
  EXPECT_FALSE(server_id.empty()) << clients.raw;

  const Shown servers = show(pgward.port(), "SERVERS");
  EXPECT_EQ(servers.columns, (std::vector<std::string>{"type", "user", "database", "state", "addr", "port",
                                                       "link", "id", "idle_ms", "tls"}))
      << servers.raw;
  ASSERT_EQ(servers.rows.size(), 1u) << servers.raw;
  const std::string servers_json = http(admin_port, "GET", "/api/servers").body;
  EXPECT_EQ(servers.rows[0].at("id"), json_number(servers_json, "id"));
  EXPECT_EQ(servers.rows[0].at("id"), server_id);
  EXPECT_EQ(servers.rows[0].at("state"), "active");
  EXPECT_EQ(servers.rows[0].at("link"), linked_id);
  EXPECT_EQ(servers.rows[0].at("port"), std::to_string(pg_port()));
  EXPECT_EQ(servers.rows[0].at("tls"), "") << "NULL for a plain server link";

  exec(linked, "COMMIT");
  ASSERT_TRUE(finish_within(waiting, 10s));

  const Shown stats = show(pgward.port(), "STATS");
  EXPECT_EQ(stats.columns, (std::vector<std::string>{"database", "total_xact_count", "total_query_count",
                                                     "total_server_closed_count", "total_received",
                                                     "total_sent", "total_xact_time", "total_query_time",
                                                     "total_wait_time", "total_wait_timeouts"}))
      << stats.raw;
  const auto* st = find_row(stats, "database", kDatabase);
  ASSERT_NE(st, nullptr) << stats.raw;
  const std::string after_json = http(admin_port, "GET", "/api/pools").body;
  EXPECT_EQ(st->at("total_xact_count"), json_number(after_json, "transactions"));
  EXPECT_EQ(st->at("total_query_count"), json_number(after_json, "queries"));
  EXPECT_GE(std::stoll(st->at("total_xact_count")), 2);
  EXPECT_GT(std::stoll(st->at("total_wait_time")), 0);  // the waiting client waited

  const Shown dbs = show(pgward.port(), "DATABASES");
  EXPECT_EQ(dbs.columns, (std::vector<std::string>{"name", "host", "port", "database", "force_user",
                                                   "pool_size", "min_pool_size", "server_lifetime",
                                                   "pool_mode", "current_connections", "paused"}))
      << dbs.raw;
  const auto* db = find_row(dbs, "name", kDatabase);
  ASSERT_NE(db, nullptr) << dbs.raw;
  EXPECT_EQ(db->at("port"), std::to_string(pg_port()));
  EXPECT_EQ(db->at("pool_size"), "1");
  EXPECT_EQ(db->at("current_connections"), "1");
  EXPECT_EQ(db->at("paused"), "0");

  const Shown cfg = show(pgward.port(), "CONFIG");
  EXPECT_EQ(cfg.columns, (std::vector<std::string>{"key", "value", "default", "changeable"})) << cfg.raw;
  const auto* size = find_row(cfg, "key", "pool.size");
  ASSERT_NE(size, nullptr) << cfg.raw;
  EXPECT_EQ(size->at("value"), "1");
  EXPECT_EQ(size->at("default"), "20");
  const auto* listen = find_row(cfg, "key", "proxy.listen");
  ASSERT_NE(listen, nullptr) << cfg.raw;
  EXPECT_EQ(listen->at("value"), "127.0.0.1:" + std::to_string(pgward.port()));
  EXPECT_EQ(listen->at("changeable"), "no");
  EXPECT_EQ(cfg.raw.find(kAdminPassword), std::string::npos);

  const Shown version = show(pgward.port(), "VERSION");
  EXPECT_EQ(version.columns, std::vector<std::string>{"version"});
  ASSERT_EQ(version.rows.size(), 1u) << version.raw;
  EXPECT_TRUE(version.rows[0].at("version").starts_with("pgward ")) << version.raw;
}

TEST(Console, PauseAndResumeAreSeenByAClient) {
  const PgwardConfig config = console_config("mode = \"transaction\"\nsize = 2\nwait_timeout = \"20s\"\n");
  Pgward pgward(config);
  Conn client = pgward.connect(kTrustUser, kDatabase, kTrustPassword);
  ASSERT_TRUE(client.ok()) << client.error();
  EXPECT_EQ(query_value(client, "SELECT 1"), "1");

  Psql r = psql(pgward.port(), {"pause app;"});
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("PAUSE"), std::string::npos) << r.out;
  EXPECT_EQ(cell(show(pgward.port(), "DATABASES"), "name", kDatabase, "paused"), "1");
  ASSERT_EQ(PQsendQuery(client, "SELECT 42"), 1);
  EXPECT_FALSE(wait_for_result(client, Clock::now() + 700ms)) << "a paused database ran a new transaction";

  r = psql(pgward.port(), {"Resume"});
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("RESUME"), std::string::npos) << r.out;
  auto result = finish_within(client, 10s);
  ASSERT_TRUE(result);
  EXPECT_STREQ(PQgetvalue(result->get(), 0, 0), "42");

  r = psql(pgward.port(), {"PAUSE nosuchdb"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("3D000"), std::string::npos) << r.out;
}

TEST(Console, ReloadPicksUpTheChangedFile) {
  PgwardConfig config = console_config();
  Pgward pgward(config);
  auto pool_size = [&] { return cell(show(pgward.port(), "DATABASES"), "name", kDatabase, "pool_size"); };
  EXPECT_EQ(pool_size(), "4");
  std::string text = pgward.config_text();
  const auto at = text.find("size = 4");
  ASSERT_NE(at, std::string::npos);
  std::ofstream(pgward.config_path(), std::ios::trunc) << text.replace(at, 8, "size = 7");
  Psql r = psql(pgward.port(), {"RELOAD"});
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("RELOAD"), std::string::npos) << r.out;
  EXPECT_EQ(pool_size(), "7");

  // A broken file: the running configuration stays, the console says why and goes on.
  std::ofstream(pgward.config_path(), std::ios::trunc) << text << "\n[pool]\nnonsense = 1\n";
  r = psql(pgward.port(), {"RELOAD", "SHOW VERSION"});
  EXPECT_NE(r.out.find("F0000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pgward "), std::string::npos) << r.out;
  EXPECT_EQ(pool_size(), "7");
}

TEST(Console, RefusesWhoeverIsNotAConsoleUser) {
  const PgwardConfig config = console_config();
  const int admin_port = admin_port_of(config);
  Pgward pgward(config);
  // A user of the users file with the right password, but not a console user (psql prints no SQLSTATE for
  // a refused connection: libpq tells it).
  Psql r = psql(pgward.port(), {"SHOW POOLS"}, "bob", "bobpass");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("FATAL:  user \"bob\" is not a console user"), std::string::npos) << r.out;
  Conn bob = Conn::connect(pgward.conninfo("bob", "pgward", "bobpass"));
  EXPECT_FALSE(bob.ok());
  EXPECT_EQ(bob.connect_sqlstate(), "28000") << bob.error();
  // The console user with a wrong password: refused as any client would be.
  r = psql(pgward.port(), {"SHOW POOLS"}, kAdmin, "wrong");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("password authentication failed"), std::string::npos) << r.out;
  Conn wrong = Conn::connect(pgward.conninfo(kAdmin, "pgward", "wrong"));
  EXPECT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.connect_sqlstate(), "28P01") << wrong.error();
  // The refused console login is counted.
  EXPECT_EQ(sample(http(admin_port, "GET", "/metrics").body, "pgward_client_connections_refused_total",
                   "reason=\"not_console_user\""),
            2.0);
}

TEST(Console, WithoutConsoleUsersThereIsNoConsoleDatabase) {
  PgwardConfig config;
  config.auth = "type = \"trust\"\n";
  Pgward pgward(config);
  Conn c = Conn::connect(pgward.conninfo(kTrustUser, "pgward"));
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.connect_sqlstate(), "3D000") << c.error();
}

TEST(Console, UnknownCommandsAreErrorsAndTheSessionGoesOn) {
  Pgward pgward(console_config());
  // psql runs every -c in the one session: the errors do not end it.
  Psql r = psql(pgward.port(), {"SHOW NOTHING", "FROBNICATE", "SHOW POOLS; SHOW CLIENTS", "SHOW VERSION"});
  EXPECT_NE(r.out.find("42704"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("42601"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pgward "), std::string::npos) << r.out;

  Conn c = pgward.connect(kAdmin, "pgward", kAdminPassword);
  ASSERT_TRUE(c.ok()) << c.error();
  EXPECT_EQ(exec_sqlstate(c, "DROP TABLE x"), "42601");
  EXPECT_EQ(exec_sqlstate(c, "SHOW pools extra"), "42601");
  EXPECT_TRUE(query_value(c, "show version;").starts_with("pgward "));
  Result empty(PQexec(c, ""));
  EXPECT_EQ(PQresultStatus(empty.get()), PGRES_EMPTY_QUERY);
  // The extended protocol (libpq's PQexecParams): refused with 0A000, the session still answers.
  Result ext(PQexecParams(c, "SHOW VERSION", 0, nullptr, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(ext.get()), "0A000") << PQerrorMessage(c);
  EXPECT_TRUE(query_value(c, "SHOW VERSION").starts_with("pgward "));
}

TEST(Console, ExtendedProtocolBatchIsRefusedUpToItsSync) {
  PgwardConfig config = console_config();
  config.auth = "type = \"trust\"\n";
  Pgward pgward(config);
  RawClient raw(pgward.port());
  raw.login({{"user", kAdmin}, {"database", "pgward"}});
  ASSERT_TRUE(raw.send(wire::parse("", "SHOW POOLS") + wire::bind("") + wire::describe_portal() +
                       wire::execute() + wire::sync()));
  auto reply = raw.read_until_ready();
  EXPECT_EQ(message_signature(reply), "E(0A000) Z(I)");
  reply = raw.query("SHOW VERSION");
  EXPECT_EQ(message_signature(reply), "T D C(SHOW) Z(I)");
  // A message longer than a console command can be: FATAL 08P01.
  ASSERT_TRUE(raw.send(wire::query("SHOW " + std::string(20000, 'x'))));
  auto msg = raw.read_message();
  ASSERT_TRUE(msg);
  EXPECT_EQ(parse_error(*msg)['C'], "08P01");
  EXPECT_TRUE(raw.wait_closed());
}

// Console sessions reading every view while clients come, go and run transactions (under scripts/tsan.sh with
// workers = 2: the views are built on the main thread while the sessions run on the workers).
TEST(Console, ViewsUnderLoad) {
  Pgward pgward(console_config("mode = \"transaction\"\nsize = 2\n"));
  std::atomic<bool> stop{false};
  std::atomic<int> answers{0}, transactions{0}, failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      Conn c = Conn::connect(pgward.conninfo(kAdmin, "pgward", kAdminPassword));
      for (int n = 0; !stop && c.ok(); ++n) {
        static const char* kShows[] = {"SHOW POOLS", "SHOW CLIENTS",   "SHOW SERVERS",
                                       "SHOW STATS", "SHOW DATABASES", "SHOW CONFIG"};
        Result r(PQexec(c, kShows[n % 6]));
        PQresultStatus(r.get()) == PGRES_TUPLES_OK ? ++answers : ++failures;
      }
    });
  }
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      while (!stop) {
        Conn c = pgward.connect(kTrustUser, kDatabase, kTrustPassword);
        for (int n = 0; n < 5 && c.ok(); ++n) {
          Result r(PQexec(c, "BEGIN; SELECT 1; COMMIT"));
          PQresultStatus(r.get()) == PGRES_COMMAND_OK ? ++transactions : ++failures;
        }
      }
    });
  }
  std::this_thread::sleep_for(2s);
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GT(answers, 30);
  EXPECT_GT(transactions, 30);
}

TEST(Console, ShutdownDrainsLikeSigterm) {
  // pgward is started here rather than by the harness: the test wants its exit status.
  const std::string dir = std::filesystem::temp_directory_path() / unique_name("pgward-it-console");
  std::filesystem::create_directories(dir);
  const int port = free_port();
  std::ofstream(dir + "/config.toml")
      << "[proxy]\nlisten = \"127.0.0.1:" << port
      << "\"\nshutdown_timeout = \"10s\"\n[admin]\nlisten = \"127.0.0.1:" << free_port()
      << "\"\nconsole_users = [\"admin\"]\n"
      << "[auth]\ntype = \"trust\"\n[pool]\nmode = \"transaction\"\nsize = 4\n"
      << PgwardConfig::database_toml(kDatabase);
  const pid_t pid =
      spawn_process({PGWARD_BINARY, "--config", dir + "/config.toml"}, dir + "/pgward.log", true);
  const std::string conninfo =
      "host=127.0.0.1 port=" + std::to_string(port) + " user=" + kTrustUser + " dbname=" + kDatabase;
  Conn c;
  ASSERT_TRUE(wait_until(
      [&] {
        c = Conn::connect(conninfo, 1s);
        return c.ok();
      },
      10s));
  exec(c, "BEGIN");
  exec(c, "SELECT 1");
  // A console session left open hears the end of the drain like any client.
  Conn console = Conn::connect("host=127.0.0.1 port=" + std::to_string(port) + " user=admin dbname=pgward");
  ASSERT_TRUE(console.ok()) << console.error();

  const Psql r = psql(port, {"SHUTDOWN"}, kAdmin, "");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("SHUTDOWN"), std::string::npos) << r.out;
  // No new clients; the transaction in flight finishes; then pgward exits 0.
  EXPECT_TRUE(wait_until([&] { return !Conn::connect(conninfo, 1s).ok(); }, 5s));
  std::this_thread::sleep_for(300ms);
  exec(c, "COMMIT");
  int status = -1;
  EXPECT_TRUE(wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 15s));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  Result after(PQexec(console, "SHOW VERSION"));
  EXPECT_NE(PQresultStatus(after.get()), PGRES_TUPLES_OK);
  EXPECT_EQ(sqlstate_in_message(PQerrorMessage(console)), "57P01") << PQerrorMessage(console);
  if (!WIFEXITED(status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

}  // namespace
}  // namespace pgward::it
