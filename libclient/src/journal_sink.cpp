#include "journal_sink.hpp"

#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "hms/ffi/client.hpp"

namespace hms::ffi::detail {
namespace {

thread_local const LogFields* tFields = nullptr;

int sendToJournal(const std::vector<std::string>& fields) {
  // sd_journal_sendv drops an entry silently when no journal listens: say so instead.
  struct stat st {};
  if (::stat("/run/systemd/journal/socket", &st) != 0 || !S_ISSOCK(st.st_mode)) return -ENOENT;
  std::vector<iovec> iov(fields.size());
  for (size_t i = 0; i < fields.size(); ++i) {
    iov[i] = {const_cast<char*>(fields[i].data()), fields[i].size()};
  }
  return ::sd_journal_sendv(iov.data(), int(iov.size()));
}

int syslogPriority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return LOG_DEBUG;
    case spdlog::level::info:
      return LOG_INFO;
    case spdlog::level::warn:
      return LOG_WARNING;
    case spdlog::level::err:
      return LOG_ERR;
    case spdlog::level::critical:
      return LOG_CRIT;
    default:
      return LOG_NOTICE;
  }
}

}  // namespace

bool stderrIsJournal() noexcept {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (!stream || !*stream) return false;
  unsigned long long dev = 0, ino = 0;
  char rest = 0;
  if (std::sscanf(stream, "%llu:%llu%c", &dev, &ino, &rest) != 2) return false;
  struct stat st {};
  if (::fstat(2, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev &&
         static_cast<unsigned long long>(st.st_ino) == ino;
}

ScopedLogFields::ScopedLogFields(const LogFields& fields) noexcept : previous_(tFields) {
  tFields = &fields;
}
ScopedLogFields::~ScopedLogFields() {
  tFields = previous_;
}
const LogFields* ScopedLogFields::current() noexcept {
  return tFields;
}

JournalSink::JournalSink(std::string identifier, Send send)
    : identifier_(std::move(identifier)), send_(send ? std::move(send) : Send(sendToJournal)) {}

std::vector<std::string> JournalSink::fields(const spdlog::details::log_msg& msg) const {
  std::vector<std::string> out;
  out.reserve(8);
  out.push_back("MESSAGE=" + std::string(msg.payload.data(), msg.payload.size()));
  out.push_back("PRIORITY=" + std::to_string(syslogPriority(msg.level)));
  out.push_back("SYSLOG_IDENTIFIER=" + identifier_);
  if (const LogFields* f = ScopedLogFields::current()) {
    const std::pair<const char*, const std::string*> named[] = {
        {"TRACE_ID=", &f->traceId}, {"SPAN_ID=", &f->spanId}, {"SERVICE_ID=", &f->serviceId},
        {"METHOD=", &f->method},    {"USER_ID=", &f->userId},
    };
    for (const auto& [key, value] : named) {
      if (!value->empty()) out.push_back(key + *value);
    }
  }
  return out;
}

void JournalSink::sink_it_(const spdlog::details::log_msg& msg) {
  const int rc = send_(fields(msg));
  if (rc >= 0) return;
  // Not lost: to standard error, as it would have gone without the journal.
  if (!warned_) {
    warned_ = true;
    std::fprintf(stderr, "%s: the journal does not take log entries (%s); logging to stderr\n",
                 identifier_.c_str(), std::strerror(-rc));
  }
  std::fprintf(stderr, "%s: %s %.*s\n", identifier_.c_str(),
               spdlog::level::to_string_view(msg.level).data(), int(msg.payload.size()),
               msg.payload.data());
}

}  // namespace hms::ffi::detail
