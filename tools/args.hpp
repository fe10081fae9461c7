// hms-ffi's command lines: options and positional arguments of one command, and the durations
// and counts its options take.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hms::ffi::cli {

struct OptionSpec {
  std::string_view name;  // "--count" or "-d"
  bool takesValue = false;
};

// A command's arguments after parsing. Options may come before, between or after the positional
// arguments; "--" ends the options; "--name=value" is "--name value". "-" alone is positional.
struct ParsedArgs {
  std::map<std::string, std::string, std::less<>> options;  // last value wins; "" for a flag
  std::vector<std::string> positional;

  bool has(std::string_view name) const { return options.find(name) != options.end(); }
  const std::string* value(std::string_view name) const {
    auto it = options.find(name);
    return it == options.end() ? nullptr : &it->second;
  }
};

// Parses `args` against `specs` (plus --help and -h, always accepted). Returns the error to show
// the user, or nothing when `out` holds the result.
std::optional<std::string> parseArgs(const std::vector<std::string>& args,
                                     std::initializer_list<OptionSpec> specs, ParsedArgs& out);

// "500ms", "2s", "1.5s", "1m", "1h", "250us", "10ns"; a bare number is seconds. Nothing for text
// that is not a positive duration.
std::optional<std::chrono::nanoseconds> parseDuration(std::string_view text);

// A decimal count, 0 included.
std::optional<uint64_t> parseCount(std::string_view text);

}  // namespace hms::ffi::cli
