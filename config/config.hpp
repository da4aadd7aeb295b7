// The validated, immutable configuration snapshot (TOML => Config).
// Parsing never half-applies: load_config() either returns a complete Config or throws ConfigError
// carrying "FILE:LINE: reason" so that --check-config and SIGHUP can report it verbatim.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/auth.hpp"

namespace pgward::config {

enum class PoolMode { session, transaction, statement };
enum class AuthType { trust, md5, scram_sha_256 };
// What pgward tells a client whose server connection died while its COMMIT was in flight.
enum class CommitResolution {
  off,     // 08007 transaction_resolution_unknown
  verify,  // learn the transaction id with the COMMIT, ask txid_status() on a new connection, report the
           // outcome
};

// What transaction and statement pooling do with session state a client leaves on its server (SET, temporary
// tables, LISTEN...).
enum class SessionState {
  track,  // settings follow the client from server to server; state that cannot pins the client to its server
  error,  // settings follow the client; statements that would leave other state are refused (0A000)
  ignore,  // nothing is tracked: state stays on the server for the next client (PgBouncer's behaviour)
};

// TLS modes, on either side: what PostgreSQL's sslmode means (libpq towards a server; towards clients, what a
// client must do: disable = never TLS, allow/prefer = TLS when the client asks, require = TLS always,
// verify-ca = TLS with a client certificate signed by ca_file, verify-full = and its CN is the user name).
enum class TlsMode { disable, allow, prefer, require, verify_ca, verify_full };
enum class TlsVersion { tls1_2, tls1_3 };

// [client_tls] or one database's [server_tls] settings. File names are resolved against the config file's
// folder; each *_line is where the key was set (0: not set), for errors about the file found later.
struct TlsSettings {
  TlsMode mode = TlsMode::disable;
  std::string cert_file;
  std::string key_file;
  std::string ca_file;  // "" = none (client side) or the system store (server side)
  TlsVersion min_protocol = TlsVersion::tls1_2;
  int cert_line = 0;
  int key_line = 0;
  int ca_line = 0;
  bool operator==(const TlsSettings&) const = default;
};

// libpq's default towards servers: TLS when the server offers it.
inline TlsSettings prefer_tls() {
  TlsSettings tls;
  tls.mode = TlsMode::prefer;
  return tls;
}

std::string_view to_string(PoolMode);
std::string_view to_string(TlsMode);
std::string_view to_string(AuthType);
std::string_view to_string(CommitResolution);
std::string_view to_string(SessionState);

using Duration = std::chrono::milliseconds;

struct Endpoint {
  std::string host;  // numeric IPv4/IPv6 address or "localhost"
  std::uint16_t port = 0;
  bool operator==(const Endpoint&) const = default;
};

// [pool] keys; every [[database]] starts from these and may override any of them.
struct PoolSettings {
  PoolMode mode = PoolMode::transaction;
  std::uint32_t size = 20;     // hard bound on server connections per (database, user)
  std::uint32_t min_size = 0;  // kept warm
  Duration wait_timeout{30'000};
  Duration server_idle_timeout{600'000};
  Duration server_lifetime{3'600'000};
  Duration server_connect_timeout{5'000};
  // Failed server connects are retried (exponential backoff with jitter) up to this many times per checkout,
  // and never past the client's wait_timeout.
  std::uint32_t server_retry_max = 20;
  // Idle servers are watched all the time (a dead one is closed when it dies); one idle at least this long is
  // also checked on checkout (a non-blocking peek at its socket, one syscall; 0 = at every checkout). The
  // peek only covers a death the watch has seen but not yet reported.
  Duration server_check_delay{30'000};
  // A client idle inside a transaction longer than this is closed (25P03) and its server rolled back; 0 =
  // off.
  Duration idle_in_transaction_timeout{0};
  CommitResolution commit_resolution = CommitResolution::off;
  std::uint32_t max_prepared_statements = 200;
  SessionState session_state = SessionState::track;
  // Server connections of one server user across every database, and of one database across every user
  // (PgBouncer's names); 0 = no limit. Only [pool] sets max_user_connections: it is not per database.
  std::uint32_t max_user_connections = 0;
  std::uint32_t max_db_connections = 0;
  bool operator==(const PoolSettings&) const = default;
};

// The name of the [[database]] that serves every database name not listed.
constexpr std::string_view kFallbackDatabase = "*";
// The virtual database of the admin console ([admin] console_users), served by pgward itself.
constexpr std::string_view kConsoleDatabase = "pgward";

struct Database {
  std::string name;  // what clients put in dbname
  std::string host = "127.0.0.1";
  std::uint16_t port = 5432;
  std::string dbname;                     // defaults to name
  std::optional<std::string> user;        // log in to the server as this user instead of the client's
  std::optional<std::string> password;    // server password, env:VAR already resolved
  PoolSettings pool;                      // [pool] with this database's overrides applied
  std::optional<std::string> auth_query;  // overrides [auth] query for clients of this database
  TlsSettings server_tls;                 // [server_tls] with this database's server_tls_* overrides applied
  int line = 0;                           // where the [[database]] table starts, for messages
  bool from_fallback = false;             // made by resolve_database() from the `*` entry
};

struct Config {
  std::string source_path;

  // [proxy]
  std::vector<Endpoint> listen{{"127.0.0.1", 6432}};
  std::uint32_t max_client_conn = 10'000;
  std::uint32_t workers = 1;  // 0 in the file means one per core, resolved here
  Duration shutdown_timeout{30'000};
  std::uint32_t max_message_size = 64u << 20;  // bytes; bound on any one protocol message length
  // Bytes pgward holds for one client in each direction at once; a larger client message that pgward must
  // see whole (a rewritten Parse/Bind/Query) is refused with 54000.
  std::uint32_t max_buffer_per_client = 16u << 20;
  // Bytes pgward holds at once, across all clients, for unfinished messages beyond each client's usual 16 kB
  // buffer; a message that would take more is refused with 53200.
  std::uint64_t max_buffer_total = 256ull << 20;
  // A client that has begun a message (or is being sent one, half-forwarded to its server) and does not
  // finish it within this long is closed with 08P01: it would otherwise hold memory, or a server, for ever.
  Duration client_message_timeout{60'000};
  // Database names the `*` fallback database serves, each with pools of its own that live as long as the
  // process; a login asking for one more gets 53300, so that clients cannot make pgward grow without end.
  std::uint32_t max_fallback_databases = 100;
  std::string log_level = "info";  // trace | debug | info | warn | error
  // auto | epoll | io_uring: the event loop, chosen at start-up (app/io_backend.cpp); a reload keeps it.
  std::string io_backend = "auto";
  // A client that has not logged in by then (startup packet and authentication) gets FATAL 08P01.
  Duration client_login_timeout{60'000};

  // [admin]
  std::vector<Endpoint> admin_listen{{"127.0.0.1", 9930}};
  std::optional<std::string> admin_token;  // env:VAR already resolved; nullopt when not configured
  // Users who may log in to the console database (kConsoleDatabase) on the proxy port; empty: no console.
  std::vector<std::string> console_users;

  // [auth]
  AuthType auth_type = AuthType::scram_sha_256;
  std::string users_file;  // resolved against the config file's folder; empty when not set
  // user name => secret: a plain password, "md5<32 hex>" or
  // "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>"
  std::map<std::string, std::string, std::less<>> users;
  // With auth.type scram-sha-256, the SCRAM verifier of every user whose secret allows one: stored verifiers
  // parsed, plain passwords derived here once (PBKDF2 is too dear to run per login, before any proof).
  std::map<std::string, protocol::auth::ScramVerifier, std::less<>> scram_verifiers;
  // auth_query: for a user not in the users file, the verifier is looked up in the database the client asked
  // for, as auth_query_user (empty query: no lookup). Found verifiers are trusted for auth_query_cache.
  std::string auth_query;
  std::string auth_query_user;
  Duration auth_query_cache{60'000};
  // At most this many lookup connections per database at once, idle and busy; a lookup beyond it waits.
  int auth_query_pool_size = 2;

  // [pool] defaults (as written, before per-database overrides)
  PoolSettings pool;

  // [client_tls]; [server_tls] as written (each database has its own copy with its overrides)
  TlsSettings client_tls;
  TlsSettings server_tls = prefer_tls();

  std::vector<Database> databases;

  const Database* find_database(std::string_view name) const;
  // The database a client asking for NAME gets: its [[database]], or else the `*` fallback with name and
  // dbname set to NAME (so that each database name gets its own pools); nullopt when neither exists.
  std::optional<Database> resolve_database(std::string_view name) const;
  const std::string* find_user_secret(std::string_view name) const;
  const protocol::auth::ScramVerifier* find_scram_verifier(std::string_view name) const;
  // The auth query for clients of `db` (its own or [auth] query); nullptr when there is none.
  const std::string* auth_query_for(const Database& db) const;
};

class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string file, int line, std::string reason);
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string file_;
  int line_;
  std::string reason_;
};

// Reads and validates FILE (and the users_file it names). Throws ConfigError. With PREVIOUS (a reload), the
// SCRAM verifiers of users whose plain password did not change are taken from it instead of derived again.
Config load_config(const std::string& path, const Config* previous = nullptr);

// "250ms", "30s", "5m", "1h" (also "1.5s"); nullopt when malformed or negative.
std::optional<Duration> parse_duration(std::string_view text);
// "127.0.0.1:6432", "[::1]:6432", "localhost:6432"; nullopt when malformed.
std::optional<Endpoint> parse_endpoint(std::string_view text);
// TEXT as a TOML basic string: "..." with quotes, backslashes and control characters escaped. Error messages
// quote values the same way.
std::string toml_quote(std::string_view text);
// 1048576, "64MB", "512kB", "1GB" (powers of 1024, as PostgreSQL does); nullopt when malformed.
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace pgward::config
