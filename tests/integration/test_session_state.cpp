// Session state follows the client in transaction and statement modes: a SET, RESET, SET ROLE, set_config or
// a SET inside a DO block stays with the client that ran it (as PostgreSQL would keep it on a connection of
// its own, rollbacks and savepoints included) and never reaches another client of the same server. State that
// cannot be replayed elsewhere (temporary tables, LISTEN, session advisory locks, WITH HOLD cursors, LOAD)
// pins the client to its server until the state or the client is gone; the server is then reset before anyone
// else gets it. [pool] session_state = "error" refuses such statements, "ignore" leaves everything on the
// server.
#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

using Script = std::vector<std::string>;

PgwardConfig pool_config(const std::string& mode, int size, const std::string& extra = "") {
  PgwardConfig config;
  config.pool = "mode = \"" + mode + "\"\nsize = " + std::to_string(size) + "\n" + extra;
  return config;
}

PgwardConfig one_server(const std::string& extra = "") { return pool_config("transaction", 1, extra); }

// One server, and a client waiting for it gives up after a second.
PgwardConfig one_server_short_wait(const std::string& extra = "") {
  return one_server("wait_timeout = \"1s\"\n" + extra);
}

void run(PGconn* conn, const Script& script, bool expect_ok = true) {
  for (const std::string& sql : script) exec(conn, sql, expect_ok);
}

// What a connection of its own to PostgreSQL shows for `probe` after `script` (errors in it allowed).
std::string direct_value(const Script& script, const std::string& probe, const std::string& user = kTrustUser,
                         const std::string& extra_conninfo = "") {
  Conn direct = Conn::connect(direct_conninfo(user) + extra_conninfo);
  if (!direct.ok()) {
    ADD_FAILURE() << direct.error();
    return "";
  }
  run(direct, script, /*expect_ok=*/false);
  return query_value(direct, probe);
}

// Runs SQL on the test PostgreSQL directly, as the superuser, when it goes out of scope: declared before the
// Pgward, it runs after pgward has stopped.
class DirectCleanup {
 public:
  explicit DirectCleanup(Script sql) : sql_(std::move(sql)) {}
  DirectCleanup(const DirectCleanup&) = delete;
  DirectCleanup& operator=(const DirectCleanup&) = delete;
  ~DirectCleanup() {
    Conn direct = connect_direct();
    if (direct.ok()) run(direct, sql_, /*expect_ok=*/false);
  }

 private:
  Script sql_;
};

// A schema anyone may use; dropped at the end of the test.
struct TempSchema {
  std::string name = unique_name("ss_schema");
  TempSchema() {
    Conn direct = connect_direct();
    exec(direct, "CREATE SCHEMA " + name);
    exec(direct, "GRANT USAGE, CREATE ON SCHEMA " + name + " TO PUBLIC");
  }
  ~TempSchema() {
    Conn direct = connect_direct();
    exec(direct, "DROP SCHEMA IF EXISTS " + name + " CASCADE", false);
  }
};

// One pgward and two clients of it (as `user`): on a pool of size 1 they share its one server.
struct TwoClients {
  Pgward pgward;
  Conn a;
  Conn b;
  explicit TwoClients(const PgwardConfig& config, const std::string& user = kTrustUser)
      : pgward(config), a(pgward.connect(user)), b(pgward.connect(user)) {}
  bool ok() const { return a.ok() && b.ok(); }
};

std::string backend_pid(PGconn* conn) { return query_value(conn, "SELECT pg_backend_pid()"); }

// Runs the probe alone and (unless in statement mode) inside an explicit transaction; both must show
// `expected`.
void expect_probe(PGconn* conn, const std::string& probe, const std::string& expected, const std::string& who,
                  bool explicit_transaction = true) {
  SCOPED_TRACE(who);
  EXPECT_EQ(query_value(conn, probe), expected);
  if (!explicit_transaction) return;
  exec(conn, "BEGIN");
  EXPECT_EQ(query_value(conn, probe), expected);
  exec(conn, "COMMIT");
}

// Client A runs `set` once outside a transaction; over transactions interleaved with client B's on the same
// (only) server, A shows what a PostgreSQL connection of its own would show after `set`, B and a newcomer
// what a fresh connection shows.
void expect_setting_follows_client(const Script& set, const std::string& probe,
                                   const PgwardConfig& config = one_server(),
                                   const std::string& user = kTrustUser) {
  const std::string expected_a = direct_value(set, probe, user);
  const std::string expected_b = direct_value({}, probe, user);
  ASSERT_NE(expected_a, expected_b) << "the statements under test change nothing the probe shows";

  const bool tx = config.pool.find("\"statement\"") == std::string::npos;
  TwoClients clients(config, user);
  ASSERT_TRUE(clients.ok());
  auto& [pgward, a, b] = clients;
  EXPECT_EQ(backend_pid(a), backend_pid(b)) << "a pool of size 1 has one server";
  run(a, set);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    expect_probe(a, probe, expected_a, "the client that set it", tx);
    expect_probe(b, probe, expected_b, "another client of the same server", tx);
  }
  Conn newcomer = pgward.connect(user);
  ASSERT_TRUE(newcomer.ok());
  expect_probe(newcomer, probe, expected_b, "a client connecting afterwards", tx);
  expect_probe(a, probe, expected_a, "the client that set it, at the end", tx);
}

// ---- each kind of replayable setting ----

TEST(SessionState, SearchPathFollowsTheClient) {
  TempSchema schema;
  expect_setting_follows_client({"SET search_path = " + schema.name + ", public"}, "SHOW search_path");
}

TEST(SessionState, SetSchemaFollowsTheClient) {
  TempSchema schema;
  expect_setting_follows_client({"SET SCHEMA '" + schema.name + "'"}, "SHOW search_path");
}

TEST(SessionState, SetRoleFollowsTheClient) {
  const std::string role = unique_name("ss_role");
  DirectCleanup drop({"DROP ROLE IF EXISTS " + role});
  {
    Conn direct = connect_direct();
    exec(direct, "CREATE ROLE " + role + " NOLOGIN");
    exec(direct, "GRANT " + role + " TO " + std::string(kTrustUser));
  }
  expect_setting_follows_client({"SET ROLE " + role}, "SELECT current_user");
}

TEST(SessionState, SetSessionAuthorizationFollowsTheClient) {
  // Only a superuser may change its session user: both clients log in as postgres.
  expect_setting_follows_client({"SET SESSION AUTHORIZATION " + std::string(kTrustUser)},
                                "SELECT session_user || ' ' || current_user", one_server(), "postgres");
}

TEST(SessionState, SessionAuthorizationLeftBehindGoesFirstAtTheNextLogin) {
  // A superuser sets a superuser-only setting, then becomes an ordinary user, and leaves. The next client's
  // login needs a server (its options differ from the defaults): the session authorization must be put back
  // before the superuser-only setting is RESET, or the login fails with 42501.
  Pgward pgward(one_server());
  {
    Conn a = pgward.connect("postgres");
    ASSERT_TRUE(a.ok()) << a.error();
    exec(a, "SET lo_compat_privileges = on");
    exec(a, "SET SESSION AUTHORIZATION " + std::string(kTrustUser));
    EXPECT_EQ(query_value(a, "SELECT session_user"), kTrustUser);
  }
  Conn b = Conn::connect(pgward.conninfo("postgres") + " options='-c DateStyle=German'");
  ASSERT_TRUE(b.ok()) << b.error();
  EXPECT_EQ(query_value(b, "SELECT session_user || ' ' || current_setting('lo_compat_privileges')"),
            "postgres off");
}

TEST(SessionState, StatementTimeoutFollowsTheClient) {
  expect_setting_follows_client({"SET statement_timeout = '4321ms'"}, "SHOW statement_timeout");
  // And it takes effect for that client only.
  TwoClients clients(one_server());
  ASSERT_TRUE(clients.ok());
  auto& [pgward, a, b] = clients;
  exec(a, "SET statement_timeout = '200ms'");
  EXPECT_EQ(exec_sqlstate(b, "SELECT pg_sleep(0.5)"), "") << PQerrorMessage(b);
  EXPECT_EQ(exec_sqlstate(a, "SELECT pg_sleep(0.5)"), "57014");
  EXPECT_EQ(exec_sqlstate(b, "SELECT pg_sleep(0.5)"), "") << PQerrorMessage(b);
}

TEST(SessionState, CustomSettingFollowsTheClient) {
  // A custom setting once defined on a server reads as '' there, never NULL again: both mean "not set".
  expect_setting_follows_client(
      {"SET app.tenant = 'A'"},
      "SELECT coalesce(nullif(current_setting('app.tenant', true), ''), '<unset>')");
}

TEST(SessionState, SetTimeZoneFollowsTheClient) {
  expect_setting_follows_client(
      {"SET TIME ZONE 'America/Lima'"},
      "SELECT current_setting('TimeZone') || ' ' || '2024-03-01 12:00+00'::timestamptz");
}

TEST(SessionState, SetNamesFollowsTheClient) {
  expect_setting_follows_client({"SET NAMES 'LATIN1'"}, "SHOW client_encoding");
}

TEST(SessionState, SetConfigFollowsTheClient) {
  expect_setting_follows_client({"SELECT set_config('work_mem', '7MB', false)"}, "SHOW work_mem");
}

TEST(SessionState, SetInsideDoBlockFollowsTheClient) {
  TempSchema schema;
  expect_setting_follows_client(
      {"DO $$BEGIN SET search_path = " + schema.name + ", public; END$$",
       "DO $$ BEGIN PERFORM set_config('lock_timeout', '1234ms', false); END $$"},
      "SELECT current_setting('search_path') || ' / ' || current_setting('lock_timeout')");
}

// ---- transactions: what a rollback undoes is not kept, what commits is ----

constexpr const char* kTxProbe =
    "SELECT concat_ws(' | ', current_setting('search_path'), current_setting('work_mem'), "
    "current_setting('statement_timeout'))";

// Client A runs `script`; afterwards it shows what a connection of its own to PostgreSQL shows after the same
// script, and B, on the same server, what a fresh connection shows.
void expect_script_like_postgres(const Script& script) {
  const std::string expected_a = direct_value(script, kTxProbe);
  const std::string expected_b = direct_value({}, kTxProbe);
  TwoClients clients(one_server());
  ASSERT_TRUE(clients.ok());
  auto& [pgward, a, b] = clients;
  run(a, script, /*expect_ok=*/false);
  EXPECT_EQ(PQtransactionStatus(a), PQTRANS_IDLE);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    expect_probe(b, kTxProbe, expected_b, "another client of the same server");
    expect_probe(a, kTxProbe, expected_a, "the client that ran the script");
  }
}

TEST(SessionState, SetInRolledBackTransactionIsNotKept) {
  const Script script = {"BEGIN", "SET search_path = rolled_back", "SET work_mem = '5MB'", "ROLLBACK",
                         // The same in one simple query, and in a transaction that failed.
                         "BEGIN; SET statement_timeout = '3s'; ROLLBACK", "BEGIN", "SET work_mem = '6MB'",
                         "SELECT 1/0", "ROLLBACK"};
  EXPECT_EQ(direct_value(script, kTxProbe), direct_value({}, kTxProbe));
  expect_script_like_postgres(script);
}

TEST(SessionState, SetRolledBackToSavepointIsNotKept) {
  const Script script = {"BEGIN",
                         "SET work_mem = '5MB'",
                         "SAVEPOINT s",
                         "SET search_path = rolled_back_to_savepoint",
                         "ROLLBACK TO s",
                         "COMMIT",
                         "BEGIN",
                         "SAVEPOINT s",
                         "SET statement_timeout = '3s'",
                         "SELECT 1/0",
                         "ROLLBACK TO s",
                         "COMMIT"};
  const std::string expected = direct_value(script, kTxProbe);
  EXPECT_NE(expected.find("5MB"), std::string::npos) << expected;
  EXPECT_EQ(expected.find("rolled_back_to_savepoint"), std::string::npos) << expected;
  EXPECT_EQ(expected.find("3s"), std::string::npos) << expected;
  expect_script_like_postgres(script);
}

TEST(SessionState, SetInCommittedTransactionIsKept) {
  const Script script = {"BEGIN",
                         "SET search_path = committed",
                         "SAVEPOINT s",
                         "SET work_mem = '5MB'",
                         "RELEASE s",
                         "COMMIT",
                         "BEGIN; SET statement_timeout = '3s'; COMMIT"};
  EXPECT_EQ(direct_value(script, kTxProbe), "committed | 5MB | 3s");
  expect_script_like_postgres(script);
}

// ---- RESET goes back to the client's connection value ----

constexpr const char* kResetProbe =
    "SELECT concat_ws(' | ', current_setting('search_path'), current_setting('DateStyle'), "
    "current_setting('statement_timeout'))";
const std::string kOptionsA =
    " options='-c search_path=s1 -c DateStyle=Postgres,MDY -c statement_timeout=4321'";
const std::string kOptionsB = " options='-c search_path=s2 -c DateStyle=German -c statement_timeout=999'";
const Script kSetAll = {"SET search_path = elsewhere", "SET DateStyle = 'ISO, DMY'",
                        "SET statement_timeout = 7777"};

// A (connected with kOptionsA) sets everything, then RESETs one setting, then all; after each step it shows
// what a PostgreSQL connection given the same options shows after the same statements. `between` runs after
// each of A's steps (another client's turn).
void expect_reset_to_connection_values(const Pgward& pgward, const std::function<void()>& between) {
  Conn a = Conn::connect(pgward.conninfo() + kOptionsA);
  ASSERT_TRUE(a.ok()) << a.error();
  EXPECT_EQ(query_value(a, kResetProbe), direct_value({}, kResetProbe, kTrustUser, kOptionsA));
  Script done;
  for (const Script& step : {kSetAll, Script{"RESET search_path"}, Script{"RESET ALL"}, kSetAll,
                             Script{"RESET DateStyle", "RESET statement_timeout"}}) {
    run(a, step);
    done.insert(done.end(), step.begin(), step.end());
    between();
    SCOPED_TRACE("after " + done.back());
    expect_probe(a, kResetProbe, direct_value(done, kResetProbe, kTrustUser, kOptionsA), "client A");
  }
  EXPECT_EQ(direct_value({"RESET ALL"}, kResetProbe, kTrustUser, kOptionsA), "s1 | Postgres, MDY | 4321ms");
}

TEST(SessionState, ResetReturnsToConnectionValuesInTransactionMode) {
  Pgward pgward(one_server());
  Conn b = Conn::connect(pgward.conninfo() + kOptionsB);
  ASSERT_TRUE(b.ok()) << b.error();
  const std::string expected_b = direct_value({}, kResetProbe, kTrustUser, kOptionsB);
  expect_reset_to_connection_values(pgward, [&] {
    expect_probe(b, kResetProbe, expected_b, "client B");
    exec(b, "RESET ALL");
    expect_probe(b, kResetProbe, expected_b, "client B after its RESET ALL");
  });
}

TEST(SessionState, ResetReturnsToConnectionValuesInSessionMode) {
  Pgward pgward(pool_config("session", 1));
  {
    // The only server first serves a client with other connection values.
    Conn before = Conn::connect(pgward.conninfo() + kOptionsB);
    ASSERT_TRUE(before.ok()) << before.error();
    exec(before, "SET work_mem = '9MB'");
    EXPECT_EQ(query_value(before, kResetProbe), direct_value({}, kResetProbe, kTrustUser, kOptionsB));
  }
  expect_reset_to_connection_values(pgward, [] {});
}

// ---- unreplayable state pins the client to its server ----

// The value of the sample of `name` whose labels hold every one of `labels`; nullopt when there is none.
std::optional<double> labelled_sample(const std::string& exposition, const std::string& name,
                                      const std::vector<std::string>& labels) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with(name + "{")) continue;
    const std::string label_set = line.substr(0, line.find('}') + 1);
    bool all = true;
    for (const std::string& l : labels) all = all && label_set.find(l) != std::string::npos;
    if (all) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

// pgward_clients_pinned of kTrustUser's pool on kDatabase for `reason` (0 when absent).
double pinned_clients(int admin_port, const std::string& reason) {
  return labelled_sample(http(admin_port, "GET", "/metrics").body, "pgward_clients_pinned",
                         {"database=\"" + std::string(kDatabase) + "\"",
                          "user=\"" + std::string(kTrustUser) + "\"", "reason=\"" + reason + "\""})
      .value_or(0);
}

double pins_total(int admin_port, const std::string& reason) {
  return labelled_sample(http(admin_port, "GET", "/metrics").body, "pgward_pins_total",
                         {"reason=\"" + reason + "\""})
      .value_or(0);
}

int occurrences(const std::string& text, const std::string& part) {
  int n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++n;
  return n;
}

// Waits until pgward_clients_pinned for `reason` is `pinned` and /api/clients lists that many clients pinned
// for it and `unpinned` ones with "pinned":null (both move just after the answer went out); fails after 2 s.
void expect_pins(int admin_port, const std::string& reason, int pinned, int unpinned) {
  double gauge = -1;
  std::string clients;
  const bool reached = wait_until(
      [&] {
        gauge = pinned_clients(admin_port, reason);
        clients = http(admin_port, "GET", "/api/clients").body;
        return gauge == pinned && occurrences(clients, "\"pinned\":\"" + reason + "\"") == pinned &&
               occurrences(clients, "\"pinned\":null") == unpinned;
      },
      2s);
  EXPECT_TRUE(reached) << "pgward_clients_pinned{reason=\"" << reason << "\"} " << gauge << ", expected "
                       << pinned << " pinned and " << unpinned
                       << " unpinned clients; /api/clients: " << clients;
}

// While A is pinned (idle, outside a transaction), B waits for the only server and gives up with 53300
// after wait_timeout (1 s).
void expect_server_held(PGconn* b) {
  const auto start = Clock::now();
  EXPECT_EQ(exec_sqlstate(b, "SELECT 'b got the server'"), "53300") << PQerrorMessage(b);
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, 800ms) << "gave up before wait_timeout";
  EXPECT_LE(waited, 10s);
}

struct Pin {
  std::string reason;
  std::string pin;    // run by A outside a transaction: leaves state on its server
  std::string alive;  // A's query showing "1" while the state lives
  Script unpins;      // each ends the pin (A pins again before the next)
  std::string gone;   // B's query showing "0" once A left and its server was reset
};

// A pins and unpins with each of `unpins`, then pins once more and disconnects; B sees the server held while
// A is pinned, free otherwise, and none of A's state when it gets the server after A left.
void expect_pin_cycle(const Pin& p) {
  TwoClients clients(one_server_short_wait());
  ASSERT_TRUE(clients.ok());
  const int admin = clients.pgward.admin_port();
  Conn& a = clients.a;
  Conn& b = clients.b;
  const std::string server = backend_pid(b);
  expect_pins(admin, p.reason, 0, 2);

  double pins = 0;
  auto pin = [&] {
    exec(a, p.pin);
    ++pins;
    expect_pins(admin, p.reason, 1, 1);
    EXPECT_EQ(pins_total(admin, p.reason), pins);
    expect_server_held(b);
    // A keeps its server, and its state, over its next transactions.
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(query_value(a, p.alive), "1");
      exec(a, "BEGIN");
      EXPECT_EQ(query_value(a, p.alive), "1");
      exec(a, "COMMIT");
    }
    EXPECT_EQ(pinned_clients(admin, p.reason), 1);
  };
  for (const std::string& unpin : p.unpins) {
    SCOPED_TRACE(unpin);
    pin();
    exec(a, unpin);
    expect_pins(admin, p.reason, 0, 2);
    EXPECT_EQ(query_value(b, "SELECT 'b got the server'"), "b got the server") << "unpinned, yet still held";
    EXPECT_EQ(query_value(a, p.alive), "0");
  }
  {
    SCOPED_TRACE("pinned client disconnects");
    pin();
    a = Conn();
    expect_pins(admin, p.reason, 0, 1);
    EXPECT_EQ(query_value(b, "SELECT 'b got the server'"), "b got the server");
    EXPECT_EQ(backend_pid(b), server) << "the server was closed instead of reset";
    EXPECT_EQ(query_value(b, p.gone), "0") << "the pinned client's state survived it";
    EXPECT_EQ(pins_total(admin, p.reason), pins);
  }
}

TEST(SessionState, TempTablePinsUntilTheClientLeaves) {
  const std::string table = unique_name("ss_temp");
  expect_pin_cycle({.reason = "temp",
                    .pin = "CREATE TEMP TABLE " + table + " (n int)",
                    .alive = "SELECT count(*) FROM pg_class WHERE relname = '" + table +
                             "' AND relnamespace = pg_my_temp_schema()",
                    .unpins = {},
                    .gone = "SELECT count(*) FROM pg_class WHERE relname = '" + table + "'"});
}

TEST(SessionState, ListenPinsUntilUnlisten) {
  const std::string channel = unique_name("ss_chan");
  expect_pin_cycle({.reason = "listen",
                    .pin = "LISTEN " + channel,
                    .alive = "SELECT count(*) FROM pg_listening_channels() c WHERE c = '" + channel + "'",
                    .unpins = {"UNLISTEN *"},
                    .gone = "SELECT count(*) FROM pg_listening_channels()"});
}

TEST(SessionState, AdvisoryLockPinsUntilUnlocked) {
  const std::string key = "770077";
  const std::string held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = " + key;
  expect_pin_cycle({.reason = "advisory_lock",
                    .pin = "SELECT pg_advisory_lock(" + key + ")",
                    .alive = held + " AND pid = pg_backend_pid()",
                    .unpins = {"SELECT pg_advisory_unlock(" + key + ")", "SELECT pg_advisory_unlock_all()"},
                    .gone = held});
}

TEST(SessionState, WithHoldCursorPinsUntilClosed) {
  expect_pin_cycle({.reason = "cursor",
                    .pin = "DECLARE ss_cursor CURSOR WITH HOLD FOR SELECT generate_series(1, 10)",
                    .alive = "SELECT count(*) FROM pg_cursors WHERE name = 'ss_cursor'",
                    .unpins = {"CLOSE ss_cursor"},
                    .gone = "SELECT count(*) FROM pg_cursors"});
}

TEST(SessionState, WithHoldCursorKeepsItsPositionAcrossTransactions) {
  Pgward pgward(pool_config("transaction", 2));
  Conn a = pgward.connect();
  Conn other = pgward.connect();
  ASSERT_TRUE(a.ok() && other.ok());
  exec(a, "DECLARE ss_cursor CURSOR WITH HOLD FOR SELECT generate_series(1, 10)");
  for (int i = 1; i <= 5; ++i) {
    EXPECT_EQ(query_value(other, "SELECT count(*) FROM pg_cursors"), "0");
    EXPECT_EQ(query_value(a, "FETCH 1 FROM ss_cursor"), std::to_string(i));
  }
  exec(a, "CLOSE ss_cursor");
}

TEST(SessionState, TransactionScopedAdvisoryLockDoesNotPin) {
  TwoClients clients(one_server_short_wait());
  ASSERT_TRUE(clients.ok());
  auto& [pgward, a, b] = clients;
  exec(a, "BEGIN");
  exec(a, "SELECT pg_advisory_xact_lock(770078)");
  exec(a, "COMMIT");
  exec(a, "SELECT pg_advisory_xact_lock(770078)");
  EXPECT_EQ(pinned_clients(pgward.admin_port(), "advisory_lock"), 0);
  EXPECT_EQ(query_value(b, "SELECT 'b got the server'"), "b got the server");
}

TEST(SessionState, TempTableDroppedAtCommitDoesNotPin) {
  // What pins is what is still there when the transaction has ended: a table ON COMMIT DROP is not, and
  // neither is one created and dropped again.
  TwoClients clients(one_server_short_wait());
  ASSERT_TRUE(clients.ok());
  auto& [pgward, a, b] = clients;
  exec(a, "BEGIN");
  exec(a, "CREATE TEMP TABLE ss_gone (x int) ON COMMIT DROP");
  exec(a, "INSERT INTO ss_gone VALUES (1)");
  exec(a, "COMMIT");
  exec(a, "CREATE TEMP TABLE ss_dropped (x int); DROP TABLE ss_dropped");
  EXPECT_EQ(pinned_clients(pgward.admin_port(), "temp"), 0);
  EXPECT_EQ(query_value(b, "SELECT 'b got the server'"), "b got the server");
  // And one that stays does pin.
  exec(a, "CREATE TEMP TABLE ss_kept (x int)");
  expect_pins(pgward.admin_port(), "temp", 1, 1);
  EXPECT_EQ(exec_sqlstate(b, "SELECT 1"), "53300");
}

TEST(SessionState, PinnedListenerReceivesNotifications) {
  Pgward pgward(one_server_short_wait());
  Conn a = pgward.connect();
  ASSERT_TRUE(a.ok());
  const std::string channel = unique_name("ss_notify");
  exec(a, "LISTEN " + channel);
  Conn direct = connect_direct();
  exec(direct, "NOTIFY " + channel + ", 'hello'");
  std::string payload;
  EXPECT_TRUE(wait_until(
      [&] {
        exec(a, "SELECT 1");
        PQconsumeInput(a);
        if (PGnotify* n = PQnotifies(a)) {
          payload = n->extra;
          PQfreemem(n);
        }
        return !payload.empty();
      },
      5s));
  EXPECT_EQ(payload, "hello");
}

// ---- [pool] session_state ----

TEST(SessionState, ErrorModeRefusesUnreplayableStatementsAndStillFollowsSets) {
  TempSchema schema;
  TwoClients clients(one_server_short_wait("session_state = \"error\"\n"));
  ASSERT_TRUE(clients.ok());
  auto& [pgward, a, b] = clients;
  const std::string table = unique_name("ss_refused");
  const std::string channel = unique_name("ss_refused");
  struct Refused {
    std::string sql;
    std::string none_left;  // "0" when the statement had no effect
  };
  const std::vector<Refused> refused = {
      {"CREATE TEMP TABLE " + table + " (n int)",
       "SELECT count(*) FROM pg_class WHERE relname = '" + table + "'"},
      {"LISTEN " + channel, "SELECT count(*) FROM pg_listening_channels()"},
      {"SELECT pg_advisory_lock(770079)",
       "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 770079"},
      {"DECLARE ss_refused CURSOR WITH HOLD FOR SELECT 1", "SELECT count(*) FROM pg_cursors"},
      {"LOAD 'auto_explain'", "SELECT 0"},
  };
  for (const Refused& r : refused) {
    SCOPED_TRACE(r.sql);
    Result result = exec(a, r.sql, /*expect_ok=*/false);
    EXPECT_EQ(sqlstate(result.get()), "0A000") << PQerrorMessage(a);
    EXPECT_NE(std::string(PQresultErrorMessage(result.get())).find(r.sql), std::string::npos)
        << PQresultErrorMessage(result.get());
    EXPECT_EQ(PQtransactionStatus(a), PQTRANS_IDLE);
    EXPECT_EQ(query_value(a, r.none_left), "0");
    EXPECT_EQ(query_value(b, "SELECT 'b got the server'"), "b got the server");
  }
  for (const char* reason : {"temp", "listen", "advisory_lock", "cursor", "load"})
    EXPECT_EQ(pinned_clients(pgward.admin_port(), reason), 0) << reason;

  // SETs still follow the client.
  exec(a, "SET search_path = " + schema.name);
  const std::string fresh = direct_value({}, "SHOW search_path");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(query_value(b, "SHOW search_path"), fresh);
    EXPECT_EQ(query_value(a, "SHOW search_path"), schema.name);
  }
}

TEST(SessionState, IgnoreModeLeavesStateOnTheServer) {
  TempSchema schema;
  TwoClients clients(one_server_short_wait("session_state = \"ignore\"\n"));
  ASSERT_TRUE(clients.ok());
  auto& [pgward, a, b] = clients;
  exec(a, "SET search_path = " + schema.name);
  EXPECT_EQ(query_value(b, "SHOW search_path"), schema.name) << "the old behaviour: B sees A's setting";
  // Nothing pins: a temp table stays on the server and B gets that server at once.
  const std::string table = unique_name("ss_ignored");
  exec(a, "CREATE TEMP TABLE " + table + " (n int)");
  EXPECT_EQ(query_value(b, "SELECT count(*) FROM pg_class WHERE relname = '" + table + "'"), "1");
  EXPECT_EQ(pinned_clients(pgward.admin_port(), "temp"), 0);
}

// ---- shared statements after DDL ----

TEST(SessionState, SharedStatementPreparedAfterAlterTableGetsTheNewColumns) {
  const std::string table = unique_name("ss_alter");
  DirectCleanup drop({"DROP TABLE IF EXISTS " + table});
  Conn direct = connect_direct();
  exec(direct, "CREATE TABLE " + table + " (id int); INSERT INTO " + table + " VALUES (1), (2)");
  exec(direct, "GRANT ALL ON " + table + " TO PUBLIC");
  const std::string sql = "SELECT * FROM " + table;

  TwoClients clients(one_server());
  ASSERT_TRUE(clients.ok());
  auto& [pgward, a, b] = clients;
  Result prepared(PQprepare(a, "a_stmt", sql.c_str(), 0, nullptr));
  ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK) << PQerrorMessage(a);
  Result ran(PQexecPrepared(a, "a_stmt", 0, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(ran.get()), PGRES_TUPLES_OK) << PQerrorMessage(a);
  EXPECT_EQ(PQnfields(ran.get()), 1);

  exec(direct, "ALTER TABLE " + table + " ADD COLUMN c2 int");

  // B prepares the same text under its own name after the ALTER, on the same server.
  Result b_prepared(PQprepare(b, "b_stmt", sql.c_str(), 0, nullptr));
  ASSERT_EQ(PQresultStatus(b_prepared.get()), PGRES_COMMAND_OK) << PQerrorMessage(b);
  for (int i = 0; i < 2; ++i) {
    Result b_ran(PQexecPrepared(b, "b_stmt", 0, nullptr, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(b_ran.get()), PGRES_TUPLES_OK)
        << sqlstate(b_ran.get()) << " " << PQerrorMessage(b);
    EXPECT_EQ(PQntuples(b_ran.get()), 2);
    EXPECT_EQ(PQnfields(b_ran.get()), 2);
  }
  // A's own statement may be answered either way; its session goes on.
  Result a_again(PQexecPrepared(a, "a_stmt", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(query_value(a, "SELECT 'a goes on'"), "a goes on");
}

// ---- workloads ----

// Collects what went wrong in client threads: a count and the first few descriptions.
class Failures {
 public:
  void add(const std::string& what) {
    std::lock_guard lock(mutex_);
    if (++count_ <= 5) first_ += what + "\n";
  }
  int count() const {
    std::lock_guard lock(mutex_);
    return count_;
  }
  std::string first() const {
    std::lock_guard lock(mutex_);
    return first_;
  }

 private:
  mutable std::mutex mutex_;
  int count_ = 0;
  std::string first_;
};

// A value of conn's query, or the error it got (never a failure of the test by itself: threads report).
std::string value_or_error(PGconn* conn, const std::string& sql) {
  Result r(PQexec(conn, sql.c_str()));
  if (PQresultStatus(r.get()) == PGRES_TUPLES_OK && PQntuples(r.get()) > 0) return PQgetvalue(r.get(), 0, 0);
  if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) return "<ok>";
  return "<error " + sqlstate(r.get()) + ": " + PQerrorMessage(conn) + ">";
}

void expect_value(Failures& failures, PGconn* conn, const std::string& sql, const std::string& expected,
                  const std::string& who) {
  const std::string got = value_or_error(conn, sql);
  if (got != expected) failures.add(who + ": " + sql + " gave " + got + ", expected " + expected);
}

void join_all(std::vector<std::thread>& threads) {
  for (auto& t : threads) t.join();
}

TEST(SessionState, MultiTenantRowLevelSecurityNeverSeesAnotherTenant) {
  const std::string table = unique_name("ss_rls");
  const std::string owner = unique_name("ss_owner");
  DirectCleanup drop({"DROP TABLE IF EXISTS " + table, "DROP ROLE IF EXISTS " + owner});
  {
    Conn direct = connect_direct();
    run(direct,
        {"CREATE ROLE " + owner + " NOLOGIN", "CREATE TABLE " + table + " (tenant text, n int)",
         "ALTER TABLE " + table + " OWNER TO " + owner, "ALTER TABLE " + table + " ENABLE ROW LEVEL SECURITY",
         "ALTER TABLE " + table + " FORCE ROW LEVEL SECURITY",
         "CREATE POLICY by_tenant ON " + table +
             " USING (tenant = current_setting('app.tenant')) WITH CHECK (tenant = "
             "current_setting('app.tenant'))",
         "GRANT SELECT, INSERT ON " + table + " TO " + std::string(kTrustUser)});
  }
  constexpr int kTenants = 20;
  constexpr int kRows = 20;
  // Clients log in as kTrustUser, no superuser: the policy applies to them.
  Pgward pgward(pool_config("transaction", 4, "wait_timeout = \"30s\"\n"));
  Failures failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < kTenants; ++t) {
    threads.emplace_back([&, t] {
      const std::string tenant = "t" + std::to_string(t);
      Conn conn = pgward.connect();
      if (!conn.ok()) return failures.add(tenant + ": " + conn.error());
      expect_value(failures, conn, "SET app.tenant = '" + tenant + "'", "<ok>", tenant);
      for (int i = 1; i <= kRows; ++i) {
        const bool explicit_tx = i % 2 == 0;
        if (explicit_tx) expect_value(failures, conn, "BEGIN", "<ok>", tenant);
        expect_value(
            failures, conn,
            "INSERT INTO " + table + " VALUES (current_setting('app.tenant'), " + std::to_string(i) + ")",
            "<ok>", tenant);
        if (explicit_tx) expect_value(failures, conn, "COMMIT", "<ok>", tenant);
        expect_value(failures, conn, "SELECT count(*) FROM " + table + " WHERE tenant <> '" + tenant + "'",
                     "0", tenant);
        expect_value(failures, conn, "SELECT count(*) FROM " + table + " WHERE tenant = '" + tenant + "'",
                     std::to_string(i), tenant);
      }
    });
  }
  join_all(threads);
  EXPECT_EQ(failures.count(), 0) << failures.first();
  Conn direct = connect_direct();
  Result counts = exec(direct, "SELECT tenant, count(*) FROM " + table + " GROUP BY tenant ORDER BY tenant");
  EXPECT_EQ(PQntuples(counts.get()), kTenants);
  for (int i = 0; i < PQntuples(counts.get()); ++i)
    EXPECT_EQ(std::string(PQgetvalue(counts.get(), i, 1)), std::to_string(kRows))
        << PQgetvalue(counts.get(), i, 0);
}

// Clients of two kinds share a pool smaller than their number: each kind runs `at_connect` first, then checks
// `probe` over several transactions against what a PostgreSQL connection of its own shows after `at_connect`.
struct ClientKind {
  Script at_connect;
  int clients = 0;
};

void expect_kinds_keep_their_settings(const std::vector<ClientKind>& kinds, int pool_size,
                                      const std::string& probe) {
  Pgward pgward(pool_config("transaction", pool_size, "wait_timeout = \"30s\"\n"));
  Failures failures;
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < kinds.size(); ++k) {
    const std::string expected = direct_value(kinds[k].at_connect, probe);
    for (int c = 0; c < kinds[k].clients; ++c) {
      threads.emplace_back([&, k, c, expected] {
        const std::string who = "kind " + std::to_string(k) + " client " + std::to_string(c);
        Conn conn = pgward.connect();
        if (!conn.ok()) return failures.add(who + ": " + conn.error());
        for (const std::string& sql : kinds[k].at_connect) expect_value(failures, conn, sql, "<ok>", who);
        for (int i = 0; i < 6; ++i) {
          expect_value(failures, conn, "BEGIN", "<ok>", who);
          expect_value(failures, conn, probe, expected, who);
          expect_value(failures, conn, "SELECT pg_sleep(0.005)", "", who);
          expect_value(failures, conn, probe, expected, who);
          expect_value(failures, conn, "COMMIT", "<ok>", who);
          expect_value(failures, conn, probe, expected, who);
        }
      });
    }
  }
  join_all(threads);
  EXPECT_EQ(failures.count(), 0) << failures.first();
}

TEST(SessionState, DjangoStyleTimeZoneAtConnect) {
  expect_kinds_keep_their_settings({{.at_connect = {"SET TIME ZONE 'UTC'"}, .clients = 4},
                                    {.at_connect = {"SET TIME ZONE 'Asia/Tokyo'"}, .clients = 4}},
                                   2, "SELECT current_setting('TimeZone') || ' ' || to_char(now(), 'TZH')");
}

TEST(SessionState, RailsStyleSettingsAtConnect) {
  expect_kinds_keep_their_settings(
      {{.at_connect = {"SET client_min_messages TO warning", "SET standard_conforming_strings = on",
                       "SET intervalstyle = iso_8601"},
        .clients = 4},
       {.at_connect = {"SET client_min_messages TO error", "SET intervalstyle = sql_standard"}, .clients = 2},
       {.at_connect = {}, .clients = 2}},
      3,
      "SELECT concat_ws(' | ', current_setting('client_min_messages'), "
      "current_setting('standard_conforming_strings'), current_setting('IntervalStyle'), '1 day 2 "
      "hours'::interval)");
}

TEST(SessionState, RailsStyleMigrationLockThroughSmallPool) {
  const std::string table = unique_name("ss_migrations");
  DirectCleanup drop({"DROP TABLE IF EXISTS " + table});
  {
    Conn direct = connect_direct();
    exec(direct, "CREATE TABLE " + table + " (version int)");
    exec(direct, "GRANT ALL ON " + table + " TO PUBLIC");
  }
  Pgward pgward(pool_config("transaction", 2, "wait_timeout = \"10s\"\n"));
  const int admin = pgward.admin_port();
  constexpr const char* kKey = "5432100";  // what a migration framework derives from the database name
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> ready{0};
  Failures failures;
  std::vector<std::thread> processes;
  for (int p = 0; p < 2; ++p) {
    processes.emplace_back([&, p] {
      const std::string who = "process " + std::to_string(p);
      // lock_timeout bounds the wait for the lock should it never come.
      Conn conn = Conn::connect(pgward.conninfo() + " options='-c lock_timeout=8000'");
      if (!conn.ok()) return failures.add(who + ": " + conn.error());
      ++ready;
      while (ready.load() < 2) std::this_thread::yield();
      expect_value(failures, conn, std::string("SELECT pg_advisory_lock(") + kKey + ")", "", who);
      if (inside.fetch_add(1) != 0) ++overlaps;
      expect_value(failures, conn, "INSERT INTO " + table + " VALUES (" + std::to_string(p) + ")", "<ok>",
                   who);
      std::this_thread::sleep_for(200ms);
      if (inside.load() != 1) ++overlaps;
      inside.fetch_sub(1);
      expect_value(failures, conn, std::string("SELECT pg_advisory_unlock(") + kKey + ")", "t", who);
    });
  }
  join_all(processes);
  EXPECT_EQ(failures.count(), 0) << failures.first();
  EXPECT_EQ(overlaps.load(), 0);
  Conn direct = connect_direct();
  EXPECT_EQ(query_value(direct, "SELECT count(*) FROM " + table), "2");
  EXPECT_EQ(query_value(
                direct,
                std::string("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = ") + kKey),
            "0");
  EXPECT_TRUE(wait_until([&] { return pinned_clients(admin, "advisory_lock") == 0; }, 5s));
  EXPECT_EQ(pins_total(admin, "advisory_lock"), 2);
}

// ---- statement mode ----

TEST(SessionState, StatementModeSetFollowsTheClient) {
  TempSchema schema;
  expect_setting_follows_client({"SET search_path = " + schema.name + ", public", "SET app.tenant = 'A'"},
                                "SELECT current_setting('search_path') || ' / ' || "
                                "coalesce(nullif(current_setting('app.tenant', true), ''), '<unset>')",
                                pool_config("statement", 1));
}

TEST(SessionState, StatementModeRefusedBlockLeavesNoSessionLockBehind) {
  // A transaction block is refused in statement mode and rolled back; a session advisory lock taken in it
  // outlives the ROLLBACK, so that server must not serve the next client.
  TwoClients clients(pool_config("statement", 1));
  ASSERT_TRUE(clients.ok());
  auto& [pgward, a, b] = clients;
  const std::string key = std::to_string(770000 + getpid() % 10000);
  EXPECT_EQ(exec_sqlstate(a, "BEGIN; SELECT pg_advisory_lock(" + key + ")"), "0A000");
  // Nobody holds the lock any more (asked from a backend of its own: the same session could take it again).
  Conn direct = connect_direct();
  EXPECT_TRUE(wait_until(
      [&] {
        const bool got = query_value(direct, "SELECT pg_try_advisory_lock(" + key + ")::text") == "true";
        if (got) exec(direct, "SELECT pg_advisory_unlock_all()");
        return got;
      },
      5s));
  EXPECT_EQ(query_value(b, "SELECT 'b is served'"), "b is served");
  EXPECT_EQ(query_value(a, "SELECT 'a goes on'"), "a goes on");
}

}  // namespace
}  // namespace pgward::it
