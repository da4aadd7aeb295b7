// What http.cpp serves, kept out of the Beast translation unit.
#pragma once

#include <array>
#include <boost/asio/awaitable.hpp>
#include <string>
#include <string_view>

#include "admin/browser_guard.hpp"
#include "proxy/proxy.hpp"
#include "proxy/stats.hpp"

namespace pgward::admin {

// Requests the admin port refused as ones a browser could have been made to send, indexed by Refusal.
using RefusalCounts = std::array<proxy::stats::Counter, kRefusals.size()>;

// The Prometheus text exposition of everything in proxy/stats.hpp, the pools and the admin port's own
// refusals.
std::string render_metrics(proxy::Proxy& proxy, const std::string& version, const RefusalCounts& refused);

std::string pools_json(proxy::Proxy& proxy);
std::string clients_json(proxy::Proxy& proxy);
std::string servers_json(proxy::Proxy& proxy);
std::string config_json(proxy::Proxy& proxy);

struct Readiness {
  bool ready = true;
  std::string json;
};
// Not ready while draining, while paused, or while any configured database refuses a TCP connection.
boost::asio::awaitable<Readiness> check_ready(proxy::Proxy& proxy);

std::string json_string(std::string_view s);

}  // namespace pgward::admin
