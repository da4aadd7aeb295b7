// TLS fixtures for the integration tests: certificates made by `openssl` at the start of the run (nothing
// that can expire is committed), and a second PostgreSQL that speaks TLS only (ssl = on, pg_hba.conf with
// hostssl lines alone), started on first use and stopped at exit.
#pragma once

#include <string>

namespace pgward::it {

// Every file is PEM, keys unencrypted and 0600. Certificates are valid for two days from now.
struct TlsFiles {
  std::string dir;
  std::string path(const std::string& name) const { return dir + "/" + name; }
  // ca.crt            the test CA, which signs everything below except rogue
  // other_ca.crt      a CA nobody here trusts
  // pg.crt/.key       the TLS PostgreSQL's certificate: CN and SAN DNS "localhost" only (no IP address)
  // pgward.crt/.key   pgward's certificate for clients: SAN DNS "localhost" and IP 127.0.0.1
  // client.crt/.key   a client certificate with CN "pgward_trust"
  // stranger.crt/.key a client certificate with CN "someone_else"
  // cert_user.crt/.key  CN "pgward_cert", the TLS PostgreSQL's user with `cert` authentication
  // rogue.crt/.key    CN "pgward_trust", signed by other_ca
  // Signed by ca with the key of the leaf they are named after, expired in 2020 or valid from 2099 only:
  // pgward_expired.crt/.key, pg_expired.crt, pg_future.crt, client_expired.crt/.key, client_future.crt/.key
};
const TlsFiles& tls_files();

// The TLS-only PostgreSQL: its port on 127.0.0.1. Roles: pgward_trust (trust), app (scram-sha-256,
// password "apppass"), pgward_cert (cert); database app. A plaintext connection is refused (28000).
int tls_pg_port();
// What the TLS-only PostgreSQL logged so far (it logs disconnections).
std::string tls_pg_log();

}  // namespace pgward::it
