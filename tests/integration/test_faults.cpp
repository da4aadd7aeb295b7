// Fault tolerance: clients that die inside a transaction, servers that die under their clients (terminated
// backends, connections reset by a FaultRelay, COMMITs whose reply is lost), PostgreSQL that is down or
// restarts under load, and a client that does not read its results. What is checked is what clients are told
// and what the table holds afterwards: never success for work that was not committed, never an uncommitted
// row that becomes visible, never a silent close.
#include <algorithm>
#include <atomic>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

PgwardConfig faults_config(int pool_size, const std::string& pool_keys = "", int server_port = 0) {
  PgwardConfig config;
  config.proxy = "max_client_conn = 10000\nlog_level = \"debug\"\n";
  config.pool = "mode = \"transaction\"\nsize = " + std::to_string(pool_size) + "\n" + pool_keys;
  config.databases = PgwardConfig::database_toml(kDatabase, kDatabase, "", server_port);
  return config;
}

// A table `(n int)` owned by the user the tests connect as, created through pgward.
std::string create_table(const Pgward& pgward, std::string_view prefix) {
  const std::string table = unique_name(prefix);
  Conn conn = pgward.connect();
  exec(conn, "CREATE TABLE " + table + " (n int)");
  return table;
}

std::string count_rows(PGconn* direct, const std::string& table) {
  return query_value(direct, "SELECT count(*) FROM " + table);
}

// Backends of kTrustUser inside a transaction block that no statement is running in.
int open_transactions(PGconn* direct) {
  return std::stoi(query_value(direct, "SELECT count(*) FROM pg_stat_activity WHERE usename = '" +
                                           std::string(kTrustUser) +
                                           "' AND state LIKE 'idle in transaction%'"));
}

void expect_no_open_transactions(PGconn* direct) {
  EXPECT_TRUE(wait_until([&] { return open_transactions(direct) == 0; }, 15s))
      << open_transactions(direct) << " backends are still idle in transaction";
}

// The pid of the backend running a statement that contains `marker`, 0 when none does (yet).
int backend_running(PGconn* direct, const std::string& marker) {
  const std::string pid =
      query_value(direct,
                  "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE state = 'active' "
                  "AND pid <> pg_backend_pid() AND query LIKE '%" +
                      marker + "%'");
  return pid.empty() ? 0 : std::stoi(pid);
}

int wait_for_backend_running(PGconn* direct, const std::string& marker) {
  int pid = 0;
  EXPECT_TRUE(wait_until([&] { return (pid = backend_running(direct, marker)) != 0; }, 15s))
      << "no backend is running the statement marked " << marker;
  return pid;
}

// The messages up to and including ReadyForQuery, or up to the end of the connection, whose signature
// (message_signature) then ends in "<closed>" or "<timeout>".
struct Reply {
  std::vector<Message> messages;
  std::string signature;

  std::vector<ErrorFields> errors() const {
    std::vector<ErrorFields> out;
    for (const auto& m : messages) {
      if (m.type == 'E') out.push_back(parse_error(m));
    }
    return out;
  }
};

Reply read_reply(RawClient& client) {
  Reply reply;
  for (;;) {
    auto m = client.read_message();
    if (!m) {
      reply.signature = message_signature(reply.messages);
      reply.signature += std::string(reply.signature.empty() ? "" : " ") +
                         (client.last_status() == RawClient::ReadStatus::timeout ? "<timeout>" : "<closed>");
      return reply;
    }
    reply.messages.push_back(std::move(*m));
    if (reply.messages.back().type == 'Z') break;
  }
  reply.signature = message_signature(reply.messages);
  return reply;
}

Reply send_query(RawClient& client, std::string_view sql) {
  if (!client.send(wire::query(sql))) return Reply{{}, "<send failed>"};
  return read_reply(client);
}

// A client logged in through pgward, as kTrustUser.
struct LoggedIn {
  RawClient client;
  explicit LoggedIn(int port, std::chrono::milliseconds timeout = 20s) : client(port, timeout) {
    client.login(trust_login_params());
  }
};

// `BEGIN; INSERT INTO table VALUES (n)`, leaving the client inside the transaction.
void begin_and_insert(RawClient& client, const std::string& table, int n) {
  EXPECT_EQ(send_query(client, "BEGIN").signature, "C(BEGIN) Z(T)");
  EXPECT_EQ(send_query(client, "INSERT INTO " + table + " VALUES (" + std::to_string(n) + ")").signature,
            "C(INSERT 0 1) Z(T)");
}

// ---- the harness's relay, straight in front of PostgreSQL ----

TEST(Faults, RelayBreaksConnectionsAsAsked) {
  Conn direct = connect_direct();
  ASSERT_TRUE(direct.ok());
  const std::string table = unique_name("relay_self");
  exec(direct, "CREATE TABLE " + table + " (n int)");
  exec(direct, "GRANT ALL ON " + table + " TO PUBLIC");
  FaultRelay relay;
  auto open_transaction = [&](int n) {
    auto c = std::make_unique<LoggedIn>(relay.port());
    begin_and_insert(c->client, table, n);
    return c;
  };

  auto a = open_transaction(1);
  auto b = open_transaction(2);
  EXPECT_EQ(relay.connections(), 2u);
  relay.kill_all();
  EXPECT_EQ(relay.connections(), 0u);
  const std::string reset = send_query(a->client, "COMMIT").signature;
  EXPECT_TRUE(reset == "<closed>" || reset == "<send failed>") << reset;
  expect_no_open_transactions(direct);

  auto c = open_transaction(3);
  relay.cut_on_commit(FaultRelay::Cut::before_send);
  EXPECT_EQ(send_query(c->client, "SELECT 'no commit here'").signature, "T D C(SELECT 1) Z(T)");
  EXPECT_FALSE(relay.fired());
  EXPECT_EQ(send_query(c->client, "commit").signature, "<closed>");
  EXPECT_TRUE(relay.fired());

  auto d = open_transaction(4);
  relay.cut_on_commit(FaultRelay::Cut::after_reply);
  // What comes before the COMMIT in the same chunk is answered; the COMMIT's own reply is not.
  ASSERT_TRUE(d->client.send(wire::query("SELECT 5") + wire::query("COMMIT")));
  EXPECT_EQ(read_reply(d->client).signature, "T D C(SELECT 1) Z(T)");
  EXPECT_EQ(read_reply(d->client).signature, "<closed>");
  EXPECT_TRUE(relay.fired());

  auto e = open_transaction(5);  // disarmed after firing once
  EXPECT_EQ(send_query(e->client, "COMMIT").signature, "C(COMMIT) Z(I)");
  expect_no_open_transactions(direct);
  EXPECT_EQ(query_value(direct, "SELECT string_agg(n::text, ',' ORDER BY n) FROM " + table), "4,5");
}

// ---- a client goes away inside a transaction ----

// What a client that died inside a transaction must leave behind: nothing. No backend idle in transaction,
// no row, and the next client of the (single) server starts outside any transaction.
void expect_clean_after_client_death(PGconn* direct, const Pgward& pgward, const std::string& table) {
  expect_no_open_transactions(direct);
  const std::string busy_backends = "SELECT count(*) FROM pg_stat_activity WHERE usename = '" +
                                    std::string(kTrustUser) + "' AND state <> 'idle'";
  EXPECT_TRUE(wait_until([&] { return query_value(direct, busy_backends) == "0"; }, 15s))
      << "the dead client's server is not idle: "
      << query_value(direct, "SELECT string_agg(state, ', ') FROM pg_stat_activity WHERE usename = '" +
                                 std::string(kTrustUser) + "'");
  EXPECT_EQ(count_rows(direct, table), "0") << "an uncommitted row became visible";
  Conn next = pgward.connect();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(query_value(next, "SELECT txid_current_if_assigned() IS NULL"), "t")
      << "the next client ran inside the dead client's transaction";
  EXPECT_EQ(query_value(next, "SELECT now() = statement_timestamp()"), "t") << "inside a transaction block";
  EXPECT_EQ(query_value(next, "SELECT count(*) FROM " + table), "0");
  exec(next, "INSERT INTO " + table + " VALUES (2)");
  EXPECT_EQ(count_rows(direct, table), "1");
  EXPECT_EQ(query_value(direct, "SELECT string_agg(n::text, ',') FROM " + table), "2");
  EXPECT_EQ(open_transactions(direct), 0);
}

TEST(Faults, ClientKilledAfterBeginInsertLeavesNoTrace) {
  Conn direct = connect_direct();
  ASSERT_TRUE(direct.ok());
  Pgward pgward(faults_config(1));
  const std::string table = create_table(pgward, "killed_tx");
  {
    LoggedIn c(pgward.port());
    begin_and_insert(c.client, table, 1);
    c.client.reset();
  }
  expect_clean_after_client_death(direct, pgward, table);
}

TEST(Faults, ClientKilledAfterUnsyncedExecuteLeavesNoTrace) {
  Conn direct = connect_direct();
  ASSERT_TRUE(direct.ok());
  Pgward pgward(faults_config(1));
  const std::string table = create_table(pgward, "killed_pipeline");
  {
    LoggedIn c(pgward.port());
    // Executed in an implicit transaction that only a Sync would commit; Flush makes the server answer.
    c.client.send(wire::parse("", "INSERT INTO " + table + " VALUES (1)") + wire::bind("") + wire::execute() +
                  wire::flush());
    std::string got;
    for (int i = 0; i < 3; ++i) {
      auto m = c.client.read_message();
      ASSERT_TRUE(m) << "the Execute was not answered; got " << got;
      got += m->type;
    }
    EXPECT_EQ(got, "12C");
    c.client.reset();
  }
  expect_clean_after_client_death(direct, pgward, table);
}

TEST(Faults, IdleInTransactionTimeoutClosesTheClient) {
  Conn direct = connect_direct();
  ASSERT_TRUE(direct.ok());
  Pgward pgward(faults_config(2, "idle_in_transaction_timeout = \"300ms\"\n"));
  const std::string table = create_table(pgward, "idle_tx");

  LoggedIn idle(pgward.port());
  begin_and_insert(idle.client, table, 1);
  const Reply closing = read_reply(idle.client);  // nothing sent: what comes is pgward's doing
  EXPECT_EQ(closing.signature, "E(25P03) <closed>");
  if (const auto errors = closing.errors(); !errors.empty()) {
    EXPECT_EQ(errors[0].at('S'), "FATAL");
  }
  expect_no_open_transactions(direct);
  EXPECT_EQ(count_rows(direct, table), "0");

  // A client that keeps working inside its transaction is never idle for 300 ms.
  LoggedIn busy(pgward.port());
  begin_and_insert(busy.client, table, 2);
  for (int i = 0; i < 10; ++i) {
    std::this_thread::sleep_for(100ms);  // the client's think time, well under the timeout
    EXPECT_EQ(send_query(busy.client, "SELECT 1").signature, "T D C(SELECT 1) Z(T)") << "query " << i;
  }
  EXPECT_EQ(send_query(busy.client, "COMMIT").signature, "C(COMMIT) Z(I)");
  EXPECT_EQ(query_value(direct, "SELECT string_agg(n::text, ',') FROM " + table), "2");
}

// ---- the server goes away under its client ----

// Runs `SELECT 1` in a loop on `clients` libpq connections through pgward until stopped; counts failures.
class QueryLoad {
 public:
  QueryLoad(const Pgward& pgward, int clients) {
    for (int i = 0; i < clients; ++i) {
      threads_.emplace_back([this, conninfo = pgward.conninfo()] {
        Conn conn = Conn::connect(conninfo);
        if (!conn.ok()) return fail("connect: " + conn.error());
        while (!stop_) {
          auto r = exec_within(conn, "SELECT 1", 15s);
          if (!r || PQresultStatus(r->get()) != PGRES_TUPLES_OK) return fail(PQerrorMessage(conn));
          ++done_;
        }
      });
    }
  }
  ~QueryLoad() { stop(); }

  int done() const { return done_; }
  // Stops and joins the clients; what went wrong.
  std::vector<std::string> stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    std::lock_guard lock(mutex_);
    return errors_;
  }

 private:
  void fail(const std::string& what) {
    std::lock_guard lock(mutex_);
    errors_.push_back(what);
  }

  std::atomic<bool> stop_{false};
  std::atomic<int> done_{0};
  std::mutex mutex_;
  std::vector<std::string> errors_;
  std::vector<std::thread> threads_;
};

// Runs `sql` on `clients` libpq connections through pgward at the same time; how many succeeded.
int run_concurrently(const Pgward& pgward, int clients, const std::string& sql) {
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, conninfo = pgward.conninfo()] {
      Conn conn = Conn::connect(conninfo);
      if (!conn.ok()) return;
      auto r = exec_within(conn, sql, 20s);
      if (r && PQresultStatus(r->get()) == PGRES_TUPLES_OK) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  return ok;
}

// The reply to a statement whose server died: exactly one error with one of `codes`, then ReadyForQuery.
void expect_one_error(const Reply& reply, const std::set<std::string>& codes, char status) {
  const auto errors = reply.errors();
  ASSERT_EQ(errors.size(), 1u) << reply.signature;
  EXPECT_TRUE(codes.contains(errors[0].at('C'))) << reply.signature << ": " << errors[0].at('M');
  EXPECT_TRUE(reply.signature.ends_with(std::string("Z(") + status + ")")) << reply.signature;
  EXPECT_EQ(reply.signature.find("C("), std::string::npos) << "a command was reported complete";
}

TEST(Faults, TerminatedBackendFailsOnlyItsClient) {
  Conn direct = connect_direct();
  ASSERT_TRUE(direct.ok());
  Pgward pgward(faults_config(4));
  QueryLoad others(pgward, 3);
  ASSERT_TRUE(wait_until([&] { return others.done() >= 30; }, 20s)) << "the other clients do not get through";

  LoggedIn busy(pgward.port());
  const std::string marker = unique_name("busy");
  ASSERT_TRUE(busy.client.send(wire::query("SELECT pg_sleep(5) /* " + marker + " */")));
  const int pid = wait_for_backend_running(direct, marker);
  ASSERT_NE(pid, 0);
  EXPECT_EQ(query_value(direct, "SELECT pg_terminate_backend(" + std::to_string(pid) + ")"), "t");

  // The statement ran in an implicit transaction: whether it committed is unknown.
  expect_one_error(read_reply(busy.client), {"08007", "08006"}, 'I');
  EXPECT_EQ(send_query(busy.client, "SELECT 1").signature, "T D C(SELECT 1) Z(I)")
      << "the client's session did not survive its server";

  const int before = others.done();
  EXPECT_TRUE(wait_until([&] { return others.done() >= before + 30; }, 20s));
  const auto errors = others.stop();
  EXPECT_TRUE(errors.empty()) << errors.size() << " other clients failed; first: " << errors.front();
  EXPECT_EQ(run_concurrently(pgward, 8, "SELECT pg_sleep(0.2)"), 8)
      << "the pool does not serve after the loss";
}

// An idle server that dies (pg_terminate_backend) is closed while it sits idle, by the watch on its socket,
// before any client asks for it; the checkout peek plays no part (server_check_delay is an hour). Its client
// goes on without an error.
TEST(Faults, KilledIdleServerIsClosedWhileIdle) {
  Conn direct = connect_direct();
  ASSERT_TRUE(direct.ok());
  Pgward pgward(faults_config(2, "server_check_delay = \"1h\"\n"));
  Conn client = pgward.connect();
  ASSERT_TRUE(client.ok());
  const std::string pid = query_value(client, "SELECT pg_backend_pid()");
  const auto metrics = [&] { return http(pgward.admin_port(), "GET", "/metrics").body; };
  const auto idle = [&] { return sample(metrics(), "pgward_server_connections", "state=\"idle\""); };
  ASSERT_TRUE(wait_until([&] { return idle() == 1.0; }, 5s)) << metrics();

  EXPECT_EQ(query_value(direct, "SELECT pg_terminate_backend(" + pid + ")"), "t");
  EXPECT_TRUE(wait_until([&] { return idle() == 0.0; }, 5s))
      << "the dead server is still idle: " << metrics();
  const std::string text = metrics();
  EXPECT_EQ(sample(text, "pgward_server_connections_closed_total").value_or(-1), 1.0) << text;
  const std::string servers = http(pgward.admin_port(), "GET", "/api/servers").body;
  EXPECT_EQ(servers.find("\"state\":\"idle\""), std::string::npos) << servers;

  EXPECT_NE(query_value(client, "SELECT pg_backend_pid()"), pid);
  EXPECT_EQ(sample(metrics(), "pgward_server_lost_total").value_or(0), 0.0);
}

// Through a FaultRelay: `BEGIN; INSERT` on a fresh client, ready for the fault.
struct RelayedTransaction {
  Conn direct = connect_direct();
  FaultRelay relay;
  Pgward pgward{faults_config(1, "", relay.port())};
  std::string table = create_table(pgward, "relayed");
  LoggedIn client{pgward.port()};

  RelayedTransaction() { begin_and_insert(client.client, table, 1); }
};

TEST(Faults, ServerLostDuringStatementInTransaction) {
  RelayedTransaction tx;
  const std::string marker = unique_name("sleeping");
  ASSERT_TRUE(tx.client.client.send(wire::query("SELECT pg_sleep(2) /* " + marker + " */")));
  ASSERT_NE(wait_for_backend_running(tx.direct, marker), 0);
  tx.relay.kill_all();

  RawClient& c = tx.client.client;
  expect_one_error(read_reply(c), {"08006"}, 'E');
  EXPECT_EQ(send_query(c, "SELECT 1").signature, "E(25P02) Z(E)");
  EXPECT_EQ(send_query(c, "ROLLBACK").signature, "C(ROLLBACK) Z(I)");
  EXPECT_EQ(send_query(c, "SELECT 1").signature, "T D C(SELECT 1) Z(I)");
  expect_no_open_transactions(tx.direct);
  EXPECT_EQ(count_rows(tx.direct, tx.table), "0");
}

TEST(Faults, ServerLostWhileIdleInTransaction) {
  RelayedTransaction tx;
  tx.relay.kill_all();
  // The loss must be seen while the client is idle: a COMMIT sent before pgward saw the reset (it runs on
  // another thread with workers = 2) may reach the socket first, and then its outcome is rightly unknown.
  const auto lost = [&] {
    return sample(http(tx.pgward.admin_port(), "GET", "/metrics").body, "pgward_server_lost_total")
        .value_or(0);
  };
  ASSERT_TRUE(wait_until([&] { return lost() == 1.0; }, 5s)) << "pgward did not see the server go";

  RawClient& c = tx.client.client;
  const Reply commit = send_query(c, "COMMIT");
  expect_one_error(commit, {"08006"}, 'I');
  if (const auto errors = commit.errors(); errors.size() == 1) {
    EXPECT_NE(errors[0].at('M').find("rolled back"), std::string::npos) << errors[0].at('M');
  }
  EXPECT_EQ(send_query(c, "SELECT 1").signature, "T D C(SELECT 1) Z(I)");
  expect_no_open_transactions(tx.direct);
  EXPECT_EQ(count_rows(tx.direct, tx.table), "0");
}

// `BEGIN; <statement>; COMMIT` with the COMMIT cut by the relay: the reply to the COMMIT, and the rows of
// the table afterwards.
struct CutCommit {
  Reply reply;
  std::string rows;
};

// How the COMMIT is sent: a simple Query, Parse/Bind/Execute/Sync as pgjdbc sends it, or Bind/Execute/Sync of
// a named statement prepared before the transaction (which pgward parses again on the server, so that the
// relay sees the COMMIT).
enum class Via { query, extended, named };

CutCommit cut_commit(FaultRelay::Cut mode, const std::string& pool_keys, bool write, Via via = Via::query) {
  CutCommit out;
  Conn direct = connect_direct();
  FaultRelay relay;
  Pgward pgward(faults_config(1, pool_keys, relay.port()));
  const std::string table = create_table(pgward, "cut_commit");
  LoggedIn c(pgward.port());
  if (via == Via::named) {
    c.client.send(wire::parse("c1", "COMMIT") + wire::sync());
    EXPECT_EQ(read_reply(c.client).signature, "1 Z(I)");
  }
  if (write) {
    begin_and_insert(c.client, table, 1);
  } else {
    EXPECT_EQ(send_query(c.client, "BEGIN").signature, "C(BEGIN) Z(T)");
    EXPECT_EQ(send_query(c.client, "SELECT count(*) FROM " + table).signature, "T D C(SELECT 1) Z(T)");
  }
  if (via == Via::named) {
    // The text names no statement but mentions DISCARD: pgward forgets what the server holds.
    EXPECT_EQ(send_query(c.client, "SELECT 'discard'").signature, "T D C(SELECT 1) Z(T)");
  }
  relay.cut_on_commit(mode);
  if (via == Via::query) {
    out.reply = send_query(c.client, "COMMIT");
  } else if (via == Via::named) {
    if (c.client.send(wire::bind("c1") + wire::execute() + wire::sync())) out.reply = read_reply(c.client);
  } else if (c.client.send(wire::parse("", "COMMIT") + wire::bind("") + wire::execute() + wire::sync())) {
    out.reply = read_reply(c.client);
  }
  EXPECT_TRUE(relay.fired()) << "the relay did not see the COMMIT";
  EXPECT_EQ(send_query(c.client, "SELECT 1").signature, "T D C(SELECT 1) Z(I)")
      << "the session did not survive";
  out.rows = count_rows(direct, table);
  return out;
}

TEST(Faults, CommitCutReportsUnknownOutcome) {
  {
    SCOPED_TRACE("COMMIT never sent");
    const CutCommit cut = cut_commit(FaultRelay::Cut::before_send, "", true);
    expect_one_error(cut.reply, {"08007"}, 'I');
    EXPECT_EQ(cut.rows, "0");
  }
  {
    SCOPED_TRACE("COMMIT done, its reply lost");
    const CutCommit cut = cut_commit(FaultRelay::Cut::after_reply, "", true);
    // The transaction did commit: anything but "unknown" would be a lie.
    expect_one_error(cut.reply, {"08007"}, 'I');
    EXPECT_EQ(cut.rows, "1");
  }
  {
    SCOPED_TRACE("extended-protocol COMMIT done, its replies lost");
    const CutCommit cut = cut_commit(FaultRelay::Cut::after_reply, "", true, Via::extended);
    expect_one_error(cut.reply, {"08007"}, 'I');
    EXPECT_EQ(cut.rows, "1");
  }
  {
    SCOPED_TRACE("COMMIT of a named statement done, its replies lost");
    const CutCommit cut = cut_commit(FaultRelay::Cut::after_reply, "", true, Via::named);
    expect_one_error(cut.reply, {"08007"}, 'I');
    EXPECT_EQ(cut.rows, "1");
  }
}

TEST(Faults, CommitCutVerifiedReportsTrueOutcome) {
  const std::string verify = "commit_resolution = \"verify\"\n";
  {
    SCOPED_TRACE("COMMIT done, its reply lost");
    const CutCommit cut = cut_commit(FaultRelay::Cut::after_reply, verify, true);
    EXPECT_EQ(cut.reply.signature, "C(COMMIT) Z(I)");
    EXPECT_EQ(cut.rows, "1");
  }
  {
    SCOPED_TRACE("COMMIT never sent");
    const CutCommit cut = cut_commit(FaultRelay::Cut::before_send, verify, true);
    expect_one_error(cut.reply, {"40003"}, 'I');
    EXPECT_EQ(cut.rows, "0");
  }
  {
    SCOPED_TRACE("read-only transaction, COMMIT's reply lost");
    const CutCommit cut = cut_commit(FaultRelay::Cut::after_reply, verify, false);
    EXPECT_EQ(cut.reply.signature, "C(COMMIT) Z(I)");
  }
  {
    SCOPED_TRACE("extended-protocol COMMIT done, its replies lost");
    const CutCommit cut = cut_commit(FaultRelay::Cut::after_reply, verify, true, Via::extended);
    // Every reply the batch owes: ParseComplete, BindComplete, CommandComplete, ReadyForQuery.
    EXPECT_EQ(cut.reply.signature, "1 2 C(COMMIT) Z(I)");
    EXPECT_EQ(cut.rows, "1");
  }
  {
    SCOPED_TRACE("extended-protocol COMMIT never sent");
    const CutCommit cut = cut_commit(FaultRelay::Cut::before_send, verify, true, Via::extended);
    expect_one_error(cut.reply, {"40003"}, 'I');
    EXPECT_EQ(cut.rows, "0");
  }
}

// ---- PostgreSQL down, restarting ----

TEST(Faults, ClientsWaitForPostgresToStart) {
  PostgresRestarter restarter;
  stop_postgres_server("fast");
  Pgward pgward(faults_config(2, "wait_timeout = \"20s\"\n"));

  std::mutex mutex;
  std::vector<std::string> outcomes;
  std::vector<std::thread> clients;
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back([&, conninfo = pgward.conninfo()] {
      std::string outcome;
      Conn conn = Conn::connect(conninfo, 30s);
      if (!conn.ok()) {
        outcome = "connect: " + conn.error();
      } else if (auto r = exec_within(conn, "SELECT 1", 30s); !r) {
        outcome = "no answer";
      } else {
        outcome = PQresultStatus(r->get()) == PGRES_TUPLES_OK ? "ok" : PQerrorMessage(conn);
      }
      std::lock_guard lock(mutex);
      outcomes.push_back(outcome);
    });
  }
  std::this_thread::sleep_for(1s);  // the database comes up a while after the clients asked for it
  start_postgres_server();
  for (auto& t : clients) t.join();
  EXPECT_EQ(outcomes, std::vector<std::string>(3, "ok"));
}

TEST(Faults, PostgresDownTimesOutWithTheTargetNamed) {
  PostgresRestarter restarter;
  stop_postgres_server("fast");
  Pgward pgward(faults_config(1, "wait_timeout = \"1s\"\n"));

  // pgward may refuse the login itself or the first query: either way with an error naming the target.
  RawClient c(pgward.port(), 20s);
  Reply reply;
  ASSERT_TRUE(c.send(wire::startup(trust_login_params())));
  reply = read_reply(c);
  if (reply.errors().empty() && reply.signature.ends_with("Z(I)")) reply = send_query(c, "SELECT 1");
  const auto errors = reply.errors();
  ASSERT_EQ(errors.size(), 1u) << reply.signature;
  EXPECT_TRUE(errors[0].at('C') == "08006" || errors[0].at('C') == "57P03") << errors[0].at('C');
  EXPECT_NE(errors[0].at('M').find("127.0.0.1:" + std::to_string(pg_port())), std::string::npos)
      << errors[0].at('M');
  EXPECT_TRUE(pgward.running());
  EXPECT_EQ(http(pgward.admin_port(), "GET", "/health/ready").status, 503);

  start_postgres_server();
  EXPECT_TRUE(wait_until([&] { return Conn::connect(pgward.conninfo(), 5s).ok(); }, 20s))
      << "service did not resume once PostgreSQL was back";
  Conn conn = pgward.connect();
  EXPECT_EQ(query_value(conn, "SELECT 1"), "1");
}

// TPC-B-like tables under one prefix: 1 branch, 10 tellers, 1000 accounts, history.
struct Tpcb {
  std::string prefix = unique_name("tpcb");
  std::string branches = prefix + "_branches";
  std::string tellers = prefix + "_tellers";
  std::string accounts = prefix + "_accounts";
  std::string history = prefix + "_history";

  void create(PGconn* conn) const {
    exec(conn, "CREATE TABLE " + branches + " (bid int PRIMARY KEY, bbalance int NOT NULL)");
    exec(conn, "CREATE TABLE " + tellers + " (tid int PRIMARY KEY, bid int NOT NULL, tbalance int NOT NULL)");
    exec(conn,
         "CREATE TABLE " + accounts + " (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL)");
    exec(conn, "CREATE TABLE " + history + " (tid int, bid int, aid int, delta int, mtime timestamp)");
    exec(conn, "INSERT INTO " + branches + " VALUES (1, 0)");
    exec(conn, "INSERT INTO " + tellers + " SELECT g, 1, 0 FROM generate_series(1, 10) g");
    exec(conn, "INSERT INTO " + accounts + " SELECT g, 1, 0 FROM generate_series(1, 1000) g");
  }

  std::vector<std::string> transaction(int aid, int tid, int delta) const {
    const std::string a = std::to_string(aid);
    const std::string t = std::to_string(tid);
    const std::string d = std::to_string(delta);
    return {
        "BEGIN",
        "UPDATE " + accounts + " SET abalance = abalance + " + d + " WHERE aid = " + a,
        "SELECT abalance FROM " + accounts + " WHERE aid = " + a,
        "UPDATE " + tellers + " SET tbalance = tbalance + " + d + " WHERE tid = " + t,
        "UPDATE " + branches + " SET bbalance = bbalance + " + d + " WHERE bid = 1",
        "INSERT INTO " + history + " VALUES (" + t + ", 1, " + a + ", " + d + ", now())",
        "COMMIT",
    };
  }
};

// What the TPC-B clients saw.
struct TpcbCounts {
  std::atomic<int> acknowledged{0};  // COMMIT answered "COMMIT"
  std::atomic<int> unknown{0};       // COMMIT answered 08007
  std::mutex mutex;
  std::map<std::string, int> errors;     // by SQLSTATE; "connect <SQLSTATE>" for refused logins
  std::map<std::string, int> anomalies;  // errors without SQLSTATE, no answer, a COMMIT answered otherwise

  void error(const std::string& code) { add(errors, code); }
  void anomaly(const std::string& what, const std::string& message = "") {
    add(anomalies, what + (message.empty() ? "" : ": " + message.substr(0, message.find('\n'))));
  }
  static std::string summary(const std::map<std::string, int>& counts) {
    std::string out;
    for (const auto& [what, n] : counts) out += (out.empty() ? "" : ", ") + what + " x" + std::to_string(n);
    return out;
  }

 private:
  void add(std::map<std::string, int>& to, const std::string& key) {
    std::lock_guard lock(mutex);
    ++to[key];
  }
};

TEST(Faults, PostgresRestartDuringTpcbLoad) {
  constexpr int kClients = 6;
  PostgresRestarter restarter;
  Pgward pgward(faults_config(4, "wait_timeout = \"10s\"\n"));
  const Tpcb tpcb;
  {
    Conn setup = pgward.connect();
    ASSERT_TRUE(setup.ok());
    tpcb.create(setup);
    ASSERT_FALSE(HasFailure());
  }

  TpcbCounts counts;
  std::atomic<bool> stop{false};
  std::atomic<bool> restarted{false};
  std::atomic<int> clients_ok_after_restart{0};
  auto run_client = [&](int id) {
    std::mt19937 random(static_cast<unsigned>(id));
    Conn conn;
    bool ok_after_restart = false;
    while (!stop) {
      if (!conn.ok()) {
        conn = Conn::connect(pgward.conninfo(), 10s);
        if (!conn.ok()) {
          if (const std::string code = conn.connect_sqlstate(); code.empty()) {
            counts.anomaly("connect without SQLSTATE", conn.error());
          } else {
            counts.error("connect " + code);
          }
          std::this_thread::sleep_for(50ms);  // a client's pause before it tries again
          continue;
        }
      }
      const auto statements = tpcb.transaction(std::uniform_int_distribution(1, 1000)(random),
                                               std::uniform_int_distribution(1, 10)(random),
                                               std::uniform_int_distribution(-5000, 5000)(random));
      for (const auto& sql : statements) {
        const bool commit = sql == "COMMIT";
        auto r = exec_within(conn, sql, 15s);
        if (!r) {
          counts.anomaly(sql.substr(0, sql.find(' ')) + " got no answer");
          conn = Conn();
          break;
        }
        const auto status = PQresultStatus(r->get());
        if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
          if (!commit) continue;
          if (std::string(PQcmdStatus(r->get())) == "COMMIT") {
            ++counts.acknowledged;
            if (restarted && !ok_after_restart) {
              ok_after_restart = true;
              ++clients_ok_after_restart;
            }
          } else {
            counts.anomaly(std::string("COMMIT answered ") + PQcmdStatus(r->get()));
          }
          break;
        }
        std::string code = sqlstate(r->get());
        if (code.empty()) code = sqlstate_in_message(PQerrorMessage(conn));
        if (code.empty()) {
          counts.anomaly(sql.substr(0, sql.find(' ')) + " failed without SQLSTATE", PQerrorMessage(conn));
        } else {
          counts.error(code);
          if (commit && code == "08007") ++counts.unknown;
        }
        if (PQstatus(conn) != CONNECTION_OK) {
          conn = Conn();
        } else if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
          exec_within(conn, "ROLLBACK", 15s);
        }
        std::this_thread::sleep_for(20ms);  // a client's pause after an error, before the next transaction
        break;
      }
    }
  };
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) clients.emplace_back(run_client, i);

  // About 2 s of load before the restart and 3 s after it, each with enough commits to mean something.
  auto start = Clock::now();
  EXPECT_TRUE(wait_until([&] { return counts.acknowledged >= 100 && Clock::now() - start >= 2s; }, 30s))
      << "the load does not get going";
  stop_postgres_server("fast");
  start_postgres_server();
  restarted = true;
  start = Clock::now();
  const int at_restart = counts.acknowledged;
  EXPECT_TRUE(wait_until([&] { return clients_ok_after_restart == kClients; }, 30s))
      << clients_ok_after_restart << " of " << kClients << " clients committed after the restart";
  EXPECT_TRUE(
      wait_until([&] { return counts.acknowledged >= at_restart + 100 && Clock::now() - start >= 3s; }, 30s))
      << "the load did not pick up again after the restart";
  stop = true;
  for (auto& t : clients) t.join();

  EXPECT_TRUE(pgward.running());
  {
    std::lock_guard lock(counts.mutex);
    EXPECT_FALSE(counts.errors.empty()) << "nobody was told about the restart";
    EXPECT_TRUE(counts.anomalies.empty()) << TpcbCounts::summary(counts.anomalies);
    std::cerr << "errors during the restart: " << TpcbCounts::summary(counts.errors) << "; acknowledged "
              << counts.acknowledged << ", unknown " << counts.unknown << "\n";
  }

  Conn direct = connect_direct();
  ASSERT_TRUE(direct.ok());
  auto sum = [&](const std::string& column, const std::string& table) {
    return query_value(direct, "SELECT coalesce(sum(" + column + "), 0) FROM " + table);
  };
  const std::string accounts = sum("abalance", tpcb.accounts);
  EXPECT_EQ(sum("delta", tpcb.history), accounts);
  EXPECT_EQ(sum("bbalance", tpcb.branches), accounts);
  EXPECT_EQ(sum("tbalance", tpcb.tellers), accounts);
  const int history = std::stoi(count_rows(direct, tpcb.history));
  EXPECT_LE(counts.acknowledged, history) << "an acknowledged commit was lost";
  EXPECT_LE(history, counts.acknowledged + counts.unknown) << "an unacknowledged transaction was committed";
}

// ---- a client that does not read ----

TEST(Faults, MessageOverMaxBufferPerClientIsRefusedAndSessionGoesOn) {
  PgwardConfig config = faults_config(1);
  config.proxy += "max_buffer_per_client = \"64kB\"\n";
  Pgward pgward(config);
  LoggedIn c(pgward.port());
  const std::string big = "SELECT '" + std::string(100 * 1024, 'x') + "'";
  // Outside a block: one error, the session goes on.
  expect_one_error(send_query(c.client, big), {"54000"}, 'I');
  EXPECT_EQ(send_query(c.client, "SELECT 1").signature, "T D C(SELECT 1) Z(I)");
  // Inside a block the error aborts the transaction, as any error would on PostgreSQL.
  EXPECT_EQ(send_query(c.client, "BEGIN").signature, "C(BEGIN) Z(T)");
  expect_one_error(send_query(c.client, big), {"54000"}, 'E');
  expect_one_error(send_query(c.client, "SELECT 1"), {"25P02"}, 'E');
  EXPECT_EQ(send_query(c.client, "ROLLBACK").signature, "C(ROLLBACK) Z(I)");
  // A message within the bound is read whole and goes through.
  const std::string fits = "SELECT length('" + std::string(60 * 1024, 'y') + "')";
  EXPECT_EQ(send_query(c.client, fits).signature, "T D C(SELECT 1) Z(I)");
}

TEST(Faults, SlowReaderDoesNotGrowMemory) {
  Conn direct = connect_direct();
  ASSERT_TRUE(direct.ok());
  PgwardConfig config = faults_config(2);
  config.proxy += "max_buffer_per_client = \"256kB\"\n";
  Pgward pgward(config);
  Conn other = pgward.connect();
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(query_value(other, "SELECT 1"), "1");
  const long rss_before = rss_kib(pgward.pid());
  ASSERT_GT(rss_before, 0);

  // 100 MB of rows that the client never reads.
  LoggedIn slow(pgward.port());
  const std::string marker = unique_name("unread");
  ASSERT_TRUE(slow.client.send(
      wire::query("SELECT repeat('x', 1000) FROM generate_series(1, 100000) /* " + marker + " */")));
  const int pid = wait_for_backend_running(direct, marker);
  ASSERT_NE(pid, 0);
  // Back-pressure reaches PostgreSQL: its backend waits to write to pgward. A pgward that buffered the whole
  // result would let the query finish instead.
  const std::string wait_event =
      "SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = " + std::to_string(pid);
  EXPECT_TRUE(wait_until([&] { return query_value(direct, wait_event) == "ClientWrite"; }, 20s))
      << "the backend is not held back; state: "
      << query_value(direct, "SELECT state FROM pg_stat_activity WHERE pid = " + std::to_string(pid));

  long rss_max = rss_before;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(query_value(other, "SELECT 'other' FROM pg_sleep(0.1)"), "other") << "query " << i;
    rss_max = std::max(rss_max, rss_kib(pgward.pid()));
  }
  EXPECT_EQ(query_value(direct, wait_event), "ClientWrite");
  EXPECT_LT(rss_max - rss_before, 32 * 1024)
      << "pgward's RSS grew from " << rss_before << " KiB to " << rss_max;

  slow.client.reset();
  EXPECT_TRUE(wait_until([&] { return backend_running(direct, marker) == 0; }, 15s))
      << "the unread query still runs after its client left";
  EXPECT_EQ(query_value(other, "SELECT 'still fine'"), "still fine");
  EXPECT_EQ(run_concurrently(pgward, 4, "SELECT 1"), 4);
  EXPECT_TRUE(pgward.running());
}

}  // namespace
}  // namespace pgward::it
