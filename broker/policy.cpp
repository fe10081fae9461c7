// The access policy (policy.hpp). The file is read by the project's strict JSON codec into the
// structs of schemas/hms/ffi/policy.capnp (unknown keys, wrong types and malformed JSON are
// refused there, with the entry's path), then checked and compiled here into the tables that the
// decisions read. Nothing is resolved at decision time except names for a denial's message.
#include "policy.hpp"

#include <capnp/message.h>
#include <fcntl.h>
#include <grp.h>
#include <kj/exception.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "hms/ffi/policy.capnp.h"
#include "json_codec.hpp"

namespace hms::ffi::broker {

namespace {

// A policy is a few kilobytes; the caps only keep a wrong path (a log, a device) from being
// read whole into memory.
constexpr size_t kMaxPolicyBytes = size_t{16} << 20;
constexpr size_t kMaxKeyFileBytes = size_t{64} << 10;

constexpr const char* kRequiredClaimNames[] = {"sub", "role", "amr", "aud", "exp"};

std::string text(capnp::Text::Reader t) {
  return std::string(t.begin(), t.size());
}

// A value from the file or a client as a message quotes it: non-printable bytes escaped, long
// values cut short, so that a message stays one readable line whatever the input.
std::string quote(std::string_view s) {
  constexpr size_t kMax = 64;
  static const char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  if (s.size() > kMax) out += "...";
  return out + "'";
}

std::string join(const std::vector<std::string>& items, const char* separator = ", ") {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool isRoleChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

bool isRoleName(std::string_view role) {
  return !role.empty() && std::all_of(role.begin(), role.end(), isRoleChar);
}

// A caller's roles come from its token as the issuer wrote them: quoted when not plain names.
std::string showRoles(const std::vector<std::string>& roles) {
  std::vector<std::string> shown;
  for (const auto& r : roles) shown.push_back(isRoleName(r) ? r : quote(r));
  return join(shown);
}

// getpwnam_r/getgrnam_r and their by-id twins need a caller's buffer whose size sysconf only
// suggests (ERANGE: larger). `get` copies what it needs out before the buffer goes: the entry's
// pointers point into it.
template <class Entry, class Key, class Fn, class Get>
bool lookupField(Fn fn, Key key, Get get, int& error) {
  Entry entry{};
  std::vector<char> buf(16384);
  for (;;) {
    Entry* found = nullptr;
    int rc = fn(key, &entry, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (size_t{1} << 22)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    error =
        (found != nullptr || rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM)
            ? 0
            : rc;
    if (found == nullptr) return false;
    get(*found);
    return true;
  }
}

std::string userName(uid_t uid) {
  std::string name;
  int error = 0;
  if (!lookupField<passwd>(
          getpwuid_r, uid, [&](const passwd& p) { name = p.pw_name; }, error)) {
    return std::to_string(uid);  // a uid no user has: shown as its number
  }
  return name;
}

std::string groupName(gid_t gid) {
  std::string name;
  int error = 0;
  if (!lookupField<group>(
          getgrgid_r, gid, [&](const group& g) { name = g.gr_name; }, error)) {
    return std::to_string(gid);
  }
  return name;
}

// "uid 1001 (pid 42, 'hms-api')": the kernel's facts first; the client's name is only a hint.
std::string caller(const Identity& who) {
  std::string out = "uid " + std::to_string(who.uid) + " (pid " + std::to_string(who.pid);
  if (!who.name.empty()) out += ", " + quote(who.name);
  return out + ")";
}

Result<std::string> readFile(const std::string& path, size_t maxBytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status(StatusCode::kFailedPrecondition, std::strerror(errno));
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return Status(StatusCode::kFailedPrecondition, "is a directory, not a file");
  }
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return Status(StatusCode::kFailedPrecondition, std::strerror(e));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > maxBytes) {
      ::close(fd);
      return Status(StatusCode::kFailedPrecondition,
                    "larger than " + std::to_string(maxBytes >> 10) + " KiB");
    }
  }
  ::close(fd);
  return out;
}

AuditLevel maxLevel(AuditLevel a, AuditLevel b) {
  return static_cast<uint8_t>(a) >= static_cast<uint8_t>(b) ? a : b;
}

// "GetPatient" names getPatient: the seed writes methods in Go's exported case, Cap'n Proto
// schemas in camelCase. Only the first letter's case is set aside.
bool methodMatches(std::string_view ruleMethod, std::string_view method) {
  if (ruleMethod == "*" || ruleMethod == method) return true;
  if (ruleMethod.size() != method.size() || method.empty()) return false;
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  return lower(ruleMethod[0]) == lower(method[0]) && ruleMethod.substr(1) == method.substr(1);
}

// Checks and compiles the file's structs. Errors name the entry as the file spells it.
class Compiler {
 public:
  Compiler(const std::string& origin, const std::string& baseDir)
      : origin_(origin), baseDir_(baseDir) {}

  Status permissionPolicy(wire::PolicyFile::Reader file) {
    if (!file.hasPermissionPolicy()) return Status();
    std::string value = text(file.getPermissionPolicy());
    if (value == "strict") return Status();
    return error(
        "permission_policy",
        quote(value) + " is not supported: only \"strict\" is (what no rule allows is denied)");
  }

  Status requiredClaims(capnp::List<capnp::Text>::Reader list, std::vector<std::string>& out) {
    for (uint32_t i = 0; i < list.size(); ++i) {
      const std::string path = "required_claims[" + std::to_string(i) + "]";
      std::string claim = text(list[i]);
      if (std::find(std::begin(kRequiredClaimNames), std::end(kRequiredClaimNames), claim) ==
          std::end(kRequiredClaimNames)) {
        return error(path, quote(claim) + " is not one of sub, role, amr, aud, exp");
      }
      if (contains(out, claim)) return error(path, quote(claim) + " is given twice");
      out.push_back(std::move(claim));
    }
    return Status();
  }

  Status issuers(capnp::List<wire::PolicyTokenIssuer>::Reader list, std::vector<TokenIssuer>& out) {
    for (uint32_t i = 0; i < list.size(); ++i) {
      const std::string path = "token_issuers[" + std::to_string(i) + "]";
      auto entry = list[i];
      TokenIssuer issuer;
      issuer.issuer = text(entry.getIssuer());
      if (issuer.issuer.empty()) {
        return error(path + ".issuer", "missing or empty: the `iss` its tokens carry");
      }
      for (size_t j = 0; j < out.size(); ++j) {
        if (out[j].issuer == issuer.issuer) {
          return error(path + ".issuer", quote(issuer.issuer) + " is given twice (also " +
                                             "token_issuers[" + std::to_string(j) + "])");
        }
      }
      issuer.algorithm = entry.hasAlgorithm() ? text(entry.getAlgorithm()) : "ES256";
      if (issuer.algorithm != "ES256") {
        return error(path + ".algorithm",
                     quote(issuer.algorithm) + " is not supported: only ES256 (ECDSA P-256) is");
      }
      std::string file = text(entry.getPublicKeyFile());
      if (file.empty()) {
        return error(path + ".public_key_file", "missing or empty: the issuer's public key (PEM)");
      }
      issuer.keyFile = file[0] == '/' || baseDir_.empty() ? file : baseDir_ + "/" + file;
      auto pem = readFile(issuer.keyFile, kMaxKeyFileBytes);
      if (!pem.ok()) {
        return error(path + ".public_key_file",
                     issuer.keyFile + ": " + pem.status().message() +
                         "; give a PEM public key file the broker may read");
      }
      issuer.publicKeyPem = std::move(pem.value());
      Status key = checkPublicKey(issuer.publicKeyPem, issuer.algorithm);
      if (!key) return error(path + ".public_key_file", issuer.keyFile + ": " + key.message());
      issuer.audience = text(entry.getAudience());
      out.push_back(std::move(issuer));
    }
    return Status();
  }

  Status assignments(capnp::List<wire::PolicyRoleAssignment>::Reader list,
                     std::vector<Policy::RoleAssignment>& out) {
    for (uint32_t i = 0; i < list.size(); ++i) {
      const std::string path = "role_assignments[" + std::to_string(i) + "]";
      auto entry = list[i];
      Policy::RoleAssignment a;
      a.role = text(entry.getRole());
      if (!entry.hasRole()) return error(path + ".role", "missing: the role it assigns");
      if (Status s = roleName(path + ".role", a.role, false); !s) return s;
      if (Status s = people(path, entry.getUsers(), entry.getUids(), entry.getGroups(),
                            entry.getGids(), a.who);
          !s) {
        return s;
      }
      if (Status s =
              roleList(path + ".token_roles", entry.getTokenRoles(), false, a.who.tokenRoles);
          !s) {
        return s;
      }
      out.push_back(std::move(a));
    }
    return Status();
  }

  Status providers(capnp::List<wire::PolicyProvider>::Reader list,
                   std::vector<Policy::ProviderRule>& out) {
    for (uint32_t i = 0; i < list.size(); ++i) {
      const std::string path = "providers[" + std::to_string(i) + "]";
      auto entry = list[i];
      Policy::ProviderRule p;
      p.service = text(entry.getService());
      if (Status s = id(
              path + ".service", p.service, out, [](auto& r) { return r.service; }, "providers");
          !s) {
        return s;
      }
      if (Status s = people(path, entry.getUsers(), entry.getUids(), entry.getGroups(),
                            entry.getGids(), p.who);
          !s) {
        return s;
      }
      if (Status s = roleList(path + ".roles", entry.getRoles(), true, p.who.roles); !s) return s;
      out.push_back(std::move(p));
    }
    return Status();
  }

  Status topics(capnp::List<wire::PolicyTopic>::Reader list, std::vector<Policy::TopicRule>& out) {
    for (uint32_t i = 0; i < list.size(); ++i) {
      const std::string path = "topics[" + std::to_string(i) + "]";
      auto entry = list[i];
      Policy::TopicRule t;
      t.topic = text(entry.getTopic());
      if (Status s = id(
              path + ".topic", t.topic, out, [](auto& r) { return r.topic; }, "topics");
          !s) {
        return s;
      }
      if (Status s = principals(path + ".publish", entry.getPublish(), t.publish); !s) return s;
      if (Status s = principals(path + ".subscribe", entry.getSubscribe(), t.subscribe); !s) {
        return s;
      }
      out.push_back(std::move(t));
    }
    return Status();
  }

  Status remoteCallers(capnp::List<wire::PolicyRemoteCallers>::Reader list,
                       std::vector<Policy::RemoteCallers>& out) {
    for (uint32_t i = 0; i < list.size(); ++i) {
      const std::string path = "remote_callers[" + std::to_string(i) + "]";
      auto entry = list[i];
      Policy::RemoteCallers r;
      if (!entry.hasGateways()) {
        return error(path + ".gateways", "missing: who may open channels for remote callers");
      }
      if (Status s = principals(path + ".gateways", entry.getGateways(), r.gateways); !s) return s;
      for (auto h : entry.getHosts()) {
        const std::string host = text(h);
        if (host.empty()) return error(path + ".hosts", "a host name is empty");
        addUnique(r.hosts, host);
      }
      if (r.hosts.empty()) {
        return error(path + ".hosts", "missing or empty: the hosts whose callers it may bring");
      }
      if (Status s = roleList(path + ".roles", entry.getRoles(), true, r.roles); !s) return s;
      if (r.roles.empty()) {
        return error(path + ".roles",
                     "missing or empty: the roles remote callers may bring (\"*\": all)");
      }
      out.push_back(std::move(r));
    }
    return Status();
  }

  Status rules(capnp::List<wire::PolicyRule>::Reader list, std::vector<Policy::Rule>& out) {
    for (uint32_t i = 0; i < list.size(); ++i) {
      const std::string path = "rules[" + std::to_string(i) + "]";
      auto entry = list[i];
      Policy::Rule r;
      r.index = i;
      r.service = text(entry.getService());
      if (r.service.empty()) {
        return error(path + ".service", "missing or empty: the service id the rule is about");
      }
      r.method = text(entry.getMethod());
      if (r.method.empty()) {
        return error(path + ".method",
                     "missing or empty: a method name, or \"*\" for every method");
      }
      if (Status s =
              roleList(path + ".allowed_roles", entry.getAllowedRoles(), true, r.allowedRoles);
          !s) {
        return s;
      }
      if (Status s = roleList(path + ".denied_roles", entry.getDeniedRoles(), true, r.deniedRoles);
          !s) {
        return s;
      }
      if (r.allowedRoles.empty() && r.deniedRoles.empty()) {
        return error(path, "neither allowed_roles nor denied_roles: the rule would do nothing");
      }
      r.requiresMfa = entry.getRequiresMfa();
      if (entry.hasAuditLevel()) {
        std::string level = text(entry.getAuditLevel());
        if (level == "none") {
          r.audit = AuditLevel::kNone;
        } else if (level == "standard") {
          r.audit = AuditLevel::kStandard;
        } else if (level == "detailed") {
          r.audit = AuditLevel::kDetailed;
        } else {
          return error(path + ".audit_level",
                       quote(level) + " is not one of none, standard, detailed");
        }
      }
      out.push_back(std::move(r));
    }
    return Status();
  }

 private:
  Status error(const std::string& path, const std::string& what) const {
    return Status(StatusCode::kInvalidArgument, origin_ + ": " + path + ": " + what);
  }

  // A service or topic id: non-empty, one entry per id (two would leave the reader guessing
  // whether they add up or the last wins).
  template <class Entries, class Key>
  Status id(const std::string& path, const std::string& value, const Entries& earlier, Key key,
            const char* listName) const {
    if (value.empty()) return error(path, "missing or empty: the id the entry is about");
    for (size_t j = 0; j < earlier.size(); ++j) {
      if (key(earlier[j]) == value) {
        return error(path, quote(value) + " already has an entry (" + listName + "[" +
                               std::to_string(j) + "]); give each id one");
      }
    }
    return Status();
  }

  Status roleName(const std::string& path, const std::string& role, bool starAllowed) const {
    if (starAllowed && role == "*") return Status();
    if (isRoleName(role)) return Status();
    return error(path, quote(role) +
                           " is not a role name (non-empty; letters, digits and _ . : - " +
                           (starAllowed ? "only; or \"*\" for every caller)" : "only)"));
  }

  Status roleList(const std::string& path, capnp::List<capnp::Text>::Reader list, bool starAllowed,
                  std::vector<std::string>& out) const {
    for (uint32_t i = 0; i < list.size(); ++i) {
      std::string role = text(list[i]);
      if (Status s = roleName(path + "[" + std::to_string(i) + "]", role, starAllowed); !s) {
        return s;
      }
      if (!contains(out, role)) out.push_back(std::move(role));
    }
    return Status();
  }

  // users/uids/groups/gids, names resolved now: the policy means the accounts as they are when it
  // is loaded, and a decision must not wait on the name service.
  Status people(const std::string& path, capnp::List<capnp::Text>::Reader users,
                capnp::List<uint32_t>::Reader uids, capnp::List<capnp::Text>::Reader groups,
                capnp::List<uint32_t>::Reader gids, Policy::Principals& out) const {
    for (uint32_t i = 0; i < users.size(); ++i) {
      const std::string entry = path + ".users[" + std::to_string(i) + "]";
      std::string name = text(users[i]);
      uid_t uid = 0;
      int err = 0;
      bool found = !name.empty() &&
                   lookupField<passwd>(
                       getpwnam_r, name.c_str(), [&](const passwd& p) { uid = p.pw_uid; }, err);
      if (!found) {
        return error(entry, err != 0
                                ? "cannot look up user " + quote(name) + ": " + std::strerror(err)
                                : "no user " + quote(name) + " on this host");
      }
      addUnique(out.uids, uid);
    }
    for (uint32_t uid : uids) addUnique(out.uids, static_cast<uid_t>(uid));
    for (uint32_t i = 0; i < groups.size(); ++i) {
      const std::string entry = path + ".groups[" + std::to_string(i) + "]";
      std::string name = text(groups[i]);
      gid_t gid = 0;
      int err = 0;
      bool found = !name.empty() &&
                   lookupField<group>(
                       getgrnam_r, name.c_str(), [&](const group& g) { gid = g.gr_gid; }, err);
      if (!found) {
        return error(entry, err != 0
                                ? "cannot look up group " + quote(name) + ": " + std::strerror(err)
                                : "no group " + quote(name) + " on this host");
      }
      addUnique(out.gids, gid);
    }
    for (uint32_t gid : gids) addUnique(out.gids, static_cast<gid_t>(gid));
    return Status();
  }

  Status principals(const std::string& path, wire::PolicyPrincipals::Reader in,
                    Policy::Principals& out) const {
    if (Status s = people(path, in.getUsers(), in.getUids(), in.getGroups(), in.getGids(), out);
        !s) {
      return s;
    }
    return roleList(path + ".roles", in.getRoles(), true, out.roles);
  }

  template <class T>
  static void addUnique(std::vector<T>& v, T value) {
    if (std::find(v.begin(), v.end(), value) == v.end()) v.push_back(value);
  }

  const std::string& origin_;
  const std::string& baseDir_;
};

// The tables are sorted by id so that a decision finds its entries by binary search; the file's
// order only matters for messages (Rule::index keeps it).
template <class T, class Key>
void sortBy(std::vector<T>& v, Key key) {
  std::stable_sort(v.begin(), v.end(), [&](const T& a, const T& b) { return key(a) < key(b); });
}

template <class T, class Key>
const T* findBy(const std::vector<T>& v, std::string_view id, Key key) {
  auto it = std::lower_bound(v.begin(), v.end(), id,
                             [&](const T& e, std::string_view k) { return key(e) < k; });
  return it != v.end() && key(*it) == id ? &*it : nullptr;
}

}  // namespace

const char* auditLevelName(AuditLevel level) {
  switch (level) {
    case AuditLevel::kNone:
      return "none";
    case AuditLevel::kStandard:
      return "standard";
    case AuditLevel::kDetailed:
      return "detailed";
  }
  return "unknown";
}

bool Policy::Principals::matches(const Identity& who, const std::vector<std::string>& held) const {
  if (std::find(uids.begin(), uids.end(), who.uid) != uids.end()) return true;
  for (gid_t g : gids) {
    if (g == who.gid || std::find(who.groups.begin(), who.groups.end(), g) != who.groups.end()) {
      return true;
    }
  }
  for (const auto& r : roles) {
    if (r == "*" || contains(held, r)) return true;
  }
  if (who.hasToken) {
    for (const auto& r : tokenRoles) {
      if (contains(who.token.roles, r)) return true;
    }
  }
  return false;
}

std::string Policy::Principals::describe() const {
  std::vector<std::string> parts;
  if (!uids.empty()) {
    std::vector<std::string> names;
    for (uid_t u : uids) names.push_back(userName(u));
    parts.push_back("users " + join(names));
  }
  if (!gids.empty()) {
    std::vector<std::string> names;
    for (gid_t g : gids) names.push_back(groupName(g));
    parts.push_back("groups " + join(names));
  }
  if (!roles.empty()) parts.push_back("roles " + join(roles));
  if (!tokenRoles.empty()) parts.push_back("token roles " + join(tokenRoles));
  return parts.empty() ? "no one" : join(parts);
}

Result<std::shared_ptr<const Policy>> Policy::load(const std::string& path,
                                                   const PolicyOverlay* overlay) {
  auto json = readFile(path, kMaxPolicyBytes);
  if (!json.ok()) {
    return Status(StatusCode::kFailedPrecondition,
                  path + ": " + json.status().message() +
                      "; check the path given to --policy and that the broker's user may read it");
  }
  const size_t slash = path.rfind('/');
  const std::string baseDir = slash == std::string::npos ? "."
                              : slash == 0               ? "/"
                                                         : path.substr(0, slash);
  return parse(json.value(), path, baseDir, overlay);
}

Result<std::shared_ptr<const Policy>> Policy::parse(std::string_view json,
                                                    const std::string& origin,
                                                    const std::string& baseDir,
                                                    const PolicyOverlay* overlay) {
  try {
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<wire::PolicyFile>();
    detail::JsonInputOptions options;
    options.snakeCaseKeys = true;
    options.topLevelArrayField = "rules";  // the seed's bare rule list
    if (Status s = detail::jsonToStruct(json, capnp::toDynamic(root), options); !s) {
      return Status(StatusCode::kInvalidArgument, origin + ": " + s.message());
    }
    const auto file = root.asReader();

    auto policy = std::make_shared<Policy>();
    policy->origin_ = origin;
    Compiler c(origin, baseDir);
    Status s = c.permissionPolicy(file);
    if (s) s = c.requiredClaims(file.getRequiredClaims(), policy->requiredClaims_);
    if (s) s = c.issuers(file.getTokenIssuers(), policy->issuers_);
    if (s) s = c.assignments(file.getRoleAssignments(), policy->assignments_);
    if (s) s = c.providers(file.getProviders(), policy->providers_);
    if (s) s = c.topics(file.getTopics(), policy->topics_);
    if (s) s = c.rules(file.getRules(), policy->rules_);
    if (s) s = c.remoteCallers(file.getRemoteCallers(), policy->remoteCallers_);
    if (!s) return s;
    if (overlay != nullptr && !overlay->json.empty()) {
      capnp::MallocMessageBuilder overlayMessage;
      auto over = overlayMessage.initRoot<wire::PolicyFile>();
      detail::JsonInputOptions overlayOptions;
      overlayOptions.snakeCaseKeys = true;
      if (Status bad = detail::jsonToStruct(overlay->json, capnp::toDynamic(over), overlayOptions);
          !bad) {
        return Status(StatusCode::kInvalidArgument, overlay->origin + ": " + bad.message());
      }
      const auto o = over.asReader();
      if (o.hasRoleAssignments() || o.hasProviders() || o.hasTopics() || o.hasRules() ||
          o.hasRemoteCallers()) {
        return Status(StatusCode::kInvalidArgument,
                      overlay->origin +
                          ": only permission_policy, required_claims and token_issuers may be "
                          "given here; roles, providers, topics and rules belong in the policy file");
      }
      Compiler oc(overlay->origin, overlay->baseDir);
      Status os = oc.permissionPolicy(o);
      if (os && o.hasRequiredClaims()) {
        policy->requiredClaims_.clear();
        os = oc.requiredClaims(o.getRequiredClaims(), policy->requiredClaims_);
      }
      if (os && o.hasTokenIssuers()) {
        policy->issuers_.clear();
        os = oc.issuers(o.getTokenIssuers(), policy->issuers_);
      }
      if (!os) return os;
    }

    sortBy(policy->providers_,
           [](const ProviderRule& p) -> const std::string& { return p.service; });
    sortBy(policy->topics_, [](const TopicRule& t) -> const std::string& { return t.topic; });
    sortBy(policy->rules_, [](const Rule& r) -> const std::string& { return r.service; });
    return std::shared_ptr<const Policy>(std::move(policy));
  } catch (const kj::Exception& e) {
    auto d = e.getDescription();
    return Status(StatusCode::kInvalidArgument,
                  origin + ": cannot read the policy: " + std::string(d.cStr(), d.size()));
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kResourceExhausted, origin + ": out of memory reading the policy");
  }
}

std::vector<std::string> Policy::rolesOf(const Identity& who) const {
  std::vector<std::string> out;
  if (who.hasToken) {
    for (const auto& r : who.token.roles) {
      if (!r.empty()) out.push_back(r);
    }
  }
  static const std::vector<std::string> kNoRoles;
  for (const auto& a : assignments_) {
    if (a.who.matches(who, kNoRoles)) out.push_back(a.role);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

namespace {

Status mayAct(const Policy& policy, const Identity& who, const Policy::Principals* entry,
              const char* verb, const char* listName, std::string_view id) {
  const std::string denied =
      caller(who) + " may not " + verb + " " + std::string(id) + ": the policy " + policy.origin();
  if (entry == nullptr) {
    return Status(StatusCode::kPermissionDenied,
                  denied + " has no " + listName + " entry that names it");
  }
  if (entry->matches(who, policy.rolesOf(who))) return Status();
  const std::string only = entry->describe();
  return Status(StatusCode::kPermissionDenied,
                denied + (only == "no one" ? " lets no one " + std::string(verb) + " it"
                                           : " lets only " + only + " " + verb + " it"));
}

}  // namespace

Status Policy::mayProvide(const Identity& who, std::string_view serviceId) const {
  const ProviderRule* p = findBy(
      providers_, serviceId, [](const ProviderRule& e) -> const std::string& { return e.service; });
  return mayAct(*this, who, p != nullptr ? &p->who : nullptr, "provide", "providers", serviceId);
}

Status Policy::mayPublish(const Identity& who, std::string_view topicId) const {
  const TopicRule* t =
      findBy(topics_, topicId, [](const TopicRule& e) -> const std::string& { return e.topic; });
  return mayAct(*this, who, t != nullptr ? &t->publish : nullptr, "publish", "topics", topicId);
}

Status Policy::maySubscribe(const Identity& who, std::string_view topicId) const {
  const TopicRule* t =
      findBy(topics_, topicId, [](const TopicRule& e) -> const std::string& { return e.topic; });
  return mayAct(*this, who, t != nullptr ? &t->subscribe : nullptr, "subscribe to", "topics",
                topicId);
}

Result<std::vector<std::string>> Policy::remoteRoles(
    const Identity& gateway, const std::vector<std::string>& gatewayRoles, std::string_view host,
    const std::vector<std::string>& homeRoles) const {
  bool any = false;
  std::vector<std::string> out;
  for (const RemoteCallers& r : remoteCallers_) {
    if (!r.gateways.matches(gateway, gatewayRoles)) continue;
    if (!contains(r.hosts, "*") && !contains(r.hosts, std::string(host))) continue;
    any = true;
    for (const auto& role : homeRoles) {
      if ((contains(r.roles, "*") || contains(r.roles, role)) && !contains(out, role)) {
        out.push_back(role);
      }
    }
  }
  if (!any) {
    return Status(StatusCode::kPermissionDenied,
                  "uid " + std::to_string(gateway.uid) + " (pid " + std::to_string(gateway.pid) +
                      ", '" + gateway.name + "') may not open channels for callers of host " +
                      std::string(host) + ": " + origin_ +
                      " has no remote_callers entry naming both");
  }
  std::sort(out.begin(), out.end());
  return out;
}

MethodDecision Policy::decide(const Identity& who, const std::vector<std::string>& roles,
                              std::string_view serviceId, std::string_view method) const {
  MethodDecision d;
  auto first = std::lower_bound(rules_.begin(), rules_.end(), serviceId,
                                [](const Rule& r, std::string_view s) { return r.service < s; });
  auto last = first;
  while (last != rules_.end() && last->service == serviceId) ++last;

  std::vector<const Rule*> applying;
  for (auto it = first; it != last; ++it) {
    if (methodMatches(it->method, method)) applying.push_back(&*it);
  }
  const std::string full = std::string(serviceId) + "." + std::string(method);
  if (applying.empty()) {
    d.reason = first == last
                   ? "no rule of " + origin_ + " allows any method of " + std::string(serviceId)
                   : "no rule of " + origin_ + " allows " + full;
    return d;
  }
  // The file's order, for messages that list roles.
  std::sort(applying.begin(), applying.end(),
            [](const Rule* a, const Rule* b) { return a->index < b->index; });

  for (const Rule* r : applying) d.audit = maxLevel(d.audit, r->audit);

  // Deny beats allow: any applying rule denying a held role decides.
  std::vector<std::string> deniedHeld;
  bool everyoneDenied = false;
  for (const Rule* r : applying) {
    for (const auto& role : r->deniedRoles) {
      if (role == "*") {
        everyoneDenied = true;
      } else if (contains(roles, role) && !contains(deniedHeld, role)) {
        deniedHeld.push_back(role);
      }
    }
  }
  if (!deniedHeld.empty()) {
    std::sort(deniedHeld.begin(), deniedHeld.end());
    d.reason = deniedHeld.size() == 1 ? "the role " + deniedHeld[0] + " is denied"
                                      : "the roles " + join(deniedHeld) + " are denied";
    return d;
  }
  if (everyoneDenied) {
    d.reason = "every caller is denied " + full;
    return d;
  }

  bool hasMfa = who.hasToken && contains(who.token.amr, "mfa");
  bool roleAllowedButNoMfa = false;
  std::vector<std::string> wanted;  // the roles any applying rule allows, in the file's order
  for (const Rule* r : applying) {
    bool roleOk = false;
    for (const auto& role : r->allowedRoles) {
      if (role == "*" || contains(roles, role)) roleOk = true;
      if (!contains(wanted, role)) wanted.push_back(role);
    }
    if (!roleOk) continue;
    if (r->requiresMfa && !hasMfa) {
      roleAllowedButNoMfa = true;
      continue;
    }
    d.allowed = true;
    d.reason.clear();
    return d;
  }
  if (roleAllowedButNoMfa) {
    d.reason = who.hasToken ? "requires MFA (the caller's token amr has no 'mfa')"
                            : "requires MFA (the caller has no token)";
  } else if (wanted.empty()) {
    d.reason = "no rule of " + origin_ + " allows " + full;
  } else {
    d.reason = (wanted.size() == 1 ? "needs the role " + wanted[0]
                                   : "needs one of the roles " + join(wanted)) +
               "; the caller has " + (roles.empty() ? std::string("no role") : showRoles(roles));
  }
  return d;
}

}  // namespace hms::ffi::broker
