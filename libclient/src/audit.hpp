// Audit records (docs/security.md#audit): the broker's access decisions and the calls services
// make of methods whose policy asks for it. One record is a flat list of fields; it goes to
// journald as structured fields (HMS_FFI_<FIELD>=value, plus MESSAGE) when journald runs, or as
// one JSON object per line appended to a file. Records are written whole with one write(2) on an
// O_APPEND descriptor, so several processes may share one file.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hms/ffi/status.hpp"
#include "os.hpp"

namespace hms::ffi::detail {

struct AuditField {
  std::string key;  // lower_snake_case: "event", "uid", "service", ...
  std::string value;
  bool number = false;  // written unquoted in JSON
};

class AuditLog {
 public:
  // `target`: "journald"; "-" (standard error, JSON lines); a file path (created 0640, appended);
  // or empty: journald when it runs (its socket exists), else `fallbackPath` if non-empty, else
  // standard error. A file that cannot be opened is FAILED_PRECONDITION naming it.
  static Result<std::unique_ptr<AuditLog>> open(const std::string& target,
                                                const std::string& fallbackPath,
                                                std::string component);
  // Where records go, for the startup log: "journald", "stderr" or the path.
  const std::string& where() const { return where_; }
  // Writes one record: time and component first, then `fields`. `message` is the human line
  // (journald's MESSAGE; "message" in JSON). Never throws; a failed write is counted, and logged
  // once by the caller through failures().
  void record(const std::string& message, const std::vector<AuditField>& fields);
  uint64_t failures() const;

 private:
  AuditLog() = default;
  std::string component_;
  std::string where_;
  bool journald_ = false;
  UniqueFd fd_;  // file or stderr (not owned then: fd_ stays empty and 2 is used)
  bool stderr_ = false;
  mutable std::mutex mu_;
  uint64_t failures_ = 0;
};

// JSON string escaping for the file sink (and anything else writing JSON by hand).
void appendJsonString(std::string& out, std::string_view s);

}  // namespace hms::ffi::detail
