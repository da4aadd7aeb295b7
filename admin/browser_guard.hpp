// What keeps a web browser from driving the admin port on someone's behalf. A page on any site can make the
// browser send a "simple" cross-origin request (GET, HEAD or POST with a form's Content-Type, no custom
// headers) without asking the server first, and DNS rebinding can point a name of the attacker's at
// 127.0.0.1 so that the browser counts the admin port as the page's own origin. Browsers, however, always
// send the Host they think they talk to, send Origin (and, lately, Sec-Fetch-Site) on a POST, and cannot
// attach an Authorization header or a non-form Content-Type without a CORS preflight, which pgward never
// approves.
//
// So, for every request except GET/HEAD of /metrics and /health/* (which Prometheus and kubelet call with
// whatever Host they were configured with, often a pod IP or a Service name):
//   - Host must name this admin port: localhost, a loopback address, an [admin] listen host, or the address
//     the connection arrived on, with any port. A request carrying the configured token is exempt (a page
//     cannot know it).
// and for every method other than GET and HEAD:
//   - Origin, when present, must be this very Host; Sec-Fetch-Site, when present, must be same-origin or
//   none;
//   - Content-Type, when present, must be application/json (the endpoints take no body).
// Pure: no sockets, no Beast; http.cpp feeds it the headers.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgward::admin {

// The label values of pgward_admin_requests_refused_total{reason}: a fixed set.
enum class Refusal { host, origin, content_type };
inline constexpr std::array<Refusal, 3> kRefusals = {Refusal::host, Refusal::origin, Refusal::content_type};
std::string_view to_string(Refusal reason);

struct RequestFacts {
  bool safe_method = true;  // GET or HEAD
  bool probe = false;       // /metrics or /health/*
  bool token_ok = false;    // carried `Authorization: Bearer <the configured token>`
  std::size_t host_headers = 0;
  std::string_view host;
  std::optional<std::string_view> origin;
  std::optional<std::string_view> sec_fetch_site;
  std::optional<std::string_view> content_type;
};

struct Refused {
  Refusal reason;
  std::string message;  // for the JSON answer
};

// own_hosts: the [admin] listen hosts and the local address of the connection (numeric, or "localhost").
std::optional<Refused> check_browser_request(const RequestFacts& request,
                                             const std::vector<std::string>& own_hosts);

// Host header (RFC 9110 7.2: uri-host [ ":" port ]) naming localhost, a loopback address or one of own_hosts.
bool host_allowed(std::string_view host, const std::vector<std::string>& own_hosts);
// Origin (RFC 6454: scheme "://" host [ ":" port ], or "null") of a page served from `host`.
bool same_origin(std::string_view origin, std::string_view host);
// No body a browser could send without a preflight: application/json, whatever its parameters.
bool json_content_type(std::string_view content_type);

}  // namespace pgward::admin
