// The admin HTTP server on Boost.Beast: one coroutine per connection on the proxy's main io_context, bounded
// requests (8 KiB of headers, 64 KiB of body, 30 s per request), keep-alive, and a 400 for anything that does
// not parse. The only translation unit that includes Beast.
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "admin/admin.hpp"
#include "admin/internal.hpp"
#include "asio/socket_close.hpp"

namespace pgward::admin {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

constexpr std::size_t kHeaderLimit = 8 * 1024;
constexpr std::size_t kBodyLimit = 64 * 1024;
constexpr auto kRequestTimeout = std::chrono::seconds(30);

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// The length is not worth hiding; the contents are compared without an early exit.
bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// "database=app&x=y" => the value of `key`, %XX and + decoded; empty when absent.
std::string query_param(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) != key) continue;
    std::string_view raw = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    std::string out;
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '+') {
        out += ' ';
      } else if (raw[i] == '%' && i + 2 < raw.size() &&
                 std::isxdigit(static_cast<unsigned char>(raw[i + 1])) &&
                 std::isxdigit(static_cast<unsigned char>(raw[i + 2]))) {
        out += static_cast<char>(std::stoi(std::string(raw.substr(i + 1, 2)), nullptr, 16));
        i += 2;
      } else {
        out += raw[i];
      }
    }
    return out;
  }
  return {};
}

class AdminServer final : public proxy::Service {
 public:
  AdminServer(proxy::Proxy& proxy, std::string version) : proxy_(proxy), version_(std::move(version)) {}

  void start() override {
    const auto cfg = proxy_.config();
    for (const auto& ep : cfg->admin_listen) {
      // The admin port is not the data path: when it cannot bind, pgward says so loudly and keeps proxying.
      try {
        bind(ep);
      } catch (const std::exception& e) {
        spdlog::error("admin: cannot listen on {}:{}: {}; the admin port is not served there", ep.host,
                      ep.port, e.what());
      }
    }
  }

  void stop() override {
    for (auto& a : acceptors_) close_socket(*a);
  }

 private:
  void bind(const config::Endpoint& ep) {
    auto& ctx = proxy_.main_context();
    tcp::endpoint endpoint;
    if (ep.host == "*") {
      endpoint = {asio::ip::address_v6::any(), ep.port};
    } else if (ep.host == "localhost") {
      endpoint = {asio::ip::address_v4::loopback(), ep.port};
    } else {
      endpoint = {asio::ip::make_address(ep.host), ep.port};
    }
    auto acceptor = std::make_unique<tcp::acceptor>(ctx);
    acceptor->open(endpoint.protocol());
    acceptor->set_option(asio::socket_base::reuse_address(true));
    if (endpoint.address().is_v6()) acceptor->set_option(asio::ip::v6_only(false));
    acceptor->bind(endpoint);
    acceptor->listen(asio::socket_base::max_listen_connections);
    const bool loopback = endpoint.address().is_loopback();
    const auto local = acceptor->local_endpoint();
    spdlog::info("admin: listening on {}:{}", local.address().to_string(), local.port());
    if (!loopback && !cfg_token())
      spdlog::warn(
          "admin: {}:{} is not a loopback address and [admin] token is not set: read-only endpoints are "
          "open to anyone who can reach it, and reload/pause/resume are refused",
          local.address().to_string(), local.port());
    asio::co_spawn(ctx, accept_loop(*acceptor, loopback), asio::detached);
    acceptors_.push_back(std::move(acceptor));
  }

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, bool loopback) {
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(as_tuple(use_awaitable));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        spdlog::warn("admin: accept failed: {}", ec.message());
        asio::steady_timer t(proxy_.main_context(), std::chrono::milliseconds(100));
        co_await t.async_wait(as_tuple(use_awaitable));
        continue;
      }
      asio::co_spawn(proxy_.main_context(), serve(beast::tcp_stream(std::move(sock)), loopback),
                     asio::detached);
    }
  }

  // A request or a response that takes longer than kRequestTimeout ends the connection: the timer closes the
  // socket with close_socket(), which is safe with a read or a write in flight on either event loop (Beast's
  // own timeout closes it directly).
  struct Deadline {
    explicit Deadline(tcp::socket& socket)
        : timer(socket.get_executor()), watched(std::make_shared<tcp::socket*>(&socket)) {}
    ~Deadline() { *watched = nullptr; }  // a handler still queued finds nothing to close
    void arm() {
      timer.expires_after(kRequestTimeout);
      timer.async_wait([watched = watched](const boost::system::error_code& ec) {
        if (!ec && *watched != nullptr) close_socket(**watched);
      });
    }
    asio::steady_timer timer;
    std::shared_ptr<tcp::socket*> watched;
  };

  asio::awaitable<void> serve(beast::tcp_stream stream, bool loopback) {
    beast::flat_buffer buffer;
    Deadline deadline(stream.socket());
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(kHeaderLimit);
      parser.body_limit(kBodyLimit);
      deadline.arm();
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, as_tuple(use_awaitable));
      if (ec) {
        // A clean close between requests, a timeout or a reset: nothing to answer. Anything else did not
        // parse.
        const bool io = ec == http::error::end_of_stream || ec == asio::error::eof ||
                        ec == beast::error::timeout || ec == asio::error::connection_reset ||
                        ec == asio::error::operation_aborted ||
                        ec.category() == asio::error::get_system_category();
        if (!io) {
          Response res{http::status::bad_request, 11};
          res.set(http::field::content_type, "application/json");
          res.set(http::field::connection, "close");
          res.body() = "{\"error\":" + json_string("bad request: " + ec.message()) + "}\n";
          res.prepare_payload();
          co_await http::async_write(stream, res, as_tuple(use_awaitable));
        }
        break;
      }
      Request req = parser.release();
      Response res = co_await handle(req, loopback, local_address(stream));
      res.version(req.version());
      res.keep_alive(req.keep_alive());
      res.set(http::field::server, "pgward");
      res.prepare_payload();
      deadline.arm();
      auto [wec, wn] = co_await http::async_write(stream, res, as_tuple(use_awaitable));
      if (wec || !res.keep_alive()) break;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  // The address the client connected to, without the IPv4-mapped prefix of a dual-stack listener.
  static std::string local_address(beast::tcp_stream& stream) {
    boost::system::error_code ec;
    auto address = stream.socket().local_endpoint(ec).address();
    if (ec) return {};
    if (address.is_v6() && address.to_v6().is_v4_mapped())
      address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
    return address.to_string();
  }

  static Response reply(http::status status, std::string body, std::string_view type = "application/json") {
    Response res{status, 11};
    res.set(http::field::content_type, type);
    if (!body.empty() && body.back() != '\n') body += '\n';
    res.body() = std::move(body);
    return res;
  }
  static Response error(http::status status, std::string_view message) {
    return reply(status, "{\"error\":" + json_string(message) + "}");
  }

  // With a token: every mutating request, and every request on a non-loopback listener except the health
  // checks (which orchestrators call without credentials), needs `Authorization: Bearer <token>`. Read per
  // request, so that a reload can change the token.
  std::optional<std::string> cfg_token() const { return proxy_.config()->admin_token; }

  bool authorized(const Request& req, const std::string& token) const {
    const auto header = req[http::field::authorization];
    constexpr std::string_view kBearer = "Bearer ";
    if (header.size() <= kBearer.size() || !beast::iequals(header.substr(0, kBearer.size()), kBearer))
      return false;
    return constant_time_equal(token, std::string_view(header.data(), header.size()).substr(kBearer.size()));
  }

  template <class Name>
  static std::optional<std::string_view> header(const Request& req, Name name) {
    const auto it = req.find(name);
    if (it == req.end()) return std::nullopt;
    return std::string_view(it->value().data(), it->value().size());
  }

  std::optional<Refused> refuse_browser(const Request& req, std::string_view path, bool token_ok,
                                        const std::string& local) const {
    RequestFacts facts;
    facts.safe_method = req.method() == http::verb::get || req.method() == http::verb::head;
    facts.probe = path == "/metrics" || path.starts_with("/health/");
    facts.token_ok = token_ok;
    facts.host_headers = req.count(http::field::host);
    facts.host = header(req, http::field::host).value_or(std::string_view{});
    facts.origin = header(req, http::field::origin);
    facts.sec_fetch_site = header(req, "Sec-Fetch-Site");
    facts.content_type = header(req, http::field::content_type);
    std::vector<std::string> own_hosts{local};
    for (const auto& ep : proxy_.config()->admin_listen) own_hosts.push_back(ep.host);
    return check_browser_request(facts, own_hosts);
  }

  asio::awaitable<Response> handle(const Request& req, bool loopback, const std::string& local) {
    const std::string_view target(req.target().data(), req.target().size());
    const auto qmark = target.find('?');
    const std::string_view path = target.substr(0, qmark);
    const std::string_view query =
        qmark == std::string_view::npos ? std::string_view{} : target.substr(qmark + 1);
    const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
    const bool post = req.method() == http::verb::post;
    const bool health = path.starts_with("/health/");
    const bool mutating = path == "/api/reload" || path == "/api/pause" || path == "/api/resume";

    const auto token = cfg_token();
    const bool token_ok = token && authorized(req, *token);
    if (auto refused = refuse_browser(req, path, token_ok, local)) {
      proxy::stats::add(refused_[static_cast<std::size_t>(refused->reason)]);
      spdlog::warn("admin: refused {} {}: {}", std::string_view(req.method_string()), path, refused->message);
      co_return error(
          refused->reason == Refusal::host ? http::status::misdirected_request : http::status::forbidden,
          refused->message);
    }

    if (mutating || (!loopback && !health)) {
      if (token && !token_ok) {
        auto res = error(http::status::unauthorized, "missing or wrong Authorization: Bearer token");
        res.set(http::field::www_authenticate, "Bearer realm=\"pgward\"");
        co_return res;
      }
      if (!token && mutating && !loopback)
        co_return error(http::status::forbidden,
                        "set [admin] token to use this endpoint on a non-loopback address");
    }

    auto only = [&](bool allowed, std::string_view allow) -> std::optional<Response> {
      if (allowed) return std::nullopt;
      auto res = error(http::status::method_not_allowed, "method not allowed");
      res.set(http::field::allow, allow);
      return res;
    };

    if (path == "/metrics") {
      if (auto r = only(get, "GET")) co_return *r;
      co_return reply(http::status::ok, render_metrics(proxy_, version_, refused_),
                      "text/plain; version=0.0.4; charset=utf-8");
    }
    if (path == "/health/live") {
      if (auto r = only(get, "GET")) co_return *r;
      co_return reply(http::status::ok, "{\"status\":\"live\"}");
    }
    if (path == "/health/ready") {
      if (auto r = only(get, "GET")) co_return *r;
      auto ready = co_await check_ready(proxy_);
      co_return reply(ready.ready ? http::status::ok : http::status::service_unavailable, ready.json);
    }
    if (path == "/api/pools") {
      if (auto r = only(get, "GET")) co_return *r;
      co_return reply(http::status::ok, pools_json(proxy_));
    }
    if (path == "/api/clients") {
      if (auto r = only(get, "GET")) co_return *r;
      co_return reply(http::status::ok, clients_json(proxy_));
    }
    if (path == "/api/servers") {
      if (auto r = only(get, "GET")) co_return *r;
      co_return reply(http::status::ok, servers_json(proxy_));
    }
    if (path == "/api/config") {
      if (auto r = only(get, "GET")) co_return *r;
      co_return reply(http::status::ok, config_json(proxy_));
    }
    if (path == "/api/reload") {
      if (auto r = only(post, "POST")) co_return *r;
      const auto result = proxy_.reload();
      if (!result.ok)
        co_return reply(http::status::unprocessable_entity,
                        "{\"status\":\"failed\",\"error\":" + json_string(result.message) + "}");
      co_return reply(http::status::ok, "{\"status\":\"reloaded\"}");
    }
    if (path == "/api/pause" || path == "/api/resume") {
      if (auto r = only(post, "POST")) co_return *r;
      const std::string database = query_param(query, "database");
      const bool pause = path == "/api/pause";
      const bool ok = pause ? proxy_.pause(database) : proxy_.resume(database);
      if (!ok) co_return error(http::status::not_found, "no database named \"" + database + "\"");
      std::string body =
          std::string("{\"status\":") + (pause ? "\"paused\"" : "\"resumed\"") + ",\"paused\":[";
      const auto paused = proxy_.paused();
      for (std::size_t i = 0; i < paused.size(); ++i) body += (i ? "," : "") + json_string(paused[i]);
      co_return reply(http::status::ok, body + "]}");
    }
    co_return error(http::status::not_found, "no such endpoint");
  }

  proxy::Proxy& proxy_;
  const std::string version_;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors_;
  RefusalCounts refused_{};
};

}  // namespace

std::unique_ptr<proxy::Service> make_admin_server(proxy::Proxy& proxy, std::string version) {
  return std::make_unique<AdminServer>(proxy, std::move(version));
}

}  // namespace pgward::admin
