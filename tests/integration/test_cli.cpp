// The command line as README and interface.md describe it: --check-config, --version and --import-pgbouncer
// on the real binary.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "harness.hpp"

namespace pgward::it {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

CliRun run_pgward(const std::string& args) {
  CliRun r;
  const std::string cmd = std::string(PGWARD_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) r.output += buf;
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string write_config(const std::string& text) {
  const std::string path = "/tmp/" + unique_name("pgward-cli") + ".toml";
  std::ofstream(path) << text;
  return path;
}

TEST(Cli, CheckConfigAcceptsAValidFile) {
  const std::string path = write_config("[auth]\ntype = \"trust\"\n\n[[database]]\nname = \"app\"\n");
  const CliRun r = run_pgward("--check-config " + path);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::remove(path.c_str());
}

TEST(Cli, CheckConfigNamesFileAndLineOfTheProblem) {
  const struct {
    std::string text;
    std::string expected;  // after "FILE:"
  } cases[] = {
      {"[proxy]\nlisten = \"127.0.0.1:6432\"\nbogus = 1\n", "3: unknown key \"proxy.bogus\""},
      {"[auth]\ntype = \"trust\"\n[pool]\nwait_timeout = \"30\"\n",
       "4: pool.wait_timeout: bad duration \"30\""},
      {"[auth]\ntype = \"trust\"\n[proxy]\nlisten = \"not an address\"\n", "4: "},
      {"[auth]\ntype = \"md5\"\nusers_file = \"/nonexistent/users.toml\"\n", "3: "},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const std::string path = write_config(c.text);
    const CliRun r = run_pgward("--check-config " + path);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_EQ(r.output.rfind(path + ":" + c.expected, 0), 0u) << r.output;
    std::remove(path.c_str());
  }
  const CliRun missing = run_pgward("--check-config /nonexistent/pgward.toml");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.output.rfind("/nonexistent/pgward.toml:", 0), 0u) << missing.output;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// --import-pgbouncer prints a configuration that --check-config accepts, with what it left out on stderr.
TEST(Cli, ImportPgbouncerOutputPassesCheckConfig) {
  const std::string dir = "/tmp/" + unique_name("pgward-cli-import");
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  std::ofstream(dir + "/pgbouncer.ini")
      << "[databases]\n"
         "app = host=127.0.0.1 port=5432 dbname=app password='a b' pool_size=5\n"
         "reports = host=127.0.0.1 dbname=reports pool_mode=session\n"
         "* = host=127.0.0.1\n"
         "[pgbouncer]\n"
         "listen_addr = 127.0.0.1\n"
         "listen_port = 6499\n"
         "auth_type = md5\n"
         "auth_file = userlist.txt\n"
         "admin_users = admin\n"
         "stats_users = stats\n"
         "query_wait_timeout = 2.5\n";
  std::ofstream(dir + "/userlist.txt") << "\"alice\" \"secret\"\n";

  const std::string import_cmd = std::string(PGWARD_BINARY) + " --import-pgbouncer " + dir +
                                 "/pgbouncer.ini --userlist " + dir + "/userlist.txt >" + dir +
                                 "/pgward.toml 2>" + dir + "/warnings.txt";
  const int status = std::system(import_cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << read_all(dir + "/warnings.txt");
  EXPECT_EQ(
      read_all(dir + "/warnings.txt"),
      dir +
          "/pgbouncer.ini:11: stats_users: not carried over: pgward's console has no read-only users (add "
          "them to [admin] console_users for full console access, or read the admin HTTP port's /api "
          "views)\n");

  // The users file travels as a commented block after the configuration: save it without the "# ".
  const std::string toml = read_all(dir + "/pgward.toml");
  EXPECT_NE(toml.find("[admin]\nconsole_users = [\"admin\"]\n"), std::string::npos) << toml;
  const auto block = toml.find("# users.toml");
  ASSERT_NE(block, std::string::npos) << toml;
  std::istringstream lines(toml.substr(toml.find('\n', block) + 1));
  std::ofstream users(dir + "/users.toml");
  for (std::string line; std::getline(lines, line);) users << line.substr(2) << "\n";
  users.close();

  const CliRun check = run_pgward("--check-config " + dir + "/pgward.toml");
  EXPECT_EQ(check.exit_code, 0) << check.output << toml;

  std::ofstream(dir + "/bad.ini") << "[pgbouncer]\nmax_client_conn = many\n";
  const CliRun bad = run_pgward("--import-pgbouncer " + dir + "/bad.ini");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.output, dir + "/bad.ini:2: max_client_conn: expected a whole number, got \"many\"\n");
  EXPECT_EQ(std::system(("rm -rf " + dir).c_str()), 0);
}

TEST(Cli, VersionAndUsage) {
  const CliRun v = run_pgward("--version");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.output.rfind("pgward ", 0), 0u) << v.output;
  EXPECT_NE(run_pgward("--no-such-flag x").exit_code, 0);
}

}  // namespace
}  // namespace pgward::it
