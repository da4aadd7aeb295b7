#include "protocol/sql_text.hpp"

#include <cctype>
#include <cstring>

namespace pgward::protocol::sql {

namespace {

struct Token {
  enum class Type : unsigned char { word, quoted, string, lparen, rparen, semicolon, other };
  Type type = Type::other;
  std::size_t pos = 0;
  std::size_t len = 0;
  std::string folded;  // word: lower-cased; quoted: the identifier with "" undone
};

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
  Lexer(std::string_view text, const Dialect& dialect) : s_(text), d_(dialect) {}

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
      while (i_ < s_.size() && ident_char(static_cast<unsigned char>(s_[i_]))) {
        const char ch = s_[i_++];
        t.folded += (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch | 0x20) : ch;
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
      t.folded += s_[i_];
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
      while (j < word.size() && (p[j] | 0x20) == word[j]) ++j;
      if (j == word.size()) return true;
    }
  }
  return false;
}

bool may_name_statements(std::string_view sql) {
  return mentions_ci(sql, "execute") || mentions_ci(sql, "prepare") || mentions_ci(sql, "dealloc") ||
         mentions_ci(sql, "discard");
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
