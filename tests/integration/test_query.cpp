// Queries through pgward behave exactly as against PostgreSQL: simple and extended protocol, pipelines, COPY,
// notices and large results.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

// What a multi-statement simple query produces, as message_signature(): pgward must relay it unchanged.
std::string query_signature(int port, const std::string& sql) {
  RawClient client(port);
  client.login(trust_login_params());
  std::string signature = message_signature(client.query(sql));
  // Whatever the first query left behind (an aborted transaction) must be reported the same way too.
  signature += " | " + message_signature(client.query("ROLLBACK"));
  return signature;
}

TEST(Query, SimpleQuery) {
  Pgward pgward;
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());
  EXPECT_EQ(query_value(conn, "SELECT 40 + 2"), "42");
  EXPECT_EQ(query_value(conn, "SELECT current_user"), kTrustUser);
  EXPECT_EQ(query_value(conn, "SELECT current_database()"), kDatabase);
  EXPECT_EQ(exec_sqlstate(conn, "SELECT 1/0"), "22012");
  EXPECT_EQ(query_value(conn, "SELECT 'still alive'"), "still alive");
}

// The data path's trace and debug lines (each client message, each phase, each link) are written at their
// level and not below it: they are built only when they will be written.
TEST(Query, DataPathLogLinesFollowTheLogLevel) {
  for (const char* level : {"trace", "info"}) {
    SCOPED_TRACE(level);
    PgwardConfig config;
    config.proxy = std::string("log_level = \"") + level + "\"\n";
    Pgward pgward(config);
    {
      Conn conn = pgward.connect();
      ASSERT_TRUE(conn.ok());
      EXPECT_EQ(query_value(conn, "SELECT 41 + 1"), "42");
    }
    const std::vector<std::string> lines = {"-> Query (", " -> linked", "linked to server",
                                            "gave back server"};
    if (std::string(level) == "trace") {
      EXPECT_TRUE(wait_until([&] { return pgward.log().find("gave back server") != std::string::npos; }, 5s));
      for (const auto& line : lines) EXPECT_NE(pgward.log().find(line), std::string::npos) << line;
    } else {
      ASSERT_TRUE(wait_until([&] { return pgward.log().find(" closed") != std::string::npos; }, 5s));
      for (const auto& line : lines) EXPECT_EQ(pgward.log().find(line), std::string::npos) << line;
    }
  }
}

TEST(Query, MultiStatementMessagesMatchPostgres) {
  Pgward pgward;
  const std::vector<std::string> queries = {
      "BEGIN; SELECT 1/0; ROLLBACK",
      "SELECT 1; SELECT 2",
      "SELECT 1; SELECT 1/0; SELECT 3",
      "",
      ";",
      "BEGIN; SELECT 1",
      "BEGIN; CREATE TEMP TABLE mq(a int) ON COMMIT DROP; INSERT INTO mq VALUES (1), (2); SELECT * FROM mq; "
      "COMMIT",
  };
  for (const auto& sql : queries) {
    SCOPED_TRACE("query: \"" + sql + "\"");
    const std::string direct = query_signature(pg_port(), sql);
    const std::string proxied = query_signature(pgward.port(), sql);
    EXPECT_EQ(proxied, direct);
    EXPECT_NE(direct.find('Z'), std::string::npos);
  }
  // The comparison is only worth something if the reference is what the protocol documentation says.
  EXPECT_EQ(query_signature(pg_port(), "BEGIN; SELECT 1/0; ROLLBACK"),
            "C(BEGIN) E(22012) Z(E) | C(ROLLBACK) Z(I)");
  EXPECT_EQ(query_signature(pg_port(), ""), "I Z(I) | N(25P01) C(ROLLBACK) Z(I)");
}

TEST(Query, ExtendedProtocolWithParameters) {
  Pgward pgward;
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());

  const char* params[] = {"20", "22", "hello"};
  Result r(PQexecParams(conn, "SELECT $1::int + $2::int, upper($3::text), $3::text IS NULL", 3, nullptr,
                        params, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(conn);
  EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), "42");
  EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 1)), "HELLO");
  EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 2)), "f");

  // A NULL parameter and a binary-format result.
  const char* null_param[] = {nullptr};
  r.reset(
      PQexecParams(conn, "SELECT $1::int4 IS NULL, 7::int4", 1, nullptr, null_param, nullptr, nullptr, 1));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(conn);
  EXPECT_EQ(PQgetvalue(r.get(), 0, 0)[0], 1);
  ASSERT_EQ(PQgetlength(r.get(), 0, 1), 4);
  EXPECT_EQ(read_u32(std::string_view(PQgetvalue(r.get(), 0, 1), 4), 0), 7u);

  // An error in the extended protocol leaves the session usable.
  const char* zero[] = {"0"};
  r.reset(PQexecParams(conn, "SELECT 1/$1::int", 1, nullptr, zero, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(r.get()), "22012");

  // The unnamed prepared statement: Parse+Sync, then Bind/Execute+Sync.
  r.reset(PQprepare(conn, "", "SELECT $1::text || '-' || $2::text", 2, nullptr));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn);
  const char* values[] = {"left", "right"};
  r.reset(PQexecPrepared(conn, "", 2, values, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(conn);
  EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), "left-right");

  r.reset(PQdescribePrepared(conn, ""));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn);
  EXPECT_EQ(PQnparams(r.get()), 2);
  EXPECT_EQ(PQnfields(r.get()), 1);
}

// Runs a pipeline with an error in the middle and returns every result, e.g. "PGRES_TUPLES_OK(1)".
std::vector<std::string> run_pipeline(PGconn* conn) {
  std::vector<std::string> statuses;
  if (PQenterPipelineMode(conn) != 1) {
    ADD_FAILURE() << "PQenterPipelineMode: " << PQerrorMessage(conn);
    return statuses;
  }
  const char* sqls[] = {"SELECT 1", "SELECT 1/0", "SELECT 3", "SELECT 4"};
  for (const char* sql : sqls) PQsendQueryParams(conn, sql, 0, nullptr, nullptr, nullptr, nullptr, 0);
  PQpipelineSync(conn);
  PQsendQueryParams(conn, "SELECT 5", 0, nullptr, nullptr, nullptr, nullptr, 0);
  PQpipelineSync(conn);

  int syncs = 0;
  int nulls_in_a_row = 0;
  const auto deadline = Clock::now() + 10s;
  while (syncs < 2 && nulls_in_a_row < 2) {
    if (!wait_for_result(conn, deadline)) {
      ADD_FAILURE() << "the pipeline stalled; results so far: " << ::testing::PrintToString(statuses);
      return statuses;
    }
    Result r(PQgetResult(conn));
    if (!r) {  // end of one query's results
      ++nulls_in_a_row;
      continue;
    }
    nulls_in_a_row = 0;
    const ExecStatusType status = PQresultStatus(r.get());
    std::string entry = PQresStatus(status);
    if (status == PGRES_FATAL_ERROR) entry += "(" + sqlstate(r.get()) + ")";
    if (status == PGRES_TUPLES_OK) entry += "(" + std::string(PQgetvalue(r.get(), 0, 0)) + ")";
    if (status == PGRES_PIPELINE_SYNC) ++syncs;
    statuses.push_back(entry);
  }
  EXPECT_EQ(PQexitPipelineMode(conn), 1) << PQerrorMessage(conn);
  return statuses;
}

TEST(Query, PipelineWithErrorMatchesPostgres) {
  Pgward pgward;
  Conn proxied = pgward.connect();
  Conn direct = connect_direct(kTrustUser);
  ASSERT_TRUE(proxied.ok() && direct.ok());

  const std::vector<std::string> expected = {
      "PGRES_TUPLES_OK(1)",  "PGRES_FATAL_ERROR(22012)", "PGRES_PIPELINE_ABORTED", "PGRES_PIPELINE_ABORTED",
      "PGRES_PIPELINE_SYNC", "PGRES_TUPLES_OK(5)",       "PGRES_PIPELINE_SYNC",
  };
  EXPECT_EQ(run_pipeline(direct), expected);
  // Repeated: the second batch is already sent when the first one's ReadyForQuery says idle, a moment at
  // which a transaction pooler must not let go of the server (or drop what the client sent meanwhile).
  for (int i = 0; i < 20; ++i) {
    SCOPED_TRACE("pipeline " + std::to_string(i));
    const auto got = run_pipeline(proxied);
    EXPECT_EQ(got, expected);
    if (got != expected) break;
  }
  EXPECT_EQ(query_value(proxied, "SELECT 'after pipeline'"), "after pipeline");
}

constexpr int kCopyRows = 50'000;  // ~5 MB either way

TEST(Query, CopyFromStdinLarge) {
  Pgward pgward;
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());
  const std::string table = unique_name("copy_in");
  exec(conn, "CREATE TABLE " + table + " (id int, payload text)");

  Result r = exec(conn, "COPY " + table + " FROM STDIN", false);
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COPY_IN) << PQerrorMessage(conn);
  const std::string payload(100, 'p');
  std::string chunk;
  std::size_t sent = 0;
  for (int i = 1; i <= kCopyRows; ++i) {
    chunk += std::to_string(i) + "\t" + payload + "\n";
    if (chunk.size() > 64 * 1024 || i == kCopyRows) {
      ASSERT_EQ(PQputCopyData(conn, chunk.data(), static_cast<int>(chunk.size())), 1) << PQerrorMessage(conn);
      sent += chunk.size();
      chunk.clear();
    }
  }
  ASSERT_GT(sent, 5'000'000u);
  ASSERT_EQ(PQputCopyEnd(conn, nullptr), 1) << PQerrorMessage(conn);
  r.reset(PQgetResult(conn));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn);
  EXPECT_EQ(std::string(PQcmdTuples(r.get())), std::to_string(kCopyRows));
  while (Result extra{PQgetResult(conn)})
    ADD_FAILURE() << "unexpected result " << PQresStatus(PQresultStatus(extra.get()));

  EXPECT_EQ(query_value(conn, "SELECT count(*) FROM " + table), std::to_string(kCopyRows));
  EXPECT_EQ(
      query_value(conn, "SELECT sum(id)::text || '/' || sum(length(payload))::text FROM " + table),
      std::to_string(std::int64_t{kCopyRows} * (kCopyRows + 1) / 2) + "/" + std::to_string(100 * kCopyRows));
}

struct CopyOut {
  std::size_t bytes = 0;
  std::size_t rows = 0;
  std::uint64_t checksum = 14695981039346656037ull;  // FNV-1a over the whole stream
  bool operator==(const CopyOut&) const = default;
};

CopyOut copy_out(PGconn* conn, const std::string& sql) {
  CopyOut out;
  Result r = exec(conn, sql, false);
  if (PQresultStatus(r.get()) != PGRES_COPY_OUT) {
    ADD_FAILURE() << "COPY TO STDOUT: " << PQerrorMessage(conn);
    return out;
  }
  char* buffer = nullptr;
  int n;
  while ((n = PQgetCopyData(conn, &buffer, 0)) > 0) {
    out.bytes += static_cast<std::size_t>(n);
    for (int i = 0; i < n; ++i) {
      out.checksum = (out.checksum ^ static_cast<unsigned char>(buffer[i])) * 1099511628211ull;
      if (buffer[i] == '\n') ++out.rows;
    }
    PQfreemem(buffer);
  }
  EXPECT_EQ(n, -1) << PQerrorMessage(conn);
  r.reset(PQgetResult(conn));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn);
  while (Result extra{PQgetResult(conn)})
    ADD_FAILURE() << "unexpected result " << PQresStatus(PQresultStatus(extra.get()));
  return out;
}

TEST(Query, CopyToStdoutLargeMatchesPostgres) {
  Pgward pgward;
  Conn proxied = pgward.connect();
  Conn direct = connect_direct(kTrustUser);
  ASSERT_TRUE(proxied.ok() && direct.ok());
  const std::string sql = "COPY (SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, " +
                          std::to_string(kCopyRows) + ") i) TO STDOUT";
  const CopyOut expected = copy_out(direct, sql);
  ASSERT_GT(expected.bytes, 5'000'000u);
  ASSERT_EQ(expected.rows, static_cast<std::size_t>(kCopyRows));
  const CopyOut got = copy_out(proxied, sql);
  EXPECT_EQ(got.bytes, expected.bytes);
  EXPECT_EQ(got.rows, expected.rows);
  EXPECT_EQ(got.checksum, expected.checksum);
  EXPECT_EQ(query_value(proxied, "SELECT 'after copy'"), "after copy");
}

TEST(Query, CopyWithBadDataFailsAndSessionRecovers) {
  Pgward pgward;
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());
  const std::string table = unique_name("copy_bad");
  exec(conn, "CREATE TABLE " + table + " (n int)");

  Result r = exec(conn, "COPY " + table + " FROM STDIN", false);
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COPY_IN) << PQerrorMessage(conn);
  const std::string data = "1\n2\nnot a number\n4\n";
  ASSERT_EQ(PQputCopyData(conn, data.data(), static_cast<int>(data.size())), 1);
  ASSERT_EQ(PQputCopyEnd(conn, nullptr), 1);
  r.reset(PQgetResult(conn));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(r.get()), "22P02") << PQerrorMessage(conn);
  while (Result extra{PQgetResult(conn)})
    ADD_FAILURE() << "unexpected result " << PQresStatus(PQresultStatus(extra.get()));

  EXPECT_EQ(PQtransactionStatus(conn), PQTRANS_IDLE);
  EXPECT_EQ(query_value(conn, "SELECT count(*) FROM " + table), "0");
  exec(conn, "INSERT INTO " + table + " VALUES (5)");
  EXPECT_EQ(query_value(conn, "SELECT sum(n) FROM " + table), "5");
}

TEST(Query, NoticeIsDelivered) {
  Pgward pgward;
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());
  std::vector<std::string> notices;
  PQsetNoticeReceiver(
      conn,
      [](void* arg, const PGresult* r) {
        const char* message = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        static_cast<std::vector<std::string>*>(arg)->push_back(message ? message : "");
      },
      &notices);
  exec(conn, "DO $$BEGIN RAISE NOTICE 'hello'; END$$");
  EXPECT_EQ(notices, std::vector<std::string>{"hello"});
  exec(conn, "DO $$BEGIN RAISE NOTICE 'one'; RAISE WARNING 'two'; END$$");
  EXPECT_EQ(notices, (std::vector<std::string>{"hello", "one", "two"}));
}

TEST(Query, LargeResultArrivesComplete) {
  Pgward pgward;
  Conn conn = pgward.connect();
  ASSERT_TRUE(conn.ok());
  Result r = exec(conn, "SELECT repeat('x', 1024) FROM generate_series(1, 20000)");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK);
  ASSERT_EQ(PQntuples(r.get()), 20000);
  const std::string expected(1024, 'x');
  int wrong = 0;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    if (PQgetlength(r.get(), i, 0) != 1024 ||
        std::memcmp(PQgetvalue(r.get(), i, 0), expected.data(), 1024) != 0) {
      ++wrong;
    }
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(query_value(conn, "SELECT 'after large result'"), "after large result");
}

}  // namespace
}  // namespace pgward::it
