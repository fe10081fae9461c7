// The gateway between hosts (docs/gateway.md). Two "hosts" on this machine, A and B: each is a
// private broker with an hms-ffi-gateway, joined over loopback by gRPC with mutual TLS, with
// certificates the test makes with openssl. Services run on B; callers on A use the ordinary API
// and never learn that the service is remote.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"
#include "hms/ffi/client.hpp"
#include "hms/ffi/json.hpp"
#include "support/process.hpp"
#include "support/tick.hpp"
#include "support/tokens.hpp"
#include "test.capnp.h"

namespace hms::ffi {
namespace {

using test::TestService;
using testing::BrokerFixture;
using testing::startTestService;
using testing::Subprocess;
using testing::waitUntil;

void writeFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// `name` found on $PATH (Subprocess runs a path, not a name).
std::string onPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    if (!d.empty() && ::access((d + "/" + name).c_str(), X_OK) == 0) return d + "/" + name;
  }
  return name;
}

// Runs a command to the end; its exit status must be 0.
void run(std::vector<std::string> argv) {
  argv[0] = onPath(argv[0]);
  Subprocess p(argv);
  const int status = p.wait(std::chrono::seconds(60));
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << argv[0] << " " << argv[1] << " failed: " << p.errors();
}

// A CA and a certificate per host name it signs, as docs/gateway.md makes them.
void makeCertificates(const std::string& dir, const std::string& ca,
                      const std::vector<std::string>& hosts) {
  run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-days", "2", "-keyout", dir + "/" + ca + ".key", "-out", dir + "/" + ca + ".pem", "-subj",
       "/CN=" + ca});
  for (const auto& h : hosts) {
    const std::string base = dir + "/" + h;
    run({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", base + ".key", "-out", base + ".csr", "-subj", "/CN=" + h});
    writeFile(base + ".ext",
              "subjectAltName=DNS:" + h + "\nextendedKeyUsage=serverAuth,clientAuth\n");
    run({"openssl", "x509", "-req", "-in", base + ".csr", "-CA", dir + "/" + ca + ".pem", "-CAkey",
         dir + "/" + ca + ".key", "-CAcreateserial", "-days", "2", "-out", base + ".pem",
         "-extfile", base + ".ext"});
  }
}

std::string gatewayBinary() {
  return HMS_FFI_GATEWAY_BINARY;
}

class TwoHosts : public ::testing::Test {
 protected:
  TwoHosts() = default;
  // Brokers started with these flags (e.g. --policy FILE).
  TwoHosts(std::vector<std::string> aArgs, std::vector<std::string> bArgs)
      : hostA(std::move(aArgs)), hostB(std::move(bArgs)) {}

  void SetUp() override {
    certs_ = hostB.dir() + "/certs";
    std::filesystem::create_directories(certs_);
    makeCertificates(certs_, "ca", {"host-a", "host-b"});
  }

  // The TLS section for `host`, signed by `ca`.
  std::string tls(const std::string& host, const std::string& ca = "ca") const {
    return "      tls:\n        ca: " + certs_ + "/" + ca + ".pem\n        cert: " + certs_ + "/" +
           host + ".pem\n        key: " + certs_ + "/" + host + ".key\n";
  }

  // Host B's gateway, exporting every version of hms.test and hms.emr.patient; `listen` with
  // port 0 takes any free port, which port() then tells.
  Subprocess startGatewayB(const std::string& listen = "127.0.0.1:0") {
    const std::string path = hostB.dir() + "/hms-ffi.yaml";
    writeFile(path, "ffi:\n  transport:\n    local_socket:\n      path: " + hostB.socket() +
                        "\n    grpc:\n      host: host-b\n      listen: " + listen + "\n" +
                        tls("host-b") +
                        "      refresh_interval: 100ms\n"
                        "      export:\n        - service: hms.test\n"
                        "        - service: hms.emr.patient\n          range: \"^1.0\"\n"
                        "        - topic: hms.test.ticks\n");
    Subprocess gw({gatewayBinary(), "--config", path});
    EXPECT_TRUE(gw.waitForLine("ready")) << gw.output() << gw.errors();
    const std::string& out = gw.output();
    const size_t at = out.find("listening on 127.0.0.1:");
    if (at != std::string::npos) port_ = std::stoi(out.substr(at + 23));
    return gw;
  }

  // Host A's gateway (or another importer on A) with B as its one peer.
  Subprocess startGatewayA(const std::string& cert = "host-a", const std::string& ca = "ca") {
    const std::string path = hostA.dir() + "/hms-ffi-" + cert + ".yaml";
    writeFile(path, "ffi:\n  transport:\n    local_socket:\n      path: " + hostA.socket() +
                        "\n    grpc:\n      host: host-a\n" + tls(cert, ca) +
                        "      reconnect_max: 500ms\n"
                        "      peers:\n        - host: host-b\n          address: 127.0.0.1:" +
                        std::to_string(port_) + "\n");
    Subprocess gw({gatewayBinary(), "--config", path});
    EXPECT_TRUE(gw.waitForLine("ready")) << gw.output() << gw.errors();
    return gw;
  }

  std::unique_ptr<Client> connectA(const std::string& token = "") {
    ClientOptions o;
    o.socketPath = hostA.socket();
    o.name = "caller-on-a";
    o.token = token;
    auto c = Client::connect(o);
    EXPECT_TRUE(c.ok()) << c.status().toString();
    return std::move(c).valueOrThrow();
  }

  // Until host A's registry lists `id` (true) or `timeout` passes.
  static bool imported(Client& a, const std::string& id,
                       std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    return waitUntil([&] { return listed(a, id); }, timeout);
  }
  static bool withdrawn(Client& a, const std::string& id) {
    return waitUntil([&] { return !listed(a, id); }, std::chrono::seconds(30));
  }
  // hms.test bound on A once A imported it (NOT_FOUND if that took over 30 s).
  static Result<Stub<TestService>> bindImported(Client& a) {
    if (!imported(a, "hms.test")) {
      return Status(StatusCode::kNotFound, "hms.test was not imported on host A within 30 s");
    }
    return a.bind<TestService>("hms.test");
  }
  // How many cancels the handlers of the test service on B were told of (stats, through A).
  static uint64_t cancelCallbacksOnB(Stub<TestService>& stub) {
    auto st = stub.call<&TestService::Client::statsRequest>([](auto) {});
    return st.ok() ? st->results().getCancelCallbacks() : ~uint64_t(0);
  }
  static bool listed(Client& a, const std::string& id) {
    auto found = a.discover(id);
    return found.ok() && !found->empty();
  }

  BrokerFixture hostA, hostB;
  std::string certs_;
  int port_ = 0;
};

Result<Reply<TestService::EchoResults>> echo(Stub<TestService>& stub, uint64_t seq, size_t size) {
  return stub.call<&TestService::Client::echoRequest>([&](auto p) {
    p.setSeq(seq);
    auto d = p.initPayload(uint(size));
    for (size_t i = 0; i < size; ++i) d[i] = uint8_t(seq * 7 + i);
  });
}

bool echoIntact(const TestService::EchoResults::Reader& r, uint64_t seq, size_t size) {
  auto payload = r.getPayload();
  if (r.getSeq() != seq || payload.size() != size) return false;
  for (size_t i = 0; i < size; ++i) {
    if (payload[i] != uint8_t(seq * 7 + i)) return false;
  }
  return true;
}

// The seed's §4.2: HMS-API on host A reads a patient from HMS-EMR on host B, with the same call it
// would make on one host; the registry of A shows where the service really runs.
TEST_F(TwoHosts, GetPatient_OnHostA_IsServedByHostB_AsIfLocal) {
  Subprocess emr({HMS_FFI_EXAMPLE_EMR_SERVICE}, {"HMS_FFI_SOCKET=" + hostB.socket()});
  ASSERT_TRUE(emr.waitForLine("serving")) << emr.errors();
  auto gwB = startGatewayB();
  ASSERT_NE(port_, 0) << gwB.output();
  auto gwA = startGatewayA();
  auto a = connectA();
  ASSERT_TRUE(imported(*a, "hms.emr.patient")) << gwA.output();

  auto found = a->discover("hms.emr.patient");
  ASSERT_TRUE(found.ok() && found->size() == 1u);
  EXPECT_EQ((*found)[0].providerName, "hms-ffi-gateway:host-b");
  EXPECT_EQ((*found)[0].version, (Version{1, 2, 0}));
  EXPECT_EQ((*found)[0].interfaceName, "PatientService");

  auto patient = a->callJson("hms.emr.patient", "^1.0", "getPatient",
                             R"({"patientId": "p-1001", "includeAllergies": true})");
  ASSERT_TRUE(patient.ok()) << patient.status().toString();
  EXPECT_NE(patient->find(R"("givenName":"Amina")"), std::string::npos) << *patient;
  EXPECT_NE(patient->find(R"("familyName":"Okafor")"), std::string::npos) << *patient;

  // The service's own error, as the service gave it: code, message, source.
  auto missing = a->callJson("hms.emr.patient", "^1.0", "getPatient", R"({"patientId": "p-0"})");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().source(), "hms.emr.patient");
  EXPECT_NE(missing.status().message().find("p-0"), std::string::npos)
      << missing.status().toString();
}

TEST_F(TwoHosts, TypedCalls_Errors_Deadlines_Streams_AndTrace_CrossTheLink) {
  const std::string traceDir = hostB.dir() + "/spans";
  auto svc = startTestService(hostB.socket(), {"--workers", "2"}, "ready",
                              {"HMS_FFI_TRACE_DIR=" + traceDir});
  auto gwB = startGatewayB();
  auto gwA = startGatewayA();
  auto a = connectA();
  auto stub = bindImported(*a);
  ASSERT_TRUE(stub.ok()) << stub.status().toString() << gwA.output();

  // Calls, small and large (a 200 KiB payload each way), all intact.
  for (uint64_t seq = 1; seq <= 50; ++seq) {
    const size_t size = seq == 50 ? 200 << 10 : seq * 10;
    auto r = echo(*stub, seq, size);
    ASSERT_TRUE(r.ok()) << r.status().toString();
    ASSERT_TRUE(echoIntact(r->results(), seq, size)) << "call " << seq;
  }

  // Errors keep code, message, source and details.
  auto failed = stub->call<&TestService::Client::failRequest>([](auto p) {
    p.setCode(uint32_t(StatusCode::kPermissionDenied));
    p.setMessage("not your record");
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(failed.status().message(), "not your record");
  EXPECT_EQ(failed.status().source(), "hms.test");
  ASSERT_EQ(failed.status().details().size(), 1u);
  EXPECT_EQ(failed.status().details()[0].first, "hint");

  // The caller's deadline is the remote service's: it sees the time left, and a call that
  // outlasts it is DEADLINE_EXCEEDED.
  CallOptions fiveSeconds;
  fiveSeconds.timeout = std::chrono::seconds(5);
  {
    auto quick =
        stub->call<&TestService::Client::sleepRequest>([](auto p) { p.setMs(0); }, fiveSeconds);
    ASSERT_TRUE(quick.ok()) << quick.status().toString();
    EXPECT_LE(quick->results().getTimeLeftMs(), 5000u);
    EXPECT_GT(quick->results().getTimeLeftMs(), 0u);
  }
  CallOptions short_;
  short_.timeout = std::chrono::milliseconds(200);
  {
    auto slow =
        stub->call<&TestService::Client::sleepRequest>([](auto p) { p.setMs(2'000); }, short_);
    ASSERT_FALSE(slow.ok());
    EXPECT_EQ(slow.status().code(), StatusCode::kDeadlineExceeded) << slow.status().toString();
  }

  // A server stream: every item, in order; the service's error at the end crosses too.
  {
    auto stream = stub->openStream<&TestService::Client::countRequest>([](auto p) {
      p.setFrom(100);
      p.setN(2000);
      p.setPayloadBytes(300);
    });
    uint64_t expect = 100;
    while (stream.next()) {
      ASSERT_EQ(stream.item().getValue(), expect);
      ASSERT_EQ(stream.item().getPayload().size(), 300u);
      ++expect;
    }
    EXPECT_TRUE(stream.status().isOk()) << stream.status().toString();
    EXPECT_EQ(expect, 2100u);
  }
  {
    auto stream = stub->openStream<&TestService::Client::countRequest>([](auto p) {
      p.setN(10);
      p.setFailAt(4);
    });
    uint64_t items = 0;
    while (stream.next()) ++items;
    EXPECT_EQ(items, 4u);
    EXPECT_EQ(stream.status().code(), StatusCode::kAborted) << stream.status().toString();
  }

  // One-way calls run on B in the order A's caller sent them; a stream the caller cancels is
  // cancelled on B.
  for (uint64_t seq = 1; seq <= 20; ++seq) {
    ASSERT_TRUE(
        stub->callOneWay<&TestService::Client::noteRequest>([&](auto p) { p.setSeq(seq); }).ok());
  }
  {
    auto stream = stub->openStream<&TestService::Client::countRequest>([](auto p) {
      p.setN(1'000'000'000);
      p.setDelayUs(1000);
    });
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(stream.next()) << stream.status().toString();
    EXPECT_TRUE(stream.cancel().isOk());
  }
  std::vector<uint64_t> notes;
  uint64_t cancelled = 0;
  EXPECT_TRUE(waitUntil([&] {
    auto st = stub->call<&TestService::Client::statsRequest>([](auto) {});
    if (!st.ok()) return false;
    notes.clear();
    for (uint64_t n : st->results().getNotes()) notes.push_back(n);
    cancelled = st->results().getStreamsCancelled();
    return notes.size() == 20 && cancelled >= 1;
  })) << notes.size() << " notes, " << cancelled << " streams cancelled";
  for (size_t i = 0; i < notes.size(); ++i) EXPECT_EQ(notes[i], i + 1);

  // The trace: the service on B records its span in the caller's trace.
  CallOptions traced;
  TraceContext tc;
  for (size_t i = 0; i < tc.traceId.size(); ++i) tc.traceId[i] = uint8_t(0xa0 + i);
  tc.spanId = {1, 2, 3, 4, 5, 6, 7, 8};
  tc.flags = 1;
  traced.trace = tc;
  EXPECT_TRUE(
      stub->call<&TestService::Client::sleepRequest>([](auto p) { p.setMs(0); }, traced).ok());
  const std::string traceId = tc.traceparent().substr(3, 32);
  auto spansOnB = [&] {
    std::string all;
    if (!std::filesystem::exists(traceDir)) return all;
    for (const auto& f : std::filesystem::directory_iterator(traceDir)) {
      std::ifstream in(f.path());
      std::stringstream s;
      s << in.rdbuf();
      all += s.str();
    }
    return all;
  };
  EXPECT_TRUE(waitUntil([&] { return spansOnB().find(traceId) != std::string::npos; }))
      << "no span of trace " << traceId << " on host B: " << spansOnB();
}

TEST_F(TwoHosts, ARemoteServiceThatDies_IsWithdrawn_AndItsCallsInFlightFailUnavailable) {
  auto svc = startTestService(hostB.socket(), {"--workers", "2"});
  auto gwB = startGatewayB();
  auto gwA = startGatewayA();
  auto a = connectA();
  auto stub = bindImported(*a);
  ASSERT_TRUE(stub.ok()) << stub.status().toString() << gwA.output();
  ASSERT_TRUE(echo(*stub, 1, 10).ok());

  // A stream that is surely running on B (its first item came), and a call sent about when the
  // service dies: whichever way each meets the death, it is UNAVAILABLE.
  auto stream = stub->openStream<&TestService::Client::countRequest>([](auto p) {
    p.setN(1'000'000'000);
    p.setDelayUs(1000);
  });
  ASSERT_TRUE(stream.next()) << stream.status().toString();
  auto inFlight =
      stub->callAsync<&TestService::Client::sleepRequest>([](auto p) { p.setMs(60'000); });
  svc.signal(SIGKILL);
  while (stream.next()) {
  }
  EXPECT_EQ(stream.status().code(), StatusCode::kUnavailable) << stream.status().toString();
  auto r = inFlight.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().toString();
  EXPECT_TRUE(withdrawn(*a, "hms.test")) << gwA.output();
  auto after = echo(*stub, 2, 10);
  EXPECT_EQ(after.status().code(), StatusCode::kUnavailable) << after.status().toString();

  // The service comes back on B: A imports it again.
  auto again = startTestService(hostB.socket(), {});
  EXPECT_TRUE(imported(*a, "hms.test")) << gwA.output();
  auto stub2 = a->bind<TestService>("hms.test");
  ASSERT_TRUE(stub2.ok()) << stub2.status().toString();
  EXPECT_TRUE(echo(*stub2, 3, 10).ok());
}

// A caller's calls in flight cross the link together, as on one host: none waits for the one
// before it to come back (the proxy holds no thread per call, and its channel is not held).
TEST_F(TwoHosts, ACallersCallsInFlight_CrossTheLinkTogether) {
  auto svc = startTestService(hostB.socket(), {"--workers", "12"});
  auto gwB = startGatewayB();
  auto gwA = startGatewayA();
  auto a = connectA();
  auto stub = bindImported(*a);
  ASSERT_TRUE(stub.ok()) << stub.status().toString() << gwA.output();
  ASSERT_TRUE(echo(*stub, 1, 10).ok());
  constexpr int kCalls = 12;
  constexpr auto kSleep = std::chrono::milliseconds(500);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Future<TestService::SleepResults>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(stub->callAsync<&TestService::Client::sleepRequest>(
        [&](auto p) { p.setMs(uint32_t(kSleep.count())); }));
  }
  for (auto& c : calls) {
    auto r = c.get();
    ASSERT_TRUE(r.ok()) << r.status().toString();
  }
  // One after another they take 6 s; together, one sleep and the link's own time.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, kCalls * kSleep / 2) << gwA.output();
}

TEST_F(TwoHosts, APeerWhoseCertificateTheCADidNotSign_IsRefused) {
  makeCertificates(certs_, "rogue-ca", {"rogue"});
  auto svc = startTestService(hostB.socket(), {});
  auto gwB = startGatewayB();
  // An importer on A with a certificate of another CA (its own CA file trusts B's CA, so only
  // B's check of the client certificate can refuse it).
  std::filesystem::copy_file(certs_ + "/ca.pem", certs_ + "/rogue-trusts.pem");
  {
    std::ofstream(certs_ + "/rogue-trusts.pem", std::ios::app)
        << std::ifstream(certs_ + "/rogue-ca.pem").rdbuf();
  }
  auto rogue = startGatewayA("rogue", "rogue-trusts");
  EXPECT_TRUE(rogue.waitForLine("cannot connect")) << rogue.output();
  auto a = connectA();
  EXPECT_FALSE(listed(*a, "hms.test"));
  EXPECT_EQ(rogue.output().find("imported"), std::string::npos) << rogue.output();
  rogue.stop();

  // B went on serving: a signed peer gets in.
  auto gwA = startGatewayA();
  EXPECT_TRUE(imported(*a, "hms.test")) << gwA.output();
}

TEST_F(TwoHosts, ARestartedRemoteGateway_TakesItsProxiesAwayAndBack) {
  auto svc = startTestService(hostB.socket(), {});
  auto gwB = startGatewayB();
  const int port = port_;
  auto gwA = startGatewayA();
  auto a = connectA();
  ASSERT_TRUE(imported(*a, "hms.test")) << gwA.output();
  auto stub = a->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  ASSERT_TRUE(echo(*stub, 1, 100).ok());

  gwB.signal(SIGKILL);
  gwB.wait();
  EXPECT_TRUE(withdrawn(*a, "hms.test")) << gwA.output();
  auto during = echo(*stub, 2, 100);
  EXPECT_EQ(during.status().code(), StatusCode::kUnavailable) << during.status().toString();

  // Back on the same address: A reconnects by itself (back-off up to 500 ms here).
  auto gwB2 = startGatewayB("127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(imported(*a, "hms.test")) << gwA.output() << gwB2.output();
  auto stub2 = a->bind<TestService>("hms.test");
  ASSERT_TRUE(stub2.ok()) << stub2.status().toString();
  for (uint64_t seq = 3; seq < 20; ++seq) {
    auto r = echo(*stub2, seq, 1000);
    ASSERT_TRUE(r.ok()) << r.status().toString();
    EXPECT_TRUE(echoIntact(r->results(), seq, 1000));
  }
}

// A caller that cancels a stream whose service is between two slow items: B cancels it at once,
// not when the next item comes (B's handler waits for that item, where it cannot see the cancel).
TEST_F(TwoHosts, AStreamCancelledOnA_IsCancelledOnB_BeforeItsNextItem) {
  auto svc = startTestService(hostB.socket(), {});
  auto gwB = startGatewayB();
  auto gwA = startGatewayA();
  auto a = connectA();
  auto stub = bindImported(*a);
  ASSERT_TRUE(stub.ok()) << stub.status().toString() << gwA.output();
  auto cancelCallbacks = [&] { return cancelCallbacksOnB(*stub); };
  ASSERT_EQ(cancelCallbacks(), 0u);
  {
    auto stream = stub->openStream<&TestService::Client::countRequest>([](auto p) {
      p.setN(3);
      p.setDelayUs(6'000'000);  // the second item would come 6 s after the first
    });
    ASSERT_TRUE(stream.next()) << stream.status().toString();
    EXPECT_TRUE(stream.cancel().isOk());
  }
  EXPECT_TRUE(waitUntil([&] { return cancelCallbacks() == 1; }, std::chrono::seconds(3)))
      << "the service on B saw no cancel within 3 s: " << cancelCallbacks();
}

// A call cancelled on A is cancelled on B: its handler there is told at once, not when the call
// ends by itself (a minute later) or by its deadline.
TEST_F(TwoHosts, ACallCancelledOnA_IsCancelledOnB_WhileItsHandlerRuns) {
  auto svc = startTestService(hostB.socket(), {"--workers", "2"});
  auto gwB = startGatewayB();
  auto gwA = startGatewayA();
  auto a = connectA();
  auto stub = bindImported(*a);
  ASSERT_TRUE(stub.ok()) << stub.status().toString() << gwA.output();
  auto cancelCallbacks = [&] { return cancelCallbacksOnB(*stub); };
  ASSERT_EQ(cancelCallbacks(), 0u);
  auto call = stub->callAsync<&TestService::Client::sleepRequest>([](auto p) { p.setMs(60'000); });
  ASSERT_TRUE(svc.waitForLine("sleeping 60000")) << svc.output();
  EXPECT_TRUE(call.cancel().isOk());
  auto r = call.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCancelled) << r.status().toString();
  EXPECT_TRUE(waitUntil([&] { return cancelCallbacks() == 1; }, std::chrono::seconds(20)))
      << "the handler on B was not told of the cancel: " << cancelCallbacks() << "\n"
      << gwB.output();
  svc.signal(SIGKILL);  // its handler would sleep on for a minute
}

// A topic published on B reaches subscribers on A, every message intact and in order, and ends
// there when its publisher on B does.
TEST_F(TwoHosts, ATopicOfHostB_IsPublishedOnHostA_UntilItsPublisherGoes) {
  auto gwB = startGatewayB();
  auto gwA = startGatewayA();
  // B's publisher waits for its one subscriber: gateway B's, which comes once A imported it.
  Subprocess pub({testing::testTopicBinary(), "publish", hostB.socket(), "hms.test.ticks",
                  "--count", "200", "--slots", "256", "--bytes", "100", "--wait-subscribers", "1"});
  ASSERT_TRUE(pub.waitForLine("advertised")) << pub.errors();
  auto a = connectA();
  auto topicOnA = [&] {
    auto t = a->discoverTopics("hms.test.ticks");
    return t.ok() && !t->empty() ? (*t)[0] : TopicInfo{};
  };
  ASSERT_TRUE(waitUntil([&] { return !topicOnA().id.empty(); })) << gwA.output();
  EXPECT_EQ(topicOnA().publisherName, "hms-ffi-gateway:host-b");
  EXPECT_EQ(topicOnA().slots, 256u);

  // History covers what A's gateway published before this subscription.
  SubscribeOptions so;
  so.history = 255;
  auto sub = a->subscribe<test::Tick>("hms.test.ticks", so);
  ASSERT_TRUE(sub.ok()) << sub.status().toString();
  uint64_t expect = 1;
  while (expect <= 200) {
    Status s = sub->next(std::chrono::seconds(30));
    ASSERT_TRUE(s.isOk()) << s.toString() << " after " << expect - 1 << gwA.output();
    ASSERT_EQ(sub->message().getSeq(), expect);
    ASSERT_TRUE(testing::tickIntact(sub->message())) << "message " << expect;
    EXPECT_EQ(sub->missed(), 0u);
    ++expect;
  }
  EXPECT_TRUE(pub.waitForLine("published 200"));

  // The publisher on B goes: the topic ends on A too.
  pub.stop();
  Status end = sub->next(std::chrono::seconds(30));
  EXPECT_EQ(end.code(), StatusCode::kUnavailable) << end.toString();
  EXPECT_TRUE(waitUntil([&] { return topicOnA().id.empty(); })) << gwA.output();
}

// ---- Host B's policy decides on callers of host A ----------------------------------------------

// Both hosts trust one token issuer. Host A lets anyone call its proxies (B decides); host B lets
// this uid's gateway bring callers of host-a with their roles doctor and clerk: echo is for
// doctors, whoami for both.
struct PolicyFiles {
  std::string dir;
  testing::KeyPair issuer;
  std::vector<std::string> aArgs, bArgs;
};

std::string policyB(const std::string& remoteHosts) {
  const std::string uid = std::to_string(::getuid());
  return R"({
  "token_issuers": [{"issuer": "hms-auth", "public_key_file": "issuer.pub.pem"}],
  "providers": [{"service": "hms.test", "uids": [)" +
         uid + R"(]}],
  "rules": [
    {"service": "hms.test", "method": "echo", "allowed_roles": ["doctor"]},
    {"service": "hms.test", "method": "whoami", "allowed_roles": ["doctor", "clerk"]}
  ],
  "remote_callers": [{"gateways": {"uids": [)" +
         uid + R"(]}, "hosts": [)" + remoteHosts +
         R"(], "roles": ["doctor", "clerk"]}]
})";
}

PolicyFiles makePolicyFiles() {
  PolicyFiles f;
  char tmpl[] = "/tmp/hms-ffi-gwpolicy-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
  f.dir = tmpl;
  f.issuer = testing::newKeyPair();
  writeFile(f.dir + "/issuer.pub.pem", f.issuer.publicPem);
  const std::string uid = std::to_string(::getuid());
  writeFile(f.dir + "/a.json", R"({
  "token_issuers": [{"issuer": "hms-auth", "public_key_file": "issuer.pub.pem"}],
  "providers": [{"service": "hms.test", "uids": [)" +
                                   uid + R"(]}],
  "rules": [{"service": "hms.test", "method": "*", "allowed_roles": ["*"]}]
})");
  writeFile(f.dir + "/b.json", policyB(R"("host-a")"));
  f.aArgs = {"--policy", f.dir + "/a.json"};
  f.bArgs = {"--policy", f.dir + "/b.json"};
  return f;
}

class RemotePolicy : public TwoHosts {
 protected:
  RemotePolicy() : RemotePolicy(makePolicyFiles()) {}
  explicit RemotePolicy(PolicyFiles f) : TwoHosts(f.aArgs, f.bArgs), files_(std::move(f)) {}
  ~RemotePolicy() override { std::filesystem::remove_all(files_.dir); }

  std::string token(const std::string& sub, const std::string& role) const {
    const int64_t now = int64_t(::time(nullptr));
    return testing::mintToken(R"({"iss":"hms-auth","sub":")" + sub + R"(","role":")" + role +
                                  R"(","iat":)" + std::to_string(now) + R"(,"exp":)" +
                                  std::to_string(now + 3600) + "}",
                              JWT_ALG_ES256, files_.issuer.privatePem);
  }

  PolicyFiles files_;
};

TEST_F(RemotePolicy, HostBsPolicyDecidesOnTheCallerOfHostA_NotOnTheGateway) {
  auto svc = startTestService(hostB.socket(), {});
  auto gwB = startGatewayB();
  auto gwA = startGatewayA();
  auto doctor = connectA(token("dr-alice", "doctor"));
  auto clerk = connectA(token("bob", "clerk"));
  ASSERT_TRUE(imported(*doctor, "hms.test")) << gwA.output() << gwB.output();

  // The doctor may echo; B's service sees who called, and from where.
  auto d = doctor->bind<TestService>("hms.test");
  ASSERT_TRUE(d.ok()) << d.status().toString();
  EXPECT_TRUE(echo(*d, 1, 10).ok());
  {
    auto who = d->call<&TestService::Client::whoamiRequest>([](auto) {});
    ASSERT_TRUE(who.ok()) << who.status().toString();
    EXPECT_EQ(std::string(who->results().getCallerHost().cStr()), "host-a");
    ASSERT_EQ(who->results().getCallerRoles().size(), 1u);
    EXPECT_EQ(std::string(who->results().getCallerRoles()[0].cStr()), "doctor");
  }

  // The clerk may not echo on B, whatever A allows; it may ask whoami.
  auto c = clerk->bind<TestService>("hms.test");
  ASSERT_TRUE(c.ok()) << c.status().toString();
  auto denied = echo(*c, 2, 10);
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied) << denied.status().toString();
  EXPECT_NE(denied.status().message().find("not allowed for a caller of host host-a"),
            std::string::npos)
      << denied.status().toString();
  EXPECT_NE(denied.status().message().find("needs the role doctor; the caller has clerk"),
            std::string::npos)
      << denied.status().toString();
  EXPECT_TRUE(c->call<&TestService::Client::whoamiRequest>([](auto) {}).ok());

  // B stops trusting callers of host-a: its gateway may no longer speak for them.
  writeFile(files_.dir + "/b.json", policyB(R"("host-c")"));
  hostB.process().signal(SIGHUP);
  Status refused;
  EXPECT_TRUE(waitUntil([&] {
    auto r = echo(*d, 3, 10);
    refused = r.status();
    return r.status().code() == StatusCode::kPermissionDenied;
  })) << refused.toString();
  EXPECT_NE(refused.message().find("may not open channels for callers of host host-a"),
            std::string::npos)
      << refused.toString();
}

// ---- The configuration (no processes) ----------------------------------------------------------

class GatewayConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hms-ffi-gwconf-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  Result<gateway::GatewayConfig> load(const std::string& yaml) {
    writeFile(dir_ + "/hms-ffi.yaml", yaml);
    return gateway::loadConfig(dir_ + "/hms-ffi.yaml");
  }
  std::string refusal(const std::string& yaml) {
    auto r = load(yaml);
    if (r.ok()) return "";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().toString();
    return r.status().message();
  }
  std::string dir_;
};

TEST_F(GatewayConfigFile, EveryKeyReachesItsSetting) {
  auto c = load(R"(ffi:
  logging:
    level: info          # the broker's: left alone
  transport:
    local_socket:
      path: /run/x/broker.sock
    grpc:
      enabled: true
      host: host-b
      listen: 0.0.0.0:7443
      max_concurrent_streams: 50
      refresh_interval: 2s
      reconnect_max: 1m
      tls: {ca: /c/ca.pem, cert: /c/b.pem, key: /c/b.key}
      export:
        - service: hms.emr.patient
          range: "^1.0"
        - service: hms.test
        - topic: hms.emr.vitals
      peers:
        - host: host-a
          address: 10.0.0.1:7443
          tls_name: a.example
)");
  ASSERT_TRUE(c.ok()) << c.status().toString();
  EXPECT_EQ(c->brokerSocket, "/run/x/broker.sock");
  EXPECT_EQ(c->host, "host-b");
  EXPECT_EQ(c->listen, "0.0.0.0:7443");
  EXPECT_EQ(c->maxConcurrentStreams, 50u);
  EXPECT_EQ(c->refreshInterval, std::chrono::seconds(2));
  EXPECT_EQ(c->backoffMax, std::chrono::minutes(1));
  EXPECT_EQ(c->caFile, "/c/ca.pem");
  EXPECT_EQ(c->keyFile, "/c/b.key");
  ASSERT_EQ(c->exports.size(), 3u);
  EXPECT_EQ(c->exports[2].topic, "hms.emr.vitals");
  EXPECT_TRUE(c->exports[2].service.empty());
  EXPECT_EQ(c->exports[0].range, "^1.0");
  EXPECT_EQ(c->exports[1].service, "hms.test");
  EXPECT_EQ(c->exports[1].range, "*");
  ASSERT_EQ(c->peers.size(), 1u);
  EXPECT_EQ(c->peers[0].address, "10.0.0.1:7443");
  EXPECT_EQ(c->peers[0].tlsName, "a.example");
}

// The commented example in the shipped configuration works once uncommented.
TEST_F(GatewayConfigFile, TheShippedExampleLoadsUncommented) {
  std::ifstream in(std::string(HMS_FFI_SOURCE_DIR) + "/deploy/hms-ffid.yaml");
  std::string text, line;
  bool inBlock = false;
  while (std::getline(in, line)) {
    if (line == "    # grpc:") inBlock = true;
    if (inBlock && line.rfind("    # ", 0) == 0) {
      line = "    " + line.substr(6);
    } else {
      inBlock = false;
    }
    text += line + "\n";
  }
  ASSERT_NE(text.find("\n    grpc:\n"), std::string::npos) << "no grpc example in the file";
  auto c = load(text);
  ASSERT_TRUE(c.ok()) << c.status().toString();
  EXPECT_EQ(c->host, "host-b");
  EXPECT_EQ(c->brokerSocket, "/run/hms-ffi/broker.sock");
  ASSERT_EQ(c->exports.size(), 2u);
  EXPECT_EQ(c->exports[1].topic, "hms.emr.vitals");
  ASSERT_EQ(c->peers.size(), 1u);
}

TEST_F(GatewayConfigFile, MistakesAreRefusedWithWhereAndWhat) {
  const std::string tls = "      tls: {ca: a, cert: b, key: c}\n";
  std::string m = refusal("ffi:\n  transport:\n    grpc:\n      lisen: 1.2.3.4:1\n");
  EXPECT_NE(m.find(":4:7: ffi.transport.grpc.lisen: unknown key"), std::string::npos) << m;
  m = refusal("ffi:\n  transport:\n    grpc:\n      listen: nowhere\n" + tls +
              "      export: [{service: x}]\n");
  EXPECT_NE(m.find("ffi.transport.grpc.listen: expected host:port"), std::string::npos) << m;
  m = refusal("ffi:\n  transport:\n    grpc:\n      listen: a:1\n      export: [{service: x}]\n");
  EXPECT_NE(m.find("needs ca, cert and key"), std::string::npos) << m;
  m = refusal("ffi:\n  transport:\n    grpc:\n" + tls + "      export: [{service: x}]\n");
  EXPECT_NE(m.find("ffi.transport.grpc.listen: needed to export"), std::string::npos) << m;
  m = refusal("ffi:\n  transport:\n    grpc:\n" + tls);
  EXPECT_NE(m.find("exports nothing and has no peers"), std::string::npos) << m;
  m = refusal("ffi:\n  transport:\n    grpc:\n      listen: a:1\n" + tls +
              "      export: [{service: x, range: \"^^1\"}]\n");
  EXPECT_NE(m.find("ffi.transport.grpc.export[0].range"), std::string::npos) << m;
  m = refusal("ffi:\n  transport:\n    grpc:\n      listen: a:1\n" + tls +
              "      export: [{service: x, topic: y}]\n");
  EXPECT_NE(m.find("export[0]: needs service (a service id) or topic"), std::string::npos) << m;
  m = refusal("ffi:\n  transport:\n    grpc:\n      listen: a:1\n" + tls +
              "      export: [{topic: y, range: \"1\"}]\n");
  EXPECT_NE(m.find("export[0].range: a topic has no versions"), std::string::npos) << m;
  m = refusal("ffi:\n  transport:\n    grpc:\n" + tls + "      peers: [{host: b}]\n");
  EXPECT_NE(m.find("ffi.transport.grpc.peers[0]: needs host"), std::string::npos) << m;
  m = refusal("ffi:\n  transport:\n    grpc:\n" + tls +
              "      refresh_interval: soon\n      peers: [{host: b, address: b:1}]\n");
  EXPECT_NE(m.find("expected a duration"), std::string::npos) << m;
  m = refusal("ffi:\n  logging:\n    level: info\n");
  EXPECT_NE(m.find("has no ffi.transport.grpc section"), std::string::npos) << m;
}

}  // namespace
}  // namespace hms::ffi
