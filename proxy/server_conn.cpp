#include "proxy/server_conn.hpp"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

#include "asio/socket_close.hpp"
#include "protocol/auth.hpp"
#include "protocol/sqlstate.hpp"
#include "proxy/server_watch.hpp"

namespace pgward::proxy {

namespace pr = protocol;
namespace ss = protocol::sqlstate;
using asio::as_tuple;
using asio::use_awaitable;

namespace {
std::atomic<std::uint64_t> next_server_id{1};
}

ServerConn::ServerConn(asio::any_io_executor exec) : socket_(std::move(exec)), id_(next_server_id++) {
  home = pool::event_loop_of(socket_.get_executor());
}

ServerConn::~ServerConn() { close(); }

void ServerConn::close() {
  if (closed_) return;
  closed_ = true;
  if (socket_.is_open()) {
    // Terminate lets PostgreSQL end the backend at once instead of noticing the EOF later; over TLS it is
    // followed by close_notify, so that PostgreSQL sees an orderly end rather than a reset or a truncation.
    static constexpr std::string_view kTerminate{"X\0\0\0\4", 5};
    const std::string_view last_words = rpos == rend ? kTerminate : std::string_view();
    if (tls_) {
      tls_->close_notify(last_words);
    } else if (!last_words.empty()) {
      ::send(socket_.native_handle(), last_words.data(), last_words.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    close_socket(socket_);
    spdlog::info("server {} closed ({}:{})", id_, target_.host, target_.port);
  }
}

bool ServerConn::healthy() {
  if (closed_ || !socket_.is_open() || rpos != rend) return false;
  // An idle server has nothing to say: EOF or any byte (a FATAL from pg_terminate_backend, say) means it is
  // gone.
  char c;
  const ssize_t n = ::recv(socket_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void ServerConn::consume(std::size_t n) {
  rpos += n;
  if (rpos == rend) rpos = rend = 0;
}

asio::awaitable<bool> ServerConn::fill() {
  if (rbuf.size() != kBufferSize) rbuf.resize(kBufferSize);
  if (rpos > 0) {
    std::memmove(rbuf.data(), rbuf.data() + rpos, rend - rpos);
    rend -= rpos;
    rpos = 0;
  }
  if (rend == rbuf.size()) co_return false;  // no room: a caller asked for more than the buffer holds
  const auto space = asio::buffer(rbuf.data() + rend, rbuf.size() - rend);
  // (No co_await inside ?: here or below: GCC 12 miscompiles it.)
  std::tuple<boost::system::error_code, std::size_t> got;
  if (tls_) {
    if (std::exchange(watching_, false)) watch_stop_.emit(asio::cancellation_type::all);
    got = co_await tls_->read_some(space);
  } else if (std::exchange(watching_, false)) {
    // The read posted while the server was idle, into this same space (rend was 0 then and is now).
    auto token = as_tuple(asio::deferred);
    got = co_await asio::async_initiate<decltype(token), void(boost::system::error_code, std::size_t)>(
        [w = watch_.get()](auto handler) {
          asio::any_io_executor ex = asio::get_associated_executor(handler);
          std::unique_lock lock(w->mu);
          if (!w->done) {
            w->set_taker(std::move(handler), std::move(ex));
            return;
          }
          // It came before this checkout: hand it over.
          w->done = false;
          const auto ec = w->ec;
          const auto n = w->n;
          lock.unlock();
          asio::post(ex, [h = std::move(handler), ec, n]() mutable { std::move(h)(ec, n); });
        },
        token);
  } else {
    got = co_await socket_.async_read_some(space, as_tuple(asio::deferred));
  }
  auto [ec, n] = got;
  if (ec) co_return false;
  rend += n;
  co_return true;
}

asio::awaitable<std::optional<pr::Message>> ServerConn::read_message() {
  for (;;) {
    auto r = pr::decode_message(unread(), kBufferSize - pr::kHeaderSize);
    if (r.status == pr::Status::error) co_return std::nullopt;
    if (r.status == pr::Status::ok) {
      consume(r.consumed);
      co_return r.message;
    }
    if (!co_await fill()) co_return std::nullopt;
  }
}

asio::awaitable<bool> ServerConn::write(std::string_view bytes) {
  const auto data = asio::buffer(bytes.data(), bytes.size());
  boost::system::error_code ec;
  if (tls_) {
    std::tie(ec, std::ignore) = co_await tls_->write(data);
  } else {
    std::tie(ec, std::ignore) = co_await asio::async_write(socket_, data, as_tuple(asio::deferred));
  }
  co_return !ec;
}

asio::awaitable<CancelDelivery> send_cancel_request(asio::any_io_executor exec, ServerTarget target,
                                                    protocol::CancelRequest key) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(exec, target.connect_timeout);
  tcp::resolver resolver(exec);
  tcp::socket sock(exec);
  auto connected = co_await ([&]() -> asio::awaitable<bool> {
    auto [rec, eps] =
        co_await resolver.async_resolve(target.host, std::to_string(target.port), as_tuple(use_awaitable));
    if (rec) co_return false;
    auto [cec, ep] = co_await asio::async_connect(sock, eps, as_tuple(use_awaitable));
    co_return !cec;
  }() || deadline.async_wait(as_tuple(use_awaitable)));
  if (connected.index() == 1 || !std::get<0>(connected)) {
    spdlog::warn("cancel: could not connect to {}:{}", target.host, target.port);
    co_return CancelDelivery::not_sent;
  }
  std::string out;
  pr::put_cancel_request(out, key.process_id, key.secret_key);
  auto [wec, wn] = co_await asio::async_write(sock, asio::buffer(out), as_tuple(use_awaitable));
  if (wec) co_return wn == 0 ? CancelDelivery::not_sent : CancelDelivery::unsure;
  // PostgreSQL closes the connection once it has signalled the backend.
  char c;
  auto closed = co_await (sock.async_read_some(asio::buffer(&c, 1), as_tuple(use_awaitable)) ||
                          deadline.async_wait(as_tuple(use_awaitable)));
  if (closed.index() == 1) co_return CancelDelivery::unsure;
  spdlog::info("cancel request forwarded to {}:{}", target.host, target.port);
  co_return CancelDelivery::delivered;
}

ParamsFingerprint params_fingerprint(const Params& params) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const auto& [k, v] : params) {  // sorted; each string with its length, so no two maps read alike
    for (const std::string* s : {&k, &v}) {
      const std::uint64_t n = s->size();
      EVP_DigestUpdate(ctx, &n, sizeof n);
      EVP_DigestUpdate(ctx, s->data(), s->size());
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  ParamsFingerprint out{};
  std::memcpy(out.data(), digest, sizeof out);
  if (out == ParamsFingerprint{}) out[0] = 1;  // all zero means "unknown"
  return out;
}

ProxyError error_from_fields(std::string_view body, std::string_view fallback) {
  ProxyError e{std::string(ss::kConnectionFailure), std::string(fallback), {}};
  if (auto fields = pr::parse_fields(body)) {
    if (auto c = pr::find_field(*fields, 'C'); c.size() == 5) e.sqlstate = c;
    if (auto m = pr::find_field(*fields, 'M'); !m.empty())
      e.message = std::string(fallback) + ": " + std::string(m);
    e.detail = pr::find_field(*fields, 'D');
  }
  return e;
}

void put_sql_literal(std::string& out, std::string_view value) {
  // E'' escapes mean the same whatever standard_conforming_strings is.
  out += "E'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += c;
    out += c;
  }
  out += '\'';
}

std::string set_statement(std::string_view name, std::string_view value) {
  // set_config() reads the value as a startup parameter or postgresql.conf would: a list setting
  // (search_path) stays a list, where SET name TO 'a, b' would make it one quoted name.
  std::string sql = "SELECT pg_catalog.set_config(";
  put_sql_literal(sql, name);
  sql += ", ";
  put_sql_literal(sql, value);
  sql += ", false)";
  return sql;
}

asio::awaitable<std::optional<ProxyError>> ServerConn::login(const ServerTarget& target) {
  target_ = target;
  const config::TlsMode mode = target.tls.mode;
  const bool tls_first = mode != config::TlsMode::disable && mode != config::TlsMode::allow;
  auto err = co_await login_once(target, tls_first);
  if (err && mode == config::TlsMode::allow && err->sqlstate.starts_with("28")) {
    // libpq's "allow": plain first, TLS when the server refused that (pg_hba.conf hostssl, say).
    tls_.reset();
    close_socket(socket_);
    rpos = rend = 0;
    err = co_await login_once(target, true);
  }
  co_return err;
}

asio::awaitable<std::optional<ProxyError>> ServerConn::login_once(const ServerTarget& target, bool tls) {
  const std::string where = target.host + ":" + std::to_string(target.port);
  auto fail = [&](std::string_view what) {
    return ProxyError{std::string(ss::kConnectionFailure),
                      "could not connect to server " + where + ": " + std::string(what),
                      {}};
  };

  tcp::resolver resolver(socket_.get_executor());
  auto [rec, endpoints] =
      co_await resolver.async_resolve(target.host, std::to_string(target.port), as_tuple(use_awaitable));
  if (rec) co_return fail(rec.message());

  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer deadline(socket_.get_executor(), target.connect_timeout);
  auto connect_result = co_await (asio::async_connect(socket_, endpoints, as_tuple(use_awaitable)) ||
                                  deadline.async_wait(as_tuple(use_awaitable)));
  if (connect_result.index() == 1) co_return fail("timeout expired");
  if (auto [cec, ep] = std::get<0>(connect_result); cec) co_return fail(cec.message());
  boost::system::error_code nec;
  socket_.set_option(tcp::no_delay(true), nec);  // a failure only costs latency

  if (tls) {
    deadline.expires_after(target.connect_timeout);
    auto tls_result = co_await (negotiate_tls(target) || deadline.async_wait(as_tuple(use_awaitable)));
    if (tls_result.index() == 1) {
      tls_handshake_ = false;
      co_return fail("timeout expired during the TLS handshake");
    }
    if (auto err = std::get<0>(tls_result)) co_return err;
  }

  std::string out;
  pr::put_startup_packet(out, {{"user", target.user}, {"database", target.dbname}});
  if (!co_await write(out)) co_return fail("connection lost during startup");

  // Authentication and the login exchange are bounded by the same deadline.
  deadline.expires_after(target.connect_timeout);
  auto login_result = co_await (authenticate() || deadline.async_wait(as_tuple(use_awaitable)));
  if (login_result.index() == 1) co_return fail("timeout expired during login");
  if (auto err = std::get<0>(login_result)) co_return err;
  spdlog::info("server {} connected to {} (database {}, user {}{}{})", id_, where, target.dbname, target.user,
               auth_method_.empty() ? "" : ", ", auth_method_);
  co_return std::nullopt;
}

namespace {

ProxyError lost_during_login(std::string_view where) {
  return ProxyError{std::string(ss::kConnectionFailure),
                    "server " + std::string(where) + " closed the connection during login",
                    {}};
}

// The answer to one Authentication request of the server, appended to `out` (nothing for AuthenticationOk and
// SASLFinal); an error when pgward cannot or must not go on.
std::optional<ProxyError> answer_authentication(const ServerTarget& target, std::string_view where,
                                                const pr::AuthRequest& req, const TlsStream* tls,
                                                std::optional<pr::auth::ScramClient>& scram,
                                                std::string& out) {
  const std::string server = "server " + std::string(where);
  const bool password_request = req.code == pr::authcode::kCleartextPassword ||
                                req.code == pr::authcode::kMd5Password || req.code == pr::authcode::kSasl;
  const bool passthrough = req.code == pr::authcode::kSasl && target.scram_keys;
  if (password_request && !target.password && !passthrough) {
    return ProxyError{
        std::string(ss::kInvalidPassword),
        server + " asks a password for user \"" + target.user +
            "\" and pgward has none (set [[database]] password or a plain password in the users file)",
        {}};
  }
  switch (req.code) {
    case pr::authcode::kOk: return std::nullopt;
    case pr::authcode::kCleartextPassword:
      pr::put_password_message(out, *target.password);
      return std::nullopt;
    case pr::authcode::kMd5Password: {
      std::array<std::uint8_t, 4> salt;
      std::memcpy(salt.data(), req.data.data(), 4);
      pr::put_password_message(out, pr::auth::md5_client_response(target.user, *target.password, salt));
      return std::nullopt;
    }
    case pr::authcode::kSasl: {
      auto mechs = pr::parse_sasl_mechanisms(req.data);
      if (!mechs || std::find(mechs->begin(), mechs->end(), "SCRAM-SHA-256") == mechs->end())
        return ProxyError{
            std::string(ss::kFeatureNotSupported), server + " offers no SASL mechanism pgward supports", {}};
      if (target.password) {
        scram.emplace(*target.password);
      } else {
        scram.emplace(*target.scram_keys);
      }
      // Over TLS, as libpq: bind to the server's certificate when it offers SCRAM-SHA-256-PLUS (plain SCRAM,
      // with "could have bound", when the hash cannot be had or it does not offer it).
      if (tls && tls->established()) {
        const bool plus = std::find(mechs->begin(), mechs->end(), "SCRAM-SHA-256-PLUS") != mechs->end();
        std::string binding = plus ? tls->peer_end_point() : std::string();
        if (!plus || !binding.empty()) scram->set_tls(std::move(binding));
      }
      pr::put_sasl_initial_response(out, scram->mechanism(), scram->client_first());
      return std::nullopt;
    }
    case pr::authcode::kSaslContinue: {
      if (!scram) return lost_during_login(where);
      auto final_msg = scram->handle_server_first(req.data);
      if (!final_msg && !target.password) {
        return ProxyError{std::string(ss::kInvalidPassword),
                          server + " offers user \"" + target.user +
                              "\" another SCRAM salt or iteration count than the verifier pgward checked the "
                              "client against: SCRAM pass-through needs PostgreSQL's own verifier",
                          {}};
      }
      if (!final_msg)
        return ProxyError{
            std::string(ss::kProtocolViolation), server + " sent a malformed SCRAM message", {}};
      pr::put_sasl_response(out, *final_msg);
      return std::nullopt;
    }
    case pr::authcode::kSaslFinal:
      if (!scram || !scram->verify_server_final(req.data))
        return ProxyError{std::string(ss::kInvalidAuthorizationSpecification),
                          server + " failed to prove it knows the SCRAM verifier",
                          {}};
      return std::nullopt;
    default:
      return ProxyError{std::string(ss::kFeatureNotSupported),
                        server + " asks for an authentication method pgward does not support (" +
                            std::to_string(req.code) + ")",
                        {}};
  }
}

}  // namespace

asio::awaitable<std::optional<ProxyError>> ServerConn::authenticate() {
  const std::string where = target_.host + ":" + std::to_string(target_.port);
  std::optional<pr::auth::ScramClient> scram;
  std::string out;
  for (;;) {
    auto msg = co_await read_message();
    if (!msg) co_return lost_during_login(where);
    out.clear();
    switch (msg->type) {
      case pr::be::kErrorResponse: co_return error_from_fields(msg->body, "server login failed");
      case pr::be::kNoticeResponse:
      case pr::be::kNegotiateProtocolVersion: break;
      case pr::be::kParameterStatus:
        if (auto ps = pr::parse_parameter_status(msg->body)) params[std::string(ps->first)] = ps->second;
        break;
      case pr::be::kBackendKeyData:
        if (auto k = pr::parse_backend_key_data(msg->body)) backend_key_ = *k;
        break;
      case pr::be::kReadyForQuery: co_return std::nullopt;
      case pr::be::kAuthentication: {
        auto req = pr::parse_authentication(msg->body);
        if (!req) co_return lost_during_login(where);
        if (auto err = answer_authentication(target_, where, *req, tls_.get(), scram, out)) co_return err;
        if (scram) auth_method_ = scram->mechanism();
        if (!out.empty() && !co_await write(out)) co_return lost_during_login(where);
        break;
      }
      default:
        co_return ProxyError{std::string(ss::kProtocolViolation),
                             "server " + where + " sent an unexpected message during login",
                             {}};
    }
  }
}

asio::awaitable<std::optional<ProxyError>> ServerConn::run_internal(std::string_view sql, Params* mirror) {
  QueryResult r = co_await run_query(sql, mirror);
  if (!r.error && r.status != pr::kTxIdle)
    r.error = ProxyError{std::string(ss::kInternalError), "server left a transaction open", {}};
  co_return r.error;
}

asio::awaitable<ServerConn::QueryResult> ServerConn::run_query(std::string_view sql, Params* mirror) {
  const auto lost = [] {
    return ProxyError{std::string(ss::kConnectionFailure), "server connection lost", {}};
  };
  QueryResult result;
  std::string out;
  pr::put_query(out, sql);
  if (!co_await write(out)) {
    result.error = lost();
    co_return result;
  }
  bool have_row = false;
  for (;;) {
    auto msg = co_await read_message();
    if (!msg) {
      result.error = lost();
      co_return result;
    }
    switch (msg->type) {
      case pr::be::kParameterStatus:
        if (auto ps = pr::parse_parameter_status(msg->body)) {
          params[std::string(ps->first)] = ps->second;
          params_match = {};
          if (mirror) {
            if (auto it = mirror->find(ps->first); it != mirror->end()) it->second = ps->second;
          }
        }
        break;
      case pr::be::kErrorResponse:
        if (!result.error) result.error = error_from_fields(msg->body, "could not apply session state");
        break;
      case pr::be::kDataRow:
        if (!have_row) {
          have_row = true;
          result.value = pr::parse_first_column(msg->body);
        }
        if (auto row = pr::parse_data_row(msg->body); row && row->size() == 2 && (*row)[0] && (*row)[1])
          result.pairs.emplace_back(*(*row)[0], *(*row)[1]);
        break;
      case pr::be::kReadyForQuery: {
        auto st = pr::parse_ready_for_query(msg->body);
        if (!st) {
          result.error = ProxyError{std::string(ss::kProtocolViolation), "malformed ReadyForQuery", {}};
          co_return result;
        }
        result.status = *st;
        co_return result;
      }
      case pr::be::kNotificationResponse:
        pr::MessageWriter(result.notifications, msg->type).raw(msg->body);
        break;
      default: break;  // RowDescription, CommandComplete, notices
    }
  }
}

}  // namespace pgward::proxy
