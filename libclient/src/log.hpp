// The library's logger: "hms-ffi", to stderr, so that a component's stdout stays its own; to the
// journal in its native protocol when stderr is the journal (a systemd unit's), where a line
// about a call carries its §9.3 fields as journal fields (journal_sink.hpp). An application can
// reconfigure it through spdlog::get("hms-ffi") (level, sinks, pattern).
#pragma once

#include <errno.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "journal_sink.hpp"

namespace hms::ffi::detail {

inline spdlog::logger& log() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    if (auto existing = spdlog::get("hms-ffi")) return existing;
    if (stderrIsJournal()) {
      auto made = std::make_shared<spdlog::logger>(
          "hms-ffi", std::make_shared<JournalSink>(program_invocation_short_name));
      spdlog::register_logger(made);
      return made;
    }
    auto made = spdlog::stderr_color_mt("hms-ffi");
    made->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");  // messages name the library
    return made;
  }();
  return *logger;
}

}  // namespace hms::ffi::detail
