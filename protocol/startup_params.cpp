#include "protocol/startup_params.hpp"

#include <algorithm>
#include <array>

namespace pgward::protocol {

namespace {

constexpr std::array<std::string_view, 3> kMixedCaseNames = {"DateStyle", "IntervalStyle", "TimeZone"};

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// isspace() in the C locale, which is what pg_split_opts() tests.
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::vector<std::string> split_options(std::string_view text) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    if (i == text.size()) break;
    std::string word;
    bool escaped = false;
    for (; i < text.size(); ++i) {
      const char c = text[i];
      if (is_space(c) && !escaped) break;
      if (!escaped && c == '\\') {
        escaped = true;
      } else {
        escaped = false;
        word += c;
      }
    }
    words.push_back(std::move(word));
  }
  return words;
}

}  // namespace

bool is_connection_param(std::string_view name) {
  return name == "user" || name == "database" || name == "options" || name == "replication" ||
         name.starts_with("_pq_.");
}

std::string canonical_param_name(std::string_view name) {
  std::string folded(name);
  std::transform(folded.begin(), folded.end(), folded.begin(), lower);
  for (std::string_view mixed : kMixedCaseNames) {
    if (mixed.size() == folded.size() &&
        std::equal(mixed.begin(), mixed.end(), folded.begin(), [](char a, char b) { return lower(a) == b; }))
      return std::string(mixed);
  }
  return folded;
}

std::optional<std::vector<Setting>> parse_options(std::string_view text) {
  const std::vector<std::string> words = split_options(text);
  std::vector<Setting> out;
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::string_view word = words[i];
    std::string_view setting;
    if (word == "-c" && i + 1 < words.size()) {
      setting = words[++i];
    } else if (word.starts_with("-c") && word.size() > 2) {
      setting = word.substr(2);
    } else if (word.starts_with("--") && word.size() > 2) {
      setting = word.substr(2);
    } else {
      return std::nullopt;
    }
    const auto eq = setting.find('=');
    if (eq == std::string_view::npos || eq == 0) return std::nullopt;
    std::string name(setting.substr(0, eq));
    std::replace(name.begin(), name.end(), '-', '_');
    out.emplace_back(canonical_param_name(name), std::string(setting.substr(eq + 1)));
  }
  return out;
}

std::optional<std::vector<Setting>> startup_settings(const StartupPacket& packet) {
  std::vector<Setting> out;
  if (const std::string* options = packet.find("options")) {
    auto switches = parse_options(*options);
    if (!switches) return std::nullopt;
    out = std::move(*switches);
  }
  for (const auto& [name, value] : packet.params)
    if (!is_connection_param(name)) out.emplace_back(canonical_param_name(name), value);
  return out;
}

}  // namespace pgward::protocol
