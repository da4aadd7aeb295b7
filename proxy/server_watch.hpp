// What the idle watch's read (server_watch.cpp) shares with fill(): private to server_conn.cpp and
// server_watch.cpp.
#pragma once

#include <boost/asio/dispatch.hpp>
#include <cstddef>
#include <mutex>
#include <new>
#include <utility>

#include "proxy/server_conn.hpp"

namespace pgward::proxy {

struct ServerConn::Watch : std::enable_shared_from_this<Watch> {
  std::mutex mu;
  // Whom to tell of a death while idle: the pool, the server, the idle spell.
  pool::Pool* pool = nullptr;
  std::weak_ptr<pool::Server> server;
  std::uint64_t period = 0;
  // The read's result, when it came before anyone took the read over.
  bool done = false;
  boost::system::error_code ec;
  std::size_t n = 0;

  // A fill() waiting for the read: its completion handler, kept in place (no allocation per transaction),
  // and its coroutine's executor. `invoke` calls and destroys it, `drop` only destroys it.
  void (*invoke)(Watch&, const boost::system::error_code&, std::size_t) = nullptr;
  void (*drop)(Watch&) = nullptr;
  asio::any_io_executor taker_ex;
  alignas(std::max_align_t) unsigned char storage[64];

  Watch() = default;
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;
  ~Watch() {
    if (drop) drop(*this);
  }

  // Stores `h` as the taker; caller holds mu and there is none yet.
  template <class H>
  void set_taker(H&& h, asio::any_io_executor ex) {
    using T = std::decay_t<H>;
    static_assert(sizeof(T) <= sizeof storage && alignof(T) <= alignof(std::max_align_t));
    new (storage) T(std::forward<H>(h));
    invoke = [](Watch& w, const boost::system::error_code& e, std::size_t bytes) {
      T* stored = std::launder(reinterpret_cast<T*>(w.storage));
      T local(std::move(*stored));
      stored->~T();
      std::move(local)(e, bytes);
    };
    drop = [](Watch& w) { std::launder(reinterpret_cast<T*>(w.storage))->~T(); };
    taker_ex = std::move(ex);
  }

  // The read completed; runs on the socket's executor.
  void completed(const boost::system::error_code& e, std::size_t bytes);
};

}  // namespace pgward::proxy
