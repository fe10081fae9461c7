#include "config.hpp"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <vector>

#include "audit.hpp"
#include "yaml_reader.hpp"

namespace hms::ffi::broker {
namespace {

// What the seed's §10.2 names that has no meaning on one host, and why: refused with the reason,
// rather than accepted and ignored.
const std::map<std::string, std::string>& notOnOneHost() {
  static const std::map<std::string, std::string> m = {
      {"ffi.registry.url",
       "the registry is the broker's own shared memory on this host; there is no registry server"},
      {"ffi.registry.cache_ttl", "clients read the registry segment live; nothing is cached"},
      {"ffi.registry.refresh_interval", "clients see registry changes at once; nothing is polled"},
      {"ffi.transport.in_process", "in-process calls are plain function calls, not the broker's"},
      {"ffi.security.token_validation_endpoint",
       "the broker verifies tokens itself against ffi.security.token_issuers' public keys"},
  };
  return m;
}

using Reader = detail::YamlReader;
using detail::position;

void appendJsonList(std::string& out, const std::vector<std::string>& items) {
  out += '[';
  for (size_t i = 0; i < items.size(); ++i) {
    if (i != 0) out += ',';
    detail::appendJsonString(out, items[i]);
  }
  out += ']';
}

// ffi.security: the policy file, the audit log, and the token settings that replace the policy
// file's (carried to Policy::load as JSON in the policy file's own format, so that they are
// checked by the same code).
Status readSecurity(const Reader& r, const YAML::Node& sec, BrokerOptions& o,
                    const std::string& baseDir) {
  if (Status s = r.keys(
          sec, "ffi.security",
          {"policy_file", "audit_log", "permission_policy", "required_claims", "token_issuers"});
      !s) {
    return s;
  }
  std::string json;
  auto member = [&](const char* name) {
    json += json.empty() ? "{" : ",";
    detail::appendJsonString(json, name);
    json += ':';
  };
  if (sec["policy_file"]) {
    if (Status s = r.text(sec["policy_file"], "ffi.security.policy_file", o.policyPath); !s)
      return s;
    if (!o.policyPath.empty() && o.policyPath[0] != '/')
      o.policyPath = baseDir + "/" + o.policyPath;
  }
  if (sec["audit_log"]) {
    if (Status s = r.text(sec["audit_log"], "ffi.security.audit_log", o.auditLog); !s) return s;
  }
  if (sec["permission_policy"]) {
    std::string v;
    if (Status s =
            r.choice(sec["permission_policy"], "ffi.security.permission_policy", {"strict"}, v);
        !s) {
      return s;
    }
    member("permission_policy");
    detail::appendJsonString(json, v);
  }
  if (sec["required_claims"]) {
    std::vector<std::string> claims;
    if (Status s = r.texts(sec["required_claims"], "ffi.security.required_claims", claims); !s) {
      return s;
    }
    member("required_claims");
    appendJsonList(json, claims);
  }
  if (const YAML::Node issuers = sec["token_issuers"]) {
    if (!issuers.IsSequence()) {
      return r.error(issuers, "ffi.security.token_issuers", "expected a list of issuers");
    }
    member("token_issuers");
    json += '[';
    for (size_t i = 0; i < issuers.size(); ++i) {
      const std::string path = "ffi.security.token_issuers[" + std::to_string(i) + "]";
      const YAML::Node is = issuers[i];
      if (Status s = r.keys(is, path, {"issuer", "algorithm", "public_key_file", "audience"}); !s) {
        return s;
      }
      json += i == 0 ? "{" : ",{";
      bool first = true;
      for (const char* key : {"issuer", "algorithm", "public_key_file", "audience"}) {
        if (!is[key]) continue;
        std::string v;
        if (Status s = r.text(is[key], path + "." + key, v); !s) return s;
        if (!first) json += ',';
        first = false;
        detail::appendJsonString(json, key);
        json += ':';
        detail::appendJsonString(json, v);
      }
      json += '}';
    }
    json += ']';
  }
  if (!json.empty()) {
    json += '}';
    if (o.policyPath.empty()) {
      return r.error(sec, "ffi.security",
                     "token settings without ffi.security.policy_file: with no policy nothing "
                     "is enforced; name the policy file");
    }
    o.policyOverlay.json = json;
    o.policyOverlay.origin = r.path() + ": ffi.security";
    o.policyOverlay.baseDir = baseDir;
  }
  return Status();
}

Status readConfig(const Reader& r, const YAML::Node& root, BrokerOptions& o,
                  const std::string& baseDir) {
  if (root.IsNull()) return Status();  // an empty file: the defaults
  if (Status s = r.keys(root, "", {"ffi"}); !s) return s;
  const YAML::Node ffi = root["ffi"];
  if (ffi.IsNull()) return Status();
  if (Status s =
          r.keys(ffi, "ffi", {"registry", "transport", "security", "limits", "logging", "metrics"});
      !s) {
    return s;
  }
  if (const YAML::Node reg = ffi["registry"]) {
    if (Status s = r.keys(reg, "ffi.registry", {"size_bytes", "state_dir"}); !s) return s;
    if (reg["size_bytes"]) {
      uint64_t v = 0;
      if (Status s = r.count(reg["size_bytes"], "ffi.registry.size_bytes", 1ull << 32, v); !s) {
        return s;
      }
      o.registryBytes = v;
    }
    if (reg["state_dir"]) {
      if (Status s = r.text(reg["state_dir"], "ffi.registry.state_dir", o.stateDir); !s) return s;
    }
  }
  if (const YAML::Node t = ffi["transport"]) {
    // ffi.transport.grpc is hms-ffi-gateway's section (docs/gateway.md), read and checked there.
    if (Status s = r.keys(t, "ffi.transport", {"default", "local_socket", "grpc"}); !s) return s;
    if (t["default"]) {
      std::string v;
      if (Status s = r.choice(t["default"], "ffi.transport.default", {"auto", "shm", "socket"}, v);
          !s) {
        return s;
      }
      o.transport = v == "shm"      ? wire::Transport::SHARED_MEMORY
                    : v == "socket" ? wire::Transport::SOCKET
                                    : wire::Transport::AUTO;
    }
    if (const YAML::Node ls = t["local_socket"]) {
      if (Status s = r.keys(ls, "ffi.transport.local_socket", {"path", "group", "mode"}); !s) {
        return s;
      }
      if (ls["path"]) {
        if (Status s = r.text(ls["path"], "ffi.transport.local_socket.path", o.socketPath); !s) {
          return s;
        }
      }
      if (ls["group"]) {
        if (Status s = r.text(ls["group"], "ffi.transport.local_socket.group", o.socketGroup); !s) {
          return s;
        }
      }
      if (ls["mode"]) {
        std::string v;
        if (Status s = r.text(ls["mode"], "ffi.transport.local_socket.mode", v); !s) return s;
        char* end = nullptr;
        const unsigned long mode = std::strtoul(v.c_str(), &end, 8);
        if (v.empty() || *end != '\0' || mode > 0777 || (mode & 0600) != 0600) {
          return r.error(ls["mode"], "ffi.transport.local_socket.mode",
                         "'" + v +
                             "' is not an octal mode such as 0660 that lets the owner read "
                             "and write");
        }
        o.socketMode = uint32_t(mode);
      }
    }
  }
  if (const YAML::Node sec = ffi["security"]) {
    if (Status s = readSecurity(r, sec, o, baseDir); !s) return s;
  }
  if (const YAML::Node lim = ffi["limits"]) {
    const std::vector<std::pair<std::string, uint32_t*>> limits = {
        {"max_services_per_client", &o.maxServicesPerClient},
        {"max_topics_per_client", &o.maxTopicsPerClient},
        {"max_channels_per_client", &o.maxChannelsPerClient},
        {"max_subscriptions_per_client", &o.maxSubscriptionsPerClient},
        {"max_queued_messages_per_client", &o.maxQueuedMessagesPerClient}};
    std::vector<std::string> names;
    for (const auto& [name, field] : limits) names.push_back(name);
    if (Status s = r.keys(lim, "ffi.limits", names); !s) return s;
    for (const auto& [name, field] : limits) {
      if (!lim[name]) continue;
      uint64_t v = 0;
      if (Status s = r.count(lim[name], "ffi.limits." + name, UINT32_MAX, v); !s) return s;
      *field = uint32_t(v);
    }
  }
  if (const YAML::Node log = ffi["logging"]) {
    if (Status s = r.keys(log, "ffi.logging", {"level", "format"}); !s) return s;
    if (log["format"]) {
      if (Status s = r.choice(log["format"], "ffi.logging.format",
                              {"auto", "text", "json", "journal"}, o.logFormat);
          !s) {
        return s;
      }
    }
    if (log["level"]) {
      if (Status s =
              r.choice(log["level"], "ffi.logging.level",
                       {"trace", "debug", "info", "warn", "error", "critical", "off"}, o.logLevel);
          !s) {
        return s;
      }
    }
  }
  if (const YAML::Node m = ffi["metrics"]) {
    if (Status s = r.keys(m, "ffi.metrics", {"listen"}); !s) return s;
    if (m["listen"]) {
      if (Status s = r.text(m["listen"], "ffi.metrics.listen", o.metricsListen); !s) return s;
    }
  }
  return Status();
}

}  // namespace

bool validLogLevel(const std::string& level) {
  for (const char* l : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    if (level == l) return true;
  }
  return false;
}

Result<BrokerOptions> loadConfig(const std::string& path, BrokerOptions base) {
  std::ifstream in(path);
  if (!in) {
    return Status(StatusCode::kFailedPrecondition,
                  detail::errnoText(("cannot read the configuration file " + path).c_str(), errno) +
                      "; check the path given to --config and that the broker's user may read it");
  }
  std::stringstream text;
  text << in.rdbuf();
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const std::string baseDir = dir.empty() ? "." : dir;
  Reader reader(path, &notOnOneHost());
  try {
    const YAML::Node root = YAML::Load(text.str());
    if (Status s = readConfig(reader, root, base, baseDir); !s) return s;
  } catch (const YAML::Exception& e) {
    std::string where = path;
    where += position(e.mark);
    where += ": ";
    where += e.msg;
    return Status(StatusCode::kInvalidArgument, where);
  }
  return base;
}

}  // namespace hms::ffi::broker
