#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#ifndef PGWARD_BINARY
#error "PGWARD_BINARY must name the pgward executable"
#endif

namespace pgward::it {
namespace {

constexpr const char* kPgBin = "/usr/lib/postgresql/15/bin";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string last_lines(const std::string& text, std::size_t n) {
  std::size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (std::size_t seen = 0; pos > 0; --pos) {
    if (text[pos - 1] == '\n' && ++seen == n) break;
  }
  return text.substr(pos);
}

std::string make_temp_dir(const char* prefix) {
  std::string pattern = std::string("/tmp/") + prefix + "-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr)
    throw std::runtime_error("mkdtemp: " + std::string(strerror(errno)));
  return pattern;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  return "status " + std::to_string(status);
}

// PostgreSQL refuses to run as root: run its programs as the postgres user then.
std::vector<std::string> as_postgres_user(std::vector<std::string> argv) {
  if (geteuid() == 0) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  return argv;
}

// A seccomp filter under which io_uring_setup fails with EPERM and every other call is allowed: what the
// default profiles of Docker and Kubernetes do to io_uring.
const sock_fprog* io_uring_forbidden() {
  static sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  static const sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
  return &program;
}

// fork/exec with stdin from /dev/null and stdout+stderr appended to log_path; with forbid_io_uring, under
// io_uring_forbidden().
pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path, bool die_with_parent,
            bool forbid_io_uring = false) {
  const sock_fprog* seccomp_program = forbid_io_uring ? io_uring_forbidden() : nullptr;
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("open " + log_path + ": " + strerror(errno));
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec: the parent may have other threads.
    if (die_with_parent) prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (seccomp_program != nullptr && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
                                       prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, seccomp_program) != 0))
      _exit(126);
    dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(log_fd);
  close(null_fd);
  if (pid < 0) throw std::runtime_error("fork: " + std::string(strerror(errno)));
  return pid;
}

// waitpid with a deadline; the exit status, or nullopt if the process is still running at the deadline.
std::optional<int> wait_for_exit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

int run_command(const std::vector<std::string>& argv, const std::string& log_path) {
  pid_t pid = spawn(argv, log_path, /*die_with_parent=*/false);
  auto status = wait_for_exit(pid, 120s);
  if (!status) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return -1;
  }
  return *status;
}

bool tcp_accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// ---- the one PostgreSQL of the run ----

struct PostgresState {
  std::mutex mutex;
  std::string dir;  // temporary directory: data/, the socket, logs
  int port = 0;
  pid_t pid = -1;  // postgres (or the runuser wrapping it)
};

PostgresState& postgres() {
  static PostgresState state;
  return state;
}

std::string pg_program(const char* name) { return std::string(kPgBin) + "/" + name; }

// pg_ctl stop -m mode, then waits for the process (SIGKILL after 10 s). Call with pg.mutex held.
void stop_server_locked(PostgresState& pg, const char* mode) {
  if (pg.pid <= 0) return;
  run_command(
      as_postgres_user({pg_program("pg_ctl"), "stop", "-D", pg.dir + "/data", "-m", mode, "-w", "-t", "30"}),
      pg.dir + "/pg_ctl.log");
  if (!wait_for_exit(pg.pid, 10s)) {
    kill(pg.pid, SIGKILL);
    waitpid(pg.pid, nullptr, 0);
  }
  pg.pid = -1;
}

// Spawns postgres on pg.dir/data and pg.port and waits until it answers PQping (30 s at the most); what went
// wrong, "" when it is up. Call with pg.mutex held.
std::string start_server_locked(PostgresState& pg) {
  if (pg.pid > 0) return "";
  const std::string log = pg.dir + "/postgres.log";
  pg.pid =
      spawn(as_postgres_user({pg_program("postgres"), "-D", pg.dir + "/data", "-p", std::to_string(pg.port),
                              "-k", pg.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
                              "max_connections=150", "-c", "logging_collector=off"}),
            log, /*die_with_parent=*/false);
  const std::string ping =
      "host=127.0.0.1 port=" + std::to_string(pg.port) + " user=postgres dbname=postgres connect_timeout=2";
  bool up = wait_until(
      [&] {
        int status = 0;
        if (waitpid(pg.pid, &status, WNOHANG) == pg.pid) {
          pg.pid = -1;
          return true;  // exited: reported below
        }
        return PQping(ping.c_str()) == PQPING_OK;
      },
      30s);
  if (up && pg.pid > 0) return "";
  if (pg.pid > 0) {
    kill(pg.pid, SIGKILL);
    waitpid(pg.pid, nullptr, 0);
    pg.pid = -1;
  }
  return "PostgreSQL did not start; the end of its log:\n" + last_lines(read_file(log), 30);
}

void stop_postgres(const char* mode) {
  auto& pg = postgres();
  std::lock_guard lock(pg.mutex);
  if (pg.dir.empty()) return;
  stop_server_locked(pg, mode);
  std::error_code ignored;
  std::filesystem::remove_all(pg.dir, ignored);
  pg.dir.clear();
}

void stop_postgres_at_exit() { stop_postgres("immediate"); }

// ---- live pgward processes, for the watchdog ----

struct Children {
  std::mutex mutex;
  std::set<pid_t> pgwards;
  bool watchdog_fired = false;
};

Children& children() {
  static Children c;
  return c;
}

// [proxy] keys from the environment, each unless the test's own [proxy] keys set it: `workers = N` from
// PGWARD_TEST_WORKERS (scripts/tsan.sh runs the suite with 2) and `io_backend = "B"` from
// PGWARD_TEST_IO_BACKEND (ctest runs the suite once per event loop: tests/CMakeLists.txt).
std::string proxy_keys_from_env(const std::string& proxy_keys) {
  std::string keys;
  if (const char* value = std::getenv("PGWARD_TEST_WORKERS"); value != nullptr && *value != '\0') {
    if (std::string_view(value).find_first_not_of("0123456789") != std::string_view::npos)
      throw std::runtime_error("PGWARD_TEST_WORKERS=" + std::string(value) + ": expected a number");
    if (("\n" + proxy_keys).find("\nworkers") == std::string::npos)
      keys += "workers = " + std::string(value) + "\n";
  }
  if (const char* value = std::getenv("PGWARD_TEST_IO_BACKEND"); value != nullptr && *value != '\0') {
    if (("\n" + proxy_keys).find("\nio_backend") == std::string::npos)
      keys += "io_backend = \"" + std::string(value) + "\"\n";
  }
  return keys;
}

}  // namespace

pid_t spawn_process(const std::vector<std::string>& argv, const std::string& log_path, bool die_with_parent,
                    bool forbid_io_uring) {
  return spawn(argv, log_path, die_with_parent, forbid_io_uring);
}

// ---------------------------------------------------------------------------------------------------------------

void PostgresEnvironment::SetUp() {
  auto& pg = postgres();
  pg.dir = make_temp_dir("pgward-it-pg");
  std::atexit(stop_postgres_at_exit);
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    ASSERT_NE(pw, nullptr) << "running as root needs a `postgres` user to run PostgreSQL";
    ASSERT_EQ(chown(pg.dir.c_str(), pw->pw_uid, pw->pw_gid), 0) << strerror(errno);
  }
  chmod(pg.dir.c_str(), 0700);
  const std::string data = pg.dir + "/data";
  const std::string log = pg.dir + "/postgres.log";

  int rc = run_command(as_postgres_user({pg_program("initdb"), "-D", data, "-A", "trust", "-U", "postgres",
                                         "--no-sync", "-E", "UTF8", "--locale=C"}),
                       pg.dir + "/initdb.log");
  ASSERT_EQ(rc, 0) << "initdb failed:\n" << read_file(pg.dir + "/initdb.log");

  pg.port = free_port();
  {
    std::lock_guard lock(pg.mutex);
    const std::string failure = start_server_locked(pg);
    ASSERT_EQ(failure, "");
  }

  {
    Conn admin = connect_direct("postgres", "postgres");
    ASSERT_TRUE(admin.ok()) << admin.error();
    for (const char* sql : {
             "CREATE DATABASE app",
             "CREATE ROLE pgward_trust LOGIN",
             "SET password_encryption = 'md5'",
             "CREATE ROLE pgward_md5 LOGIN PASSWORD 'md5pass'",
             "SET password_encryption = 'scram-sha-256'",
             "CREATE ROLE pgward_scram LOGIN PASSWORD 'scrampass'",
             "CREATE ROLE pgward_clear LOGIN PASSWORD 'clearpass'",
             "CREATE ROLE app LOGIN PASSWORD 'apppass'",
             "CREATE ROLE pgward_scram_group NOLOGIN",
             "GRANT ALL ON DATABASE app TO pgward_trust, pgward_md5, pgward_scram, pgward_clear, app",
         }) {
      exec(admin, sql);
      ASSERT_FALSE(::testing::Test::HasFailure()) << "setting up PostgreSQL failed at: " << sql;
    }
    Conn app = connect_direct("postgres", kDatabase);
    ASSERT_TRUE(app.ok()) << app.error();
    exec(app, "GRANT ALL ON SCHEMA public TO PUBLIC");

    write_file(data + "/pg_hba.conf",
               "host all pgward_md5 127.0.0.1/32 md5\n"
               "host all pgward_scram 127.0.0.1/32 scram-sha-256\n"
               "host all pgward_clear 127.0.0.1/32 password\n"
               "host all app 127.0.0.1/32 scram-sha-256\n"
               "host all +pgward_scram_group 127.0.0.1/32 scram-sha-256\n"
               "host all all 127.0.0.1/32 trust\n"
               "local all all trust\n");
    exec(admin, "SELECT pg_reload_conf()");
  }
  // The reload is asynchronous: wait until a password-protected role is asked for its password.
  bool reloaded = wait_until([] { return !Conn::connect(direct_conninfo(kMd5User), 5s).ok(); }, 10s);
  ASSERT_TRUE(reloaded) << "pg_hba.conf was not reloaded; PostgreSQL log:\n" << read_file(log);
}

void PostgresEnvironment::TearDown() { stop_postgres("fast"); }

int pg_port() { return postgres().port; }

void stop_postgres_server(const char* mode) {
  auto& pg = postgres();
  std::lock_guard lock(pg.mutex);
  stop_server_locked(pg, mode);
}

void start_postgres_server() {
  auto& pg = postgres();
  std::lock_guard lock(pg.mutex);
  const std::string failure = pg.dir.empty() ? "PostgreSQL was never set up" : start_server_locked(pg);
  ASSERT_EQ(failure, "");
}

bool postgres_server_running() {
  auto& pg = postgres();
  std::lock_guard lock(pg.mutex);
  return pg.pid > 0;
}

PostgresRestarter::~PostgresRestarter() {
  if (!postgres_server_running()) start_postgres_server();
}

// ---------------------------------------------------------------------------------------------------------------

struct Watchdog::State {
  std::chrono::seconds limit;
  std::mutex mutex;
  std::condition_variable cv;
  std::optional<Clock::time_point> deadline;  // set while a test runs
  int stage = 0;                              // how far the current test's deadline has been escalated
  std::string test;
  bool done = false;
  std::thread thread;

  void run() {
    std::unique_lock lock(mutex);
    while (!done) {
      if (!deadline) {
        cv.wait(lock);
      } else if (cv.wait_until(lock, *deadline) == std::cv_status::timeout && Clock::now() >= *deadline) {
        expire();
      }
    }
  }

  // Escalates one step per expired deadline: SIGINT to the test's pgward processes (an immediate clean stop
  // that still flushes their logs), then SIGKILL, then, if the test is still blocked on something else, the
  // end of the run. Stopping pgward makes every libpq call blocked on it return, so the test ends on its own.
  void expire() {
    ++stage;
    if (stage <= 2) {
      const int signal = stage == 1 ? SIGINT : SIGKILL;
      std::fprintf(stderr, "[watchdog] %s ran for more than %llds: sending %s to its pgward\n", test.c_str(),
                   static_cast<long long>(limit.count()), sigabbrev_np(signal));
      auto& c = children();
      std::lock_guard children_lock(c.mutex);
      c.watchdog_fired = true;
      for (pid_t pid : c.pgwards) kill(pid, signal);
      deadline = Clock::now() + (stage == 1 ? 3s : 30s);
      return;
    }
    std::fprintf(stderr, "[watchdog] %s is still blocked: aborting the run\n", test.c_str());
    stop_postgres("immediate");
    std::_Exit(2);
  }
};

Watchdog::Watchdog(std::chrono::seconds limit) : state_(std::make_unique<State>()) {
  state_->limit = limit;
  state_->thread = std::thread([s = state_.get()] { s->run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(state_->mutex);
    state_->done = true;
  }
  state_->cv.notify_all();
  state_->thread.join();
}

void Watchdog::OnTestStart(const ::testing::TestInfo& info) {
  {
    std::lock_guard lock(children().mutex);
    children().watchdog_fired = false;
  }
  std::lock_guard lock(state_->mutex);
  state_->test = std::string(info.test_suite_name()) + "." + info.name();
  state_->stage = 0;
  state_->deadline = Clock::now() + state_->limit;
  state_->cv.notify_all();
}

void Watchdog::OnTestEnd(const ::testing::TestInfo&) {
  std::lock_guard lock(state_->mutex);
  state_->deadline.reset();
  state_->cv.notify_all();
}

// ---------------------------------------------------------------------------------------------------------------

Conn Conn::connect(const std::string& conninfo, std::chrono::milliseconds timeout) {
  Conn c;
  c.conn_ = PQconnectStart(conninfo.c_str());
  if (c.conn_ == nullptr || PQstatus(c.conn_) == CONNECTION_BAD) return c;
  // Verbose errors carry the SQLSTATE ("FATAL:  28P01: password authentication failed ...").
  PQsetErrorVerbosity(c.conn_, PQERRORS_VERBOSE);
  const auto deadline = Clock::now() + timeout;
  PostgresPollingStatusType state = PGRES_POLLING_WRITING;
  while (state != PGRES_POLLING_OK && state != PGRES_POLLING_FAILED) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      c.timed_out_ = true;
      break;
    }
    pollfd p{PQsocket(c.conn_), static_cast<short>(state == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    if (poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) break;
    state = PQconnectPoll(c.conn_);
  }
  return c;
}

Conn& Conn::operator=(Conn&& other) noexcept {
  if (this != &other) {
    if (conn_) PQfinish(conn_);
    conn_ = std::exchange(other.conn_, nullptr);
    timed_out_ = other.timed_out_;
  }
  return *this;
}

Conn::~Conn() {
  if (conn_) PQfinish(conn_);
}

std::string Conn::error() const {
  if (timed_out_) return "connection attempt timed out";
  return conn_ ? PQerrorMessage(conn_) : "out of memory";
}

std::string Conn::connect_sqlstate() const { return sqlstate_in_message(error()); }

std::string sqlstate_in_message(std::string_view message) {
  for (const char* severity : {"FATAL:  ", "ERROR:  ", "PANIC:  "}) {
    const std::size_t at = message.find(severity);
    if (at == std::string::npos) continue;
    const std::size_t code = at + std::strlen(severity);
    if (message.size() > code + 5 && message[code + 5] == ':') return std::string(message.substr(code, 5));
  }
  return "";
}

std::string conninfo_quote(std::string_view value) {
  std::string out = "'";
  for (char ch : value) {
    if (ch == '\\' || ch == '\'') out += '\\';
    out += ch;
  }
  return out + "'";
}

std::string direct_conninfo(const std::string& user, const std::string& db, const std::string& password) {
  std::string s = "host=127.0.0.1 port=" + std::to_string(pg_port()) + " user=" + conninfo_quote(user) +
                  " dbname=" + conninfo_quote(db);
  if (!password.empty()) s += " password=" + conninfo_quote(password);
  return s;
}

Conn connect_direct(const std::string& user, const std::string& db) {
  Conn c = Conn::connect(direct_conninfo(user, db));
  EXPECT_TRUE(c.ok()) << "direct connection to PostgreSQL failed: " << c.error();
  return c;
}

Result exec(PGconn* conn, const std::string& sql, bool expect_ok) {
  Result r(PQexec(conn, sql.c_str()));
  if (expect_ok) {
    auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    EXPECT_TRUE(status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
        << "query failed: " << sql << "\n  " << PQresStatus(status) << ": " << PQerrorMessage(conn);
  }
  return r;
}

std::string query_value(PGconn* conn, const std::string& sql) {
  Result r = exec(conn, sql);
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) < 1) {
    ADD_FAILURE() << "no rows from: " << sql;
    return "";
  }
  return PQgetvalue(r.get(), 0, 0);
}

std::string sqlstate(const PGresult* result) {
  const char* code = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  return code ? code : "";
}

std::string exec_sqlstate(PGconn* conn, const std::string& sql) {
  Result r = exec(conn, sql, /*expect_ok=*/false);
  return sqlstate(r.get());
}

std::optional<Result> exec_within(PGconn* conn, const std::string& sql, std::chrono::milliseconds timeout) {
  if (PQsendQuery(conn, sql.c_str()) != 1) return Result(PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR));
  return finish_within(conn, timeout);
}

bool wait_for_result(PGconn* conn, Clock::time_point deadline) {
  while (PQisBusy(conn)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{PQsocket(conn), POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) return false;
    if (PQconsumeInput(conn) != 1) break;  // the connection broke: PQgetResult reports it
  }
  return true;
}

std::optional<Result> finish_within(PGconn* conn, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  Result last;
  for (;;) {
    if (!wait_for_result(conn, deadline)) return std::nullopt;
    Result r(PQgetResult(conn));
    if (!r) return last;
    last = std::move(r);
  }
}

std::string unique_name(std::string_view prefix) {
  static std::atomic<int> counter{0};
  return std::string(prefix) + "_" + std::to_string(getpid()) + "_" + std::to_string(++counter);
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

int count_backends(PGconn* direct, const std::string& user, const std::string& db) {
  const char* params[] = {user.c_str(), db.c_str()};
  Result r(PQexecParams(direct,
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                        "AND usename = $1 AND datname = $2 AND pid <> pg_backend_pid()",
                        2, nullptr, params, nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    ADD_FAILURE() << "pg_stat_activity: " << PQerrorMessage(direct);
    return -1;
  }
  return std::atoi(PQgetvalue(r.get(), 0, 0));
}

int free_port() {
  // The kernel may hand out the same ephemeral port again once it is released: never give one out twice in a
  // run, so that two listeners of one pgward (proxy and admin) cannot be told to share a port.
  static std::mutex mu;
  static std::set<int> given;
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket: " + std::string(strerror(errno)));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      close(fd);
      throw std::runtime_error("bind: " + std::string(strerror(errno)));
    }
    close(fd);
    const int port = ntohs(addr.sin_port);
    std::lock_guard lock(mu);
    if (given.insert(port).second) return port;
  }
}

// ---------------------------------------------------------------------------------------------------------------

std::string PgwardConfig::database_toml(std::string_view name, std::string_view dbname,
                                        std::string_view extra, int port) {
  std::string s = "[[database]]\nname = \"" + std::string(name) +
                  "\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(port != 0 ? port : pg_port()) +
                  "\ndbname = \"" + std::string(dbname) + "\"\n" + std::string(extra);
  if (!s.ends_with('\n')) s += '\n';
  return s + "\n";
}

Pgward::Pgward(const PgwardConfig& config) {
  dir_ = make_temp_dir("pgward-it");
  port_ = free_port();
  config_text_ = "[proxy]\nlisten = \"127.0.0.1:" + std::to_string(port_) + "\"\n" +
                 proxy_keys_from_env(config.proxy) + config.proxy + "\n[auth]\n" + config.auth +
                 (config.users.empty() ? "" : "users_file = \"users.toml\"\n") + "\n[pool]\n" + config.pool +
                 "\n" + config.databases;
  // The admin port defaults to a fixed one: give each pgward its own unless the test configures [admin].
  if (config_text_.find("\n[admin]") == std::string::npos) {
    admin_port_ = free_port();
    config_text_ += "\n[admin]\nlisten = \"127.0.0.1:" + std::to_string(admin_port_) + "\"\n";
  }
  write_file(dir_ + "/config.toml", config_text_);
  if (!config.users.empty()) write_file(dir_ + "/users.toml", config.users);

  {
    std::lock_guard lock(children().mutex);
    pid_ = spawn({PGWARD_BINARY, "--config", dir_ + "/config.toml"}, dir_ + "/pgward.log",
                 /*die_with_parent=*/true, config.forbid_io_uring);
    children().pgwards.insert(pid_);
  }

  std::string failure;
  bool accepting = wait_until(
      [&] {
        if (!running()) {
          failure = "pgward exited (" + describe_status(*exit_status_) + ") before accepting connections";
          return true;
        }
        // pgward binds its proxy listeners before the admin port (Proxy::run): a test that asks the admin
        // port first thing must not find it still closed.
        return tcp_accepts(port_) && (admin_port_ == 0 || tcp_accepts(admin_port_));
      },
      10s);
  if (!accepting)
    failure = "pgward did not accept connections on port " + std::to_string(port_) +
              (admin_port_ == 0 ? "" : " and admin port " + std::to_string(admin_port_)) + " within 10 s";
  if (!failure.empty()) {
    std::string message = failure + "\nconfig:\n" + config_text_ + "\nlast log lines:\n" + log_tail(50);
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    throw std::runtime_error(message);
  }
}

Pgward::~Pgward() {
  const bool exited_early = !running();
  if (exited_early) {
    bool by_watchdog;
    {
      std::lock_guard lock(children().mutex);
      by_watchdog = children().watchdog_fired;
    }
    if (by_watchdog) {
      ADD_FAILURE() << "the test ran too long: the watchdog stopped pgward";
    } else {
      ADD_FAILURE() << "pgward exited during the test: " << describe_status(*exit_status_);
    }
  }
  // Every client is gone by now (they are declared after pgward), so a drain has nothing to wait for.
  if (const std::string problem = stop(); !problem.empty()) ADD_FAILURE() << problem;
  if (::testing::Test::HasFailure()) {
    std::cerr << "---- pgward config ----\n"
              << config_text_ << "---- last 50 lines of the pgward log ----\n"
              << log_tail(50) << "---- end of pgward log ----\n";
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

bool Pgward::running() {
  if (exit_status_) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_status_ = status;
    std::lock_guard lock(children().mutex);
    children().pgwards.erase(pid_);
    return false;
  }
  return true;
}

std::string Pgward::stop() {
  if (pid_ <= 0 || !running()) return "";
  kill(pid_, SIGTERM);
  std::string problem;
  auto status = wait_for_exit(pid_, 5s);
  if (!status) {
    problem = "pgward did not stop within 5 s of SIGTERM (killed)";
    kill(pid_, SIGKILL);
    status = wait_for_exit(pid_, 5s);
  } else if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    problem = "pgward did not stop cleanly on SIGTERM: " + describe_status(*status);
  }
  exit_status_ = status.value_or(-1);
  std::lock_guard lock(children().mutex);
  children().pgwards.erase(pid_);
  return problem;
}

std::string Pgward::conninfo(const std::string& user, const std::string& db,
                             const std::string& password) const {
  std::string s = "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + conninfo_quote(user) +
                  " dbname=" + conninfo_quote(db);
  if (!password.empty()) s += " password=" + conninfo_quote(password);
  return s;
}

Conn Pgward::connect(const std::string& user, const std::string& db, const std::string& password) const {
  Conn c = Conn::connect(conninfo(user, db, password));
  EXPECT_TRUE(c.ok()) << "connecting through pgward as " << user << " to " << db << " failed: " << c.error();
  return c;
}

std::string Pgward::log() const { return read_file(dir_ + "/pgward.log"); }

std::string Pgward::log_tail(std::size_t lines) const { return last_lines(log(), lines); }

// ---------------------------------------------------------------------------------------------------------------

std::uint32_t read_u32(std::string_view bytes, std::size_t at) {
  if (at + 4 > bytes.size()) throw std::runtime_error("message too short");
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
  return v;
}

ErrorFields parse_error(const Message& message) {
  ErrorFields fields;
  std::size_t pos = 0;
  const std::string& b = message.body;
  while (pos < b.size() && b[pos] != '\0') {
    char code = b[pos++];
    std::size_t end = b.find('\0', pos);
    if (end == std::string::npos) end = b.size();
    fields[code] = b.substr(pos, end - pos);
    pos = end + 1;
  }
  return fields;
}

std::string message_signature(const std::vector<Message>& messages) {
  std::string out;
  for (const auto& m : messages) {
    if (m.type == 'S' || m.type == 'K') continue;
    if (!out.empty()) out += ' ';
    out += m.type;
    switch (m.type) {
      case 'E':
      case 'N': out += "(" + parse_error(m)['C'] + ")"; break;
      case 'C': out += "(" + std::string(m.body.c_str()) + ")"; break;
      case 'Z': out += "(" + m.body + ")"; break;
      case 'R': out += "(" + std::to_string(read_u32(m.body, 0)) + ")"; break;
      default: break;
    }
  }
  return out;
}

namespace wire {

std::string u32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string startup(const std::vector<std::pair<std::string, std::string>>& params, int major, int minor) {
  std::string body = u32(static_cast<std::uint32_t>(major) << 16 | static_cast<std::uint32_t>(minor));
  for (const auto& [k, v] : params) body += k + '\0' + v + '\0';
  body += '\0';
  return u32(static_cast<std::uint32_t>(body.size() + 4)) + body;
}

std::string ssl_request() { return u32(8) + u32(80877103); }

std::string cancel_request(std::uint32_t pid, std::uint32_t key) {
  return u32(16) + u32(80877102) + u32(pid) + u32(key);
}

std::string message(char type, std::string_view body) {
  return type + u32(static_cast<std::uint32_t>(body.size() + 4)) + std::string(body);
}

std::string query(std::string_view sql) { return message('Q', std::string(sql) + '\0'); }

std::string terminate() { return message('X', ""); }

std::string parse(std::string_view statement, std::string_view sql) {
  return message('P', std::string(statement) + '\0' + std::string(sql) + '\0' + std::string(2, '\0'));
}

std::string bind(std::string_view statement, std::string_view portal) {
  // Portal, statement, no parameter formats, no parameters, no result formats.
  return message('B', std::string(portal) + '\0' + std::string(statement) + '\0' + std::string(6, '\0'));
}

std::string describe_portal(std::string_view portal) {
  return message('D', 'P' + std::string(portal) + '\0');
}

std::string execute(std::string_view portal) {
  return message('E', std::string(portal) + '\0' + std::string(4, '\0'));  // no row limit
}

std::string sync() { return message('S', ""); }

std::string flush() { return message('H', ""); }

}  // namespace wire

int connect_loopback(int port, std::chrono::milliseconds timeout) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

HttpResponse http_raw(int port, const std::string& raw) {
  HttpResponse out;
  const int fd = connect_loopback(port, 10s);
  if (fd < 0) return out;
  std::size_t sent = 0;
  while (sent < raw.size()) {
    ssize_t n = ::send(fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string text;
  char buf[8192];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  const auto end = text.find("\r\n\r\n");
  if (!text.starts_with("HTTP/1.") || end == std::string::npos) return out;
  out.status = std::atoi(text.c_str() + 9);
  out.headers = text.substr(0, end);
  out.body = text.substr(end + 4);
  return out;
}

HttpResponse http(int port, const std::string& method, const std::string& target,
                  const std::string& headers) {
  return http_raw(port, method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" +
                            headers + (method == "POST" ? "Content-Length: 0\r\n" : "") + "\r\n");
}

std::optional<double> sample(const std::string& exposition, const std::string& name,
                             const std::string& label_part) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with(name + "{") && !line.starts_with(name + " ")) continue;
    if (!label_part.empty() && line.find(label_part) == std::string::npos) continue;
    return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

long rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  }
  return -1;
}

RawClient::RawClient(int port, std::chrono::milliseconds timeout) {
  fd_ = connect_loopback(port, timeout);
  if (fd_ < 0) throw std::runtime_error("connect to port " + std::to_string(port) + ": " + strerror(errno));
}

RawClient::~RawClient() {
  if (fd_ >= 0) close(fd_);
}

bool RawClient::send(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::optional<std::string> RawClient::read_bytes(std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = recv(fd_, out.data() + got, n - got, 0);
    if (r > 0) {
      got += static_cast<std::size_t>(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    last_status_ =
        (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) ? ReadStatus::timeout : ReadStatus::closed;
    return std::nullopt;
  }
  last_status_ = ReadStatus::ok;
  return out;
}

std::optional<Message> RawClient::read_message() {
  auto header = read_bytes(5);
  if (!header) return std::nullopt;
  const std::uint32_t length = read_u32(*header, 1);
  if (length < 4 || length > (1u << 30)) {
    throw std::runtime_error("bad message length " + std::to_string(length) + " for type '" + (*header)[0] +
                             "'");
  }
  auto body = read_bytes(length - 4);
  if (!body) return std::nullopt;
  Message m{(*header)[0], std::move(*body)};
  if (m.type == 'K' && m.body.size() >= 8) backend_key_ = {read_u32(m.body, 0), read_u32(m.body, 4)};
  return m;
}

std::vector<Message> RawClient::read_until_ready() {
  std::vector<Message> messages;
  for (;;) {
    auto m = read_message();
    if (!m) {
      throw std::runtime_error(std::string("connection ") +
                               (last_status_ == ReadStatus::timeout ? "timed out" : "closed") +
                               " before ReadyForQuery; received: " + message_signature(messages));
    }
    messages.push_back(std::move(*m));
    if (messages.back().type == 'Z') return messages;
  }
}

bool RawClient::wait_closed() {
  char buf[4096];
  for (;;) {
    ssize_t r = recv(fd_, buf, sizeof buf, 0);
    if (r > 0) continue;
    if (r < 0 && errno == EINTR) continue;
    if (r == 0 || errno == ECONNRESET || errno == EPIPE) {
      last_status_ = ReadStatus::closed;
      return true;
    }
    last_status_ = ReadStatus::timeout;
    return false;
  }
}

void RawClient::reset() {
  if (fd_ < 0) return;
  const linger abort{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  close(fd_);
  fd_ = -1;
}

std::vector<Message> RawClient::login(const std::vector<std::pair<std::string, std::string>>& params,
                                      int major, int minor) {
  if (!send(wire::startup(params, major, minor)))
    throw std::runtime_error("sending the startup packet failed");
  return read_until_ready();
}

std::vector<Message> RawClient::query(std::string_view sql) {
  if (!send(wire::query(sql))) throw std::runtime_error("sending a query failed");
  return read_until_ready();
}

std::string RawClient::query_value(std::string_view sql) {
  const auto messages = query(sql);
  for (const auto& m : messages) {
    if (m.type == 'E') throw std::runtime_error(std::string(sql) + ": " + parse_error(m)['M']);
    if (m.type == 'D') {
      // DataRow: int16 column count, then per column an int32 length and the bytes.
      const std::int32_t len = static_cast<std::int32_t>(read_u32(m.body, 2));
      if (len < 0) return "NULL";
      return m.body.substr(6, static_cast<std::size_t>(len));
    }
  }
  throw std::runtime_error(std::string(sql) + ": no row in " + message_signature(messages));
}

std::vector<std::pair<std::string, std::string>> trust_login_params() {
  return {{"user", kTrustUser}, {"database", kDatabase}};
}

TestRole::TestRole(const std::string& password, const std::string& encryption, bool scram_required)
    : name_(unique_name("role")) {
  Conn direct = connect_direct("postgres");
  exec(direct, "SET password_encryption = '" + encryption + "'");
  exec(direct, "CREATE ROLE " + name_ + " LOGIN" +
                   (scram_required ? std::string(" IN ROLE ") + kScramGroup : "") + " PASSWORD '" + password +
                   "'");
  exec(direct, "GRANT ALL ON DATABASE " + std::string(kDatabase) + " TO " + name_);
}

TestRole::~TestRole() {
  Conn direct = connect_direct("postgres");
  exec(direct, "REVOKE ALL ON DATABASE " + std::string(kDatabase) + " FROM " + name_, false);
  exec(direct, "DROP ROLE IF EXISTS " + name_, false);
}

}  // namespace pgward::it

// ---------------------------------------------------------------------------------------------------------------
// For suites that run programs of their own (tls_env.cpp)

namespace pgward::it {

std::string read_text_file(const std::string& path) { return read_file(path); }
void write_text_file(const std::string& path, const std::string& text) { write_file(path, text); }
std::string make_temp_directory(const char* prefix) { return make_temp_dir(prefix); }
int run_program(const std::vector<std::string>& argv, const std::string& log_path) {
  return run_command(argv, log_path);
}
std::vector<std::string> postgres_user_argv(std::vector<std::string> argv) {
  return as_postgres_user(std::move(argv));
}
std::string postgres_program(const char* name) { return pg_program(name); }

}  // namespace pgward::it
