// The journal sink (journal_sink.hpp): what an entry carries, and when standard error counts as
// the journal. The entries go to a capturing function here, not to a journal.
#include "journal_sink.hpp"

#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include "hms/ffi/client.hpp"

namespace hms::ffi::detail {
namespace {

struct Captured {
  std::vector<std::vector<std::string>> entries;
  int rc = 0;
};

std::shared_ptr<spdlog::logger> loggerTo(Captured& c) {
  auto sink =
      std::make_shared<JournalSink>("test-component", [&c](const std::vector<std::string>& fields) {
        c.entries.push_back(fields);
        return c.rc;
      });
  auto logger = std::make_shared<spdlog::logger>("journal-test", sink);
  logger->set_level(spdlog::level::trace);
  return logger;
}

bool has(const std::vector<std::string>& fields, const std::string& field) {
  return std::find(fields.begin(), fields.end(), field) != fields.end();
}

TEST(JournalSink, AnEntryHasItsMessagePriorityAndIdentifier) {
  Captured c;
  auto logger = loggerTo(c);
  logger->warn("ring {} is full", 3);
  logger->error("gone");
  logger->debug("detail");
  ASSERT_EQ(c.entries.size(), 3u);
  EXPECT_TRUE(has(c.entries[0], "MESSAGE=ring 3 is full"));
  EXPECT_TRUE(has(c.entries[0], "PRIORITY=4"));  // LOG_WARNING
  EXPECT_TRUE(has(c.entries[0], "SYSLOG_IDENTIFIER=test-component"));
  EXPECT_TRUE(has(c.entries[1], "PRIORITY=3"));  // LOG_ERR
  EXPECT_TRUE(has(c.entries[2], "PRIORITY=7"));  // LOG_DEBUG
  EXPECT_EQ(c.entries[0].size(), 3u) << "no call fields outside a call";
}

TEST(JournalSink, InsideACall_TheSeedsFieldsAreJournalFields) {
  Captured c;
  auto logger = loggerTo(c);
  LogFields f;
  f.traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  f.spanId = "00f067aa0ba902b7";
  f.serviceId = "hms.emr.patient";
  f.method = "getPatient";
  f.userId = "nurse-jackie";
  {
    ScopedLogFields scope(f);
    logger->warn("inside");
    LogFields inner;
    inner.serviceId = "hms.cdf.debate";
    {
      ScopedLogFields nested(inner);
      logger->warn("nested");
    }
    logger->warn("inside again");
  }
  logger->warn("outside");
  ASSERT_EQ(c.entries.size(), 4u);
  for (const char* field :
       {"TRACE_ID=4bf92f3577b34da6a3ce929d0e0e4736", "SPAN_ID=00f067aa0ba902b7",
        "SERVICE_ID=hms.emr.patient", "METHOD=getPatient", "USER_ID=nurse-jackie"}) {
    EXPECT_TRUE(has(c.entries[0], field)) << field;
    EXPECT_TRUE(has(c.entries[2], field)) << field;
  }
  EXPECT_TRUE(has(c.entries[1], "SERVICE_ID=hms.cdf.debate"));
  EXPECT_EQ(c.entries[1].size(), 4u) << "empty fields are left out";
  EXPECT_EQ(c.entries[3].size(), 3u);
}

TEST(JournalSink, AnEntryTheJournalRefuses_GoesToStderr) {
  Captured c;
  c.rc = -ENOENT;
  auto logger = loggerTo(c);
  testing::internal::CaptureStderr();
  logger->error("first");
  logger->error("second");
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("the journal does not take log entries"), std::string::npos) << err;
  EXPECT_EQ(err.find("does not take"), err.rfind("does not take")) << "said once: " << err;
  EXPECT_NE(err.find("test-component: error first"), std::string::npos) << err;
  EXPECT_NE(err.find("test-component: error second"), std::string::npos) << err;
}

TEST(StderrIsJournal, WhenJournalStreamNamesStderr) {
  // This test process's own JOURNAL_STREAM (under systemd) is put back at the end.
  const char* inherited = std::getenv("JOURNAL_STREAM");
  const std::string saved = inherited ? inherited : "";
  struct Restore {
    const std::string& value;
    bool had;
    ~Restore() {
      if (had) {
        ::setenv("JOURNAL_STREAM", value.c_str(), 1);
      } else {
        ::unsetenv("JOURNAL_STREAM");
      }
    }
  } restore{saved, inherited != nullptr};
  struct stat st {};
  ASSERT_EQ(::fstat(2, &st), 0);
  const std::string mine = std::to_string(static_cast<unsigned long long>(st.st_dev)) + ":" +
                           std::to_string(static_cast<unsigned long long>(st.st_ino));
  ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
  EXPECT_TRUE(stderrIsJournal());
  const std::string other = std::to_string(static_cast<unsigned long long>(st.st_dev)) + ":" +
                            std::to_string(static_cast<unsigned long long>(st.st_ino) + 1);
  ::setenv("JOURNAL_STREAM", other.c_str(), 1);
  EXPECT_FALSE(stderrIsJournal()) << "another file: a child of the unit with its own stderr";
  ::setenv("JOURNAL_STREAM", "garbage", 1);
  EXPECT_FALSE(stderrIsJournal());
  ::unsetenv("JOURNAL_STREAM");
  EXPECT_FALSE(stderrIsJournal());
}

}  // namespace
}  // namespace hms::ffi::detail
