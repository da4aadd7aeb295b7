// Checks of the TLS files a config names, made when it is loaded so that --check-config and a reload report
// an unreadable file, or a key that does not belong to its certificate, as FILE:LINE before anything uses it.
#pragma once

#include <optional>
#include <string>

namespace pgward::config {

// What is wrong with a certificate (chain) file; nullopt when it holds at least one PEM certificate.
std::optional<std::string> tls_cert_problem(const std::string& path);
// What is wrong with a private key file, or with the key against the first certificate of CERT_PATH.
std::optional<std::string> tls_key_problem(const std::string& key_path, const std::string& cert_path);

}  // namespace pgward::config
