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
  // The SQL statement keeps its name on the server (as on a direct connection), the protocol-level one has
  // pgward's.
  ASSERT_EQ(names.size(), 2u);
  EXPECT_NE(std::find(names.begin(), names.end(), "mine"), names.end());
  EXPECT_EQ(
      std::count_if(names.begin(), names.end(), [](const std::string& n) { return n.starts_with("pgw_"); }),
      1);

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
      "BEGIN",
      "SELECT 1/0",
      "DEALLOCATE ALL",
      "ROLLBACK",
      "EXECUTE q(3)",
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

TEST(Isolation, EvictingPrepareStillReleasesItsServer) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1) + "wait_timeout = \"5s\"\nmax_prepared_statements = 2\n"});
  Conn first = pgward.connect();
  Conn second = pgward.connect();
  ASSERT_TRUE(first.ok() && second.ok());
  for (int i = 0; i < 4; ++i)
    exec(first, "PREPARE e" + std::to_string(i) + " AS SELECT " + std::to_string(i));
  // The last PREPAREs evicted older statements: the server must still go back, for the other client.
  EXPECT_EQ(query_value(second, "SELECT 'served'"), "served");
  EXPECT_EQ(query_value(first, "EXECUTE e0"), "0");
  EXPECT_EQ(query_value(first, "EXECUTE e3"), "3");
}

TEST(Isolation, StatementPlantedUnderPgwardsNameIsNeverRunForOthers) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1)});
  Conn planter = pgward.connect();
  Conn victim = pgward.connect();
  ASSERT_TRUE(planter.ok() && victim.ok());
  // Dynamic SQL that pgward cannot read creates a statement under the name pgward's stand-ins use.
  exec(planter, "DO $$BEGIN EXECUTE 'PREPARE pgw_missing AS SELECT ''planted''::text'; END$$");
  Result unknown(PQexec(victim, "EXECUTE nosuch"));
  EXPECT_EQ(sqlstate(unknown.get()), "26000");
  Result bound(PQexecPrepared(victim, "nosuch", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(bound.get()), "26000");
}

TEST(Isolation, StartupSettingsOfOneClientNeverReachTheNext) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1)});
  // Reported settings beyond the usual ones, given at startup both ways.
  Conn first = Conn::connect(pgward.conninfo() + " options='-c default_transaction_read_only=on'");
  ASSERT_TRUE(first.ok()) << first.error();
  EXPECT_EQ(query_value(first, "SHOW default_transaction_read_only"), "on");
  Conn second = pgward.connect();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(query_value(second, "SHOW default_transaction_read_only"), "off");
  EXPECT_STREQ(PQparameterStatus(second, "default_transaction_read_only"), "off");
  // And the first keeps its own on the same (only) server.
  EXPECT_EQ(query_value(first, "SHOW default_transaction_read_only"), "on");
}

TEST(Isolation, ReportedSettingOneClientSetsStaysWithIt) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1)});
  Conn setter = pgward.connect();
  Conn other = pgward.connect();  // the same startup settings as the setter
  ASSERT_TRUE(setter.ok() && other.ok());
  const std::string before = query_value(other, "SHOW TimeZone");
  for (int i = 0; i < 3; ++i) {
    exec(setter, "SET TimeZone = 'Asia/Tokyo'");
    EXPECT_EQ(query_value(other, "SHOW TimeZone"), before);
    EXPECT_EQ(query_value(setter, "SHOW TimeZone"), "Asia/Tokyo");
    exec(setter, "RESET TimeZone");
    EXPECT_EQ(query_value(setter, "SHOW TimeZone"), before);
  }
}

// ---- relay: no server goes back with a message half-forwarded, no cancel reaches another client ----

// One sample from pgward's /metrics; -1 when absent.
double metric(int admin_port, const std::string& name, const std::string& label_part = "") {
  return sample(http(admin_port, "GET", "/metrics").body, name, label_part).value_or(-1);
}

// Sends two queries in one write and returns the first column of each result ("" when none came).
std::vector<std::string> pipeline_two(RawClient& client, const std::string& a, const std::string& b) {
  std::vector<std::string> values;
  if (!client.send(wire::query(a) + wire::query(b))) return values;
  try {
    for (int i = 0; i < 2; ++i) {
      std::string value;
      for (const Message& m : client.read_until_ready()) {
        if (m.type == 'D' && value.empty()) value = m.body.substr(2 + 4);  // one column: count, length, bytes
      }
      values.push_back(value);
    }
  } catch (const std::exception& e) {  // no answer in time: the values so far tell the story
    ADD_FAILURE() << e.what();
  }
  return values;
}

TEST(Isolation, HalfACopyDataKeepsItsServerUntilFinished) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(1) + "wait_timeout = \"20s\"\n"});
  RawClient attacker(pgward.port());
  attacker.login(trust_login_params());
  // A query, then the first bytes of a 1,000-byte CopyData outside any COPY: PostgreSQL reads the rest of
  // that message before anything else, so the server is not free until it has come.
  const std::string copy = wire::message('d', std::string(995, 'x'));
  ASSERT_TRUE(attacker.send(wire::query("SELECT 'attacker'") + copy.substr(0, 10)));
  EXPECT_EQ(message_signature(attacker.read_until_ready()), "T D C(SELECT 1) Z(I)");

  std::vector<std::string> victim_values;
  std::thread victim_thread([&] {
    RawClient victim(pgward.port(), 20s);
    victim.login(trust_login_params());
    victim_values = pipeline_two(victim, "SELECT 'v1'", "SELECT 'v2'");
  });
  std::this_thread::sleep_for(500ms);
  ASSERT_TRUE(attacker.send(copy.substr(10)));  // the message ends: the server may go
  victim_thread.join();
  EXPECT_EQ(victim_values, (std::vector<std::string>{"v1", "v2"}));
  // The attacker's session goes on too.
  EXPECT_EQ(attacker.query_value("SELECT 'still here'"), "still here");
}

TEST(Isolation, ClientStalledMidMessageIsClosedAndItsServerNotReused) {
  Pgward pgward(PgwardConfig{.proxy = "client_message_timeout = \"1s\"\n", .pool = pool_toml(1)});
  RawClient attacker(pgward.port());
  attacker.login(trust_login_params());
  const std::string copy = wire::message('d', std::string(995, 'x'));
  ASSERT_TRUE(attacker.send(wire::query("SELECT 1") + copy.substr(0, 10)));
  attacker.read_until_ready();

  RawClient victim(pgward.port());
  victim.login(trust_login_params());
  EXPECT_EQ(pipeline_two(victim, "SELECT 'v1'", "SELECT 'v2'"), (std::vector<std::string>{"v1", "v2"}));
  // The stalled client heard why it was closed.
  auto last = attacker.read_message();
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->type, 'E');
  EXPECT_EQ(parse_error(*last)['C'], "08P01");
  EXPECT_TRUE(attacker.wait_closed());
  EXPECT_GE(metric(pgward.admin_port(), "pgward_client_message_timeouts_total"), 1);
}

TEST(Isolation, SlowSteadyCopyIsNotAStall) {
  Pgward pgward(PgwardConfig{.proxy = "client_message_timeout = \"1s\"\n", .pool = pool_toml(1)});
  Conn setup = pgward.connect();
  const std::string table = unique_name("slow_copy");
  exec(setup, "CREATE TABLE " + table + " (line text)");
  RawClient client(pgward.port());
  client.login(trust_login_params());
  ASSERT_TRUE(client.send(wire::query("COPY " + table + " FROM STDIN")));
  auto started = client.read_message();
  ASSERT_TRUE(started.has_value());
  ASSERT_EQ(started->type, 'G');
  // 30 rows over about 3 s, every write ending inside a CopyData message: always mid-message, never stalled.
  std::string pending;
  for (int i = 0; i < 30; ++i) pending += wire::message('d', "row " + std::to_string(i) + "\n");
  const std::size_t step = pending.size() / 30 + 3;
  for (std::size_t at = 0; at < pending.size(); at += step) {
    ASSERT_TRUE(client.send(pending.substr(at, step)));
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(client.send(wire::message('c', "")));
  EXPECT_EQ(message_signature(client.read_until_ready()), "C(COPY 30) Z(I)");
  EXPECT_EQ(query_value(setup, "SELECT count(*) FROM " + table), "30");
  EXPECT_EQ(metric(pgward.admin_port(), "pgward_client_message_timeouts_total"), 0);
  exec(setup, "DROP TABLE " + table);
}

TEST(Isolation, CancelFloodNeverCancelsAnotherClientsQuery) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(4)});
  std::atomic<bool> stop{false};
  std::atomic<int> others_cancelled{0}, others_done{0}, others_failed{0}, own_cancelled{0};

  Conn flooder = pgward.connect();
  ASSERT_TRUE(flooder.ok());
  PGcancel* key = PQgetCancel(flooder);
  ASSERT_NE(key, nullptr);

  std::vector<std::thread> threads;
  for (int c = 0; c < 16; ++c) {
    threads.emplace_back([&] {
      Conn conn = pgward.connect();
      if (!conn.ok()) {
        ++others_failed;
        return;
      }
      while (!stop) {
        Result r(PQexec(conn, "SELECT count(*) FROM generate_series(1, 2000)"));
        if (PQresultStatus(r.get()) == PGRES_TUPLES_OK) {
          ++others_done;
        } else if (sqlstate(r.get()) == "57014") {
          ++others_cancelled;
        } else {
          ++others_failed;
        }
      }
    });
  }
  threads.emplace_back([&] {  // the flooder's own work, so that its key names a linked server often
    while (!stop) {
      Result r(PQexec(flooder, "SELECT pg_sleep(0.002)"));
      if (sqlstate(r.get()) == "57014") ++own_cancelled;
    }
  });
  std::vector<std::thread> cancellers;
  for (int c = 0; c < 2; ++c) {
    cancellers.emplace_back([&] {
      char error[256];
      while (!stop) PQcancel(key, error, sizeof error);
    });
  }
  std::this_thread::sleep_for(4s);
  stop = true;
  for (auto& t : cancellers) t.join();
  for (auto& t : threads) t.join();
  PQfreeCancel(key);

  EXPECT_EQ(others_cancelled.load(), 0) << "of " << others_done.load() << " queries of other clients";
  EXPECT_EQ(others_failed.load(), 0);
  EXPECT_GT(others_done.load(), 100);
  EXPECT_GT(metric(pgward.admin_port(), "pgward_cancel_requests_total", "result=\"forwarded\""), 0);
  // The flood still did what a cancel does, to its own client.
  EXPECT_GT(own_cancelled.load(), 0);
}

TEST(Isolation, HeadersOfHugeMessagesHoldNoMemory) {
  Pgward pgward(PgwardConfig{.proxy = "max_buffer_total = \"64MB\"\nclient_message_timeout = \"3s\"\n",
                             .pool = pool_toml(8)});
  Conn healthy = pgward.connect();
  ASSERT_TRUE(healthy.ok());
  const long rss_before = rss_kib(pgward.pid());
  ASSERT_GT(rss_before, 0);

  // 32 clients each announce a Query of almost 16 MB (pgward reads a Query whole to rewrite statement
  // names) and send nothing more.
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 32; ++i) {
    auto c = std::make_unique<RawClient>(pgward.port());
    c->login(trust_login_params());
    ASSERT_TRUE(c->send("Q" + wire::u32((16u << 20) - 64)));
    clients.push_back(std::move(c));
  }
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(query_value(healthy, "SELECT 'unaffected'"), "unaffected");
  const long rss_after = rss_kib(pgward.pid());
  EXPECT_LT(rss_after - rss_before, 16 * 1024) << "KiB grown for headers alone";
  EXPECT_LE(metric(pgward.admin_port(), "pgward_client_buffer_bytes"), 64.0 * 1024 * 1024);
  // Four fit in max_buffer_total (reserved, not allocated); the others heard 53200 at once.
  EXPECT_GE(metric(pgward.admin_port(), "pgward_client_buffer_refusals_total"), 32 - 4);
  // And none of them may sit there for ever.
  for (auto& c : clients) EXPECT_TRUE(c->wait_closed());
  EXPECT_GE(metric(pgward.admin_port(), "pgward_client_message_timeouts_total"), 32);
  EXPECT_EQ(metric(pgward.admin_port(), "pgward_client_buffer_bytes"), 0);
  EXPECT_EQ(query_value(healthy, "SELECT 'still unaffected'"), "still unaffected");
}

// ---- messages pgward must read whole ----

std::string parse_with_types(std::uint32_t count, std::uint32_t present) {
  std::string body = std::string(1, '\0') + "SELECT 1" + std::string(1, '\0');
  body += static_cast<char>((count >> 8) & 0xff);
  body += static_cast<char>(count & 0xff);
  body += std::string(std::size_t{present} * 4, '\0');
  return wire::message('P', body);
}

TEST(Isolation, ParseDeclaringSixtyFiveThousandTypesMatchesPostgres) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  auto run = [](int port) {
    RawClient client(port);
    client.login(trust_login_params());
    EXPECT_TRUE(client.send(parse_with_types(65535, 65535) + wire::sync()));
    std::string out = message_signature(client.read_until_ready());
    out += " | " + client.query_value("SELECT 'after'");
    return out;
  };
  EXPECT_EQ(run(pgward.port()), run(pg_port()));
}

TEST(Isolation, MalformedParseGetsAnErrorAndTheSessionGoesOn) {
  Pgward pgward(PgwardConfig{.pool = pool_toml(2)});
  RawClient client(pgward.port());
  client.login(trust_login_params());
  // Declares two parameter types and carries one.
  ASSERT_TRUE(client.send(parse_with_types(2, 1) + wire::bind("") + wire::execute() + wire::sync()));
  const auto messages = client.read_until_ready();
  ASSERT_FALSE(messages.empty());
  EXPECT_EQ(messages.front().type, 'E');
  EXPECT_EQ(parse_error(messages.front())['C'], "08P01");
  EXPECT_EQ(messages.back().type, 'Z');
  EXPECT_EQ(client.query_value("SELECT 'goes on'"), "goes on");
}

}  // namespace
}  // namespace pgward::it
