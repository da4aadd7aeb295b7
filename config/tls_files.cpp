#include "config/tls_files.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace pgward::config {

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

// The file opened for reading, or nullptr with WHY set.
std::unique_ptr<BIO, BioFree> open(const std::string& path, std::string& why) {
  errno = 0;
  std::unique_ptr<BIO, BioFree> bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) why = "cannot read \"" + path + "\": " + std::strerror(errno != 0 ? errno : EIO);
  ERR_clear_error();
  return bio;
}

// OpenSSL's reason for the last failure, and the error queue emptied.
std::string openssl_reason() {
  const unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  const char* reason = code != 0 ? ERR_reason_error_string(code) : nullptr;
  return reason ? reason : "no PEM data";
}

std::unique_ptr<X509, X509Free> read_cert(const std::string& path, std::string& why) {
  auto bio = open(path, why);
  if (!bio) return nullptr;
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) why = "\"" + path + "\" holds no PEM certificate (" + openssl_reason() + ")";
  return cert;
}

}  // namespace

std::optional<std::string> tls_cert_problem(const std::string& path) {
  std::string why;
  if (!read_cert(path, why)) return why;
  return std::nullopt;
}

std::optional<std::string> tls_key_problem(const std::string& key_path, const std::string& cert_path) {
  std::string why;
  auto bio = open(key_path, why);
  if (!bio) return why;
  // A key protected by a passphrase cannot be used unattended: the empty callback makes reading it fail.
  auto no_passphrase = [](char*, int, int, void*) { return 0; };
  std::unique_ptr<EVP_PKEY, KeyFree> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (!key) {
    return "\"" + key_path + "\" holds no unencrypted PEM private key (" + openssl_reason() + ")";
  }
  auto cert = read_cert(cert_path, why);
  if (!cert) return std::nullopt;  // reported against the certificate's own line
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return "the key in \"" + key_path + "\" does not match the certificate in \"" + cert_path + "\"";
  }
  return std::nullopt;
}

}  // namespace pgward::config
