// hms-ffid's own log: to standard error as text for people or JSON lines for log shippers, or
// to the systemd journal in its native protocol, each line with its priority (--log-format,
// ffi.logging.format; "auto", the default, is the journal when standard error is the journal,
// as under systemd, else text).
#pragma once

#include <string>

namespace hms::ffi::broker {

// "auto" (the default), "text", "json" or "journal"; false for anything else.
bool validLogFormat(const std::string& format);
// What "auto" means here and now ("journal" or "text"); any other format as it is.
std::string resolveLogFormat(const std::string& format);
// Makes the default logger "hms-ffid", whose destination setLogFormat chooses.
void initLogging();
// Sets the default logger's destination and format. JSON: one object a line, {"time", "level",
// "pid", "message"}, the time in UTC, the message escaped. Journal: MESSAGE, PRIORITY and
// SYSLOG_IDENTIFIER=hms-ffid; an entry the journal refuses goes to standard error.
void setLogFormat(const std::string& format);

}  // namespace hms::ffi::broker
