// Deferred handlers (Responder): calls answered later, from another thread, over both transports.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "hms/ffi/client.hpp"
#include "support/process.hpp"
#include "test.capnp.h"

namespace hms::ffi {
namespace {

using test::TestService;
using testing::BrokerFixture;
using testing::waitUntil;

// One call kept by the service for later: what its answer needs, copied out of the params.
struct Kept {
  uint64_t seq = 0;
  std::vector<uint8_t> payload;
  Responder responder;
};

// Calls the handler kept, for a test thread to answer.
class Inbox {
 public:
  void put(Kept k) {
    std::lock_guard lock(mu_);
    kept_.push_back(std::move(k));
    cv_.notify_all();
  }
  // Waits (generously) for `n` calls and takes them.
  std::vector<Kept> take(size_t n) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return kept_.size() >= n; });
    std::vector<Kept> out;
    while (!kept_.empty() && out.size() < n) {
      out.push_back(std::move(kept_.front()));
      kept_.pop_front();
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Kept> kept_;
};

Status answerEcho(Kept& k) {
  return k.responder.reply([&](capnp::MessageBuilder& mb) {
    auto r = mb.initRoot<TestService::EchoResults>();
    r.setSeq(k.seq);
    r.setPayload(kj::arrayPtr(k.payload.data(), k.payload.size()));
    return Status();
  });
}

class Deferred : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    ::setenv("HMS_FFI_TRANSPORT", GetParam() == Transport::kSocket ? "socket" : "shm", 1);
  }
  void TearDown() override { ::unsetenv("HMS_FFI_TRANSPORT"); }
  std::unique_ptr<Client> connect(std::string name) {
    ClientOptions o;
    o.socketPath = broker.socket();
    o.name = std::move(name);
    auto c = Client::connect(o);
    EXPECT_TRUE(c.ok()) << c.status().toString();
    return std::move(c).valueOrThrow();
  }
  // Serves hms.test in this process: echo, sleep and fail are deferred; echo and sleep keep
  // their calls in `inbox`, fail does what its message says.
  ServiceHandle serve(Client& c, ServiceOptions options = {}) {
    ServiceDefinition<TestService> def;
    def.onDeferred<&TestService::Client::echoRequest>(
        [this](CallContext&, TestService::EchoParams::Reader p, Responder& r) {
          auto d = p.getPayload();
          inbox.put(Kept{p.getSeq(), std::vector<uint8_t>(d.begin(), d.end()), std::move(r)});
        });
    def.onDeferred<&TestService::Client::sleepRequest>(
        [this](CallContext& ctx, TestService::SleepParams::Reader, Responder& r) {
          ctx.onCancel([this] { ++cancels; });
          inbox.put(Kept{0, {}, std::move(r)});
        });
    def.onDeferred<&TestService::Client::failRequest>([this](CallContext&,
                                                             TestService::FailParams::Reader p,
                                                             Responder& r) {
      const std::string what = p.getMessage();
      if (what == "return") return;  // neither answered nor kept
      if (what == "drop") {
        Responder gone = std::move(r);
        return;
      }
      if (what == "throw") throw Error(Status(StatusCode::kPermissionDenied, "thrown"));
      if (what == "build-error") {
        (void)r.reply([](capnp::MessageBuilder&) {
          return Status(StatusCode::kResourceExhausted, "no room for the answer");
        });
        return;
      }
      if (what == "twice") {
        (void)r.fail(Status(StatusCode::kAborted, "first"));
        secondAnswer = r.fail(Status(StatusCode::kAborted, "second")).code();
        return;
      }
      (void)r.fail(Status(StatusCode(p.getCode()), what, "deferred-test", {{"patient", "12345"}}));
    });
    auto h = c.serve("hms.test", {1, 0, 0}, std::move(def), std::move(options));
    EXPECT_TRUE(h.ok()) << h.status().toString();
    return std::move(h).valueOrThrow();
  }

  BrokerFixture broker;
  Inbox inbox;
  std::atomic<int> cancels{0};
  std::atomic<StatusCode> secondAnswer{StatusCode::kOk};
};

// What a deferred handler is for: a caller's calls in flight on one channel all reach the
// handler before any is answered, and answers in any order reach the right calls.
TEST_P(Deferred, CallsOverlapOnOneChannel_AndAnswersFromAnotherThreadInAnyOrderReachTheirCalls) {
  auto svcClient = connect("deferred-service");
  auto handle = serve(*svcClient);
  auto caller = connect("deferred-caller");
  auto stub = caller->bind<TestService>("hms.test").valueOrThrow();
  constexpr int kCalls = 16;
  CallOptions o;
  o.timeout = std::chrono::seconds(30);
  std::vector<Future<TestService::EchoResults>> futures;
  for (int i = 0; i < kCalls; ++i) {
    futures.push_back(stub.callAsync<&TestService::Client::echoRequest>(
        [&](auto p) {
          p.setSeq(uint64_t(100 + i));
          auto d = p.initPayload(uint(8 + i));
          for (int b = 0; b < 8 + i; ++b) d[uint(b)] = uint8_t(i * 7 + b);
        },
        o));
  }
  // All sixteen are with the service at once (a handler that held its thread, or a channel
  // served one call at a time, would show only the first), answered last first.
  auto kept = inbox.take(kCalls);
  ASSERT_EQ(kept.size(), size_t(kCalls));
  std::thread answerer([&] {
    for (auto it = kept.rbegin(); it != kept.rend(); ++it) EXPECT_TRUE(answerEcho(*it).ok());
  });
  for (int i = 0; i < kCalls; ++i) {
    auto r = futures[size_t(i)].get();
    ASSERT_TRUE(r.ok()) << r.status().toString();
    EXPECT_EQ(r->results().getSeq(), uint64_t(100 + i));
    auto d = r->results().getPayload();
    ASSERT_EQ(d.size(), size_t(8 + i));
    for (int b = 0; b < 8 + i; ++b) EXPECT_EQ(d[size_t(b)], uint8_t(i * 7 + b));
  }
  answerer.join();
  // A synchronous call, answered from the handler itself, on the same channel.
  std::thread one([&] {
    auto k = inbox.take(1);
    ASSERT_EQ(k.size(), 1u);
    EXPECT_TRUE(answerEcho(k[0]).ok());
  });
  auto r = stub.call<&TestService::Client::echoRequest>([](auto p) { p.setSeq(7); }, o);
  one.join();
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(r->results().getSeq(), 7u);
  // The service's metrics count each call once it is answered, whichever thread answered it.
  const auto counted = [&] {
    auto m = caller->metrics();
    if (!m.ok()) return false;
    for (const auto& method : m->methods) {
      if (method.service == "hms.test" && method.method == "echo") {
        return method.handled[0] == kCalls + 1 && method.inFlight == 0;
      }
    }
    return false;
  };
  EXPECT_TRUE(waitUntil(counted));
}

TEST_P(Deferred, FailuresAndMistakes_ReachTheCallerAsClearErrors) {
  auto svcClient = connect("deferred-service");
  auto handle = serve(*svcClient);
  auto caller = connect("deferred-caller");
  auto stub = caller->bind<TestService>("hms.test").valueOrThrow();
  auto fail = [&](StatusCode code, const char* what) {
    return stub
        .call<&TestService::Client::failRequest>([&](auto p) {
          p.setCode(uint32_t(code));
          p.setMessage(what);
        })
        .status();
  };
  Status r = fail(StatusCode::kNotFound, "no patient 12345");
  EXPECT_EQ(r.code(), StatusCode::kNotFound);
  EXPECT_EQ(r.message(), "no patient 12345");
  EXPECT_EQ(r.source(), "deferred-test");
  ASSERT_EQ(r.details().size(), 1u);
  EXPECT_EQ(r.details()[0].second, "12345");

  r = fail(StatusCode::kOk, "return");
  EXPECT_EQ(r.code(), StatusCode::kInternal);
  EXPECT_NE(r.message().find("returned without answering"), std::string::npos) << r.toString();
  r = fail(StatusCode::kOk, "drop");
  EXPECT_EQ(r.code(), StatusCode::kInternal);
  EXPECT_NE(r.message().find("dropped"), std::string::npos) << r.toString();
  r = fail(StatusCode::kOk, "throw");
  EXPECT_EQ(r.code(), StatusCode::kPermissionDenied) << r.toString();
  EXPECT_EQ(r.message(), "thrown");
  r = fail(StatusCode::kOk, "build-error");
  EXPECT_EQ(r.code(), StatusCode::kResourceExhausted) << r.toString();
  r = fail(StatusCode::kOk, "twice");
  EXPECT_EQ(r.code(), StatusCode::kAborted);
  EXPECT_EQ(r.message(), "first");
  // (The handler's second answer returns after the caller has the first.)
  ASSERT_TRUE(waitUntil([&] { return secondAnswer.load() != StatusCode::kOk; }));
  EXPECT_EQ(secondAnswer.load(), StatusCode::kFailedPrecondition);
  // A one-way call to a deferred method runs; nobody waits for an answer.
  ASSERT_TRUE(stub.callOneWay<&TestService::Client::echoRequest>([](auto p) { p.setSeq(9); }).ok());
  auto k = inbox.take(1);
  ASSERT_EQ(k.size(), 1u);
  EXPECT_EQ(k[0].seq, 9u);
  EXPECT_EQ(answerEcho(k[0]).code(), StatusCode::kFailedPrecondition);
}

TEST_P(Deferred, CancelAndDeadline_ReachTheKeptCall_AndItsLateAnswerHarmsNothing) {
  auto svcClient = connect("deferred-service");
  auto handle = serve(*svcClient);
  auto caller = connect("deferred-caller");
  auto stub = caller->bind<TestService>("hms.test").valueOrThrow();
  // Cancelled by the caller after its handler returned.
  auto call = stub.callAsync<&TestService::Client::sleepRequest>([](auto p) { p.setMs(1); });
  auto kept = inbox.take(1);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_FALSE(kept[0].responder.cancelled());
  ASSERT_TRUE(call.cancel().ok());
  ASSERT_TRUE(waitUntil([&] { return cancels.load() == 1; }));
  EXPECT_TRUE(kept[0].responder.cancelled());
  EXPECT_EQ(kept[0]
                .responder
                .reply([](capnp::MessageBuilder& mb) {
                  mb.initRoot<TestService::SleepResults>();
                  return Status();
                })
                .code(),
            StatusCode::kUnavailable);
  // Its deadline passes while the service holds it.
  CallOptions quick;
  quick.timeout = std::chrono::milliseconds(200);
  auto late = stub.call<&TestService::Client::sleepRequest>([](auto p) { p.setMs(1); }, quick);
  EXPECT_EQ(late.status().code(), StatusCode::kDeadlineExceeded) << late.status().toString();
  kept = inbox.take(1);
  ASSERT_EQ(kept.size(), 1u);
  ASSERT_TRUE(waitUntil([&] { return cancels.load() == 2; }));
  EXPECT_EQ(kept[0].responder.fail(Status(StatusCode::kAborted, "too late")).code(),
            StatusCode::kUnavailable);
  // The channel goes on.
  std::thread answerer([&] {
    auto k = inbox.take(1);
    ASSERT_EQ(k.size(), 1u);
    EXPECT_TRUE(answerEcho(k[0]).ok());
  });
  auto r = stub.call<&TestService::Client::echoRequest>([](auto p) { p.setSeq(3); });
  answerer.join();
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(r->results().getSeq(), 3u);
}

TEST_P(Deferred, AnswersAfterTheCallerOrTheServiceIsGone_AreUnavailable) {
  auto svcClient = connect("deferred-service");
  auto handle = serve(*svcClient);
  {
    auto caller = connect("deferred-caller");
    auto stub = caller->bind<TestService>("hms.test").valueOrThrow();
    (void)stub.callAsync<&TestService::Client::sleepRequest>([](auto p) { p.setMs(1); });
    auto kept = inbox.take(1);
    ASSERT_EQ(kept.size(), 1u);
    caller.reset();  // the caller's process ends, its channel with it
    ASSERT_TRUE(waitUntil([&] { return kept[0].responder.cancelled(); }));
    EXPECT_EQ(answerEcho(kept[0]).code(), StatusCode::kUnavailable);
  }
  // The service's client stops with a call kept; answered after that, nothing is written.
  auto caller = connect("deferred-caller");
  auto stub = caller->bind<TestService>("hms.test").valueOrThrow();
  CallOptions o;
  o.timeout = std::chrono::seconds(30);
  auto pending = stub.callAsync<&TestService::Client::sleepRequest>([](auto p) { p.setMs(1); }, o);
  auto kept = inbox.take(1);
  ASSERT_EQ(kept.size(), 1u);
  (void)handle.stop();
  svcClient.reset();
  EXPECT_EQ(kept[0].responder.fail(Status(StatusCode::kAborted, "after")).code(),
            StatusCode::kUnavailable);
  auto r = pending.get();
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().toString();
}

INSTANTIATE_TEST_SUITE_P(Transports, Deferred,
                         ::testing::Values(Transport::kSharedMemory, Transport::kSocket),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return info.param == Transport::kSocket ? "socket" : "shm";
                         });

}  // namespace
}  // namespace hms::ffi
