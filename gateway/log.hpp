// The gateway's log: one line per event on standard output ("hms-ffi-gateway: <text>"), which
// journald keeps under systemd and tests read.
#pragma once

#include <string>

namespace hms::ffi::gateway {

void logLine(const std::string& text);

}  // namespace hms::ffi::gateway
