// Session operations driven from outside the relay (the end of a drain).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "protocol/sqlstate.hpp"
#include "proxy/session.hpp"

namespace pgward::proxy {

void Session::terminate() {
  if (!client_.is_open()) return;
  if (server_) {
    // Still inside a transaction past shutdown_timeout. server_loop may be writing to the client right now,
    // so it sends the 57P01 itself once the server is gone (after whatever it already forwarded).
    server_->close();
    return;
  }
  // Unlinked: client_loop only reads, so this is the one writer.
  asio::co_spawn(
      client_.get_executor(),
      [self = shared_from_this()]() -> asio::awaitable<void> {
        co_await self->send_error(protocol::sqlstate::kAdminShutdown,
                                  "terminating connection because pgward is shutting down", true);
      },
      asio::detached);
}

}  // namespace pgward::proxy
