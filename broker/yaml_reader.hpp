// A strict reader of YAML configuration files (yaml-cpp), shared by hms-ffid (config.cpp) and
// hms-ffi-gateway: every error is INVALID_ARGUMENT "<file>:<line>:<column>: <key path>: <what>",
// naming the allowed keys or values, so that a typo is found at start, not ignored.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "hms/ffi/status.hpp"

namespace hms::ffi::detail {

// ":line:column" of a mark (1-based), as compilers print positions.
inline std::string position(const YAML::Mark& mark) {
  std::string out = ":";
  out += std::to_string(mark.line + 1);
  out += ':';
  out += std::to_string(mark.column + 1);
  return out;
}

class YamlReader {
 public:
  // `refused`: full key paths refused with a reason (keys of the seed's layout that have no
  // meaning here) rather than as unknown.
  explicit YamlReader(std::string path, const std::map<std::string, std::string>* refused = nullptr)
      : path_(std::move(path)), refused_(refused) {}

  Status error(const YAML::Node& at, const std::string& key, const std::string& what) const {
    std::string where = path_;
    if (at.IsDefined() && at.Mark().line >= 0) where += position(at.Mark());
    where += ": ";
    where += key;
    where += ": ";
    where += what;
    return Status(StatusCode::kInvalidArgument, where);
  }

  // A mapping whose keys are all in `allowed` (in the file's order) or refused with the reason.
  Status keys(const YAML::Node& map, const std::string& path,
              const std::vector<std::string>& allowed) const {
    if (map.IsNull()) return Status();  // a section with every key commented out: defaults
    if (!map.IsMap()) return error(map, path, "expected a mapping of " + list(allowed));
    for (const auto& kv : map) {
      const std::string key = kv.first.as<std::string>();
      const std::string full = path.empty() ? key : path + "." + key;
      bool known = false;
      for (const auto& a : allowed) known = known || a == key;
      if (known) continue;
      if (refused_ != nullptr) {
        if (auto why = refused_->find(full); why != refused_->end()) {
          return error(kv.first, full, "not on one host: " + why->second);
        }
      }
      return error(kv.first, full,
                   "unknown key; " + (path.empty() ? std::string("the top level") : path) +
                       " takes " + list(allowed));
    }
    return Status();
  }

  Status text(const YAML::Node& n, const std::string& key, std::string& out) const {
    if (!n.IsScalar()) return error(n, key, "expected a string");
    out = n.as<std::string>();
    return Status();
  }

  Status choice(const YAML::Node& n, const std::string& key,
                const std::vector<std::string>& allowed, std::string& out) const {
    if (Status s = text(n, key, out); !s) return s;
    for (const auto& a : allowed) {
      if (a == out) return Status();
    }
    return error(n, key, "'" + out + "' is not one of " + list(allowed));
  }

  Status count(const YAML::Node& n, const std::string& key, uint64_t max, uint64_t& out) const {
    std::string s;
    if (!n.IsScalar() || (s = n.as<std::string>()).empty() ||
        s.find_first_not_of("0123456789") != std::string::npos || s.size() > 19) {
      return error(n, key, "expected a whole number from 0 to " + std::to_string(max));
    }
    out = std::stoull(s);
    if (out > max) return error(n, key, std::to_string(out) + " is above " + std::to_string(max));
    return Status();
  }

  Status texts(const YAML::Node& n, const std::string& key, std::vector<std::string>& out) const {
    if (!n.IsSequence()) return error(n, key, "expected a list of strings");
    for (size_t i = 0; i < n.size(); ++i) {
      std::string v;
      if (Status s = text(n[i], key + "[" + std::to_string(i) + "]", v); !s) return s;
      out.push_back(v);
    }
    return Status();
  }

  static std::string list(const std::vector<std::string>& items) {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      out += (i == 0 ? "" : i + 1 == items.size() ? " or " : ", ") + items[i];
    }
    return out;
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::map<std::string, std::string>* refused_;
};

}  // namespace hms::ffi::detail
