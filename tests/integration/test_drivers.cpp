// Real client drivers, in their default settings, many connections at once, through pgward in transaction
// mode with a small pool. Each driver names its prepared statements on its own (psycopg 3 `_pg3_0`...,
// node-postgres the names the application gives, pgjdbc `S_1`...), the same names for different SQL on
// different connections, so these tests show that such applications work behind pgward without changing a
// setting.
//
// The programs live in tests/drivers/; each takes PORT USER DBNAME, checks every result itself and prints
// "OK <n> checks" when all were right. A missing runtime (python3-psycopg, node_modules/pg, javac or pgjdbc)
// fails the test: scripts/install-deps.sh and scripts/test.sh install all of them.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"
#include "tls_env.hpp"

extern char** environ;

namespace pgward::it {
namespace {

namespace fs = std::filesystem;

// The watchdog stops a test's pgward after 60 s and aborts the run some 30 s later; a driver run ends before
// that on its own, so that its output is still reported.
constexpr auto kTestBudget = 85s;

struct RunResult {
  bool started = false;
  bool timed_out = false;
  int exit_code = -1;  // -1 unless it exited normally
  int signal = 0;      // the signal that ended it, if one did
  std::string output;  // stdout and stderr, interleaved
  std::string error;   // why it could not be started

  bool ok() const { return started && !timed_out && exit_code == 0; }
  std::string describe() const {
    std::ostringstream s;
    if (!started) {
      s << "could not start: " << error;
    } else if (timed_out) {
      s << "killed after the time limit";
    } else if (signal != 0) {
      s << "killed by signal " << signal << " (" << sigabbrev_np(signal) << ")";
    } else {
      s << "exit code " << exit_code;
    }
    return s.str();
  }
};

// Runs argv[0] (looked up in PATH) in its own process group with stdout and stderr captured; kills the whole
// group at the deadline.
RunResult run_program(const std::vector<std::string>& argv, Clock::time_point deadline,
                      const fs::path& cwd = {}) {
  RunResult result;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    result.error = std::string("pipe2: ") + std::strerror(errno);
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);  // ignored by the test binary; the driver gets the default back
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);

  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    result.error = argv[0] + ": " + std::strerror(rc);
    return result;
  }
  result.started = true;

  char buffer[8192];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      result.timed_out = true;
      kill(-pid, SIGKILL);
      break;
    }
    pollfd p{.fd = fds[0], .events = POLLIN, .revents = 0};
    const int n = poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    const ssize_t got = read(fds[0], buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: every process holding the pipe has exited
    result.output.append(buffer, static_cast<std::size_t>(got));
  }
  close(fds[0]);
  // The group is killed only while its leader is not yet reaped, so that its id cannot have been reused.
  int status = 0;
  for (;;) {
    const pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) break;
    if (Clock::now() >= deadline) {
      result.timed_out = true;
      kill(-pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    usleep(10'000);
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

// The program's own verdict: a line "OK <n> checks"; n, or -1 when there is none.
long ok_checks(const std::string& output) {
  static const std::regex line(R"((^|\n)OK ([0-9]+) checks(\r?\n|$))");
  std::smatch m;
  if (!std::regex_search(output, m, line)) return -1;
  return std::stol(m[2].str());
}

fs::path drivers_dir() { return fs::path(__FILE__).parent_path().parent_path() / "drivers"; }

// An executable in PATH, "" if there is none.
std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    const fs::path candidate = fs::path(dir) / name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

// With `tls`, clients must use TLS ([client_tls] mode = "require", pgward's certificate from the test CA).
PgwardConfig transaction_pool(int size, bool tls = false) {
  PgwardConfig config{.pool = "mode = \"transaction\"\nsize = " + std::to_string(size) + "\n"};
  if (tls) {
    const TlsFiles& f = tls_files();
    config.databases += "\n[client_tls]\nmode = \"require\"\ncert_file = \"" + f.path("pgward.crt") +
                        "\"\nkey_file = \"" + f.path("pgward.key") + "\"\n";
  }
  return config;
}

// The drivers' own TLS settings, from the environment while one lives: libpq (psycopg) reads PGSSLMODE and
// PGSSLROOTCERT, node-postgres PGSSLMODE (and Node NODE_EXTRA_CA_CERTS), JdbcTest.java both.
struct VerifyFullEnvironment {
  explicit VerifyFullEnvironment(bool on) : on(on) {
    if (!on) return;
    const std::string ca = tls_files().path("ca.crt");
    setenv("PGSSLMODE", "verify-full", 1);
    setenv("PGSSLROOTCERT", ca.c_str(), 1);
    setenv("NODE_EXTRA_CA_CERTS", ca.c_str(), 1);
  }
  ~VerifyFullEnvironment() {
    if (!on) return;
    for (const char* name : {"PGSSLMODE", "PGSSLROOTCERT", "NODE_EXTRA_CA_CERTS"}) unsetenv(name);
  }
  VerifyFullEnvironment(const VerifyFullEnvironment&) = delete;
  VerifyFullEnvironment& operator=(const VerifyFullEnvironment&) = delete;
  const bool on;
};

std::vector<std::string> connection_args(const Pgward& pgward) {
  return {std::to_string(pgward.port()), kTrustUser, kDatabase};
}

// Asserts that a driver program passed: exit code 0 and its "OK <n> checks" line with at least min_checks.
void expect_driver_passed(const std::string& name, const RunResult& run, long min_checks) {
  const long checks = ok_checks(run.output);
  const std::string verdict =
      checks < 0 ? "no \"OK <n> checks\" line"
                 : std::to_string(checks) + " checks, at least " + std::to_string(min_checks) + " expected";
  EXPECT_TRUE(run.ok() && checks >= min_checks)
      << name << ": " << run.describe() << ", " << verdict << "\n---- " << name << " output ----\n"
      << run.output << "\n---- end of " << name << " output ----";
}

// A temporary directory removed at the end of the scope.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "pgward-drivers-XXXXXX").string();
    if (mkdtemp(pattern.data()) != nullptr) path = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path.empty()) fs::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// psycopg 3: 20 threads with autoprepare (_pg3_N after 5 runs), pipeline mode with a failing statement,
// transactions with committed and rolled back inserts.
void psycopg3(bool tls) {
  const auto deadline = Clock::now() + kTestBudget;
  const fs::path script = drivers_dir() / "psycopg_test.py";
  ASSERT_TRUE(fs::exists(script)) << script << " is missing";
  const std::string python = "/usr/bin/python3";  // Debian's, which sees the python3-psycopg package
  ASSERT_EQ(access(python.c_str(), X_OK), 0) << python << " is missing: install the Debian package python3";
  const RunResult probe = run_program({python, "-c", "import psycopg"}, deadline);
  ASSERT_TRUE(probe.ok()) << "psycopg 3 is not importable by " << python
                          << ": install the Debian package python3-psycopg (scripts/install-deps.sh does)\n"
                          << probe.describe() << "\n"
                          << probe.output;

  Pgward pgward(transaction_pool(2, tls));
  std::vector<std::string> argv{python, script.string()};
  for (auto& a : connection_args(pgward)) argv.push_back(a);
  const VerifyFullEnvironment env(tls);
  const RunResult run = run_program(argv, deadline);
  expect_driver_passed("psycopg_test.py", run, 1000);
  EXPECT_TRUE(pgward.running());
}

TEST(Drivers, Psycopg3DefaultSettings) { psycopg3(false); }
TEST(Drivers, Psycopg3OverTlsVerifyFull) { psycopg3(true); }

// node-postgres: 20 pg.Client connections with the same statement names for different SQL, named queries in
// transactions, and two pg.Pool instances.
void node_postgres(bool tls) {
  const auto deadline = Clock::now() + kTestBudget;
  const fs::path dir = drivers_dir() / "node";
  ASSERT_TRUE(fs::exists(dir / "pg_test.js")) << dir / "pg_test.js"
                                              << " is missing";
  const std::string node = find_in_path("node");
  ASSERT_FALSE(node.empty()) << "node is not in PATH: install Node.js (scripts/install-deps.sh does)";
  ASSERT_TRUE(fs::exists(dir / "node_modules" / "pg" / "package.json"))
      << "node-postgres is not installed in " << dir
      << ": run `npm ci --no-audit --no-fund` there (scripts/test.sh does)";

  Pgward pgward(transaction_pool(4, tls));
  std::vector<std::string> argv{node, "pg_test.js"};
  for (auto& a : connection_args(pgward)) argv.push_back(a);
  const VerifyFullEnvironment env(tls);
  const RunResult run = run_program(argv, deadline, dir);
  expect_driver_passed("pg_test.js", run, 1000);
  EXPECT_TRUE(pgward.running());
}

TEST(Drivers, NodePostgresDefaultSettings) { node_postgres(false); }
TEST(Drivers, NodePostgresOverTlsVerifyFull) { node_postgres(true); }

// pgjdbc: 10 threads with PreparedStatements past prepareThreshold (S_N), batch inserts in transactions.
void pgjdbc(bool tls) {
  const auto deadline = Clock::now() + kTestBudget;
  const fs::path source = drivers_dir() / "java" / "JdbcTest.java";
  ASSERT_TRUE(fs::exists(source)) << source << " is missing";
  const std::string javac = find_in_path("javac");
  const std::string java = find_in_path("java");
  ASSERT_FALSE(javac.empty() || java.empty())
      << "javac/java are not in PATH: install a JDK (scripts/install-deps.sh does)";
  const std::string jar = "/usr/share/java/postgresql.jar";
  ASSERT_TRUE(fs::exists(jar)) << jar
                               << " is missing: install the Debian package libpostgresql-jdbc-java "
                                  "(scripts/install-deps.sh does)";

  TempDir classes;
  ASSERT_FALSE(classes.path.empty()) << "mkdtemp: " << std::strerror(errno);
  const RunResult compile = run_program(
      {javac, "-Xlint:all", "-Werror", "-cp", jar, "-d", classes.path.string(), source.string()}, deadline);
  ASSERT_TRUE(compile.ok()) << "javac JdbcTest.java: " << compile.describe() << "\n" << compile.output;

  Pgward pgward(transaction_pool(2, tls));
  std::vector<std::string> argv{java, "-cp", jar + ":" + classes.path.string(), "JdbcTest"};
  for (auto& a : connection_args(pgward)) argv.push_back(a);
  const VerifyFullEnvironment env(tls);
  const RunResult run = run_program(argv, deadline);
  expect_driver_passed("JdbcTest", run, 1000);
  EXPECT_TRUE(pgward.running());
}

TEST(Drivers, PgjdbcDefaultSettings) { pgjdbc(false); }
TEST(Drivers, PgjdbcOverTlsVerifyFull) { pgjdbc(true); }

}  // namespace
}  // namespace pgward::it
