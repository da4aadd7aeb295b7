// The `*` fallback database: any database name not listed is served with the fallback's settings, under its
// own name, in pools of its own.
#include <string>

#include "harness.hpp"

namespace pgward::it {
namespace {

TEST(Fallback, TwoDatabaseNamesThroughTheFallbackGetTheirOwnDatabaseAndPool) {
  Conn direct = connect_direct();
  ASSERT_TRUE(direct.ok());
  const std::string other = unique_name("fallback_db");
  exec(direct, "CREATE DATABASE " + other);
  {
    PgwardConfig config;
    config.databases =
        "[[database]]\nname = \"*\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(pg_port()) + "\n";
    Pgward pgward(config);

    Conn app = pgward.connect(kTrustUser, kDatabase);
    ASSERT_TRUE(app.ok());
    EXPECT_EQ(query_value(app, "SELECT current_database()"), kDatabase);
    Conn second = pgward.connect(kTrustUser, other);
    ASSERT_TRUE(second.ok());
    EXPECT_EQ(query_value(second, "SELECT current_database()"), other);
    EXPECT_EQ(query_value(app, "SELECT current_database()"), kDatabase);

    const auto pools = http(pgward.admin_port(), "GET", "/api/pools");
    EXPECT_NE(pools.body.find("\"database\":\"" + std::string(kDatabase) + "\""), std::string::npos)
        << pools.body;
    EXPECT_NE(pools.body.find("\"database\":\"" + other + "\""), std::string::npos) << pools.body;
    EXPECT_EQ(pools.body.find("\"database\":\"*\""), std::string::npos) << pools.body;
    EXPECT_EQ(http(pgward.admin_port(), "GET", "/health/ready").status, 200);

    // "*" names the fallback, not a database.
    Conn star = Conn::connect(pgward.conninfo(kTrustUser, "*"));
    EXPECT_FALSE(star.ok());
    EXPECT_EQ(star.connect_sqlstate(), "3D000") << star.error();
  }
  exec(direct, "DROP DATABASE " + other + " WITH (FORCE)");
}

TEST(Fallback, DatabaseNamesThroughTheFallbackAreBounded) {
  PgwardConfig config;
  config.proxy += "max_fallback_databases = 1\n";
  config.databases =
      "[[database]]\nname = \"*\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(pg_port()) + "\n";
  Pgward pgward(config);
  Conn first = pgward.connect(kTrustUser, kDatabase);
  ASSERT_TRUE(first.ok());
  // Every further name would be a pool for ever: refused, whether or not the database exists.
  for (int i = 0; i < 3; ++i) {
    Conn more = Conn::connect(pgward.conninfo(kTrustUser, unique_name("nope")));
    EXPECT_FALSE(more.ok());
    EXPECT_EQ(more.connect_sqlstate(), "53300") << more.error();
  }
  Conn again = pgward.connect(kTrustUser, kDatabase);  // a name already served still is
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(query_value(again, "SELECT 1"), "1");
  EXPECT_EQ(sample(http(pgward.admin_port(), "GET", "/metrics").body,
                   "pgward_client_connections_refused_total", "reason=\"max_fallback_databases\"")
                .value_or(-1),
            3);
}

}  // namespace
}  // namespace pgward::it
