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

}  // namespace
}  // namespace pgward::it
