// hms-ffi-gateway (docs/gateway.md): exports chosen local services to peer hosts over gRPC with
// mutual TLS, and imports theirs into the local broker as proxies.
//
//   hms-ffi-gateway --config /etc/hms-ffi/hms-ffi.yaml [--check-config]
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "config.hpp"
#include "exporter.hpp"
#include "importer.hpp"
#include "log.hpp"
#include "tls.hpp"

using namespace hms::ffi;
using namespace hms::ffi::gateway;

namespace {

int usage(FILE* to) {
  std::fprintf(to,
               "usage: hms-ffi-gateway --config FILE [--check-config]\n"
               "  Serves the services FILE's ffi.transport.grpc.export names to peer hosts, and\n"
               "  registers the services of its peers in the local broker (docs/gateway.md).\n"
               "  --check-config  read FILE and the certificates it names, then exit\n");
  return to == stdout ? 0 : 2;
}

int fail(const Status& s) {
  std::fprintf(stderr, "hms-ffi-gateway: %s\n", s.toString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string configPath;
  bool checkOnly = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      configPath = argv[++i];
    } else if (a == "--check-config") {
      checkOnly = true;
    } else if (a == "--help" || a == "-h") {
      return usage(stdout);
    } else {
      std::fprintf(stderr, "hms-ffi-gateway: unknown argument %s\n", a.c_str());
      return usage(stderr);
    }
  }
  if (configPath.empty()) return usage(stderr);
  auto config = loadConfig(configPath);
  if (!config.ok()) return fail(config.status());
  auto clientCreds = clientCredentials(*config);
  if (!clientCreds.ok()) return fail(clientCreds.status());
  auto serverCreds = serverCredentials(*config);
  if (!serverCreds.ok()) return fail(serverCreds.status());
  if (checkOnly) {
    std::printf("hms-ffi-gateway: %s is valid\n", configPath.c_str());
    return 0;
  }
  if (!config->enabled) {
    logLine("ffi.transport.grpc.enabled is false: nothing to do");
    return 0;
  }

  // SIGTERM and SIGINT end the gateway: blocked here (every thread inherits the mask) and taken
  // with sigwait below.
  sigset_t stopSignals;
  sigemptyset(&stopSignals);
  sigaddset(&stopSignals, SIGTERM);
  sigaddset(&stopSignals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);

  std::unique_ptr<Client> exportClient;
  std::unique_ptr<Exporter> exporter;
  std::unique_ptr<grpc::Server> server;
  if (!config->exports.empty()) {
    ClientOptions o;
    o.socketPath = config->brokerSocket;
    o.name = "hms-ffi-gateway";
    // Every call through the gateway waits on the network anyway: a thread that spun for the
    // reply would only take a core from the gRPC threads and the services (two cores here).
    o.waitMode = WaitMode::kBlocking;
    auto c = Client::connect(o);
    if (!c.ok()) return fail(c.status());
    exportClient = std::move(*c);
    exporter = std::make_unique<Exporter>(*exportClient, *config);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(config->listen, *serverCreds, &port);
    builder.RegisterService(exporter.get());
    builder.SetMaxReceiveMessageSize(64 << 20);
    builder.SetMaxSendMessageSize(64 << 20);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, int(config->maxConcurrentStreams));
    // Peers ping every 10 s to notice a vanished host; allow it.
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    server = builder.BuildAndStart();
    if (!server || port == 0) {
      return fail(Status(StatusCode::kUnavailable,
                         "cannot listen on " + config->listen +
                             " (ffi.transport.grpc.listen): in use, or not an address here"));
    }
    const std::string host = config->listen.substr(0, config->listen.rfind(':'));
    logLine("host " + config->host + " listening on " + host + ":" + std::to_string(port));
  }
  std::vector<std::unique_ptr<PeerLink>> links;
  for (const auto& peer : config->peers) {
    links.push_back(std::make_unique<PeerLink>(*config, peer, *clientCreds));
  }
  logLine("ready");

  int sig = 0;
  sigwait(&stopSignals, &sig);
  logLine(std::string("stopping (") + strsignal(sig) + ")");
  links.clear();  // the proxies go first: local callers get UNAVAILABLE, not a hung call
  if (exporter) exporter->stop();
  if (server) server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  exporter.reset();
  return 0;
}
