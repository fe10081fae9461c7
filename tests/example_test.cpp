// The example components as users run them: separate processes on a private broker, over each
// transport. What is checked is what their output promises.
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

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

// ---- the demo's access policy (examples/security/demo-policy.json, docs/security.md) ----------

namespace demo_policy {

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The demo's policy file as the demo writes it (this user in place of root), beside a fresh
// issuer key; tokens minted by scripts/mint-test-token.sh, as the demo and the docs do.
class DemoPolicy : public ::testing::Test {
 protected:
  static constexpr const char* kGroup = "4242";  // the socket's group: a second uid may connect
  void SetUp() override {
    char tmpl[] = "/tmp/hms-ffi-demo-policy-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0755);
    ASSERT_EQ(run({"/usr/bin/openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                   dir_ + "/issuer.key"}),
              0);
    ASSERT_EQ(run({"/usr/bin/openssl", "ec", "-in", dir_ + "/issuer.key", "-pubout", "-out",
                   dir_ + "/issuer.pub.pem"}),
              0);
    ASSERT_EQ(run({"/usr/bin/openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                   dir_ + "/forger.key"}),
              0);
    std::string policy = readAll(std::string(HMS_FFI_SOURCE_DIR) +
                                 "/examples/security/demo-policy.json");
    const std::string me = ::getpwuid(::getuid())->pw_name;
    for (size_t at = policy.find("\"root\""); at != std::string::npos;
         at = policy.find("\"root\"", at + me.size() + 2)) {
      policy.replace(at, 6, "\"" + me + "\"");
    }
    std::ofstream(dir_ + "/policy.json") << policy;
    audit_ = dir_ + "/audit.jsonl";
    serviceAudit_ = dir_ + "/service-audit.jsonl";
    broker_ = std::make_unique<BrokerFixture>(std::vector<std::string>{
        "--policy", dir_ + "/policy.json", "--audit-log", audit_, "--socket-group", kGroup});
    ::chmod(broker_->dir().c_str(), 0755);
  }
  void TearDown() override {
    broker_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  static int run(const std::vector<std::string>& argv) {
    Subprocess p(argv);
    const int status = p.wait(std::chrono::seconds(60));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string mint(const std::string& key, const std::string& sub, const std::string& role,
                   const std::string& ttl = "3600") {
    Subprocess p({"/bin/bash", std::string(HMS_FFI_SOURCE_DIR) + "/scripts/mint-test-token.sh",
                  dir_ + "/" + key, sub, role, ttl});
    EXPECT_TRUE(p.waitForLine(".", std::chrono::seconds(30))) << p.errors();
    EXPECT_EQ(p.wait(std::chrono::seconds(30)), 0) << p.errors();
    std::string t = p.output();
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
    EXPECT_EQ(std::count(t.begin(), t.end(), '.'), 2) << "not a compact JWS: " << t;
    return t;
  }
  // hms-ffi call hms.emr.patient getPatient with `token`: its exit status, stderr in `err`.
  int getPatient(const std::string& token, std::string& err) {
    Subprocess p({HMS_FFI_TOOL, "--socket", broker_->socket(), "call", "hms.emr.patient",
                  "getPatient", R"({"patientId": "p-1001"})"},
                 {"HMS_FFI_TOKEN=" + token});
    const int status = p.wait(std::chrono::seconds(60));
    err = p.errors();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string dir_, audit_, serviceAudit_;
  std::unique_ptr<BrokerFixture> broker_;
};

// The issue's "done when": a caller without a permitted role gets PERMISSION_DENIED and the
// handler never runs, forged and expired tokens get UNAUTHENTICATED, a second process cannot
// register hms.emr.patient, and each decision is in the audit log.
TEST_F(DemoPolicy, SeedRule_AllowsANurse_DeniesAClerk_RefusesBadTokensAndAnImpostor) {
  Subprocess emr({HMS_FFI_EXAMPLE_EMR_SERVICE},
                 {"HMS_FFI_SOCKET=" + broker_->socket(), "HMS_FFI_AUDIT_LOG=" + serviceAudit_});
  ASSERT_TRUE(emr.waitForLine("serving hms.emr.patient")) << emr.errors();
  std::string err;
  ASSERT_EQ(getPatient(mint("issuer.key", "nurse-jackie", "nurse"), err), 0) << err;
  ASSERT_TRUE(emr.waitForLine("getPatient(p-1001)"));
  const size_t ran = countOf(emr.output(), "getPatient(");

  EXPECT_EQ(getPatient(mint("issuer.key", "front-desk", "clerk"), err), 64 + 7) << err;
  EXPECT_NE(err.find("PERMISSION_DENIED"), std::string::npos) << err;
  EXPECT_NE(err.find("needs one of the roles doctor, nurse, administrator"), std::string::npos)
      << err;
  // Whatever the service printed meanwhile is read (nothing prints this line) before counting.
  (void)emr.waitForLine("a line hms-emr never prints", std::chrono::milliseconds(300));
  EXPECT_EQ(countOf(emr.output(), "getPatient("), ran) << "the handler never runs for the clerk";

  for (const auto& [what, token] :
       {std::pair<std::string, std::string>{"forged", mint("forger.key", "mallory", "doctor")},
        {"expired", mint("issuer.key", "dr-late", "doctor", "-60")}}) {
    EXPECT_EQ(getPatient(token, err), 1) << what << ": " << err;
    EXPECT_NE(err.find("UNAUTHENTICATED"), std::string::npos) << what << ": " << err;
  }

  if (::geteuid() == 0) {
    Subprocess impostor({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                         std::string("--groups=") + kGroup, "--", HMS_FFI_EXAMPLE_EMR_SERVICE},
                        {"HMS_FFI_SOCKET=" + broker_->socket()});
    EXPECT_EQ(impostor.wait(std::chrono::seconds(30)) >> 8, 1);
    EXPECT_NE(impostor.errors().find("may not provide hms.emr.patient"), std::string::npos)
        << impostor.errors();
  }

  const std::string audit = readAll(audit_);
  EXPECT_NE(audit.find(R"("event":"register","outcome":"allowed")"), std::string::npos) << audit;
  EXPECT_NE(audit.find(R"("sub":"nurse-jackie")"), std::string::npos) << audit;
  EXPECT_EQ(countOf(audit, R"("code":"UNAUTHENTICATED")"), 2u) << audit;
  if (::geteuid() == 0) {
    EXPECT_NE(audit.find(R"("event":"register","outcome":"denied","code":"PERMISSION_DENIED")"),
              std::string::npos)
        << audit;
  }
  const std::string calls = readAll(serviceAudit_);
  EXPECT_NE(calls.find(R"("method":"getPatient","outcome":"error","code":"PERMISSION_DENIED")"),
            std::string::npos)
      << calls;
  EXPECT_NE(calls.find(R"("sub":"front-desk")"), std::string::npos) << calls;
}

}  // namespace demo_policy
