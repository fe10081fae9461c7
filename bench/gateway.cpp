// gateway: a 64-byte call between two "hosts" on this machine through two hms-ffi-gateway
// processes (docs/gateway.md), beside a raw gRPC unary ping-pong over the same loopback mutual
// TLS with the same certificates and message shape, in slices (issue 22: at most 1.3x).
//
// Host B is the run's broker with the echo service; host A is a second broker. The caller binds
// host A's proxy of the echo service: caller -> proxy (shared memory) -> gateway A -> gRPC ->
// gateway B -> echo service (shared memory), and back. The raw ping-pong is this binary with
// --grpc-ping DIR, a gRPC server whose Call returns its params.
//
// The caller and the echo service wait in `blocking` mode, as the gRPC ends do: a call between
// hosts takes hundreds of microseconds, which no spin budget covers, and a caller or service that
// spins after each call takes a core the gateways need (two cores here: 2.6x blocking against
// 3.1x adaptive, bench/RESULTS.md).
#include <capnp/serialize.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "gateway.grpc.pb.h"
#include "patterns.hpp"
#include "tls.hpp"

namespace hms::ffi::bench_tool {

namespace {

namespace v1 = hms::ffi::gateway::v1;

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A CA and a certificate for host-a and host-b in `dir`, as docs/gateway.md makes them.
bool makeCertificates(const std::string& dir) {
  const std::string q = " >/dev/null 2>&1";
  std::string cmd = "cd '" + dir +
                    "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-days 2 -keyout ca.key -out ca.pem -subj /CN=bench-ca" +
                    q;
  for (const char* h : {"host-a", "host-b"}) {
    const std::string n = h;
    cmd += " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " + n +
           ".key -out " + n + ".csr -subj /CN=" + n + q + " && printf 'subjectAltName=DNS:" + n +
           "\\nextendedKeyUsage=serverAuth,clientAuth\\n' > " + n +
           ".ext && openssl x509 -req -in " + n + ".csr -CA ca.pem -CAkey ca.key -CAcreateserial" +
           " -days 2 -out " + n + ".pem -extfile " + n + ".ext" + q;
  }
  return std::system(cmd.c_str()) == 0;
}

gateway::GatewayConfig tlsOf(const std::string& dir, const std::string& host) {
  gateway::GatewayConfig c;
  c.caFile = dir + "/ca.pem";
  c.certFile = dir + "/" + host + ".pem";
  c.keyFile = dir + "/" + host + ".key";
  return c;
}

std::string tlsYaml(const std::string& dir, const std::string& host) {
  return "      tls: {ca: " + dir + "/ca.pem, cert: " + dir + "/" + host + ".pem, key: " + dir +
         "/" + host + ".key}\n";
}

// Waits until `path` holds `needle`; the text after it up to the line's end, or "" on timeout.
std::string awaitInFile(const std::string& path, const std::string& needle, int timeoutMs) {
  const int64_t deadline = nowNs() + int64_t(timeoutMs) * 1'000'000;
  while (nowNs() < deadline) {
    const std::string text = readFile(path);
    if (auto at = text.find(needle); at != std::string::npos) {
      const size_t from = at + needle.size();
      return text.substr(from, text.find('\n', from) - from) + " ";
    }
    usleep(5000);
  }
  return "";
}

// Spawns with stdout to `log`, free to run on any CPU: a child inherits the affinity of the
// thread that spawns it, and this one may be pinned to the caller's CPU. (The gateways and host
// A's broker are not part of either end; the ping-pong server pins itself to the peer's CPU.)
pid_t spawnLogged(const std::vector<std::string>& argv, const std::string& log) {
  cpu_set_t was, any;
  const bool saved = sched_getaffinity(0, sizeof was, &was) == 0;
  CPU_ZERO(&any);
  for (unsigned c = 0; c < std::thread::hardware_concurrency() && c < CPU_SETSIZE; ++c) {
    CPU_SET(c, &any);
  }
  if (saved) sched_setaffinity(0, sizeof any, &any);
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const pid_t pid = spawn(argv, fd);
  if (fd >= 0) ::close(fd);
  if (saved) sched_setaffinity(0, sizeof was, &was);
  return pid;
}

void stop(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
}

// The raw side of the baseline: Call answers with its params.
class PingService final : public v1::Gateway::Service {
  grpc::Status Call(grpc::ServerContext*, const v1::CallRequest* request,
                    v1::CallReply* reply) override {
    reply->set_results(request->params());
    return grpc::Status::OK;
  }
};

}  // namespace

int serveGrpcPing(const std::string& dir, const Options& o) {
  pinPeer(o);  // the other end of the baseline, as for every raw baseline here
  sigset_t stopSignals;
  sigemptyset(&stopSignals);
  sigaddset(&stopSignals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);
  auto creds = gateway::serverCredentials(tlsOf(dir, "host-b"));
  if (!creds.ok()) {
    std::fprintf(stderr, "hms-ffi-bench: %s\n", creds.status().toString().c_str());
    return 1;
  }
  PingService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", *creds, &port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  if (!server || port == 0) return 1;
  std::printf("port %d\n", port);
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stopSignals, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

std::optional<GatewayResult> measureGateway(const Options& o, const std::string& self,
                                            const std::string& socket, const std::string& dir) {
  const std::string gw = dir + "/gateway";
  std::filesystem::create_directories(gw);
  auto failed = [](const std::string& why) -> std::optional<GatewayResult> {
    std::fprintf(stderr, "hms-ffi-bench: gateway: %s\n", why.c_str());
    ++gChecksFailed;
    return std::nullopt;
  };
  if (!makeCertificates(gw)) return failed("openssl could not make the test certificates");
  EchoServer server(o, self, socket, "blocking");  // on host B (the run's broker)
  if (!server.up()) return std::nullopt;

  const std::string socketA = gw + "/a.sock";
  const pid_t brokerA = spawnLogged({findBroker(self, o.brokerPath), "--socket", socketA,
                                     "--log-level", "warn", "--state-dir", ":memory:"},
                                    gw + "/broker-a.log");
  {
    std::ofstream(gw + "/b.yaml") << "ffi:\n  transport:\n    local_socket:\n      path: " << socket
                                  << "\n    grpc:\n      host: host-b\n      listen: 127.0.0.1:0\n"
                                  << tlsYaml(gw, "host-b")
                                  << "      export:\n        - service: hms.bench.echo.blocking\n";
  }
  const pid_t gatewayB =
      spawnLogged({HMS_FFI_GATEWAY_BINARY, "--config", gw + "/b.yaml"}, gw + "/b.log");
  const std::string portB = awaitInFile(gw + "/b.log", "listening on 127.0.0.1:", 20'000);
  pid_t gatewayA = -1, ping = -1;
  std::optional<GatewayResult> out;
  auto cleanUp = [&] {
    stop(ping);
    stop(gatewayA);
    stop(gatewayB);
    stop(brokerA);
  };
  if (portB.empty()) {
    cleanUp();
    return failed("gateway B did not start: " + readFile(gw + "/b.log"));
  }
  {
    std::ofstream(gw + "/a.yaml") << "ffi:\n  transport:\n    local_socket:\n      path: "
                                  << socketA << "\n    grpc:\n      host: host-a\n"
                                  << tlsYaml(gw, "host-a")
                                  << "      peers:\n        - host: host-b\n          address: "
                                     "127.0.0.1:"
                                  << std::stoi(portB) << "\n";
  }
  gatewayA = spawnLogged({HMS_FFI_GATEWAY_BINARY, "--config", gw + "/a.yaml"}, gw + "/a.log");
  if (awaitInFile(gw + "/a.log", "imported hms.bench.echo.blocking", 20'000).empty()) {
    cleanUp();
    return failed("gateway A did not import the echo service: " + readFile(gw + "/a.log"));
  }
  ping = spawnLogged({self, "--grpc-ping", gw, o.pin ? "--pin" : "--no-pin", "--cpus",
                      std::to_string(o.callerCpu) + "," + std::to_string(o.peerCpu)},
                     gw + "/ping.log");
  const std::string pingPort = awaitInFile(gw + "/ping.log", "port ", 20'000);
  if (pingPort.empty()) {
    cleanUp();
    return failed("the gRPC ping-pong server did not start: " + readFile(gw + "/ping.log"));
  }

  // The baseline's client: the same credentials (host A's) and name check (host-b) as gateway A.
  auto creds = gateway::clientCredentials(tlsOf(gw, "host-a"));
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("host-b");
  auto pingStub = v1::Gateway::NewStub(
      grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(std::stoi(pingPort)), *creds, args));
  capnp::MallocMessageBuilder params;  // the echo's params, as the proxy sends them
  params.initRoot<Echo::EchoParams>().initPayload(64);
  auto words = capnp::messageToFlatArray(params);
  v1::CallRequest pingRequest;
  pingRequest.set_service_id("hms.bench.echo.blocking");
  pingRequest.set_version("1.0.0");
  pingRequest.set_params(std::string(reinterpret_cast<const char*>(words.begin() + 1),
                                     (words.size() - 1) * sizeof(capnp::word)));
  bool checksFailed = false;
  auto baseline = [&](const Options& so) {
    return timeLoop(so, [&](int) {
      grpc::ClientContext ctx;
      v1::CallReply reply;
      const grpc::Status s = pingStub->Call(&ctx, pingRequest, &reply);
      if (!s.ok() || reply.results() != pingRequest.params()) checksFailed = true;
    });
  };

  // Where the time goes: the same client straight to gateway B (its exporter and the echo
  // service, no proxy on host A).
  auto exporterStub = v1::Gateway::NewStub(
      grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(std::stoi(portB)), *creds, args));
  auto exporterOnly = [&](const Options& eo) {
    return timeLoop(eo, [&](int) {
      grpc::ClientContext ctx;
      v1::CallReply reply;
      const grpc::Status s = exporterStub->Call(&ctx, pingRequest, &reply);
      if (!s.ok() || reply.results().size() != pingRequest.params().size()) checksFailed = true;
    });
  };

  auto caller = connectAs(socketA, "blocking", "bench-gateway-caller");
  if (!caller) {
    cleanUp();
    return failed(caller.status().toString());
  }
  auto stub = (*caller)->bind<Echo>("hms.bench.echo.blocking");
  if (!stub) {
    cleanUp();
    return failed(stub.status().toString());
  }
  Options so = o;
  so.iterations = std::max(2000, o.iterations / 20);
  so.warmup = std::min(o.warmup, 500);
  auto sliced = slicedAgainst(so, 300, baseline, [&](int i) {
    auto reply = stub->call<&Echo::Client::echoRequest>([&](auto p) {
      auto d = p.initPayload(64);
      std::memset(d.begin(), i & 0xff, 64);
    });
    if (!reply || reply->results().getPayload().size() != 64 ||
        reply->results().getPayload()[63] != uint8_t(i & 0xff)) {
      checksFailed = true;
    }
  });
  Options eo = so;
  eo.iterations = std::max(1000, so.iterations / 4);
  auto exporterNs = exporterOnly(eo);
  cleanUp();
  if (checksFailed) return failed("a reply was missing or wrong");
  GatewayResult r;
  r.exporterOnly = summarize("  of which: gRPC client to gateway B", exporterNs);
  r.grpc = summarize("raw gRPC unary ping-pong, loopback mTLS", sliced.baseline);
  r.gateway = summarize("hms-ffi call through two gateways", sliced.measured);
  r.ratioP50 = sliced.ratioP50;
  r.ratioP99 = sliced.ratioP99;
  return r;
}

}  // namespace hms::ffi::bench_tool
