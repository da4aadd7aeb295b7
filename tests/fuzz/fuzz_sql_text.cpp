// libFuzzer target for the SQL scanner alone (protocol/sql_text.hpp): client SQL text in every dialect pgward
// reads (standard_conforming_strings on and off, the client-only encodings), checked against the invariants
// the session relies on when it rewrites statement names in place and when it reads what a text does to the
// session. Any crash, over-read (ASan), undefined behaviour (UBSan) or broken invariant (abort) is a finding.
// Run with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/sql_text.hpp"

namespace sql = pgward::protocol::sql;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.empty()) return 0;
  // The first byte picks the dialect; the rest is the text.
  sql::Dialect dialect;
  dialect.backslash_quotes = (in[0] & 1) != 0;
  if (in[0] & 2) dialect.client_only_encoding = (in[0] & 4) ? "SJIS" : "BIG5";
  const std::string_view text = in.substr(1);

  const sql::Scan scan = sql::scan_statement_refs(text, dialect);
  // may_name_statements() is the hot path's pre-test: false must mean the scanner finds nothing.
  if (!sql::may_name_statements(text) && !scan.refs.empty()) std::abort();
  std::size_t last = 0;
  for (const auto& r : scan.refs) {
    // Names lie inside the text, in order, without overlapping: the session rewrites the text by them.
    if (r.name_len != 0) {
      if (r.name_pos < last || r.name_pos + r.name_len > text.size()) std::abort();
      last = r.name_pos + r.name_len;
    }
    if (r.stmt_pos + r.stmt_len > text.size()) std::abort();
    if (r.name_len != 0 && (r.name_pos < r.stmt_pos || r.name_pos + r.name_len > r.stmt_pos + r.stmt_len))
      std::abort();
    // A PREPARE's body is a view into the text.
    if (!r.body.empty() &&
        (r.body.data() < text.data() || r.body.data() + r.body.size() > text.data() + text.size()))
      std::abort();
  }
  if (scan.refs.size() > scan.statements && scan.statements != 0) {
    // Each statement names at most one prepared statement (EXPLAIN EXECUTE and CTAS included).
    std::abort();
  }

  const sql::SessionEffects effects = sql::session_effects(text, dialect);
  // may_touch_session() is the hot path's pre-test: false must mean no effect at all.
  if (!sql::may_touch_session(text) &&
      (effects.settings || effects.resets || effects.releases || effects.pin != sql::Pin::none))
    std::abort();
  // The pinning statement lies inside the text and is not empty; none leaves the range at zero.
  if (effects.pin_pos + effects.pin_len > text.size()) std::abort();
  if ((effects.pin != sql::Pin::none) != (effects.pin_len != 0)) std::abort();
  if (sql::pin_name(effects.pin).empty() != (effects.pin == sql::Pin::none)) std::abort();
  // Both scanners read the same tokens.
  if (effects.complete != scan.complete) std::abort();
  (void)sql::is_commit(text);
  (void)sql::is_rollback(text);
  (void)sql::may_commit(text);
  (void)sql::count_chars(text);
  return 0;
}
