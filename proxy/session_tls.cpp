// TLS towards the client ("SSL Session Encryption" in the protocol docs): the answer to an SSLRequest,
// PostgreSQL 17's direct TLS (a ClientHello first, ALPN "postgresql" required), and what [client_tls] mode
// requires of a client once it has said who it is.
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "protocol/sqlstate.hpp"
#include "proxy/session.hpp"

namespace pgward::proxy {

namespace ss = protocol::sqlstate;
using config::TlsMode;

namespace {
// The first byte of a TLS record carrying a handshake message. A startup packet starts with its length, whose
// first byte is 0 for any length PostgreSQL accepts, so the two cannot be confused.
constexpr unsigned char kTlsHandshakeRecord = 0x16;
}  // namespace

asio::awaitable<bool> Session::detect_direct_tls() {
  if (!tls_ || !tls_->client()) co_return true;
  auto [ec] =
      co_await client_.socket().async_wait(tcp::socket::wait_read, asio::as_tuple(asio::use_awaitable));
  if (ec) co_return false;
  unsigned char first = 0;
  const ssize_t n = ::recv(client_.socket().native_handle(), &first, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n <= 0) co_return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  if (first != kTlsHandshakeRecord) co_return true;
  const bool ok = co_await accept_tls(true);
  co_return ok;
}

asio::awaitable<bool> Session::answer_ssl_request() {
  if (client_.tls()) {
    // PostgreSQL takes a second SSLRequest for a startup packet of an unknown protocol version.
    co_await send_error(ss::kProtocolViolation, "SSLRequest received on a connection already encrypted",
                        true);
    co_return false;
  }
  const bool offer = tls_ && tls_->client();
  if (!co_await send_client(offer ? "S" : "N")) co_return false;
  if (!offer) co_return true;
  const bool ok = co_await accept_tls(false);
  co_return ok;
}

asio::awaitable<bool> Session::accept_tls(bool direct) {
  TlsStream& tls = client_.start_tls(*tls_->client());
  auto error = co_await tls.accept();
  if (!error && direct && tls.alpn().empty()) {
    error = "direct TLS connection without ALPN protocol negotiation (\"postgresql\" is required)";
  }
  proxy_.count_tls_handshake(TlsSide::client, !error);
  if (error) {
    spdlog::info("client {}: TLS handshake failed: {}", id_, *error);
    boost::system::error_code ec;
    client_.close(ec);
    co_return false;
  }
  track_.set_tls(tls.version() + " " + tls.cipher());
  spdlog::debug("client {}: {} {}{}", id_, tls.version(), tls.cipher(), direct ? " (direct TLS)" : "");
  co_return true;
}

asio::awaitable<bool> Session::check_client_tls() {
  const TlsMode mode = tls_ ? tls_->client_mode() : TlsMode::disable;
  const TlsStream* tls = client_.tls();
  if (mode >= TlsMode::require && !tls) {
    co_await send_error(ss::kInvalidAuthorizationSpecification,
                        "pgward accepts only TLS (SSL) connections (client_tls mode = \"" +
                            std::string(config::to_string(mode)) + "\")",
                        true, "Connect with sslmode=require or stronger.");
    co_return false;
  }
  if (mode < TlsMode::verify_ca) co_return true;
  if (!tls->peer_verified()) {
    co_await send_error(ss::kInvalidAuthorizationSpecification,
                        "connection requires a valid client certificate", true);
    co_return false;
  }
  if (mode == TlsMode::verify_full) {
    const auto names = tls->peer_names();
    if (std::ranges::find(names, user_) == names.end()) {
      co_await send_error(ss::kInvalidAuthorizationSpecification,
                          "certificate validation (client_tls mode = \"verify-full\") failed for user \"" +
                              user_ + "\": CN mismatch",
                          true);
      co_return false;
    }
  }
  co_return true;
}

}  // namespace pgward::proxy
