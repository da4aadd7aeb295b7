// The watch on an idle server's socket: a server that dies while it sits in the pool (EOF, a FATAL from
// pg_terminate_backend or a shutdown, a TLS alert) is closed when it dies, not when it is handed out.
//
// Over plain TCP the watch is a read into the server's own buffer, posted as the server is parked (Asio
// tries it at once: the one recv the watch costs, which finds nothing). Whoever checks the server out next
// does not start a read of its own: its first fill() takes this one over and gets the answer to its query
// from it. So checkout costs no syscall and nothing is cancelled. The read's handler runs on the socket's
// io_context, the taker may be a session of another worker: they meet under Watch::mu, and the taker's
// completion is dispatched to its own executor (inline when that is the same thread).
//
// Over TLS the raw socket carries records, not PostgreSQL messages: the watch peeks at one byte (while idle
// any record is a close_notify or an alert) and fill() cancels it before reading through the TLS stream.
#include "proxy/server_watch.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <mutex>

namespace pgward::proxy {

void ServerConn::Watch::completed(const boost::system::error_code& e, std::size_t bytes) {
  std::unique_lock lock(mu);
  if (invoke) {
    auto call = std::exchange(invoke, nullptr);
    drop = nullptr;
    asio::any_io_executor ex = std::move(taker_ex);
    lock.unlock();
    // Inline when the taker's executor is this thread's, else posted to it.
    asio::dispatch(ex, [self = shared_from_this(), call, e, bytes] { call(*self, e, bytes); });
    return;
  }
  done = true;
  ec = e;
  n = bytes;
  pool::Pool* p = pool;
  auto s = server.lock();
  const std::uint64_t spell = period;
  lock.unlock();
  // Anything while idle, even bytes, means the server is gone. Aborted: closed.
  if (e != asio::error::operation_aborted && s) p->idle_died(s, spell);
}

void ServerConn::watch_idle(pool::Pool& pool, const std::shared_ptr<pool::Server>& self,
                            std::uint64_t period) {
  if (closed_ || !socket_.is_open() || rpos != rend) return;
  if (tls_) {
    // Still watching from an earlier idle spell (checked out and given back without a read): that watch
    // would report the wrong spell. Rare, so it is simply replaced.
    if (std::exchange(watching_, false)) watch_stop_.emit(asio::cancellation_type::all);
    watching_ = true;
    // The handler runs on the socket's executor and touches only the pool (under its lock).
    socket_.async_receive(asio::buffer(&watch_byte_, 1), tcp::socket::message_peek,
                          asio::bind_cancellation_slot(
                              watch_stop_.slot(), [&pool, weak = std::weak_ptr<pool::Server>(self), period](
                                                      const boost::system::error_code& ec, std::size_t) {
                                if (ec == asio::error::operation_aborted) return;  // taken back, or closed
                                if (auto server = weak.lock()) pool.idle_died(server, period);
                              }));
    return;
  }
  if (!watch_) watch_ = std::make_shared<Watch>();
  bool dead = false;
  {
    std::lock_guard lock(watch_->mu);
    watch_->pool = &pool;
    watch_->server = self;
    watch_->period = period;
    // Checked out and given back without a read: the read still posted now watches this spell. Should it have
    // completed meanwhile, the server spoke or closed while nobody read it: dead.
    dead = watching_ && watch_->done;
    if (!watching_) watch_->done = false;
  }
  if (dead) {
    asio::post(socket_.get_executor(), [&pool, weak = std::weak_ptr<pool::Server>(self), period] {
      if (auto server = weak.lock()) pool.idle_died(server, period);
    });
    return;
  }
  if (watching_) return;
  watching_ = true;
  if (rbuf.size() != kBufferSize) rbuf.resize(kBufferSize);
  socket_.async_read_some(
      asio::buffer(rbuf.data(), rbuf.size()),
      [w = watch_](const boost::system::error_code& ec, std::size_t n) { w->completed(ec, n); });
}

}  // namespace pgward::proxy
