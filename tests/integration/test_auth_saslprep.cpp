// SASLprep against PostgreSQL's own verifiers: roles whose non-ASCII passwords PostgreSQL turned into SCRAM
// verifiers (CREATE ROLE ... PASSWORD), logged in to through pgward. Each password pgward holds is spelled
// differently from the one PostgreSQL was given but is the same after SASLprep, or is one SASLprep refuses
// (then both sides must hash the raw bytes), so the logins succeed only when pgward prepares exactly as
// PostgreSQL and libpq do.
#include <memory>
#include <string>
#include <vector>

#include "harness.hpp"

namespace pgward::it {
namespace {

struct Spelling {
  const char* at_postgres;  // the password given to CREATE ROLE
  const char* in_pgward;    // the same password as pgward holds or a client types it
};

const std::vector<Spelling>& spellings() {
  static const std::vector<Spelling> kSpellings = {
      {"p\u00E4ss\u2168", "pa\u0308ssIX"},  // NFC vs decomposed, ROMAN NUMERAL NINE vs "IX"
      {"\uFF30\uFF47\u00A0!", "Pg !"},      // fullwidth letters, NO-BREAK SPACE
      {"I\u00ADX\u00E9", "IXe\u0301"},      // SOFT HYPHEN mapped to nothing
      {"a\u0340x", "a\u0340x"},             // refused by PostgreSQL's SASLprep: raw bytes on both sides
      {"\u0627\u0031", "\u0627\u0031"},     // fails the bidi check: raw bytes
  };
  return kSpellings;
}

std::string toml_string(const std::string& s) { return "\"" + s + "\""; }  // no '"' or '\' in the vectors

// pgward logs in to PostgreSQL with the password in [[database]]: SASLprep towards servers.
TEST(AuthSaslprep, ServerLoginMatchesPostgresVerifiers) {
  std::vector<std::unique_ptr<TestRole>> roles;
  PgwardConfig config;
  config.databases.clear();
  for (std::size_t i = 0; i < spellings().size(); ++i) {
    roles.push_back(std::make_unique<TestRole>(spellings()[i].at_postgres, "scram-sha-256", true));
    config.databases += PgwardConfig::database_toml(
        "db" + std::to_string(i), kDatabase,
        "user = \"" + roles[i]->name() + "\"\npassword = " + toml_string(spellings()[i].in_pgward));
  }
  Pgward pgward(config);
  for (std::size_t i = 0; i < spellings().size(); ++i) {
    SCOPED_TRACE(spellings()[i].in_pgward);
    Conn conn = pgward.connect(kTrustUser, "db" + std::to_string(i));
    ASSERT_TRUE(conn.ok()) << conn.error();
    EXPECT_EQ(query_value(conn, "SELECT current_user"), roles[i]->name());
  }
}

// A client logs in with SCRAM against a plain password in the users file, typed in the other spelling:
// libpq prepares what it sends, pgward the verifier it derives. pgward then logs in to PostgreSQL with the
// users-file password, whose verifier PostgreSQL built from the first spelling.
TEST(AuthSaslprep, ClientLoginWithPlainPasswordInUsersFile) {
  std::vector<std::unique_ptr<TestRole>> roles;
  PgwardConfig config;
  config.auth = "type = \"scram-sha-256\"\n";
  for (const Spelling& s : spellings()) {
    roles.push_back(std::make_unique<TestRole>(s.at_postgres, "scram-sha-256", true));
    config.users += roles.back()->name() + " = " + toml_string(s.at_postgres) + "\n";
  }
  Pgward pgward(config);
  for (std::size_t i = 0; i < spellings().size(); ++i) {
    SCOPED_TRACE(spellings()[i].in_pgward);
    for (const char* typed : {spellings()[i].in_pgward, spellings()[i].at_postgres}) {
      Conn conn = pgward.connect(roles[i]->name(), kDatabase, typed);
      ASSERT_TRUE(conn.ok()) << conn.error();
      EXPECT_EQ(query_value(conn, "SELECT current_user"), roles[i]->name());
    }
    Conn wrong = Conn::connect(pgward.conninfo(roles[i]->name(), kDatabase, "pass"));
    EXPECT_FALSE(wrong.ok());
    EXPECT_EQ(wrong.connect_sqlstate(), "28P01") << wrong.error();
  }
}

}  // namespace
}  // namespace pgward::it
