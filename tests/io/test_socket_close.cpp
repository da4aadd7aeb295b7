// close_socket() (asio/socket_close.hpp) on the event loop this binary was built with: tests/CMakeLists.txt
// builds this file once per loop, since a program holds one Asio backend. A socket or listener closed with an
// operation in flight must end that operation with operation_aborted and must not touch the socket opened
// next, which on Linux gets the closed one's descriptor number (and, on io_uring, Asio's bookkeeping). A
// cancelled operation must complete itself only, however many submissions came before it.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include "asio/backend.hpp"
#include "asio/socket_close.hpp"

namespace pgward {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// A listener on the loopback, made before the socket under test is closed, so that the first socket opened
// after the close is the connecting one: on Linux it takes the closed one's descriptor number and, on
// io_uring, Asio's bookkeeping of the closed one.
struct Listener {
  explicit Listener(asio::io_context& ctx)
      : acceptor(ctx, tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {}
  // A connected pair: `first` is opened first, `second` is its peer.
  std::pair<tcp::socket, tcp::socket> connect() {
    tcp::socket first(acceptor.get_executor());
    first.connect(acceptor.local_endpoint());
    tcp::socket second(acceptor.get_executor());
    acceptor.accept(second);
    return {std::move(first), std::move(second)};
  }
  tcp::acceptor acceptor;
};

struct Read {
  std::optional<boost::system::error_code> ec;
  std::size_t n = 0;
  char byte = 0;
};

void start_read(tcp::socket& socket, Read& read) {
  socket.async_read_some(asio::buffer(&read.byte, 1),
                         [&read](const boost::system::error_code& ec, std::size_t n) {
                           read.ec = ec;
                           read.n = n;
                         });
}

// Runs `ctx` until `done` or 2 s.
template <class Done>
void run_until(asio::io_context& ctx, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    if (ctx.stopped()) ctx.restart();  // a context out of work stops
    ctx.run_one_for(10ms);
  }
}

TEST(CloseSocket, PendingReadEndsAbortedAndTheNextSocketKeepsItsBytes) {
  asio::io_context ctx(1);
  Listener listener(ctx);
  auto [old_socket, old_peer] = listener.connect();
  Read old_read;
  start_read(old_socket, old_read);
  ctx.poll();  // the read is in flight now
  ASSERT_FALSE(old_read.ec);

  close_socket(old_socket);
  EXPECT_FALSE(old_socket.is_open());
  auto [next_socket, next_peer] = listener.connect();
  Read next_read;
  start_read(next_socket, next_read);
  run_until(ctx, [&] { return old_read.ec.has_value(); });
  ASSERT_TRUE(old_read.ec);
  EXPECT_EQ(*old_read.ec, asio::error::operation_aborted) << old_read.ec->message();

  // Written once the old read has ended: only the next socket's read may see it.
  asio::write(next_peer, asio::buffer("y", 1));
  run_until(ctx, [&] { return next_read.ec.has_value(); });
  ASSERT_TRUE(next_read.ec) << "the next socket's read never completed";
  EXPECT_FALSE(*next_read.ec) << next_read.ec->message();
  EXPECT_EQ(next_read.n, 1u);
  EXPECT_EQ(next_read.byte, 'y');
  EXPECT_EQ(old_read.n, 0u);

  // The old peer sees the connection end.
  Read eof;
  start_read(old_peer, eof);
  run_until(ctx, [&] { return eof.ec.has_value(); });
  ASSERT_TRUE(eof.ec);
  EXPECT_EQ(*eof.ec, asio::error::eof) << eof.ec->message();
}

TEST(CloseSocket, PendingAcceptEndsAbortedAndTheListenerIsReleased) {
  asio::io_context ctx(1);
  Listener other(ctx);
  tcp::acceptor closing(ctx, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  const auto endpoint = closing.local_endpoint();
  std::optional<boost::system::error_code> accepted;
  closing.async_accept([&](const boost::system::error_code& ec, tcp::socket) { accepted = ec; });
  ctx.poll();
  ASSERT_FALSE(accepted);

  close_socket(closing);
  EXPECT_FALSE(closing.is_open());
  auto [next_socket, next_peer] = other.connect();
  Read next_read;
  start_read(next_socket, next_read);
  run_until(ctx, [&] { return accepted.has_value(); });
  ASSERT_TRUE(accepted);
  EXPECT_EQ(*accepted, asio::error::operation_aborted) << accepted->message();

  asio::write(next_peer, asio::buffer("z", 1));
  run_until(ctx, [&] { return next_read.ec.has_value(); });
  ASSERT_TRUE(next_read.ec) << "the next socket's read never completed";
  EXPECT_FALSE(*next_read.ec) << next_read.ec->message();
  EXPECT_EQ(next_read.byte, 'z');

  // Nothing listens on the port any more.
  boost::system::error_code ec;
  run_until(ctx, [&] {
    tcp::socket probe(ctx);
    probe.connect(endpoint, ec);
    return ec == asio::error::connection_refused;
  });
  EXPECT_EQ(ec, asio::error::connection_refused) << ec.message();
}

// The descriptors this process has open.
std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

TEST(CloseSocket, EveryDescriptorIsReleasedOnceItsOperationsHaveEnded) {
  asio::io_context ctx(1);
  Listener listener(ctx);  // opens the event loop's own descriptors too
  const std::size_t before = open_descriptors();
  auto [a, b] = listener.connect();
  tcp::acceptor extra(ctx, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  Read read_a, read_b;
  start_read(a, read_a);
  start_read(b, read_b);
  extra.async_accept([](const boost::system::error_code&, tcp::socket) {});
  ctx.poll();
  ASSERT_EQ(open_descriptors(), before + 3);
  close_socket(a);
  close_socket(b);
  close_socket(extra);
  run_until(ctx, [&] { return read_a.ec && read_b.ec && open_descriptors() == before; });
  EXPECT_TRUE(read_a.ec && read_b.ec);
  EXPECT_EQ(open_descriptors(), before);
}

// Asio's io_uring backend fills cancellations from a submission slot without clearing the slot's user data,
// and liburing 2.3's io_uring_get_sqe() does not clear it either: a cancellation's completion then carries
// the pointer of the operation that last used the slot, and Asio completes that operation with the
// cancellation's result (asio/asio_impl.cpp clears it). The ring has 16,384 slots; 20,000 cancelled reads go
// round it.
TEST(CancelledReads, EachEndsAbortedAndNoOtherOperationIsCompletedByThem) {
  asio::io_context ctx(1);
  Listener listener(ctx);
  auto [socket, peer] = listener.connect();
  auto [idle, idle_peer] = listener.connect();
  Read idle_read;
  start_read(idle, idle_read);  // pending throughout: a completion that is not its own must not end it
  int wrong = 0;
  std::string first_wrong;
  for (int i = 0; i < 20000; ++i) {
    Read read;
    start_read(socket, read);
    ctx.poll();
    boost::system::error_code ec;
    socket.cancel(ec);
    run_until(ctx, [&] { return read.ec.has_value(); });
    if (!read.ec || *read.ec != asio::error::operation_aborted) {
      if (wrong++ == 0)
        first_wrong = "read " + std::to_string(i) + ": " + (read.ec ? read.ec->message() : "never completed");
    }
  }
  EXPECT_EQ(wrong, 0) << first_wrong;
  EXPECT_FALSE(idle_read.ec) << idle_read.ec->message();
  asio::write(idle_peer, asio::buffer("i", 1));
  asio::write(peer, asio::buffer("s", 1));
  Read last;
  start_read(socket, last);
  run_until(ctx, [&] { return idle_read.ec && last.ec; });
  ASSERT_TRUE(idle_read.ec && last.ec);
  EXPECT_EQ(idle_read.byte, 'i');
  EXPECT_EQ(last.byte, 's');
}

}  // namespace
}  // namespace pgward
