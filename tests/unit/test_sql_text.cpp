#include <gtest/gtest.h>

#include "protocol/sql_text.hpp"

namespace pgward::protocol::sql {
namespace {

using Kind = StatementRef::Kind;

std::vector<std::pair<Kind, std::string>> refs(std::string_view sql) {
  std::vector<std::pair<Kind, std::string>> out;
  for (const auto& r : scan_statement_refs(sql).refs) out.emplace_back(r.kind, r.name);
  return out;
}

TEST(SqlText, PrepareExecuteDeallocate) {
  using V = std::vector<std::pair<Kind, std::string>>;
  EXPECT_EQ(refs("PREPARE q AS SELECT 1"), (V{{Kind::prepare, "q"}}));
  EXPECT_EQ(refs("prepare Q(int) as select $1;"), (V{{Kind::prepare, "q"}}));
  EXPECT_EQ(refs("EXECUTE q"), (V{{Kind::execute, "q"}}));
  EXPECT_EQ(refs("execute \"Mixed Case\" (1, 'a')"), (V{{Kind::execute, "Mixed Case"}}));
  EXPECT_EQ(refs("DEALLOCATE q"), (V{{Kind::deallocate, "q"}}));
  EXPECT_EQ(refs("DEALLOCATE PREPARE q"), (V{{Kind::deallocate, "q"}}));
  EXPECT_EQ(refs("deallocate prepare"), (V{{Kind::deallocate, "prepare"}}));
  EXPECT_EQ(refs("DEALLOCATE ALL"), (V{{Kind::deallocate_all, ""}}));
  EXPECT_EQ(refs("DEALLOCATE \"all\""), (V{{Kind::deallocate, "all"}}));
  EXPECT_EQ(refs("DISCARD ALL"), (V{{Kind::discard_all, ""}}));
  EXPECT_TRUE(refs("DISCARD PLANS").empty());
  EXPECT_TRUE(refs("PREPARE TRANSACTION 'gid'").empty());
}

TEST(SqlText, ExecuteInsideExplainAndCreateTableAs) {
  using V = std::vector<std::pair<Kind, std::string>>;
  EXPECT_EQ(refs("EXPLAIN EXECUTE q(1)"), (V{{Kind::execute, "q"}}));
  EXPECT_EQ(refs("EXPLAIN ANALYZE VERBOSE EXECUTE q"), (V{{Kind::execute, "q"}}));
  EXPECT_EQ(refs("EXPLAIN (costs off, analyze) EXECUTE q"), (V{{Kind::execute, "q"}}));
  EXPECT_EQ(refs("CREATE TABLE t AS EXECUTE q(1)"), (V{{Kind::execute, "q"}}));
  EXPECT_EQ(refs("create temp table t (a, b) as execute q WITH NO DATA"), (V{{Kind::execute, "q"}}));
  EXPECT_EQ(refs("EXPLAIN ANALYZE CREATE TABLE t AS EXECUTE q"), (V{{Kind::execute, "q"}}));
  // EXECUTE that names no prepared statement.
  EXPECT_TRUE(refs("GRANT EXECUTE ON FUNCTION f() TO bob").empty());
  EXPECT_TRUE(refs("CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()").empty());
  EXPECT_TRUE(refs("SELECT execute FROM t").empty());
  EXPECT_TRUE(refs("CREATE FUNCTION f() RETURNS int AS $$ EXECUTE q $$ LANGUAGE sql").empty());
  EXPECT_TRUE(refs("CREATE VIEW v AS SELECT 1").empty());
}

TEST(SqlText, QuotesCommentsAndSeveralStatements) {
  using V = std::vector<std::pair<Kind, std::string>>;
  EXPECT_EQ(
      refs("SELECT 'EXECUTE a; x'; EXECUTE b; /* EXECUTE c; /* nested */ */ EXECUTE d -- ; EXECUTE e\n"),
      (V{{Kind::execute, "b"}, {Kind::execute, "d"}}));
  EXPECT_EQ(refs("SELECT E'it\\'s; EXECUTE x'; SELECT $tag$ ; EXECUTE y $tag$; EXECUTE z"),
            (V{{Kind::execute, "z"}}));
  EXPECT_EQ(refs("SELECT $1; EXECUTE w"), (V{{Kind::execute, "w"}}));
  EXPECT_EQ(refs("PREPARE a AS SELECT 1; EXECUTE a; DEALLOCATE a"),
            (V{{Kind::prepare, "a"}, {Kind::execute, "a"}, {Kind::deallocate, "a"}}));
  EXPECT_EQ(refs("SELECT \"a;b\"; EXECUTE \"x\"\"y\""), (V{{Kind::execute, "x\"y"}}));
  EXPECT_FALSE(scan_statement_refs("SELECT 'open").complete);
  EXPECT_FALSE(scan_statement_refs("SELECT $$ open").complete);
  EXPECT_FALSE(scan_statement_refs("/* open").complete);
  EXPECT_TRUE(scan_statement_refs("SELECT 1;;").complete);
  EXPECT_EQ(scan_statement_refs("SELECT 1;; SELECT 2;").statements, 2u);
}

TEST(SqlText, PositionsAndBody) {
  const std::string sql = "  PREPARE \"My\" (int) AS SELECT $1 ;  ";
  auto scan = scan_statement_refs(sql);
  ASSERT_EQ(scan.refs.size(), 1u);
  const auto& r = scan.refs[0];
  EXPECT_EQ(sql.substr(r.name_pos, r.name_len), "\"My\"");
  EXPECT_EQ(r.name, "My");
  EXPECT_EQ(r.body, "(int) AS SELECT $1");
  EXPECT_EQ(sql.substr(r.stmt_pos, r.stmt_len), "PREPARE \"My\" (int) AS SELECT $1");
}

TEST(SqlText, StringsAsTheSessionReadsThem) {
  using V = std::vector<std::pair<Kind, std::string>>;
  // With standard_conforming_strings off, \' does not end a string: PostgreSQL sees three statements.
  const std::string sql = "SELECT 'a\\' '; PREPARE x AS SELECT 1; SELECT ' \\' '";
  EXPECT_TRUE(refs(sql).empty());
  std::vector<std::pair<Kind, std::string>> off;
  for (const auto& r : scan_statement_refs(sql, {.backslash_quotes = true, .client_only_encoding = {}}).refs)
    off.emplace_back(r.kind, r.name);
  EXPECT_EQ(off, (V{{Kind::prepare, "x"}}));
  // In SJIS, 0x83 0x5C is one character (katakana SO): its second byte is no backslash.
  const std::string sjis = "SELECT E'\x83\x5c'; EXECUTE y; SELECT E'\x83\x5c'";
  std::vector<std::pair<Kind, std::string>> seen;
  for (const auto& r :
       scan_statement_refs(sjis, {.backslash_quotes = false, .client_only_encoding = "SJIS"}).refs)
    seen.emplace_back(r.kind, r.name);
  EXPECT_EQ(seen, (V{{Kind::execute, "y"}}));
  EXPECT_EQ(client_only_encoding("sjis"), "SJIS");
  EXPECT_EQ(client_only_encoding("Shift_JIS"), "SJIS");
  EXPECT_EQ(client_only_encoding("GB18030"), "GB18030");
  EXPECT_EQ(client_only_encoding("UTF8"), "");
  EXPECT_EQ(client_only_encoding("LATIN1"), "");
}

TEST(SqlText, CheapFilter) {
  EXPECT_FALSE(may_name_statements("SELECT abalance FROM pgbench_accounts WHERE aid = 1"));
  EXPECT_TRUE(may_name_statements("explain ExEcUtE q"));
  EXPECT_TRUE(may_name_statements("DEALLOCATE q"));
  EXPECT_TRUE(mentions_ci("xxCOMMIT", "commit"));
  EXPECT_FALSE(mentions_ci("comm", "commit"));
  EXPECT_EQ(count_chars("h\xc3\xa9llo"), 5u);
}

}  // namespace
}  // namespace pgward::protocol::sql

namespace pgward::protocol::sql {
namespace {

TEST(SqlText, CommitAndRollbackAreRecognisedOnlyAlone) {
  EXPECT_TRUE(is_commit("COMMIT"));
  EXPECT_TRUE(is_commit("  commit   work ; "));
  EXPECT_TRUE(is_commit("END TRANSACTION"));
  EXPECT_FALSE(is_commit("COMMIT PREPARED 'x'"));
  EXPECT_FALSE(is_commit("COMMIT; SELECT 1"));
  EXPECT_FALSE(is_commit("ROLLBACK"));
  EXPECT_TRUE(is_rollback("abort"));
  EXPECT_TRUE(is_rollback("Rollback Transaction;"));
  EXPECT_FALSE(is_rollback("ROLLBACK TO SAVEPOINT a"));
  EXPECT_EQ(short_command("Commit\tWork;"), "commit work");
  EXPECT_EQ(short_command(std::string(65, 'a')), "");
}

TEST(SqlText, MayCommitErrsTowardsYes) {
  EXPECT_TRUE(may_commit("SELECT 1; COMMIT"));
  EXPECT_TRUE(may_commit("PREPARE TRANSACTION 'gid'"));
  EXPECT_TRUE(may_commit("select * from weekend"));  // a false yes costs only 08007 for 08006
  EXPECT_FALSE(may_commit("INSERT INTO t VALUES (1)"));
}

}  // namespace
}  // namespace pgward::protocol::sql

namespace pgward::protocol::sql {
namespace {

TEST(SqlText, UnterminatedStringEndingInAnEscapeStaysInsideTheText) {
  // Found by fuzz_sql_text: a backslash, or a client-only encoding's lead byte, as the last byte of an
  // unterminated string stepped the scanner past the end, and the statement's range with it.
  for (const std::string& text :
       {std::string("PREPARE e AS SELECT E'abc\\"), std::string("PREPARE e AS SELECT '\xec")}) {
    Dialect d;
    d.backslash_quotes = true;
    d.client_only_encoding = "BIG5";
    const Scan scan = scan_statement_refs(text, d);
    EXPECT_FALSE(scan.complete);
    ASSERT_EQ(scan.refs.size(), 1u) << text;
    EXPECT_EQ(scan.refs[0].stmt_pos + scan.refs[0].stmt_len, text.size()) << text;
    EXPECT_LE(scan.refs[0].body.data() + scan.refs[0].body.size(), text.data() + text.size()) << text;
  }
}

}  // namespace
}  // namespace pgward::protocol::sql
