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

// The seed's pattern 3.4: hms.emr.vitals published once, read by three subscriber processes
// with different policies. The audit subscriber exits 2 if a reading is missing or out of order.
class VitalsExample : public ::testing::TestWithParam<const char*> {
 protected:
  std::vector<std::string> env() const {
    return {"HMS_FFI_SOCKET=" + broker.socket(), std::string("HMS_FFI_TRANSPORT=") + GetParam()};
  }
  BrokerFixture broker;
};

TEST_P(VitalsExample, ThreeSubscribersInTheirOwnProcesses_AlarmAndAuditSeeEveryReading) {
  std::vector<Subprocess> subs;
  for (const char* role : {"chart", "alarm", "audit"}) {
    subs.emplace_back(std::vector<std::string>{HMS_FFI_EXAMPLE_VITALS_SUBSCRIBER, "--role", role,
                                               "--wait-seconds", "30"},
                      env());
  }
  Subprocess monitor({HMS_FFI_EXAMPLE_VITALS_MONITOR, "--count", "3000", "--wait-subscribers", "3"},
                     env());
  for (auto& s : subs) ASSERT_TRUE(s.waitForLine("subscribed")) << s.output() << s.errors();
  ASSERT_TRUE(monitor.waitForLine("published 3000 readings")) << monitor.errors();
  EXPECT_EQ(monitor.wait(std::chrono::seconds(60)), 0) << monitor.errors();
  ASSERT_TRUE(subs[0].waitForLine("readings shown")) << subs[0].errors();
  ASSERT_TRUE(subs[1].waitForLine("readings checked")) << subs[1].errors();
  ASSERT_TRUE(subs[2].waitForLine("readings, sequence")) << subs[2].errors();
  for (auto& s : subs) EXPECT_EQ(s.wait(std::chrono::seconds(60)), 0) << s.output() << s.errors();

  std::smatch m;
  ASSERT_TRUE(std::regex_search(subs[0].output(), m,
                                std::regex("chart: ([0-9]+) readings shown, ([0-9]+) skipped")))
      << subs[0].output();
  EXPECT_EQ(std::stoul(m[1]) + std::stoul(m[2]), 3000u);  // every reading shown or counted
  // Every 97th reading is hypoxic, every 211th tachycardic, every 307th hypertensive.
  EXPECT_NE(subs[1].output().find("alarm: 3000 readings checked"), std::string::npos)
      << subs[1].output();
  EXPECT_NE(subs[1].output().find("hypoxia at"), std::string::npos);
  EXPECT_NE(subs[2].output().find("audit: 3000 readings, sequence 1..3000, none missing"),
            std::string::npos)
      << subs[2].output();
}

INSTANTIATE_TEST_SUITE_P(Transports, VitalsExample, ::testing::Values("shm", "socket"),
                         [](const auto& info) { return std::string(info.param); });

// The seed's §6: hms.cdf.debate 2.1 adds methods to 2.0 and changes none of it. A caller built
// against 2.0 keeps working against the 2.1 provider; a provider registering a breaking "2.2" at
// the same major is refused with what it breaks, and the 2.1 provider keeps serving.
class DebateExample : public ::testing::TestWithParam<const char*> {
 protected:
  std::vector<std::string> env() const {
    return {"HMS_FFI_SOCKET=" + broker.socket(), std::string("HMS_FFI_TRANSPORT=") + GetParam()};
  }
  BrokerFixture broker;
};

TEST_P(DebateExample, OlderCallerWorksAgainstNewerProvider_BreakingChangeIsRefused) {
  Subprocess service({HMS_FFI_EXAMPLE_CDF_SERVICE}, env());
  ASSERT_TRUE(service.waitForLine("serving hms.cdf.debate 2.1.0")) << service.errors();

  Subprocess old({HMS_FFI_EXAMPLE_CDF_CLIENT_V2_0}, env());
  ASSERT_TRUE(old.waitForLine("arguments)")) << old.output() << old.errors();
  ASSERT_EQ(old.wait(std::chrono::seconds(60)), 0) << old.output() << old.errors();
  EXPECT_NE(old.output().find("bound hms.cdf.debate 2.1.0"), std::string::npos) << old.output();
  // Two approving positions, one with evidence, against one denying: APPROVE at (1+1.8)/3.8.
  EXPECT_NE(old.output().find("-> APPROVE (confidence 0.74, 3 arguments)"), std::string::npos)
      << old.output();

  Subprocess breaking({HMS_FFI_EXAMPLE_CDF_BREAKING}, env());
  ASSERT_TRUE(breaking.waitForLine("registering 2.2.0")) << breaking.output() << breaking.errors();
  ASSERT_EQ(breaking.wait(std::chrono::seconds(60)), 0) << breaking.output() << breaking.errors();
  const std::string& out = breaking.output();
  EXPECT_NE(out.find("FAILED_PRECONDITION"), std::string::npos) << out;
  EXPECT_NE(out.find("addEvidence"), std::string::npos) << out;
  EXPECT_NE(out.find("positionId"), std::string::npos) << out;
  EXPECT_NE(out.find("2.2.0"), std::string::npos) << out;

  // The 2.1 provider was not disturbed.
  Subprocess again({HMS_FFI_EXAMPLE_CDF_CLIENT_V2_0}, env());
  EXPECT_EQ(again.wait(std::chrono::seconds(60)), 0) << again.output() << again.errors();
}

INSTANTIATE_TEST_SUITE_P(Transports, DebateExample, ::testing::Values("shm", "socket"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
