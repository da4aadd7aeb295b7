#include "asio/socket_close.hpp"

#include <memory>

#include "asio/backend.hpp"

namespace pgward {

namespace {

using boost::asio::ip::tcp;

// The socket moved aside, and the waits still queued on it.
struct Closing {
  explicit Closing(tcp::socket&& s) : socket(std::move(s)) {}
  tcp::socket socket;
  int waiting = 2;
};

void close_when_idle(tcp::socket& socket) {
  boost::system::error_code ec;
  socket.cancel(ec);
  socket.shutdown(tcp::socket::shutdown_both, ec);
  auto closing = std::make_shared<Closing>(std::move(socket));
  // Reads (and accepts) queue behind each other, writes (and connects) too: each wait completes after the
  // operations ahead of it, at once since the connection is shut down. The handlers run on the socket's
  // executor, one at a time.
  for (const auto what : {tcp::socket::wait_read, tcp::socket::wait_write}) {
    closing->socket.async_wait(what, [closing](const boost::system::error_code&) {
      if (--closing->waiting > 0) return;
      boost::system::error_code ignored;
      closing->socket.close(ignored);
    });
  }
}

}  // namespace

void close_socket(tcp::socket& socket) noexcept {
  boost::system::error_code ec;
  if constexpr (kIoBackend == "io_uring") {
    if (!socket.is_open()) return;
    try {
      close_when_idle(socket);
      return;
    } catch (const std::exception&) {
      // Out of memory: close at once (the socket was not moved).
    }
  }
  socket.close(ec);
}

}  // namespace pgward
