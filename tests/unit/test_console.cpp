// The admin console's command parser and the flattening of the JSON views that SHOW CONFIG uses.
#include <gtest/gtest.h>

#include "admin/console.hpp"
#include "admin/internal.hpp"

namespace pgward::admin {
namespace {

using Words = std::vector<std::string>;

TEST(ConsoleCommand, WordsCaseAndSemicolon) {
  auto c = parse_console_command("  show   Pools ;  ");
  EXPECT_EQ(c.error, "");
  EXPECT_EQ(c.words, (Words{"show", "pools"}));
  EXPECT_EQ(c.original, (Words{"show", "Pools"}));
  c = parse_console_command("PAUSE \"My \"\"Db\"\"\"");
  EXPECT_EQ(c.words, (Words{"pause", "my \"db\""}));
  EXPECT_EQ(c.original, (Words{"PAUSE", "My \"Db\""}));
  EXPECT_TRUE(parse_console_command(" ; ").words.empty());
  EXPECT_TRUE(parse_console_command("").words.empty());
}

TEST(ConsoleCommand, Refusals) {
  EXPECT_EQ(parse_console_command("SHOW POOLS; SHOW CLIENTS").error,
            "the console runs one command at a time");
  EXPECT_EQ(parse_console_command("SHOW POOLS;;").error, "the console runs one command at a time");
  EXPECT_EQ(parse_console_command("PAUSE \"app").error, "unterminated quoted name");
}

TEST(FlattenJson, NestedObjectsArraysAndEscapes) {
  using Flat = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(flatten_json(R"({"a":{"b":1,"c":"x\"y\\z\n"},"l":["p","q"],"e":[],"n":null,"t":true})"),
            (Flat{{"a.b", "1"}, {"a.c", "x\"y\\z\n"}, {"l", "p, q"}, {"e", ""}, {"n", ""}, {"t", "true"}}));
  EXPECT_EQ(flatten_json(R"({"d":[{"name":"app"},{"name":"b"}]})"),
            (Flat{{"d[0].name", "app"}, {"d[1].name", "b"}}));
  EXPECT_EQ(flatten_json("{\"c\":\"\\u0001\"}"), (Flat{{"c", "\x01"}}));
  // Not JSON the views write: nothing.
  EXPECT_TRUE(flatten_json("{\"a\":").empty());
  EXPECT_TRUE(flatten_json("{\"a\":\"\\u00zz\"}").empty());
  EXPECT_TRUE(flatten_json("{\"a\":1}x").empty());
}

TEST(FlattenJson, TheConfigViewOfTheDefaults) {
  const auto flat = flatten_json(config_json(config::Config{}, {}, false));
  auto value = [&](const std::string& key) -> std::string {
    for (const auto& [k, v] : flat)
      if (k == key) return v;
    return "<none>";
  };
  EXPECT_EQ(value("proxy.listen"), "127.0.0.1:6432");
  EXPECT_EQ(value("pool.size"), "20");
  EXPECT_EQ(value("pool.mode"), "transaction");
  EXPECT_EQ(value("admin.console_users"), "");
  EXPECT_EQ(value("draining"), "false");
}

}  // namespace
}  // namespace pgward::admin
