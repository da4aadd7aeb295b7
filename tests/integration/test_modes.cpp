// Session and statement pooling modes.
#include <string>

#include "harness.hpp"

namespace pgward::it {
namespace {

PgwardConfig pool_mode(const std::string& mode, int size) {
  PgwardConfig config;
  config.pool = "mode = \"" + mode + "\"\nsize = " + std::to_string(size) + "\n";
  return config;
}

TEST(Modes, SessionModeKeepsServerAndDiscardsStateBetweenClients) {
  Pgward pgward(pool_mode("session", 1));
  const std::string temp_table = unique_name("session_tmp");
  std::string pid;
  {
    Conn a = pgward.connect();
    ASSERT_TRUE(a.ok());
    pid = query_value(a, "SELECT pg_backend_pid()");
    exec(a, "CREATE TEMP TABLE " + temp_table + " (n int)");
    exec(a, "SET search_path = pg_catalog");
    exec(a, "PREPARE session_stmt AS SELECT 1");
    // Within the session, everything sticks: same server, same settings, same temp table.
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(query_value(a, "SELECT pg_backend_pid()"), pid);
      EXPECT_EQ(query_value(a, "SHOW search_path"), "pg_catalog");
      exec(a, "INSERT INTO " + temp_table + " VALUES (1)");
    }
    EXPECT_EQ(query_value(a, "EXECUTE session_stmt"), "1");
  }

  Conn b = pgward.connect();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(query_value(b, "SELECT pg_backend_pid()"), pid) << "a pool of size 1 must reuse its server";
  EXPECT_EQ(query_value(b, "SELECT count(*) FROM pg_class WHERE relname = '" + temp_table + "'"), "0")
      << "the previous client's temp table survived (no DISCARD ALL)";
  EXPECT_EQ(query_value(b, "SHOW search_path"), "\"$user\", public") << "the previous client's SET leaked";
  EXPECT_EQ(query_value(b, "SELECT count(*) FROM pg_prepared_statements"), "0");
}

TEST(Modes, StatementModeRejectsExplicitTransactions) {
  Pgward pgward(pool_mode("statement", 2));
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());
  const std::string table = unique_name("stmt_mode");
  exec(conn, "CREATE TABLE " + table + " (n int)");
  EXPECT_EQ(query_value(conn, "SELECT 1"), "1");

  EXPECT_EQ(exec_sqlstate(conn, "BEGIN"), "0A000") << PQerrorMessage(conn);
  EXPECT_EQ(PQstatus(conn), CONNECTION_OK);
  EXPECT_EQ(PQtransactionStatus(conn), PQTRANS_IDLE);
  EXPECT_EQ(query_value(conn, "SELECT 1"), "1");

  // The rejected transaction was rolled back: this insert commits on its own, visible to anyone at once.
  exec(conn, "INSERT INTO " + table + " VALUES (1)");
  Conn direct = connect_direct();
  EXPECT_EQ(query_value(direct, "SELECT count(*) FROM " + table), "1");

  // A whole transaction in one simple query is one statement for the pool.
  Result r = exec(conn, "BEGIN; INSERT INTO " + table + " VALUES (2); SELECT 1; COMMIT");
  EXPECT_EQ(std::string(PQcmdStatus(r.get())), "COMMIT");
  EXPECT_EQ(query_value(direct, "SELECT sum(n) FROM " + table), "3");
  EXPECT_EQ(PQtransactionStatus(conn), PQTRANS_IDLE);
  EXPECT_EQ(query_value(conn, "SELECT 2"), "2");
}

}  // namespace
}  // namespace pgward::it
