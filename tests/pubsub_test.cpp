// Publish/subscribe end to end: a real hms-ffid, publishers and subscribers in this process and
// in processes of their own (hms-ffi-test-topic), over shared memory and over sockets.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "hms/ffi/client.hpp"
#include "support/process.hpp"
#include "support/tick.hpp"
#include "test.capnp.h"

namespace hms::ffi {
namespace {

using test::Other;
using test::Tick;
using testing::BrokerFixture;
using testing::Subprocess;
using testing::tickByte;
using testing::tickIntact;
using testing::waitUntil;

Status publishTick(Publisher<Tick>& pub, size_t bytes = 64) {
  const uint64_t seq = pub.published() + 1;
  return pub.publish([&](Tick::Builder t) {
    t.setSeq(seq);
    auto p = t.initPayload(uint(bytes));
    for (size_t i = 0; i < bytes; ++i) p[i] = tickByte(seq, i);
  });
}

const char* transportName(Transport t) {
  return t == Transport::kSocket ? "socket" : "shm";
}

// A private broker; every client of the test, here or in a child, uses the parameter's transport.
class PubSub : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override { ::setenv("HMS_FFI_TRANSPORT", transportName(GetParam()), 1); }
  void TearDown() override { ::unsetenv("HMS_FFI_TRANSPORT"); }
  std::unique_ptr<Client> connect() {
    ClientOptions o;
    o.socketPath = broker.socket();
    return Client::connect(o).valueOrThrow();
  }
  Subprocess topicProcess(std::vector<std::string> args, std::vector<std::string> env = {}) {
    args.insert(args.begin() + 1, broker.socket());
    args.insert(args.begin(), testing::testTopicBinary());
    return Subprocess(args, env);
  }
  bool sharedMemory() const { return GetParam() == Transport::kSharedMemory; }
  BrokerFixture broker;
};

// The child's last line: "got R missed M last L end CODE".
struct Summary {
  uint64_t got = 0, missed = 0, last = 0;
  int end = -1;
};
// Waits for a subscriber process to print its summary and exit; its exit status.
int finish(Subprocess& s) {
  (void)s.waitForLine("got ", std::chrono::seconds(120));
  return s.wait(std::chrono::seconds(60));
}
Summary summaryOf(const std::string& out) {
  Summary s;
  const auto at = out.rfind("got ");
  if (at != std::string::npos) {
    std::sscanf(out.c_str() + at, "got %lu missed %lu last %lu end %d", &s.got, &s.missed, &s.last,
                &s.end);
  }
  return s;
}

TEST_P(PubSub, BlockPublisher_EightSubscriberProcesses_EachSeesEveryMessageOnceInOrder) {
  auto client = connect();
  TopicOptions o;
  o.slots = 16;  // far fewer than the messages: the publisher waits for the slowest reader
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok()) << pub.status().toString();
  std::vector<Subprocess> subs;
  for (int i = 0; i < 8; ++i) subs.push_back(topicProcess({"subscribe", "hms.test.ticks"}));
  for (auto& s : subs) ASSERT_TRUE(s.waitForLine("subscribed")) << s.output() << s.errors();
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 8; }));
  auto topics = client->discoverTopics("hms.test.");
  ASSERT_TRUE(topics.ok());
  ASSERT_EQ(topics->size(), 1u);
  EXPECT_EQ((*topics)[0].subscribers, 8u);
  EXPECT_EQ((*topics)[0].typeName, "Tick");
  EXPECT_EQ((*topics)[0].publisherPid, ::getpid());

  constexpr uint64_t kMessages = 20'000;
  for (uint64_t n = 1; n <= kMessages; ++n) {
    auto s = publishTick(*pub, n % 300);
    ASSERT_TRUE(s) << "message " << n << ": " << s.toString();
  }
  ASSERT_TRUE(pub->close());
  for (auto& s : subs) {
    const int status = finish(s);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << s.output() << s.errors();
    const Summary sum = summaryOf(s.output());
    EXPECT_EQ(sum.got, kMessages) << s.output();
    EXPECT_EQ(sum.missed, 0u);
    EXPECT_EQ(sum.last, kMessages);
    EXPECT_EQ(sum.end, int(StatusCode::kUnavailable));
  }
}

// Fills a Tick of `bytes` for sequence number seq (as publishTick does).
void fillTick(Tick::Builder t, uint64_t seq, size_t bytes) {
  t.setSeq(seq);
  auto p = t.initPayload(uint(bytes));
  for (size_t i = 0; i < bytes; ++i) p[i] = tickByte(seq, i);
}

TEST_P(PubSub, PublishBatch_LargerThanTheLog_ReachesBlockingSubscribersWholeAndInOrder) {
  auto client = connect();
  TopicOptions o;
  o.slots = 16;  // batches of 100 and more: published in parts as the subscribers read
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok()) << pub.status().toString();
  std::vector<Subprocess> subs;
  for (int i = 0; i < 2; ++i) subs.push_back(topicProcess({"subscribe", "hms.test.ticks"}));
  for (auto& s : subs) ASSERT_TRUE(s.waitForLine("subscribed")) << s.output() << s.errors();
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 2; }));

  uint64_t total = 0;
  for (size_t batch : {1, 7, 16, 100, 1000, 3}) {
    const uint64_t first = pub->published() + 1;
    auto s = pub->publishBatch(
        batch, [&](size_t i, Tick::Builder t) { fillTick(t, first + i, (first + i) % 300); });
    ASSERT_TRUE(s) << "a batch of " << batch << ": " << s.toString();
    total += batch;
    ASSERT_EQ(pub->published(), total);
  }
  ASSERT_TRUE(pub->close());
  for (auto& s : subs) {
    const int status = finish(s);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << s.output() << s.errors();
    const Summary sum = summaryOf(s.output());
    EXPECT_EQ(sum.got, total) << s.output();
    EXPECT_EQ(sum.missed, 0u);
    EXPECT_EQ(sum.last, total);
  }
}

TEST_P(PubSub, PublishBatch_StoppedByATooLargeMessageOrAThrow_PublishesWhatCameBefore) {
  auto client = connect();
  TopicOptions o;
  o.maxMessageBytes = 256;
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok()) << pub.status().toString();
  auto sub = client->subscribe<Tick>("hms.test.ticks");
  ASSERT_TRUE(sub.ok()) << sub.status().toString();
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 1; }));

  // The sixth message of ten does not fit: five are published, and the status says so.
  auto s = pub->publishBatch(
      10, [&](size_t i, Tick::Builder t) { fillTick(t, i + 1, i == 5 ? 1000 : 100); });
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.toString();
  EXPECT_NE(s.message().find("5 of the batch's 10 messages were published"), std::string::npos)
      << s.toString();
  EXPECT_EQ(pub->published(), 5u);
  // The fill throws at the third: two more are published, the exception reaches the caller.
  EXPECT_THROW((void)pub->publishBatch(4,
                                       [&](size_t i, Tick::Builder t) {
                                         if (i == 2) throw std::runtime_error("fill failed");
                                         fillTick(t, 6 + i, 64);
                                       }),
               std::runtime_error);
  EXPECT_EQ(pub->published(), 7u);
  // The topic goes on: the next message is the eighth.
  ASSERT_TRUE(publishTick(*pub, 32));
  for (uint64_t want = 1; want <= 8; ++want) {
    ASSERT_TRUE(sub->next(std::chrono::seconds(20))) << "message " << want;
    EXPECT_EQ(sub->sequence(), want);
    EXPECT_EQ(sub->message().getSeq(), want);
    EXPECT_TRUE(tickIntact(sub->message()));
    EXPECT_EQ(sub->missed(), 0u);
  }
  EXPECT_EQ(sub->next(std::chrono::milliseconds(50)).code(), StatusCode::kDeadlineExceeded);
  // A batch of none publishes nothing; a batch on a closed publisher is refused.
  EXPECT_TRUE(pub->publishBatch(0, [](size_t, Tick::Builder) {}));
  EXPECT_EQ(pub->published(), 8u);
  ASSERT_TRUE(pub->close());
  EXPECT_EQ(pub->publishBatch(1, [](size_t, Tick::Builder) {}).code(),
            StatusCode::kFailedPrecondition);
}

TEST_P(PubSub, DropOldest_TheIdleSubscriberIsToldExactlyHowManyItMissed) {
  auto client = connect();
  TopicOptions o;
  o.slots = 16;
  o.publishTimeout = std::chrono::seconds(5);  // a publisher that waited would fail
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok()) << pub.status().toString();
  SubscribeOptions so;
  so.policy = SlowConsumer::kDropOldest;
  auto sub = client->subscribe<Tick>("hms.test.ticks", so);
  ASSERT_TRUE(sub.ok()) << sub.status().toString();
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 1; }));
  // Enough 1 KiB messages to overflow the log and the socket's buffer alike, published while the
  // subscriber reads nothing; then it reads until it has the newest.
  constexpr uint64_t kMessages = 5'000;
  for (uint64_t n = 1; n <= kMessages; ++n) ASSERT_TRUE(publishTick(*pub, 1024));
  uint64_t got = 0, missed = 0, last = 0;
  while (last < kMessages) {
    auto s = sub->next(std::chrono::seconds(30));
    ASSERT_TRUE(s) << "after message " << last << ": " << s.toString();
    auto t = sub->message();
    ASSERT_TRUE(tickIntact(t)) << "message " << t.getSeq() << " is torn";
    ASSERT_EQ(t.getSeq(), sub->sequence());
    ASSERT_EQ(sub->sequence(), last + 1 + sub->missed()) << "a gap that was not reported";
    last = sub->sequence();
    missed += sub->missed();
    ++got;
  }
  EXPECT_EQ(got + missed, kMessages);
  EXPECT_EQ(sub->dropped(), missed);
  EXPECT_GT(missed, 0u);
  if (sharedMemory()) {
    EXPECT_EQ(got, o.slots);  // exactly what the log still held
  }
  ASSERT_TRUE(pub->close());
  EXPECT_EQ(sub->next(std::chrono::seconds(30)).code(), StatusCode::kUnavailable);
}

TEST_P(PubSub, SubscriberKilledMidStream_DoesNotStallThePublisher) {
  auto client = connect();
  TopicOptions o;
  o.slots = 16;
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok()) << pub.status().toString();
  auto healthy = topicProcess({"subscribe", "hms.test.ticks"});
  auto stuck = topicProcess({"subscribe", "hms.test.ticks", "--stall-after", "100"});
  ASSERT_TRUE(healthy.waitForLine("subscribed"));
  ASSERT_TRUE(stuck.waitForLine("subscribed"));
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 2; }));
  std::atomic<uint64_t> done{0};
  std::thread publisher([&] {
    for (uint64_t n = 1; n <= 5'000; ++n) {
      auto s = publishTick(*pub);
      if (!s) {
        ADD_FAILURE() << "message " << n << ": " << s.toString();
        return;
      }
      done = n;
    }
  });
  ASSERT_TRUE(stuck.waitForLine("stalled"));
  // The stuck block_publisher subscriber holds the publisher back...
  ASSERT_TRUE(waitUntil([&] {
    const uint64_t before = done.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return done.load() == before && before < 5'000;
  }));
  // ...until it dies: the broker closes its cursor (shm) or its socket closes (relay).
  stuck.signal(SIGKILL);
  publisher.join();
  EXPECT_EQ(done.load(), 5'000u);
  EXPECT_TRUE(waitUntil([&] { return pub->subscribers() == 1; }));
  ASSERT_TRUE(pub->close());
  const int status = finish(healthy);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << healthy.output();
  EXPECT_EQ(summaryOf(healthy.output()).got, 5'000u) << healthy.output();
}

TEST_P(PubSub, PublisherKilled_SubscribersReadEverythingPublished_ThenUnavailable) {
  auto client = connect();
  auto publisher = topicProcess({"publish", "hms.test.ticks", "--count", "300", "--slots", "1024",
                                 "--wait-subscribers", "1"});
  ASSERT_TRUE(publisher.waitForLine("advertised")) << publisher.output() << publisher.errors();
  auto sub = client->subscribe<Tick>("hms.test.ticks");
  ASSERT_TRUE(sub.ok()) << sub.status().toString();
  // Read some while it publishes (over a socket, block_publisher keeps it within the socket's
  // buffer), then it dies with the rest published and unread.
  uint64_t got = 0;
  for (; got < 200; ++got) {
    ASSERT_TRUE(sub->next(std::chrono::seconds(30)));
    ASSERT_EQ(sub->message().getSeq(), got + 1);
  }
  ASSERT_TRUE(publisher.waitForLine("published 300")) << publisher.output();
  publisher.signal(SIGKILL);
  ASSERT_NE(publisher.wait(), -1);
  Status end;
  while ((end = sub->next(std::chrono::seconds(30)))) {
    ASSERT_EQ(sub->message().getSeq(), got + 1);
    ASSERT_TRUE(tickIntact(sub->message()));
    ++got;
  }
  EXPECT_EQ(got, 300u);
  EXPECT_EQ(end.code(), StatusCode::kUnavailable) << end.toString();
  if (sharedMemory()) {
    EXPECT_NE(end.message().find("died"), std::string::npos) << end.message();
  }
  // The topic left the registry with its publisher.
  EXPECT_TRUE(waitUntil([&] { return client->discoverTopics("hms.test.")->empty(); }));
}

TEST_P(PubSub, LateJoiner_AsksForHistory_AndGetsTheLastN) {
  auto client = connect();
  TopicOptions o;
  o.slots = 64;
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok());
  for (int n = 0; n < 100; ++n) ASSERT_TRUE(publishTick(*pub));
  SubscribeOptions so;
  so.history = 10;
  auto sub = client->subscribe<Tick>("hms.test.ticks", so);
  ASSERT_TRUE(sub.ok()) << sub.status().toString();
  for (uint64_t want = 91; want <= 100; ++want) {
    ASSERT_TRUE(sub->next(std::chrono::seconds(20)));
    EXPECT_EQ(sub->message().getSeq(), want);
  }
  EXPECT_EQ(sub->next(std::chrono::milliseconds(0)).code(), StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(publishTick(*pub));
  ASSERT_TRUE(sub->next(std::chrono::seconds(20)));
  EXPECT_EQ(sub->message().getSeq(), 101u);
  EXPECT_TRUE(tickIntact(sub->message()));

  // Without history a late joiner starts with the next message.
  auto fresh = client->subscribe<Tick>("hms.test.ticks");
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 2; }));
  ASSERT_TRUE(publishTick(*pub));
  ASSERT_TRUE(fresh->next(std::chrono::seconds(20)));
  EXPECT_EQ(fresh->message().getSeq(), 102u);

  so.history = 64;  // more than the log keeps
  auto tooMuch = client->subscribe<Tick>("hms.test.ticks", so);
  EXPECT_EQ(tooMuch.status().code(), StatusCode::kInvalidArgument) << tooMuch.status().toString();
}

TEST_P(PubSub, SubscriberCannotWriteWhatOthersRead) {
  auto client = connect();
  auto pub = client->advertise<Tick>("hms.test.ticks");
  ASSERT_TRUE(pub.ok());
  auto reader = client->subscribe<Tick>("hms.test.ticks");
  ASSERT_TRUE(reader.ok());
  auto vandal = topicProcess({"subscribe", "hms.test.ticks", "--scribble"});
  ASSERT_TRUE(vandal.waitForLine("subscribed"));
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 2; }));
  for (int n = 0; n < 10; ++n) ASSERT_TRUE(publishTick(*pub));
  if (sharedMemory()) {
    // The log is mapped read-only from a sealed memfd: no write mapping can be had, and the
    // write kills the writer.
    EXPECT_TRUE(vandal.waitForLine("mprotect")) << vandal.output();
    EXPECT_NE(vandal.output().find("mprotect refused"), std::string::npos) << vandal.output();
    const int status = vandal.wait(std::chrono::seconds(30));
    // SIGSEGV; under a sanitizer, its report of the SEGV and an abort.
    EXPECT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0));
    EXPECT_FALSE(vandal.waitForLine("scribbled", std::chrono::seconds(5))) << vandal.output();
    if (WIFSIGNALED(status) && WTERMSIG(status) != SIGSEGV) {
      EXPECT_NE(vandal.errors().find("SEGV"), std::string::npos) << vandal.errors();
    }
  } else {
    // Over a socket each subscriber has its own copy: the write changes nothing for others.
    EXPECT_TRUE(vandal.waitForLine("scribbled")) << vandal.output();
  }
  EXPECT_EQ(vandal.output().find("mprotect allowed"), std::string::npos);
  for (uint64_t want = 1; want <= 10; ++want) {
    ASSERT_TRUE(reader->next(std::chrono::seconds(20)));
    EXPECT_EQ(reader->message().getSeq(), want);
    EXPECT_TRUE(tickIntact(reader->message())) << "message " << want << " was altered";
  }
}

TEST_P(PubSub, CallbackDelivery_RunsOncePerMessageInOrder) {
  auto client = connect();
  auto pub = client->advertise<Tick>("hms.test.ticks");
  ASSERT_TRUE(pub.ok());
  std::mutex m;
  std::vector<uint64_t> seen;
  bool intact = true;
  auto handle = client->subscribe<Tick>("hms.test.ticks", {}, [&](const Delivery<Tick>& d) {
    std::lock_guard lock(m);
    seen.push_back(d.message.getSeq());
    intact = intact && tickIntact(d.message) && d.sequence == d.message.getSeq() && d.missed == 0;
  });
  ASSERT_TRUE(handle.ok()) << handle.status().toString();
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 1; }));
  for (int n = 0; n < 1000; ++n) ASSERT_TRUE(publishTick(*pub));
  ASSERT_TRUE(waitUntil([&] {
    std::lock_guard lock(m);
    return seen.size() == 1000;
  }));
  ASSERT_TRUE(pub->close());
  ASSERT_TRUE(handle->waitEnded(std::chrono::seconds(20)));
  EXPECT_EQ(handle->status().code(), StatusCode::kUnavailable);
  std::lock_guard lock(m);
  EXPECT_TRUE(intact);
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], i + 1);
}

TEST_P(PubSub, Misuse_IsExplained_AndTheTopicKeepsWorking) {
  auto client = connect();
  TopicOptions o;
  o.maxMessageBytes = 256;
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok());
  auto second = connect()->advertise<Tick>("hms.test.ticks");
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists) << second.status().toString();
  EXPECT_EQ(client->subscribe<Tick>("hms.test.none").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(client->subscribe<Other>("hms.test.ticks").status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(client->advertise<Tick>("bad..id").status().code(), StatusCode::kInvalidArgument);
  o.slots = 3;
  EXPECT_EQ(client->advertise<Tick>("hms.test.other", o).status().code(),
            StatusCode::kInvalidArgument);

  auto sub = client->subscribe<Tick>("hms.test.ticks");
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 1; }));
  auto big = publishTick(*pub, 1000);
  EXPECT_EQ(big.code(), StatusCode::kResourceExhausted) << big.toString();
  EXPECT_EQ(pub->published(), 0u);
  ASSERT_TRUE(publishTick(*pub, 100));
  ASSERT_TRUE(sub->next(std::chrono::seconds(20)));
  EXPECT_EQ(sub->message().getSeq(), 1u);
  EXPECT_TRUE(tickIntact(sub->message()));
  // A subscriber that leaves is gone from the publisher's count and the registry.
  ASSERT_TRUE(sub->close());
  EXPECT_TRUE(waitUntil([&] { return pub->subscribers() == 0; }));
  EXPECT_TRUE(waitUntil([&] { return client->discoverTopics()->at(0).subscribers == 0; }));
}

TEST_P(PubSub, SubscriberStartedBeforeThePublisher_WaitsForIt) {
  auto client = connect();
  SubscribeOptions so;
  so.waitForPublisher = std::chrono::milliseconds(200);
  const auto t0 = std::chrono::steady_clock::now();
  auto none = client->subscribe<Tick>("hms.test.ticks", so);
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound) << none.status().toString();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));

  so.waitForPublisher = std::chrono::seconds(20);
  auto early =
      std::async(std::launch::async, [&] { return client->subscribe<Tick>("hms.test.ticks", so); });
  auto publisherClient = connect();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let it ask once first
  auto pub = publisherClient->advertise<Tick>("hms.test.ticks");
  ASSERT_TRUE(pub.ok());
  auto sub = early.get();
  ASSERT_TRUE(sub.ok()) << sub.status().toString();
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 1; }));
  ASSERT_TRUE(publishTick(*pub));
  ASSERT_TRUE(sub->next(std::chrono::seconds(20)));
  EXPECT_EQ(sub->message().getSeq(), 1u);
}

TEST_P(PubSub, LargeMessages_SeveralDatagramsEachOverSockets_ArriveWhole) {
  auto client = connect();
  TopicOptions o;
  o.slots = 8;
  o.maxMessageBytes = 256 * 1024;
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok());
  auto reader = topicProcess({"subscribe", "hms.test.ticks"});
  ASSERT_TRUE(reader.waitForLine("subscribed"));
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 1; }));
  for (int n = 0; n < 300; ++n) ASSERT_TRUE(publishTick(*pub, size_t(150'000 + n * 101)));
  ASSERT_TRUE(pub->close());
  const int status = finish(reader);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << reader.output() << reader.errors();
  EXPECT_EQ(summaryOf(reader.output()).got, 300u) << reader.output();
}

TEST_P(PubSub, Tool_ListsLiveTopics) {
  auto client = connect();
  TopicOptions o;
  o.slots = 32;
  o.maxMessageBytes = 1000;
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok());
  auto sub = client->subscribe<Tick>("hms.test.ticks");
  ASSERT_TRUE(sub.ok());
  const std::string tool =
      std::filesystem::path(testing::brokerBinary()).parent_path().parent_path() / "tools" /
      "hms-ffi";
  Subprocess topics({tool, "--socket", broker.socket(), "topics", "hms.test"});
  ASSERT_TRUE(topics.waitForLine("hms.test.ticks")) << topics.errors();
  EXPECT_EQ(topics.wait(), 0);
  const std::string& out = topics.output();
  EXPECT_NE(out.find("Tick"), std::string::npos) << out;
  EXPECT_NE(out.find(std::to_string(::getpid())), std::string::npos) << out;
  EXPECT_NE(out.find("32 x 1008"), std::string::npos) << out;  // slots x largest message
}

TEST_P(PubSub, BrokerRestart_SubscriptionsKeepReading_AndTheTopicIsAdvertisedAgain) {
  auto client = connect();
  auto other = connect();
  auto pub = client->advertise<Tick>("hms.test.ticks");
  ASSERT_TRUE(pub.ok());
  auto sub = other->subscribe<Tick>("hms.test.ticks");
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 1; }));
  for (int n = 0; n < 10; ++n) ASSERT_TRUE(publishTick(*pub));
  for (uint64_t want = 1; want <= 10; ++want) {
    ASSERT_TRUE(sub->next(std::chrono::seconds(20)));
    ASSERT_EQ(sub->message().getSeq(), want);
  }
  broker.kill9();
  broker.start();
  // The publisher's client reconnects and advertises the topic again: a newcomer finds it.
  std::optional<Subscription<Tick>> late;
  ASSERT_TRUE(waitUntil([&] {
    auto s = other->subscribe<Tick>("hms.test.ticks");
    if (s.ok()) late.emplace(std::move(*s));
    return s.ok();
  }));
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 2; }));
  for (int n = 0; n < 10; ++n) ASSERT_TRUE(publishTick(*pub));
  for (uint64_t want = 11; want <= 20; ++want) {
    ASSERT_TRUE(sub->next(std::chrono::seconds(20)));  // attached under the old broker
    ASSERT_EQ(sub->message().getSeq(), want);
    ASSERT_TRUE(late->next(std::chrono::seconds(20)));
    ASSERT_EQ(late->message().getSeq(), want);
  }
}

TEST_P(PubSub, BrokerRestart_ThenASubscriberDies_ThePublisherIsNotHeldBack) {
  auto client = connect();
  TopicOptions o;
  o.slots = 16;
  auto pub = client->advertise<Tick>("hms.test.ticks", o);
  ASSERT_TRUE(pub.ok());
  auto stuck = topicProcess({"subscribe", "hms.test.ticks", "--stall-after", "5"});
  ASSERT_TRUE(stuck.waitForLine("subscribed"));
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 1; }));
  for (int n = 0; n < 5; ++n) ASSERT_TRUE(publishTick(*pub));
  ASSERT_TRUE(stuck.waitForLine("stalled"));
  broker.kill9();
  broker.start();
  // The new broker never knew this subscriber: its death must be found by the publisher.
  ASSERT_TRUE(waitUntil([&] {
    auto topics = client->discoverTopics("hms.test.");
    return topics.ok() && !topics->empty();
  }));
  stuck.signal(SIGKILL);
  ASSERT_NE(stuck.wait(), -1);
  for (int n = 0; n < 100; ++n) {
    auto s = publishTick(*pub);
    ASSERT_TRUE(s) << "message " << n << ": " << s.toString();
  }
  // A socket subscriber's death is found by the relay thread, and the publisher applies it the
  // next time it takes its lock: the count follows within a few more publishes.
  EXPECT_TRUE(waitUntil([&] {
    if (auto s = publishTick(*pub); !s) return false;
    return pub->subscribers() == 0u;
  })) << pub->subscribers()
      << " subscriber(s) left";
}

INSTANTIATE_TEST_SUITE_P(Transports, PubSub,
                         ::testing::Values(Transport::kSharedMemory, Transport::kSocket),
                         [](const auto& info) { return std::string(transportName(info.param)); });

// One shared-memory publisher, subscribers with and without shared memory at once.
TEST(PubSubMixed, SharedMemoryAndSocketSubscribersOfOneTopic_BothSeeEverything) {
  BrokerFixture broker;
  ClientOptions o;
  o.socketPath = broker.socket();
  auto client = Client::connect(o).valueOrThrow();
  ASSERT_TRUE(client->usesSharedMemory());
  TopicOptions to;
  to.slots = 32;
  auto pub = client->advertise<Tick>("hms.test.ticks", to);
  ASSERT_TRUE(pub.ok());
  auto viaShm =
      Subprocess({testing::testTopicBinary(), "subscribe", broker.socket(), "hms.test.ticks"});
  auto viaSocket =
      Subprocess({testing::testTopicBinary(), "subscribe", broker.socket(), "hms.test.ticks"},
                 {"HMS_FFI_INJECT_SHM_FAILURE=1"});
  ASSERT_TRUE(viaShm.waitForLine("subscribed"));
  ASSERT_TRUE(viaSocket.waitForLine("subscribed"));
  ASSERT_TRUE(waitUntil([&] { return pub->subscribers() == 2; }));
  for (int n = 0; n < 3000; ++n) ASSERT_TRUE(publishTick(*pub, size_t(n % 2000)));
  ASSERT_TRUE(pub->close());
  for (auto* s : {&viaShm, &viaSocket}) {
    const int status = finish(*s);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << s->output() << s->errors();
    EXPECT_EQ(summaryOf(s->output()).got, 3000u) << s->output();
  }
}

}  // namespace
}  // namespace hms::ffi
