#include "protocol/error_text.hpp"

#include "protocol/codec.hpp"

namespace pgward::protocol {

std::string rewrite_error(std::string_view body, std::string_view sqlstate, std::string_view message) {
  std::string out;
  auto fields = parse_fields(body);
  if (!fields) {
    put_error_response(out, {"ERROR", sqlstate, message});
    return out;
  }
  MessageWriter w(out, be::kErrorResponse);
  for (const auto& f : *fields) {
    w.i8(static_cast<std::uint8_t>(f.code));
    w.cstring(f.code == 'C' ? sqlstate : f.code == 'M' ? message : f.value);
  }
  w.i8(0);
  w.finish();
  return out;
}

namespace {
// 1-based character position in the text sent => the same place in the client's text.
std::string client_position(std::string_view server_pos, const std::vector<NameSwap>& swaps) {
  std::size_t p = 0;
  for (char c : server_pos) {
    if (c < '0' || c > '9' || p > (1u << 30)) return std::string(server_pos);
    p = p * 10 + static_cast<std::size_t>(c - '0');
  }
  if (p == 0) return std::string(server_pos);
  std::size_t at = p - 1;
  std::ptrdiff_t shift = 0;
  for (const NameSwap& s : swaps) {  // in text order
    if (at >= s.server_pos + s.server_chars) {
      shift += static_cast<std::ptrdiff_t>(s.server_chars) - static_cast<std::ptrdiff_t>(s.client_chars);
    } else if (at >= s.server_pos) {
      at = s.server_pos;  // inside a name pgward put there: point at the client's name
      break;
    } else {
      break;
    }
  }
  return std::to_string(static_cast<std::ptrdiff_t>(at) - shift + 1);
}

std::string client_names(std::string_view text, const std::vector<NameSwap>& swaps) {
  std::string out(text);
  for (const NameSwap& s : swaps) {
    for (std::size_t at = out.find(s.server); at != std::string::npos;
         at = out.find(s.server, at + s.client.size()))
      out.replace(at, s.server.size(), s.client);
  }
  return out;
}
}  // namespace

std::string translate_error(std::string_view body, const std::vector<NameSwap>& swaps) {
  auto fields = parse_fields(body);
  if (!fields) return std::string();
  std::string out;
  MessageWriter w(out, be::kErrorResponse);
  for (const auto& f : *fields) {
    w.i8(static_cast<std::uint8_t>(f.code));
    if (f.code == 'M' || f.code == 'D') {
      w.cstring(client_names(f.value, swaps));
    } else if (f.code == 'P') {
      w.cstring(client_position(f.value, swaps));
    } else {
      w.cstring(f.value);
    }
  }
  w.i8(0);
  w.finish();
  return out;
}

std::optional<std::string> fatal_message(std::string_view body) {
  auto fields = parse_fields(body);
  if (!fields) return std::nullopt;
  std::string_view severity = find_field(*fields, 'V');
  if (severity.empty()) severity = find_field(*fields, 'S');
  if (severity != "FATAL" && severity != "PANIC") return std::nullopt;
  return std::string(find_field(*fields, 'M'));
}

}  // namespace pgward::protocol
