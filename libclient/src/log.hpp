// The library's logger: "hms-ffi", to stderr, so that a component's stdout stays its own. An
// application can reconfigure it through spdlog::get("hms-ffi") (level, sinks, pattern).
#pragma once

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace hms::ffi::detail {

inline spdlog::logger& log() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    if (auto existing = spdlog::get("hms-ffi")) return existing;
    auto made = spdlog::stderr_color_mt("hms-ffi");
    made->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");  // messages name the library
    return made;
  }();
  return *logger;
}

}  // namespace hms::ffi::detail
