// hms-ffi-gateway's configuration (docs/gateway.md): the `ffi.transport.grpc` section of the
// host's HMS-FFI file (the seed's §10.2 layout; the broker reads the rest of the same file), plus
// `ffi.transport.local_socket.path` for the broker to talk to. Strict like the broker's: an unknown
// key, a wrong type or a bad value is INVALID_ARGUMENT "<file>:<line>:<column>: <key>: <what>".
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "hms/ffi/status.hpp"

namespace hms::ffi::gateway {

// What this host offers to its peers: every live version of `service` inside `range`, or the
// topic `topic` (one of the two is set).
struct ExportRule {
  std::string service;
  std::string range = "*";
  std::string topic;
};

// A peer gateway whose exports this host imports as local proxies.
struct PeerConfig {
  std::string host;     // its name, as it calls itself (shown as the proxies' provider)
  std::string address;  // host:port of its gRPC listener
  std::string tlsName;  // the name its certificate must carry; empty: `host`
};

struct GatewayConfig {
  bool enabled = true;
  std::string host;          // this gateway's name for its peers; empty: the machine's hostname
  std::string listen;        // host:port for peers (":0" or port 0: any free port); empty: none
  std::string brokerSocket;  // empty: the clients' default (ClientOptions::socketPath)
  std::string caFile;        // CA that signs every gateway's certificate (PEM)
  std::string certFile;      // this gateway's certificate, server and client (PEM)
  std::string keyFile;       // its private key (PEM)
  uint32_t maxConcurrentStreams = 100;
  std::vector<ExportRule> exports;
  std::vector<PeerConfig> peers;
  // How often the exports are read from the local registry again (a change goes to the peers).
  std::chrono::milliseconds refreshInterval{500};
  // Reconnecting to a peer that went away: from `backoffMin`, doubling up to `backoffMax`.
  std::chrono::milliseconds backoffMin{100};
  std::chrono::milliseconds backoffMax{5000};
};

// Reads `path`. FAILED_PRECONDITION when it cannot be read; INVALID_ARGUMENT as above, and when
// the section is incomplete (TLS files missing, nothing to export or import).
Result<GatewayConfig> loadConfig(const std::string& path);

}  // namespace hms::ffi::gateway
