#include "tls_env.hpp"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>

#include "harness.hpp"

namespace pgward::it {

namespace {

constexpr const char* kMakeCerts = R"sh(
set -eu
cd "$1"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.crt -days 3 -subj "/CN=pgward test CA"
openssl req -x509 $ec -keyout other_ca.key -out other_ca.crt -days 3 -subj "/CN=another CA"
leaf() {  # name, CN, issuer, extensions
  openssl req -new $ec -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -out "$1.crt" -days 2 \
    -extfile "$1.ext"
}
leaf pg localhost ca "subjectAltName=DNS:localhost"
leaf pgward localhost ca "subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf client pgward_trust ca "basicConstraints=CA:FALSE"
leaf stranger someone_else ca "basicConstraints=CA:FALSE"
leaf cert_user pgward_cert ca "basicConstraints=CA:FALSE"
leaf rogue pgward_trust other_ca "basicConstraints=CA:FALSE"
# Certificates out of their validity period, for the keys above: `openssl ca` sets any notBefore/notAfter.
mkdir ca.db
: > ca.db/index.txt
echo 1000 > ca.db/serial
printf '%s\n' "[ca]" "default_ca = test" "[test]" "database = ca.db/index.txt" "serial = ca.db/serial" \
  "new_certs_dir = ca.db" "certificate = ca.crt" "private_key = ca.key" "default_md = sha256" "policy = any" \
  "unique_subject = no" "[any]" "commonName = supplied" > ca.cnf
dated() {  # name, the leaf whose request and key it takes, notBefore, notAfter, extensions
  printf '%s\n' "[ext]" "$5" > "$1.ext"
  openssl ca -batch -notext -config ca.cnf -in "$2.csr" -out "$1.crt" -startdate "$3" -enddate "$4" \
    -extfile "$1.ext" -extensions ext
  cp "$2.key" "$1.key"
}
past="20200101000000Z 20200102000000Z"
future="20990101000000Z 20991231000000Z"
dated pgward_expired pgward $past "subjectAltName=DNS:localhost,IP:127.0.0.1"
dated pg_expired pg $past "subjectAltName=DNS:localhost"
dated pg_future pg $future "subjectAltName=DNS:localhost"
dated client_expired client $past "basicConstraints=CA:FALSE"
dated client_future client $future "basicConstraints=CA:FALSE"
chmod 600 ./*.key
chmod 644 ./*.crt
chmod 755 .
)sh";

TlsFiles make_files() {
  TlsFiles files;
  files.dir = make_temp_directory("pgward-it-tls");
  const std::string log = files.dir + "/openssl.log";
  const int rc = run_program({"/bin/sh", "-c", kMakeCerts, "make-certs", files.dir}, log);
  if (rc != 0) throw std::runtime_error("making test certificates failed:\n" + read_text_file(log));
  return files;
}

struct TlsPostgres {
  std::string dir;
  int port = 0;
  pid_t pid = -1;
};

TlsPostgres& tls_postgres() {
  static TlsPostgres pg;
  return pg;
}

void stop_tls_postgres() {
  auto& pg = tls_postgres();
  if (pg.pid > 0) {
    // pg_ctl signals the postmaster itself. pg.pid is the runuser wrapping it, which blocks SIGQUIT while it
    // waits for its child: a SIGQUIT sent to it stays pending and the wait below would never end.
    run_program(postgres_user_argv({postgres_program("pg_ctl"), "stop", "-D", pg.dir + "/data", "-m",
                                    "immediate", "-w", "-t", "30"}),
                pg.dir + "/pg_ctl.log");
    for (int i = 0; i < 1000 && waitpid(pg.pid, nullptr, WNOHANG) == 0; ++i) usleep(10'000);  // up to 10 s
    if (waitpid(pg.pid, nullptr, WNOHANG) == 0) {
      kill(pg.pid, SIGKILL);
      waitpid(pg.pid, nullptr, 0);
    }
    pg.pid = -1;
  }
  std::error_code ignored;
  if (!pg.dir.empty()) std::filesystem::remove_all(pg.dir, ignored);
}

void give_to_postgres(const std::string& path) {
  if (geteuid() != 0) return;
  const passwd* pw = getpwnam("postgres");
  if (!pw || chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0)
    throw std::runtime_error("cannot hand " + path + " to the postgres user");
}

void start_tls_postgres() {
  auto& pg = tls_postgres();
  const TlsFiles& files = tls_files();
  pg.dir = make_temp_directory("pgward-it-tlspg");
  give_to_postgres(pg.dir);
  chmod(pg.dir.c_str(), 0700);
  std::atexit(stop_tls_postgres);
  const std::string data = pg.dir + "/data";
  const int rc = run_program(postgres_user_argv({postgres_program("initdb"), "-D", data, "-A", "trust", "-U",
                                                 "postgres", "--no-sync", "-E", "UTF8", "--locale=C"}),
                             pg.dir + "/initdb.log");
  if (rc != 0) throw std::runtime_error("initdb failed:\n" + read_text_file(pg.dir + "/initdb.log"));
  for (const char* name : {"pg.crt", "pg.key", "ca.crt"}) {
    const std::string to = data + "/" + name;
    write_text_file(to, read_text_file(files.path(name)));
    chmod(to.c_str(), 0600);
    give_to_postgres(to);
  }
  // In postgresql.conf rather than on the command line, so that a test can ALTER SYSTEM them.
  std::ofstream(data + "/postgresql.conf", std::ios::app)
      << "ssl = on\nssl_cert_file = 'pg.crt'\nssl_key_file = 'pg.key'\nssl_ca_file = 'ca.crt'\n"
      << "log_disconnections = on\n";
  // hostssl only: whatever comes in plain text finds no line and is refused.
  write_text_file(data + "/pg_hba.conf",
                  "local all all trust\n"
                  "hostssl all pgward_cert 127.0.0.1/32 cert\n"
                  "hostssl all app 127.0.0.1/32 scram-sha-256\n"
                  "hostssl all all 127.0.0.1/32 trust\n");
  pg.port = free_port();
  pg.pid = spawn_process(
      postgres_user_argv({postgres_program("postgres"), "-D", data, "-p", std::to_string(pg.port), "-k",
                          pg.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
                          "logging_collector=off"}),
      pg.dir + "/postgres.log", /*die_with_parent=*/true);
  const std::string local = "host=" + pg.dir + " port=" + std::to_string(pg.port) + " user=postgres dbname=";
  const bool up = wait_until([&] { return PQping((local + "postgres").c_str()) == PQPING_OK; }, 30s);
  if (!up)
    throw std::runtime_error("TLS PostgreSQL did not start:\n" + read_text_file(pg.dir + "/postgres.log"));
  Conn admin = Conn::connect(local + "postgres");
  if (!admin.ok()) throw std::runtime_error("TLS PostgreSQL: " + admin.error());
  for (const char* sql :
       {"CREATE DATABASE app", "CREATE ROLE pgward_trust LOGIN", "CREATE ROLE app LOGIN PASSWORD 'apppass'",
        "CREATE ROLE pgward_cert LOGIN", "GRANT ALL ON DATABASE app TO pgward_trust, app, pgward_cert"}) {
    Result r(PQexec(admin, sql));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK)
      throw std::runtime_error(std::string("TLS PostgreSQL: ") + sql + ": " + PQerrorMessage(admin));
  }
}

}  // namespace

const TlsFiles& tls_files() {
  static const TlsFiles files = make_files();
  // Removed at exit (after the TLS PostgreSQL, whose stop is registered later, so runs first).
  static const struct Removal {
    std::string dir;
    ~Removal() {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
  } removal{files.dir};
  return files;
}

std::string tls_pg_log() {
  tls_pg_port();
  return read_text_file(tls_postgres().dir + "/postgres.log");
}

int tls_pg_port() {
  static std::once_flag once;
  std::call_once(once, start_tls_postgres);
  return tls_postgres().port;
}

}  // namespace pgward::it
