#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/auth.hpp"

namespace pgward::protocol::auth {
namespace {

// ---- Independent helpers (straight OpenSSL calls, not the code under test) used to craft client messages
// ----

std::string raw_hmac(std::string_view key, std::string_view data) {
  unsigned char out[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string raw_sha256(std::string_view data) {
  unsigned char out[32];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string raw_b64(std::string_view raw) {
  std::string out((raw.size() + 2) / 3 * 4 + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()), static_cast<int>(raw.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// client-final-without-proof + ",p=" + proof, per RFC 5802 section 3.
std::string craft_client_final(std::string_view password, std::string_view salt, int iterations,
                               std::string_view client_first_bare, std::string_view server_first,
                               std::string_view final_without_proof) {
  unsigned char salted[32];
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()),
                    iterations, EVP_sha256(), 32, salted);
  std::string salted_s(reinterpret_cast<char*>(salted), 32);
  std::string client_key = raw_hmac(salted_s, "Client Key");
  std::string auth_message = std::string(client_first_bare) + "," + std::string(server_first) + "," +
                             std::string(final_without_proof);
  std::string signature = raw_hmac(raw_sha256(client_key), auth_message);
  std::string proof(32, '\0');
  for (int i = 0; i < 32; ++i) proof[i] = static_cast<char>(client_key[i] ^ signature[i]);
  return std::string(final_without_proof) + ",p=" + raw_b64(proof);
}

std::string nonce_of(std::string_view server_first) {
  // server_first = "r=<nonce>,s=...,i=..."
  return std::string(server_first.substr(2, server_first.find(',') - 2));
}

// ---- RFC 7677 section 3 test vector ----
constexpr std::string_view kRfcPassword = "pencil";
constexpr std::string_view kRfcClientNonce = "rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kRfcServerNoncePart = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view kRfcSaltB64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
constexpr std::string_view kRfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kRfcServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr std::string_view kRfcClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+"
    "Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr std::string_view kRfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
// The same keys in PostgreSQL's rolpassword format, computed independently (Python hashlib.pbkdf2_hmac /
// hmac).
constexpr std::string_view kRfcVerifier =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

ScramVerifier rfc_verifier() {
  auto salt = base64_decode(kRfcSaltB64);
  EXPECT_TRUE(salt.has_value());
  return make_scram_verifier(kRfcPassword, salt.value_or(""), 4096);
}

// ---- MD5 ----

TEST(AuthMd5, HexDigestOfKnownInputs) {
  EXPECT_EQ(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
}

TEST(AuthMd5, VerifierMatchesPostgreSql) {
  // printf secretalice | md5sum  ->  4a0a68b43b6cd5cf266fa02f196e2371
  EXPECT_EQ(md5_verifier("alice", "secret"), "md54a0a68b43b6cd5cf266fa02f196e2371");
}

TEST(AuthMd5, ClientResponseMatchesPostgreSql) {
  // "md5" + md5("4a0a68b43b6cd5cf266fa02f196e2371" || salt), computed independently with Python hashlib.
  EXPECT_EQ(md5_client_response("alice", "secret", {0x01, 0x02, 0x03, 0x04}),
            "md598a0412b9c31436fc53776e863350083");
  EXPECT_EQ(md5_client_response("alice", "secret", {0xde, 0xad, 0xbe, 0xef}),
            "md53e1d73ba00a55e8805aa0277d29996c5");
}

TEST(AuthMd5, CheckAgainstPlainPasswordAndVerifier) {
  const std::array<std::uint8_t, 4> salt{0x01, 0x02, 0x03, 0x04};
  const std::string response = "md598a0412b9c31436fc53776e863350083";
  EXPECT_TRUE(md5_check("secret", "alice", salt, response));
  EXPECT_TRUE(md5_check("md54a0a68b43b6cd5cf266fa02f196e2371", "alice", salt, response));
  EXPECT_TRUE(md5_check("md54A0A68B43B6CD5CF266FA02F196E2371", "alice", salt, response));

  EXPECT_FALSE(md5_check("secret", "bob", salt, response));
  EXPECT_FALSE(md5_check("Secret", "alice", salt, response));
  EXPECT_FALSE(md5_check("secret", "alice", {0x01, 0x02, 0x03, 0x05}, response));
  EXPECT_FALSE(md5_check("secret", "alice", salt, ""));
  EXPECT_FALSE(md5_check("secret", "alice", salt, "md5"));
  EXPECT_FALSE(md5_check("secret", "alice", salt, response.substr(0, response.size() - 1)));
  EXPECT_FALSE(md5_check("secret", "alice", salt, response + "0"));
  EXPECT_FALSE(md5_check("secret", "alice", salt, "MD598A0412B9C31436FC53776E863350083"));
}

TEST(AuthMd5, CheckRejectsScramVerifier) {
  const std::array<std::uint8_t, 4> salt{0x01, 0x02, 0x03, 0x04};
  EXPECT_FALSE(md5_check(kRfcVerifier, "user", salt, md5_client_response("user", "pencil", salt)));
  // Something with the SCRAM prefix but damaged is not silently used as a plain password either.
  EXPECT_FALSE(
      md5_check("SCRAM-SHA-256$oops", "user", salt, md5_client_response("user", "SCRAM-SHA-256$oops", salt)));
}

TEST(AuthMd5, NearMd5LookingSecretIsAPlainPassword) {
  // 31 hex digits: not a verifier, so PostgreSQL (and we) treat it as a password.
  const std::string secret = "md54a0a68b43b6cd5cf266fa02f196e237";
  const std::array<std::uint8_t, 4> salt{9, 8, 7, 6};
  EXPECT_TRUE(md5_check(secret, "alice", salt, md5_client_response("alice", secret, salt)));
}

// ---- Base64 (RFC 4648 section 10 vectors) ----

TEST(AuthBase64, Rfc4648Vectors) {
  const std::vector<std::pair<std::string, std::string>> vectors = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [raw, encoded] : vectors) {
    EXPECT_EQ(base64_encode(raw), encoded);
    EXPECT_EQ(base64_decode(encoded), raw) << encoded;
  }
}

TEST(AuthBase64, RoundTripAllByteValues) {
  std::string raw;
  for (int i = 0; i < 256; ++i) raw.push_back(static_cast<char>(i));
  for (std::size_t len = 0; len <= raw.size(); ++len) {
    auto decoded = base64_decode(base64_encode(raw.substr(0, len)));
    ASSERT_TRUE(decoded.has_value()) << len;
    EXPECT_EQ(*decoded, raw.substr(0, len));
  }
}

TEST(AuthBase64, RejectsInvalid) {
  const std::vector<std::string_view> bad_inputs = {"Z",
                                                    "Zg",
                                                    "Zg=",
                                                    "Zm9vY",
                                                    "Z===",
                                                    "====",
                                                    "=Zm9",
                                                    "Zm=v",
                                                    "Zg==Zg==",
                                                    "Zm9v====",
                                                    "Zm9*",
                                                    "Zm9v\n",
                                                    " Zm9v",
                                                    "Zm9v ",
                                                    "Zm-_",
                                                    "Zh==",
                                                    "Zm9=",
                                                    "Zm8/Zh==",
                                                    std::string_view("Zm\0v", 4)};
  for (std::string_view bad : bad_inputs) {
    EXPECT_FALSE(base64_decode(bad).has_value()) << bad;
  }
}

// ---- random_bytes ----

TEST(AuthRandom, FillsAndDiffers) {
  std::array<std::uint8_t, 32> a{}, b{};
  random_bytes(a.data(), a.size());
  random_bytes(b.data(), b.size());
  EXPECT_NE(a, b);
  random_bytes(nullptr, 0);
}

// ---- SCRAM verifiers ----

TEST(AuthScramVerifier, MakeMatchesRfc7677Keys) {
  EXPECT_EQ(format_scram_verifier(rfc_verifier()), kRfcVerifier);
}

TEST(AuthScramVerifier, ParseFormatRoundTrip) {
  auto parsed = parse_scram_verifier(kRfcVerifier);
  ASSERT_TRUE(parsed.has_value());
  ScramVerifier expected = rfc_verifier();
  EXPECT_EQ(parsed->iterations, 4096);
  EXPECT_EQ(parsed->salt, expected.salt);
  EXPECT_EQ(parsed->stored_key, expected.stored_key);
  EXPECT_EQ(parsed->server_key, expected.server_key);
  EXPECT_EQ(format_scram_verifier(*parsed), kRfcVerifier);

  ScramVerifier other = make_scram_verifier("another password", std::string("\x00\x01\xff salt", 8), 1);
  auto reparsed = parse_scram_verifier(format_scram_verifier(other));
  ASSERT_TRUE(reparsed.has_value());
  EXPECT_EQ(reparsed->iterations, 1);
  EXPECT_EQ(reparsed->salt, other.salt);
  EXPECT_EQ(reparsed->stored_key, other.stored_key);
  EXPECT_EQ(reparsed->server_key, other.server_key);
}

TEST(AuthScramVerifier, ParseRejectsMalformed) {
  const std::string keys =
      "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
  const std::vector<std::string> bad = {
      "",
      "SCRAM-SHA-256$",
      "scram-sha-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
      "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
      "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
      "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
      "SCRAM-SHA-256$+4096:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
      "SCRAM-SHA-256$ 4096:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
      "SCRAM-SHA-256$4096x:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
      "SCRAM-SHA-256$99999999999999999999:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
      "SCRAM-SHA-256$:W22ZaJ0SNY7soEsUEjb6gQ==" + keys,
      "SCRAM-SHA-256$4096:" + keys,                         // empty salt
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=" + keys,  // bad base64
      "SCRAM-SHA-256$4096W22ZaJ0SNY7soEsUEjb6gQ==" + keys,  // no ':'
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",        // no keys
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:",
      // 31-byte StoredKey
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4g==:"
      "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==" + keys + "$extra",
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==" + keys + ":extra",
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==" + keys + " ",
  };
  for (const auto& text : bad) EXPECT_FALSE(parse_scram_verifier(text).has_value()) << text;
  // Every truncation of a valid verifier is invalid.
  for (std::size_t len = 0; len < kRfcVerifier.size(); ++len) {
    EXPECT_FALSE(parse_scram_verifier(kRfcVerifier.substr(0, len)).has_value()) << len;
  }
}

constexpr std::string_view kTestKey = "0123456789abcdef0123456789abcdef";

std::optional<ScramVerifier> verifier_for(std::string_view secret, std::string_view user = "alice") {
  return scram_verifier_for_secret(secret, user, kTestKey);
}

TEST(AuthScramVerifier, ForSecret) {
  auto from_plain = verifier_for("s3cret");
  ASSERT_TRUE(from_plain.has_value());
  EXPECT_EQ(from_plain->iterations, 4096);
  EXPECT_EQ(from_plain->salt, stable_salt(kTestKey, "alice"));
  ScramVerifier recomputed = make_scram_verifier("s3cret", from_plain->salt, 4096);
  EXPECT_EQ(from_plain->stored_key, recomputed.stored_key);
  EXPECT_EQ(from_plain->server_key, recomputed.server_key);
  // The salt follows the user name and the key, not the password or the call.
  EXPECT_EQ(verifier_for("other password")->salt, from_plain->salt);
  EXPECT_NE(verifier_for("s3cret", "bob")->salt, from_plain->salt);
  EXPECT_NE(scram_verifier_for_secret("s3cret", "alice", "another key")->salt, from_plain->salt);

  auto from_verifier = verifier_for(kRfcVerifier);
  ASSERT_TRUE(from_verifier.has_value());
  EXPECT_EQ(format_scram_verifier(*from_verifier), kRfcVerifier);

  EXPECT_FALSE(verifier_for("md54a0a68b43b6cd5cf266fa02f196e2371").has_value());
  EXPECT_FALSE(verifier_for("md54A0A68B43B6CD5CF266FA02F196E2371").has_value());
  EXPECT_FALSE(verifier_for("SCRAM-SHA-256$4096:broken").has_value());
  // Not exactly md5 + 32 hex digits: a plain password.
  EXPECT_TRUE(verifier_for("md54a0a68b43b6cd5cf266fa02f196e237").has_value());
  EXPECT_TRUE(verifier_for("md54a0a68b43b6cd5cf266fa02f196e2371x").has_value());
}

TEST(AuthScramVerifier, KeyDerivationsAreCounted) {
  const std::uint64_t before = key_derivations();
  make_scram_verifier("pw", "saltsaltsaltsalt", 2);
  EXPECT_EQ(key_derivations(), before + 1);
  ASSERT_TRUE(verifier_for("pw").has_value());
  EXPECT_EQ(key_derivations(), before + 2);
  // A stored verifier is only parsed.
  ASSERT_TRUE(verifier_for(kRfcVerifier).has_value());
  EXPECT_EQ(key_derivations(), before + 2);
}

// ---- Answers that do not reveal which users exist ----

TEST(AuthMockVerifier, StableSaltIsKeyedPerName) {
  const std::string salt = stable_salt(kTestKey, "nobody");
  EXPECT_EQ(salt.size(), 16u);  // as PostgreSQL's own verifiers (SCRAM_DEFAULT_SALT_LEN)
  EXPECT_EQ(stable_salt(kTestKey, "nobody"), salt);
  EXPECT_NE(stable_salt(kTestKey, "nobody2"), salt);
  EXPECT_NE(stable_salt(kTestKey, ""), salt);
  EXPECT_NE(stable_salt("another key", "nobody"), salt);
  // HMAC-SHA-256(key, "salt" NUL name), first 16 bytes, computed here with OpenSSL directly.
  EXPECT_EQ(salt, raw_hmac(kTestKey, std::string("salt\0nobody", 11)).substr(0, 16));
}

TEST(AuthMockVerifier, LooksLikeADerivedVerifierWithoutKeyDerivation) {
  const std::uint64_t before = key_derivations();
  const ScramVerifier mock = mock_scram_verifier(kTestKey, "nobody");
  EXPECT_EQ(key_derivations(), before);
  EXPECT_EQ(mock.iterations, 4096);
  EXPECT_EQ(mock.salt, stable_salt(kTestKey, "nobody"));
  EXPECT_NE(mock.stored_key, mock.server_key);
  const ScramVerifier again = mock_scram_verifier(kTestKey, "nobody");
  EXPECT_EQ(again.salt, mock.salt);
  EXPECT_EQ(again.stored_key, mock.stored_key);
  // An unknown name and a known one with a plain password are challenged with the same salt.
  EXPECT_EQ(verifier_for("pw", "nobody")->salt, mock.salt);
}

TEST(AuthMockVerifier, NoPasswordPasses) {
  for (const std::string password : {"", "nobody", "pw"}) {
    ScramServer server{mock_scram_verifier(kTestKey, "nobody")};
    ScramClient client{password};
    auto server_first = server.handle_client_first(client.client_first());
    ASSERT_TRUE(server_first.has_value());
    auto client_final = client.handle_server_first(*server_first);
    ASSERT_TRUE(client_final.has_value());
    EXPECT_FALSE(server.handle_client_final(*client_final).has_value()) << password;
  }
}

TEST(AuthMockVerifier, ProcessKeyIsRandomAndFixed) {
  EXPECT_EQ(process_auth_key().size(), 32u);
  EXPECT_EQ(&process_auth_key(), &process_auth_key());
  EXPECT_NE(process_auth_key(), std::string(32, '\0'));
}

// ---- RFC 7677 section 3 ----

TEST(AuthScramRfc7677, ClientProducesTestVector) {
  ScramClient client{std::string(kRfcPassword), std::string(kRfcClientNonce), "user"};
  EXPECT_EQ(client.client_first(), kRfcClientFirst);
  auto client_final = client.handle_server_first(kRfcServerFirst);
  ASSERT_TRUE(client_final.has_value());
  EXPECT_EQ(*client_final, kRfcClientFinal);
  EXPECT_TRUE(client.verify_server_final(kRfcServerFinal));
  EXPECT_FALSE(client.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5="));
  EXPECT_FALSE(client.verify_server_final("e=invalid-proof"));
}

TEST(AuthScramRfc7677, ServerProducesTestVector) {
  ScramServer server{rfc_verifier(), std::string(kRfcServerNoncePart)};
  auto server_first = server.handle_client_first(kRfcClientFirst);
  ASSERT_TRUE(server_first.has_value());
  EXPECT_EQ(*server_first, kRfcServerFirst);
  auto server_final = server.handle_client_final(kRfcClientFinal);
  ASSERT_TRUE(server_final.has_value());
  EXPECT_EQ(*server_final, kRfcServerFinal);
}

TEST(AuthScramRfc7677, ServerFromParsedVerifier) {
  auto verifier = parse_scram_verifier(kRfcVerifier);
  ASSERT_TRUE(verifier.has_value());
  ScramServer server{*verifier, std::string(kRfcServerNoncePart)};
  ASSERT_EQ(server.handle_client_first(kRfcClientFirst), std::optional<std::string>(kRfcServerFirst));
  EXPECT_EQ(server.handle_client_final(kRfcClientFinal), std::optional<std::string>(kRfcServerFinal));
}

TEST(AuthScramRfc7677, UserNameIsEscapedInClientFirst) {
  ScramClient client{"pw", "abc", "a,b=c"};
  EXPECT_EQ(client.client_first(), "n,,n=a=2Cb=3Dc,r=abc");
}

// ---- Channel binding (SCRAM-SHA-256-PLUS, tls-server-end-point) ----

TEST(AuthScramChannelBinding, Gs2HeaderAcceptedOnlyAsOffered) {
  const std::string bare(std::string_view(kRfcClientFirst).substr(3));
  auto server = [](bool offered) {
    ScramServer s{rfc_verifier(), std::string(kRfcServerNoncePart)};
    if (offered) s.set_channel_binding("certificate hash");
    return s;
  };
  {
    ScramServer s = server(false);
    EXPECT_FALSE(s.handle_client_first("p=tls-server-end-point,," + bare)) << "binding never offered";
  }
  {
    ScramServer s = server(true);
    ASSERT_TRUE(s.handle_client_first("p=tls-server-end-point,," + bare));
    EXPECT_TRUE(s.bound());
    // c= must carry the header and the binding data: "biws" (n,,) is refused.
    EXPECT_FALSE(s.handle_client_final(kRfcClientFinal));
  }
  {
    ScramServer s = server(true);
    EXPECT_FALSE(s.handle_client_first("y,," + bare)) << "a downgrade: PLUS was offered";
  }
  {
    ScramServer s = server(true);
    EXPECT_FALSE(s.handle_client_first("p=tls-unique,," + bare)) << "only tls-server-end-point is offered";
  }
  {
    ScramServer s = server(true);
    ASSERT_TRUE(s.handle_client_first(std::string(kRfcClientFirst)));
    EXPECT_FALSE(s.bound());
    EXPECT_EQ(s.handle_client_final(kRfcClientFinal), std::optional<std::string>(kRfcServerFinal));
  }
}

// ---- Client <-> server round trips ----

TEST(AuthScramRoundTrip, RightPassword) {
  auto verifier = verifier_for("correct horse");
  ASSERT_TRUE(verifier.has_value());
  ScramServer server{*verifier};
  ScramClient client{"correct horse"};

  std::string client_first = client.client_first();
  // As libpq: no channel binding, empty user name, 18 random bytes base64-encoded (24 characters).
  ASSERT_EQ(client_first.rfind("n,,n=,r=", 0), 0u) << client_first;
  const std::string client_nonce = client_first.substr(8);
  EXPECT_EQ(client_nonce.size(), 24u);
  EXPECT_EQ(base64_decode(client_nonce).value_or("").size(), 18u);

  auto server_first = server.handle_client_first(client_first);
  ASSERT_TRUE(server_first.has_value());
  const std::string nonce = nonce_of(*server_first);
  ASSERT_EQ(nonce.rfind(client_nonce, 0), 0u);
  EXPECT_EQ(nonce.size(), client_nonce.size() + 24);
  EXPECT_EQ(base64_decode(nonce.substr(client_nonce.size())).value_or("").size(), 18u);
  EXPECT_NE(server_first->find(",s=" + base64_encode(verifier->salt) + ",i=4096"), std::string::npos);

  auto client_final = client.handle_server_first(*server_first);
  ASSERT_TRUE(client_final.has_value());
  auto server_final = server.handle_client_final(*client_final);
  ASSERT_TRUE(server_final.has_value());
  EXPECT_TRUE(client.verify_server_final(*server_final));
}

TEST(AuthScramRoundTrip, WrongPassword) {
  ScramServer server{*verifier_for("correct horse")};
  ScramClient client{"battery staple"};
  auto server_first = server.handle_client_first(client.client_first());
  ASSERT_TRUE(server_first.has_value());
  auto client_final = client.handle_server_first(*server_first);
  ASSERT_TRUE(client_final.has_value());
  EXPECT_FALSE(server.handle_client_final(*client_final).has_value());
}

TEST(AuthScramRoundTrip, ClientRejectsServerWithOtherVerifier) {
  // A server that knows a different verifier (same salt, other password) but echoes a plausible signature.
  ScramVerifier real = make_scram_verifier("pw", "saltsaltsaltsalt", 4096);
  ScramVerifier impostor = make_scram_verifier("other", "saltsaltsaltsalt", 4096);
  impostor.stored_key = real.stored_key;  // accepts the proof, but cannot sign with the real ServerKey
  ScramServer server{impostor};
  ScramClient client{"pw"};
  auto server_first = server.handle_client_first(client.client_first());
  ASSERT_TRUE(server_first.has_value());
  auto client_final = client.handle_server_first(*server_first);
  ASSERT_TRUE(client_final.has_value());
  auto server_final = server.handle_client_final(*client_final);
  ASSERT_TRUE(server_final.has_value());
  EXPECT_FALSE(client.verify_server_final(*server_final));
}

TEST(AuthScramRoundTrip, AnyUserNameAccepted) {
  ScramVerifier verifier = make_scram_verifier("pw", "0123456789abcdef", 4096);
  for (std::string_view user : {"", "alice", "a,b=c", "=3D"}) {
    ScramClient client{"pw", "clientnonce", user};
    ScramServer server{verifier};
    auto server_first = server.handle_client_first(client.client_first());
    ASSERT_TRUE(server_first.has_value()) << user;
    auto client_final = client.handle_server_first(*server_first);
    ASSERT_TRUE(client_final.has_value());
    auto server_final = server.handle_client_final(*client_final);
    ASSERT_TRUE(server_final.has_value()) << user;
    EXPECT_TRUE(client.verify_server_final(*server_final));
  }
}

// ---- Server: gs2 header / channel binding ----

const ScramVerifier& fixture_verifier() {
  static const ScramVerifier verifier = make_scram_verifier("pw", "0123456789abcdef", 4096);
  return verifier;
}

struct ServerFixture {
  ScramServer server{fixture_verifier(), "servernonce"};
};

TEST(AuthScramServer, AcceptsYFlagWithMatchingBinding) {
  ServerFixture f;
  const std::string bare = "n=,r=cnonce";
  auto server_first = f.server.handle_client_first("y,," + bare);
  ASSERT_TRUE(server_first.has_value());
  EXPECT_EQ(*server_first, "r=cnonceservernonce,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096");
  auto final_msg =
      craft_client_final("pw", "0123456789abcdef", 4096, bare, *server_first, "c=eSws,r=cnonceservernonce");
  EXPECT_TRUE(f.server.handle_client_final(final_msg).has_value());
}

TEST(AuthScramServer, RejectsBindingThatDoesNotMatchGs2Header) {
  const std::string bare = "n=,r=cnonce";
  {
    ServerFixture f;  // "y,," then "c=biws"
    auto server_first = f.server.handle_client_first("y,," + bare);
    ASSERT_TRUE(server_first.has_value());
    auto msg =
        craft_client_final("pw", "0123456789abcdef", 4096, bare, *server_first, "c=biws,r=cnonceservernonce");
    EXPECT_FALSE(f.server.handle_client_final(msg).has_value());
  }
  {
    ServerFixture f;  // "n,," then "c=eSws"
    auto server_first = f.server.handle_client_first("n,," + bare);
    ASSERT_TRUE(server_first.has_value());
    auto msg =
        craft_client_final("pw", "0123456789abcdef", 4096, bare, *server_first, "c=eSws,r=cnonceservernonce");
    EXPECT_FALSE(f.server.handle_client_final(msg).has_value());
  }
}

TEST(AuthScramServer, IgnoresWellFormedExtensionsLikePostgreSql) {
  ServerFixture f;
  const std::string bare = "n=,r=cnonce,x=ext";
  auto server_first = f.server.handle_client_first("n,," + bare);
  ASSERT_TRUE(server_first.has_value());
  auto msg = craft_client_final("pw", "0123456789abcdef", 4096, bare, *server_first,
                                "c=biws,r=cnonceservernonce,x=ext");
  EXPECT_TRUE(f.server.handle_client_final(msg).has_value());
}

TEST(AuthScramServer, RejectsMalformedClientFirst) {
  const std::vector<std::string> bad = {
      "",
      "n",
      "n,",
      "n,,",
      "n,,n=",
      "n,,n=,",
      "n,,n=,r=",
      "n,,n=user",
      "n,,r=abc",
      "n,,r=abc,n=",
      "p=tls-server-end-point,,n=,r=abc",  // channel binding requested
      "p,,n=,r=abc",
      "x,,n=,r=abc",
      "N,,n=,r=abc",
      "n,a=admin,n=,r=abc",  // authzid
      "n;,n=,r=abc",
      "n,,m=ext,n=,r=abc",  // mandatory extension
      "n,,n=,r=abc,",
      "n,,n=,r=abc,,",
      "n,,n=,r=abc,garbage",
      "n,,n=,r=abc,1=x",
      "n,,n=,r=a b",
      "n,,n=,r=ab\x7f",
      std::string("n,,n=,r=ab\0c", 12),
      "n,,n=,r=\xc3\xa9",
      "n,,n=,s=abc",
      "n,,nn,r=abc",
      ",,n=,r=abc",
  };
  for (const auto& msg : bad) {
    ServerFixture f;
    EXPECT_FALSE(f.server.handle_client_first(msg).has_value()) << msg;
  }
}

// Builds a server that has answered a valid client-first, plus a valid client-final for it.
struct AfterFirst {
  ServerFixture f;
  std::string bare = "n=,r=cnonce";
  std::string server_first = f.server.handle_client_first("n,," + bare).value_or("");
  std::string valid_final =
      craft_client_final("pw", "0123456789abcdef", 4096, bare, server_first, "c=biws,r=cnonceservernonce");
};

TEST(AuthScramServer, ValidFinalAcceptedOnce) {
  AfterFirst a;
  EXPECT_TRUE(a.f.server.handle_client_final(a.valid_final).has_value());
  EXPECT_FALSE(a.f.server.handle_client_final(a.valid_final).has_value());  // no replay on the same object
}

TEST(AuthScramServer, RejectsMalformedClientFinal) {
  const std::string proof = AfterFirst{}.valid_final.substr(AfterFirst{}.valid_final.find(",p="));
  const std::vector<std::string> bad = {
      "",
      "c=biws",
      "c=biws,r=cnonceservernonce",
      "c=biws,r=cnonceservernonce,",
      "c=biws,r=cnonceservernonce,p=",
      "c=biws,r=cnonceservernonce,p=!!!!",
      "c=biws,r=cnonceservernonce,p=Zm9v",                                          // 3-byte proof
      "c=biws,r=cnonceservernonce,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  // wrong proof
      "c=biws,r=cnonce" + proof,                                                    // client nonce only
      "c=biws,r=cnonceservernonceX" + proof,                                        // wrong nonce
      "c=biws,r=Xcnonceservernonce" + proof,
      "c=biws,r=" + proof,
      "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=cnonceservernonce" + proof,  // channel binding data
      "c=,r=cnonceservernonce" + proof,
      "c=biws" + proof,
      "r=cnonceservernonce,c=biws" + proof,
      "c=biws,r=cnonceservernonce" + proof + ",x=ext",  // proof not last
      "c=biws,r=cnonceservernonce" + proof + proof,
      "c=biws,r=cnonceservernonce,garbage" + proof,
  };
  for (const auto& msg : bad) {
    AfterFirst a;
    EXPECT_FALSE(a.f.server.handle_client_final(msg).has_value()) << msg;
  }
}

TEST(AuthScramServer, RejectsEveryTruncationOfClientFinal) {
  const std::string valid = AfterFirst{}.valid_final;
  for (std::size_t len = 0; len < valid.size(); ++len) {
    AfterFirst a;
    EXPECT_FALSE(a.f.server.handle_client_final(valid.substr(0, len)).has_value()) << len;
  }
}

TEST(AuthScramServer, RejectsCallsOutOfOrder) {
  {
    ServerFixture f;
    EXPECT_FALSE(f.server.handle_client_final("c=biws,r=x,p=AAAA").has_value());
  }
  {
    AfterFirst a;  // a second client-first ends the exchange
    EXPECT_FALSE(a.f.server.handle_client_first("n,," + a.bare).has_value());
    EXPECT_FALSE(a.f.server.handle_client_final(a.valid_final).has_value());
  }
  {
    AfterFirst a;  // a failed proof ends the exchange: no second guess
    EXPECT_FALSE(a.f.server.handle_client_final("c=biws,r=cnonceservernonce,p=" + std::string(43, 'A') + "=")
                     .has_value());
    EXPECT_FALSE(a.f.server.handle_client_final(a.valid_final).has_value());
  }
}

// ---- Client: malformed server messages ----

TEST(AuthScramClient, RejectsMalformedServerFirst) {
  const std::string n = "r=cnonceSRV";
  const std::vector<std::string> bad = {
      "",
      "r=",
      "r=cnonceSRV",
      "r=cnonceSRV,s=c2FsdA==",
      n + ",s=c2FsdA==,i=",
      "r=cnonce,s=c2FsdA==,i=4096",     // nonce not extended
      "r=cnonc,s=c2FsdA==,i=4096",      // shorter
      "r=Xcnonce1,s=c2FsdA==,i=4096",   // does not start with ours
      "r=CNONCEsrv,s=c2FsdA==,i=4096",  // case differs
      "r=cnonce s,s=c2FsdA==,i=4096",   // not printable
      n + ",s=,i=4096",                 // empty salt
      n + ",s=c2FsdA=,i=4096",          // bad base64
      n + ",s=c2Fsd!==,i=4096",
      n + ",s=c2FsdA==,i=0",
      n + ",s=c2FsdA==,i=-1",
      n + ",s=c2FsdA==,i=+1",
      n + ",s=c2FsdA==,i= 1",
      n + ",s=c2FsdA==,i=4096x",
      n + ",s=c2FsdA==,i=0x10",
      n + ",s=c2FsdA==,i=10000001",  // too many iterations
      n + ",s=c2FsdA==,i=2147483647",
      n + ",s=c2FsdA==,i=99999999999999999999999",
      n + ",s=c2FsdA==,i=4096,",
      n + ",s=c2FsdA==,i=4096,x=ext",
      "m=ext," + n + ",s=c2FsdA==,i=4096",
      "s=c2FsdA==," + n + ",i=4096",
      n + ",i=4096,s=c2FsdA==",
      "e=other-error",
  };
  for (const auto& msg : bad) {
    ScramClient client{"pw", "cnonce", ""};
    EXPECT_FALSE(client.handle_server_first(msg).has_value()) << msg;
    EXPECT_FALSE(client.verify_server_final("v=" + std::string(43, 'A') + "=")) << msg;
  }
}

TEST(AuthScramClient, EveryTruncationOfServerFirstIsHandled) {
  // Some prefixes are themselves valid ("i=4" is a count); none may crash, and none ending in the nonce or
  // salt part is accepted.
  const std::string valid = "r=cnonceSRV,s=c2FsdA==,i=4096";
  for (std::size_t len = 0; len < valid.size(); ++len) {
    ScramClient client{"pw", "cnonce", ""};
    auto result = client.handle_server_first(valid.substr(0, len));
    if (len < valid.find(",i=") + 4) {
      EXPECT_FALSE(result.has_value()) << len;
    }
  }
}

TEST(AuthScramClient, ServerFirstHandledOnce) {
  ScramClient client{"pw", "cnonce", ""};
  ASSERT_TRUE(client.handle_server_first("r=cnonceSRV,s=c2FsdA==,i=16").has_value());
  EXPECT_FALSE(client.handle_server_first("r=cnonceSRV,s=c2FsdA==,i=16").has_value());
}

TEST(AuthScramClient, VerifyServerFinalStrictness) {
  ScramVerifier verifier = make_scram_verifier("pw", "0123456789abcdef", 16);
  ScramServer server{verifier};
  ScramClient client{"pw"};
  auto server_first = server.handle_client_first(client.client_first());
  ASSERT_TRUE(server_first.has_value());
  auto client_final = client.handle_server_first(*server_first);
  ASSERT_TRUE(client_final.has_value());
  auto server_final = server.handle_client_final(*client_final);
  ASSERT_TRUE(server_final.has_value());
  const std::string good = *server_final;

  EXPECT_TRUE(client.verify_server_final(good));
  EXPECT_FALSE(client.verify_server_final(""));
  EXPECT_FALSE(client.verify_server_final("v="));
  EXPECT_FALSE(client.verify_server_final("v=Zm9v"));
  EXPECT_FALSE(client.verify_server_final("e=invalid-proof"));
  // `std::string(prefix).append(good, pos)` rather than `prefix + good.substr(pos)`: GCC 12 at -O3 misreports
  // the latter as an overlapping memcpy (-Wrestrict, GCC bug 105329).
  EXPECT_FALSE(client.verify_server_final(std::string("e=").append(good, 2)));
  EXPECT_FALSE(client.verify_server_final(good + ",x=ext"));
  EXPECT_FALSE(client.verify_server_final(good + " "));
  EXPECT_FALSE(client.verify_server_final(std::string("V").append(good, 1)));
  for (std::size_t len = 0; len < good.size(); ++len)
    EXPECT_FALSE(client.verify_server_final(good.substr(0, len)));
  std::string flipped = good;
  flipped[5] = flipped[5] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(client.verify_server_final(flipped));
}

TEST(AuthScramClient, VerifyBeforeServerFirstFails) {
  ScramClient client{"pw"};
  // An all-zero signature would match the untouched expectation if state were not tracked.
  EXPECT_FALSE(client.verify_server_final("v=" + base64_encode(std::string(32, '\0'))));
}

// ---- Garbage never crashes ----

TEST(AuthScramFuzz, RandomInputsAreRejectedWithoutCrashing) {
  std::mt19937 rng(12345);
  static constexpr char kAlphabet[] = "nyprcsiveam=,$:+/AZaz09 \x00\xff";
  const std::string alphabet(kAlphabet, sizeof(kAlphabet) - 1);  // keep the embedded NUL
  for (int round = 0; round < 2000; ++round) {
    std::string input;
    std::size_t len = rng() % 64;
    for (std::size_t i = 0; i < len; ++i) input.push_back(alphabet[rng() % alphabet.size()]);

    ServerFixture f;
    auto first = f.server.handle_client_first(input);
    (void)f.server.handle_client_final(input);
    (void)first;
    ScramClient client{"pw", "n", ""};
    (void)client.handle_server_first(input);  // some may be valid; only no crash is required
    EXPECT_FALSE(client.verify_server_final(input));
    (void)parse_scram_verifier("SCRAM-SHA-256$" + input);
    (void)base64_decode(input);
    (void)md5_check(input, input, {1, 2, 3, 4}, input);
  }
}

// ---- tls-server-end-point (RFC 5929), and the client's side of SCRAM-SHA-256-PLUS ----

// Self-signed P-256 certificates (DER in base64) signed with ECDSA over SHA-256, SHA-384 and SHA-1, and their
// hashes as `openssl x509 -outform der | openssl dgst -sha256 / -sha384` gave them. Only their bytes matter
// here: nothing checks their validity period.
constexpr std::string_view kCertSha256 =
    "MIIBfDCCASOgAwIBAgIULvM8FSgUFE+ssIJ+6idqRy48RaMwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJY2Igc2hhMjU2MB4XDTI2"
    "MTEzMDE5MjAzOFoXDTI2MTIwMTE5MjAzOFowFDESMBAGA1UEAwwJY2Igc2hhMjU2MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"
    "4o2n3Js1MnaF7rlp0GMvlSI4hhgYV0rILPuCGWQRAXRqLUMNvsp5areukHM57SzJqN3Xd8HwvZxlFVYjPrzahKNTMFEwHQYDVR0O"
    "BBYEFHwA7+ww7pUfRzsmkGLCbF4rzaseMB8GA1UdIwQYMBaAFHwA7+ww7pUfRzsmkGLCbF4rzaseMA8GA1UdEwEB/wQFMAMBAf8w"
    "CgYIKoZIzj0EAwIDRwAwRAIgX0SJp8ktxnno0oe5YEBxS46EfbQOS/sErfI88o7Y5yMCIHRIH0rbBD8tuIsxOJSidBON+M02U7f/"
    "MIFZ8EOOWKPL";
constexpr std::string_view kCertSha384 =
    "MIIBfjCCASOgAwIBAgIUMt/SDkWbqFxEwbvyxw/DYvvplwwwCgYIKoZIzj0EAwMwFDESMBAGA1UEAwwJY2Igc2hhMzg0MB4XDTI2"
    "MTEzMDE5MjAzOFoXDTI2MTIwMTE5MjAzOFowFDESMBAGA1UEAwwJY2Igc2hhMzg0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"
    "2LsKuHN/X6uHBhSv8V+KeyQT2RKSGZH2rSbcgsu7Ftv7ji6P3IghlllqoVt23bfmQ98zcLNTSkme8FVEBrB5HKNTMFEwHQYDVR0O"
    "BBYEFFt/oKIe3XnFur7GJ0fGXtLd1XQQMB8GA1UdIwQYMBaAFFt/oKIe3XnFur7GJ0fGXtLd1XQQMA8GA1UdEwEB/wQFMAMBAf8w"
    "CgYIKoZIzj0EAwMDSQAwRgIhAIYYCVyaE9bHKF9kM0Z/kt+leFUpXY96AXISivUrl2q/AiEAkKNpJE8ClrVayLolMG5D3FPX2tvE"
    "Lm+62qE2srJxIrg=";
constexpr std::string_view kCertSha1 =
    "MIIBeDCCAR6gAwIBAgIUIhwYc1pJFRa8EdfCuoBaCinybQAwCQYHKoZIzj0EATASMRAwDgYDVQQDDAdjYiBzaGExMB4XDTI2MTEz"
    "MDE5MjAzOVoXDTI2MTIwMTE5MjAzOVowEjEQMA4GA1UEAwwHY2Igc2hhMTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDme8Iy4"
    "Tz1gEZyxntaW7VqKsRen+4/nhLZ/sOylat129tL5PptVMzvGY8OiDzpzh/g1BgEh3PTMb7srTWeLXpejUzBRMB0GA1UdDgQWBBR7"
    "fpoXm7A0NFhQlFyddm/FIOxmFjAfBgNVHSMEGDAWgBR7fpoXm7A0NFhQlFyddm/FIOxmFjAPBgNVHRMBAf8EBTADAQH/MAkGByqG"
    "SM49BAEDSQAwRgIhAMiQTmnFR/pECCWRmJ5J6Iq4SRYw8T2i9on6dypc5PBIAiEApBQ0seixlscE4kmW6ij1RR5S3GN9fJloZ8q/"
    "gq5d7G8=";

std::string hex_of(std::string_view raw) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

TEST(AuthTlsServerEndPoint, HashOfTheSignatureAlgorithm) {
  EXPECT_EQ(hex_of(tls_server_end_point(*base64_decode(kCertSha256))),
            "2fd2c4c38852ee4ca5b65d00d0b15822528a8062525abab0787bf77fbffc896a");
  EXPECT_EQ(
      hex_of(tls_server_end_point(*base64_decode(kCertSha384))),
      "9c876ff28c052bb146ebcad1271b58f43b50f12922571958d43a024d7adf4abc61767a1d884fa742bd790fe224762363");
  // SHA-1 (and MD5) are replaced by SHA-256.
  EXPECT_EQ(hex_of(tls_server_end_point(*base64_decode(kCertSha1))),
            "1c040238a277a1db34c25d7dc5f098f2205557d0bebe8020d9ee0ff1b9a08007");
  EXPECT_EQ(tls_server_end_point("not a certificate"), "");
  EXPECT_EQ(tls_server_end_point(""), "");
}

TEST(AuthScramClientChannelBinding, ClientFinalCarriesHeaderAndCertificateHash) {
  const std::string binding = tls_server_end_point(*base64_decode(kCertSha384));
  ASSERT_EQ(binding.size(), 48u);
  ScramClient client{"pw", "clientnonce", ""};
  client.set_tls(binding);
  EXPECT_TRUE(client.bound());
  EXPECT_STREQ(client.mechanism(), "SCRAM-SHA-256-PLUS");
  const std::string first = client.client_first();
  EXPECT_EQ(first, "p=tls-server-end-point,,n=,r=clientnonce");

  ScramServer server{fixture_verifier()};
  server.set_channel_binding(binding);
  auto server_first = server.handle_client_first(first);
  ASSERT_TRUE(server_first);
  EXPECT_TRUE(server.bound());
  auto final_msg = client.handle_server_first(*server_first);
  ASSERT_TRUE(final_msg);
  EXPECT_EQ(final_msg->rfind("c=" + base64_encode("p=tls-server-end-point,," + binding) + ",r=", 0), 0u)
      << *final_msg;
  auto server_final = server.handle_client_final(*final_msg);
  ASSERT_TRUE(server_final);
  EXPECT_TRUE(client.verify_server_final(*server_final));

  // A server that sees another certificate (a man in the middle's) refuses the proof.
  ScramClient bound_elsewhere{"pw", "clientnonce", ""};
  bound_elsewhere.set_tls(binding);
  ScramServer middle{fixture_verifier()};
  middle.set_channel_binding(tls_server_end_point(*base64_decode(kCertSha256)));
  auto middle_first = middle.handle_client_first(bound_elsewhere.client_first());
  ASSERT_TRUE(middle_first);
  auto middle_final = bound_elsewhere.handle_server_first(*middle_first);
  ASSERT_TRUE(middle_final);
  EXPECT_FALSE(middle.handle_client_final(*middle_final));
}

TEST(AuthScramClientChannelBinding, TlsWithoutPlusSaysItCouldHaveBound) {
  ScramClient client{"pw", "clientnonce", ""};
  client.set_tls("");
  EXPECT_FALSE(client.bound());
  EXPECT_STREQ(client.mechanism(), "SCRAM-SHA-256");
  EXPECT_EQ(client.client_first(), "y,,n=,r=clientnonce");
  ScramServer server{fixture_verifier()};  // offers no binding: "y" is fine
  auto server_first = server.handle_client_first(client.client_first());
  ASSERT_TRUE(server_first);
  auto final_msg = client.handle_server_first(*server_first);
  ASSERT_TRUE(final_msg);
  EXPECT_EQ(final_msg->rfind("c=eSws,r=", 0), 0u) << *final_msg;  // base64("y,,")
  EXPECT_TRUE(server.handle_client_final(*final_msg));
  // Without set_tls: "n,,", c=biws.
  ScramClient plain{"pw", "clientnonce", ""};
  EXPECT_EQ(plain.client_first(), "n,,n=,r=clientnonce");
}

}  // namespace
}  // namespace pgward::protocol::auth
