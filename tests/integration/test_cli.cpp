// The command line as README and interface.md describe it: --check-config and --version on the real binary.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
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

TEST(Cli, VersionAndUsage) {
  const CliRun v = run_pgward("--version");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.output.rfind("pgward ", 0), 0u) << v.output;
  EXPECT_NE(run_pgward("--no-such-flag x").exit_code, 0);
}

}  // namespace
}  // namespace pgward::it
