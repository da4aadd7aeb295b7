// One client connection: startup and authentication, then the relay between the client and the server linked to
// it. Two coroutines share the session: client_loop() reads the client and writes to the server (taking a server
// from the pool at the first message of a transaction), server_loop() reads the linked server and writes to the
// client, and gives the server back when ReadyForQuery says idle with nothing outstanding. Both run on the
// session's executor, so they interleave only at co_await points and share state without locks.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "protocol/codec.hpp"
#include "proxy/proxy.hpp"
#include "proxy/server_conn.hpp"

namespace pgward::proxy {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Proxy& proxy, tcp::socket socket, std::uint64_t id);
  ~Session();
  void start();

 private:
  enum class LoginResult { ok, closed, cancel_request };

  asio::awaitable<void> run();
  asio::awaitable<LoginResult> startup();
  asio::awaitable<bool> authenticate();
  asio::awaitable<bool> finish_login();
  asio::awaitable<void> client_loop();
  asio::awaitable<void> server_loop(std::shared_ptr<ServerConn> server);

  // Takes a server from the pool (connecting one if a slot is free) and brings its session state in line with
  // this client's. Sends the client an ErrorResponse (non-fatal) and returns null when that fails.
  asio::awaitable<std::shared_ptr<ServerConn>> acquire(bool fatal);
  asio::awaitable<bool> link(bool fatal);
  void unlink(bool reusable);
  asio::awaitable<std::optional<ProxyError>> restore_params(ServerConn& server);

  // Client I/O.
  asio::awaitable<bool> fill_client();
  asio::awaitable<std::optional<protocol::Message>> read_client_message(std::uint32_t max_length);
  asio::awaitable<bool> send_client(std::string_view bytes);
  asio::awaitable<void> send_error(std::string_view sqlstate, std::string_view message, bool fatal,
                                   std::string_view detail = {});
  asio::awaitable<void> send_ready_for_query();
  std::string_view client_unread() const;
  void consume_client(std::size_t n);

  void track_frontend(char type);
  bool releasable() const;

  Proxy& proxy_;
  tcp::socket client_;
  const std::uint64_t id_;
  std::string peer_;

  // Client receive buffer: bytes [cpos_, cend_) are unread. Freed while the client is idle.
  std::string cbuf_;
  std::size_t cpos_ = 0;
  std::size_t cend_ = 0;
  std::size_t client_pass_ = 0;  // bytes of the current client message still to forward unexamined
  std::size_t client_drop_ = 0;  // bytes of the current client message still to discard
  bool discard_until_sync_ = false;  // after a failed checkout in the extended protocol, as the server would do

  // Login results.
  std::shared_ptr<const config::Config> config_;
  const config::Database* database_ = nullptr;
  PoolEntry* pool_ = nullptr;
  std::string user_;
  Params client_params_;  // what this client has in force, whatever server it lands on
  std::shared_ptr<CancelSlot> cancel_slot_;
  protocol::CancelRequest key_{};
  bool registered_ = false;
  bool counted_ = false;

  // Link state, valid while server_ is set.
  std::shared_ptr<ServerConn> server_;
  std::int64_t pending_ = 0;   // Sync, Query and FunctionCall messages without their ReadyForQuery yet
  bool ext_open_ = false;      // extended-protocol messages sent since the last Sync (Flush-ed portals and such)
  char tx_status_ = protocol::kTxIdle;
  std::size_t server_pass_ = 0;  // bytes of the current server message still to forward unexamined
  bool client_gone_ = false;
};

}  // namespace pgward::proxy
