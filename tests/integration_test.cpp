// End to end: a real hms-ffid and real service processes on a private socket per test.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>

#include "client_impl.hpp"
#include "hms/ffi/client.hpp"
#include "support/process.hpp"
#include "test.capnp.h"

namespace hms::ffi {
namespace {

using test::OtherService;
using test::TestService;
using testing::BrokerFixture;
using testing::startTestService;
using testing::Subprocess;
using testing::waitUntil;

const char* transportName(Transport t) {
  return t == Transport::kSocket ? "socket" : t == Transport::kSharedMemory ? "shm" : "auto";
}

// A private broker; every client of the test, in this process or a child, uses `transport`
// (through $HMS_FFI_TRANSPORT, which children inherit and ClientOptions::transport kAuto defers
// to).
class IntegrationBase : public ::testing::Test {
 protected:
  void useTransport(Transport t) {
    transport_ = t;
    ::setenv("HMS_FFI_TRANSPORT", transportName(t), 1);
  }
  void TearDown() override {
    ::unsetenv("HMS_FFI_TRANSPORT");
    ::unsetenv("HMS_FFI_INJECT_SHM_FAILURE");
  }
  std::unique_ptr<Client> connect(ClientOptions o = {}) {
    o.socketPath = broker.socket();
    auto c = Client::connect(o);
    EXPECT_TRUE(c.ok()) << c.status().toString();
    return std::move(c).valueOrThrow();
  }
  Subprocess service(std::vector<std::string> args = {}) {
    return startTestService(broker.socket(), args);
  }
  Transport transport_ = Transport::kAuto;
  BrokerFixture broker;
};

// The cross-process suite: every test runs over shared memory and over sockets.
class Integration : public IntegrationBase, public ::testing::WithParamInterface<Transport> {
 protected:
  void SetUp() override { useTransport(GetParam()); }
};

std::string transportParamName(const ::testing::TestParamInfo<Transport>& info) {
  return transportName(info.param);
}

Result<Reply<TestService::EchoResults>> echo(Stub<TestService>& stub, uint64_t seq, size_t size,
                                             CallOptions opts = {}) {
  return stub.call<&TestService::Client::echoRequest>(
      [&](auto p) {
        p.setSeq(seq);
        auto d = p.initPayload(uint(size));
        for (size_t i = 0; i < size; ++i) d[i] = uint8_t(seq + i);
      },
      opts);
}

TEST_P(Integration, RegisterDiscoverCall_ReachesTheProvider) {
  auto svc = service({"--version", "1.3.0"});
  auto client = connect();
  auto found = client->discover("hms.test");
  ASSERT_TRUE(found.ok()) << found.status().toString();
  ASSERT_EQ(found->size(), 1u);
  const ServiceInfo& info = (*found)[0];
  EXPECT_EQ(info.version, (Version{1, 3, 0}));
  EXPECT_EQ(info.providerPid, svc.pid());
  EXPECT_EQ(info.providerName, "test-service");
  EXPECT_EQ(info.interfaceName, "TestService");
  ASSERT_EQ(info.methods.size(), 8u);
  EXPECT_EQ(info.methods[0].name, "echo");
  EXPECT_EQ(info.methods[4].name, "whoami");

  auto byPrefix = client->discoverPrefix("hms.");
  ASSERT_TRUE(byPrefix.ok());
  EXPECT_EQ(byPrefix->size(), 1u);
  EXPECT_TRUE(client->discoverPrefix("other.")->empty());

  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  EXPECT_EQ(stub->transport(), GetParam());
  EXPECT_EQ(client->usesSharedMemory(), GetParam() == Transport::kSharedMemory);
  auto who = stub->call<&TestService::Client::whoamiRequest>([](auto) {});
  ASSERT_TRUE(who.ok()) << who.status().toString();
  EXPECT_EQ(pid_t(who->results().getPid()), svc.pid());
  EXPECT_EQ(pid_t(who->results().getCallerPid()), ::getpid());  // from SO_PEERCRED via the broker
  EXPECT_EQ(std::string(who->results().getVersion().cStr()), "1.3.0");
}

class CallVolume : public IntegrationBase,
                   public ::testing::WithParamInterface<
                       std::tuple<Transport, std::pair<WaitMode, const char*>>> {
 protected:
  void SetUp() override { useTransport(std::get<0>(GetParam())); }
};

TEST_P(CallVolume, HundredThousandCalls_EveryReplyChecked) {
  auto [mode, serviceMode] = std::get<1>(GetParam());
  auto svc = service({"--wait", serviceMode});
  ClientOptions o;
  o.waitMode = mode;
  auto client = connect(o);
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  uint64_t wrong = 0;
  for (uint64_t seq = 0; seq < 100'000; ++seq) {
    const size_t size = seq % 200;
    auto r = echo(*stub, seq, size);
    ASSERT_TRUE(r.ok()) << "call " << seq << ": " << r.status().toString();
    auto res = r->results();
    if (res.getSeq() != seq || res.getPayload().size() != size) {
      ++wrong;
      continue;
    }
    for (size_t i = 0; i < size; ++i) {
      if (res.getPayload()[i] != uint8_t(seq + i)) {
        ++wrong;
        break;
      }
    }
  }
  EXPECT_EQ(wrong, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    WaitModes, CallVolume,
    ::testing::Combine(::testing::Values(Transport::kSharedMemory, Transport::kSocket),
                       ::testing::Values(std::pair{WaitMode::kAdaptive, "adaptive"},
                                         std::pair{WaitMode::kBlocking, "blocking"},
                                         std::pair{WaitMode::kSpin, "spin"})),
    [](const auto& info) {
      return std::string(transportName(std::get<0>(info.param))) + "_" +
             std::get<1>(info.param).second;
    });

TEST_P(Integration, VersionRange_SelectsTheHighestCompatibleProvider) {
  auto svc = service({"--version", "1.0.0", "--version", "1.4.2", "--version", "2.0.0"});
  auto client = connect();
  auto versionOf = [&](const char* range) -> std::string {
    auto stub = client->bind<TestService>("hms.test", range);
    if (!stub.ok()) return statusCodeName(stub.status().code()).data();
    auto who = stub->call<&TestService::Client::whoamiRequest>([](auto) {});
    return who.ok() ? who->results().getVersion().cStr() : who.status().toString();
  };
  EXPECT_EQ(versionOf("^1.0"), "1.4.2");
  EXPECT_EQ(versionOf("~1.0.0"), "1.0.0");
  EXPECT_EQ(versionOf(">=1.1 <2"), "1.4.2");
  EXPECT_EQ(versionOf("*"), "2.0.0");
  EXPECT_EQ(versionOf("^2"), "2.0.0");
  EXPECT_EQ(versionOf("^3"), "NOT_FOUND");
  auto missing = client->bind<TestService>("hms.test", "^3");
  EXPECT_NE(missing.status().message().find("live: 2.0.0, 1.4.2, 1.0.0"), std::string::npos)
      << missing.status().message();
  auto resolved = client->resolve("hms.test", "~1.4");
  ASSERT_TRUE(resolved.ok());
  EXPECT_EQ(resolved->version, (Version{1, 4, 2}));
}

TEST_P(Integration, DeadlineExceeded_WhenTheServiceIsSlow_AndTheNextCallStillWorks) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  CallOptions opts;
  opts.timeout = std::chrono::milliseconds(100);
  auto slow = stub->call<&TestService::Client::sleepRequest>([](auto p) { p.setMs(1000); }, opts);
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(slow.status().source(), "hms.test");
  // The late reply of the slow call is dropped; this call gets its own.
  auto r = echo(*stub, 5, 10);
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(r->results().getSeq(), 5u);
}

TEST_P(Integration, HandlerSeesTheDeadline_AndACallExpiredInTheQueueIsNotRun) {
  auto svc = service();
  auto client = connect();
  auto busy = client->bind<TestService>("hms.test");
  auto other = client->bind<TestService>("hms.test");
  ASSERT_TRUE(busy.ok() && other.ok());
  CallOptions tenSeconds;
  tenSeconds.timeout = std::chrono::seconds(10);
  std::thread first([&] {
    auto r =
        busy->call<&TestService::Client::sleepRequest>([](auto p) { p.setMs(500); }, tenSeconds);
    ASSERT_TRUE(r.ok()) << r.status().toString();
    EXPECT_GT(r->results().getTimeLeftMs(), 0u);  // the handler saw the caller's deadline
    EXPECT_LE(r->results().getTimeLeftMs(), 10'000u);
    EXPECT_EQ(r->results().getCalls(), 1u);
  });
  // Once the dispatcher is inside the first handler, a call with a short deadline waits in the
  // queue past it: the caller gives up, and the service must not run it later.
  ASSERT_TRUE(svc.waitForLine("sleeping 500"));
  CallOptions short_;
  short_.timeout = std::chrono::milliseconds(50);
  auto expired =
      other->call<&TestService::Client::sleepRequest>([](auto p) { p.setMs(1); }, short_);
  EXPECT_EQ(expired.status().code(), StatusCode::kDeadlineExceeded);
  first.join();
  auto next = other->call<&TestService::Client::sleepRequest>([](auto p) { p.setMs(0); });
  ASSERT_TRUE(next.ok()) << next.status().toString();
  EXPECT_EQ(next->results().getCalls(), 2u) << "the expired call ran";
}

TEST_P(Integration, UnknownMethod_IsUnimplemented) {
  auto svc = service({"--skip", "blob"});
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  auto r = stub->call<&TestService::Client::blobRequest>([](auto p) { p.setSize(1); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(r.status().message().find("blob"), std::string::npos);
  EXPECT_TRUE(echo(*stub, 1, 1).ok());
}

TEST_P(Integration, HandlerErrors_CarryCodeMessageSourceAndDetails) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  auto r = stub->call<&TestService::Client::failRequest>([](auto p) {
    p.setCode(uint32_t(StatusCode::kPermissionDenied));
    p.setMessage("not your record");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(r.status().message(), "not your record");
  EXPECT_EQ(r.status().source(), "hms.test");
  ASSERT_EQ(r.status().details().size(), 1u);
  EXPECT_EQ(r.status().details()[0].first, "hint");

  auto thrown = stub->call<&TestService::Client::failRequest>([](auto p) { p.setCode(9999); });
  EXPECT_EQ(thrown.status().code(), StatusCode::kInternal);
  EXPECT_NE(thrown.status().message().find("handler exploded"), std::string::npos);
  EXPECT_TRUE(echo(*stub, 2, 2).ok());
}

TEST_P(Integration, LargeMessages_AtTheLimitPass_AndOverItAreResourceExhausted) {
  constexpr uint32_t kRing = 64 << 10;
  auto svc = service({"--ring-bytes", std::to_string(kRing)});
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  const uint32_t limit = Client::maxMessageBytes(kRing);
  // EchoParams: root pointer + struct (one data word, one pointer) + the payload's words.
  const size_t atLimit = limit - 3 * 8;
  {
    auto ok = echo(*stub, 1, atLimit);
    ASSERT_TRUE(ok.ok()) << ok.status().toString();
    EXPECT_EQ(ok->results().getPayload().size(), atLimit);
    EXPECT_EQ(ok->results().getPayload()[atLimit - 1], uint8_t(1 + atLimit - 1));
  }  // the Reply goes: the channel is free for the next call

  auto over = echo(*stub, 2, atLimit + 8);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.status().message().find(std::to_string(limit)), std::string::npos)
      << over.status().message();
  EXPECT_NE(over.status().message().find("ringBytes"), std::string::npos);

  // A reply over the limit is refused by the service the same way.
  auto big = stub->call<&TestService::Client::blobRequest>([&](auto p) { p.setSize(limit); });
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(big.status().message().find("ringBytes"), std::string::npos);
  EXPECT_TRUE(echo(*stub, 3, 100).ok());
}

TEST_P(Integration, ServiceKilledMidCall_CallerGetsUnavailable_AndARestartIsFoundAgain) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  ASSERT_TRUE(echo(*stub, 1, 1).ok());

  std::atomic<bool> done{false};
  Status result;
  std::thread caller([&] {
    auto r = stub->call<&TestService::Client::sleepRequest>([](auto p) { p.setMs(60'000); });
    result = r.status();
    done = true;
  });
  // Kill the service once the call is inside its handler.
  ASSERT_TRUE(svc.waitForLine("sleeping 60000"));
  svc.signal(SIGKILL);
  ASSERT_TRUE(waitUntil([&] { return done.load(); }, std::chrono::seconds(10)))
      << "the caller hung after its service died";
  caller.join();
  EXPECT_EQ(result.code(), StatusCode::kUnavailable) << result.toString();

  // The broker keeps serving: the registry forgets the dead provider, new clients connect.
  ASSERT_TRUE(waitUntil([&] { return client->discover("hms.test")->empty(); }));
  auto other = connect();
  EXPECT_TRUE(other->discover("hms.test").ok());
  auto none = echo(*stub, 2, 1);
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);

  auto restarted = service();
  auto r = echo(*stub, 3, 3);  // the same Stub finds the new provider
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(stub->service().providerPid, restarted.pid());
}

TEST_P(Integration, CallerKilled_ServiceKeepsServingOthers) {
  auto svc = service();
  Subprocess caller({testing::testServiceBinary() + "-caller", broker.socket()});
  ASSERT_TRUE(caller.waitForLine("calling")) << caller.errors();
  caller.signal(SIGKILL);
  caller.wait();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(echo(*stub, uint64_t(i), 8).ok());
  EXPECT_TRUE(svc.running());
}

TEST_P(Integration, StubOfADestroyedClient_FailsAtOnceWithUnavailable) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  ASSERT_TRUE(echo(*stub, 1, 1).ok());
  client.reset();
  auto r = echo(*stub, 2, 1);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("destroyed"), std::string::npos) << r.status().message();
}

TEST_P(Integration, DuplicateRegistration_IsAlreadyExists) {
  auto first = service({"--version", "1.0.0"});
  Subprocess second(
      {testing::testServiceBinary(), "--socket", broker.socket(), "--version", "1.0.0"});
  ASSERT_TRUE(second.waitForLine("register failed"));
  EXPECT_NE(second.output().find("ALREADY_EXISTS"), std::string::npos) << second.output();
  EXPECT_NE(second.wait(), -1);
  auto another = service({"--version", "1.0.1"});  // another version is fine
  auto client = connect();
  EXPECT_EQ(client->discover("hms.test")->size(), 2u);
}

TEST_P(Integration, Bind_UnknownServiceIsNotFound_WrongInterfaceIsFailedPrecondition) {
  auto svc = service();
  auto client = connect();
  auto missing = client->bind<TestService>("hms.nothing");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  auto wrong = client->bind<OtherService>("hms.test");
  EXPECT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong.status().message().find("TestService"), std::string::npos);
  auto badRange = client->bind<TestService>("hms.test", ">=banana");
  EXPECT_EQ(badRange.status().code(), StatusCode::kInvalidArgument);
}

TEST_P(Integration, ManyCallers_AreServedByOneDispatcherThread) {
  auto svc = service();
  auto threadsOf = [](pid_t pid) {
    int n = 0;
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("Threads:", 0) == 0) n = std::stoi(line.substr(8));
    }
    return n;
  };
  auto client = connect();
  {
    auto warm = client->bind<TestService>("hms.test");
    ASSERT_TRUE(warm.ok());
    ASSERT_TRUE(echo(*warm, 0, 1).ok());
  }
  const int before = threadsOf(svc.pid());
  constexpr int kCallers = 8;
  std::vector<Stub<TestService>> stubs;
  for (int i = 0; i < kCallers; ++i)
    stubs.push_back(client->bind<TestService>("hms.test").valueOrThrow());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kCallers; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < 2000; ++i) {
        auto r = echo(stubs[size_t(t)], i * 100 + uint64_t(t), 16);
        if (!r.ok() || r->results().getSeq() != i * 100 + uint64_t(t)) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(threadsOf(svc.pid()), before) << "the service grew threads per caller";
}

TEST_P(Integration, WorkerPool_ServesCallersInParallelChannels) {
  auto svc = service({"--workers", "2"});
  auto client = connect();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto stub = client->bind<TestService>("hms.test");
      if (!stub.ok()) {
        ++failures;
        return;
      }
      for (uint64_t i = 0; i < 2000; ++i) {
        auto r = echo(*stub, i + uint64_t(t) * 10000, 32);
        if (!r.ok() || r->results().getSeq() != i + uint64_t(t) * 10000) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0) << svc.errors();
}

// One Stub shared by threads: their synchronous calls take turns (the Stub's lease), a thread
// that still holds a Reply is told so instead of waiting for itself, and another thread waits
// for the Reply's end or its own deadline.
TEST_P(Integration, OneStubSharedByThreads_TakesTurns_AndItsHolderIsToldItHoldsIt) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < 500; ++i) {
        const uint64_t seq = i + uint64_t(t) * 10000;
        auto r = echo(stub, seq, 16);
        if (!r.ok() || r->results().getSeq() != seq) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);

  auto held = echo(stub, 1, 8);
  ASSERT_TRUE(held.ok()) << held.status().toString();
  auto again = echo(stub, 2, 8);
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("still holds"), std::string::npos)
      << again.status().toString();
  CallOptions quick;
  quick.timeout = std::chrono::milliseconds(100);
  std::thread other([&] {
    auto r = echo(stub, 3, 8, quick);
    EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().toString();
  });
  other.join();
  std::promise<void> waiting;
  std::thread later([&] {
    waiting.set_value();
    auto r = echo(stub, 4, 8);  // waits for the Reply below to end
    ASSERT_TRUE(r.ok()) << r.status().toString();
    EXPECT_EQ(r->results().getSeq(), 4u);
  });
  waiting.get_future().wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  { auto done = std::move(held); }
  later.join();
}

// The threads of this process named `name`.
int threadsNamed(const std::string& name) {
  int n = 0;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string got;
    std::getline(comm, got);
    n += got == name ? 1 : 0;
  }
  return n;
}

// A service's workers and stream threads start as its calls need them, never more than its
// options allow: a process serving many services that few call holds few threads.
TEST_P(Integration, WorkersAndStreamThreads_StartOnlyWhenCallsNeedThem) {
  auto svcClient = connect();
  ServiceDefinition<TestService> def;
  def.on<&TestService::Client::echoRequest>(
      [](CallContext&, TestService::EchoParams::Reader p, TestService::EchoResults::Builder r) {
        r.setSeq(p.getSeq());
        return Status();
      });
  def.onStream<&TestService::Client::countRequest>(
      [](CallContext&, TestService::CountParams::Reader p,
         StreamWriter<TestService::CountResults>& out) {
        for (uint64_t i = 0; i < p.getN(); ++i) {
          if (Status s = out.write([&](auto item) { item.setValue(p.getFrom() + i); }); !s) {
            return s;
          }
        }
        return Status();
      });
  ServiceOptions o;
  o.workerThreads = 3;
  o.streamThreads = 4;
  auto handle = svcClient->serve("hms.test.lazy", {1, 0, 0}, std::move(def), o);
  ASSERT_TRUE(handle.ok()) << handle.status().toString();
  EXPECT_EQ(threadsNamed("hms-worker"), 0);
  EXPECT_EQ(threadsNamed("hms-stream"), 0);

  auto caller = connect();
  auto stub = caller->bind<TestService>("hms.test.lazy").valueOrThrow();
  {
    auto r = stub.call<&TestService::Client::echoRequest>([](auto p) { p.setSeq(5); });
    ASSERT_TRUE(r.ok()) << r.status().toString();
    EXPECT_EQ(r->results().getSeq(), 5u);
  }
  EXPECT_EQ(threadsNamed("hms-worker"), 1);
  EXPECT_EQ(threadsNamed("hms-stream"), 0);
  {
    auto stream = stub.openStream<&TestService::Client::countRequest>([](auto p) {
      p.setFrom(10);
      p.setN(3);
    });
    uint64_t expect = 10;
    while (stream.next()) EXPECT_EQ(stream.item().getValue(), expect++);
    EXPECT_TRUE(stream.status().ok()) << stream.status().toString();
    EXPECT_EQ(expect, 13u);
  }
  EXPECT_EQ(threadsNamed("hms-stream"), 1);
  // Many calls, from three stubs at once: never more workers than the options allow.
  std::vector<std::thread> callers;
  std::atomic<int> failures{0};
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&] {
      auto s = caller->bind<TestService>("hms.test.lazy");
      if (!s.ok()) {
        ++failures;
        return;
      }
      for (uint64_t i = 0; i < 200; ++i) {
        auto r = s->call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); });
        if (!r.ok() || r->results().getSeq() != i) ++failures;
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(threadsNamed("hms-worker"), 1);
  EXPECT_LE(threadsNamed("hms-worker"), 3);
  ASSERT_TRUE(handle->stop().ok());
}

TEST_P(Integration, IdleService_UsesNoCpuAfterItsSpinBudget) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  ASSERT_TRUE(echo(*stub, 1, 1).ok());
  auto cpuTicks = [](pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(stat)), {});
    std::istringstream in(s.substr(s.rfind(')') + 2));
    std::string field;
    long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
      if (i == 14) utime = std::stol(field);
      if (i == 15) stime = std::stol(field);
    }
    return utime + stime;
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // past the 50 us spin budget
  const long before = cpuTicks(svc.pid());
  const long beforeSelf = cpuTicks(::getpid());
  std::this_thread::sleep_for(std::chrono::seconds(1));
  // A spinning thread would burn ~100 ticks (1 s); sleeping ones burn none.
  EXPECT_LE(cpuTicks(svc.pid()) - before, 5);
  EXPECT_LE(cpuTicks(::getpid()) - beforeSelf, 5);
}

// Tests of the shared-memory rings themselves.
class SharedMemoryOnly : public IntegrationBase {
 protected:
  void SetUp() override { useTransport(Transport::kSharedMemory); }
};

// A misbehaving caller: opens a channel to `serviceId` through the control protocol and maps it,
// to write into the request ring what no libhmsffi would.
struct RawChannel {
  static RawChannel open(const std::string& socket, Client& client, const std::string& serviceId) {
    RawChannel ch;
    ClientOptions o;
    o.socketPath = socket;
    ch.control = std::make_shared<detail::ClientImpl>(o);
    EXPECT_TRUE(ch.control->start().isOk());
    auto info = client.resolve(serviceId);
    EXPECT_TRUE(info.ok()) << info.status().toString();
    // The request ring is the caller's own (made and sealed here, as libhmsffi does).
    auto own = detail::makeOwnRing(info->ringBytes, "raw-request-ring");
    EXPECT_TRUE(own.ok()) << own.status().toString();
    const int ownFd = own->fd.get();
    auto reply = ch.control->roundTrip(
        [&](wire::Request::Builder req) { req.initOpenChannel().setServiceKey(info->key); }, &ownFd,
        1);
    EXPECT_TRUE(reply.ok()) << reply.status().toString();
    ch.segment =
        std::move(detail::Mapping::map(reply->fds[0].get(),
                                       reply->reply().getOpenChannel().getSegmentBytes(), true)
                      .valueOrThrow());
    ch.requests = std::move(own->map);
    ch.responses =
        std::move(detail::attachPeerRing(reply->fds[1].get(), info->ringBytes, "the response ring")
                      .valueOrThrow());
    ch.doorbell = std::move(
        detail::Mapping::map(reply->fds[2].get(), detail::kDoorbellBytes, true).valueOrThrow());
    return ch;
  }
  RawChannel() = default;
  RawChannel(RawChannel&&) = default;
  ~RawChannel() {
    if (control) control->shutdown();
  }
  detail::ChannelHeader* header() { return segment.as<detail::ChannelHeader>(); }
  uint8_t* requestRing() { return requests.data(); }
  uint8_t* responseRing() { return responses.data(); }  // mapped read-only
  // Publishes what was written at the start of the request ring and rings the service.
  void commitFirstRecord(uint32_t length) {
    detail::storeRelease(reinterpret_cast<detail::RecordHeader*>(requestRing())->length, length);
    detail::wakeAlways(doorbell.as<detail::DoorbellSegment>()->wake);
  }

  std::shared_ptr<detail::ClientImpl> control;
  detail::Mapping segment;    // the control page
  detail::Mapping requests;   // ours, writable
  detail::Mapping responses;  // the service's, read-only
  detail::Mapping doorbell;
};

TEST_F(SharedMemoryOnly, CorruptRequestRing_ClosesThatChannelWithDataLoss_OthersKeepWorking) {
  auto svc = service();
  auto client = connect();
  auto good = client->bind<TestService>("hms.test");
  ASSERT_TRUE(good.ok());
  ASSERT_TRUE(echo(*good, 1, 1).ok());

  auto raw = RawChannel::open(broker.socket(), *client, "hms.test");
  reinterpret_cast<detail::RecordHeader*>(raw.requestRing())->kind = 99;
  raw.commitFirstRecord(64);
  ASSERT_TRUE(waitUntil([&] {
    return detail::loadAcquire(raw.header()->serviceState) == detail::kEndCorrupt;
  })) << "the service did not close the corrupt channel";
  EXPECT_TRUE(svc.running());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(echo(*good, uint64_t(i), 4).ok());
}

TEST_F(SharedMemoryOnly, MalformedRequestMessage_IsInvalidArgument_AndTheChannelStaysOpen) {
  auto svc = service();
  auto client = connect();
  auto raw = RawChannel::open(broker.socket(), *client, "hms.test");
  // A well-formed record whose message's root is a far pointer: never valid in one segment.
  auto* rec = reinterpret_cast<detail::RecordHeader*>(raw.requestRing());
  rec->kind = detail::kRecordRequest;
  rec->callId = 77;
  rec->method = 0;  // echo
  rec->words = 1;
  reinterpret_cast<uint64_t*>(raw.requestRing() + sizeof(detail::RecordHeader))[0] = 0x12345602u;
  raw.commitFirstRecord(64);
  auto* resp = reinterpret_cast<detail::RecordHeader*>(raw.responseRing());
  ASSERT_TRUE(waitUntil([&] { return detail::loadAcquire(resp->length) != 0; }));
  EXPECT_EQ(resp->kind, detail::kRecordResponse);
  EXPECT_EQ(resp->callId, 77u);
  EXPECT_EQ(statusCodeFromWire(resp->status), StatusCode::kInvalidArgument);
  EXPECT_EQ(detail::loadAcquire(raw.header()->serviceState), uint32_t(detail::kEndOpen));
  EXPECT_TRUE(svc.running());
}

TEST_P(Integration, BrokerRestart_OpenChannelsKeepWorking_AndServicesRegisterAgain) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok());
  ASSERT_TRUE(echo(*stub, 1, 1).ok());
  broker.kill9();
  // The data path does not need the broker.
  for (uint64_t i = 0; i < 1000; ++i) ASSERT_TRUE(echo(*stub, i, 8).ok()) << i;
  // The registry does: the dead broker's (still mapped) no longer says what is live.
  EXPECT_TRUE(waitUntil([&] {
    return client->discover("hms.test").status().code() == StatusCode::kUnavailable;
  })) << "discover() answered from the dead broker's registry";
  broker.start();
  auto fresh = connect();
  ASSERT_TRUE(waitUntil([&] {
    auto found = fresh->discover("hms.test");
    return found.ok() && found->size() == 1;
  })) << "the service did not register with the new broker";
  auto stub2 = fresh->bind<TestService>("hms.test");
  ASSERT_TRUE(stub2.ok()) << stub2.status().toString();
  EXPECT_TRUE(echo(*stub2, 9, 9).ok());
  EXPECT_TRUE(echo(*stub, 10, 9).ok());
}

TEST_P(Integration, StoppedService_LeavesTheRegistry_AndItsCallersGetUnavailable) {
  auto client = connect();
  ServiceDefinition<TestService> def;
  def.on<&TestService::Client::echoRequest>(
      [](CallContext&, TestService::EchoParams::Reader p, TestService::EchoResults::Builder r) {
        r.setSeq(p.getSeq() + 1);
        return Status();
      });
  auto handle = client->serve("hms.test.local", {3, 1, 4}, std::move(def),
                              {.displayName = "Local echo", .description = "served in-process"});
  ASSERT_TRUE(handle.ok()) << handle.status().toString();
  auto caller = connect();
  auto found = caller->discover("hms.test.local");
  ASSERT_TRUE(found.ok());
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].displayName, "Local echo");
  EXPECT_EQ((*found)[0].description, "served in-process");
  auto stub = caller->bind<TestService>("hms.test.local");
  ASSERT_TRUE(stub.ok());
  {
    auto r = echo(*stub, 41, 0);
    ASSERT_TRUE(r.ok()) << r.status().toString();
    EXPECT_EQ(r->results().getSeq(), 42u);
  }
  ASSERT_TRUE(handle->stop().isOk());
  ASSERT_TRUE(waitUntil([&] { return caller->discover("hms.test.local")->empty(); }));
  auto after = echo(*stub, 1, 0);
  EXPECT_EQ(after.status().code(), StatusCode::kUnavailable) << after.status().toString();
}

TEST_P(Integration, Tool_ListsAndDescribesLiveServices) {
  auto svc = service({"--version", "2.5.0"});
  const std::string tool =
      std::filesystem::path(testing::brokerBinary()).parent_path().parent_path() / "tools" /
      "hms-ffi";
  Subprocess list({tool, "--socket", broker.socket(), "list"});
  ASSERT_EQ(list.wait(), 0) << list.errors();
  list.waitForLine("hms.test", std::chrono::seconds(1));
  EXPECT_NE(list.output().find("hms.test"), std::string::npos) << list.output();
  EXPECT_NE(list.output().find("2.5.0"), std::string::npos);
  Subprocess describe({tool, "--socket", broker.socket(), "describe", "hms.test"});
  ASSERT_EQ(describe.wait(), 0) << describe.errors();
  describe.waitForLine("whoami", std::chrono::seconds(1));
  EXPECT_NE(describe.output().find("echo"), std::string::npos) << describe.output();
  EXPECT_NE(describe.output().find("pid " + std::to_string(svc.pid())), std::string::npos);
  Subprocess missing({tool, "--socket", broker.socket(), "describe", "hms.nothing"});
  const int st = missing.wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
}

// ---- the socket transport and the automatic choice -------------------------------------------

size_t countOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// CPU time (user + system, in clock ticks) of this process's thread named `name`; -1 if none.
long threadTicks(const std::string& name) {
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string n;
    std::getline(comm, n);
    if (n != name) continue;
    std::ifstream statFile(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(statFile)), {});
    // Fields after the command (which may hold spaces) begin after its ')': state is field 3,
    // utime field 14, stime field 15.
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::vector<std::string> f{std::istream_iterator<std::string>(rest), {}};
    if (f.size() < 13) return -1;
    return std::stol(f[11]) + std::stol(f[12]);
  }
  return -1;
}

// While a thread waits on its own Future it reads the channel's replies itself; the completion
// thread must then sleep rather than spin beside it (two spinning threads of one process on one
// core halve each other: pipelined calls ran slower than synchronous ones). Calls that nobody
// waits on (a callback, a polled Future) are still completed, during and after.
TEST_F(SharedMemoryOnly, WaitersReadTheirOwnReplies_TheCompletionThreadSleepsMeanwhile) {
  auto svc = service();
  ClientOptions o;
  o.waitMode = WaitMode::kSpin;  // the waiter never gives up spinning before its deadline
  auto client = connect(o);
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  std::atomic<int> callbacks{0};
  stub.callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(1); },
                                                    [&](Result<Reply<TestService::EchoResults>> r) {
                                                      if (r.ok() && r->results().getSeq() == 1)
                                                        callbacks.fetch_add(1);
                                                    });
  auto polled = stub.callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(2); });
  ASSERT_TRUE(
      waitUntil([&] { return callbacks.load() == 1 && polled.ready(); }, std::chrono::seconds(30)));
  ASSERT_GE(threadTicks("hms-completion"), 0) << "no thread named hms-completion";

  std::deque<Future<TestService::EchoResults>> window;
  uint64_t sent = 0, done = 0, wrong = 0;
  auto pump = [&](std::chrono::milliseconds span) {
    const auto until = std::chrono::steady_clock::now() + span;
    while (std::chrono::steady_clock::now() < until) {
      while (window.size() < 16) {
        const uint64_t seq = 100 + sent++;
        window.push_back(
            stub.callAsync<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(seq); }));
      }
      auto r = window.front().get();
      window.pop_front();
      if (!r.ok() || r->results().getSeq() != 100 + done) ++wrong;
      ++done;
    }
  };
  pump(std::chrono::milliseconds(100));  // warm
  // A callback and a polled Future sent while a waiter spins complete too.
  stub.callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(3); },
                                                    [&](Result<Reply<TestService::EchoResults>> r) {
                                                      if (r.ok() && r->results().getSeq() == 3)
                                                        callbacks.fetch_add(1);
                                                    });
  auto polledDuring =
      stub.callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(4); });
  const long before = threadTicks("hms-completion");
  const auto t0 = std::chrono::steady_clock::now();
  pump(std::chrono::milliseconds(600));
  const double wallTicks =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() *
      double(::sysconf(_SC_CLK_TCK));
  const long used = threadTicks("hms-completion") - before;
  while (!window.empty()) {
    auto r = window.front().get();
    window.pop_front();
    if (!r.ok() || r->results().getSeq() != 100 + done) ++wrong;
    ++done;
  }
  EXPECT_EQ(wrong, 0u);
  // Spinning beside the waiter, it took half the wall time (30 of 60 ticks); asleep, it wakes
  // once a millisecond to look (0-2 ticks in a release build, up to 9 under ThreadSanitizer,
  // whose instrumentation makes each look cost a hundred times more).
  EXPECT_LT(double(used), 0.25 * wallTicks) << "the completion thread used " << used << " of "
                                            << wallTicks << " ticks over " << done << " calls";
  // Nobody spins now: what is left is the completion thread's to deliver.
  auto polledAfter = stub.callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(5); });
  EXPECT_TRUE(waitUntil(
      [&] { return callbacks.load() == 2 && polledDuring.ready() && polledAfter.ready(); },
      std::chrono::seconds(30)));
  auto last = polledAfter.get();
  ASSERT_TRUE(last.ok()) << last.status().toString();
  EXPECT_EQ(last->results().getSeq(), 5u);
}

// A thread that keeps collecting answers already there must not keep the completion thread from
// delivering the answer another thread sleeps for (it gave up spinning): that answer is nobody
// else's to read.
TEST_F(SharedMemoryOnly, AWaiterAsleepGetsItsAnswer_WhileAnotherThreadCollectsFinishedCalls) {
  auto svc = service();
  auto client = connect();  // adaptive: a waiter spins 50 us, then sleeps on its call
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  std::vector<Future<TestService::EchoResults>> finished;
  for (uint64_t i = 0; i < 16; ++i) {
    finished.push_back(
        stub.callAsync<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); }));
  }
  for (auto& f : finished) ASSERT_TRUE(f.waitFor(std::chrono::seconds(30)));
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> looks{0};
  std::thread collector([&] {
    // Each wait finds its answer there at once, for as long as the other thread waits.
    for (size_t i = 0; !stop.load(); i = (i + 1) % finished.size()) {
      if (finished[i].waitFor(std::chrono::nanoseconds(0))) looks.fetch_add(1);
    }
  });
  // The service takes 300 ms: the waiter sleeps well before the answer comes.
  Status outcome(StatusCode::kUnknown, "not run");
  std::thread waiter([&] {
    auto r = stub.callAsync<&TestService::Client::sleepRequest>(
                     [](auto p) { p.setMs(300); }, {.timeout = std::chrono::seconds(5)})
                 .get();
    outcome = r.ok() ? Status() : r.status();
  });
  // Meanwhile an answer nobody waits on (its Future is polled) wakes the completion thread,
  // which then looks at the channel while the collector is busy on it.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto polled = stub.callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(99); });
  EXPECT_TRUE(waitUntil([&] { return polled.ready(); }, std::chrono::seconds(30)));
  waiter.join();
  stop = true;
  collector.join();
  EXPECT_TRUE(outcome.ok()) << outcome.toString();  // not DEADLINE_EXCEEDED: it was delivered
  EXPECT_GT(looks.load(), 0u);
  for (uint64_t i = 0; i < finished.size(); ++i) {
    auto done = finished[i].get();
    ASSERT_TRUE(done.ok()) << done.status().toString();
    EXPECT_EQ(done->results().getSeq(), i);
  }
}

// No transport forced: each client picks shared memory unless it cannot map it.
class Fallback : public IntegrationBase {};

TEST_F(Fallback, CallerWithoutSharedMemory_FallsBackToSockets_AndLogsWhyOnce) {
  auto svc = service();
  Subprocess caller({testing::testCallerBinary(), broker.socket()},
                    {"HMS_FFI_INJECT_SHM_FAILURE=1"});
  ASSERT_TRUE(caller.waitForLine("calling")) << caller.errors();
  caller.signal(SIGKILL);
  caller.wait();
  const std::string log = caller.errors();
  EXPECT_EQ(countOf(log, "shared memory is unavailable to this process"), 1u) << log;
  EXPECT_NE(log.find("injected by HMS_FFI_INJECT_SHM_FAILURE"), std::string::npos) << log;
  EXPECT_NE(log.find("Unix-socket transport"), std::string::npos) << log;
  EXPECT_TRUE(svc.running());
}

TEST_F(Fallback, OneServiceServesSharedMemoryAndSocketCallersAtOnce) {
  auto svc = service();
  auto shmClient = connect();
  ::setenv("HMS_FFI_INJECT_SHM_FAILURE", "1", 1);
  auto sockClient = connect();
  ::unsetenv("HMS_FFI_INJECT_SHM_FAILURE");
  EXPECT_TRUE(shmClient->usesSharedMemory());
  EXPECT_FALSE(sockClient->usesSharedMemory());
  EXPECT_NE(sockClient->sharedMemoryProblem().find("HMS_FFI_INJECT_SHM_FAILURE"),
            std::string::npos);
  // Discovery without shared memory reads the registry over the control socket.
  auto found = sockClient->discover("hms.test");
  ASSERT_TRUE(found.ok()) << found.status().toString();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].providerPid, svc.pid());

  auto a = shmClient->bind<TestService>("hms.test");
  auto b = sockClient->bind<TestService>("hms.test");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->transport(), Transport::kSharedMemory);
  EXPECT_EQ(b->transport(), Transport::kSocket);
  for (uint64_t i = 0; i < 2000; ++i) {
    auto ra = echo(*a, i, i % 64);
    ASSERT_TRUE(ra.ok()) << ra.status().toString();
    EXPECT_EQ(ra->results().getSeq(), i);
    auto rb = echo(*b, i + 1'000'000, i % 64);
    ASSERT_TRUE(rb.ok()) << rb.status().toString();
    EXPECT_EQ(rb->results().getSeq(), i + 1'000'000);
  }
}

TEST_F(Fallback, ServiceWithoutSharedMemory_IsCalledOverASocket) {
  auto svc = startTestService(broker.socket(), {}, "ready", {"HMS_FFI_INJECT_SHM_FAILURE=1"});
  auto client = connect();
  EXPECT_TRUE(client->usesSharedMemory());
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  EXPECT_EQ(stub->transport(), Transport::kSocket);
  auto r = echo(*stub, 5, 100);
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(r->results().getSeq(), 5u);
}

TEST_F(Fallback, SharedMemoryRequired_ButRefused_IsFailedPrecondition) {
  ::setenv("HMS_FFI_INJECT_SHM_FAILURE", "1", 1);
  ClientOptions o;
  o.socketPath = broker.socket();
  o.transport = Transport::kSharedMemory;
  auto c = Client::connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(c.status().message().find("transport shm"), std::string::npos) << c.status().toString();
}

TEST_F(Fallback, SharedMemoryRequired_ByTheCaller_OfAServiceWithout_IsFailedPrecondition) {
  auto svc = startTestService(broker.socket(), {}, "ready", {"HMS_FFI_INJECT_SHM_FAILURE=1"});
  ClientOptions o;
  o.transport = Transport::kSharedMemory;
  auto client = connect(o);
  auto stub = client->bind<TestService>("hms.test");
  ASSERT_FALSE(stub.ok());
  EXPECT_EQ(stub.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(stub.status().message().find("its provider has no shared memory"), std::string::npos)
      << stub.status().toString();
}

TEST_F(Fallback, UnknownTransportSetting_IsInvalidArgument) {
  ::setenv("HMS_FFI_TRANSPORT", "carrier-pigeon", 1);
  ClientOptions o;
  o.socketPath = broker.socket();
  auto c = Client::connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("carrier-pigeon"), std::string::npos);
}

TEST(BrokerTransport, SocketConfig_PutsEveryChannelOnASocket) {
  BrokerFixture b({"--transport", "socket"});
  auto svc = startTestService(b.socket(), {});
  ClientOptions o;
  o.socketPath = b.socket();
  auto client = Client::connect(o);
  ASSERT_TRUE(client.ok()) << client.status().toString();
  EXPECT_TRUE((*client)->usesSharedMemory());  // the registry still is
  auto stub = (*client)->bind<TestService>("hms.test");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  EXPECT_EQ(stub->transport(), Transport::kSocket);
  ASSERT_TRUE(echo(*stub, 3, 3).ok());
}

TEST(BrokerTransport, ShmConfig_RefusesClientsWithoutSharedMemory) {
  BrokerFixture b({"--transport", "shm"});
  ClientOptions o;
  o.socketPath = b.socket();
  o.transport = Transport::kSocket;
  auto c = Client::connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(c.status().message().find("--transport shm"), std::string::npos)
      << c.status().toString();
}

// A misbehaving caller on a socket channel: writes datagrams no libhmsffi would.
class SocketOnly : public IntegrationBase {
 protected:
  void SetUp() override { useTransport(Transport::kSocket); }

  struct RawSocket {
    std::shared_ptr<detail::ClientImpl> control;
    detail::UniqueFd fd;
    ~RawSocket() {
      if (control) control->shutdown();
    }
  };
  std::unique_ptr<RawSocket> openRaw(Client& client) {
    auto raw = std::make_unique<RawSocket>();
    ClientOptions o;
    o.socketPath = broker.socket();
    raw->control = std::make_shared<detail::ClientImpl>(o);
    EXPECT_TRUE(raw->control->start().isOk());
    auto info = client.resolve("hms.test");
    EXPECT_TRUE(info.ok()) << info.status().toString();
    auto reply = raw->control->roundTrip(
        [&](wire::Request::Builder req) { req.initOpenChannel().setServiceKey(info->key); });
    EXPECT_TRUE(reply.ok()) << reply.status().toString();
    EXPECT_EQ(reply->reply().getOpenChannel().getTransport(), wire::Transport::SOCKET);
    raw->fd = std::move(reply->fds[0]);
    return raw;
  }
  // Waits for one datagram; its size, 0 at EOF, -1 at the deadline.
  static ssize_t receive(int fd, void* buf, size_t size) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20'000) <= 0) return -1;
    return ::recv(fd, buf, size, 0);
  }
};

TEST_F(SocketOnly, MalformedDatagram_ClosesThatChannel_OthersKeepWorking) {
  auto svc = service();
  auto client = connect();
  auto good = client->bind<TestService>("hms.test");
  ASSERT_TRUE(good.ok());
  ASSERT_EQ(good->transport(), Transport::kSocket);
  ASSERT_TRUE(echo(*good, 1, 1).ok());
  auto raw = openRaw(*client);
  const char junk[10] = "not a rec";
  ASSERT_EQ(::send(raw->fd.get(), junk, sizeof(junk), 0), ssize_t(sizeof(junk)));
  char buf[64];
  EXPECT_EQ(receive(raw->fd.get(), buf, sizeof(buf)), 0) << "the service kept the channel open";
  EXPECT_TRUE(svc.running());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(echo(*good, uint64_t(i), 4).ok());
}

TEST_F(SocketOnly, MalformedRequestMessage_IsInvalidArgument_AndTheChannelStaysOpen) {
  auto svc = service();
  auto client = connect();
  auto raw = openRaw(*client);
  for (uint64_t callId : {77u, 78u}) {
    // A well-framed record whose message's root is a far pointer: never valid in one segment.
    struct {
      detail::RecordHeader header;
      uint64_t word;
    } rec{};
    rec.header.kind = detail::kRecordRequest;
    rec.header.callId = callId;
    rec.header.method = 0;  // echo
    rec.header.words = 1;
    rec.header.length = sizeof(rec);
    rec.word = 0x12345602u;
    ASSERT_EQ(::send(raw->fd.get(), &rec, sizeof(rec), 0), ssize_t(sizeof(rec)));
    alignas(8) uint8_t buf[4096];
    ASSERT_GT(receive(raw->fd.get(), buf, sizeof(buf)), ssize_t(sizeof(detail::RecordHeader)));
    detail::RecordHeader reply;
    std::memcpy(&reply, buf, sizeof(reply));
    EXPECT_EQ(reply.kind, detail::kRecordResponse);
    EXPECT_EQ(reply.callId, callId);
    EXPECT_EQ(statusCodeFromWire(reply.status), StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(svc.running());
}

// ---- asynchronous calls, one-way calls, streams (issue 4) -------------------------------------

Reply<TestService::StatsResults> stats(Stub<TestService>& stub) {
  auto r = stub.call<&TestService::Client::statsRequest>([](auto) {});
  EXPECT_TRUE(r.ok()) << r.status().toString();
  return std::move(r).valueOrThrow();
}

// Polls the service's counters until `pred` holds (or a generous deadline passes).
template <class Pred>
bool waitForStats(Stub<TestService>& stub, Pred pred) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until) {
    if (pred(stats(stub).results())) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST_P(Integration, TenThousandAsyncCalls_InFlightAtOnce_EachGetsItsOwnReply) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  constexpr uint64_t kCalls = 10'000;
  std::vector<Future<TestService::EchoResults>> futures;
  futures.reserve(kCalls);
  for (uint64_t i = 0; i < kCalls; ++i) {
    futures.push_back(stub.callAsync<&TestService::Client::echoRequest>([&](auto p) {
      p.setSeq(i);
      auto d = p.initPayload(uint(i % 48));
      for (size_t k = 0; k < d.size(); ++k) d[k] = uint8_t(i + k);
    }));
  }
  // Read back to front: replies are matched by call id, not by arrival order.
  for (uint64_t j = kCalls; j-- > 0;) {
    auto r = futures[j].get();
    ASSERT_TRUE(r.ok()) << j << ": " << r.status().toString();
    ASSERT_EQ(r->results().getSeq(), j);
    auto d = r->results().getPayload();
    ASSERT_EQ(d.size(), j % 48);
    for (size_t k = 0; k < d.size(); ++k) ASSERT_EQ(d[k], uint8_t(j + k));
  }
  EXPECT_FALSE(futures[0].valid());  // get() spends a Future
  // The same Stub still makes synchronous calls.
  auto r = echo(stub, 77, 8);
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(r->results().getSeq(), 77u);
}

TEST_P(Integration, AsyncCallbacks_RunOncePerCall_OnTheCompletionThread) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  constexpr uint64_t kCalls = 10'000;
  std::mutex m;
  std::condition_variable cv;
  std::vector<int> seen(kCalls, 0);
  uint64_t done = 0, failures = 0;
  bool onCallerThread = false;
  const auto caller = std::this_thread::get_id();
  for (uint64_t i = 0; i < kCalls; ++i) {
    stub.callAsync<&TestService::Client::echoRequest>(
        [&](auto p) { p.setSeq(i); },
        [&, i](Result<Reply<TestService::EchoResults>> r) {
          std::lock_guard lock(m);
          if (std::this_thread::get_id() == caller) onCallerThread = true;
          if (!r.ok() || r->results().getSeq() != i) ++failures;
          ++seen[i];
          if (++done == kCalls) cv.notify_all();
        });
  }
  std::unique_lock lock(m);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done == kCalls; }))
      << done << " of " << kCalls;
  EXPECT_EQ(failures, 0u);
  EXPECT_FALSE(onCallerThread);
  for (uint64_t i = 0; i < kCalls; ++i) ASSERT_EQ(seen[i], 1) << "call " << i;
}

TEST_P(Integration, AsyncErrors_DeadlineAndCancel_AreReportedAndTheStubGoesOn) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  // Deadline: a Future completes with DEADLINE_EXCEEDED when waited on.
  CallOptions quick;
  quick.timeout = std::chrono::milliseconds(100);
  auto slow =
      stub.callAsync<&TestService::Client::sleepRequest>([](auto p) { p.setMs(1500); }, quick);
  auto r = slow.get();
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().toString();
  // ...and a callback gets it from the completion thread, nobody waiting.
  std::promise<StatusCode> viaCallback;
  stub.callAsync<&TestService::Client::sleepRequest>(
      [](auto p) { p.setMs(1500); },
      [&](Result<Reply<TestService::SleepResults>> res) {
        viaCallback.set_value(res.status().code());
      },
      quick);
  auto f = viaCallback.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(f.get(), StatusCode::kDeadlineExceeded);
  // Cancel: completes at once with CANCELLED, long before the handler would answer.
  auto longCall = stub.callAsync<&TestService::Client::sleepRequest>([](auto p) { p.setMs(1500); });
  EXPECT_FALSE(longCall.ready());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(longCall.cancel().ok());
  EXPECT_TRUE(longCall.ready());
  auto c = longCall.get();
  EXPECT_EQ(c.status().code(), StatusCode::kCancelled) << c.status().toString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  // An error from the handler reaches the Future with its details.
  auto failed = stub.callAsync<&TestService::Client::failRequest>([](auto p) {
                      p.setCode(uint32_t(StatusCode::kPermissionDenied));
                      p.setMessage("no");
                    })
                    .get();
  EXPECT_EQ(failed.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(failed.status().message(), "no");
  // The channel is still good.
  auto ok = echo(stub, 5, 16);
  ASSERT_TRUE(ok.ok()) << ok.status().toString();
  EXPECT_EQ(ok->results().getSeq(), 5u);
}

TEST_P(Integration, OneWayCalls_RunInTheOrderSent_AndAnswerNothing) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  for (uint64_t i = 0; i < 2000; ++i) {
    ASSERT_TRUE(
        stub.callOneWay<&TestService::Client::noteRequest>([&](auto p) { p.setSeq(i); }).ok());
  }
  // A call sent after them runs after them.
  auto s = stats(stub);
  auto notes = s.results().getNotes();
  ASSERT_EQ(notes.size(), 2000u);
  for (uint i = 0; i < notes.size(); ++i) ASSERT_EQ(notes[i], i);
}

// One-way calls are acknowledged once they are in the channel: a caller that exits right after
// sending them (its channel closed, its process gone) loses none of them.
TEST_P(Integration, OneWayCalls_AllRun_WhenTheCallerExitsRightAfterSending) {
  auto svc = service();
  Subprocess caller({testing::testCallerBinary(), broker.socket(), "--notes", "500"});
  ASSERT_TRUE(caller.waitForLine("sent 500")) << caller.errors();
  ASSERT_EQ(caller.wait(), 0) << caller.errors();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  std::vector<uint64_t> seen;
  ASSERT_TRUE(waitUntil([&] {
    auto s = stats(stub);
    auto notes = s.results().getNotes();
    seen.clear();
    for (auto n : notes) seen.push_back(n);
    return seen.size() >= 500;
  })) << seen.size()
      << " of 500 ran";
  ASSERT_EQ(seen.size(), 500u);
  for (uint64_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], i);
}

// The broker ends the channel of a caller that left while the service has not yet read all it sent
// (the service was busy): the service still runs every one of them, in order. 250 notes fit the
// socket transport's buffer; more than the service reads in one batch after the close reaches it.
TEST_P(Integration, OneWayCalls_AllRun_WhenTheBrokerEndsTheChannelBeforeTheServiceReadThem) {
  const std::string gate = broker.dir() + "/release-notes";
  auto svc = service({"--hold-note", gate});
  Subprocess caller({testing::testCallerBinary(), broker.socket(), "--notes", "250"});
  ASSERT_TRUE(caller.waitForLine("sent 250")) << caller.errors();
  const std::string gone = "(pid " + std::to_string(caller.pid()) + ") gone";
  ASSERT_EQ(caller.wait(), 0) << caller.errors();
  // The broker has seen the caller leave and told the service the channel is over.
  ASSERT_TRUE(waitUntil([&] { return broker.process().errors().find(gone) != std::string::npos; }))
      << broker.process().errors();
  std::ofstream(gate).put('\n');
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  std::vector<uint64_t> seen;
  ASSERT_TRUE(waitUntil([&] {
    auto s = stats(stub);
    auto notes = s.results().getNotes();
    seen.clear();
    for (auto n : notes) seen.push_back(n);
    return seen.size() >= 250;
  })) << seen.size()
      << " of 250 ran";
  ASSERT_EQ(seen.size(), 250u);
  for (uint64_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], i);
}

// Sum of what the count stream sends for [from, from + n): values and payload bytes.
uint64_t expectedChecksum(uint64_t from, uint64_t n, uint32_t payloadBytes) {
  uint64_t sum = 0;
  for (uint64_t v = from; v < from + n; ++v) {
    sum += v;
    for (uint32_t k = 0; k < payloadBytes; ++k) sum += uint8_t(v * 7 + k);
  }
  return sum;
}

// Reads a whole count stream [from, from + n) of `payloadBytes`-byte items, checksummed as
// expectedChecksum() computes it.
struct CountStreamRead {
  uint64_t items = 0, sum = 0;
  bool inOrder = true;
  Status status;
};
CountStreamRead readCountStream(Stub<TestService>& stub, uint64_t from, uint64_t n,
                                uint32_t payloadBytes, std::chrono::nanoseconds timeout) {
  CallOptions generous;
  generous.timeout = timeout;
  auto stream = stub.openStream<&TestService::Client::countRequest>(
      [&](auto p) {
        p.setFrom(from);
        p.setN(n);
        p.setPayloadBytes(payloadBytes);
      },
      generous);
  CountStreamRead r;
  uint64_t expectValue = from;
  while (stream.next()) {
    auto item = stream.item();
    r.inOrder &= item.getValue() == expectValue++;
    r.sum += item.getValue();
    for (auto b : item.getPayload()) r.sum += b;
    ++r.items;
  }
  r.status = stream.status();
  return r;
}

// Items of 60 000 bytes take two datagrams each over a socket, and the second often comes after
// the receiver has gone to wait: none may be lost, cut or misrouted.
TEST_P(Integration, Stream_OfLargeItems_ArrivesWholeAndInOrder) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  constexpr uint64_t kItems = 3000;
  constexpr uint32_t kBytes = 60'000;  // over one datagram (SO_SNDBUF / 4), under two
  const auto r = readCountStream(stub, 5, kItems, kBytes, std::chrono::minutes(5));
  ASSERT_TRUE(r.status.ok()) << r.status.toString();
  EXPECT_EQ(r.items, kItems);
  EXPECT_TRUE(r.inOrder);
  EXPECT_EQ(r.sum, expectedChecksum(5, kItems, kBytes));
}

TEST_P(Integration, Stream_OfAMillionItems_ArrivesWholeAndInOrder) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  constexpr uint64_t kItems = 1'000'000;
  const auto r = readCountStream(stub, 10, kItems, 8, std::chrono::minutes(5));
  ASSERT_TRUE(r.status.ok()) << r.status.toString();
  EXPECT_EQ(r.items, kItems);
  EXPECT_TRUE(r.inOrder);
  EXPECT_EQ(r.sum, expectedChecksum(10, kItems, 8));
}

// Asynchronous calls and a stream under each wait mode of both sides: a waiting thread reads
// its own replies while it may spin (spin, adaptive) and leaves them to the completion thread
// otherwise (blocking); either way every reply and item arrives once, in place, intact.
TEST_P(CallVolume, AsyncWindowAndStream_EveryReplyAndItemChecked) {
  auto [mode, serviceMode] = std::get<1>(GetParam());
  auto svc = service({"--wait", serviceMode});
  ClientOptions o;
  o.waitMode = mode;
  auto client = connect(o);
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  constexpr uint64_t kCalls = 20'000;
  constexpr size_t kWindow = 32;
  std::deque<std::pair<uint64_t, Future<TestService::EchoResults>>> window;
  uint64_t wrong = 0;
  auto completeOldest = [&] {
    auto [seq, f] = std::move(window.front());
    window.pop_front();
    auto r = f.get();
    if (!r.ok() || r->results().getSeq() != seq || r->results().getPayload().size() != seq % 64) {
      ++wrong;
      return;
    }
    auto d = r->results().getPayload();
    for (size_t k = 0; k < d.size(); ++k) wrong += d[k] != uint8_t(seq + k);
  };
  for (uint64_t seq = 0; seq < kCalls; ++seq) {
    window.emplace_back(seq, stub.callAsync<&TestService::Client::echoRequest>([&](auto p) {
      p.setSeq(seq);
      auto d = p.initPayload(uint(seq % 64));
      for (size_t k = 0; k < d.size(); ++k) d[k] = uint8_t(seq + k);
    }));
    if (window.size() >= kWindow) completeOldest();
  }
  while (!window.empty()) completeOldest();
  EXPECT_EQ(wrong, 0u);

  constexpr uint64_t kItems = 20'000;
  const auto r = readCountStream(stub, 5, kItems, 24, std::chrono::minutes(2));
  ASSERT_TRUE(r.status.ok()) << r.status.toString();
  EXPECT_EQ(r.items, kItems);
  EXPECT_TRUE(r.inOrder);
  EXPECT_EQ(r.sum, expectedChecksum(5, kItems, 24));
}

TEST_P(Integration, Stream_SlowReaderOnASmallRing_SlowsTheServiceAndLosesNothing) {
  auto svc = service({"--ring-bytes", "16384"});
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  auto stream = stub.openStream<&TestService::Client::countRequest>([](auto p) {
    p.setN(3000);
    p.setPayloadBytes(1000);  // about 7 items fill the ring
  });
  // Meanwhile an asynchronous call on the same Stub completes before the stream does: calls on
  // one channel complete in any order.
  auto during = stub.callAsync<&TestService::Client::echoRequest>([](auto p) { p.setSeq(9); });
  uint64_t items = 0, sum = 0;
  while (stream.next()) {
    if (items % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    sum += stream.item().getValue();
    for (auto b : stream.item().getPayload()) sum += b;
    ++items;
    if (items == 100) {
      ASSERT_TRUE(during.waitFor(std::chrono::seconds(20)));
      auto r = during.get();
      ASSERT_TRUE(r.ok()) << r.status().toString();
      EXPECT_EQ(r->results().getSeq(), 9u);
    }
  }
  ASSERT_TRUE(stream.status().ok()) << stream.status().toString();
  EXPECT_EQ(items, 3000u);
  EXPECT_EQ(sum, expectedChecksum(0, 3000, 1000));
}

TEST_P(Integration, Stream_CancelledByTheCaller_TheHandlerSeesIt) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  auto stream = stub.openStream<&TestService::Client::countRequest>([](auto p) {
    p.setN(1'000'000'000);
    p.setDelayUs(500);
  });
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(stream.next()) << stream.status().toString();
  ASSERT_TRUE(stream.cancel().ok());
  EXPECT_FALSE(stream.next());
  EXPECT_EQ(stream.status().code(), StatusCode::kCancelled);
  EXPECT_TRUE(waitForStats(
      stub, [](auto s) { return s.getStreamsCancelled() >= 1 && s.getCancelCallbacks() >= 1; }));
}

TEST_P(Integration, Stream_EndedByTheServiceWithAnError_AndMisuseIsExplained) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  auto stream = stub.openStream<&TestService::Client::countRequest>([](auto p) {
    p.setN(100);
    p.setFailAt(40);
  });
  int items = 0;
  while (stream.next()) ++items;
  EXPECT_EQ(items, 40);
  EXPECT_EQ(stream.status().code(), StatusCode::kAborted);
  EXPECT_EQ(stream.status().message(), "asked to fail at 40");
  // A stream method called as a plain call, and a plain method opened as a stream.
  auto unary = stub.call<&TestService::Client::countRequest>([](auto p) { p.setN(1); });
  EXPECT_EQ(unary.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(unary.status().message().find("openStream"), std::string::npos);
  auto wrong = stub.openStream<&TestService::Client::echoRequest>([](auto) {});
  EXPECT_FALSE(wrong.next());
  EXPECT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition);
}

TEST_P(Integration, Stream_DeadlinePassesMidStream_CallerGetsDeadlineExceeded_HandlerStops) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  CallOptions o;
  o.timeout = std::chrono::milliseconds(300);
  auto stream = stub.openStream<&TestService::Client::countRequest>(
      [](auto p) {
        p.setN(1'000'000'000);
        p.setDelayUs(1000);
      },
      o);
  int items = 0;
  while (stream.next()) ++items;
  EXPECT_GT(items, 0);
  EXPECT_EQ(stream.status().code(), StatusCode::kDeadlineExceeded) << stream.status().toString();
  EXPECT_TRUE(waitForStats(stub, [](auto s) { return s.getStreamsCancelled() >= 1; }));
}

TEST_P(Integration, Stream_ServiceKilledMidStream_CallerGetsUnavailable_NoHang) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  auto stream = stub.openStream<&TestService::Client::countRequest>([](auto p) {
    p.setN(1'000'000'000);
    p.setDelayUs(200);
  });
  // A call in flight on another channel fails too. (On the stream's own channel a call that runs
  // this long would hold up the items: replies are built in place in the one response ring.)
  auto other = client->bind<TestService>("hms.test").valueOrThrow();
  auto pending =
      other.callAsync<&TestService::Client::sleepRequest>([](auto p) { p.setMs(60000); });
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(stream.next()) << stream.status().toString();
  svc.signal(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  while (stream.next()) {
  }
  EXPECT_EQ(stream.status().code(), StatusCode::kUnavailable) << stream.status().toString();
  auto r = pending.get();
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().toString();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15));
}

TEST_P(Integration, Stream_CallerKilledMidStream_TheServiceStopsTheHandler) {
  auto svc = service();
  auto client = connect();
  auto stub = client->bind<TestService>("hms.test").valueOrThrow();
  {
    auto other = connect();
    auto otherStub = other->bind<TestService>("hms.test").valueOrThrow();
    auto stream = otherStub.openStream<&TestService::Client::countRequest>([](auto p) {
      p.setN(1'000'000'000);
      p.setDelayUs(200);
    });
    ASSERT_TRUE(stream.next());
    // The caller goes away without cancelling: its Client shuts down with the stream open.
  }
  EXPECT_TRUE(waitForStats(stub, [](auto s) { return s.getCancelCallbacks() >= 1; }));
}

INSTANTIATE_TEST_SUITE_P(Transports, Integration,
                         ::testing::Values(Transport::kSharedMemory, Transport::kSocket),
                         transportParamName);

TEST(Broker, Sigterm_StopsGracefully_AndRemovesItsSocket) {
  BrokerFixture b;
  b.process().signal(SIGTERM);
  const int st = b.process().wait();
  ASSERT_NE(st, -1);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_FALSE(std::filesystem::exists(b.socket()));
}

TEST(Broker, SecondBrokerOnTheSamePath_IsRefused) {
  BrokerFixture first;
  Subprocess second({testing::brokerBinary(), "--socket", first.socket()});
  const int status = second.wait();
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  EXPECT_NE(second.errors().find("already serves"), std::string::npos) << second.errors();
  ClientOptions o;
  o.socketPath = first.socket();
  EXPECT_TRUE(Client::connect(o).ok());  // the first one is untouched
}

TEST(Broker, StaleSocketOfAKilledBroker_IsReplaced) {
  BrokerFixture b;
  b.kill9();
  ASSERT_TRUE(std::filesystem::exists(b.socket()));  // left behind
  b.start();
  ClientOptions o;
  o.socketPath = b.socket();
  o.reconnect = false;
  EXPECT_TRUE(Client::connect(o).ok());
}

TEST(Broker, ClientWithoutBroker_GetsUnavailableNamingTheSocket) {
  ClientOptions o;
  o.socketPath = "/tmp/hms-ffi-no-such-dir/broker.sock";
  auto c = Client::connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(c.status().message().find("/tmp/hms-ffi-no-such-dir/broker.sock"), std::string::npos);
}

}  // namespace
}  // namespace hms::ffi
