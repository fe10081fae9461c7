#include "config.hpp"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "hms/ffi/version.hpp"
#include "yaml_reader.hpp"

namespace hms::ffi::gateway {
namespace {

using Reader = detail::YamlReader;

// "250ms", "5s", "2m": what the seed's §10.2 writes for intervals.
Status duration(const Reader& r, const YAML::Node& n, const std::string& key,
                std::chrono::milliseconds& out) {
  std::string v;
  if (Status s = r.text(n, key, v); !s) return s;
  size_t digits = v.find_first_not_of("0123456789");
  const std::string unit = digits == std::string::npos ? "" : v.substr(digits);
  if (digits == 0 || digits == std::string::npos || digits > 9 ||
      (unit != "ms" && unit != "s" && unit != "m")) {
    return r.error(n, key, "expected a duration such as 500ms, 5s or 2m");
  }
  const uint64_t count = std::stoull(v.substr(0, digits));
  out = std::chrono::milliseconds(unit == "ms"  ? count
                                  : unit == "s" ? count * 1000
                                                : count * 60000);
  if (out.count() == 0) return r.error(n, key, "must be above zero");
  return Status();
}

// "host:port" with a non-empty host and a port from 0 to 65535 (0: any free port).
bool validAddress(const std::string& a) {
  const size_t colon = a.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == a.size()) return false;
  const std::string port = a.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  return std::stoul(port) <= 65535;
}

Status readGrpc(const Reader& r, const YAML::Node& g, GatewayConfig& c) {
  const std::string at = "ffi.transport.grpc";
  if (Status s = r.keys(g, at,
                        {"enabled", "host", "listen", "max_concurrent_streams", "tls", "export",
                         "peers", "refresh_interval", "reconnect_max"});
      !s) {
    return s;
  }
  if (const YAML::Node n = g["enabled"]) {
    std::string v;
    if (Status s = r.choice(n, at + ".enabled", {"true", "false"}, v); !s) return s;
    c.enabled = v == "true";
  }
  if (const YAML::Node n = g["host"]) {
    if (Status s = r.text(n, at + ".host", c.host); !s) return s;
  }
  if (const YAML::Node n = g["listen"]) {
    if (Status s = r.text(n, at + ".listen", c.listen); !s) return s;
    if (!validAddress(c.listen)) {
      return r.error(n, at + ".listen", "expected host:port, e.g. 0.0.0.0:7443");
    }
  }
  if (const YAML::Node n = g["max_concurrent_streams"]) {
    uint64_t v = 0;
    if (Status s = r.count(n, at + ".max_concurrent_streams", 1u << 20, v); !s) return s;
    if (v == 0) return r.error(n, at + ".max_concurrent_streams", "must be above zero");
    c.maxConcurrentStreams = uint32_t(v);
  }
  if (const YAML::Node n = g["refresh_interval"]) {
    if (Status s = duration(r, n, at + ".refresh_interval", c.refreshInterval); !s) return s;
  }
  if (const YAML::Node n = g["reconnect_max"]) {
    if (Status s = duration(r, n, at + ".reconnect_max", c.backoffMax); !s) return s;
  }
  if (const YAML::Node tls = g["tls"]) {
    if (Status s = r.keys(tls, at + ".tls", {"ca", "cert", "key"}); !s) return s;
    if (const YAML::Node n = tls["ca"]) {
      if (Status s = r.text(n, at + ".tls.ca", c.caFile); !s) return s;
    }
    if (const YAML::Node n = tls["cert"]) {
      if (Status s = r.text(n, at + ".tls.cert", c.certFile); !s) return s;
    }
    if (const YAML::Node n = tls["key"]) {
      if (Status s = r.text(n, at + ".tls.key", c.keyFile); !s) return s;
    }
  }
  if (const YAML::Node ex = g["export"]) {
    if (!ex.IsSequence()) {
      return r.error(ex, at + ".export", "expected a list of {service, range} or {topic}");
    }
    for (size_t i = 0; i < ex.size(); ++i) {
      const std::string key = at + ".export[" + std::to_string(i) + "]";
      if (Status s = r.keys(ex[i], key, {"service", "range", "topic"}); !s) return s;
      ExportRule rule;
      if (bool(ex[i]["service"]) == bool(ex[i]["topic"])) {
        return r.error(ex[i], key, "needs service (a service id) or topic (a topic id)");
      }
      if (const YAML::Node n = ex[i]["topic"]) {
        if (ex[i]["range"])
          return r.error(ex[i]["range"], key + ".range", "a topic has no versions");
        if (Status s = r.text(n, key + ".topic", rule.topic); !s) return s;
        c.exports.push_back(std::move(rule));
        continue;
      }
      if (Status s = r.text(ex[i]["service"], key + ".service", rule.service); !s) return s;
      if (const YAML::Node n = ex[i]["range"]) {
        if (Status s = r.text(n, key + ".range", rule.range); !s) return s;
        if (auto range = VersionRange::parse(rule.range); !range.ok()) {
          return r.error(n, key + ".range", range.status().message());
        }
      }
      c.exports.push_back(std::move(rule));
    }
  }
  if (const YAML::Node peers = g["peers"]) {
    if (!peers.IsSequence()) {
      return r.error(peers, at + ".peers", "expected a list of {host, address, tls_name}");
    }
    for (size_t i = 0; i < peers.size(); ++i) {
      const std::string key = at + ".peers[" + std::to_string(i) + "]";
      if (Status s = r.keys(peers[i], key, {"host", "address", "tls_name"}); !s) return s;
      PeerConfig p;
      if (!peers[i]["host"] || !peers[i]["address"]) {
        return r.error(peers[i], key, "needs host (the peer's name) and address (host:port)");
      }
      if (Status s = r.text(peers[i]["host"], key + ".host", p.host); !s) return s;
      if (Status s = r.text(peers[i]["address"], key + ".address", p.address); !s) return s;
      if (!validAddress(p.address) || p.address.ends_with(":0")) {
        return r.error(peers[i]["address"], key + ".address", "expected host:port");
      }
      if (const YAML::Node n = peers[i]["tls_name"]) {
        if (Status s = r.text(n, key + ".tls_name", p.tlsName); !s) return s;
      }
      c.peers.push_back(std::move(p));
    }
  }
  return Status();
}

}  // namespace

Result<GatewayConfig> loadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return Status(StatusCode::kFailedPrecondition,
                  "cannot read the configuration file " + path + "; pass --config FILE");
  }
  std::stringstream text;
  text << in.rdbuf();
  Reader r(path);
  GatewayConfig c;
  YAML::Node root;
  try {
    root = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    return r.error(YAML::Node(), "", e.msg + " (line " + std::to_string(e.mark.line + 1) + ")");
  }
  // The rest of the file is the broker's: hms-ffid checks it. (Const lookups: a missing key is
  // an undefined node, never one made on the way.)
  const YAML::Node& top = root;
  auto isMap = [](const YAML::Node& n) { return n.IsDefined() && n.IsMap(); };
  const YAML::Node ffi = isMap(top) ? top["ffi"] : YAML::Node(YAML::NodeType::Undefined);
  const YAML::Node t = isMap(ffi) ? ffi["transport"] : YAML::Node(YAML::NodeType::Undefined);
  const YAML::Node g = isMap(t) ? t["grpc"] : YAML::Node(YAML::NodeType::Undefined);
  if (!g.IsDefined()) {
    return Status(StatusCode::kInvalidArgument,
                  path + ": has no ffi.transport.grpc section; docs/gateway.md shows one");
  }
  if (t["local_socket"] && t["local_socket"]["path"]) {
    if (Status s =
            r.text(t["local_socket"]["path"], "ffi.transport.local_socket.path", c.brokerSocket);
        !s) {
      return s;
    }
  }
  if (Status s = readGrpc(r, g, c); !s) return s;
  if (c.caFile.empty() || c.certFile.empty() || c.keyFile.empty()) {
    return r.error(g, "ffi.transport.grpc.tls",
                   "needs ca, cert and key: gateways talk only over mutual TLS");
  }
  if (c.exports.empty() && c.peers.empty()) {
    return r.error(g, "ffi.transport.grpc", "exports nothing and has no peers: nothing to do");
  }
  if (!c.exports.empty() && c.listen.empty()) {
    return r.error(g, "ffi.transport.grpc.listen",
                   "needed to export: the address peers connect to (host:port)");
  }
  if (c.host.empty()) {
    char name[256] = {};
    if (gethostname(name, sizeof name - 1) == 0) c.host = name;
  }
  return c;
}

}  // namespace hms::ffi::gateway
