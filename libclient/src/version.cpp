#include "hms/ffi/version.hpp"

#include <charconv>

namespace hms::ffi {

std::string Version::toString() const {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

namespace {

Status badVersion(std::string_view text, const char* why) {
  return Status(StatusCode::kInvalidArgument, "invalid version '" + std::string(text) +
                                                  "': " + why +
                                                  " (expected MAJOR.MINOR.PATCH, e.g. 1.4.0)");
}

// Parses up to three dot-separated numbers; `parts` says how many were given; a part may be
// "x"/"X"/"*" when wildcards are allowed (counted as not given).
Status parseParts(std::string_view text, bool wildcards, Version& v, int& parts) {
  uint32_t* fields[3] = {&v.major, &v.minor, &v.patch};
  parts = 0;
  size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    const size_t dot = text.find('.', pos);
    const std::string_view part =
        text.substr(pos, dot == std::string_view::npos ? std::string_view::npos : dot - pos);
    if (part.empty()) return badVersion(text, "empty part");
    if (wildcards && (part == "x" || part == "X" || part == "*")) {
      if (dot != std::string_view::npos) return badVersion(text, "nothing may follow a wildcard");
      return Status();
    }
    auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), *fields[i]);
    if (ec != std::errc() || end != part.data() + part.size()) {
      return badVersion(text, "not a number");
    }
    ++parts;
    if (dot == std::string_view::npos) return Status();
    pos = dot + 1;
  }
  return badVersion(text, "more than three parts");
}

}  // namespace

Result<Version> Version::parse(std::string_view text) {
  Version v;
  int parts = 0;
  if (auto s = parseParts(text, false, v, parts); !s) return s;
  return v;
}

Result<VersionRange> VersionRange::parse(std::string_view text) {
  VersionRange r;
  r.text_ = text.empty() ? "*" : std::string(text);
  size_t pos = 0;
  while (pos < text.size()) {
    while (pos < text.size() && text[pos] == ' ') ++pos;
    if (pos >= text.size()) break;
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view tok = text.substr(pos, end - pos);
    pos = end;
    if (tok == "*" || tok == "x" || tok == "X") continue;

    auto add = [&](Op op, Version v) { r.comparators_.push_back({op, v}); };
    auto bumpAt = [](Version v, int part) {
      if (part == 0) return Version{v.major + 1, 0, 0};
      if (part == 1) return Version{v.major, v.minor + 1, 0};
      return Version{v.major, v.minor, v.patch + 1};
    };

    Op op = Op::kEq;
    char prefix = 0;
    if (tok.starts_with(">="))
      op = Op::kGe, tok.remove_prefix(2);
    else if (tok.starts_with("<="))
      op = Op::kLe, tok.remove_prefix(2);
    else if (tok.starts_with(">"))
      op = Op::kGt, tok.remove_prefix(1);
    else if (tok.starts_with("<"))
      op = Op::kLt, tok.remove_prefix(1);
    else if (tok.starts_with("="))
      tok.remove_prefix(1);
    else if (tok.starts_with("^") || tok.starts_with("~"))
      prefix = tok[0], tok.remove_prefix(1);

    Version v;
    int parts = 0;
    const bool wildcardsAllowed = op == Op::kEq;
    if (auto s = parseParts(tok, wildcardsAllowed, v, parts); !s) return s;
    if (parts == 0 && !prefix) continue;  // "x" after '=': any

    if (prefix == '^') {
      // Bump the first non-zero part among those given (npm semantics).
      int part = 0;
      if (v.major == 0 && parts > 1) part = (v.minor == 0 && parts > 2) ? 2 : 1;
      add(Op::kGe, v);
      add(Op::kLt, bumpAt(v, part));
    } else if (prefix == '~') {
      add(Op::kGe, v);
      add(Op::kLt, bumpAt(v, parts >= 2 ? 1 : 0));
    } else if (op == Op::kEq && parts < 3) {
      // "1" or "1.2" or "1.2.x": a partial version is a range.
      add(Op::kGe, v);
      add(Op::kLt, bumpAt(v, parts - 1));
    } else {
      add(op, v);
    }
  }
  return r;
}

bool VersionRange::contains(const Version& v) const noexcept {
  for (const auto& c : comparators_) {
    switch (c.op) {
      case Op::kEq:
        if (!(v == c.version)) return false;
        break;
      case Op::kGt:
        if (!(v > c.version)) return false;
        break;
      case Op::kGe:
        if (!(v >= c.version)) return false;
        break;
      case Op::kLt:
        if (!(v < c.version)) return false;
        break;
      case Op::kLe:
        if (!(v <= c.version)) return false;
        break;
    }
  }
  return true;
}

}  // namespace hms::ffi
