#include "asio/socket_close.hpp"

#include <sys/socket.h>

#include <memory>

#include "asio/backend.hpp"

namespace pgward {

namespace {

using boost::asio::ip::tcp;

// Ends the connection, or the listening, so that every queued operation completes at once. A listener has no
// shutdown() in Asio; on Linux shutdown(2) stops it listening and wakes its waiters.
[[maybe_unused]] void shut_down(tcp::socket& socket) {
  boost::system::error_code ec;
  socket.shutdown(tcp::socket::shutdown_both, ec);
}
[[maybe_unused]] void shut_down(tcp::acceptor& acceptor) { ::shutdown(acceptor.native_handle(), SHUT_RDWR); }

// The socket moved aside, and the waits still queued on it.
template <class Socket>
struct Closing {
  explicit Closing(Socket&& s) : socket(std::move(s)) {}
  Socket socket;
  int waiting = 2;
};

template <class Socket>
void close_when_idle(Socket& socket) {
  boost::system::error_code ec;
  socket.cancel(ec);
  shut_down(socket);
  auto closing = std::make_shared<Closing<Socket>>(std::move(socket));
  // Reads (and accepts) queue behind each other, writes (and connects) too: each wait completes after the
  // operations ahead of it, at once since the connection is shut down. The handlers run on the socket's
  // executor, one at a time.
  for (const auto what : {Socket::wait_read, Socket::wait_write}) {
    closing->socket.async_wait(what, [closing](const boost::system::error_code&) {
      if (--closing->waiting > 0) return;
      boost::system::error_code ignored;
      closing->socket.close(ignored);
    });
  }
}

template <class Socket>
void close_any(Socket& socket) noexcept {
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

}  // namespace

void close_socket(tcp::socket& socket) noexcept { close_any(socket); }
void close_socket(tcp::acceptor& acceptor) noexcept { close_any(acceptor); }

}  // namespace pgward
