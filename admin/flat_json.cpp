// flatten_json(): the JSON views read back as (dotted key, value) rows, for the console's SHOW CONFIG.
#include <cctype>

#include "admin/internal.hpp"

namespace pgward::admin {

namespace {

// A reader for the JSON views.cpp writes (no whitespace, strings escaped by json_string); see flatten_json().
class Flattener {
 public:
  explicit Flattener(std::string_view json) : in_(json) {}
  bool run(std::vector<std::pair<std::string, std::string>>& out) {
    out_ = &out;
    return value("") && pos_ == in_.size();
  }

 private:
  bool value(const std::string& key) {
    if (pos_ >= in_.size()) return false;
    if (in_[pos_] == '{') return object(key);
    if (in_[pos_] == '[') return array(key);
    std::string v;
    if (!scalar(v)) return false;
    out_->emplace_back(key, std::move(v));
    return true;
  }
  bool object(const std::string& prefix) {
    ++pos_;
    if (eat('}')) return true;
    do {
      std::string name;
      if (!string(name) || !eat(':') || !value(prefix.empty() ? name : prefix + "." + name)) return false;
    } while (eat(','));
    return eat('}');
  }
  bool array(const std::string& key) {
    ++pos_;
    std::string joined;
    bool nested = false;
    for (std::size_t i = 0; !eat(']'); ++i) {
      if (i > 0 && !eat(',')) return false;
      if (pos_ < in_.size() && (in_[pos_] == '{' || in_[pos_] == '[')) {
        nested = true;
        if (!value(key + "[" + std::to_string(i) + "]")) return false;
        continue;
      }
      std::string v;
      if (!scalar(v)) return false;
      joined += (i ? ", " : "") + v;
    }
    if (!nested) out_->emplace_back(key, std::move(joined));
    return true;
  }
  bool scalar(std::string& v) {
    if (pos_ < in_.size() && in_[pos_] == '"') return string(v);
    const auto end = in_.find_first_of(",]}", pos_);
    if (end == pos_ || end == std::string_view::npos) return false;
    v = std::string(in_.substr(pos_, end - pos_));
    if (v == "null") v.clear();
    pos_ = end;
    return true;
  }
  bool string(std::string& v) {
    if (!eat('"')) return false;
    while (pos_ < in_.size() && in_[pos_] != '"') {
      char c = in_[pos_++];
      if (c == '\\') {
        if (pos_ >= in_.size()) return false;
        const char e = in_[pos_++];
        if (e == 'n')
          c = '\n';
        else if (e == 'r')
          c = '\r';
        else if (e == 't')
          c = '\t';
        else if (e == 'u') {
          unsigned code = 0;
          for (int i = 0; i < 4; ++i, ++pos_) {
            if (pos_ >= in_.size() || !std::isxdigit(static_cast<unsigned char>(in_[pos_]))) return false;
            const char h = in_[pos_];
            code = code * 16 + static_cast<unsigned>(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          c = static_cast<char>(code);  // json_string writes \u only for control characters
        } else
          c = e;
      }
      v += c;
    }
    return eat('"');
  }
  bool eat(char c) {
    if (pos_ < in_.size() && in_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  std::string_view in_;
  std::size_t pos_ = 0;
  std::vector<std::pair<std::string, std::string>>* out_ = nullptr;
};

}  // namespace

std::vector<std::pair<std::string, std::string>> flatten_json(std::string_view json) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!Flattener(json).run(out)) out.clear();
  return out;
}

}  // namespace pgward::admin
