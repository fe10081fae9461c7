// Broker restarts under load (issue 21): the broker is SIGKILLed at random moments while two
// services in processes of their own are called, a publisher publishes to a subscriber, and a
// client here registers and unregisters services without pause; then it is started again. Each
// round proves that:
// - open channels never stop: every call on a channel opened before the storm succeeds, and calls
//   go on while no broker runs;
// - every client registers again: the new broker lists exactly the services that are served, each
//   once, none missing and none that was stopped, and the topic once;
// - the new broker opens channels to what registered again;
// and at the end the subscriber read every message in order, each once, through every restart.
//
// Rounds: HMS_FFI_BROKER_RESTART_ROUNDS (default 10 per transport, for CI); the long form is 50
// (docs/testing.md). The random seed is printed; HMS_FFI_BROKER_RESTART_SEED replays a run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hms/ffi/client.hpp"
#include "support/process.hpp"
#include "test.capnp.h"

namespace hms::ffi {
namespace {

using test::TestService;
using testing::BrokerFixture;
using testing::envOr;
using testing::Subprocess;
using testing::waitUntil;

ServiceDefinition<TestService> echoService() {
  ServiceDefinition<TestService> def;
  def.on<&TestService::Client::echoRequest>(
      [](CallContext&, TestService::EchoParams::Reader p, TestService::EchoResults::Builder r) {
        r.setSeq(p.getSeq());
        return Status();
      });
  return def;
}

// What a list of ids holds, as "id ×count" for those not listed exactly once in `want`.
std::string difference(const std::multiset<std::string>& got, const std::set<std::string>& want) {
  std::string out;
  for (const auto& id : want) {
    if (got.count(id) != 1) out += "\n  " + id + ": listed " + std::to_string(got.count(id)) + "x";
  }
  for (const auto& id : std::set<std::string>(got.begin(), got.end())) {
    if (!want.count(id)) out += "\n  " + id + ": listed but not served";
  }
  return out;
}

class BrokerRestart : public ::testing::TestWithParam<std::string> {};

TEST_P(BrokerRestart, KilledUnderLoad_OpenChannelsNeverStop_AndEveryRegistrationComesBackOnce) {
  const bool socket = GetParam() == "socket";
  std::vector<std::string> args = {"--log-level", "warn"};
  if (socket) args.insert(args.end(), {"--transport", "socket"});
  BrokerFixture broker(args);
  const uint64_t rounds = envOr("HMS_FFI_BROKER_RESTART_ROUNDS", 10);
  const uint64_t seed = envOr("HMS_FFI_BROKER_RESTART_SEED", std::random_device{}());
  std::printf("broker restarts over %s: %llu rounds, seed %llu\n", GetParam().c_str(),
              static_cast<unsigned long long>(rounds), static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);

  Subprocess serviceA = testing::startTestService(broker.socket(), {"--id", "hms.restart.a"});
  Subprocess serviceB = testing::startTestService(broker.socket(), {"--id", "hms.restart.b"});
  Subprocess publisher({testing::testTopicBinary(), "publish", broker.socket(), "restart.ticks",
                        "--count", "1000000000", "--bytes", "64"});
  ASSERT_TRUE(publisher.waitForLine("advertised")) << publisher.output() << publisher.errors();
  Subprocess subscriber(
      {testing::testTopicBinary(), "subscribe", broker.socket(), "restart.ticks", "--drop"});
  ASSERT_TRUE(subscriber.waitForLine("subscribed")) << subscriber.output() << subscriber.errors();

  auto connect = [&](const char* name) {
    ClientOptions o;
    o.socketPath = broker.socket();
    o.name = name;
    auto c = Client::connect(o);
    if (!c.ok()) throw std::runtime_error(c.status().toString());
    return std::move(*c);
  };
  auto callerClient = connect("restart-caller");
  auto registrar = connect("restart-registrar");
  auto checker = connect("restart-checker");

  std::atomic<bool> stop{false};
  std::mutex badMu;
  std::vector<std::string> bad;
  auto fail = [&](std::string what) {
    std::lock_guard lock(badMu);
    bad.push_back(std::move(what));
  };

  // Calls on channels opened before the storm: none may fail, broker or not.
  auto stubA = callerClient->bind<TestService>("hms.restart.a");
  auto stubB = callerClient->bind<TestService>("hms.restart.b");
  ASSERT_TRUE(stubA.ok()) << stubA.status().toString();
  ASSERT_TRUE(stubB.ok()) << stubB.status().toString();
  std::atomic<uint64_t> calls{0};
  std::thread caller([&] {
    CallOptions co;
    co.timeout = std::chrono::seconds(10);
    for (uint64_t i = 0; !stop; ++i) {
      auto& stub = i % 2 ? *stubA : *stubB;
      auto r = stub.call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); }, co);
      if (!r.ok()) {
        fail("call " + std::to_string(i) + " on an open channel: " + r.status().toString());
      } else if (r->results().getSeq() != i) {
        fail("call " + std::to_string(i) + " answered " + std::to_string(r->results().getSeq()));
      }
      ++calls;
    }
  });

  // Registrations and unregistrations without pause; paused while a round checks the registry.
  std::atomic<bool> pause{false}, paused{false};
  std::mutex liveMu;
  std::map<std::string, ServiceHandle> live;  // what this client serves now
  std::atomic<uint64_t> registered{0}, refused{0};
  std::thread registrations([&] {
    std::mt19937_64 local(seed + 1);
    for (uint64_t n = 0; !stop;) {
      if (pause) {
        paused = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      paused = false;
      std::unique_lock lock(liveMu);
      if (live.size() < 4 || (live.size() < 16 && local() % 2 == 0)) {
        const std::string id = "hms.restart.r" + std::to_string(n++);
        lock.unlock();
        auto h = registrar->serve(id, {1, 0, 0}, echoService());
        lock.lock();
        if (h.ok()) {
          live.emplace(id, std::move(*h));
          ++registered;
        } else if (h.status().code() == StatusCode::kUnavailable) {
          ++refused;  // no broker at that moment: not served
        } else {
          fail("serve " + id + ": " + h.status().toString());
        }
      } else {
        auto it = std::next(live.begin(), long(local() % live.size()));
        const std::string id = it->first;
        ServiceHandle h = std::move(it->second);
        live.erase(it);
        lock.unlock();
        // Stopped, whatever the broker said: this client no longer serves it, and no broker may
        // list it from now on.
        if (auto s = h.stop(); !s && s.code() != StatusCode::kUnavailable) {
          fail("stop " + id + ": " + s.toString());
        }
      }
      if (lock.owns_lock()) lock.unlock();
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& a;
    std::thread& b;
    ~Joiner() {
      stop = true;
      if (a.joinable()) a.join();
      if (b.joinable()) b.join();
    }
  } joiner{stop, caller, registrations};

  auto badSoFar = [&] {
    std::lock_guard lock(badMu);
    return bad.empty() ? std::string()
                       : std::to_string(bad.size()) + " failures, the first: " + bad[0];
  };

  for (uint64_t round = 0; round < rounds; ++round) {
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50'000));
    broker.kill9();
    // The data path does not need the broker.
    const uint64_t before = calls;
    ASSERT_TRUE(waitUntil([&] { return calls.load() >= before + 100; }, std::chrono::seconds(30)))
        << "round " << round << ": calls on open channels stopped with the broker";
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 100'000));
    broker.start();

    // With the registrations paused, the new broker comes to list exactly what is served.
    pause = true;
    ASSERT_TRUE(waitUntil([&] { return paused.load(); }, std::chrono::seconds(30)));
    std::set<std::string> want = {"hms.restart.a", "hms.restart.b"};
    {
      std::lock_guard lock(liveMu);
      for (const auto& [id, h] : live) want.insert(id);
    }
    // Asked of a client connected now (surely to the new broker) and of one connected before
    // the storm (whose view of the registry must follow it to the new broker, not stay the dead
    // one's).
    std::string listed;
    const bool settled = waitUntil(
        [&] {
          auto observer = connect("restart-observer");
          for (Client* c : {observer.get(), checker.get()}) {
            auto found = c->discoverPrefix("hms.restart.");
            auto topics = c->discoverTopics("restart.");
            if (!found.ok() || !topics.ok()) {
              listed = (found.ok() ? topics.status() : found.status()).toString();
              return false;
            }
            std::multiset<std::string> got;
            for (const auto& s : *found) got.insert(s.id);
            listed = difference(got, want);
            if (topics->size() != 1) {
              listed += "\n  " + std::to_string(topics->size()) + " topics, not 1";
            }
            if (!listed.empty()) return false;
          }
          return true;
        },
        std::chrono::seconds(30));
    ASSERT_TRUE(settled) << "round " << round << ": after the restart the broker lists" << listed
                         << "\nthe broker's log:\n"
                         << broker.process().errors();
    // The new broker opens channels to what registered again.
    {
      auto fresh = connect("restart-newcomer");
      for (const std::string& id : {std::string("hms.restart.a"), *want.rbegin()}) {
        auto stub = fresh->bind<TestService>(id);
        ASSERT_TRUE(stub.ok()) << "round " << round << ": " << id << ": "
                               << stub.status().toString();
        auto r = stub->call<&TestService::Client::echoRequest>([](auto p) { p.setSeq(7); });
        ASSERT_TRUE(r.ok()) << "round " << round << ": " << id << ": " << r.status().toString();
      }
    }
    pause = false;
    (void)broker.process().errors();  // a full stderr pipe would stop the broker
    ASSERT_EQ(badSoFar(), "") << "round " << round;
  }
  stop = true;
  caller.join();
  registrations.join();
  std::printf(
      "broker restarts over %s: %llu rounds; %llu calls on open channels; %llu services "
      "registered, %llu refused while no broker ran\n",
      GetParam().c_str(), static_cast<unsigned long long>(rounds),
      static_cast<unsigned long long>(calls.load()),
      static_cast<unsigned long long>(registered.load()),
      static_cast<unsigned long long>(refused.load()));
  EXPECT_EQ(badSoFar(), "");

  // The subscriber read every message in order, each once, gaps reported, through every restart,
  // and learns of its publisher's death from the new broker or the kernel.
  publisher.signal(SIGKILL);
  const int st = subscriber.wait(std::chrono::seconds(30));
  ASSERT_NE(st, -1) << "the subscriber did not see its publisher die";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << subscriber.output() << subscriber.errors();
  EXPECT_TRUE(serviceA.running());
  EXPECT_TRUE(serviceB.running());
  EXPECT_TRUE(broker.process().running());
}

INSTANTIATE_TEST_SUITE_P(Transports, BrokerRestart, ::testing::Values("shm", "socket"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace hms::ffi
