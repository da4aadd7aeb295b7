// Transaction pooling: the size bound under load, pinning inside a transaction, waiting for a server, the
// client limit and warm-up.
#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

// Server backends left over from an earlier test's pgward may take a moment to exit.
void wait_for_no_backends(PGconn* direct, const std::string& user) {
  ASSERT_TRUE(wait_until([&] { return count_backends(direct, user) == 0; }, 10s))
      << count_backends(direct, user) << " backends of " << user << " are still connected: "
      << query_value(direct,
                     "SELECT string_agg(format('%s %s %s since %s: %s', pid, state, client_port, "
                     "backend_start, query), '; ') FROM pg_stat_activity WHERE usename = '" +
                         user + "' AND pid <> pg_backend_pid()");
}

PgwardConfig transaction_pool(int size, const std::string& extra_pool_keys = "") {
  PgwardConfig config;
  config.proxy = "max_client_conn = 10000\nlog_level = \"info\"\n";
  config.pool = "mode = \"transaction\"\nsize = " + std::to_string(size) + "\n" + extra_pool_keys;
  return config;
}

TEST(Pool, ManyClientsShareABoundedPool) {
  constexpr int kClients = 200;
  constexpr int kTransactions = 20;
  constexpr int kPoolSize = 4;

  Conn monitor_conn = connect_direct();
  ASSERT_TRUE(monitor_conn.ok());
  wait_for_no_backends(monitor_conn, kTrustUser);
  Pgward pgward(transaction_pool(kPoolSize));
  const std::string table = unique_name("pool_load");
  {
    Conn setup = pgward.connect();
    ASSERT_TRUE(setup.ok());
    exec(setup, "CREATE TABLE " + table + " (client int, n int)");
  }

  std::atomic<bool> done{false};
  std::atomic<int> max_backends{0};
  std::atomic<int> samples{0};
  std::thread monitor([&] {
    while (!done) {
      const int n = count_backends(monitor_conn, kTrustUser);
      max_backends = std::max(max_backends.load(), n);
      ++samples;
      std::this_thread::sleep_for(5ms);
    }
  });

  std::mutex errors_mutex;
  std::vector<std::string> errors;
  std::atomic<int> committed{0};
  auto fail = [&](int client, const std::string& what) {
    std::lock_guard lock(errors_mutex);
    errors.push_back("client " + std::to_string(client) + ": " + what);
  };
  auto run_client = [&](int client) {
    Conn conn = Conn::connect(pgward.conninfo());
    if (!conn.ok()) return fail(client, "connect: " + conn.error());
    const std::string id = std::to_string(client);
    for (int i = 0; i < kTransactions; ++i) {
      for (const std::string& sql : {std::string("BEGIN"), "INSERT INTO " + table + " VALUES (" + id + ", " +
                                                               std::to_string(i) + ")"}) {
        Result r(PQexec(conn, sql.c_str()));
        if (PQresultStatus(r.get()) != PGRES_COMMAND_OK)
          return fail(client, sql + ": " + PQerrorMessage(conn));
      }
      const std::string check = "SELECT count(*), sum(n) FROM " + table + " WHERE client = " + id;
      Result r(PQexec(conn, check.c_str()));
      if (PQresultStatus(r.get()) != PGRES_TUPLES_OK)
        return fail(client, check + ": " + PQerrorMessage(conn));
      const std::string got = std::string(PQgetvalue(r.get(), 0, 0)) + "/" + PQgetvalue(r.get(), 0, 1);
      const std::string want = std::to_string(i + 1) + "/" + std::to_string(i * (i + 1) / 2);
      if (got != want)
        return fail(client, "transaction " + std::to_string(i) + " saw " + got + ", expected " + want);
      r.reset(PQexec(conn, "COMMIT"));
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK)
        return fail(client, std::string("COMMIT: ") + PQerrorMessage(conn));
      ++committed;
    }
  };

  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) clients.emplace_back(run_client, c);
  for (auto& t : clients) t.join();
  done = true;
  monitor.join();

  EXPECT_TRUE(errors.empty()) << errors.size() << " clients failed; first: " << errors.front();
  EXPECT_EQ(committed.load(), kClients * kTransactions);
  Conn check = pgward.connect();
  EXPECT_EQ(query_value(check, "SELECT count(*) FROM " + table), std::to_string(kClients * kTransactions));
  EXPECT_GT(samples.load(), 0);
  EXPECT_GT(max_backends.load(), 0);
  EXPECT_LE(max_backends.load(), kPoolSize) << "more server connections than the pool size";
}

TEST(Pool, TransactionPinsItsServer) {
  Pgward pgward(transaction_pool(2));
  Conn a = pgward.connect();
  Conn b = pgward.connect();
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string table = unique_name("pinned");
  exec(a, "CREATE TABLE " + table + " (n int)");
  const std::string count = "SELECT count(*) FROM " + table;

  exec(a, "BEGIN");
  const std::string pid = query_value(a, "SELECT pg_backend_pid()");
  for (int i = 0; i < 10; ++i) {
    exec(a, "INSERT INTO " + table + " VALUES (" + std::to_string(i) + ")");
    // Another client keeps the pool busy between the statements of the open transaction.
    EXPECT_EQ(query_value(b, count), "0") << "another client saw uncommitted rows";
    EXPECT_EQ(query_value(a, "SELECT pg_backend_pid()"), pid) << "the transaction moved to another server";
  }
  EXPECT_EQ(query_value(a, count), "10");
  EXPECT_EQ(PQtransactionStatus(a), PQTRANS_INTRANS);
  exec(a, "COMMIT");
  EXPECT_EQ(query_value(b, count), "10");
}

TEST(Pool, WaitTimeoutGivesErrorAndSessionSurvives) {
  PgwardConfig config = transaction_pool(1, "wait_timeout = \"500ms\"\n");
  Pgward pgward(config);
  Conn a = pgward.connect();
  Conn b = pgward.connect();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(query_value(b, "SELECT 1"), "1");

  exec(a, "BEGIN");
  EXPECT_EQ(query_value(a, "SELECT 1"), "1");
  const auto start = Clock::now();
  EXPECT_EQ(exec_sqlstate(b, "SELECT 1"), "53300") << PQerrorMessage(b);
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, 400ms) << "gave up before wait_timeout";
  EXPECT_LE(waited, 10s);

  exec(a, "COMMIT");
  EXPECT_EQ(PQstatus(b), CONNECTION_OK);
  EXPECT_EQ(query_value(b, "SELECT 2"), "2") << "the session of the client that timed out is not usable";
  EXPECT_EQ(query_value(a, "SELECT 3"), "3");
}

TEST(Pool, MaxClientConnRefusesWithError) {
  PgwardConfig config = transaction_pool(2);
  config.proxy = "max_client_conn = 3\nlog_level = \"debug\"\n";
  Pgward pgward(config);
  std::vector<Conn> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(pgward.connect());
    ASSERT_TRUE(clients.back().ok());
    EXPECT_EQ(query_value(clients.back(), "SELECT 1"), "1");
  }

  Conn fourth = Conn::connect(pgward.conninfo());
  EXPECT_FALSE(fourth.ok());
  EXPECT_EQ(fourth.connect_sqlstate(), "53300") << fourth.error();
  for (auto& c : clients) EXPECT_EQ(query_value(c, "SELECT 'still here'"), "still here");

  clients.pop_back();  // one closes: its slot frees up (asynchronously)
  bool admitted = wait_until([&] { return Conn::connect(pgward.conninfo()).ok(); }, 5s);
  EXPECT_TRUE(admitted) << "no client admitted after one of the 3 left";
}

TEST(Pool, MinSizeWarmsUpServers) {
  Conn monitor = connect_direct();
  ASSERT_TRUE(monitor.ok());
  wait_for_no_backends(monitor, kTrustUser);
  PgwardConfig config = transaction_pool(4, "min_size = 2\n");
  config.databases = PgwardConfig::database_toml(kDatabase, kDatabase, "user = \"pgward_trust\"");
  Pgward pgward(config);
  EXPECT_TRUE(wait_until([&] { return count_backends(monitor, kTrustUser) >= 2; }, 5s))
      << "pgward opened " << count_backends(monitor, kTrustUser)
      << " of min_size = 2 servers without clients";
  EXPECT_EQ(count_backends(monitor, kTrustUser), 2);
}

}  // namespace
}  // namespace pgward::it
