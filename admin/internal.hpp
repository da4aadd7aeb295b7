// What http.cpp serves, kept out of the Beast translation unit.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <string>
#include <string_view>

#include "proxy/proxy.hpp"

namespace pgward::admin {

// The Prometheus text exposition of everything in proxy/stats.hpp and the pools.
std::string render_metrics(proxy::Proxy& proxy, const std::string& version);

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
