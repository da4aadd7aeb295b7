#include "proxy/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <ctime>
#include <stdexcept>

#include "protocol/auth.hpp"

namespace pgward::proxy {

namespace ssl = asio::ssl;
using asio::as_tuple;

namespace {

// ALPN "postgresql" (PostgreSQL 17): the only protocol pgward speaks. A client that offers ALPN without it
// is refused in the handshake, as PostgreSQL does; one that offers none is refused afterwards on direct TLS.
constexpr unsigned char kAlpnPostgresql[] = {10, 'p', 'o', 's', 't', 'g', 'r', 'e', 's', 'q', 'l'};

int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outlen, kAlpnPostgresql, sizeof kAlpnPostgresql, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

// Runs one context call, turning OpenSSL's complaint into an exception that names the file.
void load(const std::string& what, const std::string& path, auto&& call) {
  boost::system::error_code ec;
  call(ec);
  if (ec) throw std::runtime_error(what + " \"" + path + "\": " + ec.message());
}

std::int64_t not_after(SSL_CTX* ctx) {
  const X509* cert = SSL_CTX_get0_certificate(ctx);
  if (!cert) return 0;
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return 0;
  return static_cast<std::int64_t>(timegm(&tm));
}

void set_min_protocol(ssl::context& ctx, config::TlsVersion version) {
  SSL_CTX_set_min_proto_version(ctx.native_handle(),
                                version == config::TlsVersion::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
}

void use_certificate(ssl::context& ctx, const config::TlsSettings& tls) {
  if (tls.cert_file.empty()) return;
  load("cannot use certificate file", tls.cert_file,
       [&](auto& ec) { ctx.use_certificate_chain_file(tls.cert_file, ec); });
  load("cannot use key file", tls.key_file,
       [&](auto& ec) { ctx.use_private_key_file(tls.key_file, ssl::context::pem, ec); });
}

std::shared_ptr<ssl::context> make_client_facing(const config::TlsSettings& tls) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  set_min_protocol(*ctx, tls.min_protocol);
  use_certificate(*ctx, tls);
  if (!tls.ca_file.empty()) {
    // As PostgreSQL with ssl_ca_file: a client certificate is asked for and, when sent, must verify; whether
    // one is required is decided after the handshake (verify-ca, verify-full), with a FATAL the client reads.
    load("cannot use CA file", tls.ca_file, [&](auto& ec) { ctx->load_verify_file(tls.ca_file, ec); });
    SSL_CTX_set_client_CA_list(ctx->native_handle(), SSL_load_client_CA_file(tls.ca_file.c_str()));
    ctx->set_verify_mode(ssl::verify_peer);
  }
  // No session resumption, as PostgreSQL: every connection is verified afresh against the current files.
  SSL_CTX_set_session_cache_mode(ctx->native_handle(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_TICKET);
  SSL_CTX_set_alpn_select_cb(ctx->native_handle(), select_alpn, nullptr);
  return ctx;
}

std::shared_ptr<ssl::context> make_server_facing(const config::TlsSettings& tls) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  set_min_protocol(*ctx, tls.min_protocol);
  if (tls.ca_file.empty()) {
    load("cannot use the system's root certificates", "",
         [&](auto& ec) { ctx->set_default_verify_paths(ec); });
  } else {
    load("cannot use CA file", tls.ca_file, [&](auto& ec) { ctx->load_verify_file(tls.ca_file, ec); });
  }
  use_certificate(*ctx, tls);
  SSL_CTX_set_alpn_protos(ctx->native_handle(), kAlpnPostgresql, sizeof kAlpnPostgresql);
  return ctx;
}

std::string server_key(const config::TlsSettings& tls) {
  return tls.ca_file + '\n' + tls.cert_file + '\n' + tls.key_file + '\n' +
         std::to_string(static_cast<int>(tls.min_protocol));
}

}  // namespace

TlsContexts::TlsContexts(const config::Config& config) : client_mode_(config.client_tls.mode) {
  if (client_mode_ != config::TlsMode::disable) {
    client_ = make_client_facing(config.client_tls);
    client_expiry_ = not_after(client_->native_handle());
  }
  auto add = [&](const config::TlsSettings& tls) {
    if (tls.mode == config::TlsMode::disable) return;
    auto& slot = servers_[server_key(tls)];
    if (!slot) slot = make_server_facing(tls);
  };
  add(config.server_tls);
  if (auto it = servers_.find(server_key(config.server_tls)); it != servers_.end())
    server_expiry_ = not_after(it->second->native_handle());
  for (const auto& db : config.databases) add(db.server_tls);
}

TlsContexts::~TlsContexts() = default;

std::shared_ptr<ssl::context> TlsContexts::server(const config::TlsSettings& tls) const {
  if (tls.mode == config::TlsMode::disable) return nullptr;
  auto it = servers_.find(server_key(tls));
  return it == servers_.end() ? nullptr : it->second;
}

// ---------------------------------------------------------------------------------------------------------------

struct TlsStream::Impl {
  Impl(tcp::socket& socket, ssl::context& context) : stream(socket, context) {}
  ssl::stream<tcp::socket&> stream;
};

TlsStream::TlsStream(tcp::socket& socket, ssl::context& context)
    : impl_(std::make_unique<Impl>(socket, context)) {}

TlsStream::~TlsStream() = default;

SSL* TlsStream::native() const { return impl_->stream.native_handle(); }

asio::awaitable<std::optional<std::string>> TlsStream::accept() {
  auto [ec] = co_await impl_->stream.async_handshake(ssl::stream_base::server, as_tuple(asio::deferred));
  if (ec) co_return ec.message();
  established_ = true;
  co_return std::nullopt;
}

asio::awaitable<std::optional<std::string>> TlsStream::connect(const TlsPeerCheck& check) {
  SSL* ssl = native();
  SSL_set_verify(ssl, check.chain ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  if (!check.host.empty()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    boost::system::error_code aec;
    (void)asio::ip::make_address(check.host, aec);
    if (!aec) {
      X509_VERIFY_PARAM_set1_ip_asc(param, check.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, check.host.c_str(), 0);
    }
  }
  if (!check.sni.empty()) SSL_set_tlsext_host_name(ssl, check.sni.c_str());
  auto [ec] = co_await impl_->stream.async_handshake(ssl::stream_base::client, as_tuple(asio::deferred));
  if (ec) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      co_return "server certificate does not match host name \"" + check.host + "\"";
    }
    if (verify != X509_V_OK) {
      co_return std::string("SSL error: certificate verify failed: ") + X509_verify_cert_error_string(verify);
    }
    co_return "SSL error: " + ec.message();
  }
  established_ = true;
  co_return std::nullopt;
}

asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> TlsStream::read_some(
    asio::mutable_buffer buffer) {
  auto result = co_await impl_->stream.async_read_some(buffer, as_tuple(asio::deferred));
  co_return result;
}

asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> TlsStream::write(
    asio::const_buffer buffer) {
  auto result = co_await asio::async_write(impl_->stream, buffer, as_tuple(asio::deferred));
  co_return result;
}

void TlsStream::close_notify(std::string_view last_words) noexcept {
  if (!established_) return;
  established_ = false;
  tcp::socket& socket = impl_->stream.next_layer();
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  // Asio's engine hands records to its own BIO pair and writes them out asynchronously; here the records go
  // to the socket itself, synchronously (the SSL object owns the new BIO, the socket stays the caller's).
  BIO* direct = BIO_new_socket(static_cast<int>(socket.native_handle()), BIO_NOCLOSE);
  if (ec || !direct) {
    BIO_free(direct);
    return;
  }
  SSL* ssl = native();
  SSL_set0_wbio(ssl, direct);
  if (!last_words.empty()) SSL_write(ssl, last_words.data(), static_cast<int>(last_words.size()));
  SSL_shutdown(ssl);  // sends close_notify, does not wait for the peer's
  ERR_clear_error();
}

std::string TlsStream::version() const { return SSL_get_version(native()); }

std::string TlsStream::cipher() const {
  const char* name = SSL_get_cipher_name(native());
  return name ? name : "";
}

std::string TlsStream::alpn() const {
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(native(), &data, &len);
  return std::string(reinterpret_cast<const char*>(data), data ? len : 0);
}

bool TlsStream::peer_verified() const {
  return SSL_get0_peer_certificate(native()) != nullptr && SSL_get_verify_result(native()) == X509_V_OK;
}

namespace {
std::string end_point_of(const X509* cert) {
  unsigned char* der = nullptr;
  const int len = cert ? i2d_X509(cert, &der) : -1;
  if (len <= 0) return "";
  std::string binding = protocol::auth::tls_server_end_point(
      {reinterpret_cast<const char*>(der), static_cast<std::size_t>(len)});
  OPENSSL_free(der);
  return binding;
}
}  // namespace

std::string TlsStream::server_end_point() const { return end_point_of(SSL_get_certificate(native())); }

std::string TlsStream::peer_end_point() const { return end_point_of(SSL_get0_peer_certificate(native())); }

bool TlsStream::certificate_rejected() const { return SSL_get_verify_result(native()) != X509_V_OK; }

std::vector<std::string> TlsStream::peer_names() const {
  std::vector<std::string> names;
  const X509* cert = SSL_get0_peer_certificate(native());
  if (!cert) return names;
  X509_NAME* subject = X509_get_subject_name(cert);
  const int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (at >= 0) {
    const ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at));
    names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(cn)),
                       static_cast<std::size_t>(ASN1_STRING_length(cn)));
  }
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans, i);
    if (name->type != GEN_DNS && name->type != GEN_EMAIL) continue;
    const ASN1_STRING* text = name->d.ia5;
    names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(text)),
                       static_cast<std::size_t>(ASN1_STRING_length(text)));
  }
  GENERAL_NAMES_free(sans);
  return names;
}

}  // namespace pgward::proxy
