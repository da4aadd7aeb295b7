// The admin HTTP port: /metrics scraped by a real Prometheus, promtool's lint, readiness against a PostgreSQL
// that stops and comes back, live reload under load, pause/resume, drain on SIGTERM, the token, and garbage
// requests.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

// ---- small helpers ----

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

std::string temp_dir(const char* prefix) {
  std::string pattern = std::string("/tmp/") + prefix + "-XXXXXX";
  if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

std::optional<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

void stop_process(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  if (!wait_exit(pid, 10s)) {
    kill(pid, SIGKILL);
    wait_exit(pid, 5s);
  }
}

// A pgward config whose admin port is `admin_port`. [admin] goes after the [[database]] tables: TOML does not
// mind.
PgwardConfig admin_config(int admin_port, const std::string& pool = "mode = \"transaction\"\nsize = 4\n",
                          const std::string& extra_admin = "", const std::string& databases = "") {
  PgwardConfig config;
  config.proxy = "max_client_conn = 10000\nlog_level = \"info\"\n";
  config.pool = pool;
  config.databases = (databases.empty() ? PgwardConfig::database_toml(kDatabase) : databases) +
                     "[admin]\nlisten = \"127.0.0.1:" + std::to_string(admin_port) + "\"\n" + extra_admin;
  return config;
}

std::string json_field(const std::string& json, const std::string& key) {
  std::smatch m;
  const std::regex re("\"" + key + "\":\"((?:[^\"\\\\]|\\\\.)*)\"");
  return std::regex_search(json, m, re) ? m[1].str() : "";
}

std::string url_encode(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.') {
      out += c;
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      out += buf;
    }
  }
  return out;
}

// ---- a real Prometheus scraping pgward ----

class Prometheus {
 public:
  explicit Prometheus(int target_port) {
    dir_ = temp_dir("pgward-it-prom");
    port_ = free_port();
    write_text(dir_ + "/prometheus.yml",
               "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
               "scrape_configs:\n  - job_name: pgward\n    static_configs:\n      - targets: ['127.0.0.1:" +
                   std::to_string(target_port) + "']\n");
    pid_ = spawn_process(
        {"prometheus", "--config.file=" + dir_ + "/prometheus.yml", "--storage.tsdb.path=" + dir_ + "/data",
         "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"},
        dir_ + "/prometheus.log", true);
    ready_ = wait_until([&] { return http(port_, "GET", "/-/ready").status == 200; }, 30s);
  }
  ~Prometheus() {
    stop_process(pid_);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  bool ready() const { return ready_; }
  std::string log() const { return read_text(dir_ + "/prometheus.log"); }

  // The value of an instant vector query with one result, nullopt when it has none.
  std::optional<double> query(const std::string& promql) const {
    auto r = http(port_, "GET", "/api/v1/query?query=" + url_encode(promql));
    static const std::regex value(R"re("value":\[[0-9.e+]+,"([^"]+)"\])re");
    std::smatch m;
    if (r.status != 200 || !std::regex_search(r.body, m, value)) return std::nullopt;
    return std::stod(m[1].str());
  }
  // Polls until the query returns a value satisfying pred.
  bool wait_for(const std::string& promql, const std::function<bool(double)>& pred,
                std::chrono::milliseconds timeout = 20s) const {
    return wait_until(
        [&] {
          auto v = query(promql);
          return v && pred(*v);
        },
        timeout);
  }

 private:
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool ready_ = false;
};

// ---- a second PostgreSQL that a test may stop and start ----

class ExtraPostgres {
 public:
  ExtraPostgres() {
    dir_ = temp_dir("pgward-it-pg2");
    port_ = free_port();
    if (geteuid() == 0) {
      const passwd* pw = getpwnam("postgres");
      if (pw && chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) return;
      prefix_ = "runuser -u postgres -- ";
    }
    ok_ = run("/usr/lib/postgresql/15/bin/initdb -D " + dir_ +
              "/data -A trust -U postgres --no-sync -E UTF8 "
              "--locale=C > " +
              dir_ + "/initdb.log 2>&1") &&
          start();
  }
  ~ExtraPostgres() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  bool ok() const { return ok_; }
  int port() const { return port_; }
  bool start() {
    return run("/usr/lib/postgresql/15/bin/pg_ctl start -w -t 30 -D " + dir_ + "/data -l " + dir_ +
               "/postgres.log -o \"-p " + std::to_string(port_) + " -k " + dir_ +
               " -c listen_addresses=127.0.0.1 -c fsync=off\" > /dev/null 2>&1");
  }
  bool stop() {
    return run("/usr/lib/postgresql/15/bin/pg_ctl stop -w -t 30 -m fast -D " + dir_ +
               "/data > /dev/null 2>&1");
  }

 private:
  bool run(const std::string& cmd) { return std::system((prefix_ + cmd).c_str()) == 0; }
  std::string dir_;
  std::string prefix_;
  int port_ = 0;
  bool ok_ = false;
};

// ---------------------------------------------------------------------------------------------------------------

TEST(Admin, PrometheusScrapesTransactionsErrorsAndWaitingClients) {
  const int admin_port = free_port();
  PgwardConfig config = admin_config(admin_port, "mode = \"transaction\"\nsize = 2\nwait_timeout = \"30s\"\n",
                                     "", PgwardConfig::database_toml("metrics", kDatabase));
  Pgward pgward(config);
  ASSERT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/live").status == 200; }, 10s));

  const std::string table = unique_name("admin_metrics");
  {
    Conn direct = connect_direct();
    exec(direct, "CREATE TABLE " + table + " (id int PRIMARY KEY)");
    exec(direct, "GRANT ALL ON " + table + " TO PUBLIC");
  }
  Prometheus prometheus(admin_port);
  ASSERT_TRUE(prometheus.ready()) << prometheus.log();

  // A known workload: 25 one-statement transactions, one INSERT, one INSERT that violates the primary key.
  {
    Conn c = pgward.connect(kTrustUser, "metrics");
    ASSERT_TRUE(c.ok());
    for (int i = 0; i < 25; ++i) exec(c, "SELECT 1");
    exec(c, "INSERT INTO " + table + " VALUES (1)");
    EXPECT_EQ(exec_sqlstate(c, "INSERT INTO " + table + " VALUES (1)"), "23505");
  }
  const std::string pool = "{database=\"metrics\",user=\"" + std::string(kTrustUser) + "\"}";
  EXPECT_TRUE(prometheus.wait_for("pgward_transactions_total" + pool, [](double v) { return v == 27; }))
      << "pgward_transactions_total = " << prometheus.query("pgward_transactions_total" + pool).value_or(-1);
  EXPECT_TRUE(prometheus.wait_for("pgward_queries_total" + pool, [](double v) { return v == 27; }));
  EXPECT_TRUE(
      prometheus.wait_for(R"(pgward_errors_total{database="metrics",sqlstate="23505",origin="server"})",
                          [](double v) { return v == 1; }))
      << http(admin_port, "GET", "/metrics").body;
  EXPECT_TRUE(
      prometheus.wait_for("pgward_pool_max_server_connections" + pool, [](double v) { return v == 2; }));
  EXPECT_TRUE(prometheus.wait_for("pgward_build_info", [](double v) { return v == 1; }));
  EXPECT_TRUE(
      prometheus.wait_for("pgward_client_received_bytes_total" + pool, [](double v) { return v > 0; }));

  // Exhaust the pool: two clients hold a transaction open, a third waits for a server.
  Conn a = pgward.connect(kTrustUser, "metrics");
  Conn b = pgward.connect(kTrustUser, "metrics");
  Conn waiter = pgward.connect(kTrustUser, "metrics");
  ASSERT_TRUE(a.ok() && b.ok() && waiter.ok());
  exec(a, "BEGIN");
  exec(b, "BEGIN");
  ASSERT_EQ(PQsendQuery(waiter, "SELECT 1"), 1);
  EXPECT_TRUE(prometheus.wait_for(R"(pgward_client_connections{database="metrics",state="waiting"})",
                                  [](double v) { return v > 0; }))
      << http(admin_port, "GET", "/metrics").body;
  EXPECT_TRUE(prometheus.wait_for(R"(pgward_server_connections{database="metrics",state="active"})",
                                  [](double v) { return v == 2; }));
  exec(a, "COMMIT");
  auto r = finish_within(waiter, 10s);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(PQresultStatus(r->get()), PGRES_TUPLES_OK);
  exec(b, "COMMIT");
  EXPECT_TRUE(prometheus.wait_for("pgward_transactions_total" + pool, [](double v) { return v == 30; }));
  EXPECT_TRUE(prometheus.wait_for("sum(pgward_pool_wait_seconds_count" + pool + ")",
                                  [](double v) { return v >= 1; }));

  // promtool's lint on the exposition as it is now.
  const auto metrics = http(admin_port, "GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  const std::string file = "/tmp/" + unique_name("pgward-metrics") + ".txt";
  write_text(file, metrics.body);
  const int rc = std::system(("promtool check metrics < " + file + " > " + file + ".out 2>&1").c_str());
  EXPECT_EQ(rc, 0) << read_text(file + ".out") << "\n" << metrics.body;
  std::filesystem::remove(file);
  std::filesystem::remove(file + ".out");
  for (const char* name :
       {"pgward_client_connections_accepted_total", "pgward_server_connect_attempts_total",
        "pgward_server_connect_failures_total", "pgward_transaction_duration_seconds_bucket",
        "pgward_query_duration_seconds_sum", "pgward_prepared_statement_cache_hits_total",
        "pgward_prepared_statement_cache_misses_total", "pgward_prepared_statement_cache_evictions_total",
        "pgward_cancel_requests_total", "pgward_commit_outcome_unknown_total", "pgward_config_reloads_total",
        "pgward_client_sent_bytes_total", "pgward_client_connections_refused_total",
        "pgward_client_login_timeouts_total", "pgward_scram_key_derivations_total"}) {
    EXPECT_NE(metrics.body.find(name), std::string::npos) << name << " missing";
  }
  Conn direct = connect_direct();
  exec(direct, "DROP TABLE " + table);
}

TEST(Admin, ReadyFollowsDatabaseReachability) {
  ExtraPostgres pg2;
  ASSERT_TRUE(pg2.ok()) << "could not start a second PostgreSQL";
  const int admin_port = free_port();
  const std::string databases =
      PgwardConfig::database_toml(kDatabase) +
      "[[database]]\nname = \"second\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(pg2.port()) +
      "\ndbname = \"postgres\"\nuser = \"postgres\"\n\n";
  Pgward pgward(admin_config(admin_port, "mode = \"transaction\"\nsize = 4\n", "", databases));

  EXPECT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/ready").status == 200; }, 10s))
      << http(admin_port, "GET", "/health/ready").body;
  {
    Conn c = pgward.connect("postgres", "second");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(query_value(c, "SELECT 1"), "1");
  }

  ASSERT_TRUE(pg2.stop());
  auto ready = http(admin_port, "GET", "/health/ready");
  EXPECT_EQ(ready.status, 503);
  EXPECT_NE(ready.body.find("\"second\""), std::string::npos) << ready.body;
  EXPECT_NE(ready.body.find("database unreachable"), std::string::npos) << ready.body;
  EXPECT_EQ(http(admin_port, "GET", "/health/live").status, 200);
  {
    Conn c = pgward.connect();  // the other database keeps serving
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(query_value(c, "SELECT 1"), "1");
  }

  ASSERT_TRUE(pg2.start());
  EXPECT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/ready").status == 200; }, 10s))
      << http(admin_port, "GET", "/health/ready").body;
}

TEST(Admin, JsonViews) {
  const int admin_port = free_port();
  PgwardConfig config =
      admin_config(admin_port, "mode = \"transaction\"\nsize = 3\n", "token = \"t0ken\"\n",
                   PgwardConfig::database_toml(kDatabase, kDatabase, "password = \"hunter2\"\n"));
  Pgward pgward(config);
  ASSERT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/live").status == 200; }, 10s));
  Conn idle = pgward.connect();
  Conn linked = pgward.connect();
  Conn other = pgward.connect();
  ASSERT_TRUE(idle.ok() && linked.ok() && other.ok());
  exec(other, "BEGIN");
  exec(linked, "BEGIN");
  exec(other, "COMMIT");  // its server goes back idle

  // `other` shows idle once its server is back, which happens just after its COMMIT's answer went out.
  HttpResponse pools;
  EXPECT_TRUE(wait_until(
      [&] {
        pools = http(admin_port, "GET", "/api/pools");
        return pools.body.find("\"clients_idle\":2") != std::string::npos;
      },
      5s))
      << pools.body;
  EXPECT_EQ(pools.status, 200);
  EXPECT_NE(pools.body.find("\"database\":\"app\""), std::string::npos) << pools.body;
  EXPECT_NE(pools.body.find("\"size\":3"), std::string::npos) << pools.body;
  EXPECT_NE(pools.body.find("\"clients_active\":1"), std::string::npos) << pools.body;

  auto clients = http(admin_port, "GET", "/api/clients");
  EXPECT_EQ(clients.status, 200);
  EXPECT_NE(clients.body.find("\"state\":\"active\""), std::string::npos) << clients.body;
  EXPECT_NE(clients.body.find("\"state\":\"idle\""), std::string::npos) << clients.body;
  // The session's own phase beside PgBouncer's state: the client in its transaction is linked to a server.
  EXPECT_NE(clients.body.find("\"state\":\"active\",\"phase\":\"linked\""), std::string::npos)
      << clients.body;
  EXPECT_NE(clients.body.find("\"state\":\"idle\",\"phase\":\"idle\""), std::string::npos) << clients.body;
  EXPECT_NE(clients.body.find(std::string("\"user\":\"") + kTrustUser + "\""), std::string::npos)
      << clients.body;

  auto servers = http(admin_port, "GET", "/api/servers");
  EXPECT_EQ(servers.status, 200);
  EXPECT_NE(servers.body.find("\"state\":\"active\""), std::string::npos) << servers.body;
  EXPECT_NE(servers.body.find("\"state\":\"idle\""), std::string::npos) << servers.body;

  auto cfg = http(admin_port, "GET", "/api/config");
  EXPECT_EQ(cfg.status, 200);
  EXPECT_EQ(cfg.body.find("hunter2"), std::string::npos) << cfg.body;
  EXPECT_EQ(cfg.body.find("t0ken"), std::string::npos) << cfg.body;
  EXPECT_NE(cfg.body.find("<redacted>"), std::string::npos) << cfg.body;
  exec(linked, "COMMIT");

  EXPECT_EQ(http(admin_port, "GET", "/nope").status, 404);
  EXPECT_EQ(http(admin_port, "POST", "/metrics").status, 405);
  EXPECT_EQ(http(admin_port, "GET", "/api/reload", "Authorization: Bearer t0ken\r\n").status, 405);
}

TEST(Admin, TokenAndGarbage) {
  const int admin_port = free_port();
  Pgward pgward(admin_config(admin_port, "mode = \"transaction\"\nsize = 4\n", "token = \"s3cret\"\n"));
  ASSERT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/live").status == 200; }, 10s));

  for (const char* path : {"/api/reload", "/api/pause", "/api/resume"}) {
    EXPECT_EQ(http(admin_port, "POST", path).status, 401) << path;
    EXPECT_EQ(http(admin_port, "POST", path, "Authorization: Bearer wrong\r\n").status, 401) << path;
    EXPECT_EQ(http(admin_port, "POST", path, "Authorization: Basic czNjcmV0\r\n").status, 401) << path;
  }
  EXPECT_EQ(http(admin_port, "POST", "/api/reload", "Authorization: Bearer s3cret\r\n").status, 200);
  EXPECT_EQ(http(admin_port, "POST", "/api/pause", "Authorization: Bearer s3cret\r\n").status, 200);
  EXPECT_EQ(http(admin_port, "POST", "/api/resume", "Authorization: Bearer s3cret\r\n").status, 200);
  // Read-only endpoints on a loopback listener need no token.
  EXPECT_EQ(http(admin_port, "GET", "/metrics").status, 200);
  EXPECT_EQ(http(admin_port, "POST", "/api/pause?database=nosuch", "Authorization: Bearer s3cret\r\n").status,
            404);

  // Garbage of several kinds: each gets a 400 (or a close for a bare close), and nothing else is affected.
  for (const std::string& garbage :
       {std::string("GARBAGE\r\n\r\n"), std::string("GET / HTTP/9.9\r\n\r\n"),
        std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11) + "\r\n\r\n",
        std::string("GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n"),
        std::string("GET /metrics HTTP/1.1\r\nHost: x\r\n") + std::string(20000, 'a') + "\r\n\r\n",
        std::string("POST /api/reload HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n")}) {
    auto r = http_raw(admin_port, garbage);
    EXPECT_EQ(r.status, 400) << "for " << garbage.substr(0, 40);
  }
  EXPECT_EQ(http(admin_port, "GET", "/health/live").status, 200);
  Conn c = pgward.connect();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(query_value(c, "SELECT 1"), "1");
  EXPECT_TRUE(pgward.running());
}

// One raw request to the admin port with exactly these header lines (no Host added), body empty.
HttpResponse raw_request(int port, const std::string& method, const std::string& target,
                         const std::string& headers, const std::string& body = "") {
  return http_raw(port, method + " " + target + " HTTP/1.1\r\n" + headers + "Connection: close\r\n" +
                            "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
}

// Whether any database is paused, as /api/config lists them.
bool any_paused(int admin_port) {
  const auto config = http(admin_port, "GET", "/api/config");
  EXPECT_EQ(config.status, 200) << config.body;
  return config.body.find("\"paused\":[\"") != std::string::npos;
}

// A web page cannot make a browser pause the databases: neither a cross-origin form POST, nor a request
// through a DNS name rebound to 127.0.0.1. Command-line clients (curl sends Host with the port, no Origin)
// and scrapers that use a foreign Host for /metrics keep working.
TEST(Admin, BrowserForgedRequestsAreRefused) {
  const int admin_port = free_port();
  Pgward pgward(admin_config(admin_port));
  ASSERT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/live").status == 200; }, 10s));
  const std::string here = "Host: 127.0.0.1:" + std::to_string(admin_port) + "\r\n";

  // What <form method=post action=http://127.0.0.1:9930/api/pause> on http://evil.example sends.
  auto r = raw_request(admin_port, "POST", "/api/pause",
                       here +
                           "Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n"
                           "Content-Type: application/x-www-form-urlencoded\r\n",
                       "database=app");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("\"error\""), std::string::npos) << r.body;
  // The same from a browser that sends no Origin: the form's Content-Type gives it away.
  for (const char* type :
       {"application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain;charset=UTF-8"}) {
    r = raw_request(admin_port, "POST", "/api/pause", here + "Content-Type: " + type + "\r\n");
    EXPECT_EQ(r.status, 403) << type << ": " << r.body;
  }
  // DNS rebinding: the browser sends the attacker's name as Host.
  r = raw_request(admin_port, "POST", "/api/pause",
                  "Host: evil.example:" + std::to_string(admin_port) + "\r\n");
  EXPECT_EQ(r.status, 421) << r.body;
  r = raw_request(admin_port, "GET", "/api/config",
                  "Host: evil.example:" + std::to_string(admin_port) + "\r\n");
  EXPECT_EQ(r.status, 421) << r.body;
  r = raw_request(admin_port, "POST", "/api/reload", "");
  EXPECT_EQ(r.status, 421) << "no Host at all: " << r.body;

  // Nothing was paused: the pool says so, readiness says so, and a transaction goes through at once.
  EXPECT_FALSE(any_paused(admin_port));
  EXPECT_EQ(http(admin_port, "GET", "/health/ready").status, 200);
  {
    Conn c = pgward.connect();
    ASSERT_TRUE(c.ok()) << c.error();
    auto v = exec_within(c, "SELECT 1", 2s);
    ASSERT_TRUE(v.has_value()) << "a refused pause must not hold transactions";
    EXPECT_EQ(PQgetvalue(v->get(), 0, 0), std::string("1"));
  }

  // Scrapers and probes use whatever Host they were configured with.
  for (const char* path : {"/metrics", "/health/live", "/health/ready"}) {
    r = raw_request(admin_port, "GET", path, "Host: 10.244.0.17:9930\r\n");
    EXPECT_EQ(r.status, 200) << path << ": " << r.body;
  }
  const auto metrics = http(admin_port, "GET", "/metrics").body;
  EXPECT_EQ(sample(metrics, "pgward_admin_requests_refused_total", "reason=\"origin\""), 1.0) << metrics;
  EXPECT_EQ(sample(metrics, "pgward_admin_requests_refused_total", "reason=\"content_type\""), 3.0);
  EXPECT_EQ(sample(metrics, "pgward_admin_requests_refused_total", "reason=\"host\""), 3.0);

  // What `curl -X POST http://127.0.0.1:PORT/api/pause` sends still works, as does a JSON client.
  r = raw_request(admin_port, "POST", "/api/pause", here + "User-Agent: curl/7.88.1\r\nAccept: */*\r\n");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(any_paused(admin_port));
  r = raw_request(admin_port, "POST", "/api/resume",
                  "Host: localhost:" + std::to_string(admin_port) + "\r\nContent-Type: application/json\r\n" +
                      "Origin: http://localhost:" + std::to_string(admin_port) + "\r\n",
                  "{}");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(any_paused(admin_port));
}

// The real curl, as operators' scripts call it.
TEST(Admin, CurlPostStillWorks) {
  const int admin_port = free_port();
  Pgward pgward(admin_config(admin_port));
  ASSERT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/live").status == 200; }, 10s));
  const std::string base = "http://127.0.0.1:" + std::to_string(admin_port);
  auto curl = [&](const std::string& args) {
    return std::system(("curl -fsS -o /dev/null -m 10 " + args + " >/dev/null 2>&1").c_str());
  };
  EXPECT_EQ(curl("-X POST " + base + "/api/pause"), 0);
  EXPECT_TRUE(any_paused(admin_port));
  EXPECT_EQ(curl("-X POST " + base + "/api/resume"), 0);
  EXPECT_FALSE(any_paused(admin_port));
  EXPECT_EQ(curl("-X POST http://localhost:" + std::to_string(admin_port) + "/api/reload"), 0);
  // `curl -d` sends a form: that is what a browser sends too.
  EXPECT_NE(curl("-d database=app " + base + "/api/pause"), 0);
  EXPECT_FALSE(any_paused(admin_port));
}

// With a token, a request that carries it may name the admin port however it likes (a page cannot know the
// token); without it, the Host must still be one of the port's own.
TEST(Admin, TokenBearerMayUseAnyHost) {
  const int admin_port = free_port();
  Pgward pgward(admin_config(admin_port, "mode = \"transaction\"\nsize = 4\n", "token = \"s3cret\"\n"));
  ASSERT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/live").status == 200; }, 10s));
  auto r = raw_request(admin_port, "POST", "/api/pause",
                       "Host: pgward.internal:9930\r\nAuthorization: Bearer s3cret\r\n");
  EXPECT_EQ(r.status, 200) << r.body;
  r = raw_request(admin_port, "POST", "/api/resume", "Host: pgward.internal:9930\r\n");
  EXPECT_EQ(r.status, 421) << r.body;
  r = raw_request(
      admin_port, "POST", "/api/resume",
      "Host: pgward.internal:9930\r\nAuthorization: Bearer s3cret\r\nOrigin: http://evil.example\r\n");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_TRUE(any_paused(admin_port));
  r = raw_request(admin_port, "POST", "/api/resume",
                  "Host: pgward.internal:9930\r\nAuthorization: Bearer s3cret\r\n");
  EXPECT_EQ(r.status, 200) << r.body;
}

// Runs `BEGIN; SELECT pg_sleep; COMMIT` on `clients` connections until stop; counts outcomes.
struct Load {
  std::atomic<bool> stop{false};
  std::atomic<int> committed{0};
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;

  void start(const Pgward& pgward, int clients, const std::string& sleep = "0.02") {
    for (int i = 0; i < clients; ++i) {
      threads.emplace_back([this, &pgward, sleep] {
        Conn c = Conn::connect(pgward.conninfo());
        if (!c.ok()) return fail("connect: " + c.error());
        while (!stop) {
          for (const std::string& sql :
               {std::string("BEGIN"), "SELECT pg_sleep(" + sleep + ")", std::string("COMMIT")}) {
            auto r = exec_within(c, sql, 10s);
            if (!r) return fail(sql + ": no answer within 10 s");
            const auto st = PQresultStatus(r->get());
            if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return fail(sql + ": " + PQerrorMessage(c));
          }
          ++committed;
        }
      });
    }
  }
  void fail(const std::string& what) {
    std::lock_guard lock(mu);
    errors.push_back(what);
  }
  void join() {
    stop = true;
    for (auto& t : threads) t.join();
    threads.clear();
  }
  ~Load() { join(); }
};

TEST(Admin, ReloadChangesPoolSizeUnderLoad) {
  Conn monitor = connect_direct();
  ASSERT_TRUE(wait_until([&] { return count_backends(monitor, kTrustUser) == 0; }, 10s));
  const int admin_port = free_port();
  Pgward pgward(admin_config(admin_port, "mode = \"transaction\"\nsize = 2\n"));
  ASSERT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/live").status == 200; }, 10s));
  const std::string path = json_field(http(admin_port, "GET", "/api/config").body, "source_path");
  ASSERT_FALSE(path.empty());
  const std::string original = read_text(path);
  auto with_size = [&](int size) {
    return std::regex_replace(original, std::regex("size = 2"), "size = " + std::to_string(size));
  };

  Load load;
  load.start(pgward, 8);
  std::atomic<bool> done{false};
  std::atomic<int> bound{2};
  std::atomic<int> over{0};
  std::atomic<int> max_seen{0};
  Conn watch_conn = connect_direct();  // a libpq connection is not for two threads
  std::thread watcher([&] {
    while (!done) {
      // The count is of some moment while the query ran, and the bound may change meanwhile (the test lowers
      // it once it has seen a shrink done): compare with the larger of the bounds before and after. A shrink
      // closes servers as they come back, so the old bound holds until then.
      const int bound_before = bound;
      const int n = count_backends(watch_conn, kTrustUser);
      if (n > std::max(bound_before, bound.load())) ++over;
      max_seen = std::max(max_seen.load(), n);
      std::this_thread::sleep_for(5ms);
    }
  });
  std::this_thread::sleep_for(500ms);

  bound = 5;
  write_text(path, with_size(5));
  auto r = http(admin_port, "POST", "/api/reload");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(wait_until([&] { return count_backends(monitor, kTrustUser) == 5; }, 10s))
      << "backends: " << count_backends(monitor, kTrustUser);

  write_text(path, with_size(1));
  r = http(admin_port, "POST", "/api/reload");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(wait_until([&] { return count_backends(monitor, kTrustUser) <= 1; }, 10s))
      << "backends: " << count_backends(monitor, kTrustUser);
  bound = 1;
  std::this_thread::sleep_for(500ms);

  // A broken file: rejected, counted, and the running configuration keeps serving with size 1.
  write_text(path, original + "\n[pool]\nsize = \"lots\"\n");
  r = http(admin_port, "POST", "/api/reload");
  EXPECT_EQ(r.status, 422) << r.body;
  EXPECT_NE(r.body.find(path), std::string::npos) << r.body;
  std::this_thread::sleep_for(300ms);
  const int committed_before = load.committed;
  std::this_thread::sleep_for(500ms);
  EXPECT_GT(load.committed.load(), committed_before);
  EXPECT_NE(http(admin_port, "GET", "/api/pools").body.find("\"size\":1"), std::string::npos);

  done = true;
  watcher.join();
  load.join();
  EXPECT_EQ(over.load(), 0) << "max backends seen: " << max_seen.load();
  EXPECT_TRUE(load.errors.empty()) << load.errors.front();
  const auto metrics = http(admin_port, "GET", "/metrics").body;
  EXPECT_EQ(sample(metrics, "pgward_config_reloads_total", "result=\"ok\""), 2.0);
  EXPECT_EQ(sample(metrics, "pgward_config_reloads_total", "result=\"failed\""), 1.0);
  EXPECT_NE(pgward.log().find("reload failed"), std::string::npos);
  write_text(path, original);
}

TEST(Admin, PauseHoldsNewTransactionsAndResumeReleasesThem) {
  const int admin_port = free_port();
  Pgward pgward(admin_config(admin_port, "mode = \"transaction\"\nsize = 4\nwait_timeout = \"20s\"\n"));
  ASSERT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/live").status == 200; }, 10s));
  const std::string table = unique_name("admin_pause");
  {
    Conn c = pgward.connect();
    exec(c, "CREATE TABLE " + table + " (client int, at timestamptz)");
  }

  constexpr int kClients = 6;
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      Conn c = Conn::connect(pgward.conninfo());
      while (!stop && c.ok()) {
        Result r(PQexec(
            c, ("INSERT INTO " + table + " VALUES (" + std::to_string(i) + ", clock_timestamp())").c_str()));
        if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
          std::lock_guard lock(mu);
          errors.push_back(PQerrorMessage(c));
          return;
        }
        std::this_thread::sleep_for(5ms);
      }
    });
  }
  std::this_thread::sleep_for(500ms);
  auto r = http(admin_port, "POST", "/api/pause");
  ASSERT_EQ(r.status, 200) << r.body;
  Conn direct = connect_direct();
  const std::string paused_at = query_value(direct, "SELECT clock_timestamp()");
  EXPECT_EQ(http(admin_port, "GET", "/health/ready").status, 503);
  std::this_thread::sleep_for(1500ms);
  const std::string resumed_at = query_value(direct, "SELECT clock_timestamp()");
  EXPECT_TRUE(wait_until(
      [&] {
        auto m = http(admin_port, "GET", "/metrics").body;
        return sample(m, "pgward_client_connections", "state=\"waiting\"").value_or(0) == kClients;
      },
      2s));
  r = http(admin_port, "POST", "/api/resume");
  ASSERT_EQ(r.status, 200) << r.body;
  std::this_thread::sleep_for(500ms);
  stop = true;
  for (auto& t : threads) t.join();

  EXPECT_TRUE(errors.empty()) << errors.front();
  // Transactions already running when pause returned may finish just after; none may start in the window.
  const std::string during =
      query_value(direct, "SELECT count(*) FROM " + table + " WHERE at > '" + paused_at +
                              "'::timestamptz + interval '100 ms' AND at < '" + resumed_at + "'");
  EXPECT_EQ(during, "0");
  const std::string after =
      query_value(direct, "SELECT count(DISTINCT client) FROM " + table + " WHERE at > '" + resumed_at + "'");
  EXPECT_EQ(after, std::to_string(kClients));
  EXPECT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/ready").status == 200; }, 5s));
  exec(direct, "DROP TABLE " + table);
}

TEST(Admin, SigtermDrainsThenExitsZero) {
  // pgward is started here rather than by the harness: the test wants its exit status.
  const std::string dir = temp_dir("pgward-it-drain");
  const int port = free_port();
  const int admin_port = free_port();
  write_text(
      dir + "/config.toml",
      "[proxy]\nlisten = \"127.0.0.1:" + std::to_string(port) +
          "\"\nshutdown_timeout = \"4s\"\n[admin]\nlisten = \"127.0.0.1:" + std::to_string(admin_port) +
          "\"\n[auth]\ntype = \"trust\"\n[pool]\nmode = \"transaction\"\nsize = 8\n" +
          PgwardConfig::database_toml(kDatabase));
  const pid_t pid =
      spawn_process({PGWARD_BINARY, "--config", dir + "/config.toml"}, dir + "/pgward.log", true);
  ASSERT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/ready").status == 200; }, 10s))
      << read_text(dir + "/pgward.log");
  const std::string conninfo =
      "host=127.0.0.1 port=" + std::to_string(port) + " user=" + kTrustUser + " dbname=" + kDatabase;

  // An idle client that will hear 57P01 at the end, and one whose transaction outlives shutdown_timeout.
  RawClient idle(port);
  idle.login(trust_login_params());
  RawClient stuck(port, 20s);
  stuck.login(trust_login_params());
  stuck.query("BEGIN");
  ASSERT_TRUE(stuck.send(wire::query("SELECT pg_sleep(15)")));

  // Clients in the middle of transactions when SIGTERM comes: each transaction takes ~600 ms.
  constexpr int kClients = 4;
  std::atomic<int> in_tx{0};
  std::atomic<int> committed{0};
  std::atomic<int> cut_in_middle{0};
  std::atomic<int> refused_at_begin{0};
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&] {
      Conn c = Conn::connect(conninfo);
      if (!c.ok()) return;
      for (;;) {
        Result begin(PQexec(c, "BEGIN"));
        if (PQresultStatus(begin.get()) != PGRES_COMMAND_OK) {
          if (sqlstate(begin.get()) == "57P01" || PQstatus(c) == CONNECTION_BAD) ++refused_at_begin;
          return;
        }
        ++in_tx;
        for (const char* sql : {"SELECT pg_sleep(0.6)", "COMMIT"}) {
          Result r(PQexec(c, sql));
          const auto st = PQresultStatus(r.get());
          if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            ++cut_in_middle;
            std::lock_guard lock(mu);
            errors.push_back(std::string(sql) + ": " + PQerrorMessage(c));
            return;
          }
        }
        --in_tx;
        ++committed;
      }
    });
  }
  EXPECT_TRUE(wait_until([&] { return in_tx == kClients; }, 10s));
  const auto sent = Clock::now();
  kill(pid, SIGTERM);
  // Ready turns 503 at once and no new client gets in.
  EXPECT_TRUE(wait_until([&] { return http(admin_port, "GET", "/health/ready").status == 503; }, 1s));
  Conn late = Conn::connect(conninfo, 3s);
  EXPECT_FALSE(late.ok());

  auto status = wait_exit(pid, 15s);
  for (auto& t : threads) t.join();
  ASSERT_TRUE(status.has_value()) << "pgward did not exit";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "status " << *status;
  EXPECT_LT(Clock::now() - sent, 10s);
  EXPECT_GE(Clock::now() - sent, 4s) << "the long transaction was not given shutdown_timeout";
  EXPECT_EQ(cut_in_middle.load(), 0) << (errors.empty() ? "" : errors.front());
  EXPECT_EQ(refused_at_begin.load(), kClients);
  EXPECT_GE(committed.load(), kClients);

  // The idle client was told why before the close.
  auto m = idle.read_message();
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->type, 'E');
  EXPECT_EQ(parse_error(*m)['C'], "57P01");
  // The transaction past shutdown_timeout too.
  std::optional<Message> last;
  while (auto msg = stuck.read_message()) last = msg;
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->type, 'E');
  EXPECT_EQ(parse_error(*last)['C'], "57P01");
  // PostgreSQL notices the closed connection only when pg_sleep ends: end that backend now rather than leave
  // it to the next test.
  Conn direct = connect_direct();
  exec(
      direct,
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(15)' AND pid <> "
      "pg_backend_pid()");
  if (::testing::Test::HasFailure()) std::cerr << read_text(dir + "/pgward.log");
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

}  // namespace
}  // namespace pgward::it
