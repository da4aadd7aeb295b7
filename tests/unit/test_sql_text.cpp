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

namespace pgward::protocol::sql {
namespace {

// session_effects() on `sql`, checking on the way that the cheap pre-test lets through whatever it finds.
SessionEffects effects(std::string_view sql, const Dialect& dialect = {}) {
  const SessionEffects e = session_effects(sql, dialect);
  if (!may_touch_session(sql)) {
    EXPECT_FALSE(e.settings || e.resets || e.releases || e.pin != Pin::none) << sql;
  }
  EXPECT_LE(e.pin_pos + e.pin_len, sql.size()) << sql;
  return e;
}

bool settings(std::string_view sql) { return effects(sql).settings; }
bool resets(std::string_view sql) { return effects(sql).resets; }
bool releases(std::string_view sql) { return effects(sql).releases; }
Pin pin(std::string_view sql) { return effects(sql).pin; }
bool nothing(std::string_view sql) {
  const SessionEffects e = effects(sql);
  return !e.settings && !e.resets && !e.releases && e.pin == Pin::none && e.complete;
}

TEST(SessionEffects, SetChangesTheSession) {
  EXPECT_TRUE(settings("SET search_path = a"));
  EXPECT_TRUE(settings("set Search_Path to a, b"));
  EXPECT_TRUE(settings("SET/**/search_path TO x"));
  EXPECT_TRUE(settings("  -- comment\n  sEt /* a /* nested */ one */ work_mem = '1MB';"));
  EXPECT_TRUE(settings("SET SESSION statement_timeout = 0"));
  EXPECT_TRUE(settings("SET ROLE bob"));
  EXPECT_TRUE(settings("SET SESSION AUTHORIZATION bob"));
  EXPECT_TRUE(settings("SET TIME ZONE 'UTC'"));
  EXPECT_TRUE(settings("SET SCHEMA 'x'"));
  EXPECT_TRUE(settings("SET NAMES 'UTF8'"));
  EXPECT_TRUE(settings("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"));
  EXPECT_TRUE(settings("RESET search_path"));
  EXPECT_TRUE(settings("DISCARD PLANS"));
  EXPECT_TRUE(settings("SELECT set_config('search_path', 'x', false)"));
  EXPECT_TRUE(settings("select 1 from t where pg_catalog.SET_CONFIG('a.b', 'c', false) is not null"));
  EXPECT_TRUE(settings("SELECT \"set_config\"('a.b', 'c', false)"));
  EXPECT_TRUE(settings("SELECT 1; SET x = 1"));
  EXPECT_TRUE(settings("BEGIN; SET x = 1; COMMIT"));
  // Transaction-scoped, or no SET command at all.
  EXPECT_TRUE(nothing("SET LOCAL search_path = a"));
  EXPECT_TRUE(nothing("set local statement_timeout to 0"));
  EXPECT_TRUE(nothing("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"));
  EXPECT_TRUE(nothing("SET CONSTRAINTS ALL DEFERRED"));
  EXPECT_TRUE(nothing("UPDATE t SET x = 1"));
  EXPECT_TRUE(nothing("ALTER TABLE t ALTER c SET DEFAULT 1"));
  EXPECT_TRUE(nothing("CREATE FUNCTION f() RETURNS int SET search_path = x AS $$ SELECT 1 $$ LANGUAGE sql"));
  EXPECT_TRUE(nothing("SELECT 'SET x = 1'"));
  EXPECT_TRUE(nothing("SELECT $$; SET x = 1; $$"));
  EXPECT_TRUE(nothing("SELECT $q$ SET x = 1 $q$"));
  EXPECT_TRUE(nothing("SELECT 1 /* ; SET x = 1 */"));
  EXPECT_TRUE(nothing("SELECT 1 -- ; SET x = 1"));
  EXPECT_TRUE(nothing("\"set\" x = 1"));
  EXPECT_TRUE(nothing("SELECT \"set\" FROM t"));
  EXPECT_TRUE(nothing("SELECT set_config_x FROM t"));
  EXPECT_TRUE(nothing("SELECT E'\\'; SET x = 1; '"));
  EXPECT_TRUE(nothing("SELECT U&'; SET x = 1'"));
}

TEST(SessionEffects, StringsAsTheSessionReadsThem) {
  // Standard strings: 'a\' ends at its second quote, and the next string holds the SET.
  const std::string sql = "SELECT 'a\\' '; SET x = 1; SELECT ' \\' '";
  EXPECT_TRUE(nothing(sql));
  // standard_conforming_strings off: \' does not end a string, and the SET stands between two of them.
  const Dialect off{.backslash_quotes = true, .client_only_encoding = {}};
  const SessionEffects e = effects(sql, off);
  EXPECT_TRUE(e.settings);
  EXPECT_TRUE(e.complete);
  EXPECT_TRUE(effects("SELECT 'a'; SET x = 1", off).settings);
  // SJIS: 0x83 0x5C is one character, its 0x5C no backslash.
  const Dialect sjis{.backslash_quotes = false, .client_only_encoding = "SJIS"};
  EXPECT_TRUE(effects("SELECT E'\x83\x5c'; SET x = 1", sjis).settings);
  EXPECT_FALSE(effects("SELECT E'\x83\x5c'; SET x = 1").complete);
}

TEST(SessionEffects, Resets) {
  EXPECT_TRUE(resets("RESET ALL"));
  EXPECT_TRUE(resets("reset search_path"));
  EXPECT_TRUE(resets("SET search_path TO DEFAULT"));
  EXPECT_TRUE(resets("SET SESSION work_mem = default"));
  EXPECT_TRUE(resets("SET a.b = DEFAULT"));
  EXPECT_TRUE(resets("SET TIME ZONE LOCAL"));
  EXPECT_TRUE(resets("SET TIME ZONE DEFAULT"));
  EXPECT_TRUE(resets("SET ROLE NONE"));
  EXPECT_TRUE(resets("SET SESSION AUTHORIZATION DEFAULT"));
  EXPECT_TRUE(resets("DISCARD ALL"));
  EXPECT_TRUE(resets("DO $$ BEGIN END $$"));
  EXPECT_FALSE(resets("SET search_path TO a"));
  EXPECT_FALSE(resets("SET search_path TO 'default'"));
  EXPECT_FALSE(resets("SET search_path TO \"default\""));
  EXPECT_FALSE(resets("SET TIME ZONE 'UTC'"));
  EXPECT_FALSE(resets("SET LOCAL search_path TO DEFAULT"));
  EXPECT_FALSE(resets("DISCARD PLANS"));
}

TEST(SessionEffects, Releases) {
  EXPECT_TRUE(releases("UNLISTEN *"));
  EXPECT_TRUE(releases("unlisten ch"));
  EXPECT_TRUE(releases("DISCARD TEMP"));
  EXPECT_TRUE(releases("DISCARD ALL"));
  EXPECT_TRUE(releases("DROP TABLE pg_temp.t"));
  EXPECT_TRUE(releases("CLOSE ALL"));
  EXPECT_TRUE(releases("SELECT pg_advisory_unlock_all()"));
  EXPECT_TRUE(releases("SELECT pg_advisory_unlock(1)"));
  EXPECT_TRUE(releases("SELECT pg_advisory_unlock_shared(1, 2)"));
  EXPECT_TRUE(releases("COMMIT PREPARED 'gid'"));
  EXPECT_TRUE(releases("DO $$ BEGIN PERFORM pg_advisory_unlock_all(); END $$"));
  EXPECT_TRUE(nothing("SELECT 'UNLISTEN *'"));
  EXPECT_TRUE(nothing("SELECT drop FROM t"));
  EXPECT_TRUE(nothing("COMMIT"));
}

TEST(SessionEffects, TempPins) {
  EXPECT_EQ(pin("CREATE TEMP TABLE t (a int)"), Pin::temp);
  EXPECT_EQ(pin("create temporary table t as select 1"), Pin::temp);
  EXPECT_EQ(pin("CREATE LOCAL TEMPORARY TABLE t (a int)"), Pin::temp);
  EXPECT_EQ(pin("CREATE GLOBAL TEMP TABLE t (a int)"), Pin::temp);
  EXPECT_EQ(pin("CREATE OR REPLACE TEMP VIEW v AS SELECT 1"), Pin::temp);
  EXPECT_EQ(pin("CREATE TEMP SEQUENCE s"), Pin::temp);
  EXPECT_EQ(pin("CREATE TABLE pg_temp.t (a int)"), Pin::temp);
  EXPECT_EQ(pin("CREATE TABLE \"pg_temp\".t (a int)"), Pin::temp);
  EXPECT_EQ(pin("CREATE FUNCTION pg_temp.f() RETURNS int AS 'select 1' LANGUAGE sql"), Pin::temp);
  EXPECT_EQ(pin("SELECT * INTO TEMP t FROM x"), Pin::temp);
  EXPECT_EQ(pin("SELECT * INTO TEMPORARY TABLE t FROM x"), Pin::temp);
  EXPECT_EQ(pin("SELECT 1 AS a INTO LOCAL TEMP t"), Pin::temp);
  EXPECT_EQ(pin("WITH q AS (SELECT 1) SELECT * INTO TEMP t FROM q"), Pin::temp);
  EXPECT_EQ(pin("EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1"), Pin::temp);
  EXPECT_EQ(pin("EXPLAIN (ANALYZE, BUFFERS) CREATE TEMP TABLE t AS SELECT 1"), Pin::temp);
  // Look-alikes.
  EXPECT_TRUE(nothing("SELECT * FROM pg_temp.t"));
  EXPECT_TRUE(nothing("SELECT * INTO t FROM x"));
  EXPECT_TRUE(nothing("CREATE TABLE temp_x (a int)"));
  EXPECT_TRUE(nothing("CREATE TABLE \"temp\" (a int)"));
  EXPECT_TRUE(nothing("CREATE \"TEMP\" TABLE t (a int)"));
  EXPECT_TRUE(nothing("CREATE TABLE t (temp int)"));
  EXPECT_TRUE(nothing("INSERT INTO temp VALUES (1)"));
  EXPECT_TRUE(nothing("CREATE TABLE pg_temporary.t (a int)"));
  EXPECT_TRUE(nothing("CREATE TABLE t (a text DEFAULT 'pg_temp')"));
  EXPECT_TRUE(nothing("SELECT temp FROM t"));
}

TEST(SessionEffects, OtherPins) {
  EXPECT_EQ(pin("LISTEN ch"), Pin::listen);
  EXPECT_EQ(pin("listen \"Ch\""), Pin::listen);
  EXPECT_EQ(pin("SELECT pg_advisory_lock(1)"), Pin::advisory_lock);
  EXPECT_EQ(pin("SELECT PG_ADVISORY_LOCK_SHARED(1)"), Pin::advisory_lock);
  EXPECT_EQ(pin("SELECT pg_try_advisory_lock(1, 2)"), Pin::advisory_lock);
  EXPECT_EQ(pin("SELECT pg_catalog.pg_try_advisory_lock_shared(1)"), Pin::advisory_lock);
  EXPECT_EQ(pin("SELECT \"pg_advisory_lock\"(1)"), Pin::advisory_lock);
  EXPECT_EQ(pin("DECLARE c CURSOR WITH HOLD FOR SELECT 1"), Pin::cursor);
  EXPECT_EQ(pin("declare c no scroll cursor with /* x */ hold for select 1"), Pin::cursor);
  EXPECT_EQ(pin("LOAD 'auto_explain'"), Pin::load);
  EXPECT_EQ(pin("PREPARE TRANSACTION 'gid'"), Pin::prepared_transaction);
  // Look-alikes.
  EXPECT_TRUE(nothing("NOTIFY listen"));
  EXPECT_TRUE(nothing("SELECT listen FROM t"));
  EXPECT_TRUE(nothing("SELECT pg_advisory_xact_lock(1)"));
  EXPECT_TRUE(nothing("SELECT pg_try_advisory_xact_lock_shared(1)"));
  EXPECT_TRUE(nothing("SELECT pg_advisory_lock_x(1)"));
  EXPECT_TRUE(nothing("SELECT 'pg_advisory_lock(1)'"));
  EXPECT_TRUE(nothing("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1"));
  EXPECT_TRUE(nothing("DECLARE c CURSOR FOR SELECT 1"));
  EXPECT_TRUE(nothing("DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold"));
  EXPECT_TRUE(nothing("SELECT load FROM t"));
  EXPECT_TRUE(nothing("PREPARE transaction AS SELECT 1"));
  EXPECT_TRUE(nothing("SELECT * FROM prepared_xacts"));
}

TEST(SessionEffects, DoBlocks) {
  const SessionEffects plain = effects("DO $$ BEGIN RAISE NOTICE 'hi'; END $$");
  EXPECT_TRUE(plain.settings);
  EXPECT_TRUE(plain.resets);
  EXPECT_EQ(plain.pin, Pin::none);
  EXPECT_EQ(pin("DO $$ BEGIN CREATE TEMP TABLE t (a int); END $$"), Pin::temp);
  EXPECT_EQ(pin("DO LANGUAGE plpgsql $body$ BEGIN PERFORM pg_advisory_lock(1); END $body$"),
            Pin::advisory_lock);
  EXPECT_EQ(pin("DO 'BEGIN EXECUTE ''LISTEN ch''; END' LANGUAGE plpgsql"), Pin::listen);
  EXPECT_EQ(pin("DO E'BEGIN\\nLOAD ''x''; END'"), Pin::load);
  EXPECT_EQ(pin("do $$ declare c cursor with hold for select 1; begin end $$"), Pin::cursor);
  EXPECT_EQ(pin("DO $$ BEGIN CREATE TABLE \"pg_temp\".t (); END $$"), Pin::temp);
  EXPECT_EQ(pin("DO $$ BEGIN PERFORM pg_advisory_xact_lock(1); END $$"), Pin::none);
  EXPECT_EQ(pin("DO $$ BEGIN RAISE NOTICE 'temperature'; END $$"), Pin::none);
  // Not a DO block.
  EXPECT_TRUE(nothing("SELECT 'do $$ listen x $$'"));
  EXPECT_TRUE(nothing("CREATE FUNCTION f() RETURNS void AS $$ BEGIN LISTEN x; END $$ LANGUAGE plpgsql"));
}

TEST(SessionEffects, PinnedStatementPosition) {
  const std::string sql = "SELECT 1; SET x = 1 ;  LISTEN a /* c */ ; SELECT pg_advisory_lock(1)";
  const SessionEffects e = effects(sql);
  EXPECT_TRUE(e.settings);
  EXPECT_EQ(e.pin, Pin::listen);
  EXPECT_EQ(sql.substr(e.pin_pos, e.pin_len), "LISTEN a");
  const std::string explain = "select 1;\n EXPLAIN ANALYZE SELECT * INTO TEMP t FROM x";
  const SessionEffects x = effects(explain);
  EXPECT_EQ(x.pin, Pin::temp);
  EXPECT_EQ(explain.substr(x.pin_pos, x.pin_len), "EXPLAIN ANALYZE SELECT * INTO TEMP t FROM x");
  EXPECT_EQ(pin_name(Pin::none), "");
  EXPECT_EQ(pin_name(Pin::temp), "temp");
  EXPECT_EQ(pin_name(Pin::listen), "listen");
  EXPECT_EQ(pin_name(Pin::advisory_lock), "advisory_lock");
  EXPECT_EQ(pin_name(Pin::cursor), "cursor");
  EXPECT_EQ(pin_name(Pin::load), "load");
  EXPECT_EQ(pin_name(Pin::prepared_transaction), "prepared_transaction");
}

TEST(SessionEffects, UnterminatedText) {
  EXPECT_FALSE(effects("SET x = 'open").complete);
  EXPECT_FALSE(effects("SELECT 1 /* open").complete);
  EXPECT_FALSE(effects("SELECT \"open").complete);
  EXPECT_FALSE(effects("DO $$ BEGIN LISTEN x").complete);
  EXPECT_TRUE(effects("SET x = 1;").complete);
  const std::string sql = "SELECT 1; LISTEN a; SELECT 'x";
  const SessionEffects e = effects(sql);
  EXPECT_EQ(e.pin, Pin::listen);
  EXPECT_EQ(sql.substr(e.pin_pos, e.pin_len), "LISTEN a");
}

TEST(SessionEffects, CheapFilter) {
  EXPECT_FALSE(may_touch_session("SELECT abalance FROM pgbench_accounts WHERE aid = $1"));
  EXPECT_FALSE(
      may_touch_session("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2") &&
      session_effects("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2").settings);
  EXPECT_TRUE(may_touch_session("sEt x = 1"));
  EXPECT_TRUE(may_touch_session("SELECT pg_try_advisory_lock(1)"));
  EXPECT_TRUE(nothing(""));
  EXPECT_TRUE(nothing(" ; ;"));
}

}  // namespace
TEST(SessionEffects, CustomSettingNames) {
  auto names = [](std::string_view sql) {
    std::vector<std::string> out;
    custom_setting_names(sql, out);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(names("SET app.tenant = 'a'"), V{"app.tenant"});
  EXPECT_EQ(names("set SESSION App.Tenant TO 'a'; RESET my.x"), (V{"app.tenant", "my.x"}));
  EXPECT_EQ(names("SELECT pg_catalog.set_config ( 'app.user' , $1, false)"), V{"app.user"});
  EXPECT_EQ(names("SELECT set_config(E'a.b', 'x', false), set_config('a.b', 'y', false)"), V{"a.b"});
  EXPECT_EQ(names("DO $$BEGIN PERFORM set_config('t.id', '1', false); SET x.y = 2; END$$"),
            (V{"t.id", "x.y"}));
  // Names without a dot are not custom settings; a word ending in "set" is no SET.
  EXPECT_EQ(names("SET search_path = a; SELECT offset.x; RESET ALL"), V{});
  EXPECT_EQ(names("SET .x = 1; SET x. = 1"), V{});
  // Bounded per name: no name over 128 bytes.
  EXPECT_EQ(names("SET a." + std::string(200, 'b') + " = 1"), V{});
}

}  // namespace pgward::protocol::sql
