// Password authentication primitives: MD5 and SCRAM-SHA-256 (RFC 5802, RFC 7677), both directions.
// Pure computation over OpenSSL's libcrypto: no sockets. See PostgreSQL docs, "SASL Authentication"
// (protocol-flow / sasl-authentication) for how these are carried in the protocol.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgward::protocol::auth {

// Cryptographically random bytes (RAND_bytes); aborts the process if the RNG fails.
void random_bytes(void* out, std::size_t len);

// ---- MD5 ("md5" + md5(md5(password || user) || salt)) ----
std::string md5_hex(std::string_view data);
// Stored verifier form: "md5" + md5_hex(password || user).
std::string md5_verifier(std::string_view user, std::string_view password);
// What a client sends in its PasswordMessage for AuthenticationMD5Password.
std::string md5_client_response(std::string_view user, std::string_view password,
                                const std::array<std::uint8_t, 4>& salt);
// Checks a client's response against a stored secret that is either a plain password or an md5 verifier.
// Returns false for a SCRAM verifier (md5 cannot be checked against it) or a mismatch. Constant-time compare.
bool md5_check(std::string_view stored_secret, std::string_view user, const std::array<std::uint8_t, 4>& salt,
               std::string_view client_response);

// ---- SCRAM-SHA-256 ----
struct ScramVerifier {
  int iterations = 4096;
  std::string salt;  // raw bytes
  std::array<std::uint8_t, 32> stored_key{};
  std::array<std::uint8_t, 32> server_key{};
};

// What a stored secret is: PostgreSQL's rules ("md5" + 32 hex digits is an md5 verifier, the SCRAM-SHA-256$
// prefix a SCRAM verifier, anything else a plain password). Only a plain password can be replayed towards a
// server.
enum class SecretKind { kPlain, kMd5, kScram };
SecretKind classify_secret(std::string_view stored_secret);

// Parses "SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>" (PostgreSQL's
// format).
std::optional<ScramVerifier> parse_scram_verifier(std::string_view text);
ScramVerifier make_scram_verifier(std::string_view password, std::string_view raw_salt,
                                  int iterations = 4096);
std::string format_scram_verifier(const ScramVerifier&);
// A stored secret (plain password or SCRAM verifier) of `user` as a verifier; nullopt for an md5 verifier.
// A plain password is derived with stable_salt(key, user) and the default iteration count, so that its
// server-first-message looks exactly like the one an unknown user of that name gets (mock_scram_verifier).
// This runs PBKDF2: call it when the users file is loaded, never per login.
std::optional<ScramVerifier> scram_verifier_for_secret(std::string_view stored_secret, std::string_view user,
                                                       std::string_view key);

// ---- Answers that do not reveal which users exist ----
//
// PostgreSQL answers an unknown role with a mock salt that is stable per name (scram_mock_salt, keyed by
// a per-cluster secret), so that repeating a login does not tell a real role from a missing one. pgward keys
// the same idea with a random per-process secret.

// 32 random bytes drawn once per process, on first use.
const std::string& process_auth_key();
// HMAC-SHA-256(key, "salt" NUL user) cut to the default salt length (16 bytes): the same name always gets
// the same salt under one key, different names get unrelated ones.
std::string stable_salt(std::string_view key, std::string_view user);
// The verifier an unknown user (or one whose stored secret cannot do SCRAM) is challenged with: the default
// iteration count, stable_salt, and keys made by HMAC rather than PBKDF2, so that refusing costs no key
// derivation. No password matches it short of a SHA-256 preimage.
ScramVerifier mock_scram_verifier(std::string_view key, std::string_view user);

// PBKDF2 runs since the process started (every SaltedPassword computed, server and client side alike):
// the one expensive step of SCRAM, counted so that tests and /metrics can see where it happens.
std::uint64_t key_derivations();

std::string base64_encode(std::string_view raw);
std::optional<std::string> base64_decode(std::string_view text);

// What SCRAM pass-through needs to log in to a server as a user without its password: the ClientKey a
// client's proof revealed (ClientKey = ClientProof XOR ClientSignature, RFC 5802 section 3) and the verifier
// it was checked against, whose salt and iteration count the server must offer for the keys to fit.
struct ScramKeys {
  std::array<std::uint8_t, 32> client_key{};
  std::array<std::uint8_t, 32> server_key{};
  std::string salt;  // raw bytes
  int iterations = 0;
  ~ScramKeys();  // wipes client_key
  ScramKeys() = default;
  ScramKeys(const ScramKeys&) = default;
  ScramKeys& operator=(const ScramKeys&) = default;
};

// Server side of one exchange (pgward authenticating a client). Without set_channel_binding() the gs2 header
// must be "n,," or "y,,"; with it, "p=tls-server-end-point,," is accepted too (SCRAM-SHA-256-PLUS).
class ScramServer {
 public:
  explicit ScramServer(ScramVerifier verifier);
  // Deterministic variant with a fixed server nonce (printable ASCII except ','), e.g. for the RFC 7677
  // section 3 test vector. The one-argument constructor draws 18 random bytes, as PostgreSQL does.
  ScramServer(ScramVerifier verifier, std::string server_nonce);
  // Input: client-first-message (the SASLInitialResponse data). Output: server-first-message, or nullopt when
  // the message is malformed.
  std::optional<std::string> handle_client_first(std::string_view client_first);
  // Input: client-final-message. Output: server-final-message ("v=...") when the proof is right; nullopt
  // otherwise.
  std::optional<std::string> handle_client_final(std::string_view client_final);
  // After a successful handle_client_final: the keys for SCRAM pass-through (scram_keys); nullopt before.
  const std::optional<ScramKeys>& keys() const { return keys_; }
  // Before handle_client_first: the connection is TLS and SCRAM-SHA-256-PLUS was offered, with this channel
  // binding data (tls-server-end-point, RFC 5929: the hash of the certificate pgward showed). A client then
  // may bind ("p=tls-server-end-point"), and one that says it could but thinks the server cannot ("y") is
  // refused as a downgrade (RFC 5802 section 6).
  void set_channel_binding(std::string data) { cbind_data_ = std::move(data); }
  // The client bound the exchange to the channel.
  bool bound() const { return cbind_flag_ == 'p'; }

 private:
  std::string cbind_data_;
  ScramVerifier verifier_;
  std::optional<ScramKeys> keys_;
  std::string client_first_bare_;
  std::string server_first_;
  std::string nonce_;  // client nonce + server nonce
  // gs2-cbind-flag of client-first ('n' or 'y'), which the c= attribute of client-final must echo.
  char cbind_flag_ = 'n';
};

// tls-server-end-point channel binding data (RFC 5929 section 4.1) of a certificate given in DER: its hash
// under the hash function of its signature algorithm, SHA-256 in place of MD5 and SHA-1. "" when the
// certificate does not parse or its signature algorithm has no single hash function (Ed25519).
std::string tls_server_end_point(std::string_view der_certificate);

// Client side of one exchange (pgward authenticating to a PostgreSQL server). Without set_tls() the gs2
// header is "n,,": no channel binding.
class ScramClient {
 public:
  explicit ScramClient(std::string password);
  // Deterministic variant with a fixed client nonce (printable ASCII except ',') and the user name to put
  // in client-first (PostgreSQL ignores it; libpq sends an empty one), e.g. for the RFC 7677 section 3 test
  // vector.
  ScramClient(std::string password, std::string client_nonce, std::string_view user_name);
  // Pass-through: no password, the keys a client's proof revealed. The server must offer exactly their salt
  // and iteration count (it does when the client was checked against the server's own verifier).
  explicit ScramClient(ScramKeys keys);
  // Before client_first(), on a TLS link: `binding` is the tls-server-end-point data of the server's
  // certificate when the server offered SCRAM-SHA-256-PLUS, and the exchange is bound to it
  // ("p=tls-server-end-point,,"); "" when it did not, and the header says pgward could have bound ("y,,"),
  // as libpq does.
  void set_tls(std::string binding);
  // The exchange is bound to the channel: SASLInitialResponse names SCRAM-SHA-256-PLUS.
  bool bound() const { return !cbind_data_.empty(); }
  const char* mechanism() const { return bound() ? "SCRAM-SHA-256-PLUS" : "SCRAM-SHA-256"; }
  // client-first-message, to send in SASLInitialResponse.
  std::string client_first();
  // Input: server-first-message (AuthenticationSASLContinue data). Output: client-final-message, or nullopt
  // when the server's message is malformed or its nonce does not extend ours.
  std::optional<std::string> handle_server_first(std::string_view server_first);
  // Input: server-final-message (AuthenticationSASLFinal data). True when the server proved it knows the
  // verifier.
  bool verify_server_final(std::string_view server_final) const;

 private:
  std::string password_;
  std::optional<ScramKeys> keys_;
  std::string gs2_header_ = "n,,";
  std::string cbind_data_;
  std::string client_nonce_;
  std::string client_first_bare_;
  std::array<std::uint8_t, 32> expected_server_signature_{};
  bool have_server_signature_ = false;  // set once handle_server_first succeeded
};

}  // namespace pgward::protocol::auth
