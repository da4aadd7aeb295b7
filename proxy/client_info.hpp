// What the admin port and the drain may know about one live client session, without touching the session
// itself (which lives on its own executor and may be on another thread).
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace pgward::proxy {

class Session;

// Where a session is in its life. Session::transition() is its only writer.
enum class Phase : std::uint8_t {
  login,      // startup and authentication, up to the first ReadyForQuery
  idle,       // logged in, no server linked
  waiting,    // waiting for a server from the pool
  linked,     // a server is linked to the client (always, and only, in this phase)
  resolving,  // the linked server was lost or rolled back: pgward answers the client in its place
  closing,    // the client is gone or going; no server is linked
};
const char* to_string(Phase p);

// A client's state as PgBouncer's SHOW CLIENTS would put it, derived from its phase. `login` covers startup
// and authentication; a client pgward answers for (resolving) counts as active, one closing as none of these.
enum class ClientState : std::uint8_t { login, idle, waiting, active, closing };
const char* to_string(ClientState s);
ClientState client_state(Phase p);

// Why a client is held on its server in transaction and statement modes: session state that cannot follow it
// to another server (see Session::settle_state()).
enum class PinReason : std::uint8_t {
  none,
  temp,                  // temporary tables or other pg_temp objects
  listen,                // LISTEN, until UNLISTEN *
  advisory_lock,         // a session-level advisory lock, until released
  cursor,                // a cursor WITH HOLD, until closed
  load,                  // LOAD of a shared library
  prepared_transaction,  // PREPARE TRANSACTION
  unknown,               // pgward could not learn what the session holds
};
inline constexpr std::size_t kPinReasons = 8;
const char* to_string(PinReason r);

struct ClientInfo {
  ClientInfo(std::uint64_t id, std::string peer, std::weak_ptr<Session> session,
             boost::asio::any_io_executor exec)
      : id(id), peer(std::move(peer)), session(std::move(session)), executor(std::move(exec)) {}

  const std::uint64_t id;
  const std::string peer;
  const std::chrono::system_clock::time_point connected_at = std::chrono::system_clock::now();
  const std::weak_ptr<Session> session;
  const boost::asio::any_io_executor executor;

  std::atomic<Phase> phase{Phase::login};
  std::atomic<std::uint64_t> server_id{0};  // the linked server, 0 when none
  std::atomic<PinReason> pin{PinReason::none};

  struct Identity {
    std::string database;
    std::string user;         // as the client logged in
    std::string server_user;  // the pool's user (differs when [[database]] user is set)
  };
  // Set once at login.
  void set_identity(Identity id) {
    std::lock_guard lock(mu_);
    identity_ = std::move(id);
  }
  Identity identity() const {
    std::lock_guard lock(mu_);
    return identity_;
  }
  // "TLSv1.3 TLS_AES_256_GCM_SHA384" once a TLS handshake with the client succeeded; "" while plain.
  void set_tls(std::string text) {
    std::lock_guard lock(mu_);
    tls_ = std::move(text);
  }
  std::string tls() const {
    std::lock_guard lock(mu_);
    return tls_;
  }
  // The linked server's TLS description (null for a plain link), kept with its id.
  void set_server_tls(std::uint64_t server_id, std::shared_ptr<const std::string> text) {
    std::lock_guard lock(mu_);
    server_tls_id_ = server_id;
    server_tls_ = std::move(text);
  }
  // Of server `server_id` ("" when that is not the server last linked, or its link is plain).
  std::string server_tls(std::uint64_t server_id) const {
    std::lock_guard lock(mu_);
    return server_tls_id_ == server_id && server_tls_ ? *server_tls_ : std::string();
  }

 private:
  mutable std::mutex mu_;
  Identity identity_;
  std::string tls_;
  std::uint64_t server_tls_id_ = 0;
  std::shared_ptr<const std::string> server_tls_;
};

}  // namespace pgward::proxy
