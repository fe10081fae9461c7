// Security end to end (docs/security.md): a real hms-ffid with an access policy and token issuers,
// services and callers as real clients (in this process, and as another uid through setpriv),
// the audit trail read back from its JSON-lines files. Both transports.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "hms/ffi/client.hpp"
#include "hms/ffi/json.hpp"
#include "support/process.hpp"
#include "support/tokens.hpp"
#include "test.capnp.h"

namespace hms::ffi {
namespace {

using test::TestService;
using testing::BrokerFixture;
using testing::Subprocess;
using testing::waitUntil;

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

// Lines of a JSON-lines audit file that contain every one of `needles`.
std::vector<std::string> auditLines(const std::string& path,
                                    const std::vector<std::string>& needles) {
  std::vector<std::string> out;
  std::istringstream in(readFile(path));
  std::string line;
  while (std::getline(in, line)) {
    bool all = true;
    for (const auto& n : needles) all = all && line.find(n) != std::string::npos;
    if (all) out.push_back(line);
  }
  return out;
}

// The seed's §7.2 rule, on the test service: echo for doctor, nurse and administrator (named
// "Echo", the way the seed names methods); whoami for the other roles but interns; blob for
// doctors with MFA; the service provided by this process's uid only; nobody (65534) holds the
// role night-shift by its uid.
std::string policyText(const std::string& keyFile, uid_t providerUid, bool clerkMayEcho = false) {
  return R"({
  "permission_policy": "strict",
  "required_claims": ["sub", "role"],
  "token_issuers": [{"issuer": "hms-auth", "algorithm": "ES256",
                     "public_key_file": ")" +
         keyFile + R"(", "audience": "hms-ffi"}],
  "role_assignments": [{"role": "night-shift", "uids": [65534]},
                       {"role": "pharmacy", "gids": [4343]}],
  "providers": [{"service": "hms.test.secure", "uids": [)" +
         std::to_string(providerUid) + R"(]}],
  "rules": [
    {"service": "hms.test.secure", "method": "Echo",
     "allowed_roles": ["doctor", "nurse", "administrator")" +
         (clerkMayEcho ? R"(, "clerk")" : "") + R"(],
     "denied_roles": [], "requires_mfa": false, "audit_level": "detailed"},
    {"service": "hms.test.secure", "method": "whoami",
     "allowed_roles": ["doctor", "nurse", "clerk", "intern", "night-shift"],
     "denied_roles": ["intern"], "audit_level": "none"},
    {"service": "hms.test.secure", "method": "blob", "allowed_roles": ["doctor"],
     "requires_mfa": true},
    {"service": "hms.test.secure", "method": "stats", "allowed_roles": ["pharmacy"]}
  ]
})";
}

class Security : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    ::setenv("HMS_FFI_TRANSPORT", GetParam(), 1);
    char tmpl[] = "/tmp/hms-ffi-security-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0755);
    issuer_ = testing::newKeyPair();
    ASSERT_FALSE(issuer_.publicPem.empty());
    writeFile(dir_ + "/issuer.pub.pem", issuer_.publicPem);
    policy_ = dir_ + "/policy.json";
    writeFile(policy_, policyText("issuer.pub.pem", ::getuid()));
    brokerAudit_ = dir_ + "/broker-audit.jsonl";
    serviceAudit_ = dir_ + "/service-audit.jsonl";
    broker_ = std::make_unique<BrokerFixture>(
        std::vector<std::string>{"--policy", policy_, "--audit-log", brokerAudit_});
  }
  void TearDown() override {
    ::unsetenv("HMS_FFI_TRANSPORT");
    handle_.reset();
    service_.reset();
    broker_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string token(const std::string& sub, const std::string& roleJson, int64_t expIn = 3600,
                    const std::string& extra = "") {
    const int64_t now = int64_t(::time(nullptr));
    return testing::mintToken(R"({"iss":"hms-auth","aud":"hms-ffi","sub":")" + sub +
                                  R"(","role":)" + roleJson +
                                  R"(,"iat":)" + std::to_string(now) +
                                  R"(,"exp":)" + std::to_string(now + expIn) + extra + "}",
                              JWT_ALG_ES256, issuer_.privatePem);
  }

  Result<std::unique_ptr<Client>> connect(const std::string& tok, const std::string& name) {
    ClientOptions o;
    o.socketPath = broker_->socket();
    o.name = name;
    o.token = tok;
    o.reconnect = false;
    return Client::connect(o);
  }

  // The test service, served by this process (whose uid the policy lets provide it): echo counts
  // its runs and remembers who called.
  // The service's client, with its audit log.
  void connectService() {
    ClientOptions o;
    o.socketPath = broker_->socket();
    o.name = "secure-service";
    o.auditLog = serviceAudit_;
    auto c = Client::connect(o);
    ASSERT_TRUE(c.ok()) << c.status().toString();
    service_ = std::move(*c);
  }
  void serve() {
    connectService();
    ASSERT_TRUE(service_);
    ServiceDefinition<TestService> def;
    def.on<&TestService::Client::echoRequest>(
        [this](CallContext& ctx, TestService::EchoParams::Reader p,
               TestService::EchoResults::Builder r) {
          {
            // The test reads it on its own thread, synchronised only through the channel's
            // shared memory, which TSan cannot follow: a mutex says it.
            std::lock_guard lock(callerMu_);
            lastCaller_ = ctx.caller();
          }
          echoRuns_.fetch_add(1);
          r.setSeq(p.getSeq());
          return Status();
        });
    def.on<&TestService::Client::whoamiRequest>(
        [](CallContext& ctx, TestService::WhoamiParams::Reader, TestService::WhoamiResults::Builder r) {
          r.setPid(uint32_t(::getpid()));
          r.setCallerPid(uint32_t(ctx.caller().pid));
          r.setVersion("1.0.0");
          return Status();
        });
    def.on<&TestService::Client::statsRequest>(
        [](CallContext&, TestService::StatsParams::Reader, TestService::StatsResults::Builder) {
          return Status();
        });
    def.on<&TestService::Client::blobRequest>(
        [](CallContext&, TestService::BlobParams::Reader, TestService::BlobResults::Builder) {
          return Status();
        });
    auto h = service_->serve("hms.test.secure", Version{1, 0, 0}, std::move(def));
    ASSERT_TRUE(h.ok()) << h.status().toString();
    handle_ = std::make_unique<ServiceHandle>(std::move(*h));
  }

  static Result<Reply<TestService::EchoResults>> echo(Stub<TestService>& stub, uint64_t seq) {
    return stub.call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(seq); });
  }
  static Status whoami(Stub<TestService>& stub) {
    return stub.call<&TestService::Client::whoamiRequest>([](auto) {}).status();
  }

  std::string dir_, policy_, brokerAudit_, serviceAudit_;
  testing::KeyPair issuer_;
  std::unique_ptr<BrokerFixture> broker_;
  std::unique_ptr<Client> service_;
  std::unique_ptr<ServiceHandle> handle_;
  std::atomic<int> echoRuns_{0};
  std::mutex callerMu_;
  Caller lastCaller_;  // under callerMu_
  Caller lastCaller() {
    std::lock_guard lock(callerMu_);
    return lastCaller_;
  }
};

INSTANTIATE_TEST_SUITE_P(Transports, Security, ::testing::Values("shm", "socket"));

TEST_P(Security, PermittedRole_Calls_AndTheHandlerSeesTheVerifiedCaller) {
  serve();
  auto doctor = connect(token("dr-house", R"("doctor")"), "ward-app");
  ASSERT_TRUE(doctor.ok()) << doctor.status().toString();
  auto stub = (*doctor)->bind<TestService>("hms.test.secure");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  auto r = echo(*stub, 7);
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(r->results().getSeq(), 7u);
  EXPECT_EQ(echoRuns_.load(), 1);
  const Caller seen = lastCaller();
  EXPECT_TRUE(seen.authenticated);
  EXPECT_EQ(seen.subject, "dr-house");
  EXPECT_EQ(seen.issuer, "hms-auth");
  EXPECT_TRUE(seen.hasRole("doctor"));
  EXPECT_EQ(seen.uid, ::getuid());
  EXPECT_EQ(seen.pid, ::getpid());
  EXPECT_EQ(seen.name, "ward-app");
  // "detailed": who, what, outcome, duration and trace id (when the call carries one).
  ASSERT_TRUE(waitUntil([&] {
    return !auditLines(serviceAudit_, {R"("event":"call")", R"("method":"echo")"}).empty();
  }));
  const auto line = auditLines(serviceAudit_, {R"("event":"call")", R"("method":"echo")"})[0];
  for (const char* field : {R"("service":"hms.test.secure")", R"("outcome":"ok")",
                            R"("code":"OK")", R"("sub":"dr-house")", R"("roles":"doctor")",
                            R"("duration_us":)", R"("caller_name":"ward-app")"}) {
    EXPECT_NE(line.find(field), std::string::npos) << field << " in " << line;
  }
  EXPECT_FALSE(
      auditLines(brokerAudit_, {R"("event":"open")", R"("outcome":"allowed")", "dr-house"})
          .empty())
      << readFile(brokerAudit_);
}

// A deferred handler's call is recorded when it is answered, with what its caller was told: not
// as "ok" when the handler handed it off.
TEST_P(Security, DeferredCalls_AreAuditedWithTheOutcomeOfTheirAnswer) {
  connectService();
  ASSERT_TRUE(service_);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Responder> kept;  // by seq - 1
  std::atomic<int> cancels{0};
  ServiceDefinition<TestService> def;
  def.onDeferred<&TestService::Client::echoRequest>(
      [&](CallContext& ctx, TestService::EchoParams::Reader p, Responder& r) {
        ctx.onCancel([&] { ++cancels; });
        std::lock_guard lock(mu);
        if (kept.size() < p.getSeq()) kept.resize(p.getSeq());
        kept[p.getSeq() - 1] = std::move(r);
        cv.notify_all();
      });
  auto h = service_->serve("hms.test.secure", Version{1, 0, 0}, std::move(def));
  ASSERT_TRUE(h.ok()) << h.status().toString();
  handle_ = std::make_unique<ServiceHandle>(std::move(*h));
  auto doctor = connect(token("dr-house", R"("doctor")"), "ward-app");
  ASSERT_TRUE(doctor.ok()) << doctor.status().toString();
  auto stub = (*doctor)->bind<TestService>("hms.test.secure");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  auto answered = stub->callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(1); });
  auto failed = stub->callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(2); });
  auto cancelled = stub->callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(3); });
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30),
                            [&] { return kept.size() == 3 && kept[0] && kept[1] && kept[2]; }));
  }
  // Handed off, not answered: nothing to record yet.
  EXPECT_TRUE(auditLines(serviceAudit_, {R"("method":"echo")"}).empty()) << readFile(serviceAudit_);
  EXPECT_TRUE(cancelled.cancel().isOk());
  ASSERT_TRUE(waitUntil([&] { return cancels.load() == 1; }));
  EXPECT_TRUE(kept[0].reply([](capnp::MessageBuilder& mb) {
    mb.initRoot<TestService::EchoResults>().setSeq(1);
    return Status();
  }));
  EXPECT_TRUE(kept[1].fail(Status(StatusCode::kNotFound, "no such patient")));
  EXPECT_EQ(kept[2]
                .reply([](capnp::MessageBuilder& mb) {
                  mb.initRoot<TestService::EchoResults>().setSeq(3);
                  return Status();
                })
                .code(),
            StatusCode::kUnavailable);  // nobody reads it
  EXPECT_TRUE(answered.get().ok());
  EXPECT_EQ(failed.get().status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(waitUntil([&] {
    return auditLines(serviceAudit_, {R"("event":"call")", R"("method":"echo")"}).size() == 3;
  })) << readFile(serviceAudit_);
  EXPECT_EQ(auditLines(serviceAudit_, {R"("outcome":"ok")", R"("code":"OK")", R"("duration_us":)"})
                .size(),
            1u)
      << readFile(serviceAudit_);
  EXPECT_EQ(auditLines(serviceAudit_, {R"("outcome":"error")", R"("code":"NOT_FOUND")",
                                       R"("reason":"no such patient")", "dr-house"})
                .size(),
            1u)
      << readFile(serviceAudit_);
  EXPECT_EQ(auditLines(serviceAudit_, {R"("outcome":"error")", R"("code":"CANCELLED")"}).size(), 1u)
      << readFile(serviceAudit_);
  handle_.reset();  // its handler refers to this test's locals
}

TEST_P(Security, RoleWithoutPermission_PermissionDenied_AndTheHandlerNeverRuns) {
  serve();
  auto clerk = connect(token("clerk-1", R"("clerk")"), "front-desk");
  ASSERT_TRUE(clerk.ok()) << clerk.status().toString();
  auto stub = (*clerk)->bind<TestService>("hms.test.secure");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  ASSERT_TRUE(whoami(*stub).isOk()) << "the clerk may call whoami";
  auto r = echo(*stub, 1);
  ASSERT_EQ(r.status().code(), StatusCode::kPermissionDenied) << r.status().toString();
  EXPECT_EQ(r.status().source(), "hms.test.secure");
  EXPECT_NE(r.status().message().find("hms.test.secure.echo"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("doctor"), std::string::npos) << r.status().message();
  bool namesMethod = false;
  const Status denied = r.status();  // a copy: details() refers into it
  for (const auto& [k, v] : denied.details()) namesMethod |= k == "method" && v == "echo";
  EXPECT_TRUE(namesMethod);
  EXPECT_EQ(echoRuns_.load(), 0) << "a denied call must not reach the handler";
  // The service records the denial, whatever the method's audit level.
  ASSERT_TRUE(waitUntil([&] {
    return !auditLines(serviceAudit_, {R"("method":"echo")", R"("code":"PERMISSION_DENIED")",
                                       R"("sub":"clerk-1")"})
                .empty();
  }));
  // whoami's audit level is "none": no record of the allowed call.
  EXPECT_TRUE(auditLines(serviceAudit_, {R"("method":"whoami")"}).empty());
}

TEST_P(Security, DeniedRole_BeatsAllowedRole_AndNoRoleAtAll_CannotOpen) {
  serve();
  // An intern is both allowed (whoami lists intern) and denied (denied_roles): denied.
  auto intern = connect(token("student", R"(["intern","nurse"])"), "intern-app");
  ASSERT_TRUE(intern.ok()) << intern.status().toString();
  auto stub = (*intern)->bind<TestService>("hms.test.secure");
  ASSERT_TRUE(stub.ok());
  EXPECT_TRUE(echo(*stub, 1).ok()) << "nurse may echo";
  auto w = whoami(*stub);
  EXPECT_EQ(w.code(), StatusCode::kPermissionDenied) << w.toString();
  EXPECT_NE(w.message().find("intern"), std::string::npos) << w.message();
  // A role no rule names: the channel itself is refused.
  auto visitor = connect(token("guest", R"("visitor")"), "kiosk");
  ASSERT_TRUE(visitor.ok()) << visitor.status().toString();
  auto vs = (*visitor)->bind<TestService>("hms.test.secure");
  Status s = vs.ok() ? echo(*vs, 1).status() : vs.status();
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << s.toString();
  EXPECT_NE(s.message().find("may call no method of hms.test.secure"), std::string::npos)
      << s.message();
  EXPECT_FALSE(auditLines(brokerAudit_, {R"("event":"open")", R"("outcome":"denied")", "guest"})
                   .empty())
      << readFile(brokerAudit_);
}

TEST_P(Security, RequiresMfa_NeedsMfaInTheTokensAmr) {
  serve();
  auto pwd = connect(token("dr-a", R"("doctor")", 3600, R"(,"amr":["pwd"])"), "a");
  auto mfa = connect(token("dr-b", R"("doctor")", 3600, R"(,"amr":["pwd","mfa"])"), "b");
  ASSERT_TRUE(pwd.ok() && mfa.ok());
  auto blob = [](Client& c) {
    auto stub = c.bind<TestService>("hms.test.secure");
    if (!stub.ok()) return stub.status();
    return stub->call<&TestService::Client::blobRequest>([](auto p) { p.setSize(0); }).status();
  };
  const Status without = blob(**pwd);
  EXPECT_EQ(without.code(), StatusCode::kPermissionDenied) << without.toString();
  EXPECT_NE(without.message().find("MFA"), std::string::npos) << without.message();
  EXPECT_TRUE(blob(**mfa).isOk()) << blob(**mfa).toString();
}

TEST_P(Security, ForgedExpiredAndWrongAudienceTokens_Unauthenticated) {
  const testing::KeyPair other = testing::newKeyPair();
  const int64_t now = int64_t(::time(nullptr));
  const std::string claims = R"({"iss":"hms-auth","aud":"hms-ffi","sub":"mallory","role":"doctor","exp":)" +
                             std::to_string(now + 3600) + "}";
  struct Case {
    const char* what;
    std::string token;
    const char* reason;
  } cases[] = {
      {"signed by another key", testing::mintToken(claims, JWT_ALG_ES256, other.privatePem),
       "signature does not verify"},
      {"expired", token("mallory", R"("doctor")", -60), "expired"},
      {"HS256 keyed with the issuer's public key",
       testing::mintToken(claims, JWT_ALG_HS256, issuer_.publicPem), "HS256"},
      {"wrong audience",
       testing::mintToken(R"({"iss":"hms-auth","aud":"elsewhere","sub":"m","role":"doctor"})",
                          JWT_ALG_ES256, issuer_.privatePem),
       "audience"},
      {"without a role", testing::mintToken(R"({"iss":"hms-auth","aud":"hms-ffi","sub":"m"})",
                                            JWT_ALG_ES256, issuer_.privatePem),
       "role"},
  };
  for (const auto& c : cases) {
    ASSERT_FALSE(c.token.empty()) << c.what;
    auto client = connect(c.token, "forger");
    ASSERT_FALSE(client.ok()) << c.what;
    EXPECT_EQ(client.status().code(), StatusCode::kUnauthenticated)
        << c.what << ": " << client.status().toString();
    EXPECT_NE(client.status().message().find(c.reason), std::string::npos)
        << c.what << ": " << client.status().message();
  }
  EXPECT_GE(auditLines(brokerAudit_, {R"("event":"connect")", R"("outcome":"denied")",
                                      R"("code":"UNAUTHENTICATED")"})
                .size(),
            std::size(cases))
      << readFile(brokerAudit_);
}

TEST_P(Security, ExpiredToken_EndsTheSession_AndItsCallsStop) {
  serve();
  auto doctor = connect(token("dr-brief", R"("doctor")", /*expIn=*/2), "short-lived");
  ASSERT_TRUE(doctor.ok()) << doctor.status().toString();
  auto stub = (*doctor)->bind<TestService>("hms.test.secure");
  ASSERT_TRUE(stub.ok());
  ASSERT_TRUE(echo(*stub, 1).ok());
  // The broker disconnects the client once exp has passed; the client (reconnect off here) is
  // left without a broker, and its channel is closed.
  ASSERT_TRUE(waitUntil([&] {
    return !auditLines(brokerAudit_, {R"("event":"revoke")", "dr-brief", "expired"}).empty();
  })) << readFile(brokerAudit_);
  ASSERT_TRUE(waitUntil([&] { return !echo(*stub, 2).ok(); }));
  const int before = echoRuns_.load();
  EXPECT_FALSE(echo(*stub, 3).ok());
  EXPECT_EQ(echoRuns_.load(), before);
}

TEST_P(Security, GarbageWrittenIntoItsOwnChannel_StillCannotReachADeniedMethod) {
  serve();
  auto clerk = connect(token("clerk-2", R"("clerk")"), "raw-writer");
  ASSERT_TRUE(clerk.ok()) << clerk.status().toString();
  auto json = (*clerk)->bindJson("hms.test.secure");
  ASSERT_TRUE(json.ok()) << json.status().toString();
  // The caller writes what it likes into its ring: words that are no Cap'n Proto message at all.
  auto loan = json->loanRaw("echo");
  ASSERT_TRUE(loan.ok()) << loan.status().toString();
  ASSERT_GE(loan->size(), 8u);
  std::memset(static_cast<void*>(loan->begin()), 0xA5, 8 * sizeof(capnp::word));
  auto reply = json->sendRaw(8);
  ASSERT_FALSE(reply.ok());
  // Refused for what the broker granted, before anything reads the bytes.
  EXPECT_EQ(reply.status().code(), StatusCode::kPermissionDenied) << reply.status().toString();
  EXPECT_EQ(echoRuns_.load(), 0);
}

TEST_P(Security, PolicyReload_AddsAndRevokes_AndABadFileKeepsTheOldPolicy) {
  serve();
  auto clerk = connect(token("clerk-3", R"("clerk")"), "front-desk");
  ASSERT_TRUE(clerk.ok());
  auto stub = (*clerk)->bind<TestService>("hms.test.secure");
  ASSERT_TRUE(stub.ok());
  EXPECT_EQ(echo(*stub, 1).status().code(), StatusCode::kPermissionDenied);

  // Grant: the clerk's next call runs under the new policy.
  writeFile(policy_, policyText("issuer.pub.pem", ::getuid(), /*clerkMayEcho=*/true));
  broker_->process().signal(SIGHUP);
  ASSERT_TRUE(waitUntil([&] {
    return !auditLines(brokerAudit_, {R"("event":"reload")", R"("outcome":"allowed")"}).empty();
  })) << readFile(brokerAudit_);
  Status last;
  ASSERT_TRUE(waitUntil([&] {
    last = echo(*stub, 2).status();
    return last.isOk();
  })) << "the clerk's echo is allowed after the reload: " << last.toString();
  EXPECT_GE(echoRuns_.load(), 1);

  // A broken file: refused, the old (granting) policy stays.
  writeFile(policy_, R"({"rules": [{"service": "hms.test.secure", "method": "Echo",
                                    "allowed_roles": ["clerk"], "audit_level": "verbose"}]})");
  broker_->process().signal(SIGHUP);
  ASSERT_TRUE(waitUntil([&] {
    return !auditLines(brokerAudit_, {R"("event":"reload")", R"("outcome":"denied")",
                                      "audit_level"})
                .empty();
  })) << readFile(brokerAudit_);
  EXPECT_TRUE(echo(*stub, 3).ok()) << "a bad policy file changes nothing";

  // Revoke: the clerk's channel is closed and its next open is refused for echo.
  writeFile(policy_, policyText("issuer.pub.pem", ::getuid(), /*clerkMayEcho=*/false));
  broker_->process().signal(SIGHUP);
  ASSERT_TRUE(waitUntil([&] {
    return auditLines(brokerAudit_, {R"("event":"reload")", R"("outcome":"allowed")"}).size() >= 2;
  }));
  // The service learns of the revocation over its control socket, moments after the reload: a
  // call in that window may still run. Once one is refused, none runs.
  ASSERT_TRUE(waitUntil([&] {
    return echo(*stub, 4).status().code() == StatusCode::kPermissionDenied;
  })) << "the revoked grant ends";
  const int before = echoRuns_.load();
  EXPECT_EQ(echo(*stub, 5).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(echoRuns_.load(), before);
  EXPECT_FALSE(auditLines(brokerAudit_, {R"("event":"revoke")", "clerk-3"}).empty())
      << readFile(brokerAudit_);
}

// Processes of another uid (nobody) through setpriv: the socket's group decides whether they
// reach the broker at all; the policy decides what they may do once they do.
class SecurityOtherUid : public Security {
 protected:
  static constexpr const char* kGroup = "4242";
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to run processes as another uid";
    Security::SetUp();
    // Again, with the socket's group set (the directory is the fixture's: open it for others).
    broker_.reset();
    broker_ = std::make_unique<BrokerFixture>(std::vector<std::string>{
        "--policy", policy_, "--audit-log", brokerAudit_, "--socket-group", kGroup});
    ::chmod(broker_->dir().c_str(), 0755);
    serve();
  }
  std::vector<std::string> asNobody(bool inGroup, std::vector<std::string> argv,
                                    const std::string& moreGroups = "") {
    std::vector<std::string> out = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534"};
    if (inGroup) {
      out.push_back(std::string("--groups=") + kGroup + moreGroups);
    } else {
      out.push_back("--clear-groups");
    }
    out.push_back("--");
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }
  static std::string tool() {
    return (std::filesystem::path(testing::brokerBinary()).parent_path().parent_path() / "tools" /
            "hms-ffi")
        .string();
  }
};

INSTANTIATE_TEST_SUITE_P(Transports, SecurityOtherUid, ::testing::Values("shm", "socket"));

TEST_P(SecurityOtherUid, PeerWithoutAccessToTheSocket_GetsNothing) {
  Subprocess list(asNobody(false, {tool(), "--socket", broker_->socket(), "list"}));
  EXPECT_NE(list.wait(std::chrono::seconds(30)), 0);
  const std::string err = list.errors();
  EXPECT_NE(err.find("ermission denied"), std::string::npos) << err;
  EXPECT_EQ(list.output().find("hms.test.secure"), std::string::npos) << list.output();
}

TEST_P(SecurityOtherUid, ImpersonationRefused_AnotherUidCannotRegisterTheServiceId) {
  Subprocess impostor(asNobody(true, {testing::testServiceBinary(), "--socket", broker_->socket(),
                                      "--id", "hms.test.secure", "--version", "1.0.1"}));
  ASSERT_TRUE(impostor.waitForLine("register failed", std::chrono::seconds(30)))
      << impostor.output() << impostor.errors();
  EXPECT_NE(impostor.output().find("PERMISSION_DENIED"), std::string::npos) << impostor.output();
  EXPECT_NE(impostor.output().find("may not provide hms.test.secure"), std::string::npos)
      << impostor.output();
  impostor.wait();
  EXPECT_FALSE(auditLines(brokerAudit_, {R"("event":"register")", R"("outcome":"denied")",
                                         R"("uid":65534)"})
                   .empty())
      << readFile(brokerAudit_);
  auto c = connect("", "checker");
  ASSERT_TRUE(c.ok());
  auto found = (*c)->discover("hms.test.secure");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->size(), 1u) << "only the real provider is registered";
}

TEST_P(SecurityOtherUid, RoleByUid_AllowsOneMethod_AndNotAnother) {
  Subprocess ok(asNobody(true, {tool(), "--socket", broker_->socket(), "call", "hms.test.secure",
                                "whoami", "{}"}));
  EXPECT_EQ(ok.wait(std::chrono::seconds(30)), 0) << ok.output() << ok.errors();
  Subprocess denied(asNobody(true, {tool(), "--socket", broker_->socket(), "call",
                                    "hms.test.secure", "echo", R"({"seq": "1"})"}));
  const int status = denied.wait(std::chrono::seconds(30));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 64 + int(StatusCode::kPermissionDenied)) << denied.errors();
  EXPECT_NE(denied.errors().find("PERMISSION_DENIED"), std::string::npos) << denied.errors();
  EXPECT_EQ(echoRuns_.load(), 0);
  ASSERT_TRUE(waitUntil([&] {
    return !auditLines(serviceAudit_, {R"("method":"echo")", R"("uid":65534)",
                                       R"("code":"PERMISSION_DENIED")"})
                .empty();
  })) << readFile(serviceAudit_);
}

TEST_P(SecurityOtherUid, RoleByGroup_ComesWithTheSupplementaryGroupHeldAtConnect) {
  auto stats = [&](const std::string& moreGroups) {
    Subprocess p(asNobody(true,
                          {tool(), "--socket", broker_->socket(), "call", "hms.test.secure",
                           "stats", "{}"},
                          moreGroups));
    const int status = p.wait(std::chrono::seconds(30));
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, p.errors());
  };
  const auto [withGroup, withErr] = stats(",4343");
  EXPECT_EQ(withGroup, 0) << withErr;
  const auto [without, withoutErr] = stats("");
  EXPECT_EQ(without, 64 + int(StatusCode::kPermissionDenied)) << withoutErr;
  EXPECT_NE(withoutErr.find("pharmacy"), std::string::npos) << withoutErr;
}

}  // namespace
}  // namespace hms::ffi
