#include "protocol/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include "protocol/saslprep.hpp"

namespace pgward::protocol::auth {
namespace {

using Key = std::array<std::uint8_t, 32>;

// Constants mirror PostgreSQL's src/include/common/scram-common.h so that verifiers and nonces look the same
// as the ones PostgreSQL itself produces.
constexpr std::size_t kRawNonceLen = 18;     // SCRAM_RAW_NONCE_LEN
constexpr std::size_t kDefaultSaltLen = 16;  // SCRAM_DEFAULT_SALT_LEN
constexpr int kDefaultIterations = 4096;     // SCRAM_SHA_256_DEFAULT_ITERATIONS
// Upper bound on the iteration count a server may ask of us: each iteration is an HMAC, so an unbounded count
// lets a hostile or misconfigured server pin a proxy thread for minutes.
constexpr int kMaxServerIterations = 10'000'000;

constexpr std::string_view kScramPrefix = "SCRAM-SHA-256$";
constexpr std::size_t kProcessKeyLen = 32;

// A count, not state anything depends on: the only mutable global here, so that the cost of SCRAM can be
// observed wherever it is paid (key_derivations()).
std::atomic<std::uint64_t> g_key_derivations{0};
// c= attribute when no channel binding is used: base64 of the gs2 header (RFC 5802 section 7,
// "channel-binding").
constexpr std::string_view kCbindNone = "biws";                        // base64("n,,")
constexpr std::string_view kCbindUnsupported = "eSws";                 // base64("y,,")
constexpr std::string_view kCbindHeader = "p=tls-server-end-point,,";  // the only binding offered

[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "pgward: fatal: %s failed\n", what);
  std::abort();
}

// OpenSSL wants non-null pointers even for empty inputs in some code paths; an empty string_view may have a
// null data().
const unsigned char* bytes(std::string_view s) {
  static const unsigned char kEmpty = 0;
  return s.data() == nullptr ? &kEmpty : reinterpret_cast<const unsigned char*>(s.data());
}

std::string_view as_view(const Key& k) { return {reinterpret_cast<const char*>(k.data()), k.size()}; }

Key sha256(std::string_view data) {
  Key out{};
  unsigned int len = 0;
  if (EVP_Digest(bytes(data), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != out.size()) {
    fatal("SHA-256");
  }
  return out;
}

Key hmac_sha256(std::string_view key, std::string_view data) {
  if (key.size() > static_cast<std::size_t>(INT_MAX)) fatal("HMAC-SHA-256 (key too long)");
  Key out{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), bytes(key), static_cast<int>(key.size()), bytes(data), data.size(), out.data(),
           &len) == nullptr ||
      len != out.size()) {
    fatal("HMAC-SHA-256");
  }
  return out;
}

// SaltedPassword := Hi(Normalize(password), salt, i) (RFC 5802 section 3), Hi being PBKDF2 with HMAC-SHA-256.
// Normalize is SASLprep (RFC 4013) as PostgreSQL applies it, raw bytes included when SASLprep refuses the
// password (saslprep.hpp): every SaltedPassword pgward computes, for a verifier of a users-file password or
// towards a server, goes through here, so both sides hash what PostgreSQL and libpq hash.
Key salted_password(std::string_view raw_password, std::string_view salt, int iterations) {
  std::string password = saslprep::scram_password(raw_password);
  if (password.size() > static_cast<std::size_t>(INT_MAX) ||
      salt.size() > static_cast<std::size_t>(INT_MAX)) {
    fatal("PBKDF2 (input too long)");
  }
  g_key_derivations.fetch_add(1, std::memory_order_relaxed);
  Key out{};
  if (PKCS5_PBKDF2_HMAC(reinterpret_cast<const char*>(bytes(password)), static_cast<int>(password.size()),
                        bytes(salt), static_cast<int>(salt.size()), iterations, EVP_sha256(),
                        static_cast<int>(out.size()), out.data()) != 1) {
    fatal("PBKDF2-HMAC-SHA-256");
  }
  OPENSSL_cleanse(password.data(), password.size());
  return out;
}

bool equal_ct(std::string_view a, std::string_view b) {
  // Lengths are public (fixed-size digests or hex/base64 of them); only the contents need a constant-time
  // compare.
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string hex(const unsigned char* data, std::size_t len) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(len * 2, '\0');
  for (std::size_t i = 0; i < len; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0x0f];
  }
  return out;
}

bool is_hex_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool is_base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// RFC 5802 section 7: nonce = "r=" c-nonce [s-nonce]; printable = %x21-2B / %x2D-7E (visible ASCII except
// ',').
bool is_valid_nonce(std::string_view nonce) {
  return !nonce.empty() &&
         std::all_of(nonce.begin(), nonce.end(), [](char c) { return c >= 0x21 && c <= 0x7e && c != ','; });
}

// The stored-secret kinds PostgreSQL distinguishes (get_password_type in src/backend/libpq/crypt.c): an md5
// verifier is "md5" followed by exactly 32 hex digits; anything else that is not a SCRAM verifier is a plain
// password. Unlike PostgreSQL, text with the SCRAM prefix that fails to parse is not demoted to a plain
// password: in a proxy's configuration that is almost certainly a damaged verifier, and using it as a
// password would only turn a configuration error into a confusing authentication failure.
bool is_md5_verifier(std::string_view s) {
  return s.size() == 35 && s.starts_with("md5") && std::all_of(s.begin() + 3, s.end(), is_hex_digit);
}

// Digits only (no sign, no spaces), value in [1, max].
std::optional<int> parse_count(std::string_view text, int max) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > max) return std::nullopt;
  return value;
}

// SCRAM messages are comma-separated attributes; no attribute value may contain ',' (RFC 5802 section 7), so
// a plain split is exact. Empty tokens are kept so that ",," or a trailing ',' are rejected by the caller.
std::vector<std::string_view> split_attributes(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) {
      out.push_back(text.substr(start));
      return out;
    }
    out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
}

// attr-val = ALPHA "=" value (RFC 5802 section 7). Returns the attribute letter, or 0 when malformed.
char attribute_name(std::string_view token) {
  if (token.size() < 2 || token[1] != '=') return 0;
  char c = token[0];
  return ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) ? c : 0;
}

std::optional<std::string_view> attribute(std::string_view token, char name) {
  if (attribute_name(token) != name) return std::nullopt;
  return token.substr(2);
}

// saslname (RFC 5802 section 5.1): ',' and '=' are escaped as "=2C" and "=3D".
std::string escape_saslname(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    if (c == ',') {
      out += "=2C";
    } else if (c == '=') {
      out += "=3D";
    } else {
      out += c;
    }
  }
  return out;
}

std::string random_nonce() {
  std::array<std::uint8_t, kRawNonceLen> raw{};
  random_bytes(raw.data(), raw.size());
  return base64_encode({reinterpret_cast<const char*>(raw.data()), raw.size()});
}

Key xor_keys(const Key& a, const Key& b) {
  Key out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(a[i] ^ b[i]);
  return out;
}

std::optional<Key> decode_key(std::string_view b64) {
  auto raw = base64_decode(b64);
  if (!raw || raw->size() != Key{}.size()) return std::nullopt;
  Key out{};
  std::copy(raw->begin(), raw->end(), out.begin());
  return out;
}

}  // namespace

SecretKind classify_secret(std::string_view secret) {
  if (is_md5_verifier(secret)) return SecretKind::kMd5;
  if (secret.starts_with(kScramPrefix)) return SecretKind::kScram;
  return SecretKind::kPlain;
}

void random_bytes(void* out, std::size_t len) {
  auto* p = static_cast<unsigned char*>(out);
  while (len > 0) {
    int chunk = static_cast<int>(std::min<std::size_t>(len, INT_MAX));
    if (RAND_bytes(p, chunk) != 1) {
      std::fprintf(stderr,
                   "pgward: fatal: RAND_bytes failed: the system random number generator is unusable\n");
      std::abort();
    }
    p += chunk;
    len -= static_cast<std::size_t>(chunk);
  }
}

// ---- MD5 (PostgreSQL docs, "Password Authentication" and "Message Formats", AuthenticationMD5Password) ----

// MD5 may be unavailable (an OpenSSL configured for FIPS only). Rather than abort the proxy, every MD5 helper
// then yields an empty string, which never matches a real response, so md5 authentication just fails.
std::string md5_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes(data), data.size(), digest, &len, EVP_md5(), nullptr) != 1 || len != 16) return {};
  return hex(digest, len);
}

std::string md5_verifier(std::string_view user, std::string_view password) {
  std::string input;
  input.reserve(password.size() + user.size());
  input.append(password).append(user);
  std::string digest = md5_hex(input);
  OPENSSL_cleanse(input.data(), input.size());
  return digest.empty() ? std::string() : "md5" + digest;
}

namespace {

// "md5" + md5_hex(inner_hex || salt), where inner_hex = md5_hex(password || user) without the "md5" prefix.
std::string md5_salted(std::string_view inner_hex, const std::array<std::uint8_t, 4>& salt) {
  if (inner_hex.empty()) return {};
  std::string input(inner_hex);
  input.append(reinterpret_cast<const char*>(salt.data()), salt.size());
  std::string digest = md5_hex(input);
  return digest.empty() ? std::string() : "md5" + digest;
}

}  // namespace

std::string md5_client_response(std::string_view user, std::string_view password,
                                const std::array<std::uint8_t, 4>& salt) {
  std::string verifier = md5_verifier(user, password);
  if (verifier.empty()) return {};
  return md5_salted(std::string_view(verifier).substr(3), salt);
}

bool md5_check(std::string_view stored_secret, std::string_view user, const std::array<std::uint8_t, 4>& salt,
               std::string_view client_response) {
  std::string inner_hex;
  switch (classify_secret(stored_secret)) {
    case SecretKind::kScram: return false;  // a SCRAM verifier cannot produce the md5 hash
    case SecretKind::kMd5:
      inner_hex.assign(stored_secret.substr(3));
      // Our digests are lowercase hex; accept a verifier written in uppercase too.
      std::transform(inner_hex.begin(), inner_hex.end(), inner_hex.begin(),
                     [](char c) { return (c >= 'A' && c <= 'F') ? static_cast<char>(c - 'A' + 'a') : c; });
      break;
    case SecretKind::kPlain: {
      std::string verifier = md5_verifier(user, stored_secret);
      if (verifier.empty()) return false;
      inner_hex = verifier.substr(3);
      break;
    }
  }
  std::string expected = md5_salted(inner_hex, salt);
  return !expected.empty() && equal_ct(expected, client_response);
}

// ---- SCRAM-SHA-256 verifiers (PostgreSQL docs, "Password Authentication": the pg_authid.rolpassword format)
// ----

std::optional<ScramVerifier> parse_scram_verifier(std::string_view text) {
  if (!text.starts_with(kScramPrefix)) return std::nullopt;
  text.remove_prefix(kScramPrefix.size());
  // <iterations>:<salt>$<StoredKey>:<ServerKey>
  std::size_t dollar = text.find('$');
  if (dollar == std::string_view::npos) return std::nullopt;
  std::string_view params = text.substr(0, dollar);
  std::string_view keys = text.substr(dollar + 1);
  std::size_t colon1 = params.find(':');
  std::size_t colon2 = keys.find(':');
  if (colon1 == std::string_view::npos || colon2 == std::string_view::npos) return std::nullopt;

  // Stored verifiers are trusted configuration: any positive int count is accepted, as PostgreSQL does.
  auto iterations = parse_count(params.substr(0, colon1), INT_MAX);
  auto salt = base64_decode(params.substr(colon1 + 1));
  auto stored_key = decode_key(keys.substr(0, colon2));
  auto server_key = decode_key(keys.substr(colon2 + 1));  // also rejects extra '$' or ':' (not base64)
  if (!iterations || !salt || salt->empty() || !stored_key || !server_key) return std::nullopt;

  ScramVerifier v;
  v.iterations = *iterations;
  v.salt = std::move(*salt);
  v.stored_key = *stored_key;
  v.server_key = *server_key;
  return v;
}

// The derivation of RFC 5802 section 3 (as RFC 7677 instantiates it for SHA-256):
//   SaltedPassword := Hi(password, salt, i); ClientKey := HMAC(SaltedPassword, "Client Key");
//   StoredKey := H(ClientKey); ServerKey := HMAC(SaltedPassword, "Server Key").
ScramVerifier make_scram_verifier(std::string_view password, std::string_view raw_salt, int iterations) {
  ScramVerifier v;
  // PBKDF2 is undefined for fewer than one iteration and there is no error channel here; one iteration keeps
  // the verifier self-consistent (the recorded count is the one used).
  v.iterations = std::max(iterations, 1);
  v.salt.assign(raw_salt);
  Key salted = salted_password(password, raw_salt, v.iterations);
  Key client_key = hmac_sha256(as_view(salted), "Client Key");
  v.stored_key = sha256(as_view(client_key));
  v.server_key = hmac_sha256(as_view(salted), "Server Key");
  OPENSSL_cleanse(salted.data(), salted.size());
  OPENSSL_cleanse(client_key.data(), client_key.size());
  return v;
}

std::string format_scram_verifier(const ScramVerifier& v) {
  return std::string(kScramPrefix) + std::to_string(v.iterations) + ":" + base64_encode(v.salt) + "$" +
         base64_encode(as_view(v.stored_key)) + ":" + base64_encode(as_view(v.server_key));
}

std::optional<ScramVerifier> scram_verifier_for_secret(std::string_view stored_secret, std::string_view user,
                                                       std::string_view key) {
  switch (classify_secret(stored_secret)) {
    case SecretKind::kMd5: return std::nullopt;  // the md5 hash does not yield the SCRAM keys
    case SecretKind::kScram: return parse_scram_verifier(stored_secret);
    case SecretKind::kPlain: break;
  }
  return make_scram_verifier(stored_secret, stable_salt(key, user), kDefaultIterations);
}

// ---- Answers that do not reveal which users exist ----

const std::string& process_auth_key() {
  static const std::string key = [] {
    std::string k(kProcessKeyLen, '\0');
    random_bytes(k.data(), k.size());
    return k;
  }();
  return key;
}

namespace {

// HMAC-SHA-256(key, label NUL user). A user name never holds a NUL (startup packet strings end at one), so
// (label, user) pairs cannot collide.
Key keyed_by_user(std::string_view key, std::string_view label, std::string_view user) {
  std::string input;
  input.reserve(label.size() + 1 + user.size());
  input.append(label).append(1, '\0').append(user);
  return hmac_sha256(key, input);
}

}  // namespace

std::string stable_salt(std::string_view key, std::string_view user) {
  static_assert(kDefaultSaltLen <= Key{}.size());
  return std::string(as_view(keyed_by_user(key, "salt", user)).substr(0, kDefaultSaltLen));
}

ScramVerifier mock_scram_verifier(std::string_view key, std::string_view user) {
  ScramVerifier v;
  v.iterations = kDefaultIterations;
  v.salt = stable_salt(key, user);
  v.stored_key = keyed_by_user(key, "stored key", user);
  v.server_key = keyed_by_user(key, "server key", user);
  return v;
}

std::uint64_t key_derivations() { return g_key_derivations.load(std::memory_order_relaxed); }

// ---- Base64 (RFC 4648 section 4, with padding; the encoding SCRAM uses) ----

std::string tls_server_end_point(std::string_view der_certificate) {
  const unsigned char* in = bytes(der_certificate);
  X509* cert = d2i_X509(nullptr, &in, static_cast<long>(der_certificate.size()));
  if (!cert) return "";
  int md_nid = NID_undef;
  std::string out;
  if (X509_get_signature_info(cert, &md_nid, nullptr, nullptr, nullptr) == 1) {
    if (md_nid == NID_md5 || md_nid == NID_sha1) md_nid = NID_sha256;
    const EVP_MD* md = EVP_get_digestbynid(md_nid);
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (md && X509_digest(cert, md, hash, &len) == 1) out.assign(reinterpret_cast<const char*>(hash), len);
  }
  X509_free(cert);
  return out;
}

std::string base64_encode(std::string_view raw) {
  // EVP_EncodeBlock takes an int length; encode in chunks that are a multiple of 3 bytes so that no padding
  // appears mid-output.
  constexpr std::size_t kChunk = 3 << 20;
  std::string out((raw.size() + 2) / 3 * 4 + 1, '\0');  // +1: EVP_EncodeBlock writes a terminating NUL
  std::size_t pos = 0;
  while (!raw.empty()) {
    std::size_t n = std::min(raw.size(), kChunk);
    int written =
        EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + pos), bytes(raw), static_cast<int>(n));
    pos += static_cast<std::size_t>(written);
    raw.remove_prefix(n);
  }
  out.resize(pos);
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  // EVP_DecodeBlock is lenient (skips surrounding whitespace) and always returns a multiple of 3 bytes,
  // counting padding as zero bytes. Validate strictly first, then trim the padding it decoded.
  if (text.size() % 4 != 0) return std::nullopt;
  std::size_t padding = 0;
  if (!text.empty() && text.back() == '=') padding = text[text.size() - 2] == '=' ? 2 : 1;
  if (!std::all_of(text.begin(), text.end() - static_cast<std::ptrdiff_t>(padding), is_base64_char)) {
    return std::nullopt;  // also rejects '=' anywhere but the last two positions
  }
  // The bits of the last character that fall into the padding must be zero (RFC 4648 section 3.5); otherwise
  // several texts decode to the same bytes, e.g. "Zg==" and "Zh==".
  if (padding > 0) {
    static constexpr std::string_view kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::size_t last = kAlphabet.find(text[text.size() - padding - 1]);
    if ((last & (padding == 1 ? 0x03 : 0x0f)) != 0) return std::nullopt;
  }

  constexpr std::size_t kChunk = 4 << 20;  // a multiple of 4 characters, so padding only in the last chunk
  std::string out(text.size() / 4 * 3, '\0');
  std::size_t pos = 0;
  while (!text.empty()) {
    std::size_t n = std::min(text.size(), kChunk);
    int written =
        EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data() + pos), bytes(text), static_cast<int>(n));
    if (written < 0 || static_cast<std::size_t>(written) != n / 4 * 3) return std::nullopt;
    pos += static_cast<std::size_t>(written);
    text.remove_prefix(n);
  }
  out.resize(pos - padding);
  return out;
}

// ---- SCRAM server (PostgreSQL docs, "SASL Authentication" / "SCRAM-SHA-256 Authentication") ----

ScramServer::ScramServer(ScramVerifier verifier) : ScramServer(std::move(verifier), random_nonce()) {}

// Until client-first arrives, nonce_ holds only the server's part of the nonce.
ScramServer::ScramServer(ScramVerifier verifier, std::string server_nonce)
    : verifier_(std::move(verifier)), nonce_(std::move(server_nonce)) {}

// client-first-message = gs2-header client-first-message-bare (RFC 5802 section 7), where
//   gs2-header = gs2-cbind-flag "," [authzid] ","   and
//   client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions].
// One exchange per object: any failure, and any call out of order, ends it.
std::optional<std::string> ScramServer::handle_client_first(std::string_view client_first) {
  if (!server_first_.empty() || nonce_.empty()) {
    nonce_.clear();
    return std::nullopt;
  }
  std::string server_nonce = std::move(nonce_);
  nonce_.clear();

  // 'p' requests channel binding, accepted only as tls-server-end-point and only when offered. An authzid
  // ("a=...") is rejected as PostgreSQL does: the role is the startup packet's user.
  std::size_t header = 3;
  if (client_first.starts_with('p')) {
    if (cbind_data_.empty() || !client_first.starts_with(kCbindHeader)) return std::nullopt;
    header = kCbindHeader.size();
  } else if (client_first.size() < 3 || (client_first[0] != 'n' && client_first[0] != 'y') ||
             client_first[1] != ',' || client_first[2] != ',') {
    return std::nullopt;
  } else if (client_first[0] == 'y' && !cbind_data_.empty()) {
    return std::nullopt;  // the client thinks pgward cannot bind: someone took "-PLUS" off the offer
  }
  std::string_view bare = client_first.substr(header);
  std::vector<std::string_view> attrs = split_attributes(bare);
  // The first attribute must be the user name: "m=" (mandatory extension) is refused, as no extension is
  // supported. The name itself is ignored (PostgreSQL docs: the client may send an empty one; the startup
  // packet's user is authoritative), so any value is accepted.
  if (attrs.size() < 2 || !attribute(attrs[0], 'n')) return std::nullopt;
  auto client_nonce = attribute(attrs[1], 'r');
  if (!client_nonce || !is_valid_nonce(*client_nonce)) return std::nullopt;
  // Optional extensions after the nonce are ignored, like PostgreSQL, but must be well-formed.
  for (std::size_t i = 2; i < attrs.size(); ++i) {
    if (attribute_name(attrs[i]) == 0) return std::nullopt;
  }
  if (!is_valid_nonce(server_nonce)) return std::nullopt;

  cbind_flag_ = client_first[0];
  client_first_bare_.assign(bare);
  nonce_.assign(*client_nonce).append(server_nonce);
  // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
  server_first_ =
      "r=" + nonce_ + ",s=" + base64_encode(verifier_.salt) + ",i=" + std::to_string(verifier_.iterations);
  return server_first_;
}

// client-final-message = channel-binding "," nonce ["," extensions] "," proof (RFC 5802 section 7).
std::optional<std::string> ScramServer::handle_client_final(std::string_view client_final) {
  if (server_first_.empty() || nonce_.empty()) return std::nullopt;
  std::string nonce = std::move(nonce_);
  nonce_.clear();  // single use, whatever the outcome: no second guess at the proof

  std::vector<std::string_view> attrs = split_attributes(client_final);
  if (attrs.size() < 3) return std::nullopt;
  // Without channel binding c= must be the base64 of the gs2 header the client sent; "y,," and "n,," differ
  // so that a downgrade from channel binding is detected (RFC 5802 section 6).
  // With channel binding, c= is the base64 of the gs2 header followed by the binding data.
  auto cbind = attribute(attrs[0], 'c');
  const std::string expected = cbind_flag_ == 'p'   ? base64_encode(std::string(kCbindHeader) + cbind_data_)
                               : cbind_flag_ == 'y' ? std::string(kCbindUnsupported)
                                                    : std::string(kCbindNone);
  if (!cbind || *cbind != expected) return std::nullopt;
  auto echoed_nonce = attribute(attrs[1], 'r');
  if (!echoed_nonce || *echoed_nonce != nonce) return std::nullopt;
  for (std::size_t i = 2; i + 1 < attrs.size(); ++i) {
    char name = attribute_name(attrs[i]);
    if (name == 0 || name == 'c' || name == 'r' || name == 'p') return std::nullopt;  // proof must be last
  }
  auto proof_b64 = attribute(attrs.back(), 'p');
  if (!proof_b64) return std::nullopt;
  auto proof = decode_key(*proof_b64);
  if (!proof) return std::nullopt;

  // AuthMessage := client-first-message-bare + "," + server-first-message + "," + client-final-without-proof
  std::size_t without_proof_len = static_cast<std::size_t>(attrs.back().data() - client_final.data()) - 1;
  std::string auth_message =
      client_first_bare_ + "," + server_first_ + "," + std::string(client_final.substr(0, without_proof_len));

  // ClientSignature := HMAC(StoredKey, AuthMessage); ClientKey := ClientProof XOR ClientSignature; the proof
  // is right when H(ClientKey) = StoredKey (RFC 5802 section 3).
  Key client_signature = hmac_sha256(as_view(verifier_.stored_key), auth_message);
  Key client_key = xor_keys(*proof, client_signature);
  Key computed_stored_key = sha256(as_view(client_key));
  if (!equal_ct(as_view(computed_stored_key), as_view(verifier_.stored_key))) {
    OPENSSL_cleanse(client_key.data(), client_key.size());
    return std::nullopt;
  }
  ScramKeys& keys = keys_.emplace();
  keys.client_key = client_key;
  keys.server_key = verifier_.server_key;
  keys.salt = verifier_.salt;
  keys.iterations = verifier_.iterations;
  OPENSSL_cleanse(client_key.data(), client_key.size());

  // ServerSignature := HMAC(ServerKey, AuthMessage); server-final-message = "v=" base64(ServerSignature)
  Key server_signature = hmac_sha256(as_view(verifier_.server_key), auth_message);
  return "v=" + base64_encode(as_view(server_signature));
}

// ---- SCRAM client (as libpq: src/interfaces/libpq/fe-auth-scram.c) ----

ScramKeys::~ScramKeys() { OPENSSL_cleanse(client_key.data(), client_key.size()); }

ScramClient::ScramClient(ScramKeys keys) : ScramClient(std::string(), random_nonce(), "") {
  keys_ = std::move(keys);
}

ScramClient::ScramClient(std::string password) : ScramClient(std::move(password), random_nonce(), "") {}

ScramClient::ScramClient(std::string password, std::string client_nonce, std::string_view user_name)
    : password_(std::move(password)),
      client_nonce_(std::move(client_nonce)),
      client_first_bare_("n=" + escape_saslname(user_name) + ",r=" + client_nonce_) {}

void ScramClient::set_tls(std::string binding) {
  cbind_data_ = std::move(binding);
  gs2_header_ = cbind_data_.empty() ? "y,," : std::string(kCbindHeader);
}

// PostgreSQL takes the role from the startup packet, so libpq leaves the SCRAM user name empty; the default
// constructor does the same.
std::string ScramClient::client_first() { return gs2_header_ + client_first_bare_; }

std::optional<std::string> ScramClient::handle_server_first(std::string_view server_first) {
  if (have_server_signature_) return std::nullopt;  // one exchange per object

  // Exactly r=, s=, i= and nothing after, as libpq requires ("m=" mandatory extensions are thereby refused).
  std::vector<std::string_view> attrs = split_attributes(server_first);
  if (attrs.size() != 3) return std::nullopt;
  auto nonce = attribute(attrs[0], 'r');
  auto salt_b64 = attribute(attrs[1], 's');
  auto iterations_text = attribute(attrs[2], 'i');
  if (!nonce || !salt_b64 || !iterations_text) return std::nullopt;
  // The server must extend our nonce (RFC 5802 section 5.1), otherwise this could be a replayed exchange.
  if (nonce->size() <= client_nonce_.size() || !nonce->starts_with(client_nonce_) ||
      !is_valid_nonce(*nonce)) {
    return std::nullopt;
  }
  auto salt = base64_decode(*salt_b64);
  if (!salt || salt->empty() || salt->size() > static_cast<std::size_t>(INT_MAX)) return std::nullopt;
  auto iterations = parse_count(*iterations_text, kMaxServerIterations);
  if (!iterations) return std::nullopt;

  Key salted{};
  Key client_key{};
  Key server_key{};
  if (keys_) {
    // Pass-through: the keys fit only the verifier they came from.
    if (*salt != keys_->salt || *iterations != keys_->iterations) return std::nullopt;
    client_key = keys_->client_key;
    server_key = keys_->server_key;
  } else {
    salted = salted_password(password_, *salt, *iterations);
    client_key = hmac_sha256(as_view(salted), "Client Key");
    server_key = hmac_sha256(as_view(salted), "Server Key");
  }
  Key stored_key = sha256(as_view(client_key));

  // c= is the gs2 header and the channel binding data, if any (RFC 5802 section 7, "channel-binding").
  std::string final_without_proof =
      "c=" + base64_encode(gs2_header_ + cbind_data_) + ",r=" + std::string(*nonce);
  std::string auth_message = client_first_bare_ + "," + std::string(server_first) + "," + final_without_proof;
  Key client_signature = hmac_sha256(as_view(stored_key), auth_message);
  Key proof = xor_keys(client_key, client_signature);
  expected_server_signature_ = hmac_sha256(as_view(server_key), auth_message);
  have_server_signature_ = true;

  OPENSSL_cleanse(salted.data(), salted.size());
  OPENSSL_cleanse(client_key.data(), client_key.size());
  OPENSSL_cleanse(server_key.data(), server_key.size());
  return final_without_proof + ",p=" + base64_encode(as_view(proof));
}

// server-final-message = (server-error / verifier) ["," extensions] (RFC 5802 section 7). PostgreSQL sends
// just "v=..."; "e=..." (or anything else) is a failure.
bool ScramClient::verify_server_final(std::string_view server_final) const {
  if (!have_server_signature_) return false;
  auto signature_b64 = attribute(server_final, 'v');
  if (!signature_b64) return false;
  auto signature = decode_key(*signature_b64);  // a ',' (extensions) is not base64, so it is rejected here
  return signature && equal_ct(as_view(*signature), as_view(expected_server_signature_));
}

}  // namespace pgward::protocol::auth
