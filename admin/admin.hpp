// The admin HTTP port ([admin] listen): /metrics, /health/live, /health/ready, the JSON views under /api/ and
// the operations (reload, pause, resume). It runs on the proxy's main io_context, reads the proxy through its
// read-only views and atomics, and never holds a lock a session could wait on for longer than a copy.
#pragma once

#include <memory>
#include <string>

#include "proxy/proxy.hpp"

namespace pgward::admin {

// The service to hand to Proxy::add_service(); it binds at Proxy::run().
std::unique_ptr<proxy::Service> make_admin_server(proxy::Proxy& proxy, std::string version);

}  // namespace pgward::admin
