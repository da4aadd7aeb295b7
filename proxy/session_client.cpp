// The client socket: its receive buffer, reads and writes, the errors pgward sends, and the deadline for a
// message left unfinished (client_message_timeout).
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

#include "protocol/sqlstate.hpp"
#include "proxy/session.hpp"
#include "proxy/session_shared.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;
using asio::as_tuple;
using asio::use_awaitable;

std::string_view Session::client_unread() const {
  return std::string_view(cbuf_).substr(cpos_, cend_ - cpos_);
}

void Session::consume_client(std::size_t n) {
  cpos_ += n;
  if (cpos_ == cend_) cpos_ = cend_ = 0;
}

void Session::shrink_client_buffer() {
  std::string small(kClientBufferSize, '\0');
  std::memcpy(small.data(), cbuf_.data() + cpos_, cend_ - cpos_);
  cend_ -= cpos_;
  cpos_ = 0;
  cbuf_.swap(small);
  proxy_.release_buffer(std::exchange(buffer_reserved_, 0));
}

void Session::watch_stall(bool mid_message) {
  if (!mid_message) {
    if (stall_armed_) {
      stall_armed_ = false;
      stall_timer_->cancel();
    }
    return;
  }
  // The deadline runs from the start of the message now unfinished: a client streaming many messages (a
  // long COPY) is never stalled, one that stops inside a message is. The clock is read only on reads that
  // end inside a message.
  if (!stall_armed_ || stall_messages_ != messages_seen_) {
    stall_messages_ = messages_seen_;
    stall_since_ = std::chrono::steady_clock::now();
  }
  if (stall_armed_) return;
  if (!stall_timer_) stall_timer_ = std::make_unique<asio::steady_timer>(client_.get_executor());
  stall_armed_ = true;
  arm_stall_timer(stall_since_ + config_->client_message_timeout);
}

void Session::arm_stall_timer(std::chrono::steady_clock::time_point at) {
  stall_timer_->expires_at(at);
  stall_timer_->async_wait(
      [weak = weak_from_this(), gen = ++stall_generation_](const boost::system::error_code& ec) {
        if (ec) return;
        if (auto self = weak.lock()) self->stall_expired(gen);
      });
}

void Session::stall_expired(std::uint64_t generation) {
  if (!stall_armed_ || generation != stall_generation_) return;
  const auto now = std::chrono::steady_clock::now();
  const auto deadline = stall_since_ + config_->client_message_timeout;
  if (now < deadline || !reading_client_) {
    // A newer message started since the timer was set, or pgward itself is busy (writing to a slow server):
    // not the client's stall.
    arm_stall_timer(now < deadline ? deadline : now + config_->client_message_timeout);
    return;
  }
  stalled_ = true;
  stats::add(proxy_.stats().client_message_timeouts);
  boost::system::error_code ec;
  client_.cancel(ec);  // client_loop wakes, and the session ends with 08P01
}

asio::awaitable<bool> Session::fill_client() {
  // A message is unfinished when unread bytes are left (client_loop handles every whole one) or one is being
  // passed through or dropped.
  if (relaying_) watch_stall(cend_ != cpos_ || client_pass_ > 0 || client_drop_ > 0);
  if (buffer_reserved_ > 0 && client_want_ == 0 && cend_ - cpos_ <= kClientBufferSize) shrink_client_buffer();
  if (cend_ == 0 && !server_) {
    // Idle client: hold no buffer while waiting, so that thousands of idle clients cost little memory. (A
    // swap: assigning an empty string keeps the old allocation in libstdc++.)
    std::string().swap(cbuf_);
    if (client_.tls()) {
      const bool ok = co_await fill_client_tls_idle();
      co_return ok;
    }
    reading_client_ = true;
    auto [wec] = co_await client_.socket().async_wait(tcp::socket::wait_read, as_tuple(use_awaitable));
    reading_client_ = false;
    if (wec) co_return false;
  }
  if (cpos_ > 0) {
    std::memmove(cbuf_.data(), cbuf_.data() + cpos_, cend_ - cpos_);
    cend_ -= cpos_;
    cpos_ = 0;
  }
  // A message that must be seen whole (rewritten prepared-statement messages) may need more than the usual
  // buffer: it grows as the bytes arrive, never ahead of them (its length was checked against
  // max_buffer_per_client and taken from max_buffer_total before we got here).
  if (cbuf_.size() < kClientBufferSize) {
    cbuf_.resize(kClientBufferSize);
  } else if (cend_ == cbuf_.size() && client_want_ > cbuf_.size()) {
    cbuf_.resize(std::min(client_want_, cbuf_.size() * 2));
  }
  client_want_ = 0;
  if (cend_ == cbuf_.size()) co_return false;
  reading_client_ = true;
  const auto space = asio::buffer(cbuf_.data() + cend_, cbuf_.size() - cend_);
  // (No co_await inside ?: here or in send_client(): GCC 12 miscompiles it.)
  std::tuple<boost::system::error_code, std::size_t> got;
  if (client_.tls()) {
    got = co_await client_.tls()->read_some(space);
  } else {
    got = co_await client_.socket().async_read_some(space, as_tuple(asio::deferred));
  }
  auto [ec, n] = got;
  reading_client_ = false;
  if (ec) co_return false;
  cend_ += n;
  track_.received(n);
  co_return true;
}

asio::awaitable<std::optional<pr::Message>> Session::read_client_message(std::uint32_t max_length) {
  for (;;) {
    auto r = pr::decode_message(client_unread(), std::min<std::uint32_t>(max_length, kClientBufferSize - 5));
    if (r.status == pr::Status::error) {
      co_await send_error(ss::kProtocolViolation, r.error, true);
      co_return std::nullopt;
    }
    if (r.status == pr::Status::ok) {
      consume_client(r.consumed);
      co_return r.message;
    }
    if (!co_await fill_client()) co_return std::nullopt;
  }
}

asio::awaitable<bool> Session::fill_client_tls_idle() {
  // The socket's readiness says nothing of bytes OpenSSL has already taken off it, so an idle TLS client is
  // waited for with a one-byte read; the buffer is allocated once that byte is in.
  char first = 0;
  reading_client_ = true;
  auto [ec, n] = co_await client_.tls()->read_some(asio::buffer(&first, 1));
  reading_client_ = false;
  if (ec || n == 0) co_return false;
  cbuf_.resize(kClientBufferSize);
  cbuf_[0] = first;
  cend_ = 1;
  track_.received(1);
  co_return true;
}

asio::awaitable<bool> Session::send_client(std::string_view bytes) {
  const auto data = asio::buffer(bytes.data(), bytes.size());
  TlsStream* tls = client_.tls();
  if (tls && !tls->established()) co_return false;  // a handshake that failed or was cut short
  std::tuple<boost::system::error_code, std::size_t> done;
  if (tls) {
    done = co_await tls->write(data);
  } else {
    done = co_await asio::async_write(client_.socket(), data, as_tuple(asio::deferred));
  }
  auto [ec, n] = done;
  track_.sent(n);
  co_return !ec;
}

asio::awaitable<void> Session::send_error(std::string_view sqlstate, std::string_view message, bool fatal,
                                          std::string_view detail) {
  std::string out;
  pr::put_error_response(out, {fatal ? "FATAL" : "ERROR", sqlstate, message, detail});
  track_.proxy_error(sqlstate);
  if (fatal) {
    spdlog::info("client {} closed by pgward: {} ({})", id_, message, sqlstate);
  } else {
    spdlog::debug("client {} error {}: {}", id_, sqlstate, message);
  }
  co_await send_client(out);
  if (fatal) {
    boost::system::error_code ec;
    client_.close(ec);
  }
}

asio::awaitable<void> Session::send_ready_for_query(char status) {
  std::string out;
  pr::put_ready_for_query(out, status);
  co_await send_client(out);
}

void Session::append_error(std::string& out, std::string_view sqlstate, std::string_view message,
                           std::string_view detail) {
  pr::put_error_response(out, {"ERROR", sqlstate, message, detail});
  track_.proxy_error(sqlstate);
  spdlog::info("client {} error {}: {}", id_, sqlstate, message);
}

}  // namespace pgward::proxy
