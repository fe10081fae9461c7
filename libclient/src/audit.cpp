#include "audit.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "json_codec.hpp"

namespace hms::ffi::detail {
namespace {

bool journaldRuns() {
  struct stat st {};
  return ::stat("/run/systemd/journal/socket", &st) == 0 && S_ISSOCK(st.st_mode);
}

std::string nowIso8601() {
  const auto now = std::chrono::system_clock::now();
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  const time_t secs = time_t(us / 1000000);
  struct tm tm {};
  ::gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, int(us % 1000000));
  return buf;
}

std::string upper(const std::string& key) {
  std::string out = "HMS_FFI_";
  for (char c : key) out += (c >= 'a' && c <= 'z') ? char(c - 'a' + 'A') : c;
  return out;
}

}  // namespace

void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Names come from clients (and a 128-byte cut may split a character): bytes that are not
      // UTF-8 become U+FFFD, so that every line stays JSON.
      const size_t n = utf8SequenceLength(s, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";
      } else {
        out.append(s.substr(i, n));
        i += n - 1;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
}

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::string& target,
                                                 const std::string& fallbackPath,
                                                 std::string component) {
  std::unique_ptr<AuditLog> log(new AuditLog());
  log->component_ = std::move(component);
  std::string path = target;
  if (path.empty()) path = journaldRuns() ? "journald" : (fallbackPath.empty() ? "-" : fallbackPath);
  if (path == "journald") {
    log->journald_ = true;
    log->where_ = "journald";
  } else if (path == "-") {
    log->stderr_ = true;
    log->where_ = "stderr";
  } else {
    log->fd_.reset(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    if (!log->fd_) {
      return Status(StatusCode::kFailedPrecondition,
                    errnoText(("cannot open the audit log " + path).c_str(), errno) +
                        "; make its directory writable, or name another file, 'journald' or "
                        "'-' (standard error)");
    }
    log->where_ = path;
  }
  return log;
}

void AuditLog::record(const std::string& message, const std::vector<AuditField>& fields) {
  const std::string time = nowIso8601();
  if (journald_) {
    std::vector<std::string> lines;
    lines.reserve(fields.size() + 4);
    lines.push_back("MESSAGE=" + message);
    lines.push_back("SYSLOG_IDENTIFIER=" + component_);
    lines.push_back("HMS_FFI_AUDIT=1");
    lines.push_back("HMS_FFI_COMPONENT=" + component_);
    for (const auto& f : fields) lines.push_back(upper(f.key) + "=" + f.value);
    std::vector<iovec> iov(lines.size());
    for (size_t i = 0; i < lines.size(); ++i) iov[i] = {lines[i].data(), lines[i].size()};
    if (::sd_journal_sendv(iov.data(), int(iov.size())) < 0) {
      std::lock_guard lock(mu_);
      ++failures_;
    }
    return;
  }
  std::string line = "{\"time\":";
  appendJsonString(line, time);
  line += ",\"component\":";
  appendJsonString(line, component_);
  for (const auto& f : fields) {
    line += ',';
    appendJsonString(line, f.key);
    line += ':';
    if (f.number) {
      line += f.value;
    } else {
      appendJsonString(line, f.value);
    }
  }
  line += ",\"message\":";
  appendJsonString(line, message);
  line += "}\n";
  const int fd = stderr_ ? 2 : fd_.get();
  std::lock_guard lock(mu_);
  // One write on an O_APPEND descriptor: the line lands whole, after whatever others appended.
  if (::write(fd, line.data(), line.size()) != ssize_t(line.size())) ++failures_;
}

uint64_t AuditLog::failures() const {
  std::lock_guard lock(mu_);
  return failures_;
}

}  // namespace hms::ffi::detail
