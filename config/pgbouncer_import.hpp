// PgBouncer => pgward: turns a pgbouncer.ini (and optionally its userlist.txt) into pgward TOML.
// Pure conversion, no I/O beyond reading the input files: the CLI (--import-pgbouncer) prints the result.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace pgward::config {

struct PgbouncerImport {
  std::string
      toml;  // the pgward configuration; with a userlist, followed by the users file as a comment block
  // One "FILE:LINE: KEY: why" per setting that could not be carried over, in file order.
  std::vector<std::string> warnings;
};

// Reads INI_PATH (following %include directives, relative to the including file's folder) and USERLIST_PATH
// when given. Throws ConfigError ("FILE:LINE: reason") on malformed input or an unreadable file.
PgbouncerImport import_pgbouncer(const std::string& ini_path,
                                 const std::optional<std::string>& userlist_path = std::nullopt);

}  // namespace pgward::config
