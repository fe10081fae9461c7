// The example components as users run them: separate processes on a private broker, over each
// transport. What is checked is what their output promises.
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "support/process.hpp"

namespace {

using hms::ffi::testing::BrokerFixture;
using hms::ffi::testing::Subprocess;

struct BatchSummary {
  unsigned entries = 0, accepted = 0, rejected = 0;
  unsigned rejectedAs(const std::string& output, const std::string& kind) const {
    std::smatch m;
    const std::regex re("rejected " + kind + " +([0-9]+)");
    return std::regex_search(output, m, re) ? unsigned(std::stoul(m[1])) : 0;
  }
};

BatchSummary parseSummary(const std::string& output) {
  BatchSummary s;
  std::smatch m;
  const std::regex re("([0-9]+) entries in [0-9.]+ ms: ([0-9]+) accepted, ([0-9]+) rejected");
  if (std::regex_search(output, m, re)) {
    s.entries = unsigned(std::stoul(m[1]));
    s.accepted = unsigned(std::stoul(m[2]));
    s.rejected = unsigned(std::stoul(m[3]));
  }
  return s;
}

class AchExample : public ::testing::TestWithParam<const char*> {
 protected:
  std::vector<std::string> env() const {
    return {"HMS_FFI_SOCKET=" + broker.socket(), std::string("HMS_FFI_TRANSPORT=") + GetParam()};
  }
  Subprocess etl(const std::string& count) {
    return Subprocess({HMS_FFI_EXAMPLE_ACH_ETL, "--count", count}, env());
  }
  BrokerFixture broker;
};

// The seed's scenario 4.3: an ETL process submits a batch asynchronously and gets one outcome per
// entry (the example exits 2 if any entry's outcome is missing, doubled or another entry's).
TEST_P(AchExample, BatchGetsOneOutcomePerEntryAndARerunPostsNothingTwice) {
  Subprocess service({HMS_FFI_EXAMPLE_ACH_SERVICE}, env());
  ASSERT_TRUE(service.waitForLine("serving hms.ach.transaction")) << service.errors();

  Subprocess first = etl("2000");
  ASSERT_TRUE(first.waitForLine("accepted credits")) << first.errors();
  ASSERT_EQ(first.wait(std::chrono::seconds(60)), 0) << first.output() << first.errors();
  const BatchSummary s = parseSummary(first.output());
  EXPECT_EQ(s.entries, 2000u) << first.output();
  EXPECT_EQ(s.accepted + s.rejected, 2000u);
  EXPECT_GT(s.accepted, 1000u);
  // The extract's bad rows are each rejected with the return code their fault calls for.
  for (const char* kind : {"INVALID_ARGUMENT R28", "INVALID_ARGUMENT R17", "ALREADY_EXISTS R24",
                           "NOT_FOUND R03", "FAILED_PRECONDITION R02", "FAILED_PRECONDITION R01"}) {
    EXPECT_GT(s.rejectedAs(first.output(), kind), 0u) << kind << "\n" << first.output();
  }
  EXPECT_NE(first.output().find("[returnCode=R28] [field=routingNumber]"), std::string::npos)
      << first.output();

  // The same extract again: every entry accepted the first time is now a duplicate.
  Subprocess again = etl("2000");
  ASSERT_TRUE(again.waitForLine("accepted credits")) << again.errors();
  ASSERT_EQ(again.wait(std::chrono::seconds(60)), 0) << again.output() << again.errors();
  const BatchSummary r = parseSummary(again.output());
  EXPECT_EQ(r.entries, 2000u);
  EXPECT_GE(r.rejectedAs(again.output(), "ALREADY_EXISTS R24"), s.accepted) << again.output();
  EXPECT_TRUE(service.running());
}

INSTANTIATE_TEST_SUITE_P(Transports, AchExample, ::testing::Values("shm", "socket"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
