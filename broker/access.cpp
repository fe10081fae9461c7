// The broker's access control (docs/security.md): who a client is, what the policy lets it do,
// the grants it sends services, reloads and the audit trail. The decisions are the policy's
// (policy.hpp); this file applies them to connections, registrations and channels.
#include <capnp/serialize.h>
#include <grp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <filesystem>

#include "broker.hpp"
#include "codec.hpp"
#include "logging.hpp"

namespace hms::ffi::broker {

using detail::AuditField;

namespace {

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ",") + s;
  return out;
}

wire::AuditLevel wireLevel(AuditLevel level) {
  switch (level) {
    case AuditLevel::kNone:
      return wire::AuditLevel::NONE;
    case AuditLevel::kStandard:
      return wire::AuditLevel::STANDARD;
    case AuditLevel::kDetailed:
      return wire::AuditLevel::DETAILED;
  }
  return wire::AuditLevel::STANDARD;
}

}  // namespace

Status Broker::loadPolicy() {
  if (options_.policyPath.empty()) {
    spdlog::warn(
        "no access policy (--policy): every local process that can open {} may provide any "
        "service and call every method; see docs/security.md",
        socketPath_);
    return Status();
  }
  auto policy = Policy::load(options_.policyPath, &options_.policyOverlay);
  if (!policy.ok()) return policy.status();
  policy_ = std::move(*policy);
  spdlog::info("access policy {}: {} rule(s), {} token issuer(s); what no rule allows is denied",
               policy_->origin(), policy_->ruleCount(), policy_->issuers().size());
  return Status();
}

Status Broker::openAuditLog() {
  std::string fallback;
  const std::string dir = options_.stateDir.empty() ? defaultStateDir() : options_.stateDir;
  if (dir != ":memory:") fallback = (std::filesystem::path(dir) / "audit.jsonl").string();
  auto log = detail::AuditLog::open(options_.auditLog, fallback, "hms-ffid");
  if (!log.ok()) return log.status();
  audit_ = std::move(*log);
  spdlog::info("audit records go to {}", audit_->where());
  return Status();
}

void Broker::reload() {
  BrokerOptions next = options_;
  const std::string what = options_.configPath.empty() ? options_.policyPath : options_.configPath;
  if (reloadSource_) {
    auto read = reloadSource_();
    if (!read.ok()) {
      spdlog::error("SIGHUP: keeping the current configuration: {}", read.status().message());
      audit("reload", nullptr, read.status(), {{"config", what}});
      return;
    }
    next = std::move(*read);
  }
  std::shared_ptr<const Policy> policy;
  if (!next.policyPath.empty()) {
    auto loaded = Policy::load(next.policyPath, &next.policyOverlay);
    if (!loaded.ok()) {
      spdlog::error("SIGHUP: keeping the current configuration and policy: {}",
                    loaded.status().message());
      audit("reload", nullptr, loaded.status(), {{"policy", next.policyPath}});
      return;
    }
    policy = std::move(*loaded);
  } else if (policy_) {
    // Dropping enforcement while clients hold grants is not something a reload should do by
    // omission: the policy stays until a restart.
    spdlog::warn(
        "SIGHUP: the configuration names no policy any more; the current one stays in "
        "force until hms-ffid restarts");
    next.policyPath = options_.policyPath;
    next.policyOverlay = options_.policyOverlay;
    policy = policy_;
  } else if (!reloadSource_) {
    spdlog::info("SIGHUP: no policy file configured (--policy); nothing to reload");
    return;
  }
  // What only a restart changes is named, and left as it is.
  std::vector<std::string> fixed;
  if (next.socketPath != options_.socketPath) fixed.push_back("the socket path");
  if (next.registryBytes != options_.registryBytes) fixed.push_back("the registry size");
  if (next.stateDir != options_.stateDir) fixed.push_back("the state directory");
  if (next.transport != options_.transport) fixed.push_back("the transport");
  if (next.auditLog != options_.auditLog) fixed.push_back("the audit log");
  if (next.metricsListen != options_.metricsListen) fixed.push_back("the metrics endpoint");
  if (next.socketGroup != options_.socketGroup || next.socketMode != options_.socketMode) {
    fixed.push_back("the socket's group and mode");
  }
  for (const auto& f : fixed) {
    spdlog::warn("SIGHUP: {} changes only when hms-ffid restarts; it stays as it is", f);
  }
  options_.policyPath = next.policyPath;
  options_.policyOverlay = next.policyOverlay;
  options_.maxServicesPerClient = next.maxServicesPerClient;
  options_.maxTopicsPerClient = next.maxTopicsPerClient;
  options_.maxChannelsPerClient = next.maxChannelsPerClient;
  options_.maxSubscriptionsPerClient = next.maxSubscriptionsPerClient;
  options_.maxQueuedMessagesPerClient = next.maxQueuedMessagesPerClient;
  if (next.logFormat != options_.logFormat) {
    options_.logFormat = next.logFormat;
    setLogFormat(next.logFormat);
    spdlog::info("SIGHUP: log format {}", next.logFormat);
  }
  if (next.logLevel != options_.logLevel) {
    options_.logLevel = next.logLevel;
    spdlog::set_level(spdlog::level::from_str(next.logLevel));
    spdlog::info("SIGHUP: log level {}", next.logLevel);
  }
  audit("reload", nullptr, Status(), {{"config", what}});
  if (policy) applyPolicy(std::move(policy));
}

void Broker::applyPolicy(std::shared_ptr<const Policy> policy) {
  const bool changed = policy != policy_;
  policy_ = std::move(policy);
  if (changed) {
    spdlog::info("SIGHUP: access policy {} in force: {} rule(s), {} token issuer(s)",
                 policy_->origin(), policy_->ruleCount(), policy_->issuers().size());
  }
  // Tokens verify against the new issuers (a removed issuer or key ends its clients' sessions);
  // roles follow the new assignments. A client whose roles changed has its channels opened
  // again, so that its services see the caller as it now is.
  std::set<uint64_t> rolesChanged;
  const int64_t now = int64_t(::time(nullptr));
  for (auto& [id, c] : conns_) {
    if (!c->helloed || c->dropping) continue;
    if (!c->token.empty()) {
      auto claims = verifyToken(c->token, policy_->issuers(), policy_->requiredClaims(), now);
      if (!claims.ok()) {
        audit("revoke", c.get(),
              Status(StatusCode::kUnauthenticated,
                     "its token no longer verifies (policy reload): " + claims.status().message()));
        dropLater(id, "its token no longer verifies under the reloaded policy: " +
                          claims.status().message());
        continue;
      }
      c->identity.hasToken = true;
      c->identity.token = std::move(*claims);
    }
    auto roles = policy_->rolesOf(c->identity);
    if (roles != c->roles) rolesChanged.insert(id);
    c->roles = std::move(roles);
  }
  // What the new policy takes away ends now: registrations and topics their clients may no
  // longer hold, subscriptions, and every channel whose grant changed. Its caller's next call
  // opens it again and gets what the new policy gives (or PERMISSION_DENIED): a grant is never
  // edited in place, so a service never runs a call under half of one policy.
  std::vector<uint64_t> services, topics, subscriptions, channels;
  for (const auto& [key, svc] : services_) {
    auto conn = conns_.find(svc.clientId);
    if (conn != conns_.end() && !mayProvide(*conn->second, svc.id)) services.push_back(key);
  }
  for (const auto& [key, t] : topics_) {
    auto conn = conns_.find(t.publisherClient);
    if (conn != conns_.end() && !mayPublish(*conn->second, t.id)) topics.push_back(key);
  }
  for (const auto& [id, sub] : subscriptions_) {
    auto conn = conns_.find(sub.client);
    auto topic = topics_.find(sub.topicKey);
    if (conn != conns_.end() && topic != topics_.end() &&
        !maySubscribe(*conn->second, topic->second.id)) {
      subscriptions.push_back(id);
    }
  }
  for (const auto& [id, ch] : channels_) {
    auto caller = conns_.find(ch.callerClient);
    auto svc = services_.find(ch.serviceKey);
    if (caller == conns_.end() || svc == services_.end()) continue;
    auto who = granteeOf(*caller->second, ch.remote.get());
    if (!who.ok()) {  // its gateway may no longer speak for that host
      channels.push_back(id);
      continue;
    }
    const GrantDecision now = decideGrant(*who, svc->second);
    if (now.allowed != ch.allowed || now.audit != ch.audit ||
        rolesChanged.count(ch.callerClient) != 0) {
      channels.push_back(id);
    }
  }
  const Status revoked(StatusCode::kPermissionDenied, "the reloaded policy no longer allows it");
  for (uint64_t key : services) {
    const auto& svc = services_.at(key);
    audit("revoke", conns_.at(svc.clientId).get(), revoked, {{"service", svc.id}});
    const std::set<uint64_t> open = svc.channels;
    for (uint64_t id : open) {
      endChannelForPolicy(id, "its provider may no longer provide it (policy reload)");
    }
    removeService(key, detail::kEndClosed, "its provider may no longer provide it (policy reload)");
  }
  for (uint64_t key : topics) {
    const auto& t = topics_.at(key);
    audit("revoke", conns_.at(t.publisherClient).get(), revoked, {{"topic", t.id}});
    removeTopic(key, detail::kEndClosed, "its publisher may no longer publish it (policy reload)");
  }
  for (uint64_t id : subscriptions) {
    auto sub = subscriptions_.find(id);
    if (sub == subscriptions_.end()) continue;  // ended with its topic
    auto topic = topics_.find(sub->second.topicKey);
    audit("revoke", conns_.at(sub->second.client).get(), revoked,
          {{"topic", topic != topics_.end() ? topic->second.id : ""},
           {"subscription", std::to_string(id), true}});
    removeSubscription(id, detail::kEndClosed, "the policy no longer allows it (policy reload)");
  }
  for (uint64_t id : channels) {
    auto ch = channels_.find(id);
    if (ch == channels_.end()) continue;  // ended with its service
    auto svc = services_.find(ch->second.serviceKey);
    audit("revoke", conns_.at(ch->second.callerClient).get(),
          Status(StatusCode::kPermissionDenied, "the reloaded policy changed its grant"),
          {{"service", svc != services_.end() ? svc->second.id : ""},
           {"channel", std::to_string(id), true}});
    endChannelForPolicy(id, "the access policy changed");
  }
  if (!services.empty() || !topics.empty() || !subscriptions.empty() || !channels.empty()) {
    spdlog::warn(
        "policy reload revoked {} registration(s), {} topic(s), {} subscription(s) and {} "
        "channel(s)",
        services.size(), topics.size(), subscriptions.size(), channels.size());
  }
  publishRegistry();
}

void Broker::endChannelForPolicy(uint64_t channelId, const char* why) {
  auto it = channels_.find(channelId);
  if (it == channels_.end()) return;
  const uint64_t service = it->second.serviceClient;
  // Ended as if by the service (endChannel tells the caller), and the service told as well.
  endChannel(channelId, false, detail::kEndClosed, why);
  capnp::MallocMessageBuilder mb;
  auto cc = mb.initRoot<wire::BrokerMessage>().initEvent().initChannelClosed();
  cc.setChannelId(channelId);
  cc.setReason(why);
  sendEvent(service, mb);
}

void Broker::dropExpiredTokens() {
  const int64_t now = int64_t(::time(nullptr));
  for (auto& [id, c] : conns_) {
    const auto& t = c->identity.token;
    if (c->dropping || !c->identity.hasToken || t.expiresUnix == 0 || t.expiresUnix > now) continue;
    audit("revoke", c.get(), Status(StatusCode::kUnauthenticated, "its token expired"));
    spdlog::info("client {} '{}' (pid {}): its token (sub {}) expired; disconnecting it", id,
                 c->name, c->cred.pid, t.subject);
    dropLater(id, "its token expired");
  }
}

int Broker::waitTimeoutMs() {
  int64_t next = INT64_MAX;
  for (const auto& [id, c] : conns_) {
    const auto& t = c->identity.token;
    if (!c->dropping && c->identity.hasToken && t.expiresUnix > 0) {
      next = std::min(next, t.expiresUnix);
    }
  }
  nextTokenExpiry_ = next;
  int timeout = acceptPaused_ ? 1000 : -1;
  if (next != INT64_MAX) {
    // exp is in whole seconds: wake just after it has passed.
    const int64_t ms = (next - int64_t(::time(nullptr)) + 1) * 1000;
    const int until = int(std::clamp<int64_t>(ms, 0, 3'600'000));
    timeout = timeout < 0 ? until : std::min(timeout, until);
  }
  return timeout;
}

Status Broker::authenticate(Conn& c, const std::string& token) {
  Identity& id = c.identity;
  id.uid = c.cred.uid;
  id.gid = c.cred.gid;
  id.pid = c.cred.pid;
  id.groups = c.cred.groups;
  id.name = c.name;
  id.hasToken = false;
  id.token = {};
  if (!token.empty()) {
    if (!policy_) {
      // Nothing to verify it against: the token is ignored, as it grants nothing here.
      spdlog::debug("client {} '{}' presented a token; without a policy it is not used", c.id,
                    c.name);
    } else {
      auto claims = verifyToken(token, policy_->issuers(), policy_->requiredClaims(),
                                int64_t(::time(nullptr)));
      if (!claims.ok()) return claims.status();
      id.hasToken = true;
      id.token = std::move(*claims);
      c.token = token;
    }
  }
  c.roles = policy_ ? policy_->rolesOf(id) : std::vector<std::string>{};
  return Status();
}

Result<Broker::Grantee> Broker::granteeOf(const Conn& opener, const RemoteCaller* remote) const {
  Grantee g;
  if (remote == nullptr) {
    g.identity = opener.identity;
    g.roles = opener.roles;
    g.name = opener.name;
    return g;
  }
  // No uid, gid or groups of this host: principals by kernel identity never match a remote
  // caller, and a token it presented at home does not satisfy requires_mfa here.
  g.identity.uid = uid_t(-1);
  g.identity.gid = gid_t(-1);
  g.identity.pid = pid_t(remote->pid);
  g.identity.name = remote->name;
  g.name = remote->name;
  g.host = remote->host;
  g.remote = remote;
  if (!policy_) {
    g.roles = remote->homeRoles;  // informative: nothing is enforced
    return g;
  }
  auto roles = policy_->remoteRoles(opener.identity, opener.roles, remote->host, remote->homeRoles);
  if (!roles.ok()) return roles.status();
  g.roles = std::move(*roles);
  return g;
}

Broker::GrantDecision Broker::decideGrant(const Grantee& caller, const Service& svc) const {
  GrantDecision d;
  capnp::FlatArrayMessageReader reader(detail::asWords(svc.descriptor),
                                       detail::controlReaderOptions());
  const auto methods = reader.getRoot<wire::ServiceDescriptor>().getMethods();
  size_t size = 0;
  for (auto m : methods) size = std::max<size_t>(size, size_t(m.getOrdinal()) + 1);
  d.allowed.assign(size, policy_ == nullptr);
  d.audit.assign(size, AuditLevel::kNone);
  d.denied.assign(size, std::string());
  if (!policy_) {
    d.any = size > 0;
    return d;
  }
  std::string firstDenial;
  for (auto m : methods) {
    const uint16_t ordinal = m.getOrdinal();
    MethodDecision md = policy_->decide(caller.identity, caller.roles, svc.id, m.getName().cStr());
    d.allowed[ordinal] = md.allowed;
    d.audit[ordinal] = md.allowed ? md.audit : AuditLevel::kNone;
    if (md.allowed) {
      d.any = true;
    } else {
      d.denied[ordinal] = md.reason;
    }
  }
  return d;
}

void Broker::fillGrant(wire::Grant::Builder g, const Grantee& caller,
                       const GrantDecision& d) const {
  g.setEnforced(policy_ != nullptr);
  auto allowed = g.initAllowed(unsigned(d.allowed.size()));
  auto audit = g.initAudit(unsigned(d.audit.size()));
  auto denied = g.initDenied(unsigned(d.denied.size()));
  for (size_t i = 0; i < d.allowed.size(); ++i) {
    allowed.set(unsigned(i), d.allowed[i]);
    audit.set(unsigned(i), wireLevel(d.audit[i]));
    denied.set(unsigned(i), d.denied[i]);
  }
  auto who = g.initCaller();
  const Identity& id = caller.identity;
  if (caller.remote != nullptr) {
    // As the caller's own host knows it (its uid there, its token's claims there).
    const RemoteCaller& r = *caller.remote;
    who.setHost(r.host);
    who.setUid(r.uid);
    who.setGid(uint32_t(-1));
    who.setPid(r.pid);
    who.setAuthenticated(r.authenticated);
    who.setSubject(r.subject);
    who.setIssuer(r.issuer);
  } else {
    who.setUid(uint32_t(id.uid));
    who.setGid(uint32_t(id.gid));
    who.setPid(uint32_t(id.pid));
    auto groups = who.initGroups(unsigned(id.groups.size()));
    for (size_t i = 0; i < id.groups.size(); ++i) groups.set(unsigned(i), uint32_t(id.groups[i]));
    who.setAuthenticated(id.hasToken);
    if (id.hasToken) {
      who.setSubject(id.token.subject);
      who.setIssuer(id.token.issuer);
    }
  }
  who.setName(caller.name);
  auto roles = who.initRoles(unsigned(caller.roles.size()));
  for (size_t i = 0; i < caller.roles.size(); ++i) roles.set(unsigned(i), caller.roles[i]);
}

Status Broker::mayProvide(const Conn& c, const std::string& serviceId) const {
  return policy_ ? policy_->mayProvide(c.identity, serviceId) : Status();
}

Status Broker::mayPublish(const Conn& c, const std::string& topicId) const {
  return policy_ ? policy_->mayPublish(c.identity, topicId) : Status();
}

Status Broker::maySubscribe(const Conn& c, const std::string& topicId) const {
  return policy_ ? policy_->maySubscribe(c.identity, topicId) : Status();
}

void Broker::audit(const std::string& event, const Conn* c, const Status& outcome,
                   std::vector<AuditField> fields) {
  if (!audit_) return;
  std::vector<AuditField> all;
  all.reserve(fields.size() + 12);
  all.push_back({"event", event});
  all.push_back({"outcome", outcome.isOk() ? "allowed" : "denied"});
  if (!outcome.isOk()) {
    all.push_back({"code", std::string(statusCodeName(outcome.code()))});
    all.push_back({"reason", outcome.message()});
  }
  if (c) {
    all.push_back({"client_id", std::to_string(c->id), true});
    all.push_back({"client_name", c->name});
    all.push_back({"uid", std::to_string(c->cred.uid), true});
    all.push_back({"gid", std::to_string(c->cred.gid), true});
    all.push_back({"pid", std::to_string(c->cred.pid), true});
    if (c->identity.hasToken) {
      all.push_back({"sub", c->identity.token.subject});
      all.push_back({"iss", c->identity.token.issuer});
    }
    if (policy_) all.push_back({"roles", joined(c->roles)});
  }
  for (auto& f : fields) all.push_back(std::move(f));
  std::string message = "hms-ffid " + event + " " + (outcome.isOk() ? "allowed" : "denied");
  for (const auto& f : fields) {
    if (f.key == "service" || f.key == "topic") message += " " + f.key + " " + f.value;
  }
  if (c)
    message += " for uid " + std::to_string(c->cred.uid) + " pid " + std::to_string(c->cred.pid);
  if (!outcome.isOk()) message += ": " + outcome.message();
  audit_->record(message, all);
}

Status Broker::applySocketAccess(const std::string& path, bool isDirectory) {
  if (!options_.socketGroup.empty() && socketGid_ == gid_t(-1)) {
    const std::string& g = options_.socketGroup;
    char* end = nullptr;
    const unsigned long n = std::strtoul(g.c_str(), &end, 10);
    if (end != g.c_str() && *end == '\0') {
      socketGid_ = gid_t(n);
    } else {
      group grp{};
      group* found = nullptr;
      std::vector<char> buf(16384);
      if (::getgrnam_r(g.c_str(), &grp, buf.data(), buf.size(), &found) != 0 || !found) {
        return Status(StatusCode::kInvalidArgument,
                      "--socket-group '" + g + "' is not a group of this system (getent group)");
      }
      socketGid_ = found->gr_gid;
    }
  }
  if (socketGid_ != gid_t(-1) && ::chown(path.c_str(), uid_t(-1), socketGid_) != 0) {
    return Status(
        StatusCode::kFailedPrecondition,
        detail::errnoText(("cannot give " + path + " the group " + options_.socketGroup).c_str(),
                          errno) +
            "; the broker must run as root or be a member of that group");
  }
  // The socket: the configured mode (connect() needs write). The directory: the owner's
  // everything, and a way in (r-x) for whoever the socket's mode lets connect (0660: 0750).
  const mode_t sock = mode_t(options_.socketMode);
  const mode_t mode =
      isDirectory ? mode_t(0700 | ((sock & 0060) ? 0050 : 0) | ((sock & 0006) ? 0005 : 0)) : sock;
  if (::chmod(path.c_str(), mode) != 0) {
    return Status(StatusCode::kFailedPrecondition,
                  detail::errnoText(("chmod " + path).c_str(), errno));
  }
  return Status();
}

}  // namespace hms::ffi::broker
