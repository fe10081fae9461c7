// The library's logger: "hms-ffi", to stderr, so that a component's stdout stays its own. An
// application can reconfigure it through spdlog::get("hms-ffi") (level, sinks, pattern).
#pragma once

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace hms::ffi::detail {

inline spdlog::logger& log() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    if (auto existing = spdlog::get("hms-ffi")) return existing;
    return spdlog::stderr_color_mt("hms-ffi");
  }();
  return *logger;
}

}  // namespace hms::ffi::detail
