#include "args.hpp"

#include <charconv>
#include <cmath>

namespace hms::ffi::cli {

std::optional<std::string> parseArgs(const std::vector<std::string>& args,
                                     std::initializer_list<OptionSpec> specs, ParsedArgs& out) {
  auto find = [&](std::string_view name) -> const OptionSpec* {
    static constexpr OptionSpec kHelp[] = {{"--help", false}, {"-h", false}};
    for (const auto& s : kHelp) {
      if (s.name == name) return &s;
    }
    for (const auto& s : specs) {
      if (s.name == name) return &s;
    }
    return nullptr;
  };
  bool optionsEnded = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (optionsEnded || a.size() < 2 || a[0] != '-') {
      out.positional.push_back(a);
      continue;
    }
    if (a == "--") {
      optionsEnded = true;
      continue;
    }
    std::string name = a;
    std::optional<std::string> inlineValue;
    if (const auto eq = a.find('='); a.starts_with("--") && eq != std::string::npos) {
      name = a.substr(0, eq);
      inlineValue = a.substr(eq + 1);
    }
    const OptionSpec* spec = find(name);
    if (spec == nullptr) return "unknown option '" + name + "'";
    if (!spec->takesValue) {
      if (inlineValue) return "option '" + name + "' takes no value";
      out.options[name] = "";
    } else if (inlineValue) {
      out.options[name] = *inlineValue;
    } else if (i + 1 < args.size()) {
      out.options[name] = args[++i];
    } else {
      return "option '" + name + "' needs a value";
    }
  }
  return std::nullopt;
}

std::optional<std::chrono::nanoseconds> parseDuration(std::string_view text) {
  double number = 0;
  const char* end = text.data() + text.size();
  auto [rest, ec] = std::from_chars(text.data(), end, number);
  if (ec != std::errc() || !std::isfinite(number) || number <= 0) return std::nullopt;
  const std::string_view unit(rest, size_t(end - rest));
  double nsPerUnit = 0;
  if (unit.empty() || unit == "s") {
    nsPerUnit = 1e9;
  } else if (unit == "ms") {
    nsPerUnit = 1e6;
  } else if (unit == "us") {
    nsPerUnit = 1e3;
  } else if (unit == "ns") {
    nsPerUnit = 1;
  } else if (unit == "m") {
    nsPerUnit = 60e9;
  } else if (unit == "h") {
    nsPerUnit = 3600e9;
  } else {
    return std::nullopt;
  }
  const double ns = number * nsPerUnit;
  // Longer than ten years is no deadline anyone means; it would also overflow a deadline.
  if (ns < 1 || ns > 3.2e17) return std::nullopt;
  return std::chrono::nanoseconds(int64_t(ns));
}

std::optional<uint64_t> parseCount(std::string_view text) {
  uint64_t n = 0;
  const char* end = text.data() + text.size();
  auto [rest, ec] = std::from_chars(text.data(), end, n);
  if (ec != std::errc() || rest != end || text.empty()) return std::nullopt;
  return n;
}

}  // namespace hms::ffi::cli
