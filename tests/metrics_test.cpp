// Call metrics end to end (docs/observability.md): real hms-ffid, real service and caller
// processes; the counts the broker merges from their metrics segments, over both transports,
// kept when a process dies, and served to Prometheus.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <string>
#include <thread>

#include "hms/ffi/client.hpp"
#include "support/process.hpp"
#include "test.capnp.h"

namespace hms::ffi {
namespace {

using test::TestService;
using testing::BrokerFixture;
using testing::startTestService;
using testing::Subprocess;
using testing::waitUntil;

const MethodMetrics* find(const MetricsSnapshot& s, const std::string& service,
                          const std::string& method) {
  for (const auto& m : s.methods) {
    if (m.service == service && m.method == method) return &m;
  }
  return nullptr;
}

// The broker's snapshot once `pred` holds of it (the service's counts land as it answers).
MetricsSnapshot metricsWhen(Client& client,
                            const std::function<bool(const MetricsSnapshot&)>& pred) {
  MetricsSnapshot last;
  waitUntil([&] {
    auto m = client.metrics();
    if (!m.ok()) return false;
    last = std::move(*m);
    return pred(last);
  });
  return last;
}

class Metrics : public ::testing::TestWithParam<const char*> {
 protected:
  // Socket: the broker's channels and the clients' own choice (HMS_FFI_TRANSPORT, which the
  // children inherit): such a client maps no channel memory, its metrics segment all the same.
  Metrics() : broker({"--transport", GetParam()}) {
    if (std::string(GetParam()) == "socket") ::setenv("HMS_FFI_TRANSPORT", "socket", 1);
  }
  ~Metrics() override { ::unsetenv("HMS_FFI_TRANSPORT"); }
  std::unique_ptr<Client> connect() {
    ClientOptions o;
    o.socketPath = broker.socket();
    return Client::connect(o).valueOrThrow();
  }
  BrokerFixture broker;
};

TEST_P(Metrics, CountsAreExactPerMethodAndCode_OnBothSides) {
  auto svc = startTestService(broker.socket(), {});
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  for (uint64_t i = 0; i < 100; ++i) {
    ASSERT_TRUE(stub.call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); }).ok());
  }
  // Asynchronous ones too: begun on this thread, ended where the reply is taken.
  for (uint64_t i = 0; i < 10; ++i) {
    auto f = stub.callAsync<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); });
    ASSERT_TRUE(f.get().ok());
  }
  for (int i = 0; i < 5; ++i) {
    auto r = stub.call<&TestService::Client::failRequest>([](auto p) {
      p.setCode(uint32_t(StatusCode::kPermissionDenied));
      p.setMessage("no");
    });
    ASSERT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  }
  auto snap = metricsWhen(*client, [](const MetricsSnapshot& s) {
    auto* f = find(s, "hms.test", "fail");
    return f && f->handled[7] == 5;
  });
  const MethodMetrics* echo = find(snap, "hms.test", "echo");
  ASSERT_NE(echo, nullptr);
  EXPECT_EQ(echo->calls[0], 110u);
  EXPECT_EQ(echo->callsTotal(), 110u);
  EXPECT_EQ(echo->errorsTotal(), 0u);
  EXPECT_EQ(echo->handled[0], 110u);
  EXPECT_EQ(echo->inFlight, 0u);
  EXPECT_EQ(echo->callDuration.count, 110u);
  EXPECT_EQ(echo->handlerDuration.count, 110u);
  EXPECT_GT(echo->callDuration.sumNs, 0u);
  // A call as its caller saw it includes the handler's time.
  EXPECT_GE(echo->callDuration.sumNs, echo->handlerDuration.sumNs);
  EXPECT_LE(echo->callDuration.quantileNs(0.5), echo->callDuration.maxNs);
  const MethodMetrics* fail = find(snap, "hms.test", "fail");
  ASSERT_NE(fail, nullptr);
  EXPECT_EQ(fail->calls[7], 5u);
  EXPECT_EQ(fail->errorsTotal(), 5u);
  EXPECT_EQ(fail->handled[7], 5u);
  EXPECT_EQ(snap.gauges.services, 1u);
  EXPECT_GE(snap.gauges.clients, 2u);
}

// A restarted broker hands out new metrics segments: a service's counts go to the new one, the
// calls its dispatcher runs in place (which keep their slot between calls) included.
TEST_P(Metrics, AfterABrokerRestart_TheServiceCountsInTheNewSegment) {
  auto svc = startTestService(broker.socket(), {});
  {
    auto client = connect();
    auto stub = client->bind<TestService>("hms.test").valueOrThrow();
    for (uint64_t i = 0; i < 20; ++i) {
      ASSERT_TRUE(stub.call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); }).ok());
    }
  }
  broker.kill9();
  broker.start();
  auto client = connect();
  ASSERT_TRUE(waitUntil([&] {
    auto found = client->discover("hms.test");
    return found.ok() && found->size() == 1;
  })) << "the service did not register with the new broker";
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  for (uint64_t i = 0; i < 30; ++i) {
    ASSERT_TRUE(stub.call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); }).ok());
  }
  auto snap = metricsWhen(*client, [](const MetricsSnapshot& s) {
    auto* e = find(s, "hms.test", "echo");
    return e && e->calls[0] >= 30 && e->handled[0] == e->calls[0];
  });
  const MethodMetrics* echo = find(snap, "hms.test", "echo");
  ASSERT_NE(echo, nullptr);
  EXPECT_GE(echo->calls[0], 30u);
  EXPECT_EQ(echo->handled[0], echo->calls[0]) << "the service counted into the old segment";
}

TEST_P(Metrics, CallsToNoProviderAreCountedAsTheCallerSawThem) {
  auto svc = startTestService(broker.socket(), {});
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  ASSERT_TRUE(stub.call<&TestService::Client::echoRequest>([](auto p) { p.setSeq(1); }).ok());
  svc.stop();
  auto r = stub.call<&TestService::Client::echoRequest>([](auto p) { p.setSeq(2); });
  ASSERT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().toString();
  auto snap = metricsWhen(*client, [](const MetricsSnapshot& s) {
    auto* e = find(s, "hms.test", "echo");
    return e && e->calls[14] == 1;
  });
  const MethodMetrics* echo = find(snap, "hms.test", "echo");
  ASSERT_NE(echo, nullptr);
  EXPECT_EQ(echo->calls[0], 1u);
  EXPECT_EQ(echo->calls[14], 1u);   // UNAVAILABLE
  EXPECT_EQ(echo->handled[0], 1u);  // the stopped service's count stays
}

// A process that exits, or is killed, leaves its counts counted: totals never go backwards.
TEST_P(Metrics, ADeadProcessesCountsStay) {
  auto svc = startTestService(broker.socket(), {});
  Subprocess caller({testing::testCallerBinary(), broker.socket(), "--notes", "40"});
  ASSERT_TRUE(caller.waitForLine("sent 40")) << caller.errors();
  ASSERT_EQ(caller.wait(), 0) << caller.errors();
  auto client = connect();
  auto snap = metricsWhen(*client, [](const MetricsSnapshot& s) {
    auto* n = find(s, "hms.test", "note");
    return n && n->handled[0] == 40 && n->calls[0] == 40;
  });
  ASSERT_NE(find(snap, "hms.test", "note"), nullptr);
  EXPECT_EQ(find(snap, "hms.test", "note")->calls[0], 40u);
  svc.signal(SIGKILL);
  ASSERT_NE(svc.wait(), -1);
  ASSERT_TRUE(waitUntil([&] {
    auto m = client->metrics();
    return m.ok() && m->gauges.services == 0;
  }));
  auto after = client->metrics();
  ASSERT_TRUE(after.ok()) << after.status().toString();
  const MethodMetrics* note = find(*after, "hms.test", "note");
  ASSERT_NE(note, nullptr);
  EXPECT_EQ(note->calls[0], 40u);
  EXPECT_EQ(note->handled[0], 40u);
}

TEST_P(Metrics, TopicsCountPublishedAndDeliveredMessages) {
  auto client = connect();
  auto pub = client->advertise<test::Tick>("hms.test.ticks").valueOrThrow();
  auto sub = client->subscribe<test::Tick>("hms.test.ticks").valueOrThrow();
  for (uint64_t i = 0; i < 25; ++i) {
    ASSERT_TRUE(pub.publish([&](test::Tick::Builder t) { t.setSeq(i); }).ok());
  }
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(sub.next(std::chrono::seconds(20)).ok());
  auto snap = client->metrics();
  ASSERT_TRUE(snap.ok()) << snap.status().toString();
  ASSERT_EQ(snap->topics.size(), 1u);
  const TopicMetrics& t = snap->topics[0];
  EXPECT_EQ(t.topic, "hms.test.ticks");
  EXPECT_EQ(t.published, 25u);
  EXPECT_GE(t.publishedBytes, 25u * 8);
  EXPECT_EQ(t.delivered, 25u);
  EXPECT_EQ(t.dropped, 0u);
}

// A publisher keeps the publishing thread's slot between messages (a lookup a message tipped
// pub/sub into its slow regime): one used by one thread after another must still count each
// message in the slot of the thread that published it, through more threads than a segment has
// slots (the slots of threads that ended go to the next ones).
TEST_P(Metrics, APublisherUsedByThreadAfterThread_CountsEveryMessage) {
  auto client = connect();
  auto pub = client->advertise<test::Tick>("hms.test.ticks").valueOrThrow();
  auto sub = client->subscribe<test::Tick>("hms.test.ticks").valueOrThrow();
  constexpr uint64_t kThreads = 3000;  // more than a segment's 2621 slots
  for (uint64_t i = 0; i < kThreads; ++i) {
    Status st;
    std::thread t([&] { st = pub.publish([&](test::Tick::Builder m) { m.setSeq(i); }); });
    t.join();
    ASSERT_TRUE(st.ok()) << "message " << i << ": " << st.toString();
    // Read by the next thread each time too: the subscription's cached slot moves with it.
    Status got;
    std::thread r([&] { got = sub.next(std::chrono::seconds(20)); });
    r.join();
    ASSERT_TRUE(got.ok()) << "message " << i << ": " << got.toString();
  }
  auto snap = client->metrics();
  ASSERT_TRUE(snap.ok()) << snap.status().toString();
  ASSERT_EQ(snap->topics.size(), 1u);
  EXPECT_EQ(snap->topics[0].published, kThreads);
  EXPECT_EQ(snap->topics[0].delivered, kThreads);
  EXPECT_EQ(snap->gauges.metricsSlotsRefused, 0u);
}

// Thread churn: every thread that calls counts in a slot of its own, and the slots of threads
// that ended are taken by the next ones, so that more threads over a client's life than its
// segment has slots are all counted.
TEST_P(Metrics, ThreadsThatEnd_GiveTheirSlotsToTheNext_SoEveryCallIsCounted) {
  auto svc = startTestService(broker.socket(), {});
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  constexpr int kThreads = 3000;  // more than a segment's 2621 slots
  for (int i = 0; i < kThreads; ++i) {
    Status st;
    std::thread t([&] {
      st = stub.call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(uint64_t(i)); })
               .status();
    });
    t.join();
    ASSERT_TRUE(st.ok()) << "call " << i << ": " << st.toString();
  }
  auto snap = metricsWhen(*client, [](const MetricsSnapshot& s) {
    auto* e = find(s, "hms.test", "echo");
    return e && e->handled[0] == uint64_t(kThreads);
  });
  const MethodMetrics* echo = find(snap, "hms.test", "echo");
  ASSERT_NE(echo, nullptr);
  EXPECT_EQ(echo->calls[0], uint64_t(kThreads));
  EXPECT_EQ(echo->callDuration.count, uint64_t(kThreads));
  EXPECT_EQ(snap.gauges.metricsSlotsRefused, 0u);
}

// More series than one control message carries: Client::metrics() reads page after page, each
// after the last entry of the one before, and has every series once, in order.
TEST(MetricsPages, ManySeries_SpanSeveralPages_AndEachIsReadOnce) {
  // Quiet: the fixture reads the broker's stderr only at the end, and a line per topic would
  // fill the pipe.
  BrokerFixture broker({"--log-level", "warn"});
  ClientOptions o;
  o.socketPath = broker.socket();
  auto client = Client::connect(o).valueOrThrow();
  constexpr int kTopics = 600;  // about 280 fit a page
  std::vector<Publisher<test::Tick>> pubs;
  TopicOptions small;
  small.slots = 2;
  small.maxMessageBytes = 64;
  for (int i = 0; i < kTopics; ++i) {
    char id[32];
    std::snprintf(id, sizeof(id), "hms.test.many.t%03d", i);
    auto pub = client->advertise<test::Tick>(id, small);
    ASSERT_TRUE(pub.ok()) << id << ": " << pub.status().toString() << "\n"
                          << broker.process().errors();
    pubs.push_back(std::move(*pub));
    ASSERT_TRUE(pubs.back().publish([&](test::Tick::Builder t) { t.setSeq(uint64_t(i)); }).ok());
  }
  auto snap = client->metrics();
  ASSERT_TRUE(snap.ok()) << snap.status().toString();
  ASSERT_EQ(snap->topics.size(), size_t(kTopics));
  for (int i = 0; i < kTopics; ++i) {
    char id[32];
    std::snprintf(id, sizeof(id), "hms.test.many.t%03d", i);
    EXPECT_EQ(snap->topics[size_t(i)].topic, id);
    EXPECT_EQ(snap->topics[size_t(i)].published, 1u) << id;
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, Metrics, ::testing::Values("shm", "socket"),
                         [](const auto& info) { return std::string(info.param); });

const RingMetrics* findRings(const MetricsSnapshot& s, const std::string& service) {
  for (const auto& r : s.rings) {
    if (r.service == service) return &r;
  }
  return nullptr;
}

// A service that stops reading: its callers' request ring fills, and the high-water mark and
// the full count say so. (Shared memory only: socket channels have no rings.)
TEST(RingMetrics, AServiceThatFallsBehind_ShowsItsRequestRingFull) {
  BrokerFixture broker;
  const std::string gate = broker.dir() + "/let-notes-run";
  auto svc = startTestService(broker.socket(), {"--hold-note", gate});
  ClientOptions o;
  o.socketPath = broker.socket();
  auto client = Client::connect(o).valueOrThrow();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  ASSERT_EQ(stub.transport(), Transport::kSharedMemory);
  // A few calls first: a ring that keeps up is nowhere near full.
  for (uint64_t i = 0; i < 50; ++i) {
    ASSERT_TRUE(stub.call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); }).ok());
  }
  // Note 0 holds the service; the rest pile up until the ring has no room left and the sender
  // waits for some (its notes' deadline is far: the service drops none of them as late).
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sent{0};
  Status sendFailed;
  std::thread sender([&] {
    CallOptions patient;
    patient.timeout = std::chrono::minutes(5);
    for (uint64_t i = 0; !stop.load(); ++i) {
      const Status st =
          stub.callOneWay<&TestService::Client::noteRequest>([&](auto p) { p.setSeq(i); }, patient);
      if (!st.ok()) {
        sendFailed = st;
        return;
      }
      sent.store(i + 1);
    }
  });
  const bool filled = waitUntil([&] {
    auto m = client->metrics();
    const RingMetrics* r = m.ok() ? findRings(*m, "hms.test") : nullptr;
    return r && r->requestFull > 0;
  });
  stop.store(true);
  { std::ofstream(gate).put('x'); }
  sender.join();
  ASSERT_TRUE(filled) << "the caller never found its request ring full";
  ASSERT_TRUE(sendFailed.ok()) << sendFailed.toString();
  auto snap = metricsWhen(*client, [&](const MetricsSnapshot& s) {
    auto* n = find(s, "hms.test", "note");
    return n && n->handled[0] == sent.load();
  });
  const RingMetrics* rings = findRings(snap, "hms.test");
  ASSERT_NE(rings, nullptr);
  EXPECT_GT(rings->requestHighWater, 0.95);
  EXPECT_LE(rings->requestHighWater, 1.0);
  EXPECT_EQ(rings->requestFull, 1u) << "one episode: the caller waited once";
  EXPECT_LT(rings->responseHighWater, 0.5);  // a few echo replies
  EXPECT_EQ(rings->responseFull, 0u);
}

// A drop_oldest subscriber that does not read while the log fills twice over was as far
// behind as the log holds.
TEST(RingMetrics, ASubscriberThatFallsBehind_ShowsItsLag) {
  BrokerFixture broker;
  ClientOptions o;
  o.socketPath = broker.socket();
  auto client = Client::connect(o).valueOrThrow();
  TopicOptions to;
  to.slots = 16;
  auto pub = client->advertise<test::Tick>("hms.test.lag", to).valueOrThrow();
  SubscribeOptions so;
  so.policy = SlowConsumer::kDropOldest;
  auto slow = client->subscribe<test::Tick>("hms.test.lag", so).valueOrThrow();
  ASSERT_TRUE(pub.publish([](test::Tick::Builder t) { t.setSeq(0); }).ok());
  ASSERT_TRUE(slow.next(std::chrono::seconds(20)).ok());
  auto early = client->metrics().valueOrThrow();
  ASSERT_EQ(early.topics.size(), 1u);
  EXPECT_LE(early.topics[0].lagHighWater, 2.0 / 16);  // caught up: one message behind at most
  for (uint64_t i = 1; i <= 32; ++i) {
    ASSERT_TRUE(pub.publish([&](test::Tick::Builder t) { t.setSeq(i); }).ok());
  }
  ASSERT_TRUE(slow.next(std::chrono::seconds(20)).ok());
  auto snap = client->metrics().valueOrThrow();
  ASSERT_EQ(snap.topics.size(), 1u);
  EXPECT_EQ(snap.topics[0].lagHighWater, 1.0);
  EXPECT_GT(snap.topics[0].dropped, 0u);
}

// GET http://ADDRESS/metrics; the body, or "" on failure.
std::string scrape(const std::string& hostPort) {
  const auto colon = hostPort.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(std::stoi(hostPort.substr(colon + 1))));
  ::inet_pton(AF_INET, hostPort.substr(0, colon).c_str(), &a.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    (void)!::write(fd, req.data(), req.size());
    char buf[65536];
    for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) out.append(buf, size_t(n));
  }
  ::close(fd);
  const auto body = out.find("\r\n\r\n");
  return out.rfind("HTTP/1.1 200", 0) == 0 && body != std::string::npos ? out.substr(body + 4) : "";
}

TEST(MetricsEndpoint, ServesTheCallsToPrometheus_AndPromtoolAcceptsThem) {
  BrokerFixture broker({"--metrics", "127.0.0.1:0"});
  std::smatch m;
  std::string address;
  ASSERT_TRUE(waitUntil([&] {
    const std::string err = broker.process().errors();
    static const std::regex re("metrics on (127\\.0\\.0\\.1:[0-9]+)");
    if (!std::regex_search(err, m, re)) return false;
    address = m[1];
    return true;
  })) << broker.process().errors();
  auto svc = startTestService(broker.socket(), {});
  ClientOptions o;
  o.socketPath = broker.socket();
  auto client = Client::connect(o).valueOrThrow();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  for (uint64_t i = 0; i < 7; ++i) {
    ASSERT_TRUE(stub.call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); }).ok());
  }
  auto pub = client->advertise<test::Tick>("hms.test.ticks").valueOrThrow();
  for (uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(pub.publish([&](test::Tick::Builder t) { t.setSeq(i); }).ok());
  }
  std::string body;
  ASSERT_TRUE(waitUntil([&] {
    body = scrape(address);
    return body.find("hms_ffi_handled_total{service=\"hms.test\",method=\"echo\",code=\"OK\"} 7") !=
           std::string::npos;
  })) << body;
  EXPECT_NE(body.find("hms_ffi_calls_total{service=\"hms.test\",method=\"echo\",code=\"OK\"} 7"),
            std::string::npos)
      << body;
  EXPECT_NE(
      body.find("hms_ffi_call_duration_seconds_count{service=\"hms.test\",method=\"echo\"} 7"),
      std::string::npos)
      << body;
  EXPECT_NE(body.find("hms_ffi_services 1"), std::string::npos) << body;
  EXPECT_NE(body.find("hms_ffi_topic_messages_total{topic=\"hms.test.ticks\"} 3"),
            std::string::npos)
      << body;
  // promtool, as Prometheus' own linter.
  const std::string file = broker.dir() + "/scrape.txt";
  FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fwrite(body.data(), 1, body.size(), f);
  std::fclose(f);
  ASSERT_EQ(::access("/usr/bin/promtool", X_OK), 0)
      << "promtool is missing: install the Debian package prometheus (scripts/install-deps.sh)";
  const std::string cmd = "/usr/bin/promtool check metrics < " + file + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string lint;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) lint.append(buf, n);
  EXPECT_EQ(::pclose(p), 0) << lint;
  EXPECT_EQ(lint, "") << lint;
}

// ---- tracing -----------------------------------------------------------------------------------

struct SpanLine {
  std::string traceId, spanId, parent, name, kind, process, code;
};

std::string field(const std::string& line, const std::string& name) {
  const std::string key = "\"" + name + "\":\"";
  const auto at = line.find(key);
  if (at == std::string::npos) return "";
  const auto from = at + key.size();
  return line.substr(from, line.find('"', from) - from);
}

std::vector<SpanLine> readSpans(const std::string& dir) {
  std::vector<SpanLine> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".jsonl") continue;
    std::ifstream in(e.path());
    for (std::string line; std::getline(in, line);) {
      out.push_back({field(line, "trace_id"), field(line, "span_id"), field(line, "parent_span_id"),
                     field(line, "name"), field(line, "kind"), field(line, "process"),
                     field(line, "status_code")});
    }
  }
  return out;
}

// Caller -> service A (in this process) -> service B (another process): the four spans share
// the trace, each the child of the one before, in three files; `hms-ffi trace` draws the tree.
TEST(Tracing, AThreeHopCallIsOneTrace_AndHmsFfiTraceDrawsIt) {
  BrokerFixture broker;
  const std::string dir = broker.dir() + "/traces";
  auto b = startTestService(broker.socket(), {}, "ready", {"HMS_FFI_TRACE_DIR=" + dir});
  ClientOptions ao;
  ao.socketPath = broker.socket();
  ao.name = "svc-a";
  ao.traceDir = dir;
  auto a = Client::connect(ao).valueOrThrow();
  auto toB = a->bind<TestService>("hms.test").valueOrThrow();
  std::mutex mu;
  std::string logged;
  ServiceDefinition<test::OtherService> def;
  def.on<&test::OtherService::Client::pingRequest>(
      [&](CallContext& ctx, test::OtherService::PingParams::Reader,
          test::OtherService::PingResults::Builder) -> Status {
        {
          std::lock_guard lock(mu);
          logged = ctx.logFields().text();
        }
        // No trace given: the call inherits this handler's.
        auto r = toB.call<&TestService::Client::echoRequest>([](auto p) { p.setSeq(5); });
        return r.ok() ? Status() : r.status();
      });
  auto served = a->serve("hms.test.a", {1, 0, 0}, std::move(def));
  ASSERT_TRUE(served.ok()) << served.status().toString();

  ClientOptions co;
  co.socketPath = broker.socket();
  co.name = "caller";
  co.traceDir = dir;
  auto caller = Client::connect(co).valueOrThrow();
  auto toA = caller->bind<test::OtherService>("hms.test.a").valueOrThrow();
  auto root = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  ASSERT_TRUE(root.ok());
  CallOptions opts;
  opts.trace = *root;
  auto r = toA.call<&test::OtherService::Client::pingRequest>([](auto) {}, opts);
  ASSERT_TRUE(r.ok()) << r.status().toString();

  // The service B writes its server span as it answers: wait for all four.
  std::vector<SpanLine> spans;
  ASSERT_TRUE(waitUntil([&] {
    spans = readSpans(dir);
    return spans.size() >= 4;
  })) << spans.size();
  ASSERT_EQ(spans.size(), 4u);
  std::map<std::string, SpanLine> byKey;  // "kind name"
  for (const auto& sp : spans) {
    EXPECT_EQ(sp.traceId, "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_EQ(sp.code, "OK");
    EXPECT_EQ(sp.spanId.size(), 16u);
    byKey[sp.kind + " " + sp.name] = sp;
  }
  const SpanLine& c1 = byKey["client hms.test.a/ping"];
  const SpanLine& s1 = byKey["server hms.test.a/ping"];
  const SpanLine& c2 = byKey["client hms.test/echo"];
  const SpanLine& s2 = byKey["server hms.test/echo"];
  EXPECT_EQ(c1.parent, "00f067aa0ba902b7");  // the caller's own span
  EXPECT_EQ(s1.parent, c1.spanId);
  EXPECT_EQ(c2.parent, s1.spanId);
  EXPECT_EQ(s2.parent, c2.spanId);
  EXPECT_EQ(c1.process, "caller");
  EXPECT_EQ(s1.process, "svc-a");
  EXPECT_EQ(c2.process, "svc-a");
  EXPECT_EQ(s2.process, "test-service");
  // The seed's §9.3 fields of a log line in A's handler: the trace, A's server span, A's
  // service and method, the caller (no token: its uid).
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(logged,
              "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=" + s1.spanId +
                  " service_id=hms.test.a method=ping user_id=uid:" + std::to_string(::getuid()));
  }

  Subprocess tool({HMS_FFI_TOOL_BINARY, "trace", "4bf92f3577b34da6a3ce929d0e0e4736", "--dir", dir});
  ASSERT_EQ(tool.wait(), 0) << tool.errors();
  (void)tool.waitForLine("never");  // read all of stdout
  const std::string out = tool.output();
  EXPECT_NE(out.find("4 spans"), std::string::npos) << out;
  EXPECT_NE(out.find("3 processes"), std::string::npos) << out;
  // Depth-first, each hop indented under the one before.
  const auto p1 = out.find("hms.test.a/ping"), p2 = out.find("hms.test.a/ping", p1 + 1),
             p3 = out.find("hms.test/echo"), p4 = out.find("hms.test/echo", p3 + 1);
  ASSERT_NE(p4, std::string::npos) << out;
  EXPECT_LT(p1, p2);
  EXPECT_LT(p2, p3);
  EXPECT_LT(p3, p4);
}

// Without a trace directory or sink nothing is recorded, and the context still reaches the
// service as the caller sent it.
TEST(Tracing, WithoutASink_TheContextPassesUnchanged) {
  BrokerFixture broker;
  ClientOptions o;
  o.socketPath = broker.socket();
  auto server = Client::connect(o).valueOrThrow();
  std::string seen, fields;
  std::mutex mu;
  ServiceDefinition<test::OtherService> def;
  def.on<&test::OtherService::Client::pingRequest>([&](CallContext& ctx,
                                                       test::OtherService::PingParams::Reader,
                                                       test::OtherService::PingResults::Builder) {
    std::lock_guard lock(mu);
    seen = ctx.trace() ? ctx.trace()->traceparent() : "";
    fields = ctx.logFields().json();
    return Status();
  });
  auto served = server->serve("hms.test.a", {1, 0, 0}, std::move(def));
  ASSERT_TRUE(served.ok());
  auto caller = Client::connect(o).valueOrThrow();
  auto stub = caller->bind<test::OtherService>("hms.test.a").valueOrThrow();
  const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  CallOptions opts;
  opts.trace = TraceContext::parse(tp).valueOrThrow();
  ASSERT_TRUE(stub.call<&test::OtherService::Client::pingRequest>([](auto) {}, opts).ok());
  std::lock_guard lock(mu);
  EXPECT_EQ(seen, tp);
  EXPECT_EQ(fields,
            "{\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":"
            "\"00f067aa0ba902b7\",\"service_id\":\"hms.test.a\",\"method\":\"ping\","
            "\"user_id\":\"uid:" +
                std::to_string(::getuid()) + "\"}");
}

}  // namespace
}  // namespace hms::ffi
