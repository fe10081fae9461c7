// hms-ffid's own log (standard error, which the journal takes under systemd): text for people,
// or JSON lines for log shippers (--log-format, ffi.logging.format).
#pragma once

#include <string>

namespace hms::ffi::broker {

// "text" (the default) or "json"; false for anything else.
bool validLogFormat(const std::string& format);
// Sets the default logger's format. JSON: one object a line, {"time", "level", "pid",
// "message"}, the time in UTC, the message escaped.
void setLogFormat(const std::string& format);

}  // namespace hms::ffi::broker
