// One connection from pgward to a PostgreSQL server: login (startup + trust/cleartext/md5/SCRAM-SHA-256), the
// receive buffer, and the parameters the server currently has in force.
#pragma once

#include <array>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pool/pool.hpp"
#include "protocol/auth.hpp"
#include "protocol/codec.hpp"
#include "proxy/prepared.hpp"
#include "proxy/tls.hpp"

namespace pgward::proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Params = pool::Pool::Params;

// How to reach a server over TLS: libpq's sslmode, the context (null for "disable") and what to verify.
struct ServerTls {
  config::TlsMode mode = config::TlsMode::disable;
  std::shared_ptr<asio::ssl::context> context;
  TlsPeerCheck check;
};
// [server_tls] as one database has it, with its context from `context`.
ServerTls server_tls_target(const config::Database& db, std::shared_ptr<asio::ssl::context> context);

// Where and as whom to log in.
struct ServerTarget {
  std::string host;
  std::uint16_t port = 5432;
  std::string dbname;
  std::string user;
  std::optional<std::string> password;
  // SCRAM pass-through when there is no password: the keys of this user's last SCRAM login to pgward.
  std::optional<protocol::auth::ScramKeys> scram_keys;
  std::chrono::milliseconds connect_timeout{5000};
  ServerTls tls;
};

// An error for the client: SQLSTATE plus text (from the server's ErrorResponse or made by the proxy).
struct ProxyError {
  std::string sqlstate;
  std::string message;
  std::string detail;
};

// 128 bits of SHA-256 over a client's settings: equal fingerprints mean equal settings, even for settings a
// hostile client chose to collide.
using ParamsFingerprint = std::array<std::uint64_t, 2>;
ParamsFingerprint params_fingerprint(const Params& params);

class ServerConn final : public pool::Server {
 public:
  explicit ServerConn(asio::any_io_executor exec);
  ~ServerConn() override;

  void close() override;
  bool healthy() override;
  // An idle server's watch is a read posted on its socket (server_watch.cpp): it finds nothing while the
  // server lives and completes when it dies. Over plain TCP it reads into rbuf and is the first read of
  // whoever checks the server out next (fill() takes it over), so the watch costs no syscall of its own and
  // nothing is cancelled; over TLS it peeks at the raw socket and fill() cancels it.
  void watch_idle(pool::Pool& pool, const std::shared_ptr<pool::Server>& self, std::uint64_t period) override;

  tcp::socket& socket() { return socket_; }
  std::uint64_t id() const { return id_; }
  protocol::CancelRequest backend_key() const { return backend_key_; }
  const ServerTarget& target() const { return target_; }

  // Everything in force on the server that pgward knows: what it reported plus what pgward SET.
  Params params;
  // Names pgward SET that the server does not report (so that RESET is needed before another client).
  std::vector<std::string> set_unreported;
  // The fingerprint of a client's settings that `params` and `set_unreported` were last found to match
  // (see params_fingerprint()); all zero when unknown. Whatever changes them clears it.
  ParamsFingerprint params_match{};
  // Prepared statements this server holds under pgward's names (bounded by max_prepared_statements).
  ServerStatements statements;
  // Statements made by SQL PREPARE are one client's alone: the client they belong to, and their server names
  // (some may have been evicted since). Another client's checkout closes them first.
  std::uint64_t sql_owner = 0;
  std::vector<std::string> sql_statements;
  // Statements evicted by a query that made new ones: closed before the next batch, once that query has run.
  std::vector<std::string> evicted;
  // CancelRequests sent for this server and not yet taken by PostgreSQL: it is not reused until they are.
  int cancels_in_flight = 0;

  // Receive buffer: bytes [rpos, rend) are unread.
  std::string rbuf;
  std::size_t rpos = 0;
  std::size_t rend = 0;
  std::string_view unread() const { return std::string_view(rbuf).substr(rpos, rend - rpos); }
  void consume(std::size_t n);

  // Reads more bytes into rbuf (compacting first). False on EOF or error.
  asio::awaitable<bool> fill();
  // Reads one whole message no larger than the buffer can hold; nullopt on EOF, error or a malformed header.
  // The view is valid until the next read.
  asio::awaitable<std::optional<protocol::Message>> read_message();
  asio::awaitable<bool> write(std::string_view bytes);

  // Connects and logs in; on success the server is idle ('I') and params/backend_key are filled.
  asio::awaitable<std::optional<ProxyError>> login(const ServerTarget& target);
  // Whether the last login's TLS handshake succeeded; nullopt when none was tried.
  std::optional<bool> tls_handshake() const { return tls_handshake_; }
  // "TLSv1.3 TLS_AES_256_GCM_SHA384" when the link is TLS, else "" (null): made once, at the handshake, and
  // shared with what /api/servers shows of the client linked to it.
  std::string tls_description() const { return tls_text_ ? *tls_text_ : std::string(); }
  const std::shared_ptr<const std::string>& tls_text() const { return tls_text_; }

  // Runs one simple query whose output is only ParameterStatus/CommandComplete/notices (SET, RESET, DISCARD
  // ALL, ROLLBACK) and reads up to its ReadyForQuery; reported parameters update `params` and, when given,
  // `mirror`.
  asio::awaitable<std::optional<ProxyError>> run_internal(std::string_view sql, Params* mirror = nullptr);

  // What one simple query pgward runs for itself came back with.
  struct QueryResult {
    std::optional<ProxyError> error;   // the first ErrorResponse, or the connection lost
    char status = 0;                   // the ReadyForQuery status; 0 when none arrived
    std::optional<std::string> value;  // the first column of the first row; nullopt for none or NULL
    // Rows of exactly two non-NULL columns, in order (pgward's own queries that return name/value pairs).
    std::vector<std::pair<std::string, std::string>> pairs;
    // NotificationResponses that arrived meanwhile (a LISTENing client's): whole messages, for its client.
    std::string notifications;
  };
  asio::awaitable<QueryResult> run_query(std::string_view sql, Params* mirror = nullptr);

  static constexpr std::size_t kBufferSize = 64 * 1024;

 private:
  asio::awaitable<std::optional<ProxyError>> authenticate();
  // One attempt: connect, TLS (when `tls`), startup, authentication, all bounded by the connect timeout.
  asio::awaitable<std::optional<ProxyError>> login_once(const ServerTarget& target, bool tls);
  // SSLRequest and the handshake (server_tls.cpp). nullopt when the link may go on: TLS, or plain when the
  // server said 'N' to a "prefer".
  asio::awaitable<std::optional<ProxyError>> negotiate_tls(const ServerTarget& target);

  tcp::socket socket_;
  std::unique_ptr<TlsStream> tls_;  // refers to socket_
  std::shared_ptr<const std::string> tls_text_;
  std::optional<bool> tls_handshake_;
  std::string auth_method_;  // the SASL mechanism of the last login, "" when none was used
  std::uint64_t id_;
  ServerTarget target_;
  protocol::CancelRequest backend_key_{};
  bool closed_ = false;
  // The idle watch is posted and not yet taken over by a fill(); only the server's holder (the pool while
  // idle, else the lease's holder) touches it.
  bool watching_ = false;
  struct Watch;                           // what the watch's handler shares with fill() (server_watch.cpp)
  std::shared_ptr<Watch> watch_;          // plain TCP; made at the first watch, then reused
  asio::cancellation_signal watch_stop_;  // TLS
  char watch_byte_ = 0;                   // TLS
};

// What became of a CancelRequest sent to PostgreSQL ("Canceling Requests in Progress").
enum class CancelDelivery {
  delivered,  // PostgreSQL read it and closed the connection: the signal has gone to the backend
  not_sent,   // no connection, or it broke before the request was written: nothing reached the backend
  unsure,     // written, but PostgreSQL did not close the connection in time: it may still arrive
};
// Sends `key` on a new connection to `target` and waits (bounded by its connect_timeout) until PostgreSQL
// closes it, which it does after signalling the backend.
asio::awaitable<CancelDelivery> send_cancel_request(asio::any_io_executor exec, ServerTarget target,
                                                    protocol::CancelRequest key);

// "could not connect to server ..." and friends, for errors that did not come from an ErrorResponse.
ProxyError error_from_fields(std::string_view error_body, std::string_view fallback);

// Appends `value` as an SQL string literal that means the same whatever standard_conforming_strings says.
void put_sql_literal(std::string& out, std::string_view value);
// A query that SETs `name` to `value` for the session (set_config).
std::string set_statement(std::string_view name, std::string_view value);

}  // namespace pgward::proxy
