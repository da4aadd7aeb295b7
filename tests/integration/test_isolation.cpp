// Isolation: whatever one client sends, by mistake or on purpose, it cannot stall, cancel, read or break
// another client's work. Each test plays the hostile client against the real binary in transaction mode.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

std::string pool_toml(int size) { return "mode = \"transaction\"\nsize = " + std::to_string(size) + "\n"; }

std::string error_field(const PGresult* r, int field) {
  const char* v = PQresultErrorField(r, field);
  return v ? v : "";
}

// The names of the prepared statements the server linked to `conn` holds right now.
std::vector<std::string> server_statement_names(PGconn* conn) {
  std::vector<std::string> names;
  Result r = exec(conn, "SELECT name FROM pg_prepared_statements ORDER BY name");
  for (int i = 0; i < PQntuples(r.get()); ++i) names.emplace_back(PQgetvalue(r.get(), i, 0));
  return names;
}

TEST(Isolation, StatementNamesOfOthersBehaveAsMissing) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1)});
  Conn owner = pgward.connect();
  Conn intruder = pgward.connect();
  ASSERT_TRUE(owner.ok() && intruder.ok());

  // The owner makes one statement of each kind and reads their server names, as anyone can.
  exec(owner, "PREPARE mine AS SELECT 'owner-sql'::text");
  Result parsed(PQprepare(owner, "proto", "SELECT 'owner-proto'::text", 0, nullptr));
  ASSERT_EQ(PQresultStatus(parsed.get()), PGRES_COMMAND_OK);
  exec(owner, "BEGIN");
  const std::vector<std::string> names = server_statement_names(owner);
  exec(owner, "COMMIT");
  ASSERT_GE(names.size(), 2u);
  for (const std::string& n : names) ASSERT_TRUE(n.starts_with("pgw_")) << n;

  // The intruder, on the same (only) server, tries every way of naming them.
  for (const std::string& n : names) {
    SCOPED_TRACE(n);
    for (const std::string& sql :
         {"EXECUTE " + n, "EXPLAIN EXECUTE " + n, "DEALLOCATE " + n, "DEALLOCATE PREPARE " + n,
          "CREATE TABLE " + unique_name("t") + " AS EXECUTE " + n, "SELECT 1; EXECUTE " + n}) {
      Result r(PQexec(intruder, sql.c_str()));
      EXPECT_EQ(sqlstate(r.get()), "26000") << sql;
      EXPECT_EQ(error_field(r.get(), PG_DIAG_MESSAGE_PRIMARY),
                "prepared statement \"" + n + "\" does not exist")
          << sql;
    }
    Result bound(PQexecPrepared(intruder, n.c_str(), 0, nullptr, nullptr, nullptr, 0));
    EXPECT_EQ(sqlstate(bound.get()), "26000");
    Result described(PQdescribePrepared(intruder, n.c_str()));
    EXPECT_EQ(sqlstate(described.get()), "26000");
  }
  // A Close of a name one does not have is no error in PostgreSQL, and must not close anyone's statement.
  RawClient raw(pgward.port());
  raw.login(trust_login_params());
  std::string closes;
  for (const std::string& n : names) closes += wire::message('C', "S" + n + std::string(1, '\0'));
  ASSERT_TRUE(raw.send(closes + wire::sync()));
  std::string signature = message_signature(raw.read_until_ready());
  EXPECT_EQ(signature.find('E'), std::string::npos) << signature;

  // Nothing of the owner's was touched: both statements still run, on the same server.
  EXPECT_EQ(query_value(owner, "EXECUTE mine"), "owner-sql");
  Result again(PQexecPrepared(owner, "proto", 0, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(again.get()), PGRES_TUPLES_OK) << PQerrorMessage(owner);
  EXPECT_STREQ(PQgetvalue(again.get(), 0, 0), "owner-proto");
  // And another client sharing the protocol-level statement's text still finds it working.
  Conn third = pgward.connect();
  Result shared(PQprepare(third, "x", "SELECT 'owner-proto'::text", 0, nullptr));
  ASSERT_EQ(PQresultStatus(shared.get()), PGRES_COMMAND_OK);
  Result ran(PQexecPrepared(third, "x", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(PQresultStatus(ran.get()), PGRES_TUPLES_OK) << PQerrorMessage(third);
}

TEST(Isolation, SqlPreparedStatementsOfAnotherClientAreGoneFromItsServer) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1)});
  Conn owner = pgward.connect();
  Conn other = pgward.connect();
  ASSERT_TRUE(owner.ok() && other.ok());
  exec(owner, "PREPARE secret AS SELECT 'owner-only'::text");
  EXPECT_EQ(query_value(owner, "EXECUTE secret"), "owner-only");
  // The next client on that server sees none of it, not even in pg_prepared_statements.
  EXPECT_EQ(
      query_value(other, "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%owner-only%'"),
      "0");
  // The owner's statement is made again where it is needed.
  EXPECT_EQ(query_value(owner, "EXECUTE secret"), "owner-only");
}

TEST(Isolation, TenThousandSqlPreparesAreBoundedAndGoWithTheirClient) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1) + "max_prepared_statements = 50\n"});
  Conn probe = pgward.connect();
  ASSERT_TRUE(probe.ok());
  const std::string count_sql = "SELECT count(*) FROM pg_prepared_statements";
  const std::string baseline = query_value(probe, count_sql);
  {
    Conn greedy = pgward.connect();
    ASSERT_TRUE(greedy.ok());
    for (int batch = 0; batch < 20; ++batch) {
      std::string sql;
      for (int i = 0; i < 500; ++i) {
        const int n = batch * 500 + i;
        sql += "PREPARE p" + std::to_string(n) + " AS SELECT " + std::to_string(n) + ";";
      }
      exec(greedy, sql);
    }
    // Bounded on the server like protocol-level statements, yet every one of them still works.
    EXPECT_LE(std::stoi(query_value(greedy, count_sql)), 50);
    EXPECT_EQ(query_value(greedy, "EXECUTE p0"), "0");
    EXPECT_EQ(query_value(greedy, "EXECUTE p9999"), "9999");
    EXPECT_EQ(query_value(greedy, "EXECUTE p4321"), "4321");
  }
  // The client left: its statements are not left on the server for the next one.
  EXPECT_EQ(query_value(probe, count_sql), baseline);
}

// One simple query's answer, reduced to what must match PostgreSQL: message types, tags, statuses, and for
// errors the SQLSTATE, message and position; rows by their bytes.
std::string answer(RawClient& client, const std::string& sql) {
  std::string out;
  for (const Message& m : client.query(sql)) {
    out += m.type;
    if (m.type == 'E') {
      auto f = parse_error(m);
      out += "(" + f['C'] + " " + f['M'] + " @" + f['P'] + ")";
    } else if (m.type == 'C' || m.type == 'D') {
      out += "(" + m.body + ")";
    } else if (m.type == 'Z') {
      out += "(" + m.body + ")";
    }
    out += ' ';
  }
  return out;
}

TEST(Isolation, StatementNamesInsideOtherCommandsMatchPostgres) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  const std::string table = unique_name("ctas");
  const std::vector<std::string> script = {
      "PREPARE q(int) AS SELECT $1 + 1 AS x",
      "EXPLAIN (COSTS OFF) EXECUTE q(1)",
      "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE q(2)",
      "CREATE TABLE " + table + " AS EXECUTE q(41)",
      "SELECT x FROM " + table,
      "DROP TABLE " + table,
      "EXECUTE \"q\" (5); EXECUTE q(6)",
      "PREPARE q AS SELECT 1",
      "PREPARE bad AS SELECT nosuchcolumn FROM pg_class",
      "PREPARE  \"Odd Name\"  AS SELECT 1 + 'x'",
      "EXECUTE bad",
      "EXPLAIN EXECUTE nosuch(1)",
      "CREATE TABLE " + table + "_2 AS EXECUTE nosuch",
      "SELECT 1; PREPARE r AS SELECT 2; EXECUTE r; SELECT 1/0",
      "DEALLOCATE q",
      "EXECUTE q(1)",
      "DEALLOCATE ALL",
  };
  auto run = [&](int port) {
    RawClient client(port);
    client.login(trust_login_params());
    std::vector<std::string> out;
    for (const auto& sql : script) out.push_back(answer(client, sql));
    return out;
  };
  const auto direct = run(pg_port());
  const auto through = run(pgward.port());
  ASSERT_EQ(direct.size(), through.size());
  for (std::size_t i = 0; i < direct.size(); ++i) EXPECT_EQ(through[i], direct[i]) << script[i];
}

}  // namespace
}  // namespace pgward::it
