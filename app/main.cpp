// pgward: the command line (see README "Command line"): --config FILE, --check-config FILE, --version,
// --import-pgbouncer INI [--userlist FILE].
// The event loop ([proxy] io_backend) is chosen in app/io_backend.cpp.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>

#include "admin/admin.hpp"
#include "admin/console.hpp"
#include "app/io_backend.hpp"
#include "asio/backend.hpp"
#include "config/config.hpp"
#include "config/pgbouncer_import.hpp"
#include "proxy/proxy.hpp"

#ifndef PGWARD_VERSION
#define PGWARD_VERSION "0.0.0"
#endif

namespace {

int usage(std::ostream& os, int code) {
  os << "usage: pgward --config FILE        run the proxy in the foreground (logs to stderr)\n"
        "       pgward --check-config FILE  validate FILE and exit (0 valid, 1 invalid)\n"
        "       pgward --version\n"
        "       pgward --import-pgbouncer PGBOUNCER_INI [--userlist FILE]\n"
        "                                   print the equivalent pgward TOML on stdout, warnings on stderr\n";
  return code;
}

// --import-pgbouncer INI [--userlist FILE]: the configuration on stdout, one line per setting left out on
// stderr.
int import_pgbouncer(int argc, char** argv) {
  std::optional<std::string> userlist;
  if (argc == 5 && std::strcmp(argv[3], "--userlist") == 0) {
    userlist = argv[4];
  } else if (argc != 3) {
    return usage(std::cerr, 2);
  }
  try {
    const auto result = pgward::config::import_pgbouncer(argv[2], userlist);
    for (const std::string& warning : result.warnings) std::cerr << warning << "\n";
    std::cout << result.toml;
    return 0;
  } catch (const pgward::config::ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::cout << "pgward " << PGWARD_VERSION << "\n";
    return 0;
  }
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0))
    return usage(std::cout, 0);
  if (argc >= 2 && std::strcmp(argv[1], "--import-pgbouncer") == 0) return import_pgbouncer(argc, argv);
  if (argc != 3) return usage(std::cerr, 2);

  const std::string mode = argv[1];
  const std::string path = argv[2];
  if (mode != "--config" && mode != "--check-config") return usage(std::cerr, 2);

  std::shared_ptr<const pgward::config::Config> cfg;
  try {
    cfg = std::make_shared<const pgward::config::Config>(pgward::config::load_config(path));
  } catch (const pgward::config::ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  if (mode == "--check-config") {
    std::cout << path << ": ok\n";
    return 0;
  }
  // The event loop, before any thread or socket exists: this binary's, or an exec of the other build.
  auto io = pgward::app::choose_io_backend(cfg->io_backend, pgward::app::take_reexec_mark());
  if (!io.exec.empty()) {
    io.warning = pgward::app::exec_choice(io, argv) + ": running on " + std::string(pgward::kIoBackend);
    if (cfg->io_backend != "auto" && cfg->io_backend != pgward::kIoBackend) io.error = io.warning;
  }
  if (!io.error.empty()) {
    std::cerr << path << ": " << io.error << "\n";
    return 1;
  }

  auto logger = spdlog::stderr_color_mt("pgward");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(cfg->log_level));
  spdlog::info("pgward {} starting with {} (event loop: {})", PGWARD_VERSION, path, pgward::kIoBackend);
  if (!io.warning.empty()) spdlog::warn("{}", io.warning);

  int code = 1;
  try {
    // Never destroyed: once run() returns, clients have had their answers (drain sends 57P01), and unwinding
    // would destroy suspended sessions whose destructors reach back into the proxy's registries and pools
    // mid-teardown.
    auto* proxy = new pgward::proxy::Proxy(cfg, path);
    proxy->add_service(pgward::admin::make_admin_server(*proxy, PGWARD_VERSION));
    proxy->set_console(pgward::admin::make_console(*proxy, PGWARD_VERSION));
    code = proxy->run();
  } catch (const std::exception& e) {
    spdlog::critical("fatal: {}", e.what());
  }
  spdlog::shutdown();
  std::fflush(nullptr);
  std::_Exit(code);
}
