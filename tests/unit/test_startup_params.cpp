// protocol/startup_params.hpp: what a startup packet asks for, against PostgreSQL's own rules
// (pg_split_opts(), ParseLongOption(), process_startup_options() and the spelling of the GUC names it
// reports).
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "protocol/startup_params.hpp"

namespace pgward::protocol {
namespace {

using Settings = std::vector<Setting>;

TEST(StartupParams, CanonicalNames) {
  EXPECT_EQ(canonical_param_name("intervalstyle"), "IntervalStyle");
  EXPECT_EQ(canonical_param_name("INTERVALSTYLE"), "IntervalStyle");
  EXPECT_EQ(canonical_param_name("datestyle"), "DateStyle");
  EXPECT_EQ(canonical_param_name("DateStyle"), "DateStyle");
  EXPECT_EQ(canonical_param_name("timezone"), "TimeZone");
  EXPECT_EQ(canonical_param_name("TIMEZONE"), "TimeZone");
  EXPECT_EQ(canonical_param_name("Application_Name"), "application_name");
  EXPECT_EQ(canonical_param_name("Extra_Float_Digits"), "extra_float_digits");
  EXPECT_EQ(canonical_param_name("MyApp.Tenant"), "myapp.tenant");
  // Only whole names match: a prefix or a longer name is not DateStyle.
  EXPECT_EQ(canonical_param_name("datestyles"), "datestyles");
  EXPECT_EQ(canonical_param_name("Timezone_Abbreviations"), "timezone_abbreviations");
}

TEST(StartupParams, OptionsAsPostgresSplitsThem) {
  EXPECT_EQ(
      parse_options("-c intervalstyle=postgres_verbose -c timezone=PST8PDT -c datestyle=Postgres,MDY"),
      (Settings{
          {"IntervalStyle", "postgres_verbose"}, {"TimeZone", "PST8PDT"}, {"DateStyle", "Postgres,MDY"}}));
  EXPECT_EQ(parse_options("-cDateStyle=ISO --statement-timeout=5s"),
            (Settings{{"DateStyle", "ISO"}, {"statement_timeout", "5s"}}));
  // White space of every kind separates, a backslash keeps the next character, a trailing one is dropped.
  EXPECT_EQ(parse_options(" \t-c\r\napplication_name=a\\ b\\\\c\f\v"),
            (Settings{{"application_name", "a b\\c"}}));
  EXPECT_EQ(parse_options("-c search_path=x\\"), (Settings{{"search_path", "x"}}));
  EXPECT_EQ(parse_options(""), Settings{});
  EXPECT_EQ(parse_options("   "), Settings{});
  // Only the value keeps its dashes and case.
  EXPECT_EQ(parse_options("-c My-Setting.X=A-B"), (Settings{{"my_setting.x", "A-B"}}));
}

TEST(StartupParams, OptionsRefused) {
  for (const char* bad :
       {"-c", "-c name", "-c =x", "--", "--name", "-B 100", "-e", "name=value", "-c x=1 -d 5"})
    EXPECT_FALSE(parse_options(bad).has_value()) << bad;
}

TEST(StartupParams, PacketParametersOverrideOptions) {
  StartupPacket packet;
  packet.params = {{"user", "alice"},
                   {"database", "app"},
                   {"options", "-c timezone=UTC -c datestyle=ISO -c intervalstyle=iso_8601"},
                   {"TIMEZONE", "Asia/Tokyo"},
                   {"application_name", "psql"},
                   {"_pq_.something", "1"},
                   {"replication", "false"}};
  const auto settings = startup_settings(packet);
  ASSERT_TRUE(settings.has_value());
  // In the order PostgreSQL applies them: a later value of the same name wins.
  EXPECT_EQ(*settings, (Settings{{"TimeZone", "UTC"},
                                 {"DateStyle", "ISO"},
                                 {"IntervalStyle", "iso_8601"},
                                 {"TimeZone", "Asia/Tokyo"},
                                 {"application_name", "psql"}}));
}

TEST(StartupParams, ConnectionParametersAreExactNames) {
  EXPECT_TRUE(is_connection_param("user"));
  EXPECT_TRUE(is_connection_param("database"));
  EXPECT_TRUE(is_connection_param("options"));
  EXPECT_TRUE(is_connection_param("replication"));
  EXPECT_TRUE(is_connection_param("_pq_.x"));
  // PostgreSQL compares these with strcmp(): "User" is a (non-existent) setting, not the user name.
  EXPECT_FALSE(is_connection_param("User"));
  EXPECT_FALSE(is_connection_param("TimeZone"));
}

TEST(StartupParams, BadOptionsRefuseThePacket) {
  StartupPacket packet;
  packet.params = {{"user", "alice"}, {"options", "-D /tmp"}};
  EXPECT_FALSE(startup_settings(packet).has_value());
}

}  // namespace
}  // namespace pgward::protocol
