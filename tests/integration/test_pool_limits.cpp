// max_user_connections and max_db_connections (PgBouncer's names): server connections counted across pools,
// 53300 for a client that cannot get one within wait_timeout, and the metrics that show the limit biting.
#include <string>

#include "harness.hpp"

namespace pgward::it {
namespace {

double limit_metric(const Pgward& pgward, const std::string& name, const std::string& limit,
                    const std::string& subject) {
  const HttpResponse r = http(pgward.admin_port(), "GET", "/metrics");
  return sample(r.body, name, "limit=\"" + limit + "\",name=\"" + subject + "\"").value_or(-1);
}

// Two databases served as one server user: their pools (4 servers each) share max_user_connections = 2.
TEST(PoolLimits, MaxUserConnectionsCountsAcrossDatabases) {
  PgwardConfig config;
  config.pool = "mode = \"transaction\"\nsize = 4\nwait_timeout = \"700ms\"\nmax_user_connections = 2\n";
  config.databases = PgwardConfig::database_toml("l1", kDatabase, "user = \"pgward_trust\"") +
                     PgwardConfig::database_toml("l2", kDatabase, "user = \"pgward_trust\"");
  Pgward pgward(config);
  Conn direct = connect_direct("postgres");
  Conn a = pgward.connect(kTrustUser, "l1");
  Conn b = pgward.connect(kTrustUser, "l2");
  Conn c = pgward.connect(kTrustUser, "l1");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());

  exec(a, "BEGIN");
  EXPECT_EQ(query_value(a, "SELECT 1"), "1");
  exec(b, "BEGIN");
  EXPECT_EQ(query_value(b, "SELECT 2"), "2");
  // l1's own pool has room for three more, but the user has its two.
  EXPECT_EQ(exec_sqlstate(c, "SELECT 3"), "53300") << PQerrorMessage(c);
  EXPECT_EQ(count_backends(direct, kTrustUser), 2);
  EXPECT_EQ(limit_metric(pgward, "pgward_connection_limit_servers", "max_user_connections", kTrustUser), 2);
  EXPECT_EQ(limit_metric(pgward, "pgward_connection_limit_max", "max_user_connections", kTrustUser), 2);
  EXPECT_GE(limit_metric(pgward, "pgward_connection_limit_waits_total", "max_user_connections", kTrustUser),
            1);

  // b's server goes back to l2's pool: c, waiting on l1, gets its unit (the l2 server is closed for it).
  exec(b, "COMMIT");
  EXPECT_EQ(query_value(c, "SELECT 4"), "4");
  EXPECT_LE(count_backends(direct, kTrustUser), 2);
  exec(a, "COMMIT");
  EXPECT_EQ(query_value(b, "SELECT 5"), "5");
  EXPECT_LE(count_backends(direct, kTrustUser), 2);
}

// One database, two server users (each client logs in as itself): max_db_connections = 1 in the [[database]].
TEST(PoolLimits, MaxDbConnectionsCountsAcrossUsers) {
  PgwardConfig config;
  config.pool = "mode = \"transaction\"\nsize = 4\nwait_timeout = \"700ms\"\n";
  config.databases = PgwardConfig::database_toml("l3", kDatabase, "max_db_connections = 1");
  Pgward pgward(config);
  Conn a = pgward.connect(kTrustUser, "l3");
  Conn b = pgward.connect("postgres", "l3");
  ASSERT_TRUE(a.ok() && b.ok());
  exec(a, "BEGIN");
  EXPECT_EQ(query_value(a, "SELECT 1"), "1");
  EXPECT_EQ(exec_sqlstate(b, "SELECT 2"), "53300") << PQerrorMessage(b);
  EXPECT_GE(limit_metric(pgward, "pgward_connection_limit_waits_total", "max_db_connections", "l3"), 1);
  exec(a, "COMMIT");
  EXPECT_EQ(query_value(b, "SELECT current_user"), "postgres");
  EXPECT_EQ(limit_metric(pgward, "pgward_connection_limit_servers", "max_db_connections", "l3"), 1);
}

}  // namespace
}  // namespace pgward::it
