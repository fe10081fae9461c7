// Log lines to the systemd journal in its native protocol (sd_journal_sendv), so that each line
// keeps its level and, inside a call, the seed's §9.3 fields as fields of its own (TRACE_ID,
// SPAN_ID, SERVICE_ID, METHOD, USER_ID): `journalctl TRACE_ID=…` finds every line of one trace.
// Used when standard error is the journal (systemd's JOURNAL_STREAM): hms-ffid's
// `--log-format journal` (its default under systemd) and the library's "hms-ffi" logger.
#pragma once

#include <spdlog/sinks/base_sink.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace hms::ffi {
struct LogFields;
}

namespace hms::ffi::detail {

// Whether standard error is connected to the journal: JOURNAL_STREAM ("DEV:INODE", which systemd
// sets for a unit whose output goes there) names the file descriptor 2 has.
bool stderrIsJournal() noexcept;

// The fields of the call the thread logs about, for as long as it lives (nestable).
class ScopedLogFields {
 public:
  explicit ScopedLogFields(const LogFields& fields) noexcept;
  ~ScopedLogFields();
  ScopedLogFields(const ScopedLogFields&) = delete;
  ScopedLogFields& operator=(const ScopedLogFields&) = delete;
  static const LogFields* current() noexcept;

 private:
  const LogFields* previous_;
};

class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Sends one entry's "FIELD=value" strings; returns 0 or a negative errno (sd_journal_sendv's
  // contract). Tests pass their own.
  using Send = std::function<int(const std::vector<std::string>&)>;

  // `identifier`: SYSLOG_IDENTIFIER of every entry. `send`: the journal unless given. When an
  // entry cannot be sent, it goes to standard error instead (with one line saying why, once).
  explicit JournalSink(std::string identifier, Send send = {});

  // The fields an entry of this message gets (exposed for tests).
  std::vector<std::string> fields(const spdlog::details::log_msg& msg) const;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  std::string identifier_;
  Send send_;
  bool warned_ = false;
};

}  // namespace hms::ffi::detail
