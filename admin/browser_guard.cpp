#include "admin/browser_guard.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace pgward::admin {

namespace {

using Address = std::array<std::uint8_t, 16>;  // IPv6, IPv4 as ::ffff:a.b.c.d

std::optional<Address> parse_address(std::string_view text) {
  if (text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string s(text);
  Address a{};
  in_addr v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    a[10] = a[11] = 0xff;
    std::memcpy(a.data() + 12, &v4, 4);
    return a;
  }
  if (inet_pton(AF_INET6, s.c_str(), a.data()) == 1) return a;
  return std::nullopt;
}

bool is_v4_mapped(const Address& a) {
  return std::all_of(a.begin(), a.begin() + 10, [](std::uint8_t b) { return b == 0; }) && a[10] == 0xff &&
         a[11] == 0xff;
}

bool is_loopback(const Address& a) {
  if (is_v4_mapped(a)) return a[12] == 127;
  return std::all_of(a.begin(), a.begin() + 15, [](std::uint8_t b) { return b == 0; }) && a[15] == 1;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x >= 'A' && x <= 'Z' ? x - 'A' + 'a' : x) == (y >= 'A' && y <= 'Z' ? y - 'A' + 'a' : y);
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The host of "host", "host:port", "[v6]" or "[v6]:port"; nullopt when it is none of these.
std::optional<std::string_view> host_part(std::string_view authority) {
  std::string_view host, rest;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    rest = authority.substr(close + 1);
  } else {
    const auto colon = authority.find(':');
    host = authority.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view{} : authority.substr(colon);
  }
  if (!rest.empty()) {
    if (rest.front() != ':' || rest.size() > 6) return std::nullopt;
    rest.remove_prefix(1);
    if (!std::all_of(rest.begin(), rest.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::nullopt;
  }
  if (host.empty()) return std::nullopt;
  return host;
}

std::string quoted(std::string_view s) {
  // Only for the JSON message: keep it short and printable.
  std::string out;
  for (char c : s.substr(0, 100)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

}  // namespace

std::string_view to_string(Refusal reason) {
  switch (reason) {
    case Refusal::host: return "host";
    case Refusal::origin: return "origin";
    case Refusal::content_type: return "content_type";
  }
  return "host";
}

bool host_allowed(std::string_view host_header, const std::vector<std::string>& own_hosts) {
  const auto host = host_part(trim(host_header));
  if (!host) return false;
  if (iequals(*host, "localhost")) return true;
  const auto address = parse_address(*host);
  if (address && is_loopback(*address)) return true;
  for (const std::string& own : own_hosts) {
    if (own == "*" || own.empty()) continue;
    if (iequals(*host, own)) return true;
    if (address && parse_address(own) == address) return true;
  }
  return false;
}

bool same_origin(std::string_view origin, std::string_view host) {
  origin = trim(origin);
  std::string_view authority;
  if (origin.starts_with("http://")) {
    authority = origin.substr(7);
  } else if (origin.starts_with("https://")) {
    authority = origin.substr(8);
  } else {
    return false;  // "null" (a sandboxed or file: page) and anything else
  }
  return !authority.empty() && iequals(authority, trim(host));
}

bool json_content_type(std::string_view content_type) {
  return iequals(trim(content_type.substr(0, content_type.find(';'))), "application/json");
}

std::optional<Refused> check_browser_request(const RequestFacts& r,
                                             const std::vector<std::string>& own_hosts) {
  if (r.safe_method && r.probe) return std::nullopt;
  if (!r.token_ok) {
    if (r.host_headers != 1) return Refused{Refusal::host, "a request needs exactly one Host header"};
    if (!host_allowed(r.host, own_hosts))
      return Refused{Refusal::host, "Host \"" + quoted(r.host) +
                                        "\" does not name this admin port (use localhost, a loopback address "
                                        "or the [admin] listen address, or send the [admin] token)"};
  }
  if (r.safe_method) return std::nullopt;
  if (r.origin && !same_origin(*r.origin, r.host))
    return Refused{Refusal::origin, "cross-origin request refused (Origin \"" + quoted(*r.origin) + "\")"};
  if (r.sec_fetch_site && !iequals(trim(*r.sec_fetch_site), "same-origin") &&
      !iequals(trim(*r.sec_fetch_site), "none"))
    return Refused{Refusal::origin,
                   "cross-origin request refused (Sec-Fetch-Site \"" + quoted(*r.sec_fetch_site) + "\")"};
  if (r.content_type && !json_content_type(*r.content_type))
    return Refused{Refusal::content_type, "Content-Type \"" + quoted(*r.content_type) +
                                              "\" refused: send no body, or application/json"};
  return std::nullopt;
}

}  // namespace pgward::admin
