// Readers and builders of the name-carrying frontend messages, and the error rewriting beside them.
#include <gtest/gtest.h>

#include "protocol/codec.hpp"
#include "protocol/error_text.hpp"
#include "protocol/frontend.hpp"

namespace pgward::protocol {
namespace {

std::string body_of(const std::string& message) { return message.substr(kHeaderSize); }

TEST(Frontend, ParseRoundTrip) {
  std::string m;
  const std::string tail("SELECT $1\0\0\1\0\0\0\x17", 16);
  put_parse(m, "s1", tail);
  EXPECT_EQ(m[0], fe::kParse);
  const std::string body = body_of(m);
  auto p = parse_parse(body);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->name, "s1");
  EXPECT_EQ(p->tail, tail);
  EXPECT_EQ(parse_text(m), "SELECT $1");
}

TEST(Frontend, ParseWithAWrongTypeCountIsRefused) {
  // Two parameter types announced, one present: refused before anything is stored or hashed.
  EXPECT_FALSE(parse_parse(std::string("s\0SELECT 1\0\0\2\0\0\0\x17", 17)));
  EXPECT_FALSE(parse_parse(std::string("no terminator")));
  EXPECT_FALSE(parse_parse(std::string("s\0SELECT 1\0", 11)));  // no count at all
  // 65,535 types is a count PostgreSQL accepts (it reads the Int16 unsigned); the length must match it.
  std::string many("\0q\0\xff\xff", 5);
  EXPECT_FALSE(parse_parse(many));
  many.append(65535 * 4, '\0');
  EXPECT_TRUE(parse_parse(many));
}

TEST(Frontend, BindRoundTrip) {
  std::string m;
  put_bind(m, "p", "s1", std::string("\0\0\0\0\0\0", 6));
  const std::string body = body_of(m);
  auto b = parse_bind(body);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->portal, "p");
  EXPECT_EQ(b->statement, "s1");
  EXPECT_EQ(b->rest.size(), 6u);
  EXPECT_FALSE(parse_bind(std::string("p\0s1", 4)));
}

TEST(Frontend, DescribeAndCloseTargets) {
  std::string d;
  put_describe(d, 'S', "s1");
  const std::string describe = body_of(d);
  auto t = parse_target(describe);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, 'S');
  EXPECT_EQ(t->name, "s1");
  std::string c;
  put_close(c, 'P', "");
  const std::string close = body_of(c);
  t = parse_target(close);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind, 'P');
  EXPECT_EQ(t->name, "");
  EXPECT_FALSE(parse_target(std::string("Xs1\0", 4)));       // neither statement nor portal
  EXPECT_FALSE(parse_target(std::string("Ss1\0extra", 9)));  // bytes after the name
}

TEST(Frontend, QueryTextOnlyOfAWholeQuery) {
  std::string q;
  put_query(q, "COMMIT");
  EXPECT_EQ(query_text(q), "COMMIT");
  EXPECT_EQ(query_text(q.substr(0, 3)), "");  // not whole
  std::string p;
  put_parse(p, "", std::string("COMMIT\0\0\0", 9));
  EXPECT_EQ(query_text(p), "");
  EXPECT_EQ(parse_text(q), "");
}

TEST(ErrorText, RewriteKeepsEveryOtherField) {
  std::string e;
  put_error_response(e, {"ERROR", "26000", "prepared statement \"pgw_missing\" does not exist", "d", "h"});
  const std::string out =
      body_of(rewrite_error(body_of(e), "42P05", "prepared statement \"s\" already exists"));
  auto fields = parse_fields(out);
  ASSERT_TRUE(fields);
  EXPECT_EQ(find_field(*fields, 'C'), "42P05");
  EXPECT_EQ(find_field(*fields, 'M'), "prepared statement \"s\" already exists");
  EXPECT_EQ(find_field(*fields, 'S'), "ERROR");
  EXPECT_EQ(find_field(*fields, 'D'), "d");
}

TEST(ErrorText, TranslatePutsTheClientsNamesBack) {
  std::string e;
  put_error_response(e, {"ERROR", "42P05", "prepared statement \"pgw_q0123\" already exists"});
  const std::string out = body_of(translate_error(body_of(e), {{"pgw_q0123", "mine", 8, 9, 4}}));
  auto fields = parse_fields(out);
  ASSERT_TRUE(fields);
  EXPECT_EQ(find_field(*fields, 'M'), "prepared statement \"mine\" already exists");
  EXPECT_EQ(translate_error("garbage without terminator", {}), "");
}

TEST(ErrorText, FatalMessageOnlyForFatalAndPanic) {
  std::string f;
  put_error_response(f, {"FATAL", "57P01", "terminating connection due to administrator command"});
  EXPECT_EQ(fatal_message(body_of(f)), "terminating connection due to administrator command");
  std::string e;
  put_error_response(e, {"ERROR", "22012", "division by zero"});
  EXPECT_EQ(fatal_message(body_of(e)), std::nullopt);
}

}  // namespace
}  // namespace pgward::protocol
