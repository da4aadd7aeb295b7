// Integration-test harness: one real PostgreSQL for the whole run, one real pgward per test, libpq and raw
// protocol clients to talk to both.
//
// A test writes the pgward configuration minus `[proxy] listen` (PgwardConfig), starts the binary (Pgward)
// and connects through it exactly as it would to PostgreSQL. Everything that can block is bounded: libpq
// connects use a deadline, RawClient sockets have receive timeouts, and a watchdog kills a test's pgward when
// the test runs far too long so that blocked libpq calls return with an error instead of hanging the suite.
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgward::it {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

// Roles and passwords that the environment creates (see PostgresEnvironment::SetUp).
inline constexpr const char* kTrustUser = "pgward_trust";
inline constexpr const char* kMd5User = "pgward_md5";
inline constexpr const char* kMd5Password = "md5pass";
inline constexpr const char* kScramUser = "pgward_scram";
inline constexpr const char* kScramPassword = "scrampass";
inline constexpr const char* kClearUser = "pgward_clear";
inline constexpr const char* kClearPassword = "clearpass";
inline constexpr const char* kAppUser = "app";
inline constexpr const char* kAppPassword = "apppass";
inline constexpr const char* kDatabase = "app";
// A NOLOGIN role whose members PostgreSQL asks for a SCRAM password over TCP (pg_hba.conf "+group"): a test
// that needs a role requiring scram-sha-256 creates it IN ROLE kScramGroup.
inline constexpr const char* kScramGroup = "pgward_scram_group";

// Starts one PostgreSQL in a temporary directory before the first test and stops it after the last.
class PostgresEnvironment : public ::testing::Environment {
 public:
  void SetUp() override;
  void TearDown() override;
};

// The port of the PostgreSQL started by PostgresEnvironment.
int pg_port();

// Stops that PostgreSQL with `pg_ctl stop -m mode` ("smart", "fast" or "immediate") and waits for it to exit.
// Its data directory stays: start_postgres_server() brings the same cluster back on the same port.
void stop_postgres_server(const char* mode);
// Starts it again with the options PostgresEnvironment used; fails the test unless it answers PQping within
// 30 s. Does nothing while it runs.
void start_postgres_server();
bool postgres_server_running();

// Declare one before stopping PostgreSQL in a test: when the test ends, however it ends, PostgreSQL runs
// again for the tests after it.
class PostgresRestarter {
 public:
  PostgresRestarter() = default;
  PostgresRestarter(const PostgresRestarter&) = delete;
  PostgresRestarter& operator=(const PostgresRestarter&) = delete;
  ~PostgresRestarter();
};

// Bounds every test: when one runs longer than the limit, the pgward processes it started are killed (which
// makes any libpq call blocked on them return) and the test is marked failed.
class Watchdog : public ::testing::EmptyTestEventListener {
 public:
  explicit Watchdog(std::chrono::seconds limit);
  ~Watchdog() override;
  void OnTestStart(const ::testing::TestInfo& info) override;
  void OnTestEnd(const ::testing::TestInfo& info) override;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---------------------------------------------------------------------------------------------------------------
// libpq helpers

struct PGresultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, PGresultDeleter>;

// An owned libpq connection. Connecting is bounded by a deadline (libpq's blocking connect can hang on a
// proxy that never answers) and uses verbose error messages so that the SQLSTATE of a refused connection is
// known.
class Conn {
 public:
  Conn() = default;
  static Conn connect(const std::string& conninfo, std::chrono::milliseconds timeout = 15s);

  Conn(Conn&& other) noexcept : conn_(std::exchange(other.conn_, nullptr)), timed_out_(other.timed_out_) {}
  Conn& operator=(Conn&& other) noexcept;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  ~Conn();

  PGconn* get() const { return conn_; }
  operator PGconn*() const { return conn_; }  // NOLINT: used with the C API everywhere
  bool ok() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }
  std::string error() const;
  // The SQLSTATE of the ErrorResponse that refused the connection, "" if there was none (e.g. a reset).
  std::string connect_sqlstate() const;

 private:
  PGconn* conn_ = nullptr;
  bool timed_out_ = false;
};

// A connection to the test PostgreSQL itself, bypassing pgward. Fails the test if it cannot connect.
Conn connect_direct(const std::string& user = "postgres", const std::string& db = kDatabase);
std::string direct_conninfo(const std::string& user = "postgres", const std::string& db = kDatabase,
                            const std::string& password = "");

// Runs SQL; with expect_ok the test fails (non-fatally, with the server's message) unless it succeeded.
Result exec(PGconn* conn, const std::string& sql, bool expect_ok = true);
// Runs SQL that must return at least one row; returns the first column of the first row ("" on failure).
std::string query_value(PGconn* conn, const std::string& sql);
// Runs SQL that is expected to fail and returns its SQLSTATE ("" if it succeeded or no SQLSTATE came back).
std::string exec_sqlstate(PGconn* conn, const std::string& sql);
std::string sqlstate(const PGresult* result);
// The SQLSTATE in a verbose libpq error message ("FATAL:  57P01: terminating connection ..."), "" if none.
// When a server sends an error and then closes, the last result only says the connection closed: the error
// is in PQerrorMessage.
std::string sqlstate_in_message(std::string_view message);
// Runs SQL without blocking longer than timeout; the last result, or nullopt when no answer came in time.
std::optional<Result> exec_within(PGconn* conn, const std::string& sql, std::chrono::milliseconds timeout);
// Waits until PQgetResult would not block; false at the deadline.
bool wait_for_result(PGconn* conn, Clock::time_point deadline);
// Waits for the query already sent (PQsendQuery) to finish; its last result, or nullopt on timeout.
std::optional<Result> finish_within(PGconn* conn, std::chrono::milliseconds timeout);

// Conninfo keyword value quoting ('...' with \ and ' escaped).
std::string conninfo_quote(std::string_view value);

// A login role made for one test, with a password PostgreSQL turns into a verifier (`encryption`:
// "scram-sha-256" or "md5"; no quote or backslash in the password), allowed to connect to kDatabase; with
// `scram_required` a member of kScramGroup. Dropped when the test ends.
class TestRole {
 public:
  explicit TestRole(const std::string& password, const std::string& encryption = "scram-sha-256",
                    bool scram_required = false);
  TestRole(const TestRole&) = delete;
  TestRole& operator=(const TestRole&) = delete;
  ~TestRole();
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// A name nobody else in this run uses, e.g. unique_name("t") == "t_12345_7".
std::string unique_name(std::string_view prefix);

// Polls pred every few milliseconds until it holds or timeout passes; returns its last value.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// Client backends of user in database db on the test PostgreSQL (seen through pg_stat_activity), excluding
// the connection asking.
int count_backends(PGconn* direct, const std::string& user, const std::string& db = kDatabase);

// A free TCP port on 127.0.0.1 (bound to port 0 and released).
int free_port();

// A TCP socket connected to 127.0.0.1:port with send/receive timeouts; -1 with errno set on failure.
int connect_loopback(int port, std::chrono::milliseconds timeout);

// An HTTP exchange with 127.0.0.1:port (pgward's admin port).
struct HttpResponse {
  int status = 0;  // 0 when no answer came
  std::string headers;
  std::string body;
};
// Sends `raw` and reads the answer until the server closes.
HttpResponse http_raw(int port, const std::string& raw);
// One request with `Connection: close`; `headers` are further header lines, each ending in \r\n.
HttpResponse http(int port, const std::string& method, const std::string& target,
                  const std::string& headers = "");
// The value of one sample in a Prometheus exposition, e.g. sample(text, "pgward_errors_total",
// "sqlstate=\"23505\""); nullopt when no line of that metric holds label_part.
std::optional<double> sample(const std::string& exposition, const std::string& name,
                             const std::string& label_part = "");

// VmRSS of a process in KiB, -1 when it cannot be read.
long rss_kib(pid_t pid);

// fork/exec argv with stdin from /dev/null and stdout+stderr appended to log_path; with die_with_parent the
// child is killed when the test process dies. Throws std::runtime_error when it cannot start.
// With forbid_io_uring, io_uring_setup fails with EPERM in the process, as under Docker's default seccomp
// profile.
pid_t spawn_process(const std::vector<std::string>& argv, const std::string& log_path, bool die_with_parent,
                    bool forbid_io_uring = false);

// For suites that run programs of their own (a second PostgreSQL, openssl): files, a temporary directory,
// a program run to its end (its exit status as waitpid() gives it, -1 after 120 s), PostgreSQL's programs as
// the postgres user.
std::string read_text_file(const std::string& path);
void write_text_file(const std::string& path, const std::string& text);
std::string make_temp_directory(const char* prefix);
int run_program(const std::vector<std::string>& argv, const std::string& log_path);
std::vector<std::string> postgres_user_argv(std::vector<std::string> argv);
std::string postgres_program(const char* name);

// ---------------------------------------------------------------------------------------------------------------
// pgward

// The whole configuration file except `[proxy] listen`, which the harness chooses and writes first. Text
// after the [[database]] tables (in `databases`) may add further tables such as [admin]; without one, the
// harness adds an [admin] table listening on a free port, so that no two pgward processes compete for the
// default port. With PGWARD_TEST_WORKERS=N in the environment the harness also writes `workers = N` unless
// `proxy` sets workers.
struct PgwardConfig {
  std::string proxy = "max_client_conn = 10000\nlog_level = \"debug\"\n";  // further [proxy] keys
  std::string auth = "type = \"trust\"\n";                                 // [auth] keys
  std::string pool = "mode = \"transaction\"\nsize = 4\n";                 // [pool] keys
  std::string databases = database_toml(kDatabase);                        // [[database]] tables
  std::string users{};  // users file content; when set, written to users.toml and named in [auth] users_file
  bool forbid_io_uring =
      false;  // io_uring_setup fails with EPERM in pgward (a seccomp filter): see spawn_process

  // A [[database]] table pointing at the test PostgreSQL, or with a port at 127.0.0.1:port (a FaultRelay in
  // front of it, say); `extra` holds further keys (user, password, ...).
  static std::string database_toml(std::string_view name, std::string_view dbname = kDatabase,
                                   std::string_view extra = "", int port = 0);
};

// One running pgward process. The constructor throws (failing the test) when it does not accept connections
// within 10 s; the destructor stops it and prints the end of its log when the test failed.
class Pgward {
 public:
  explicit Pgward(const PgwardConfig& config = {});
  Pgward(const Pgward&) = delete;
  Pgward& operator=(const Pgward&) = delete;
  ~Pgward();

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // The admin HTTP port the harness chose; 0 when the test wrote its own [admin] table.
  int admin_port() const { return admin_port_; }
  std::string conninfo(const std::string& user = kTrustUser, const std::string& db = kDatabase,
                       const std::string& password = "") const;
  Conn connect(const std::string& user = kTrustUser, const std::string& db = kDatabase,
               const std::string& password = "") const;
  std::string log() const;
  std::string log_tail(std::size_t lines) const;
  std::string config_text() const { return config_text_; }
  // The configuration file pgward runs with (a test may rewrite it and reload).
  std::string config_path() const { return dir_ + "/config.toml"; }
  // False once the process has exited (for whatever reason).
  bool running();

 private:
  // SIGTERM, then SIGKILL after 5 s; what went wrong ("" when pgward exited 0 in time).
  std::string stop();

  std::string dir_;
  std::string config_text_;
  int port_ = 0;
  int admin_port_ = 0;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
};

// ---------------------------------------------------------------------------------------------------------------
// Fault injection

// A TCP relay inside the test process, between pgward and PostgreSQL (point a [[database]] at its port with
// PgwardConfig::database_toml), that breaks the connections it carries on purpose. Each accepted connection
// is relayed to 127.0.0.1:target_port; when nothing listens there it is reset at once. Every member is
// thread-safe; the destructor resets whatever is still open.
class FaultRelay {
 public:
  enum class Cut {
    before_send,  // the COMMIT never reaches PostgreSQL: the server rolls the transaction back
    after_reply,  // PostgreSQL commits and replies; the reply (up to its ReadyForQuery) is dropped
  };

  explicit FaultRelay(int target_port = pg_port());
  FaultRelay(const FaultRelay&) = delete;
  FaultRelay& operator=(const FaultRelay&) = delete;
  ~FaultRelay();

  int port() const;
  // Pairs currently open.
  std::size_t connections() const;
  // Resets both sides of every open pair (SO_LINGER 0: an RST), as if the server had died, and waits until
  // they are closed. Connections accepted afterwards are relayed normally.
  void kill_all();
  // Arms a cut for the next client-to-server chunk holding a simple Query (or a Parse, whose batch then goes
  // through up to its Sync) whose text is a COMMIT statement:
  // whatever the client sent before it and the replies to that still pass, then the pair is closed on both
  // sides, before the COMMIT is forwarded or after PostgreSQL's reply to it has been read and dropped. It
  // fires once, then disarms.
  void cut_on_commit(Cut mode);
  // Whether the armed cut has happened; true before the pair is closed, so whoever saw the close sees it.
  bool fired() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---------------------------------------------------------------------------------------------------------------
// Raw protocol client

struct Message {
  char type = 0;
  std::string body;  // everything after the length word
};

// Fields of an ErrorResponse or NoticeResponse by their one-letter code ('S', 'V', 'C', 'M', ...).
using ErrorFields = std::map<char, std::string>;
ErrorFields parse_error(const Message& message);

// Messages reduced to what must be identical between PostgreSQL and pgward: the type of each, the SQLSTATE of
// errors, the tag of CommandComplete and the status of ReadyForQuery, e.g. "C(BEGIN) E(22012) Z(E)".
// ParameterStatus and BackendKeyData are left out: their contents legitimately differ.
std::string message_signature(const std::vector<Message>& messages);

std::uint32_t read_u32(std::string_view bytes, std::size_t at);

// Wire-format builders.
namespace wire {
std::string u32(std::uint32_t v);
std::string startup(const std::vector<std::pair<std::string, std::string>>& params, int major = 3,
                    int minor = 0);
std::string ssl_request();
std::string cancel_request(std::uint32_t pid, std::uint32_t key);
std::string message(char type, std::string_view body);
std::string query(std::string_view sql);
std::string terminate();
// Extended protocol with text parameters and results: Parse without parameter types, Bind of no parameters.
std::string parse(std::string_view statement, std::string_view sql);
std::string bind(std::string_view statement, std::string_view portal = "");
std::string describe_portal(std::string_view portal = "");
std::string execute(std::string_view portal = "");
std::string sync();
std::string flush();
}  // namespace wire

// A plain TCP client speaking the protocol byte by byte. Every read is bounded by the receive timeout.
class RawClient {
 public:
  enum class ReadStatus { ok, closed, timeout };

  // Connects to 127.0.0.1:port; throws std::runtime_error on failure.
  explicit RawClient(int port, std::chrono::milliseconds timeout = 10s);
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  ~RawClient();

  // Sends all bytes; returns false if the peer already closed or reset the connection.
  bool send(std::string_view bytes);
  // Reads exactly n bytes; nullopt on close or timeout (see last_status()).
  std::optional<std::string> read_bytes(std::size_t n);
  // Reads one backend message; nullopt on close or timeout (see last_status()).
  std::optional<Message> read_message();
  // Reads messages up to and including ReadyForQuery; throws std::runtime_error if the connection ends first.
  std::vector<Message> read_until_ready();
  // Waits for the peer to close (EOF or reset), discarding what arrives; false on timeout.
  bool wait_closed();
  // Closes the socket abruptly (a reset, as when the client process dies); later sends fail.
  void reset();
  ReadStatus last_status() const { return last_status_; }

  // Trust login: startup packet, then messages up to ReadyForQuery. Throws unless it ends in ReadyForQuery.
  std::vector<Message> login(const std::vector<std::pair<std::string, std::string>>& params, int major = 3,
                             int minor = 0);
  // Simple query; all messages up to and including ReadyForQuery.
  std::vector<Message> query(std::string_view sql);
  // Simple query that must succeed; the first column of the first row (throws otherwise).
  std::string query_value(std::string_view sql);

  // BackendKeyData received at login, if any.
  std::optional<std::pair<std::uint32_t, std::uint32_t>> backend_key() const { return backend_key_; }

 private:
  int fd_ = -1;
  ReadStatus last_status_ = ReadStatus::ok;
  std::optional<std::pair<std::uint32_t, std::uint32_t>> backend_key_;
};

// Start-up parameters of a plain trust login as kTrustUser to kDatabase.
std::vector<std::pair<std::string, std::string>> trust_login_params();

}  // namespace pgward::it
