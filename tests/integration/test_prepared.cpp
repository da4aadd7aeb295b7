// Prepared statements behind a transaction pool: client statement names never collide, the unnamed statement
// keeps PostgreSQL's meaning across servers, and errors are PostgreSQL's own.
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

std::string pool_toml(int size) { return "mode = \"transaction\"\nsize = " + std::to_string(size) + "\n"; }

// Runs a prepared statement with one text parameter; returns the first value or the SQLSTATE prefixed by "!".
std::string exec_prepared(PGconn* conn, const std::string& name, const std::string& param) {
  const char* values[] = {param.c_str()};
  Result r(PQexecPrepared(conn, name.c_str(), param.empty() ? 0 : 1, param.empty() ? nullptr : values,
                          nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) return "!" + sqlstate(r.get());
  if (PQntuples(r.get()) < 1) return "!norows";
  return PQgetvalue(r.get(), 0, 0);
}

std::string prepare(PGconn* conn, const std::string& name, const std::string& sql) {
  Result r(PQprepare(conn, name.c_str(), sql.c_str(), 0, nullptr));
  if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) return sqlstate(r.get());
  return "";
}

TEST(Prepared, ManyClientsSameNamesDifferentSql) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(4)});
  constexpr int kClients = 200;
  constexpr int kRounds = 15;
  std::atomic<int> wrong{0}, errors{0}, done{0};
  std::atomic<bool> failed_connect{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      Conn conn = pgward.connect();
      if (!conn.ok()) {
        failed_connect = true;
        return;
      }
      // Same names in every client, different SQL in each: s0 adds, s1 multiplies, s2 concatenates.
      const std::string id = std::to_string(c);
      if (!prepare(conn, "s0", "SELECT $1::int + " + id).empty() ||
          !prepare(conn, "s1", "SELECT $1::int * " + id).empty() ||
          !prepare(conn, "s2", "SELECT $1::text || '-" + id + "'").empty()) {
        ++errors;
        return;
      }
      for (int i = 0; i < kRounds; ++i) {
        const std::string p = std::to_string(i);
        auto a = exec_prepared(conn, "s0", p);
        auto b = exec_prepared(conn, "s1", p);
        auto t = exec_prepared(conn, "s2", p);
        if (a.starts_with('!') || b.starts_with('!') || t.starts_with('!')) {
          ++errors;
          ADD_FAILURE() << "client " << c << ": " << a << " " << b << " " << t;
          return;
        }
        if (a != std::to_string(i + c) || b != std::to_string(i * c) || t != p + "-" + id) ++wrong;
        ++done;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(failed_connect);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(done.load(), kClients * kRounds);
}

TEST(Prepared, UnnamedStatementSurvivesAcrossTransactionsAndServers) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  Conn a = pgward.connect();
  Conn b = pgward.connect();
  Conn c = pgward.connect();
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  // A parses its unnamed statement on the most recently used server, then that server is pinned by B's
  // transaction, so A's Bind runs in a later transaction on the other server.
  ASSERT_EQ(prepare(a, "", "SELECT $1::int * 2"), "");
  exec(b, "BEGIN");
  exec(b, "SELECT 1");
  EXPECT_EQ(exec_prepared(a, "", "21"), "42");
  exec(b, "COMMIT");
  // C never parsed an unnamed statement: it must not run A's, whatever its server holds.
  EXPECT_EQ(exec_prepared(c, "", "1"), "!26000");
  // A simple query ends the unnamed statement, as on PostgreSQL.
  exec(a, "SELECT 1");
  EXPECT_EQ(exec_prepared(a, "", "1"), "!26000");
}

TEST(Prepared, FailedParseIsNotKeptAndCanBeRedone) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());
  EXPECT_EQ(prepare(conn, "s1", "SELECT no_such_column"), "42703");
  EXPECT_EQ(exec_prepared(conn, "s1", ""), "!26000");
  EXPECT_EQ(prepare(conn, "s1", "SELECT 7"), "");
  EXPECT_EQ(exec_prepared(conn, "s1", ""), "7");
}

TEST(Prepared, DuplicateNameAndUnknownNameMatchPostgres) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  for (bool direct : {true, false}) {
    SCOPED_TRACE(direct ? "direct" : "pgward");
    Conn conn = direct ? connect_direct(kTrustUser) : pgward.connect();
    ASSERT_TRUE(conn.ok());
    const std::string name = unique_name("dup");
    EXPECT_EQ(prepare(conn, name, "SELECT 1"), "");
    Result again(PQprepare(conn, name.c_str(), "SELECT 2", 0, nullptr));
    EXPECT_EQ(sqlstate(again.get()), "42P05");
    EXPECT_EQ(std::string(PQresultErrorField(again.get(), PG_DIAG_MESSAGE_PRIMARY)),
              "prepared statement \"" + name + "\" already exists");
    EXPECT_EQ(exec_prepared(conn, name, ""), "1");  // the first one is untouched
    Result unknown(PQexecPrepared(conn, "nope", 0, nullptr, nullptr, nullptr, 0));
    EXPECT_EQ(sqlstate(unknown.get()), "26000");
    EXPECT_EQ(std::string(PQresultErrorField(unknown.get(), PG_DIAG_MESSAGE_PRIMARY)),
              "prepared statement \"nope\" does not exist");
    // Inside a transaction block the duplicate aborts the transaction, exactly as PostgreSQL does.
    exec(conn, "BEGIN");
    EXPECT_EQ(prepare(conn, name, "SELECT 3"), "42P05");
    EXPECT_EQ(exec_sqlstate(conn, "SELECT 1"), "25P02");
    exec(conn, "ROLLBACK");
    EXPECT_EQ(exec_prepared(conn, name, ""), "1");
    exec(conn, "DEALLOCATE " + name);
  }
}

TEST(Prepared, DescribeStatement) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());
  ASSERT_EQ(prepare(conn, "d1", "SELECT $1::int AS a, $2::text AS b"), "");
  Result d(PQdescribePrepared(conn, "d1"));
  ASSERT_EQ(PQresultStatus(d.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(d.get());
  EXPECT_EQ(PQnparams(d.get()), 2);
  EXPECT_EQ(PQnfields(d.get()), 2);
  EXPECT_STREQ(PQfname(d.get(), 0), "a");
  EXPECT_STREQ(PQfname(d.get(), 1), "b");
  Result missing(PQdescribePrepared(conn, "d2"));
  EXPECT_EQ(sqlstate(missing.get()), "26000");
}

TEST(Prepared, DeallocateAndDiscardAffectOnlyTheirClient) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1)});
  Conn a = pgward.connect();
  Conn b = pgward.connect();
  ASSERT_TRUE(a.ok() && b.ok());
  // The same SQL in both clients: one server statement serves both names.
  for (const char* command :
       {"DEALLOCATE s1", "DEALLOCATE PREPARE \"s1\"", "DEALLOCATE ALL", "DISCARD ALL"}) {
    SCOPED_TRACE(command);
    ASSERT_EQ(prepare(a, "s1", "SELECT 42"), "");
    ASSERT_EQ(prepare(b, "s1", "SELECT 42"), "");
    Result r(PQexec(a, command));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
    EXPECT_EQ(exec_prepared(a, "s1", ""), "!26000");
    EXPECT_EQ(exec_prepared(b, "s1", ""), "42");
    exec(b, "DEALLOCATE s1");
  }
  EXPECT_EQ(exec_sqlstate(a, "DEALLOCATE never_prepared"), "26000");
}

// psycopg sends DEALLOCATE ALL through the extended protocol after a rollback: it must clear only the
// sender's names and must not leave pgward believing the server still holds statements it dropped.
TEST(Prepared, DeallocateThroughExtendedProtocolAffectsOnlyItsClient) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1)});
  Conn a = pgward.connect();
  Conn b = pgward.connect();
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(prepare(a, "x1", "SELECT 100 + $1::int"), "");
  ASSERT_EQ(prepare(b, "x1", "SELECT 200 + $1::int"), "");
  for (const char* command : {"DEALLOCATE ALL", "DEALLOCATE x1", "DISCARD ALL"}) {
    SCOPED_TRACE(command);
    Result r(PQexecParams(b, command, 0, nullptr, nullptr, nullptr, nullptr, 0));  // Parse/Bind/Execute/Sync
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
    EXPECT_EQ(exec_prepared(b, "x1", "1"), "!26000");
    EXPECT_EQ(exec_prepared(a, "x1", "1"), "101");
    ASSERT_EQ(prepare(b, "x1", "SELECT 200 + $1::int"), "");  // the name is free again
    EXPECT_EQ(exec_prepared(b, "x1", "2"), "202");
  }
}

// SQL-level PREPARE/EXECUTE are namespaced like protocol-level statements, and survive moving between
// servers.
TEST(Prepared, SqlPrepareExecuteAcrossTransactionsAndClients) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  Conn a = pgward.connect();
  Conn b = pgward.connect();
  Conn c = pgward.connect();
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  exec(a, "PREPARE s1 (int) AS SELECT $1 + 1000");
  exec(c, "PREPARE s1 AS SELECT 'c'");  // the same name in another client: no 42P05
  // B pins the most recently used server, so A's EXECUTE runs on the other one.
  exec(b, "BEGIN");
  exec(b, "SELECT 1");
  EXPECT_EQ(query_value(a, "EXECUTE s1(5)"), "1005");
  EXPECT_EQ(query_value(c, "EXECUTE s1"), "c");
  exec(b, "COMMIT");
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(query_value(a, "execute S1 (" + std::to_string(i) + ");"), std::to_string(1000 + i));
    EXPECT_EQ(query_value(c, "EXECUTE s1"), "c");
  }
  // A statement prepared through the protocol can be EXECUTEd from SQL, as on PostgreSQL.
  ASSERT_EQ(prepare(a, "p1", "SELECT $1::int * 3"), "");
  exec(b, "BEGIN");
  exec(b, "SELECT 1");
  EXPECT_EQ(query_value(a, "EXECUTE p1(4)"), "12");
  exec(b, "COMMIT");
  // Errors as on PostgreSQL, in the client's own terms.
  for (bool direct : {true, false}) {
    SCOPED_TRACE(direct ? "direct" : "pgward");
    Conn conn = direct ? connect_direct(kTrustUser) : pgward.connect();
    exec(conn, "PREPARE d1 AS SELECT 1");
    Result dup(PQexec(conn, "PREPARE d1 AS SELECT 2"));
    EXPECT_EQ(sqlstate(dup.get()), "42P05");
    EXPECT_STREQ(PQresultErrorField(dup.get(), PG_DIAG_MESSAGE_PRIMARY),
                 "prepared statement \"d1\" already exists");
    Result unknown(PQexec(conn, "EXECUTE nope"));
    EXPECT_EQ(sqlstate(unknown.get()), "26000");
    EXPECT_STREQ(PQresultErrorField(unknown.get(), PG_DIAG_MESSAGE_PRIMARY),
                 "prepared statement \"nope\" does not exist");
    exec(conn, "BEGIN");
    EXPECT_EQ(exec_sqlstate(conn, "PREPARE d1 AS SELECT 3"), "42P05");
    EXPECT_EQ(exec_sqlstate(conn, "SELECT 1"), "25P02");
    exec(conn, "ROLLBACK");
    EXPECT_EQ(exec_sqlstate(conn, "PREPARE bad AS SELECT no_such_column"), "42703");
    EXPECT_EQ(exec_sqlstate(conn, "EXECUTE bad"), "26000");  // a failed PREPARE leaves no name
    exec(conn, "DEALLOCATE d1");
    EXPECT_EQ(exec_sqlstate(conn, "EXECUTE d1"), "26000");
  }
  // DEALLOCATE of an SQL-made statement affects only its client.
  exec(a, "DEALLOCATE s1");
  EXPECT_EQ(exec_sqlstate(a, "EXECUTE s1(1)"), "26000");
  EXPECT_EQ(query_value(c, "EXECUTE s1"), "c");
  // A query of several statements passes through unchanged (its names are not namespaced).
  EXPECT_EQ(query_value(a, "PREPARE s2 AS SELECT 2; EXECUTE s2"), "2");
}

TEST(Prepared, CloseThenParseAgainWithOtherSql) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1)});
  RawClient client(pgward.port());
  client.login(trust_login_params());
  using wire::parse;
  auto bind_execute = [](std::string_view name) { return wire::bind(name) + wire::execute(); };
  const std::string sync = wire::sync();
  client.send(parse("c1", "SELECT 1") + bind_execute("c1") + sync);
  EXPECT_EQ(message_signature(client.read_until_ready()), "1 2 D C(SELECT 1) Z(I)");
  client.send(wire::message('C', std::string("Sc1") + '\0') + sync);
  EXPECT_EQ(message_signature(client.read_until_ready()), "3 Z(I)");
  client.send(parse("c1", "SELECT 2") + bind_execute("c1") + sync);
  auto messages = client.read_until_ready();
  EXPECT_EQ(message_signature(messages), "1 2 D C(SELECT 1) Z(I)");
  for (const auto& m : messages) {
    if (m.type == 'D') {
      EXPECT_EQ(m.body.substr(6), "2");
    }
  }
}

TEST(Prepared, PipelineOfSeveralStatementsMatchesPostgres) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  using wire::bind;
  using wire::parse;
  const std::string execute = wire::execute();
  const std::string describe_portal = wire::describe_portal();
  const std::string sync = wire::sync();
  // Three statements, a re-Parse of a live name in the middle (42P05) and a second batch after the Sync.
  const std::string batch1 = parse("p1", "SELECT 1") + bind("p1") + describe_portal + execute +
                             parse("p2", "SELECT 'two'") + bind("p2") + execute + parse("p3", "SELECT 3") +
                             bind("p3") + execute + sync;
  const std::string batch2 = parse("p1", "SELECT 9") + bind("p1") + execute + bind("p2") + execute + sync;
  const std::string batch3 = bind("p3") + execute + bind("nope") + execute + bind("p1") + execute + sync;
  // Every backend message of each batch, type and bytes (ParameterStatus and BackendKeyData come only at
  // login).
  std::vector<std::vector<std::pair<char, std::string>>> got[2];
  std::vector<std::string> signatures[2];
  for (int direct = 0; direct < 2; ++direct) {
    RawClient client(direct ? pg_port() : pgward.port());
    client.login(trust_login_params());
    for (const auto& batch : {batch1, batch2, batch3}) {
      client.send(batch);
      auto messages = client.read_until_ready();
      signatures[direct].push_back(message_signature(messages));
      auto& bytes = got[direct].emplace_back();
      for (auto& m : messages) bytes.emplace_back(m.type, std::move(m.body));
    }
    client.send(wire::query("DEALLOCATE ALL"));
    client.read_until_ready();
  }
  EXPECT_EQ(signatures[0], signatures[1]);
  EXPECT_EQ(signatures[0][1], "E(42P05) Z(I)");
  // Byte for byte where PostgreSQL's own code produced the reply, 26000 included (pgward makes the server
  // raise it and only puts the client's statement name back). The 42P05 differs only in its file/line/routine
  // fields.
  EXPECT_EQ(got[0][0], got[1][0]);
  EXPECT_EQ(got[0][2], got[1][2]);
  auto fields = [](const std::vector<std::pair<char, std::string>>& batch) {
    return parse_error(Message{'E', batch.front().second});
  };
  EXPECT_EQ(fields(got[0][1])['M'], fields(got[1][1])['M']);
  EXPECT_EQ(fields(got[0][1])['S'], fields(got[1][1])['S']);
}

// The unnamed statement goes to the server as the client wrote it, straight from its buffer, among messages
// pgward rewrites (named statements) in the same write, and is parsed again on a server that lacks it. Every
// batch is compared with PostgreSQL's own answer, the values of the rows included.
TEST(Prepared, UnnamedStatementPassesAsWrittenAmongRewrittenMessages) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  using wire::bind;
  using wire::parse;
  const std::string execute = wire::execute();
  const std::string sync = wire::sync();
  auto bind_execute = [&](std::string_view name) { return bind(name) + execute; };
  auto replies = [](RawClient& client) {
    std::string out;
    for (const Message& m : client.read_until_ready()) {
      const std::string signature = message_signature({m});
      if (signature.empty()) continue;  // ParameterStatus
      out += signature;
      if (m.type == 'D') out += "=" + m.body.substr(6);
      out += ' ';
    }
    return out;
  };
  std::vector<std::string> got[2];
  for (int direct = 0; direct < 2; ++direct) {
    SCOPED_TRACE(direct ? "direct" : "pgward");
    Conn admin = connect_direct();
    const std::string table = unique_name("unnamed_t");
    exec(admin, "CREATE TABLE " + table + " (x text)");
    exec(admin, "INSERT INTO " + table + " VALUES ('t')");
    exec(admin, "GRANT ALL ON " + table + " TO PUBLIC");
    RawClient a(direct ? pg_port() : pgward.port());
    a.login(trust_login_params());
    // Holds the server `a` used last (the most recently used one), so that a's next batch gets the other.
    Conn b = direct ? connect_direct(kTrustUser) : pgward.connect();
    ASSERT_TRUE(b.ok());
    auto& out = got[direct];
    // One write: the unnamed statement, parsed again with the same text, a named one between, and a Bind of
    // the unnamed one after it.
    a.send(parse("", "SELECT 'u1'") + bind("") + wire::describe_portal() + execute +
           parse("", "SELECT 'u1'") + bind_execute("") + parse("n1", "SELECT 'n1'") + bind_execute("n1") +
           bind_execute("") + parse("", "SELECT 'u2'") + bind_execute("") + bind_execute("n1") + sync);
    out.push_back(replies(a));
    // Parsed in one transaction, bound in the next on another server; then parsed again there.
    a.send(parse("", "SELECT x FROM " + table) + sync);
    out.push_back(replies(a));
    exec(b, "BEGIN");
    exec(b, "SELECT 1");
    // (A Sync first, so that the Bind is not the first message of the write.)
    a.send(sync + bind_execute("") + sync);
    out.push_back(replies(a));
    out.back() += replies(a);
    a.send(parse("", "SELECT x FROM " + table) + bind_execute("") + sync);
    out.push_back(replies(a));
    exec(b, "COMMIT");
    // The same text parsed again fails (its table is gone): PostgreSQL has dropped the unnamed statement
    // before parsing, so a later Bind finds none, even on a server pgward would parse it again on.
    exec(admin, "DROP TABLE " + table);
    a.send(parse("", "SELECT x FROM " + table) + bind_execute("") + sync);
    out.push_back(replies(a));
    exec(b, "BEGIN");
    exec(b, "SELECT 1");
    a.send(bind_execute("") + sync);
    out.push_back(replies(a));
    exec(b, "COMMIT");
    a.send(wire::query("DEALLOCATE ALL"));
    a.read_until_ready();
  }
  EXPECT_EQ(got[0], got[1]);
  ASSERT_EQ(got[1].size(), 6u);
  EXPECT_EQ(got[1][0],
            "1 2 T D=u1 C(SELECT 1) 1 2 D=u1 C(SELECT 1) 1 2 D=n1 C(SELECT 1) 2 D=u1 C(SELECT 1) 1 2 "
            "D=u2 C(SELECT 1) 2 D=n1 C(SELECT 1) Z(I) ");
  EXPECT_EQ(got[1][2], "Z(I) 2 D=t C(SELECT 1) Z(I) ");
  EXPECT_EQ(got[1][3], "1 2 D=t C(SELECT 1) Z(I) ");
  EXPECT_EQ(got[1][4], "E(42P01) Z(I) ");
  EXPECT_EQ(got[1][5], "E(26000) Z(I) ");
}

TEST(Prepared, EvictionKeepsEveryStatementWorking) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1) + "max_prepared_statements = 2\n"});
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(prepare(conn, "r" + std::to_string(i), "SELECT $1::int + " + std::to_string(i * 100)), "");
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(exec_prepared(conn, "r" + std::to_string(i), std::to_string(round)),
                std::to_string(i * 100 + round));
    }
  }
  // The one server holds at most two of pgward's statements.
  EXPECT_LE(
      std::stoi(query_value(conn, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgw_%'")), 2);
}

// pgbench with more clients than servers, in the protocol modes that name statements. One thread per client:
// pgbench 15 prepares with a blocking PQprepare, so a thread driving several clients would stall on one
// waiting for a server while its other clients hold transactions open (in front of any transaction pooler).
TEST(Prepared, PgbenchPreparedAndExtendedHaveNoFailures) {
  const std::string pgbench = "/usr/lib/postgresql/15/bin/pgbench";
  const std::string init = pgbench + " -i -s 1 -q -h 127.0.0.1 -p " + std::to_string(pg_port()) +
                           " -U postgres " + kDatabase + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(init.c_str()), 0);
  {
    Conn direct = connect_direct();
    exec(direct, std::string("GRANT ALL ON ALL TABLES IN SCHEMA public TO ") + kTrustUser);
  }
  Pgward pgward(PgwardConfig{.pool = pool_toml(4)});
  for (const char* mode : {"prepared", "extended"}) {
    SCOPED_TRACE(mode);
    const std::string cmd = pgbench + " -n -M " + mode + " -c 16 -j 16 -t 200 -h 127.0.0.1 -p " +
                            std::to_string(pgward.port()) + " -U " + kTrustUser + " " + kDatabase + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    const int status = pclose(p);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("number of transactions actually processed: 3200/3200"), std::string::npos) << out;
    EXPECT_NE(out.find("number of failed transactions: 0 "), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace pgward::it
