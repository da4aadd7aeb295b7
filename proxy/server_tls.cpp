// TLS towards PostgreSQL, with the meaning of libpq's sslmode ("SSL Support" in the libpq docs): an
// SSLRequest first, then the handshake, checking what the mode asks for.
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/read.hpp>

#include "protocol/codec.hpp"
#include "protocol/sqlstate.hpp"
#include "proxy/server_conn.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;
using config::TlsMode;

ServerTls server_tls_target(const config::Database& db, std::shared_ptr<asio::ssl::context> context) {
  const config::TlsSettings& tls = db.server_tls;
  ServerTls t;
  t.mode = tls.mode;
  t.context = std::move(context);
  // As libpq: verify-ca and verify-full check the chain; "require" does too when a root certificate file is
  // given (libpq's root.crt rule), and otherwise trusts whatever certificate the server shows.
  t.check.chain = tls.mode == TlsMode::verify_ca || tls.mode == TlsMode::verify_full ||
                  (tls.mode == TlsMode::require && !tls.ca_file.empty());
  if (tls.mode == TlsMode::verify_full) t.check.host = db.host;
  boost::system::error_code ec;
  (void)asio::ip::make_address(db.host, ec);
  if (ec && !db.host.starts_with('/')) t.check.sni = db.host;  // SNI carries names only, never addresses
  return t;
}

asio::awaitable<std::optional<ProxyError>> ServerConn::negotiate_tls(const ServerTarget& target) {
  const std::string where = target.host + ":" + std::to_string(target.port);
  // 08001 for what retrying cannot change (the server's TLS answer, its certificate): the checkout does not
  // retry it. 08006 for a connection that broke.
  auto fail = [&](std::string_view what, std::string_view sqlstate = ss::kConnectionFailure) {
    return ProxyError{
        std::string(sqlstate), "could not connect to server " + where + ": " + std::string(what), {}};
  };
  constexpr auto kRefused = ss::kSqlclientUnableToEstablishSqlconnection;
  if (!target.tls.context) co_return fail("no TLS context for this database");
  std::string out;
  pr::put_ssl_request(out);
  if (!co_await write(out)) co_return fail("connection lost while asking for TLS");
  char answer = 0;
  auto [ec, n] = co_await asio::async_read(socket_, asio::buffer(&answer, 1), asio::as_tuple(asio::deferred));
  if (ec) co_return fail("connection lost while asking for TLS");
  if (answer == 'N') {
    if (target.tls.mode == TlsMode::prefer) co_return std::nullopt;
    co_return fail("server does not support SSL, but SSL was required", kRefused);
  }
  if (answer != 'S') {
    co_return fail("received invalid response to SSL negotiation: " + std::string(1, answer), kRefused);
  }
  // Bytes after the 'S' came before the handshake, unencrypted: a man in the middle's (CVE-2021-23222).
  boost::system::error_code aec;
  if (socket_.available(aec) > 0 || aec) {
    co_return fail("received unencrypted data after SSL response", kRefused);
  }
  tls_ = std::make_unique<TlsStream>(socket_, *target.tls.context);
  auto error = co_await tls_->connect(target.tls.check);
  tls_handshake_ = !error;
  if (error) co_return fail(*error, tls_->certificate_rejected() ? kRefused : ss::kConnectionFailure);
  tls_text_ = std::make_shared<const std::string>(tls_->version() + " " + tls_->cipher());
  spdlog::debug("server {}: {}", id_, *tls_text_);
  co_return std::nullopt;
}

}  // namespace pgward::proxy
