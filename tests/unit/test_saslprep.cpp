// SASLprep as PostgreSQL applies it (protocol/saslprep.hpp): RFC 4013's examples, PostgreSQL's departures
// from the RFC, strict UTF-8, NFKC, and verifiers made by PostgreSQL 15 itself.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "protocol/auth.hpp"
#include "protocol/saslprep.hpp"

namespace pgward::protocol::saslprep {
namespace {

std::string prepared(std::string_view in) {
  Result r = saslprep(in);
  EXPECT_EQ(r.outcome, Outcome::kPrepared) << in;
  return r.text;
}

Outcome outcome(std::string_view in) { return saslprep(in).outcome; }

// RFC 4013 section 3, "Examples".
TEST(Saslprep, Rfc4013Examples) {
  EXPECT_EQ(prepared("I\u00ADX"), "IX");  // SOFT HYPHEN mapped to nothing
  EXPECT_EQ(prepared("user"), "user");
  EXPECT_EQ(prepared("USER"), "USER");                       // case preserved
  EXPECT_EQ(prepared("\u00AA"), "a");                        // output is NFKC, input in ISO 8859-1
  EXPECT_EQ(prepared("\u2168"), "IX");                       // output is NFKC, will match 2nd example
  EXPECT_EQ(outcome("\u0627\u0031"), Outcome::kProhibited);  // bidirectional check
}

// Where PostgreSQL (src/common/saslprep.c) differs from the RFC: the RFC refuses U+0007, PostgreSQL passes
// any pure-ASCII string through; and PostgreSQL checks the mapped input, not the normalised output.
TEST(Saslprep, PostgresDepartures) {
  EXPECT_EQ(prepared("\u0007"), "\u0007");
  EXPECT_EQ(prepared(std::string("a\x01\x7f", 3)), std::string("a\x01\x7f", 3));
  // U+0340 (C.8) normalises to U+0300, which is allowed: the RFC accepts "a" U+0340, PostgreSQL does not.
  EXPECT_EQ(outcome("a\u0340"), Outcome::kProhibited);
  // A control character is prohibited once the string is not pure ASCII.
  EXPECT_EQ(outcome("\u00E9\x01"), Outcome::kProhibited);
}

TEST(Saslprep, Mapping) {
  EXPECT_EQ(prepared("a\u00A0b\u3000c"), "a b c");     // C.1.2 spaces become U+0020
  EXPECT_EQ(prepared("a\u200Bb"), "a b");              // U+200B is in C.1.2 and B.1: space wins
  EXPECT_EQ(prepared("\uFEFFa\u200Db\uFE0F"), "ab");   // B.1 characters vanish
  EXPECT_EQ(outcome("\u00AD"), Outcome::kProhibited);  // nothing left: PostgreSQL refuses empty
  EXPECT_EQ(outcome("\u00AD\u034F"), Outcome::kProhibited);
}

TEST(Saslprep, ProhibitedAndUnassigned) {
  EXPECT_EQ(outcome("\u00E9\u0085"), Outcome::kProhibited);      // C.2.2
  EXPECT_EQ(outcome("\u00E9\uE000"), Outcome::kProhibited);      // C.3 private use
  EXPECT_EQ(outcome("\u00E9\uFDD0"), Outcome::kProhibited);      // C.4 non-character
  EXPECT_EQ(outcome("\u00E9\uFFFD"), Outcome::kProhibited);      // C.6
  EXPECT_EQ(outcome("\u00E9\u2FF0"), Outcome::kProhibited);      // C.7
  EXPECT_EQ(outcome("\u00E9\u200E"), Outcome::kProhibited);      // C.8
  EXPECT_EQ(outcome("\u00E9\U000E0001"), Outcome::kProhibited);  // C.9
  EXPECT_EQ(outcome("\u00E9\u0221"), Outcome::kProhibited);      // A.1: unassigned in Unicode 3.2
  EXPECT_EQ(outcome("\u00E9\U0001F600"), Outcome::kProhibited);  // so is every emoji
}

TEST(Saslprep, Bidi) {
  EXPECT_EQ(prepared("\u0627\u0031\u0628"),
            "\u0627\u0031\u0628");                            // RandALCat first and last, digits between
  EXPECT_EQ(outcome("\u0627x\u0628"), Outcome::kProhibited);  // an LCat character
  EXPECT_EQ(outcome("1\u0627"), Outcome::kProhibited);        // does not start with RandALCat
  EXPECT_EQ(prepared("\u05D0"), "\u05D0");
}

TEST(Saslprep, StrictUtf8) {
  EXPECT_EQ(outcome("\xC3"), Outcome::kInvalidUtf8);              // truncated
  EXPECT_EQ(outcome("\xC0\xAF"), Outcome::kInvalidUtf8);          // overlong '/'
  EXPECT_EQ(outcome("\xE0\x80\xAF"), Outcome::kInvalidUtf8);      // overlong
  EXPECT_EQ(outcome("\xED\xA0\x80"), Outcome::kInvalidUtf8);      // surrogate U+D800
  EXPECT_EQ(outcome("\xF4\x90\x80\x80"), Outcome::kInvalidUtf8);  // above U+10FFFF
  EXPECT_EQ(outcome("\xF8\x88\x80\x80\x80"), Outcome::kInvalidUtf8);
  EXPECT_EQ(outcome("a\xFF"), Outcome::kInvalidUtf8);
  EXPECT_EQ(outcome("\xC3\xA9\x80"), Outcome::kInvalidUtf8);  // stray continuation byte
  EXPECT_EQ(prepared("\xF0\x9D\x90\x80"), "A");               // U+1D400 MATHEMATICAL BOLD CAPITAL A
}

TEST(Saslprep, TooLongAndFallback) {
  const std::string ascii(kMaxPasswordBytes, 'a');
  EXPECT_EQ(prepared(ascii), ascii);
  EXPECT_EQ(outcome(ascii + "a"), Outcome::kTooLong);
  // scram_password: the prepared form, or the raw bytes when SASLprep refuses.
  EXPECT_EQ(scram_password("\u2168"), "IX");
  EXPECT_EQ(scram_password("a\u0340"), "a\u0340");
  EXPECT_EQ(scram_password("\xFF\xFE"), "\xFF\xFE");
  EXPECT_EQ(scram_password(ascii + "\u2168"), ascii + "\u2168");
}

TEST(Saslprep, Nfkc) {
  EXPECT_EQ(nfkc(U"\uFB01"), U"fi");                   // compatibility ligature
  EXPECT_EQ(nfkc(U"\u212B"), U"\u00C5");               // ANGSTROM SIGN, a singleton
  EXPECT_EQ(nfkc(U"\u2126"), U"\u03A9");               // OHM SIGN
  EXPECT_EQ(nfkc(U"\u1100\u1161\u11A8"), U"\uAC01");   // Hangul composes by arithmetic
  EXPECT_EQ(nfkc(U"\uAC01"), U"\uAC01");               // and round-trips
  EXPECT_EQ(nfkc(U"\uFF21"), U"A");                    // fullwidth
  EXPECT_EQ(nfkc(U"a\u0302\u0323"), U"\u1EAD");        // canonical reordering, then composition
  EXPECT_EQ(nfkc(U"\u0958"), U"\u0915\u093C");         // a composition exclusion stays apart
  EXPECT_EQ(nfkc(U"a\u0301\u0301"), U"\u00E1\u0301");  // the second accent is blocked
  EXPECT_EQ(nfkc(U"\u1E9B\u0323"), U"\u1E69");         // UAX #15's long s example
  EXPECT_EQ(nfkc(U"\u0301a"), U"\u0301a");             // a leading non-starter composes with nothing
  EXPECT_EQ(nfkc(U"\u00BD"), U"1\u20442");             // FRACTION ONE HALF
  EXPECT_EQ(nfkc(U"\U0010FFFF\U000E0100"), U"\U0010FFFF\U000E0100");  // nothing to do
}

// Verifiers PostgreSQL 15 made (CREATE ROLE ... PASSWORD '...' with password_encryption = scram-sha-256,
// then SELECT rolpassword FROM pg_authid): pgward derives the same keys from the same password and salt.
struct PgVector {
  const char* password;
  const char* verifier;
};

TEST(Saslprep, MatchesPostgresVerifiers) {
  static const PgVector kVectors[] = {
      {"p\u00E4ssw\u00F6rd",
       "SCRAM-SHA-256$4096:B8vvY6GHmKLIKb7HYYAD9A==$HQSZ2tei+tnWQcXoEUmBdd+i6vyax4bOoH+zZ3qFmK8=:"
       "P/DXsDk6ysy1tyrpobFDFxmla8a42ZPYtYfd2CII1o0="},
      // The same password decomposed: NFKC composes it.
      {"pa\u0308sswo\u0308rd",
       "SCRAM-SHA-256$4096:CZyohpI5bS7mx55jVxhB5w==$RkUJMnVWxfD1zXsSBGXgo7f9mpKmuwHwdBVJqTBWTMo=:"
       "2bflHk0iX0lxGnfmsyJ/BqHasNXEOJFeArkU0o1KnZU="},
      {"\uFB01\u00A0x",
       "SCRAM-SHA-256$4096:hF9F+4fdU4lphTFXyK6+8Q==$Z0G5YnaDjJqacV7AtEEVdFDSc0p1YWEGLa3rKsD6xAA=:"
       "4DFq9123Ex44irHcJuh1/j8vrTzhSbk17re5n5Lyb8o="},
      {"I\u00ADX",
       "SCRAM-SHA-256$4096:/2qUEoSdI0U2kXZUdiaZYQ==$tXYOxHoA8IVmOcFfCe7yljk94TWLR20pmCc9PUnPJnE=:"
       "b2yMNwFRGJyKTa8Wp7ZrMzv+u/5Dnn3jWyT4jcXcKfU="},
      // Refused by SASLprep, so hashed raw: prohibited input, a failed bidi check, empty after mapping.
      {"a\u0340",
       "SCRAM-SHA-256$4096:xQIaslYYW6yh2tSbwgfvnQ==$frGbzVXL3JnNU2pLGByFT+jB6s2EjCxV5bmxeqzeS+E=:"
       "Ybg96NL/6A/i6YpRo6mJkZT7lescl27ShwM1Lmsg6YA="},
      {"\u0627\u0031",
       "SCRAM-SHA-256$4096:TFsPLjczQI1/is6aGcwHEA==$3tLKF6AG2FcnTTqZ+ysZw3oXwoBXWQNOUCbjJCB6moU=:"
       "DP/HCNkioOvYlQ1CBhtDvxG4ZrrkrBE+4bHgkqs5VRs="},
      {"\u2168",
       "SCRAM-SHA-256$4096:5LJytLTe31Jbgd/LeJF2jQ==$LrZPPRrMjNhVlAc2iRTNy/GsGUXYgGLO6prSg5h6hBQ=:"
       "PHfmb8QN5i8kirgsMSSRT8wVQAysgqx6g7P/0q2zcws="},
      {"\u00AD",
       "SCRAM-SHA-256$4096:5sO+c1yCok0t8EXUFZk7Mg==$Ab+dLzfF9DfIoVO6pRU2GL2GFKaM3M4tn/FFRRF0EJo=:"
       "MKrSLtW4rky/yuUyiM431RsgvjC8yKPyeuk+2QFCq5I="},
      {"\u0627x\u0628",
       "SCRAM-SHA-256$4096:D/Vza3ehN5BGudFxGpRUHw==$2ejS52mID68EZ0J6et8SzDgmbelEFex0RMx7mWsJtUY=:"
       "NJ6GEvYJ+UAykXsr/EmcVx+TWQC4YFdO1oenCAYFWJg="},
      {"\uFF30\uFF47",
       "SCRAM-SHA-256$4096:7R3CBySqb4tHqRCYKomsJA==$/86n0ufFklxI8bwKrvDa5dFNsVGipdVwv2U01D3WZRU=:"
       "pD5HoaDA9NFNFQ2RIHI5WqMBefTehy225oGfwfqL1Tw="},
  };
  for (const PgVector& v : kVectors) {
    auto pg = auth::parse_scram_verifier(v.verifier);
    ASSERT_TRUE(pg) << v.verifier;
    auth::ScramVerifier ours = auth::make_scram_verifier(v.password, pg->salt, pg->iterations);
    EXPECT_EQ(auth::format_scram_verifier(ours), v.verifier) << v.password;
  }
}

}  // namespace
}  // namespace pgward::protocol::saslprep

namespace pgward::protocol::auth {
namespace {

// SCRAM pass-through at the protocol level: the keys a ScramServer recovers from a client's proof let a
// ScramClient without the password pass a server holding the same verifier, and only that verifier.
TEST(ScramPassthrough, RecoveredKeysPassTheSameVerifierOnly) {
  const ScramVerifier verifier = make_scram_verifier("p\u00E4ss", "0123456789abcdef", 4096);
  ScramServer front(verifier);
  ScramClient client("pa\u0308ss");  // SASLprep makes it the same password
  auto server_first = front.handle_client_first(client.client_first());
  ASSERT_TRUE(server_first);
  EXPECT_FALSE(front.keys());
  auto client_final = client.handle_server_first(*server_first);
  ASSERT_TRUE(client_final);
  auto server_final = front.handle_client_final(*client_final);
  ASSERT_TRUE(server_final);
  ASSERT_TRUE(front.keys());
  EXPECT_EQ(front.keys()->salt, verifier.salt);
  EXPECT_EQ(front.keys()->iterations, 4096);

  const ScramVerifier other_salt = make_scram_verifier("p\u00E4ss", "fedcba9876543210", 4096);
  const std::uint64_t derivations = key_derivations();
  ScramServer back(verifier);  // PostgreSQL with the same verifier
  ScramClient passthrough(*front.keys());
  auto back_first = back.handle_client_first(passthrough.client_first());
  ASSERT_TRUE(back_first);
  auto back_final = passthrough.handle_server_first(*back_first);
  ASSERT_TRUE(back_final);
  auto back_server_final = back.handle_client_final(*back_final);
  ASSERT_TRUE(back_server_final);
  EXPECT_TRUE(passthrough.verify_server_final(*back_server_final));
  EXPECT_EQ(key_derivations(), derivations);  // no password, no PBKDF2

  ScramServer elsewhere(other_salt);  // the same password under another salt: the keys do not fit
  ScramClient again(*front.keys());
  auto elsewhere_first = elsewhere.handle_client_first(again.client_first());
  ASSERT_TRUE(elsewhere_first);
  EXPECT_FALSE(again.handle_server_first(*elsewhere_first));
}

}  // namespace
}  // namespace pgward::protocol::auth
