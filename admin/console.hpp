// The admin console's commands (see proxy/console.hpp): make_console() is what app/ hands to
// Proxy::set_console(); the parser is here for the unit tests.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/console.hpp"
#include "proxy/proxy.hpp"

namespace pgward::admin {

std::unique_ptr<proxy::Console> make_console(proxy::Proxy& proxy, std::string version);

// One console command: its words lower-cased (`words`) and as written (`original`, quotes removed), after an
// optional trailing semicolon; `error` says why the text is not one command.
struct ConsoleCommand {
  std::vector<std::string> words;
  std::vector<std::string> original;
  std::string error;
};
ConsoleCommand parse_console_command(std::string_view sql);

}  // namespace pgward::admin
