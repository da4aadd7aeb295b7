// libFuzzer target for SASLprep and NFKC (protocol/saslprep.hpp): passwords are attacker-chosen bytes (a
// client's SCRAM password never reaches it, but every users-file or auth_query secret and server password
// does), so arbitrary input must neither crash nor break the invariants below. Run with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/saslprep.hpp"

namespace sp = pgward::protocol::saslprep;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const sp::Result r = sp::saslprep(in);
  if ((r.outcome == sp::Outcome::kTooLong) != (in.size() > sp::kMaxPasswordBytes)) std::abort();
  if (r.outcome != sp::Outcome::kPrepared && !r.text.empty()) std::abort();
  bool ascii = true;
  for (char c : in) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii && in.size() <= sp::kMaxPasswordBytes && (r.outcome != sp::Outcome::kPrepared || r.text != in)) {
    std::abort();  // PostgreSQL passes pure ASCII through unchanged
  }
  // Non-ASCII input that maps to nothing is refused, never prepared to an empty password.
  if (!ascii && r.outcome == sp::Outcome::kPrepared && r.text.empty()) std::abort();
  const std::string raw_or_prepared = sp::scram_password(in);
  if (raw_or_prepared != (r.outcome == sp::Outcome::kPrepared ? r.text : std::string(in))) std::abort();

  // NFKC over the same bytes read as code points: stable (normalising twice changes nothing).
  std::u32string cps;
  for (std::size_t i = 0; i + 3 < size && cps.size() < 256; i += 4) {
    std::uint32_t v = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (std::uint32_t{data[i + 3]} << 24);
    cps += static_cast<char32_t>(v % 0x110000);
  }
  const std::u32string once = sp::nfkc(cps);
  if (sp::nfkc(once) != once) std::abort();
  return 0;
}
