// Access policy (docs/security.md#policy): who may call which method of which service, who may
// provide a service id, advertise or subscribe a topic, and who holds which role. Loaded from one
// JSON file (hms-ffid --policy FILE), compiled at load into tables, immutable afterwards: a reload
// builds a new Policy and swaps the pointer.
//
// The file: the seed's §7.2 rule list, alone (a JSON array of rules) or under "rules" in an
// object that also holds the rest (keys in snake_case, as in the seed):
//   {
//     "permission_policy": "strict",            // the only value: what no rule allows is denied
//     "required_claims": ["sub", "role"],       // a token lacking one is refused
//     "token_issuers": [{"issuer": "hms-auth", "algorithm": "ES256",
//                        "public_key_file": "auth.pub.pem", "audience": "hms-ffi"}],
//     "role_assignments": [{"role": "doctor", "users": ["alice"], "uids": [1001],
//                           "groups": ["clinicians"], "gids": [2001],
//                           "token_roles": ["physician"]}],
//     "providers": [{"service": "hms.emr.patient", "users": ["emr"], "uids": [], "groups": [],
//                    "gids": [], "roles": []}],
//     "topics": [{"topic": "hms.emr.vitals", "publish": {<principals>}, "subscribe": {<principals>}}],
//     "rules": [{"service": "hms.emr.patient", "method": "GetPatient",
//                "allowed_roles": ["doctor", "nurse", "administrator"], "denied_roles": [],
//                "requires_mfa": false, "audit_level": "standard"}]
//   }
// <principals> is {"users", "uids", "groups", "gids", "roles"}, any of them; a caller matching
// any entry matches. User and group names are resolved at load; a relative key file is relative
// to the policy file's directory.
//
// Roles: those of the caller's verified token (its `role`/`roles` claims) plus every
// role_assignment whose users/uids/groups/gids/token_roles match the caller. "*" in allowed_roles
// means every caller; in denied_roles, every caller too.
// Rules: a rule applies to (service, method) when its service is the id and its method is "*" or
// the method's name (the first letter's case aside: "GetPatient" names getPatient). Of the rules
// that apply: a caller holding any of their denied_roles is denied (deny beats allow); otherwise
// allowed if one of them allows a role the caller holds and, when that rule requires_mfa, the
// caller's token `amr` holds "mfa". No rule applying: denied (default deny). The audit level of
// an allowed method is the highest of the applying rules' ("none" < "standard" < "detailed").
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hms/ffi/status.hpp"
#include "token.hpp"

namespace hms::ffi::broker {

enum class AuditLevel : uint8_t { kNone = 0, kStandard = 1, kDetailed = 2 };
const char* auditLevelName(AuditLevel level);

// Who is at the other end of a connection: from the kernel at accept (SO_PEERCRED,
// SO_PEERGROUPS), plus the claims of a token verified at hello. Frozen for the connection's life.
struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::vector<gid_t> groups;  // supplementary groups, as the kernel reported them
  std::string name;           // the client's name (hello): informative only, never trusted
  bool hasToken = false;
  TokenClaims token;          // when hasToken
};

struct MethodDecision {
  bool allowed = false;
  AuditLevel audit = AuditLevel::kNone;
  std::string reason;  // denied: what was missing, e.g. "needs one of the roles doctor, nurse,
                       // administrator; the caller has clerk"
};

// Token settings given beside the policy file (the broker's configuration file: security.
// permission_policy, required_claims, token_issuers): each one given replaces the file's.
struct PolicyOverlay {
  std::string json;     // an object with any of permission_policy, required_claims, token_issuers
  std::string origin;   // names it in messages, e.g. "/etc/hms-ffi/hms-ffid.yaml: ffi.security"
  std::string baseDir;  // relative public_key_file paths are relative to it
};

class Policy {
 public:
  // Reads and compiles `path`. A missing or unreadable file: FAILED_PRECONDITION naming it.
  // Malformed JSON, an unknown key, a wrong type, an unknown audit level or permission policy, a
  // role name that is empty or has characters outside [A-Za-z0-9_.:-], an unknown user or group,
  // an unreadable or wrong key: INVALID_ARGUMENT "<path>: <entry>: <what>", e.g.
  // "/etc/hms-ffi/policy.json: rules[2].audit_level: 'verbose' is not one of none, standard,
  // detailed".
  static Result<std::shared_ptr<const Policy>> load(const std::string& path,
                                                    const PolicyOverlay* overlay = nullptr);
  // The same from text; `origin` names it in messages and relative key files are relative to
  // `baseDir`.
  static Result<std::shared_ptr<const Policy>> parse(std::string_view json,
                                                     const std::string& origin,
                                                     const std::string& baseDir,
                                                     const PolicyOverlay* overlay = nullptr);

  const std::string& origin() const { return origin_; }
  const std::vector<TokenIssuer>& issuers() const { return issuers_; }
  const std::vector<std::string>& requiredClaims() const { return requiredClaims_; }
  size_t ruleCount() const { return rules_.size(); }

  // The caller's roles (sorted, unique): its token's plus the role assignments it matches.
  std::vector<std::string> rolesOf(const Identity& who) const;

  // OK, or PERMISSION_DENIED saying who may instead.
  Status mayProvide(const Identity& who, std::string_view serviceId) const;
  Status mayPublish(const Identity& who, std::string_view topicId) const;
  Status maySubscribe(const Identity& who, std::string_view topicId) const;

  // The roles on this host of a caller of `host` holding `homeRoles` there, for whom the client
  // `gateway` (holding `gatewayRoles`) opens a channel: its home roles that the remote_callers
  // entries naming both the gateway and the host accept (sorted, unique). PERMISSION_DENIED when
  // no entry lets `gateway` speak for callers of `host`.
  Result<std::vector<std::string>> remoteRoles(const Identity& gateway,
                                               const std::vector<std::string>& gatewayRoles,
                                               std::string_view host,
                                               const std::vector<std::string>& homeRoles) const;

  // May `who` (holding `roles`, from rolesOf) call `method` of `serviceId`, and with what audit?
  MethodDecision decide(const Identity& who, const std::vector<std::string>& roles,
                        std::string_view serviceId, std::string_view method) const;

  // Implementation detail, public for the compiler in policy.cpp.
  struct Principals {
    std::vector<uid_t> uids;
    std::vector<gid_t> gids;  // groups resolved to gids
    std::vector<std::string> roles;
    std::vector<std::string> tokenRoles;  // role_assignments only
    bool matches(const Identity& who, const std::vector<std::string>& roles) const;
    std::string describe() const;  // "users alice, groups clinicians, roles doctor"
  };
  struct RoleAssignment {
    std::string role;
    Principals who;
  };
  struct Rule {
    std::string service, method;  // method "*": every method
    std::vector<std::string> allowedRoles, deniedRoles;
    bool requiresMfa = false;
    AuditLevel audit = AuditLevel::kStandard;
    size_t index = 0;  // in the file's rules list, for messages
  };
  struct TopicRule {
    std::string topic;
    Principals publish, subscribe;
  };
  struct ProviderRule {
    std::string service;
    Principals who;
  };
  struct RemoteCallers {
    Principals gateways;
    std::vector<std::string> hosts;  // "*": any
    std::vector<std::string> roles;  // "*": every home role
  };

 private:
  std::string origin_;
  std::vector<TokenIssuer> issuers_;
  std::vector<std::string> requiredClaims_;
  std::vector<RoleAssignment> assignments_;
  std::vector<ProviderRule> providers_;
  std::vector<TopicRule> topics_;
  std::vector<Rule> rules_;
  std::vector<RemoteCallers> remoteCallers_;
};

}  // namespace hms::ffi::broker
