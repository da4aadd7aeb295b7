#include "protocol/saslprep.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>

namespace pgward::protocol::saslprep {
namespace {

struct CodeRange {
  std::uint32_t first;
  std::uint32_t last;
};
struct CombiningRange {
  std::uint32_t first;
  std::uint32_t last;
  std::uint8_t ccc;
};
struct Decomposition {
  std::uint32_t code;
  std::uint16_t offset;  // into kDecompositionPool
  std::uint8_t length;
};
struct Composition {
  std::uint32_t first;
  std::uint32_t second;
  std::uint32_t composite;
};

#include "protocol/unicode_tables.inc"

template <typename Range, std::size_t N>
const Range* find_range(const Range (&table)[N], char32_t c) {
  auto it = std::upper_bound(std::begin(table), std::end(table), c,
                             [](char32_t v, const Range& r) { return v < r.first; });
  if (it == std::begin(table)) return nullptr;
  --it;
  return c <= it->last ? &*it : nullptr;
}

template <std::size_t N>
bool in_table(const CodeRange (&table)[N], char32_t c) {
  return find_range(table, c) != nullptr;
}

int combining_class(char32_t c) {
  const CombiningRange* r = find_range(kCombining, c);
  return r == nullptr ? 0 : r->ccc;
}

// Hangul syllables decompose and compose by arithmetic (Unicode chapter 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

void decompose(char32_t c, std::u32string& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    char32_t s = c - kSBase;
    out += kLBase + s / kNCount;
    out += kVBase + (s % kNCount) / kTCount;
    if (s % kTCount != 0) out += kTBase + s % kTCount;
    return;
  }
  auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), c,
                             [](const Decomposition& d, char32_t v) { return d.code < v; });
  if (it == std::end(kDecompositions) || it->code != c) {
    out += c;
    return;
  }
  for (std::size_t i = 0; i < it->length; ++i)
    out += static_cast<char32_t>(kDecompositionPool[it->offset + i]);
}

std::optional<char32_t> compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::pair{a, b},
                             [](const Composition& c, const std::pair<char32_t, char32_t>& v) {
                               return std::pair<char32_t, char32_t>{c.first, c.second} < v;
                             });
  if (it == std::end(kCompositions) || it->first != a || it->second != b) return std::nullopt;
  return it->composite;
}

// Canonical ordering: a stable sort by combining class of every run of non-starters.
void reorder(std::u32string& s) {
  for (std::size_t i = 1; i < s.size(); ++i) {
    int cc = combining_class(s[i]);
    if (cc == 0) continue;
    for (std::size_t j = i; j > 0; --j) {
      int prev = combining_class(s[j - 1]);
      if (prev == 0 || prev <= cc) break;
      std::swap(s[j - 1], s[j]);
    }
  }
}

// Canonical composition (UAX #15, "Canonical Composition Algorithm"): each character composes with the last
// starter unless a character of the same or a higher class stands between them.
void recompose(std::u32string& s) {
  if (s.empty()) return;
  std::size_t starter = 0;
  int last_class = combining_class(s[0]) == 0 ? 0 : 256;  // a leading non-starter composes with nothing
  std::size_t out = 1;
  for (std::size_t i = 1; i < s.size(); ++i) {
    char32_t c = s[i];
    int cc = combining_class(c);
    std::optional<char32_t> composite = compose(s[starter], c);
    if (composite && (last_class < cc || last_class == 0)) {
      s[starter] = *composite;
      continue;
    }
    if (cc == 0) starter = out;
    last_class = cc;
    s[out++] = c;
  }
  s.resize(out);
}

// Strict UTF-8 as PostgreSQL's pg_utf8_islegal: shortest form only, no surrogates, nothing above U+10FFFF.
std::optional<std::u32string> decode_utf8(std::string_view in) {
  std::u32string out;
  out.reserve(in.size());
  std::size_t i = 0;
  while (i < in.size()) {
    auto b0 = static_cast<unsigned char>(in[i]);
    std::size_t len = b0 < 0x80                  ? 1
                      : b0 >= 0xC2 && b0 <= 0xDF ? 2
                      : b0 >= 0xE0 && b0 <= 0xEF ? 3
                      : b0 >= 0xF0 && b0 <= 0xF4 ? 4
                                                 : 0;
    if (len == 0 || in.size() - i < len) return std::nullopt;
    char32_t c = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    for (std::size_t k = 1; k < len; ++k) {
      auto b = static_cast<unsigned char>(in[i + k]);
      if ((b & 0xC0) != 0x80) return std::nullopt;
      c = (c << 6) | (b & 0x3F);
    }
    static constexpr char32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < kMinForLength[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return std::nullopt;
    out += c;
    i += len;
  }
  return out;
}

void encode_utf8(char32_t c, std::string& out) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// RFC 3454 section 6 with RFC 4013's tables; PostgreSQL applies it (and the prohibited-output check) to the
// mapped input.
bool passes_checks(const std::u32string& mapped) {
  bool has_randal = false;
  for (char32_t c : mapped) {
    if (in_table(kProhibited, c) || in_table(kUnassigned, c)) return false;
    has_randal = has_randal || in_table(kRandALCat, c);
  }
  if (!has_randal) return true;
  if (std::any_of(mapped.begin(), mapped.end(), [](char32_t c) { return in_table(kLCat, c); })) return false;
  return in_table(kRandALCat, mapped.front()) && in_table(kRandALCat, mapped.back());
}

}  // namespace

std::u32string nfkc(std::u32string_view text) {
  std::u32string s;
  s.reserve(text.size());
  for (char32_t c : text) decompose(c, s);
  reorder(s);
  recompose(s);
  return s;
}

Result saslprep(std::string_view input) {
  if (input.size() > kMaxPasswordBytes) return {Outcome::kTooLong, {}};
  if (std::all_of(input.begin(), input.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    return {Outcome::kPrepared, std::string(input)};
  }
  std::optional<std::u32string> chars = decode_utf8(input);
  if (!chars) return {Outcome::kInvalidUtf8, {}};

  // RFC 4013 section 2.1: non-ASCII spaces map to U+0020, "commonly mapped to nothing" characters vanish.
  std::u32string mapped;
  mapped.reserve(chars->size());
  for (char32_t c : *chars) {
    if (in_table(kNonAsciiSpace, c)) {
      mapped += U' ';
    } else if (!in_table(kMappedToNothing, c)) {
      mapped += c;
    }
  }
  if (mapped.empty() || !passes_checks(mapped)) return {Outcome::kProhibited, {}};

  Result result{Outcome::kPrepared, {}};
  for (char32_t c : nfkc(mapped)) encode_utf8(c, result.text);
  return result;
}

std::string scram_password(std::string_view password) {
  Result r = saslprep(password);
  return r.outcome == Outcome::kPrepared ? std::move(r.text) : std::string(password);
}

}  // namespace pgward::protocol::saslprep
