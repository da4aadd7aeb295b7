// SASLprep (RFC 4013, the stringprep profile of RFC 3454) exactly as PostgreSQL applies it to SCRAM passwords
// (src/common/saslprep.c), so that a verifier pgward derives from a plain password is the one PostgreSQL and
// libpq derive from it. Pure computation, no allocation beyond the result.
//
// PostgreSQL's departures from the RFC, kept here on purpose:
//   * a pure-ASCII string is returned unchanged, control characters included;
//   * the prohibited-output, unassigned and bidirectional checks look at the string after mapping but before
//     NFKC normalisation (so "a" U+0340 is refused although its NFKC form, "a" U+0300, is allowed);
//   * a refused string is not an error: SCRAM then hashes the raw bytes (scram_password()).
#pragma once

#include <string>
#include <string_view>

namespace pgward::protocol::saslprep {

// PostgreSQL's MAX_PASSWORD_LENGTH: longer passwords are refused by the server ("password too long") and
// by libpq, so none of them can ever log in with SCRAM. Also bounds the work of one call.
inline constexpr std::size_t kMaxPasswordBytes = 1024;

enum class Outcome {
  kPrepared,     // text holds the prepared string
  kInvalidUtf8,  // not valid UTF-8 (overlong forms, surrogates and code points above U+10FFFF included)
  kProhibited,   // empty after mapping, a prohibited or unassigned character, or a failed bidi check
  kTooLong,      // more than kMaxPasswordBytes bytes
};

struct Result {
  Outcome outcome = Outcome::kPrepared;
  std::string text;  // empty unless kPrepared
};

Result saslprep(std::string_view input);

// The bytes SCRAM hashes for `password`, as PostgreSQL chooses them (pg_be_scram_build_secret, libpq's
// pg_fe_scram_build_secret): the SASLprep result, or the raw bytes when SASLprep refuses the string.
std::string scram_password(std::string_view password);

// Unicode NFKC (UAX #15) of a sequence of code points, with the Unicode version PostgreSQL 15 uses (14.0.0).
// Exposed for the unit tests; code points outside Unicode pass through unchanged.
std::u32string nfkc(std::u32string_view text);

}  // namespace pgward::protocol::saslprep
