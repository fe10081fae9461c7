// Semantic versions of services and the ranges callers ask for.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hms/ffi/status.hpp"

namespace hms::ffi {

struct Version {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint32_t patch = 0;

  friend auto operator<=>(const Version&, const Version&) = default;
  std::string toString() const;
  // "1.2.3", "1.2" and "1" (missing parts are 0).
  static Result<Version> parse(std::string_view text);
};

// A set of versions a caller accepts, in the npm/Cargo notation users know:
//   "*" or ""            any version
//   "1.2.3" / "=1.2.3"   exactly that one
//   "^1.2.3"             >=1.2.3 <2.0.0   (for 0.x: ^0.2.3 is >=0.2.3 <0.3.0)
//   "~1.2.3"             >=1.2.3 <1.3.0
//   "1.x" / "1.2.x"      same as ^1.0.0-ish wildcards: >=1.0.0 <2.0.0, >=1.2.0 <1.3.0
//   ">=1.0 <2"           comparators (>=, >, <=, <, =) separated by spaces are ANDed
// The highest version inside the range wins.
class VersionRange {
 public:
  static Result<VersionRange> parse(std::string_view text);
  static VersionRange any() { return VersionRange(); }

  bool contains(const Version& v) const noexcept;
  const std::string& text() const noexcept { return text_; }

 private:
  enum class Op : uint8_t { kEq, kGt, kGe, kLt, kLe };
  struct Comparator {
    Op op;
    Version version;
  };
  std::vector<Comparator> comparators_;
  std::string text_ = "*";
};

}  // namespace hms::ffi
