// The client's connection: its socket, and TLS over it once the client asked for it (SSLRequest or direct
// TLS). Plain reads and writes go straight to the socket; TLS ones through TlsStream, which decrypts into and
// encrypts from the session's own buffers (no copy beyond the TLS layer's records).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <memory>

#include "asio/socket_close.hpp"
#include "proxy/tls.hpp"

namespace pgward::proxy {

class ClientStream {
 public:
  explicit ClientStream(tcp::socket socket) : socket_(std::move(socket)) {}
  ClientStream(const ClientStream&) = delete;
  ClientStream& operator=(const ClientStream&) = delete;

  tcp::socket& socket() { return socket_; }
  tcp::socket::executor_type get_executor() { return socket_.get_executor(); }
  bool is_open() const { return socket_.is_open(); }
  // Ends the socket's pending operations (TLS ones with it).
  void cancel(boost::system::error_code& ec) { socket_.cancel(ec); }
  void close(boost::system::error_code& ec) {
    close_socket(socket_);
    ec = {};
  }

  // The TLS layer, null while the connection is plain.
  TlsStream* tls() const { return tls_.get(); }
  TlsStream& start_tls(asio::ssl::context& context) {
    tls_ = std::make_unique<TlsStream>(socket_, context);
    return *tls_;
  }

 private:
  tcp::socket socket_;
  std::unique_ptr<TlsStream> tls_;  // refers to socket_: a ClientStream never moves
};

}  // namespace pgward::proxy
