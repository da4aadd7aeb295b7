// The event loop: [proxy] io_backend = auto | epoll | io_uring (app/io_backend.cpp). pgward runs on io_uring
// where the kernel allows it (it execs pgward-io_uring, built beside it), falls back to epoll by itself where
// a seccomp profile forbids io_uring (as Docker's and Kubernetes' defaults do), and says which in its log and
// in pgward_build_info. The whole suite runs once per event loop besides (tests/CMakeLists.txt).
#include <sys/wait.h>

#include <fstream>
#include <thread>

#include "harness.hpp"

namespace pgward::it {
namespace {

// Skips the test in a build without pgward-io_uring (cmake -DPGWARD_IO_URING=OFF, as the sanitizer builds
// are).
#ifdef PGWARD_TEST_IO_URING_BUILD
#define SKIP_WITHOUT_IO_URING_BUILD() (void)0
#else
#define SKIP_WITHOUT_IO_URING_BUILD() GTEST_SKIP() << "built without pgward-io_uring"
#endif

// io_uring turned off for the whole machine (kernel.io_uring_disabled, Linux 6.6+): then "auto" means epoll.
bool io_uring_disabled_by_sysctl() {
  std::ifstream in("/proc/sys/kernel/io_uring_disabled");
  int value = 0;
  return in >> value && value != 0;
}

// The io_backend label of pgward_build_info ("" when the metric is missing).
std::string build_info_backend(const Pgward& pgward) {
  const std::string body = http(pgward.admin_port(), "GET", "/metrics").body;
  const std::string key = "io_backend=\"";
  const auto line = body.find("pgward_build_info{");
  if (line == std::string::npos) return "";
  const auto at = body.find(key, line);
  if (at == std::string::npos || at > body.find('\n', line)) return "";
  const auto start = at + key.size();
  return body.substr(start, body.find('"', start) - start);
}

PgwardConfig with_backend(const std::string& backend, bool forbid_io_uring = false) {
  PgwardConfig config;
  config.proxy += "io_backend = \"" + backend + "\"\n";
  config.forbid_io_uring = forbid_io_uring;
  return config;
}

// A query through pgward and back, and a transaction, on whatever loop it runs.
void expect_serves(const Pgward& pgward) {
  Conn c = pgward.connect();
  EXPECT_EQ(query_value(c, "SELECT 6 * 7"), "42");
  exec(c, "BEGIN");
  EXPECT_EQ(query_value(c, "SELECT count(*) FROM generate_series(1, 1000)"), "1000");
  exec(c, "COMMIT");
}

TEST(IoBackend, AutoRunsOnIoUringWhereTheKernelAllowsIt) {
  SKIP_WITHOUT_IO_URING_BUILD();
  if (io_uring_disabled_by_sysctl()) GTEST_SKIP() << "kernel.io_uring_disabled is set on this machine";
  Pgward pgward(with_backend("auto"));
  EXPECT_EQ(build_info_backend(pgward), "io_uring");
  EXPECT_NE(pgward.log().find("(event loop: io_uring)"), std::string::npos) << pgward.log_tail(20);
  expect_serves(pgward);
}

TEST(IoBackend, EpollWhenConfigured) {
  Pgward pgward(with_backend("epoll"));
  EXPECT_EQ(build_info_backend(pgward), "epoll");
  EXPECT_NE(pgward.log().find("(event loop: epoll)"), std::string::npos) << pgward.log_tail(20);
  EXPECT_EQ(pgward.log().find("io_uring is not available"), std::string::npos) << pgward.log_tail(20);
  expect_serves(pgward);
}

TEST(IoBackend, FallsBackToEpollWhenSeccompForbidsIoUring) {
  SKIP_WITHOUT_IO_URING_BUILD();
  Pgward pgward(with_backend("auto", /*forbid_io_uring=*/true));
  EXPECT_EQ(build_info_backend(pgward), "epoll");
  const std::string log = pgward.log();
  EXPECT_NE(
      log.find("io_uring is not available here (io_uring_setup failed: Operation not permitted): running "
               "on epoll"),
      std::string::npos)
      << log;
  expect_serves(pgward);
}

TEST(IoBackend, ForcedIoUringRefusesToStartWhenForbidden) {
  SKIP_WITHOUT_IO_URING_BUILD();
  const std::string dir = make_temp_directory("pgward-it-io");
  const int port = free_port();
  write_text_file(dir + "/config.toml", "[proxy]\nlisten = \"127.0.0.1:" + std::to_string(port) +
                                            "\"\nio_backend = \"io_uring\"\n[admin]\nlisten = \"127.0.0.1:" +
                                            std::to_string(free_port()) + "\"\n[auth]\ntype = \"trust\"\n" +
                                            PgwardConfig::database_toml(kDatabase));
  const pid_t pid = spawn_process({PGWARD_BINARY, "--config", dir + "/config.toml"}, dir + "/pgward.log",
                                  /*die_with_parent=*/true, /*forbid_io_uring=*/true);
  int status = -1;
  ASSERT_TRUE(wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 10s));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string log = read_text_file(dir + "/pgward.log");
  EXPECT_NE(log.find("io_backend = \"io_uring\", but io_uring is not available here (io_uring_setup failed: "
                     "Operation not permitted)"),
            std::string::npos)
      << log;
  EXPECT_FALSE(
      Conn::connect("host=127.0.0.1 port=" + std::to_string(port) + " dbname=" + kDatabase, 2s).ok());
}

}  // namespace
}  // namespace pgward::it
