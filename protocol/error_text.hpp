// Rewriting a server's ErrorResponse for the client: another SQLSTATE and message in PostgreSQL's own frame,
// or the client's statement names put back where pgward sent its own. Pure: bodies in, messages out.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgward::protocol {

// The server's ErrorResponse with its SQLSTATE and message replaced and every other field (severity, file,
// line, routine, position...) kept, so that an error pgward provokes on the client's behalf reads exactly as
// PostgreSQL's. A body that does not parse gives a minimal ERROR with just those two.
std::string rewrite_error(std::string_view body, std::string_view sqlstate, std::string_view message);

// One statement name pgward replaced in a client's SQL text: where the server's name stands in the text sent
// (in characters, as PostgreSQL counts error positions) and what the client wrote there.
struct NameSwap {
  std::string server;          // the name sent (pgw_...)
  std::string client;          // the client's name as PostgreSQL would print it (folded, unquoted)
  std::size_t server_pos = 0;  // characters before it in the text sent
  std::size_t server_chars = 0;
  std::size_t client_chars = 0;  // what the client wrote in its place, quotes included
};
// The server's ErrorResponse as the client's own text would have produced it: server names in the message
// and detail put back to the client's, and the error position moved back into the client's text. Empty when
// the body does not parse.
std::string translate_error(std::string_view body, const std::vector<NameSwap>& swaps);

// The message of an ErrorResponse body whose severity ends the connection (FATAL, PANIC); nullopt for others.
std::optional<std::string> fatal_message(std::string_view body);

}  // namespace pgward::protocol
