#include "protocol/sql_text.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <initializer_list>

namespace pgward::protocol::sql {

namespace {

struct Token {
  enum class Type : unsigned char { word, quoted, string, lparen, rparen, semicolon, other };
  Type type = Type::other;
  std::size_t pos = 0;
  std::size_t len = 0;
  std::string folded;  // word: lower-cased; quoted: the identifier with "" undone
};

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c | 0x20) : c; }

bool ident_start(unsigned char c) {
  const unsigned char lower = c | 0x20;
  return (lower >= 'a' && lower <= 'z') || c == '_' || c >= 0x80;
}
bool ident_char(unsigned char c) { return ident_start(c) || (c >= '0' && c <= '9') || c == '$'; }
bool space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// PostgreSQL's lexer ("Lexical Structure" in the docs), reduced to the token boundaries a statement scanner
// needs. `complete` goes false when the text ends inside a comment, string or quoted identifier.
// Bytes of the character starting with `lead` in a client-only encoding (PostgreSQL's pg_*_mblen): what
// matters is that a trailing byte, which may be 0x5C, is never taken for a backslash.
std::size_t char_len(std::string_view encoding, unsigned char lead, unsigned char next) {
  if (lead < 0x80) return 1;
  if (encoding == "SJIS" || encoding == "SHIFT_JIS_2004")
    return (lead >= 0x81 && lead <= 0x9f) || (lead >= 0xe0 && lead <= 0xfc) ? 2 : 1;
  if (encoding == "GB18030") return next >= 0x30 && next <= 0x39 ? 4 : 2;
  if (encoding == "JOHAB")
    return (lead >= 0x84 && lead <= 0xd3) || (lead >= 0xd8 && lead <= 0xde) || (lead >= 0xe0 && lead <= 0xf9)
               ? 2
               : 1;
  return 2;  // BIG5, GBK, UHC: every byte from 0x80 leads a two-byte character
}

class Lexer {
 public:
  // `fold` off leaves Token::folded empty, so that lexing allocates nothing; the token's bytes are then
  // text.substr(pos, len).
  Lexer(std::string_view text, const Dialect& dialect, bool fold = true)
      : s_(text), d_(dialect), fold_(fold) {}

  bool next(Token& t) {
    skip_blank();
    if (i_ >= s_.size()) return false;
    t.pos = i_;
    t.folded.clear();
    const unsigned char c = s_[i_];
    if (c == '\'') {
      quoted_string(d_.backslash_quotes);
      t.type = Token::Type::string;
    } else if ((c == 'e' || c == 'E') && peek(1) == '\'') {
      ++i_;
      quoted_string(true);
      t.type = Token::Type::string;
    } else if ((c == 'u' || c == 'U') && peek(1) == '&' && (peek(2) == '\'' || peek(2) == '"')) {
      i_ += 2;
      if (s_[i_] == '\'') {
        quoted_string(false);
        t.type = Token::Type::string;
      } else {
        quoted_identifier(t);
      }
    } else if (c == '"') {
      quoted_identifier(t);
    } else if (c == '$' && dollar_quote()) {
      t.type = Token::Type::string;
    } else if (ident_start(c)) {
      const std::size_t from = i_;
      while (i_ < s_.size() && ident_char(static_cast<unsigned char>(s_[i_]))) ++i_;
      if (fold_) {
        for (const char ch : s_.substr(from, i_ - from)) t.folded += lower(ch);
      }
      t.type = Token::Type::word;
    } else {
      ++i_;
      t.type = c == '('   ? Token::Type::lparen
               : c == ')' ? Token::Type::rparen
               : c == ';' ? Token::Type::semicolon
                          : Token::Type::other;
    }
    t.len = i_ - t.pos;
    return true;
  }

  bool complete() const { return complete_; }

 private:
  char peek(std::size_t ahead) const { return i_ + ahead < s_.size() ? s_[i_ + ahead] : '\0'; }

  void skip_blank() {
    while (i_ < s_.size()) {
      const unsigned char c = s_[i_];
      if (space(c)) {
        ++i_;
      } else if (c == '-' && peek(1) == '-') {
        while (i_ < s_.size() && s_[i_] != '\n') ++i_;
      } else if (c == '/' && peek(1) == '*') {
        // Block comments nest in PostgreSQL.
        std::size_t depth = 0;
        do {
          if (s_[i_] == '/' && peek(1) == '*') {
            ++depth;
            i_ += 2;
          } else if (s_[i_] == '*' && peek(1) == '/') {
            --depth;
            i_ += 2;
          } else {
            ++i_;
          }
        } while (depth > 0 && i_ < s_.size());
        if (depth > 0) complete_ = false;
      } else {
        return;
      }
    }
  }

  // At the opening quote. '' is a quote; with backslash escapes (E'...') so is \'.
  void quoted_string(bool backslash) {
    for (++i_; i_ < s_.size(); ++i_) {
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (backslash && c >= 0x80 && !d_.client_only_encoding.empty()) {
        i_ += char_len(d_.client_only_encoding, c, static_cast<unsigned char>(peek(1))) - 1;
      } else if (backslash && c == '\\') {
        ++i_;
      } else if (s_[i_] == '\'') {
        if (peek(1) == '\'') {
          ++i_;
        } else {
          ++i_;
          return;
        }
      }
    }
    // Unterminated: a backslash or a multibyte lead as the last byte may have stepped past the end.
    i_ = s_.size();
    complete_ = false;
  }

  void quoted_identifier(Token& t) {
    t.type = Token::Type::quoted;
    for (++i_; i_ < s_.size(); ++i_) {
      if (s_[i_] == '"') {
        if (peek(1) != '"') {
          ++i_;
          return;
        }
        ++i_;
      }
      if (fold_) t.folded += s_[i_];
    }
    complete_ = false;
  }

  // At a '$': a dollar-quoted string ($$...$$ or $tag$...$tag$) when a tag follows; a parameter ($1) or
  // operator otherwise (left to the caller).
  bool dollar_quote() {
    std::size_t j = i_ + 1;
    if (j < s_.size() && s_[j] != '$') {
      if (!ident_start(static_cast<unsigned char>(s_[j]))) return false;
      while (j < s_.size() && s_[j] != '$' && ident_char(static_cast<unsigned char>(s_[j]))) ++j;
      if (j >= s_.size() || s_[j] != '$') return false;
    }
    if (j >= s_.size()) return false;
    const std::string_view tag = s_.substr(i_, j + 1 - i_);
    const std::size_t end = s_.find(tag, j + 1);
    if (end == std::string_view::npos) {
      i_ = s_.size();
      complete_ = false;
    } else {
      i_ = end + tag.size();
    }
    return true;
  }

  std::string_view s_;
  const Dialect& d_;
  bool fold_;
  std::size_t i_ = 0;
  bool complete_ = true;
};

bool is_word(const std::vector<Token>& t, std::size_t i, std::string_view w) {
  return i < t.size() && t[i].type == Token::Type::word && t[i].folded == w;
}

bool is_name(const std::vector<Token>& t, std::size_t i) {
  return i < t.size() && (t[i].type == Token::Type::word || t[i].type == Token::Type::quoted);
}

// One statement's tokens: the statement-name references it holds.
void scan_statement(std::string_view sql, const std::vector<Token>& t, Scan& out) {
  if (t.empty()) return;
  ++out.statements;
  const std::size_t stmt_pos = t.front().pos;
  const std::size_t stmt_end = t.back().pos + t.back().len;
  auto add = [&](StatementRef::Kind kind, std::size_t name_at) {
    StatementRef r;
    r.kind = kind;
    r.stmt_pos = stmt_pos;
    r.stmt_len = stmt_end - stmt_pos;
    if (name_at < t.size()) {
      r.name = t[name_at].folded;
      r.name_pos = t[name_at].pos;
      r.name_len = t[name_at].len;
      if (kind == StatementRef::Kind::prepare) {
        const std::size_t from = r.name_pos + r.name_len;
        std::string_view body = sql.substr(from, stmt_end - from);
        while (!body.empty() && space(static_cast<unsigned char>(body.front()))) body.remove_prefix(1);
        r.body = body;
      }
    }
    out.refs.push_back(std::move(r));
  };
  // EXECUTE name, or CREATE ... AS EXECUTE name, from token i on.
  auto execute_at = [&](std::size_t i) {
    if (is_word(t, i, "execute") && is_name(t, i + 1)) {
      add(StatementRef::Kind::execute, i + 1);
      return;
    }
    if (!is_word(t, i, "create")) return;
    int depth = 0;
    for (std::size_t j = i + 1; j < t.size(); ++j) {
      if (t[j].type == Token::Type::lparen) ++depth;
      if (t[j].type == Token::Type::rparen) --depth;
      if (depth == 0 && is_word(t, j, "as")) {
        if (is_word(t, j + 1, "execute") && is_name(t, j + 2)) add(StatementRef::Kind::execute, j + 2);
        return;
      }
    }
  };

  if (is_word(t, 0, "prepare")) {
    // PREPARE TRANSACTION 'gid' names a transaction, not a statement.
    if (is_word(t, 1, "transaction") && t.size() > 2 && t[2].type == Token::Type::string) return;
    if (is_name(t, 1)) add(StatementRef::Kind::prepare, 1);
  } else if (is_word(t, 0, "deallocate")) {
    const std::size_t at = is_word(t, 1, "prepare") && is_name(t, 2) ? 2 : 1;
    if (is_word(t, at, "all")) {
      add(StatementRef::Kind::deallocate_all, t.size());
    } else if (is_name(t, at)) {
      add(StatementRef::Kind::deallocate, at);
    }
  } else if (is_word(t, 0, "discard")) {
    if (is_word(t, 1, "all")) add(StatementRef::Kind::discard_all, t.size());
  } else if (is_word(t, 0, "explain")) {
    std::size_t i = 1;
    if (i < t.size() && t[i].type == Token::Type::lparen) {
      int depth = 0;
      for (; i < t.size(); ++i) {
        if (t[i].type == Token::Type::lparen) ++depth;
        if (t[i].type == Token::Type::rparen && --depth == 0) break;
      }
      ++i;
    } else {
      while (is_word(t, i, "analyze") || is_word(t, i, "analyse") || is_word(t, i, "verbose")) ++i;
    }
    execute_at(i);
  } else {
    execute_at(0);
  }
}

// A token as session_effects keeps it: a view of its bytes, no copy.
struct Span {
  Token::Type type = Token::Type::other;
  std::string_view text;
};

// `text` spells the lower-case word `word`, ASCII case aside (PostgreSQL folds keywords in ASCII only).
bool equals_ci(std::string_view text, std::string_view word) {
  if (text.size() != word.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i)
    if (lower(text[i]) != word[i]) return false;
  return true;
}

bool starts_ci(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && equals_ci(text.substr(0, prefix.size()), prefix);
}

// The token is the keyword `word`: an unquoted word, case aside.
bool is_kw(const Span& t, std::string_view word) {
  return t.type == Token::Type::word && equals_ci(t.text, word);
}

// The token names the identifier `word` (lower-case): an unquoted word, case aside, or a quoted identifier
// spelling it exactly ("pg_temp").
bool names(const Span& t, std::string_view word) {
  if (t.type == Token::Type::word) return equals_ci(t.text, word);
  if (t.type != Token::Type::quoted) return false;
  std::string_view inner = t.text;
  if (!inner.empty() && inner.front() != '"') inner.remove_prefix(2);  // U&"..."
  inner.remove_prefix(1);
  if (!inner.empty() && inner.back() == '"') inner.remove_suffix(1);
  return inner == word;
}

// Session-level advisory locks: held past the transaction, until unlocked or the session ends (the _xact_
// variants end with the transaction).
bool advisory_lock(const Span& t) {
  for (const std::string_view f :
       {"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"})
    if (names(t, f)) return true;
  return false;
}

// The contents of a string token, quotes and a $tag$ undone ('' and escapes are left as they are: the words
// around them are what matters); `backslash` tells whether \ escapes the next byte.
std::string_view string_body(std::string_view text, bool backslash_quotes, bool& backslash) {
  backslash = backslash_quotes;
  if (!text.empty() && text.front() == '$') {
    const std::size_t tag = text.find('$', 1) + 1;
    const std::string_view close = text.substr(0, tag);
    text.remove_prefix(tag);
    if (text.size() >= close.size() && text.ends_with(close)) text.remove_suffix(close.size());
    backslash = false;
    return text;
  }
  if (!text.empty() && (text.front() == 'e' || text.front() == 'E')) {
    text.remove_prefix(1);
    backslash = true;
  } else if (!text.empty() && text.front() != '\'') {
    text.remove_prefix(2);  // U&'...'
    backslash = false;
  }
  text.remove_prefix(1);
  if (!text.empty() && text.back() == '\'') text.remove_suffix(1);
  return text;
}

// A DO block's body is PL/pgSQL (or another language), not SQL: its words are searched wherever they stand,
// strings and comments included, and dynamic SQL built from pieces escapes the search.
void scan_do_body(std::string_view body, bool backslash, SessionEffects& out, Pin& pin) {
  bool after_with = false;
  for (std::size_t i = 0; i < body.size();) {
    const auto c = static_cast<unsigned char>(body[i]);
    if (backslash && c == '\\') {
      i += 2;
      continue;
    }
    if (!ident_start(c)) {
      ++i;
      continue;
    }
    const std::size_t from = i;
    while (i < body.size() && ident_char(static_cast<unsigned char>(body[i]))) ++i;
    const std::string_view w = body.substr(from, i - from);
    Pin found = Pin::none;
    if (equals_ci(w, "temp") || equals_ci(w, "temporary") || equals_ci(w, "pg_temp")) {
      found = Pin::temp;
    } else if (equals_ci(w, "listen")) {
      found = Pin::listen;
    } else if (advisory_lock(Span{Token::Type::word, w})) {
      found = Pin::advisory_lock;
    } else if (after_with && equals_ci(w, "hold")) {
      found = Pin::cursor;
    } else if (equals_ci(w, "load")) {
      found = Pin::load;
    } else if (equals_ci(w, "unlisten") || equals_ci(w, "discard") || equals_ci(w, "drop") ||
               equals_ci(w, "close") || starts_ci(w, "pg_advisory_unlock")) {
      out.releases = true;
    }
    if (pin == Pin::none) pin = found;
    after_with = equals_ci(w, "with");
  }
}

// session_effects() one token at a time, one statement after the other. Keeps the statement's first few
// tokens (past EXPLAIN and its options) and the last three, nothing more.
class EffectsScan {
 public:
  EffectsScan(std::string_view sql, const Dialect& dialect) : sql_(sql), dialect_(dialect) {}

  void token(const Token& tok) {
    const Span t{tok.type, sql_.substr(tok.pos, tok.len)};
    if (!st_.any) {
      st_.any = true;
      st_.pos = tok.pos;
    }
    st_.end = tok.pos + tok.len;
    if (!explain_prefix(t)) {
      if (st_.heads < kHead) st_.head[st_.heads++] = t;
      anywhere(t);
    }
    st_.last[2] = st_.last[1];
    st_.last[1] = st_.last[0];
    st_.last[0] = t;
  }

  // At a ';' or the end of the text.
  void end_statement() {
    if (st_.any) {
      statement();
      if (out.pin == Pin::none && st_.pin != Pin::none) {
        out.pin = st_.pin;
        out.pin_pos = st_.pos;
        out.pin_len = st_.end - st_.pos;
      }
    }
    st_ = Statement{};
  }

  SessionEffects out;

 private:
  static constexpr std::size_t kHead = 8;
  enum class Explain : unsigned char { none, words, options, done };

  // What the current statement has shown so far.
  struct Statement {
    bool any = false;
    std::size_t pos = 0, end = 0;  // its bytes so far
    Span head[kHead];              // its first tokens, past EXPLAIN's
    std::size_t heads = 0;
    Span last[3];  // the last tokens, the latest first
    Explain explain = Explain::none;
    int depth = 0;  // in EXPLAIN's parenthesised options
    bool past_for = false;
    Pin pin = Pin::none;
  };

  bool head(std::size_t i, std::string_view word) const { return i < st_.heads && is_kw(st_.head[i], word); }

  void pin(Pin p) {
    if (st_.pin == Pin::none) st_.pin = p;
  }

  // EXPLAIN [ANALYZE] [VERBOSE] or EXPLAIN (options): skipped, so that the statement it runs is read as if
  // it stood alone. True while `t` belongs to that prefix.
  bool explain_prefix(const Span& t) {
    if (st_.heads == 0 && st_.explain == Explain::none && is_kw(t, "explain")) {
      st_.explain = Explain::words;
      return true;
    }
    if (st_.explain == Explain::words) {
      if (t.type == Token::Type::lparen) {
        st_.explain = Explain::options;
        st_.depth = 1;
        return true;
      }
      if (is_kw(t, "analyze") || is_kw(t, "analyse") || is_kw(t, "verbose")) return true;
      st_.explain = Explain::done;
      return false;
    }
    if (st_.explain == Explain::options) {
      if (t.type == Token::Type::lparen) ++st_.depth;
      if (t.type == Token::Type::rparen && --st_.depth == 0) st_.explain = Explain::words;
      return true;
    }
    return false;
  }

  // Rules that hold wherever the token stands in the statement.
  void anywhere(const Span& t) {
    if (names(t, "set_config")) out.settings = true;
    if (t.type == Token::Type::word && starts_ci(t.text, "pg_advisory_unlock")) out.releases = true;
    if (advisory_lock(t)) pin(Pin::advisory_lock);
    // Anything CREATE puts in pg_temp is a temporary object.
    if (head(0, "create") && names(t, "pg_temp")) pin(Pin::temp);
    // SELECT ... INTO [LOCAL | GLOBAL] TEMP | TEMPORARY [TABLE] name (not INSERT INTO temp, a table).
    if (is_kw(t, "temp") || is_kw(t, "temporary")) {
      const std::size_t into = is_kw(st_.last[0], "local") || is_kw(st_.last[0], "global") ? 1 : 0;
      const Span& before = st_.last[into + 1];
      if (is_kw(st_.last[into], "into") && !is_kw(before, "insert") && !is_kw(before, "merge"))
        pin(Pin::temp);
    }
    // DECLARE name ... CURSOR WITH HOLD FOR query: the options stand before FOR.
    if (head(0, "declare")) {
      if (is_kw(t, "for")) st_.past_for = true;
      if (!st_.past_for && is_kw(t, "hold") && is_kw(st_.last[0], "with")) pin(Pin::cursor);
    }
    // DO [LANGUAGE name] 'body' or DO 'body' LANGUAGE name (the language may be a string too: searched all
    // the same).
    if (head(0, "do") && t.type == Token::Type::string) {
      bool backslash = false;
      const std::string_view body = string_body(t.text, dialect_.backslash_quotes, backslash);
      Pin found = Pin::none;
      scan_do_body(body, backslash, out, found);
      if (found != Pin::none) pin(found);
    }
  }

  // Rules on the statement's first words, once it is whole.
  void statement() {
    if (head(0, "set")) {
      // SET LOCAL and SET TRANSACTION end with the transaction; SET CONSTRAINTS is transaction state too.
      if (head(1, "local") || head(1, "transaction") || head(1, "constraints")) return;
      out.settings = true;
      const std::size_t i = head(1, "session") && !head(2, "authorization") ? 2 : 1;
      if (head(i, "time") && head(i + 1, "zone")) {
        if (head(i + 2, "default") || head(i + 2, "local")) out.resets = true;
      } else if (head(i, "role")) {
        if (head(i + 1, "none")) out.resets = true;
      } else if (head(i, "session") && head(i + 1, "authorization")) {
        if (head(i + 2, "default")) out.resets = true;
      } else {
        for (std::size_t j = i + 1; j + 1 < st_.heads; ++j) {
          if (is_kw(st_.head[j], "to") || st_.head[j].text == "=") {
            if (is_kw(st_.head[j + 1], "default")) out.resets = true;
            break;
          }
        }
      }
    } else if (head(0, "reset")) {
      out.settings = out.resets = true;
    } else if (head(0, "discard")) {
      out.settings = out.releases = true;
      if (head(1, "all")) out.resets = true;
    } else if (head(0, "do")) {
      out.settings = out.resets = true;
    } else if (head(0, "listen")) {
      st_.pin = Pin::listen;
    } else if (head(0, "load")) {
      st_.pin = Pin::load;
    } else if (head(0, "prepare")) {
      if (head(1, "transaction") && st_.heads > 2 && st_.head[2].type == Token::Type::string) {
        st_.pin = Pin::prepared_transaction;
      }
    } else if (head(0, "unlisten") || head(0, "drop") || head(0, "close")) {
      out.releases = true;
    } else if ((head(0, "commit") || head(0, "rollback")) && head(1, "prepared")) {
      out.releases = true;  // ends a prepared transaction
    } else if (head(0, "create")) {
      std::size_t i = head(1, "or") && head(2, "replace") ? 3 : 1;
      if (head(i, "global") || head(i, "local")) ++i;
      if (head(i, "temp") || head(i, "temporary")) st_.pin = Pin::temp;
    }
  }

  std::string_view sql_;
  const Dialect& dialect_;
  Statement st_;
};

}  // namespace

Scan scan_statement_refs(std::string_view sql, const Dialect& dialect) {
  Scan out;
  Lexer lex(sql, dialect);
  std::vector<Token> stmt;
  Token t;
  while (lex.next(t)) {
    if (t.type == Token::Type::semicolon) {
      scan_statement(sql, stmt, out);
      stmt.clear();
    } else {
      stmt.push_back(std::move(t));
      t = Token{};
    }
  }
  scan_statement(sql, stmt, out);
  out.complete = lex.complete();
  return out;
}

std::string_view client_only_encoding(std::string_view client_encoding) {
  static constexpr std::string_view kClientOnly[] = {"SJIS", "SHIFT_JIS_2004", "BIG5", "GBK",
                                                     "UHC",  "GB18030",        "JOHAB"};
  std::string upper;
  for (char c : client_encoding) {
    if (c != '_' && c != '-') upper += (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c;
  }
  for (std::string_view e : kClientOnly) {
    std::string plain;
    for (char c : e)
      if (c != '_') plain += c;
    if (plain == upper) return e;
  }
  // PostgreSQL's aliases for them.
  if (upper == "SHIFTJIS" || upper == "MSKANJI" || upper == "WIN932" || upper == "WINDOWS932") return "SJIS";
  if (upper == "WIN950" || upper == "WINDOWS950") return "BIG5";
  if (upper == "WIN936" || upper == "WINDOWS936") return "GBK";
  if (upper == "WIN949" || upper == "WINDOWS949") return "UHC";
  return {};
}

bool mentions_ci(std::string_view text, std::string_view word) {
  if (word.empty() || text.size() < word.size()) return word.empty();
  const char* const end = text.data() + text.size() - word.size() + 1;  // last possible start, plus one
  for (const char first : {word[0], static_cast<char>(word[0] & ~0x20)}) {
    for (const char* p = text.data(); (p = static_cast<const char*>(std::memchr(p, first, end - p))); ++p) {
      std::size_t j = 1;
      while (j < word.size() && (p[j] >= 'A' && p[j] <= 'Z' ? p[j] | 0x20 : p[j]) == word[j]) ++j;
      if (j == word.size()) return true;
    }
  }
  return false;
}

namespace {

bool name_char(unsigned char c) { return ident_char(c) || c == '.'; }

// The custom setting name at `i` (after white space), lower-cased; "" unless it has a dot inside.
std::string custom_name_at(std::string_view sql, std::size_t i) {
  while (i < sql.size() && space(static_cast<unsigned char>(sql[i]))) ++i;
  std::string name;
  for (; i < sql.size() && name_char(static_cast<unsigned char>(sql[i])) && name.size() <= 128; ++i)
    name += static_cast<char>(sql[i] >= 'A' && sql[i] <= 'Z' ? sql[i] | 0x20 : sql[i]);
  const std::size_t dot = name.find('.');
  if (dot == std::string::npos || dot == 0 || name.back() == '.' || name.size() > 128) return {};
  return name;
}

}  // namespace

void custom_setting_names(std::string_view sql, std::vector<std::string>& out) {
  auto add = [&](std::string name) {
    if (!name.empty() && std::find(out.begin(), out.end(), name) == out.end()) out.push_back(std::move(name));
  };
  for (std::size_t i = 0; i < sql.size(); ++i) {
    if (i > 0 && ident_char(static_cast<unsigned char>(sql[i - 1]))) continue;  // inside a word
    const std::string_view rest = sql.substr(i);
    for (std::string_view word : {std::string_view("set"), std::string_view("reset")}) {
      if (rest.size() > word.size() && starts_ci(rest, word) &&
          !ident_char(static_cast<unsigned char>(rest[word.size()]))) {
        std::size_t at = i + word.size();
        while (at < sql.size() && space(static_cast<unsigned char>(sql[at]))) ++at;
        if (starts_ci(sql.substr(at), "session ")) at += 8;
        add(custom_name_at(sql, at));
      }
    }
    constexpr std::string_view kSetConfig = "set_config";
    if (rest.size() > kSetConfig.size() && starts_ci(rest, kSetConfig)) {
      std::size_t at = i + kSetConfig.size();
      while (at < sql.size() && space(static_cast<unsigned char>(sql[at]))) ++at;
      if (at < sql.size() && sql[at] == '(') ++at;
      while (at < sql.size() && space(static_cast<unsigned char>(sql[at]))) ++at;
      if (at < sql.size() && (sql[at] == 'e' || sql[at] == 'E')) ++at;
      if (at < sql.size() && sql[at] == '\'') add(custom_name_at(sql, at + 1));
    }
  }
}

namespace {

// A few words (lower-case letters, digits, '_'), found anywhere in a text, ASCII case aside, in one pass: a
// table says which bytes start which words, so a byte that starts none costs one lookup. Cheaper than a
// memchr pass per word and letter case on the short texts of the hot path, where common letters hit often.
class WordSet {
 public:
  constexpr WordSet(std::initializer_list<std::string_view> words) {
    for (const std::string_view w : words) {
      const auto bit = static_cast<std::uint16_t>(1u << count_);
      words_[count_++] = w;
      const auto c = static_cast<unsigned char>(w[0]);
      starts_[c] |= bit;
      if (c >= 'a' && c <= 'z') starts_[c - 32] |= bit;
    }
  }

  bool in(std::string_view text) const {
    for (std::size_t i = 0; i < text.size(); ++i) {
      std::uint16_t m = starts_[static_cast<unsigned char>(text[i])];
      for (std::size_t w = 0; m != 0; ++w, m >>= 1) {
        if ((m & 1) == 0) continue;
        const std::string_view word = words_[w];
        if (text.size() - i < word.size()) continue;
        std::size_t j = 1;
        while (j < word.size() && lower(text[i + j]) == word[j]) ++j;
        if (j == word.size()) return true;
      }
    }
    return false;
  }

 private:
  static constexpr char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c | 0x20) : c; }

  std::array<std::uint16_t, 256> starts_{};
  std::array<std::string_view, 16> words_{};
  std::size_t count_ = 0;
};

}  // namespace

bool may_name_statements(std::string_view sql) {
  static constexpr WordSet kWords{"execute", "prepare", "dealloc", "discard"};
  return kWords.in(sql);
}

std::string_view pin_name(Pin pin) {
  switch (pin) {
    case Pin::none: return "";
    case Pin::temp: return "temp";
    case Pin::listen: return "listen";
    case Pin::advisory_lock: return "advisory_lock";
    case Pin::cursor: return "cursor";
    case Pin::load: return "load";
    case Pin::prepared_transaction: return "prepared_transaction";
  }
  return "";
}

namespace {

// Whether any word that matters to session_effects() occurs anywhere in the text. "set" covers RESET and
// set_config, "listen" UNLISTEN, "temp" pg_temp and TEMPORARY, "advisory" every advisory lock and unlock,
// "prepare" PREPARE TRANSACTION and COMMIT / ROLLBACK PREPARED.
bool mentions_session_word(std::string_view sql) {
  static constexpr WordSet kWords{"set",     "listen", "temp",    "advisory", "load", "hold",
                                  "discard", "do",     "prepare", "drop",     "close"};
  return kWords.in(sql);
}

}  // namespace

bool may_touch_session(std::string_view sql) {
  // The common case is one statement starting with a plain word: then only that first word and the few
  // words session_effects() heeds anywhere in a statement matter, which is three memchr passes rather than
  // eleven. Anything else (several statements, a leading comment or parenthesis) takes the full list.
  std::size_t i = 0;
  while (i < sql.size() && space(static_cast<unsigned char>(sql[i]))) ++i;
  std::size_t end = i;
  while (end < sql.size() && ident_char(static_cast<unsigned char>(sql[end]))) ++end;
  const std::size_t semicolon = sql.find(';');
  bool single = semicolon == std::string_view::npos;
  if (!single) {
    std::size_t j = semicolon + 1;
    while (j < sql.size() && (space(static_cast<unsigned char>(sql[j])) || sql[j] == ';')) ++j;
    single = j == sql.size();
  }
  if (end == i || !ident_start(static_cast<unsigned char>(sql[i])) || !single)
    return mentions_session_word(sql);
  const std::string_view first = sql.substr(i, end - i);
  // Statements whose first word session_effects() reads (EXPLAIN: what follows it is read as a statement).
  static constexpr std::string_view kFirstWords[] = {"set",    "reset",    "discard", "do",
                                                     "listen", "unlisten", "load",    "prepare",
                                                     "drop",   "close",    "declare", "explain"};
  if (first.size() <= 8) {  // the longest of them
    for (const std::string_view word : kFirstWords)
      if (equals_ci(first, word)) return true;
    if (equals_ci(first, "commit") || equals_ci(first, "rollback")) return mentions_ci(sql, "prepared");
  }
  // Rules that hold wherever a word stands: set_config, the advisory lock functions, TEMP / pg_temp.
  static constexpr WordSet kAnywhere{"temp", "advisory", "set_config"};
  return kAnywhere.in(sql);
}

SessionEffects session_effects(std::string_view sql, const Dialect& dialect) {
  EffectsScan scan(sql, dialect);
  Lexer lex(sql, dialect, false);
  Token t;
  while (lex.next(t)) {
    if (t.type == Token::Type::semicolon) {
      scan.end_statement();
    } else {
      scan.token(t);
    }
  }
  scan.end_statement();
  scan.out.complete = lex.complete();
  return scan.out;
}

std::size_t count_chars(std::string_view text) {
  std::size_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

std::string short_command(std::string_view sql) {
  if (sql.size() > 64) return {};
  std::string out;
  bool space = false;
  bool ended = false;
  for (char c : sql) {
    if (ended && c != ';' && !std::isspace(static_cast<unsigned char>(c))) return {};
    if (std::isalpha(static_cast<unsigned char>(c))) {
      if (space && !out.empty()) out += ' ';
      space = false;
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (std::isspace(static_cast<unsigned char>(c))) {
      space = true;
    } else if (c == ';') {
      ended = true;
    } else {
      return {};
    }
  }
  return out;
}

bool is_commit(std::string_view sql) {
  const std::string cmd = short_command(sql);
  return cmd == "commit" || cmd == "commit work" || cmd == "commit transaction" || cmd == "end" ||
         cmd == "end work" || cmd == "end transaction";
}

bool is_rollback(std::string_view sql) {
  const std::string cmd = short_command(sql);
  return cmd == "rollback" || cmd == "rollback work" || cmd == "rollback transaction" || cmd == "abort" ||
         cmd == "abort work" || cmd == "abort transaction";
}

bool may_commit(std::string_view sql) {
  return mentions_ci(sql, "commit") || mentions_ci(sql, "end") || mentions_ci(sql, "prepare");
}

}  // namespace pgward::protocol::sql
