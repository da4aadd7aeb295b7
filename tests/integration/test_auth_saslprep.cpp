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

// A role requiring scram-sha-256 (kScramGroup) with a verifier PostgreSQL built; dropped at the end.
class ScramRole {
 public:
  explicit ScramRole(const std::string& password) : name_(unique_name("sasl")) {
    Conn direct = connect_direct("postgres");
    exec(direct, "SET password_encryption = 'scram-sha-256'");
    // No vector holds a quote or a backslash.
    exec(direct, "CREATE ROLE " + name_ + " LOGIN IN ROLE " + kScramGroup + " PASSWORD '" + password + "'");
    exec(direct, "GRANT ALL ON DATABASE " + std::string(kDatabase) + " TO " + name_);
  }
  ~ScramRole() {
    Conn direct = connect_direct("postgres");
    exec(direct, "DROP ROLE IF EXISTS " + name_, false);
  }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

std::string toml_string(const std::string& s) { return "\"" + s + "\""; }  // no '"' or '\' in the vectors

// pgward logs in to PostgreSQL with the password in [[database]]: SASLprep towards servers.
TEST(AuthSaslprep, ServerLoginMatchesPostgresVerifiers) {
  std::vector<std::unique_ptr<ScramRole>> roles;
  PgwardConfig config;
  config.databases.clear();
  for (std::size_t i = 0; i < spellings().size(); ++i) {
    roles.push_back(std::make_unique<ScramRole>(spellings()[i].at_postgres));
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
  std::vector<std::unique_ptr<ScramRole>> roles;
  PgwardConfig config;
  config.auth = "type = \"scram-sha-256\"\n";
  for (const Spelling& s : spellings()) {
    roles.push_back(std::make_unique<ScramRole>(s.at_postgres));
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
