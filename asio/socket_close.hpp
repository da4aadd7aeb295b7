// Closing a socket or a listener that may have operations in flight, on either event loop.
#pragma once

#include <boost/asio/ip/tcp.hpp>

namespace pgward {

// Closes `socket`: its pending operations complete with operation_aborted (or an EOF or error that was on its
// way) and the peer sees the end of the connection. On epoll that is socket.close(). On io_uring, Asio (1.81
// and later) hands a closed socket's bookkeeping to the next socket opened while the kernel may still hold a
// cancelled operation of the old one, whose late completion then lands on the new socket (a read's byte
// count, an accept's descriptor), and the old operation is performed again on whatever now has its descriptor
// number. So there the operations are cancelled, the connection is shut down, and the socket is moved aside
// and closed only once an operation queued behind every pending one has completed.
// Either way `socket` is closed when this returns.
void close_socket(boost::asio::ip::tcp::socket& socket) noexcept;

// The same for a listener with an accept in flight: the accept completes with operation_aborted, and the
// listening descriptor is released once the kernel has let go of it.
void close_socket(boost::asio::ip::tcp::acceptor& acceptor) noexcept;

}  // namespace pgward
