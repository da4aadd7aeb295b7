// TLS for both sides of the proxy: the OpenSSL contexts one config snapshot asks for, and a TLS stream over a
// socket its owner keeps (the client's, a server connection's).
//
// TlsContexts is built whole from a Config and never changed: a reload builds new ones and swaps the pointer,
// so new handshakes use the new files while established connections keep the context they were made with
// (each SSL holds a reference to its SSL_CTX). A file that fails to load fails the build, and the reload.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

#include "config/config.hpp"

typedef struct ssl_st SSL;
namespace boost::asio::ssl {
class context;
}

namespace pgward::proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

enum class TlsSide { client, server };

class TlsContexts {
 public:
  // Throws std::runtime_error saying which file could not be used and why.
  explicit TlsContexts(const config::Config& config);
  ~TlsContexts();

  // Towards clients: null when [client_tls] mode is "disable".
  const std::shared_ptr<asio::ssl::context>& client() const { return client_; }
  config::TlsMode client_mode() const { return client_mode_; }
  // Towards a server with these settings: null when their mode is "disable".
  std::shared_ptr<asio::ssl::context> server(const config::TlsSettings& tls) const;
  // notAfter (Unix time) of the certificate pgward shows clients, and of [server_tls]'s client certificate;
  // 0 when there is none.
  std::int64_t client_cert_expiry() const { return client_expiry_; }
  std::int64_t server_cert_expiry() const { return server_expiry_; }

 private:
  std::shared_ptr<asio::ssl::context> client_;
  config::TlsMode client_mode_ = config::TlsMode::disable;
  // One context per distinct (ca_file, cert_file, key_file, min_protocol) of [server_tls] and its overrides.
  std::map<std::string, std::shared_ptr<asio::ssl::context>> servers_;
  std::int64_t client_expiry_ = 0;
  std::int64_t server_expiry_ = 0;
};

// What a TLS link towards a server must check (libpq's sslmode): nothing, the chain, or the chain and the
// host.
struct TlsPeerCheck {
  bool chain = false;
  std::string host;  // verify-full: the name (or IP address) the certificate must carry; also SNI
  std::string sni;   // the name sent as SNI ("" for an IP address)
};

// TLS over a socket owned by the caller, who must keep it alive and not move it while this exists.
class TlsStream {
 public:
  TlsStream(tcp::socket& socket, asio::ssl::context& context);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // The handshake as the server (towards a client) or as the client (towards PostgreSQL); nullopt when it
  // succeeded, else why it failed (in libpq's words where libpq has some).
  asio::awaitable<std::optional<std::string>> accept();
  asio::awaitable<std::optional<std::string>> connect(const TlsPeerCheck& check);

  asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> read_some(asio::mutable_buffer buffer);
  asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> write(asio::const_buffer buffer);

  bool established() const { return established_; }
  // The last thing said on a link its owner is about to close: `last_words` (Terminate, say) and the TLS
  // close_notify, written straight to the socket, which is made non-blocking: whatever does not fit at once
  // is dropped, nothing waits. The stream cannot be used afterwards.
  void close_notify(std::string_view last_words) noexcept;
  std::string version() const;  // "TLSv1.3"
  std::string cipher() const;
  std::string alpn() const;  // the protocol chosen by ALPN, "" when none
  // The peer sent a certificate and it verified against the CA.
  bool peer_verified() const;
  // The peer's certificate failed verification (after a failed connect(): the reason it failed).
  bool certificate_rejected() const;
  // The peer certificate's subject CN, and its SAN DNS names and e-mail addresses.
  std::vector<std::string> peer_names() const;
  // tls-server-end-point channel binding data (RFC 5929): the hash of the certificate pgward showed, with
  // the hash of its signature algorithm (SHA-256 in place of MD5 and SHA-1); "" when it cannot be had.
  std::string server_end_point() const;
  // The same for the peer's certificate (towards a server: the binding of SCRAM-SHA-256-PLUS).
  std::string peer_end_point() const;
  SSL* native() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool established_ = false;
};

}  // namespace pgward::proxy
