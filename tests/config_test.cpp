// hms-ffid's configuration file (broker/config.*, docs/operations.md#configuration): what it
// accepts, each kind of error with its file:line, flags over the file, --check-config, and SIGHUP.
#include "config.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "support/process.hpp"

namespace hms::ffi::broker {
namespace {

using testing::Subprocess;
using testing::waitUntil;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/hms-ffi-config-XXXXXX";
    if (::mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p) << text;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Result<BrokerOptions> load(const TempDir& dir, const std::string& yaml) {
  return loadConfig(dir.write("hms-ffid.yaml", yaml), BrokerOptions{});
}

// The message of a refused file, or "" if it loaded.
std::string refusal(const TempDir& dir, const std::string& yaml) {
  auto r = load(dir, yaml);
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().toString();
  return r.status().message();
}

TEST(ConfigFile, EveryKeyReachesItsOption) {
  TempDir dir;
  dir.write("policy.json", "[]");
  auto r = load(dir, R"(ffi:
  registry:
    size_bytes: 8388608
    state_dir: /var/lib/elsewhere
  transport:
    default: socket
    local_socket:
      path: /run/x/broker.sock
      group: "4242"
      mode: 0600
  security:
    policy_file: policy.json
    audit_log: "-"
  limits:
    max_services_per_client: 7
    max_topics_per_client: 8
    max_channels_per_client: 9
    max_subscriptions_per_client: 0
    max_queued_messages_per_client: 10
  logging:
    level: debug
    format: json
  metrics:
    listen: unix:/run/x/metrics.sock
)");
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(r->registryBytes, 8388608u);
  EXPECT_EQ(r->stateDir, "/var/lib/elsewhere");
  EXPECT_EQ(r->transport, wire::Transport::SOCKET);
  EXPECT_EQ(r->socketPath, "/run/x/broker.sock");
  EXPECT_EQ(r->socketGroup, "4242");
  EXPECT_EQ(r->socketMode, 0600u);
  EXPECT_EQ(r->policyPath, dir.path() + "/policy.json") << "relative to the file's directory";
  EXPECT_EQ(r->auditLog, "-");
  EXPECT_EQ(r->maxServicesPerClient, 7u);
  EXPECT_EQ(r->maxTopicsPerClient, 8u);
  EXPECT_EQ(r->maxChannelsPerClient, 9u);
  EXPECT_EQ(r->maxSubscriptionsPerClient, 0u);
  EXPECT_EQ(r->maxQueuedMessagesPerClient, 10u);
  EXPECT_EQ(r->logLevel, "debug");
  EXPECT_EQ(r->logFormat, "json");
  EXPECT_EQ(r->metricsListen, "unix:/run/x/metrics.sock");
  EXPECT_TRUE(r->policyOverlay.json.empty());
}

TEST(ConfigFile, EmptyFileAndEmptyFfiAreTheDefaults) {
  TempDir dir;
  for (const char* yaml : {"", "ffi:\n", "# nothing\n"}) {
    auto r = load(dir, yaml);
    ASSERT_TRUE(r.ok()) << yaml << ": " << r.status().toString();
    EXPECT_EQ(r->registryBytes, BrokerOptions{}.registryBytes);
    EXPECT_EQ(r->logLevel, "info");
  }
}

TEST(ConfigFile, TheInstalledDefaultLoadsAsTheDefaults) {
  auto r = loadConfig(std::string(HMS_FFI_SOURCE_DIR) + "/deploy/hms-ffid.yaml", BrokerOptions{});
  ASSERT_TRUE(r.ok()) << r.status().toString();
  const BrokerOptions d;
  EXPECT_EQ(r->registryBytes, d.registryBytes);
  EXPECT_EQ(r->transport, d.transport);
  EXPECT_EQ(r->socketMode, d.socketMode);
  EXPECT_EQ(r->maxChannelsPerClient, d.maxChannelsPerClient);
  EXPECT_EQ(r->maxQueuedMessagesPerClient, d.maxQueuedMessagesPerClient);
  EXPECT_EQ(r->logLevel, d.logLevel);
  EXPECT_TRUE(r->policyPath.empty());
}

TEST(ConfigFileError, UnknownKeysNameFileLineAndTheKeysAllowed) {
  TempDir dir;
  std::string m = refusal(dir, "ffi:\n  registry:\n    sise_bytes: 1\n");
  EXPECT_NE(m.find("hms-ffid.yaml:3:5: ffi.registry.sise_bytes: unknown key; ffi.registry takes "
                   "size_bytes or state_dir"),
            std::string::npos)
      << m;
  m = refusal(dir, "hms:\n  x: 1\n");
  EXPECT_NE(m.find(":1:1: hms: unknown key; the top level takes ffi"), std::string::npos) << m;
  m = refusal(dir, "ffi:\n  logging:\n    level: info\n    colour: blue\n");
  EXPECT_NE(m.find(":4:5: ffi.logging.colour: unknown key; ffi.logging takes level or format"),
            std::string::npos)
      << m;
}

TEST(ConfigFileError, SeedKeysThatDoNotApplyOnOneHostSayWhy) {
  TempDir dir;
  std::string m = refusal(dir, "ffi:\n  registry:\n    url: http://registry:8080\n");
  EXPECT_NE(m.find(":3:5: ffi.registry.url: not on one host: the registry is the broker's own "
                   "shared memory"),
            std::string::npos)
      << m;
  m = refusal(dir, "ffi:\n  transport:\n    in_process:\n      enabled: true\n");
  EXPECT_NE(m.find("ffi.transport.in_process: not on one host"), std::string::npos) << m;
  m = refusal(dir, "ffi:\n  security:\n    token_validation_endpoint: http://auth:8080/validate\n");
  EXPECT_NE(m.find("verifies tokens itself"), std::string::npos) << m;
}

// One file per host: the gateway's section (docs/gateway.md) sits beside the broker's, which
// leaves it to hms-ffi-gateway.
TEST(ConfigFile, TheGatewaysSectionIsLeftToTheGateway) {
  TempDir dir;
  auto o = load(dir,
                "ffi:\n  transport:\n    default: socket\n    grpc:\n      listen: "
                "127.0.0.1:7443\n      export:\n        - service: hms.emr.patient\n");
  ASSERT_TRUE(o.ok()) << o.status().toString();
  EXPECT_EQ(o->transport, wire::Transport::SOCKET);
}

TEST(ConfigFileError, BadValuesNameTheAllowedOnes) {
  TempDir dir;
  std::string m = refusal(dir, "ffi:\n  transport:\n    default: grpc\n");
  EXPECT_NE(m.find(":3:14: ffi.transport.default: 'grpc' is not one of auto, shm or socket"),
            std::string::npos)
      << m;
  m = refusal(dir, "ffi:\n  logging:\n    level: loud\n");
  EXPECT_NE(m.find("ffi.logging.level: 'loud' is not one of trace, debug"), std::string::npos) << m;
  m = refusal(dir, "ffi:\n  logging:\n    format: xml\n");
  EXPECT_NE(m.find("ffi.logging.format: 'xml' is not one of auto, text, json or journal"),
            std::string::npos)
      << m;
  m = refusal(dir, "ffi:\n  limits:\n    max_channels_per_client: -1\n");
  EXPECT_NE(m.find("ffi.limits.max_channels_per_client: expected a whole number"),
            std::string::npos)
      << m;
  m = refusal(dir, "ffi:\n  transport:\n    local_socket:\n      mode: 0444\n");
  EXPECT_NE(m.find("ffi.transport.local_socket.mode: '0444' is not an octal mode"),
            std::string::npos)
      << m;
  m = refusal(dir, "ffi:\n  registry: [1, 2]\n");
  EXPECT_NE(m.find("ffi.registry: expected a mapping of size_bytes or state_dir"),
            std::string::npos)
      << m;
  m = refusal(dir, "ffi:\n  security:\n    permission_policy: lax\n");
  EXPECT_NE(m.find("'lax' is not one of strict"), std::string::npos) << m;
}

TEST(ConfigFileError, MalformedYamlGivesItsLine) {
  TempDir dir;
  const std::string m = refusal(dir, "ffi:\n  registry:\n    size_bytes: [1,\n");
  EXPECT_NE(m.find("hms-ffid.yaml:4:"), std::string::npos) << m;
}

TEST(ConfigFileError, MissingFileIsAFailedPrecondition) {
  auto r = loadConfig("/nonexistent/hms-ffid.yaml", BrokerOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("/nonexistent/hms-ffid.yaml"), std::string::npos);
}

TEST(ConfigFileError, TokenSettingsNeedAPolicyFile) {
  TempDir dir;
  const std::string m = refusal(dir, "ffi:\n  security:\n    required_claims: [sub]\n");
  EXPECT_NE(m.find("ffi.security: token settings without ffi.security.policy_file"),
            std::string::npos)
      << m;
}

// security.required_claims and token_issuers replace the policy file's, checked by the policy's
// own loader (a bad key file names the configuration, not the policy).
TEST(ConfigFile, TokenSettingsReplaceThePolicyFiles) {
  TempDir dir;
  dir.write("policy.json", R"({"required_claims": ["sub"], "rules": []})");
  auto r = load(dir,
                "ffi:\n  security:\n    policy_file: policy.json\n"
                "    required_claims: [sub, role]\n");
  ASSERT_TRUE(r.ok()) << r.status().toString();
  auto policy = Policy::load(r->policyPath, &r->policyOverlay);
  ASSERT_TRUE(policy.ok()) << policy.status().toString();
  EXPECT_EQ((*policy)->requiredClaims(), (std::vector<std::string>{"sub", "role"}));

  auto bad = load(dir,
                  "ffi:\n  security:\n    policy_file: policy.json\n    token_issuers:\n"
                  "      - issuer: hms-auth\n        public_key_file: missing.pem\n");
  ASSERT_TRUE(bad.ok()) << bad.status().toString();
  auto refused = Policy::load(bad->policyPath, &bad->policyOverlay);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("hms-ffid.yaml: ffi.security"), std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("missing.pem"), std::string::npos)
      << refused.status().message();
}

// ---- the broker with a configuration file ----------------------------------------------------

int exitOf(Subprocess& p) {
  const int status = p.wait(std::chrono::seconds(30));
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ConfigBroker, CheckConfig_OkOrTheReasonWithFileAndLine) {
  TempDir dir;
  const std::string good = dir.write("good.yaml", "ffi:\n  logging:\n    level: warn\n");
  Subprocess ok({testing::brokerBinary(), "--config", good, "--check-config"});
  EXPECT_EQ(exitOf(ok), 0) << ok.errors();
  EXPECT_TRUE(ok.waitForLine("OK")) << ok.output();

  const std::string bad = dir.write("bad.yaml", "ffi:\n  logging:\n    levle: warn\n");
  Subprocess no({testing::brokerBinary(), "--config", bad, "--check-config"});
  EXPECT_EQ(exitOf(no), 1);
  EXPECT_NE(no.errors().find("bad.yaml:3:5: ffi.logging.levle: unknown key"), std::string::npos)
      << no.errors();

  // The policy it names is checked too.
  dir.write("policy.json", R"([{"service": "s", "method": "*", "allowed_roles": ["x"],
                               "audit_level": "loud"}])");
  const std::string withPolicy =
      dir.write("with-policy.yaml", "ffi:\n  security:\n    policy_file: policy.json\n");
  Subprocess pol({testing::brokerBinary(), "--config", withPolicy, "--check-config"});
  EXPECT_EQ(exitOf(pol), 1);
  EXPECT_NE(pol.errors().find("rules[0].audit_level"), std::string::npos) << pol.errors();
}

TEST(ConfigBroker, FlagsBeatTheFile) {
  TempDir dir;
  const std::string fromFile = dir.path() + "/file.sock";
  const std::string fromFlag = dir.path() + "/flag.sock";
  const std::string config =
      dir.write("hms-ffid.yaml", "ffi:\n  transport:\n    local_socket:\n      path: " + fromFile +
                                     "\n  registry:\n    state_dir: \":memory:\"\n");
  Subprocess broker({testing::brokerBinary(), "--config", config, "--socket", fromFlag});
  ASSERT_TRUE(waitUntil([&] {
    struct stat st {};
    return ::stat(fromFlag.c_str(), &st) == 0 || !broker.running();
  })) << broker.errors();
  EXPECT_TRUE(broker.running()) << broker.errors();
  struct stat st {};
  EXPECT_NE(::stat(fromFile.c_str(), &st), 0) << "the file's socket path is not used";
  broker.stop();
}

TEST(ConfigBroker, Sighup_ReadsTheFileAgain_ABadOneKeepsTheOld_FixedKeysAreNamed) {
  TempDir dir;
  const std::string socket = dir.path() + "/broker.sock";
  const std::string config = dir.write("hms-ffid.yaml",
                                       "ffi:\n  registry:\n    state_dir: \":memory:\"\n"
                                       "  logging:\n    level: info\n");
  Subprocess broker({testing::brokerBinary(), "--config", config, "--socket", socket});
  ASSERT_TRUE(waitUntil([&] {
    struct stat st {};
    return ::stat(socket.c_str(), &st) == 0 || !broker.running();
  })) << broker.errors();

  dir.write("hms-ffid.yaml",
            "ffi:\n  registry:\n    state_dir: \":memory:\"\n    size_bytes: 8388608\n"
            "  logging:\n    level: debug\n");
  broker.signal(SIGHUP);
  ASSERT_TRUE(waitUntil([&] {
    const std::string e = broker.errors();
    return e.find("SIGHUP: log level debug") != std::string::npos;
  })) << broker.errors();
  EXPECT_NE(broker.errors().find("the registry size changes only when hms-ffid restarts"),
            std::string::npos)
      << broker.errors();

  dir.write("hms-ffid.yaml", "ffi:\n  logging:\n    level: [debug\n");
  broker.signal(SIGHUP);
  ASSERT_TRUE(waitUntil([&] {
    return broker.errors().find("SIGHUP: keeping the current configuration") != std::string::npos;
  })) << broker.errors();
  EXPECT_NE(broker.errors().find("hms-ffid.yaml:"), std::string::npos);
  EXPECT_TRUE(broker.running());
  broker.stop();
}

TEST(ConfigBroker, LogFormatJson_OneObjectALine_AndSighupSwitchesIt) {
  TempDir dir;
  const std::string socket = dir.path() + "/broker.sock";
  const std::string config =
      dir.write("hms-ffid.yaml",
                "ffi:\n  registry:\n    state_dir: \":memory:\"\n  logging:\n    format: json\n");
  Subprocess broker({testing::brokerBinary(), "--config", config, "--socket", socket});
  ASSERT_TRUE(waitUntil([&] {
    return broker.errors().find("serving on") != std::string::npos || !broker.running();
  })) << broker.errors();
  // Every line so far is one JSON object with the four fields; quotes in messages are escaped.
  const std::string log = broker.errors();
  size_t lines = 0;
  for (size_t at = 0, end; (end = log.find('\n', at)) != std::string::npos; at = end + 1) {
    const std::string line = log.substr(at, end - at);
    ++lines;
    EXPECT_EQ(line.rfind(R"({"time":")", 0), 0u) << line;
    EXPECT_NE(line.find(R"(","level":")"), std::string::npos) << line;
    EXPECT_NE(line.find(R"(,"pid":)"), std::string::npos) << line;
    EXPECT_EQ(line.substr(line.size() - 2), "\"}") << line;
  }
  EXPECT_GT(lines, 0u);
  dir.write("hms-ffid.yaml",
            "ffi:\n  registry:\n    state_dir: \":memory:\"\n  logging:\n    format: text\n");
  broker.signal(SIGHUP);
  ASSERT_TRUE(waitUntil([&] {
    return broker.errors().find("SIGHUP: log format text") != std::string::npos;
  })) << broker.errors();
  broker.stop();
}

}  // namespace
}  // namespace hms::ffi::broker
