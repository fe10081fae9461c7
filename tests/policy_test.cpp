// The access policy (broker/policy.hpp): the file format as the seed's §7.2 writes it and as the
// header extends it, every load error with the entry it names, and the decisions. Keys are minted
// at run time with OpenSSL; names resolve against accounts every host has (root).
#include "policy.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "support/tokens.hpp"

namespace hms::ffi::broker {
namespace {

namespace fs = std::filesystem;

constexpr char kOrigin[] = "/etc/hms-ffi/policy.json";

// The seed's §7.2 example, verbatim.
constexpr char kSeedRule[] = R"({
  "service": "hms.emr.patient",
  "method": "GetPatient",
  "allowed_roles": ["doctor", "nurse", "administrator"],
  "denied_roles": [],
  "requires_mfa": false,
  "audit_level": "standard"
})";

std::shared_ptr<const Policy> mustParse(const std::string& json,
                                        const std::string& baseDir = "/nonexistent") {
  auto p = Policy::parse(json, kOrigin, baseDir);
  EXPECT_TRUE(p.ok()) << p.status().toString();
  return p.ok() ? p.value() : nullptr;
}

Status parseError(const std::string& json, const std::string& baseDir = "/nonexistent") {
  auto p = Policy::parse(json, kOrigin, baseDir);
  EXPECT_FALSE(p.ok()) << "parsed: " << json;
  return p.status();
}

Identity person(uid_t uid, gid_t gid = 100, std::vector<gid_t> groups = {}) {
  Identity who;
  who.uid = uid;
  who.gid = gid;
  who.pid = 42;
  who.groups = std::move(groups);
  who.name = "hms-api";
  return who;
}

Identity withToken(Identity who, std::vector<std::string> roles,
                   std::vector<std::string> amr = {}) {
  who.hasToken = true;
  who.token.issuer = "hms-auth";
  who.token.subject = "alice";
  who.token.roles = std::move(roles);
  who.token.amr = std::move(amr);
  return who;
}

MethodDecision decide(const Policy& policy, const Identity& who, std::string_view service,
                      std::string_view method) {
  return policy.decide(who, policy.rolesOf(who), service, method);
}

// A P-256 public key in PEM, as an issuer publishes it.
std::string p256PublicPem() { return testing::newKeyPair("P-256").publicPem; }

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "hms-policy-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& content) const {
    std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary) << content;
    return file;
  }

 private:
  std::string path_;
};

// ---- the seed's rule -----------------------------------------------------------------------

void expectSeedDecisions(const Policy& policy) {
  EXPECT_EQ(policy.ruleCount(), 1u);
  for (const char* role : {"doctor", "nurse", "administrator"}) {
    auto d = decide(policy, withToken(person(1001), {role}), "hms.emr.patient", "getPatient");
    EXPECT_TRUE(d.allowed) << role << ": " << d.reason;
    EXPECT_EQ(d.audit, AuditLevel::kStandard);
    EXPECT_EQ(d.reason, "");
  }
  auto d = decide(policy, withToken(person(1001), {"clerk"}), "hms.emr.patient", "getPatient");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "needs one of the roles doctor, nurse, administrator; the caller has clerk");
}

TEST(PolicyLoad, SeedRuleAsABareArray) {
  auto policy = mustParse(std::string("[") + kSeedRule + "]");
  ASSERT_TRUE(policy);
  expectSeedDecisions(*policy);
  EXPECT_TRUE(policy->issuers().empty());
  EXPECT_TRUE(policy->requiredClaims().empty());
}

TEST(PolicyLoad, SeedRuleUnderRules) {
  auto policy =
      mustParse(std::string(R"({"permission_policy": "strict", "rules": [)") + kSeedRule + "]}");
  ASSERT_TRUE(policy);
  expectSeedDecisions(*policy);
  EXPECT_EQ(policy->origin(), kOrigin);
}

TEST(PolicyLoad, EmptyPolicyDeniesEverything) {
  auto policy = mustParse("{}");
  ASSERT_TRUE(policy);
  auto d = decide(*policy, withToken(person(0), {"doctor"}), "hms.emr.patient", "getPatient");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason,
            std::string("no rule of ") + kOrigin + " allows any method of hms.emr.patient");
  EXPECT_EQ(policy->mayProvide(person(0), "hms.emr.patient").code(), StatusCode::kPermissionDenied);
  ASSERT_TRUE(mustParse("[]"));
}

TEST(PolicyLoad, TheHeadersExampleFile) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string pem = p256PublicPem();
  ASSERT_FALSE(pem.empty());
  dir.write("auth.pub.pem", pem);
  const std::string json = R"({
    "permission_policy": "strict",
    "required_claims": ["sub", "role"],
    "token_issuers": [{"issuer": "hms-auth", "algorithm": "ES256",
                       "public_key_file": "auth.pub.pem", "audience": "hms-ffi"}],
    "role_assignments": [{"role": "doctor", "users": ["root"], "uids": [1001],
                          "groups": ["root"], "gids": [2001], "token_roles": ["physician"]}],
    "providers": [{"service": "hms.emr.patient", "users": ["root"], "uids": [], "groups": [],
                   "gids": [], "roles": []}],
    "topics": [{"topic": "hms.emr.vitals", "publish": {"uids": [7]},
                "subscribe": {"roles": ["doctor"]}}],
    "rules": [{"service": "hms.emr.patient", "method": "GetPatient",
               "allowed_roles": ["doctor", "nurse", "administrator"], "denied_roles": [],
               "requires_mfa": false, "audit_level": "standard"}]
  })";
  auto policy = mustParse(json, dir.path());
  ASSERT_TRUE(policy);
  ASSERT_EQ(policy->issuers().size(), 1u);
  const TokenIssuer& issuer = policy->issuers()[0];
  EXPECT_EQ(issuer.issuer, "hms-auth");
  EXPECT_EQ(issuer.algorithm, "ES256");
  EXPECT_EQ(issuer.audience, "hms-ffi");
  EXPECT_EQ(issuer.keyFile, dir.path() + "/auth.pub.pem");
  EXPECT_EQ(issuer.publicKeyPem, pem);
  EXPECT_EQ(policy->requiredClaims(), (std::vector<std::string>{"sub", "role"}));
  EXPECT_EQ(policy->ruleCount(), 1u);
  EXPECT_TRUE(decide(*policy, person(1001), "hms.emr.patient", "getPatient").allowed);
  EXPECT_TRUE(policy->mayProvide(person(0, 0), "hms.emr.patient").isOk());
  EXPECT_TRUE(policy->mayPublish(person(7), "hms.emr.vitals").isOk());
  EXPECT_TRUE(policy->maySubscribe(person(1001), "hms.emr.vitals").isOk());
}

TEST(PolicyLoad, LoadReadsTheFileAndResolvesKeysNextToIt) {
  TempDir dir;
  dir.write("auth.pub.pem", p256PublicPem());
  const std::string file = dir.write("policy.json", R"({
    "token_issuers": [{"issuer": "hms-auth", "public_key_file": "auth.pub.pem"}],
    "rules": [{"service": "s", "method": "*", "allowed_roles": ["*"]}]})");
  auto policy = Policy::load(file);
  ASSERT_TRUE(policy.ok()) << policy.status().toString();
  EXPECT_EQ((*policy)->origin(), file);
  ASSERT_EQ((*policy)->issuers().size(), 1u);
  EXPECT_EQ((*policy)->issuers()[0].keyFile, dir.path() + "/auth.pub.pem");
  EXPECT_EQ((*policy)->issuers()[0].algorithm, "ES256");  // the default
}

TEST(PolicyLoad, MissingFileIsAFailedPrecondition) {
  auto policy = Policy::load("/nonexistent/hms-ffi/policy.json");
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(policy.status().message().rfind(
                "/nonexistent/hms-ffi/policy.json: No such file or directory; ", 0),
            0u)
      << policy.status().message();
}

TEST(PolicyLoad, DirectoryIsAFailedPrecondition) {
  TempDir dir;
  auto policy = Policy::load(dir.path());
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(policy.status().message().find(dir.path() + ": is a directory"), std::string::npos)
      << policy.status().message();
}

// ---- load errors: each names the entry ---------------------------------------------------------

void expectError(const std::string& json, const std::string& expected,
                 const std::string& baseDir = "/nonexistent") {
  Status s = parseError(json, baseDir);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.toString();
  EXPECT_EQ(s.message(), expected);
}

void expectErrorPrefix(const std::string& json, const std::string& prefix,
                       const std::string& baseDir = "/nonexistent") {
  Status s = parseError(json, baseDir);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.toString();
  EXPECT_EQ(s.message().rfind(prefix, 0), 0u) << s.message();
}

const std::string kO = std::string(kOrigin) + ": ";

TEST(PolicyLoadError, UnknownKeyAtTheTopLevel) {
  expectErrorPrefix(R"({"rulez": []})", kO + "unknown field 'rulez' in hms.ffi.policy.PolicyFile "
                                             "(fields: permission_policy, required_claims, ");
}

TEST(PolicyLoadError, UnknownKeyInARule) {
  expectErrorPrefix(
      R"({"rules": [{"service": "s", "method": "m", "allowed_roles": ["a"]},
                    {"service": "s", "method": "m", "alowed_roles": ["a"]}]})",
      kO + "rules[1]: unknown field 'alowed_roles' in hms.ffi.policy.PolicyRule (fields: "
           "service, method, allowed_roles, denied_roles, requires_mfa, audit_level)");
}

TEST(PolicyLoadError, UnknownKeyInTopicPrincipals) {
  expectErrorPrefix(R"({"topics": [{"topic": "t", "publish": {"user": ["root"]}}]})",
                    kO + "topics[0].publish: unknown field 'user'");
}

TEST(PolicyLoadError, CamelCaseKeysAreNotTheFormat) {
  expectErrorPrefix(R"([{"service": "s", "method": "m", "allowedRoles": ["a"]}])",
                    kO + "rules[0]: unknown field 'allowedRoles'");
}

TEST(PolicyLoadError, WrongType) {
  expectError(R"([{"service": "s", "method": "m", "allowed_roles": ["a"], "requires_mfa": "yes"}])",
              kO + "rules[0].requires_mfa: expected true or false, got a string");
  expectError(R"({"rules": {"service": "s"}})", kO + "rules: expected an array, got an object");
  expectError(R"({"providers": [{"service": "s", "uids": [-1]}]})",
              kO + "providers[0].uids[0]: -1 is out of range for UInt32");
  expectError(R"("rules")", kO + "expected a JSON object or array at the top level, got a string");
}

TEST(PolicyLoadError, BadAuditLevel) {
  expectError(R"([{"service": "s", "method": "a", "allowed_roles": ["r"]},
                  {"service": "s", "method": "b", "allowed_roles": ["r"]},
                  {"service": "s", "method": "c", "allowed_roles": ["r"],
                   "audit_level": "verbose"}])",
              kO + "rules[2].audit_level: 'verbose' is not one of none, standard, detailed");
}

TEST(PolicyLoadError, BadPermissionPolicy) {
  expectError(R"({"permission_policy": "permissive"})",
              kO + "permission_policy: 'permissive' is not supported: only \"strict\" is (what no "
                   "rule allows is denied)");
}

TEST(PolicyLoadError, BadRoleName) {
  expectError(R"([{"service": "s", "method": "m", "allowed_roles": ["doctor", "head nurse"]}])",
              kO + "rules[0].allowed_roles[1]: 'head nurse' is not a role name (non-empty; "
                   "letters, digits and _ . : - only; or \"*\" for every caller)");
  expectErrorPrefix(R"([{"service": "s", "method": "m", "denied_roles": [""]}])",
                    kO + "rules[0].denied_roles[0]: '' is not a role name");
  expectErrorPrefix(R"({"role_assignments": [{"role": "*", "uids": [1]}]})",
                    kO + "role_assignments[0].role: '*' is not a role name");
  expectErrorPrefix(R"({"role_assignments": [{"role": "a", "token_roles": ["x/y"]}]})",
                    kO + "role_assignments[0].token_roles[0]: 'x/y' is not a role name");
}

TEST(PolicyLoadError, RuleThatDoesNothing) {
  expectError(R"([{"service": "s", "method": "m", "allowed_roles": [], "denied_roles": []}])",
              kO + "rules[0]: neither allowed_roles nor denied_roles: the rule would do nothing");
  expectErrorPrefix(R"([{"method": "m", "allowed_roles": ["a"]}])", kO + "rules[0].service: ");
  expectErrorPrefix(R"([{"service": "s", "allowed_roles": ["a"]}])", kO + "rules[0].method: ");
}

TEST(PolicyLoadError, UnknownRequiredClaim) {
  expectError(R"({"required_claims": ["sub", "email"]})",
              kO + "required_claims[1]: 'email' is not one of sub, role, amr, aud, exp");
}

TEST(PolicyLoadError, UnknownUser) {
  expectError(R"({"providers": [{"service": "s", "users": ["root", "nosuchuser-hmsffi"]}]})",
              kO + "providers[0].users[1]: no user 'nosuchuser-hmsffi' on this host");
}

TEST(PolicyLoadError, UnknownGroup) {
  expectError(R"({"role_assignments": [{"role": "a", "groups": ["nosuchgroup-hmsffi"]}]})",
              kO + "role_assignments[0].groups[0]: no group 'nosuchgroup-hmsffi' on this host");
  expectError(
      R"({"topics": [{"topic": "t", "subscribe": {"groups": ["root", "nosuchgroup-hmsffi"]}}]})",
      kO + "topics[0].subscribe.groups[1]: no group 'nosuchgroup-hmsffi' on this host");
}

TEST(PolicyLoadError, DuplicateIds) {
  expectError(R"({"providers": [{"service": "s"}, {"service": "s"}]})",
              kO + "providers[1].service: 's' already has an entry (providers[0]); give each id "
                   "one");
  expectErrorPrefix(R"({"topics": [{"topic": "t"}, {"topic": "u"}, {"topic": "t"}]})",
                    kO + "topics[2].topic: 't' already has an entry (topics[0])");
}

TEST(PolicyLoadError, MissingKeyFile) {
  TempDir dir;
  expectError(R"({"token_issuers": [{"issuer": "hms-auth", "public_key_file": "gone.pem"}]})",
              kO + "token_issuers[0].public_key_file: " + dir.path() +
                  "/gone.pem: No such file or directory; give a PEM public key file the broker "
                  "may read",
              dir.path());
}

TEST(PolicyLoadError, KeyFileThatIsNotAPem) {
  TempDir dir;
  dir.write("bad.pem", "hello, I am not a key\n");
  expectErrorPrefix(
      R"({"token_issuers": [{"issuer": "hms-auth", "public_key_file": "bad.pem"}]})",
      kO + "token_issuers[0].public_key_file: " + dir.path() + "/bad.pem: ", dir.path());
}

TEST(PolicyLoadError, DuplicateIssuerAndBadAlgorithm) {
  TempDir dir;
  dir.write("k.pem", p256PublicPem());
  expectError(R"({"token_issuers": [{"issuer": "a", "public_key_file": "k.pem"},
                                    {"issuer": "a", "public_key_file": "k.pem"}]})",
              kO + "token_issuers[1].issuer: 'a' is given twice (also token_issuers[0])",
              dir.path());
  expectError(R"({"token_issuers": [{"issuer": "a", "algorithm": "HS256",
                                     "public_key_file": "k.pem"}]})",
              kO + "token_issuers[0].algorithm: 'HS256' is not supported: only ES256 (ECDSA "
                   "P-256) is",
              dir.path());
  expectErrorPrefix(R"({"token_issuers": [{"issuer": "a"}]})",
                    kO + "token_issuers[0].public_key_file: missing", dir.path());
}

TEST(PolicyLoadError, MalformedJsonGivesTheLine) {
  expectError("{\n  \"rules\": [\n    {\"service\": \"s\",, }\n  ]\n}",
              kO + "malformed JSON: expected a member name in double quotes at line 3, column 21");
  expectError("[\n  {\"service\": \"s\"\n",
              kO + "malformed JSON: unexpected end of input at line 3, "
                   "column 1");
}

// ---- decisions -----------------------------------------------------------------------------

TEST(PolicyDecide, DenyBeatsAllow) {
  auto policy = mustParse(R"([
    {"service": "s", "method": "*", "allowed_roles": ["doctor"]},
    {"service": "s", "method": "getPatient", "denied_roles": ["intern"]}])");
  ASSERT_TRUE(policy);
  EXPECT_TRUE(decide(*policy, withToken(person(1), {"doctor"}), "s", "getPatient").allowed);
  auto d = decide(*policy, withToken(person(1), {"doctor", "intern"}), "s", "getPatient");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "the role intern is denied");
  // The deny rule names one method only.
  EXPECT_TRUE(decide(*policy, withToken(person(1), {"doctor", "intern"}), "s", "other").allowed);
}

TEST(PolicyDecide, StarDeniesEveryone) {
  auto policy = mustParse(R"([
    {"service": "s", "method": "*", "allowed_roles": ["*"]},
    {"service": "s", "method": "drop", "denied_roles": ["*"]}])");
  ASSERT_TRUE(policy);
  EXPECT_TRUE(decide(*policy, person(1), "s", "get").allowed);  // "*": every caller
  auto d = decide(*policy, withToken(person(1), {"admin"}), "s", "drop");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "every caller is denied s.drop");
}

TEST(PolicyDecide, StarMethod) {
  auto policy = mustParse(R"([{"service": "s", "method": "*", "allowed_roles": ["ops"]}])");
  ASSERT_TRUE(policy);
  EXPECT_TRUE(decide(*policy, withToken(person(1), {"ops"}), "s", "anything").allowed);
  EXPECT_TRUE(decide(*policy, withToken(person(1), {"ops"}), "s", "else").allowed);
  EXPECT_FALSE(decide(*policy, withToken(person(1), {"ops"}), "t", "anything").allowed);
  auto d = decide(*policy, person(1), "s", "x");
  EXPECT_EQ(d.reason, "needs the role ops; the caller has no role");
}

TEST(PolicyDecide, FirstLetterCaseOnly) {
  auto policy =
      mustParse(R"([{"service": "s", "method": "GetPatient", "allowed_roles": ["doctor"]}])");
  ASSERT_TRUE(policy);
  const Identity doctor = withToken(person(1), {"doctor"});
  EXPECT_TRUE(decide(*policy, doctor, "s", "getPatient").allowed);
  EXPECT_TRUE(decide(*policy, doctor, "s", "GetPatient").allowed);
  auto d = decide(*policy, doctor, "s", "getpatient");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, std::string("no rule of ") + kOrigin + " allows s.getpatient");
  EXPECT_FALSE(decide(*policy, doctor, "s", "get").allowed);
  EXPECT_FALSE(decide(*policy, doctor, "s", "").allowed);
}

TEST(PolicyDecide, RequiresMfa) {
  auto policy = mustParse(
      R"([{"service": "s", "method": "m", "allowed_roles": ["doctor"], "requires_mfa": true}])");
  ASSERT_TRUE(policy);
  EXPECT_TRUE(decide(*policy, withToken(person(1), {"doctor"}, {"pwd", "mfa"}), "s", "m").allowed);
  auto d = decide(*policy, withToken(person(1), {"doctor"}, {"pwd"}), "s", "m");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "requires MFA (the caller's token amr has no 'mfa')");
  // A role from an assignment, no token at all.
  auto assigned = mustParse(R"({"role_assignments": [{"role": "doctor", "uids": [5]}],
      "rules": [{"service": "s", "method": "m", "allowed_roles": ["doctor"],
                 "requires_mfa": true}]})");
  ASSERT_TRUE(assigned);
  d = decide(*assigned, person(5), "s", "m");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "requires MFA (the caller has no token)");
}

TEST(PolicyDecide, ARuleWithoutMfaStillAllows) {
  auto policy = mustParse(R"([
    {"service": "s", "method": "m", "allowed_roles": ["doctor"], "requires_mfa": true},
    {"service": "s", "method": "*", "allowed_roles": ["doctor"]}])");
  ASSERT_TRUE(policy);
  EXPECT_TRUE(decide(*policy, withToken(person(1), {"doctor"}), "s", "m").allowed);
}

TEST(PolicyDecide, AuditLevelIsTheHighestOfTheApplyingRules) {
  auto policy = mustParse(R"([
    {"service": "s", "method": "*", "allowed_roles": ["a"], "audit_level": "none"},
    {"service": "s", "method": "read", "allowed_roles": ["a"]},
    {"service": "s", "method": "write", "allowed_roles": ["a"], "audit_level": "detailed"},
    {"service": "t", "method": "*", "allowed_roles": ["a"], "audit_level": "none"}])");
  ASSERT_TRUE(policy);
  const Identity a = withToken(person(1), {"a"});
  EXPECT_EQ(decide(*policy, a, "s", "list").audit, AuditLevel::kNone);
  EXPECT_EQ(decide(*policy, a, "s", "read").audit, AuditLevel::kStandard);  // absent: standard
  EXPECT_EQ(decide(*policy, a, "s", "write").audit, AuditLevel::kDetailed);
  EXPECT_EQ(decide(*policy, a, "t", "x").audit, AuditLevel::kNone);
  EXPECT_STREQ(auditLevelName(AuditLevel::kDetailed), "detailed");
  EXPECT_STREQ(auditLevelName(AuditLevel::kStandard), "standard");
  EXPECT_STREQ(auditLevelName(AuditLevel::kNone), "none");
}

TEST(PolicyDecide, DefaultDeny) {
  auto policy = mustParse(R"([{"service": "s", "method": "get", "allowed_roles": ["a"]},
                              {"service": "s", "method": "put", "denied_roles": ["b"]}])");
  ASSERT_TRUE(policy);
  const Identity a = withToken(person(1), {"a"});
  auto d = decide(*policy, a, "other", "get");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, std::string("no rule of ") + kOrigin + " allows any method of other");
  d = decide(*policy, a, "s", "list");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, std::string("no rule of ") + kOrigin + " allows s.list");
  // Only a deny rule applies: nothing allows.
  d = decide(*policy, a, "s", "put");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, std::string("no rule of ") + kOrigin + " allows s.put");
}

// ---- roles -------------------------------------------------------------------------------------

TEST(PolicyRoles, FromEverySource) {
  auto policy = mustParse(R"({"role_assignments": [
    {"role": "by-uid", "uids": [1001]},
    {"role": "by-user", "users": ["root"]},
    {"role": "by-gid", "gids": [2001]},
    {"role": "by-group", "groups": ["root"]},
    {"role": "by-token-role", "token_roles": ["physician"]},
    {"role": "zz", "uids": [1001], "gids": [2001]}]})");
  ASSERT_TRUE(policy);
  EXPECT_EQ(policy->rolesOf(person(1001)), (std::vector<std::string>{"by-uid", "zz"}));
  EXPECT_EQ(policy->rolesOf(person(0, 100)), (std::vector<std::string>{"by-user"}));
  EXPECT_EQ(policy->rolesOf(person(5, 2001)), (std::vector<std::string>{"by-gid", "zz"}));
  // A supplementary group counts as the primary one does.
  EXPECT_EQ(policy->rolesOf(person(5, 100, {7, 2001})), (std::vector<std::string>{"by-gid", "zz"}));
  EXPECT_EQ(policy->rolesOf(person(5, 100, {0})), (std::vector<std::string>{"by-group"}));
  // Token roles are roles themselves and select token_roles assignments; sorted, unique.
  EXPECT_EQ(policy->rolesOf(withToken(person(5), {"physician", "nurse", "nurse"})),
            (std::vector<std::string>{"by-token-role", "nurse", "physician"}));
  EXPECT_TRUE(policy->rolesOf(person(5)).empty());
  // A token role only counts with a token.
  Identity noToken = person(5);
  noToken.token.roles = {"physician"};
  EXPECT_TRUE(policy->rolesOf(noToken).empty());
}

TEST(PolicyRoles, AssignedRolesReachTheRules) {
  auto policy = mustParse(R"({"role_assignments": [{"role": "doctor", "groups": ["root"]}],
      "rules": [{"service": "s", "method": "m", "allowed_roles": ["doctor"]}]})");
  ASSERT_TRUE(policy);
  EXPECT_TRUE(decide(*policy, person(1000, 0), "s", "m").allowed);
  EXPECT_FALSE(decide(*policy, person(1000, 1000), "s", "m").allowed);
}

// ---- providers and topics ----------------------------------------------------------------------

TEST(PolicyAccess, MayProvide) {
  auto policy = mustParse(R"({"providers": [
      {"service": "hms.emr.patient", "users": ["root"], "gids": [4100001], "roles": ["emr"]},
      {"service": "hms.nobody"}]})");
  ASSERT_TRUE(policy);
  EXPECT_TRUE(policy->mayProvide(person(0), "hms.emr.patient").isOk());
  EXPECT_TRUE(policy->mayProvide(person(1001, 5, {4100001}), "hms.emr.patient").isOk());
  EXPECT_TRUE(policy->mayProvide(withToken(person(1001), {"emr"}), "hms.emr.patient").isOk());
  Status s = policy->mayProvide(person(1001), "hms.emr.patient");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), std::string("uid 1001 (pid 42, 'hms-api') may not provide "
                                     "hms.emr.patient: the policy ") +
                             kOrigin +
                             " lets only users root, groups 4100001, roles emr provide it");
  s = policy->mayProvide(person(1001), "hms.emr.vitals");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), std::string("uid 1001 (pid 42, 'hms-api') may not provide "
                                     "hms.emr.vitals: the policy ") +
                             kOrigin + " has no providers entry that names it");
  s = policy->mayProvide(person(0), "hms.nobody");
  EXPECT_EQ(s.message(), std::string("uid 0 (pid 42, 'hms-api') may not provide hms.nobody: the "
                                     "policy ") +
                             kOrigin + " lets no one provide it");
}

TEST(PolicyAccess, MayPublishAndSubscribe) {
  auto policy = mustParse(R"({"topics": [
      {"topic": "hms.emr.vitals", "publish": {"uids": [4100007]},
       "subscribe": {"groups": ["root"], "roles": ["doctor"]}},
      {"topic": "hms.public", "publish": {"roles": ["*"]}, "subscribe": {"roles": ["*"]}}]})");
  ASSERT_TRUE(policy);
  EXPECT_TRUE(policy->mayPublish(person(4100007), "hms.emr.vitals").isOk());
  EXPECT_TRUE(policy->maySubscribe(person(9, 0), "hms.emr.vitals").isOk());
  EXPECT_TRUE(policy->maySubscribe(withToken(person(9), {"doctor"}), "hms.emr.vitals").isOk());
  EXPECT_TRUE(policy->mayPublish(person(9), "hms.public").isOk());
  EXPECT_TRUE(policy->maySubscribe(person(9), "hms.public").isOk());

  Identity anonymous = person(9);
  anonymous.name.clear();
  Status s = policy->mayPublish(anonymous, "hms.emr.vitals");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), std::string("uid 9 (pid 42) may not publish hms.emr.vitals: the policy ") +
                             kOrigin + " lets only users 4100007 publish it");
  s = policy->maySubscribe(person(9), "hms.emr.vitals");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), std::string("uid 9 (pid 42, 'hms-api') may not subscribe to "
                                     "hms.emr.vitals: the policy ") +
                             kOrigin + " lets only groups root, roles doctor subscribe to it");
  s = policy->mayPublish(person(4100007), "hms.other");
  EXPECT_EQ(s.message(),
            std::string("uid 4100007 (pid 42, 'hms-api') may not publish hms.other: the "
                        "policy ") +
                kOrigin + " has no topics entry that names it");
  s = policy->maySubscribe(person(4100007), "hms.other");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
}

TEST(PolicyAccess, ClientNameIsQuotedSafely) {
  auto policy = mustParse("{}");
  ASSERT_TRUE(policy);
  Identity who = person(3);
  who.name = "evil\n'name'";
  Status s = policy->mayProvide(who, "x");
  EXPECT_EQ(s.message().rfind("uid 3 (pid 42, 'evil\\x0a\\x27name\\x27') may not provide x", 0), 0u)
      << s.message();
}

// ---- robustness --------------------------------------------------------------------------------

// Deterministic mutations of valid files: whatever the bytes, parse() answers OK or
// INVALID_ARGUMENT, never throws or crashes (ASan runs this in CI).
TEST(PolicyFuzz, MutatedFilesNeverCrash) {
  const std::vector<std::string> seeds = {
      std::string("[") + kSeedRule + "]",
      R"({"permission_policy": "strict", "required_claims": ["sub", "role"],
          "role_assignments": [{"role": "doctor", "users": ["root"], "uids": [1001],
                                "groups": ["root"], "gids": [2001], "token_roles": ["md"]}],
          "providers": [{"service": "hms.emr.patient", "uids": [0], "roles": ["emr"]}],
          "topics": [{"topic": "hms.emr.vitals", "publish": {"uids": [7]},
                      "subscribe": {"roles": ["*"]}}],
          "rules": [{"service": "hms.emr.patient", "method": "*", "allowed_roles": ["doctor"],
                     "denied_roles": ["intern"], "requires_mfa": true,
                     "audit_level": "detailed"}]})",
      R"({"token_issuers": [{"issuer": "a", "algorithm": "ES256", "public_key_file": "k.pem",
                            "audience": "x"}], "rules": []})",
  };
  const std::string alphabet = "{}[]\":,_*0123456789-e.tfnul \n\\abcdrsx\x80\xff";
  std::mt19937 rng(20261130);
  const auto start = std::chrono::steady_clock::now();
  size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string text = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = rng() % text.size();
      switch (rng() % 5) {
        case 0:  // flip bits of one byte
          text[at] = static_cast<char>(text[at] ^ static_cast<char>(1u << (rng() % 8)));
          break;
        case 1:  // truncate
          text.resize(at);
          break;
        case 2:  // insert a JSON-ish character
          text.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
        case 3:  // delete a run
          text.erase(at, 1 + rng() % 8);
          break;
        default:  // duplicate a slice somewhere else
          text.insert(rng() % text.size(), text.substr(at, 1 + rng() % 32));
          break;
      }
    }
    Result<std::shared_ptr<const Policy>> r(Status(StatusCode::kUnknown, "not run"));
    ASSERT_NO_THROW(r = Policy::parse(text, kOrigin, "/nonexistent")) << text;
    if (r.ok()) {
      ++accepted;
      // A policy that loads must also decide without trouble.
      const Policy& p = **r;
      auto who = withToken(person(1001, 2001, {0}), {"md", "doctor"}, {"mfa"});
      (void)p.decide(who, p.rolesOf(who), "hms.emr.patient", "getPatient");
      (void)p.mayProvide(who, "hms.emr.patient");
      (void)p.maySubscribe(who, "hms.emr.vitals");
    } else {
      ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().toString();
      ASSERT_EQ(r.status().message().rfind(kO, 0), 0u) << r.status().message();
    }
  }
  EXPECT_GT(accepted, 0u);  // the mutations leave some files valid: the walk is exercised
  RecordProperty(
      "seconds",
      std::to_string(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()));
}

// Callers of other hosts (docs/gateway.md): a gateway the policy names may bring them from the
// hosts it names, with the home roles it accepts; nobody else may, from nowhere else.
TEST(RemoteCallers, TheNamedGatewayBringsCallersOfTheNamedHosts_WithTheAcceptedRolesOnly) {
  auto p = mustParse(R"({
    "remote_callers": [
      {"gateways": {"uids": [990]}, "hosts": ["host-a"], "roles": ["doctor", "nurse"]},
      {"gateways": {"uids": [990]}, "hosts": ["*"], "roles": ["auditor"]},
      {"gateways": {"uids": [991]}, "hosts": ["host-c"], "roles": ["*"]}
    ],
    "rules": [{"service": "hms.emr.patient", "method": "*", "allowed_roles": ["doctor"]}]
  })");
  ASSERT_NE(p, nullptr);
  const Identity gateway = person(990);
  auto roles = p->remoteRoles(gateway, {}, "host-a", {"doctor", "clerk", "auditor"});
  ASSERT_TRUE(roles.ok()) << roles.status().toString();
  EXPECT_EQ(*roles, (std::vector<std::string>{"auditor", "doctor"}));
  // Another host: only what the "*" entry accepts.
  roles = p->remoteRoles(gateway, {}, "host-b", {"doctor", "auditor"});
  ASSERT_TRUE(roles.ok());
  EXPECT_EQ(*roles, (std::vector<std::string>{"auditor"}));
  // A client the policy does not name as a gateway, or a host its entries do not name.
  auto denied = p->remoteRoles(person(1000), {}, "host-a", {"doctor"});
  EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(denied.status().message().find("may not open channels for callers of host host-a"),
            std::string::npos)
      << denied.status().message();
  EXPECT_EQ(p->remoteRoles(person(991), {}, "host-a", {"doctor"}).status().code(),
            StatusCode::kPermissionDenied);
  roles = p->remoteRoles(person(991), {}, "host-c", {"doctor", "clerk"});
  ASSERT_TRUE(roles.ok());
  EXPECT_EQ(*roles, (std::vector<std::string>{"clerk", "doctor"}));
}

TEST(RemoteCallers, WithoutAnEntry_NoGatewayMaySpeakForAnyone) {
  auto p = mustParse(R"([{"service": "hms.emr.patient", "method": "*", "allowed_roles": ["*"]}])");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->remoteRoles(person(0), {}, "host-a", {"doctor"}).status().code(),
            StatusCode::kPermissionDenied);
}

TEST(RemoteCallers, IncompleteEntriesAreRefused) {
  EXPECT_NE(parseError(R"({"remote_callers": [{"hosts": ["a"], "roles": ["*"]}]})")
                .message()
                .find("remote_callers[0].gateways: missing"),
            std::string::npos);
  EXPECT_NE(parseError(R"({"remote_callers": [{"gateways": {"uids": [1]}, "roles": ["*"]}]})")
                .message()
                .find("remote_callers[0].hosts: missing or empty"),
            std::string::npos);
  EXPECT_NE(parseError(R"({"remote_callers": [{"gateways": {"uids": [1]}, "hosts": ["a"]}]})")
                .message()
                .find("remote_callers[0].roles: missing or empty"),
            std::string::npos);
}

}  // namespace
}  // namespace hms::ffi::broker
