// The admin console (PgBouncer's habit): the virtual database config::kConsoleDatabase on the proxy port, for
// the users in [admin] console_users. The session (session_console.cpp) speaks the protocol; what the
// commands mean (SHOW POOLS, PAUSE, RELOAD...) comes from the admin library through this interface, so that
// the console and the HTTP admin port share one implementation.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgward::proxy {

// One command's answer, without the ReadyForQuery: RowDescription + DataRows + CommandComplete, or an
// ErrorResponse (then `error_sqlstate` is its code, for the error counters).
struct ConsoleReply {
  std::string wire;
  std::string error_sqlstate;
};

class Console {
 public:
  virtual ~Console() = default;
  // ParameterStatus values a console client is welcomed with (server_version...).
  virtual std::vector<std::pair<std::string, std::string>> welcome_params() const = 0;
  // Runs one simple Query's text. Called on the proxy's main io_context, as the HTTP admin port's handlers.
  virtual ConsoleReply answer(std::string_view sql) = 0;
};

}  // namespace pgward::proxy
