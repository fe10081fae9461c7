// The publish/subscribe log: ordering, block_publisher back-pressure, drop_oldest gap counting,
// history, closed cursors, and the read-only mapping that keeps a subscriber from writing.
#include "topic_log.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "clock.hpp"
#include "os.hpp"

namespace hms::ffi::detail {
namespace {

// A log in a memfd, mapped read-write for the publisher and read-only for the subscribers, and
// cursor pages, as the broker will hand them out.
struct Topic {
  explicit Topic(TopicGeometry g) : geometry(g) {
    fd = std::move(createSegment("topic-test", g.segmentBytes()).valueOrThrow());
    writable = std::move(Mapping::map(fd.get(), g.segmentBytes(), true).valueOrThrow());
    readOnly = std::move(Mapping::map(fd.get(), g.segmentBytes(), false).valueOrThrow());
    initTopicLog(writable.data(), g);
  }
  SubscriberCursor* cursor(SlowConsumerPolicy policy, uint64_t next = 1) {
    cursors.push_back(std::make_unique<SubscriberCursor>());
    initCursor(cursors.back().get(), policy, next);
    return cursors.back().get();
  }
  TopicGeometry geometry;
  UniqueFd fd;
  Mapping writable, readOnly;
  std::vector<std::unique_ptr<SubscriberCursor>> cursors;
};

// Message `seq`: its sequence, then `n` words each derived from it, so a torn or misplaced
// message shows.
uint32_t lengthOf(uint64_t seq, uint32_t maxWords) {
  return 1 + uint32_t(seq * 7 % (maxWords - 1));
}
void fill(const TopicPublisher::Loan& loan, uint32_t words) {
  loan.words[0] = loan.seq;
  for (uint32_t i = 1; i < words; ++i) loan.words[i] = loan.seq * 1'000'003 + i;
}
bool intact(const TopicSubscriber::Message& m, uint32_t maxWords) {
  if (m.wordCount != lengthOf(m.seq, maxWords) || m.words[0] != m.seq) return false;
  for (uint32_t i = 1; i < m.wordCount; ++i) {
    if (m.words[i] != m.seq * 1'000'003 + i) return false;
  }
  return true;
}

constexpr WaitPolicy kAdaptive{WaitKind::kAdaptive, 50'000};
// Nine threads on two cores: nobody spins.
constexpr WaitPolicy kBlocking{WaitKind::kBlocking, 0};

Status publishOne(TopicPublisher& pub, int64_t deadlineNs = kNoDeadline,
                  const WaitPolicy& policy = kAdaptive) {
  TopicPublisher::Loan loan;
  if (auto s = pub.loan(policy, deadlineNs, loan); !s) return s;
  const uint32_t words = lengthOf(loan.seq, pub.geometry().maxWords());
  fill(loan, words);
  pub.publish(loan, words);
  return Status();
}

TEST(TopicLog, GeometryAndHeaderAreChecked) {
  EXPECT_EQ(TopicGeometry({3, 128}).validate().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(TopicGeometry({4, 100}).validate().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(TopicGeometry({4, 128}).validate());
  Topic t({8, 256});
  auto g = checkTopicLog(t.readOnly.data(), t.readOnly.size());
  ASSERT_TRUE(g.ok()) << g.status().toString();
  EXPECT_EQ(g->slotCount, 8u);
  EXPECT_EQ(checkTopicLog(t.readOnly.data(), 100).status().code(), StatusCode::kDataLoss);
  t.writable.as<TopicHeader>()->layoutVersion = 99;
  EXPECT_EQ(checkTopicLog(t.readOnly.data(), t.readOnly.size()).status().code(),
            StatusCode::kFailedPrecondition);
  t.writable.as<TopicHeader>()->magic = 0;
  EXPECT_EQ(checkTopicLog(t.readOnly.data(), t.readOnly.size()).status().code(),
            StatusCode::kDataLoss);
}

TEST(TopicLog, BlockPublisherWaitsForTheSlowestSubscriberAndLosesNothing) {
  Topic t({8, 256});
  TopicPublisher pub(t.writable.data(), t.geometry);
  auto* c = t.cursor(SlowConsumerPolicy::kBlockPublisher);
  pub.addSubscriber(c);
  TopicSubscriber sub(t.readOnly.data(), t.geometry, c);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(publishOne(pub));
  // The ninth would overwrite message 1, which the subscriber has not read.
  const Status full = publishOne(pub, monotonicNs() + 2'000'000);
  EXPECT_EQ(full.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(full.message().find("8 messages behind"), std::string::npos) << full.message();
  TopicSubscriber::Message m;
  uint64_t missed = 1;
  ASSERT_EQ(sub.next(m, missed), RingStatus::kOk);
  EXPECT_EQ(m.seq, 1u);
  EXPECT_EQ(missed, 0u);
  EXPECT_TRUE(intact(m, t.geometry.maxWords()));
  sub.release();
  // Releases reach the shared cursor in batches (here every 2): one is not enough yet.
  EXPECT_EQ(publishOne(pub, monotonicNs() + 2'000'000).code(), StatusCode::kDeadlineExceeded);
  sub.flush();
  EXPECT_TRUE(publishOne(pub, monotonicNs() + 2'000'000));  // slot 1 is free now
  for (uint64_t want = 2; want <= 9; ++want) {
    ASSERT_EQ(sub.next(m, missed), RingStatus::kOk);
    EXPECT_EQ(m.seq, want);
    EXPECT_TRUE(intact(m, t.geometry.maxWords()));
  }
  sub.release();
  EXPECT_EQ(sub.next(m, missed), RingStatus::kEmpty);
  EXPECT_EQ(sub.dropped(), 0u);
}

TEST(TopicLog, EightBlockingSubscribersOnThreadsEachSeeEveryMessageOnceInOrder) {
  Topic t({16, 512});
  TopicPublisher pub(t.writable.data(), t.geometry);
  constexpr uint64_t kMessages = 20'000;
  constexpr int kSubscribers = 8;
  std::vector<SubscriberCursor*> cursors;
  for (int i = 0; i < kSubscribers; ++i) {
    cursors.push_back(t.cursor(SlowConsumerPolicy::kBlockPublisher));
    pub.addSubscriber(cursors.back());
  }
  std::vector<uint64_t> seen(kSubscribers, 0), bad(kSubscribers, 0);
  std::vector<std::thread> readers;
  for (int r = 0; r < kSubscribers; ++r) {
    readers.emplace_back([&, r] {
      TopicSubscriber sub(t.readOnly.data(), t.geometry, cursors[size_t(r)]);
      uint64_t expect = 1;
      while (expect <= kMessages) {
        TopicSubscriber::Message m;
        uint64_t missed = 0;
        const RingStatus st = sub.next(m, missed);
        if (st == RingStatus::kEmpty) {
          waitFor(sub.wake(), kBlocking, kNoDeadline, [&] { return sub.hasNext(); });
          continue;
        }
        if (st != RingStatus::kOk || m.seq != expect || missed != 0 ||
            !intact(m, t.geometry.maxWords())) {
          ++bad[size_t(r)];
        }
        ++expect;
        ++seen[size_t(r)];
        sub.release();
      }
    });
  }
  for (uint64_t i = 0; i < kMessages; ++i) ASSERT_TRUE(publishOne(pub, kNoDeadline, kBlocking));
  for (auto& th : readers) th.join();
  for (int r = 0; r < kSubscribers; ++r) {
    EXPECT_EQ(seen[size_t(r)], kMessages) << "subscriber " << r;
    EXPECT_EQ(bad[size_t(r)], 0u) << "subscriber " << r;
  }
}

TEST(TopicLog, DropOldestNeverHoldsThePublisherAndCountsTheGapExactly) {
  Topic t({16, 256});
  TopicPublisher pub(t.writable.data(), t.geometry);
  auto* c = t.cursor(SlowConsumerPolicy::kDropOldest);
  pub.addSubscriber(c);
  TopicSubscriber sub(t.readOnly.data(), t.geometry, c);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(publishOne(pub, monotonicNs()));  // never waits
  TopicSubscriber::Message m;
  uint64_t missed = 0;
  ASSERT_EQ(sub.next(m, missed), RingStatus::kOk);
  EXPECT_EQ(m.seq, 85u);  // the oldest still in the 16 slots
  EXPECT_EQ(missed, 84u);
  EXPECT_TRUE(intact(m, t.geometry.maxWords()));
  for (uint64_t want = 86; want <= 100; ++want) {
    ASSERT_EQ(sub.next(m, missed), RingStatus::kOk);
    EXPECT_EQ(m.seq, want);
    EXPECT_EQ(missed, 0u);
    EXPECT_TRUE(intact(m, t.geometry.maxWords()));
  }
  EXPECT_EQ(sub.next(m, missed), RingStatus::kEmpty);
  EXPECT_EQ(sub.dropped(), 84u);
  EXPECT_EQ(c->dropped, 84u);  // visible to the publisher and the broker
}

TEST(TopicLog, UnattachedCursorStartsWhereThePublisherPutsIt_HistoryBounded) {
  Topic t({16, 256});
  TopicPublisher pub(t.writable.data(), t.geometry);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(publishOne(pub));
  // As the broker hands cursors out: next = 0 (not attached), the history asked for.
  auto* recent = t.cursor(SlowConsumerPolicy::kBlockPublisher, 0);
  recent->history = 5;
  auto* greedy = t.cursor(SlowConsumerPolicy::kDropOldest, 0);
  greedy->history = 1000;
  TopicSubscriber early(t.readOnly.data(), t.geometry, recent);
  TopicSubscriber::Message m;
  uint64_t missed = 0;
  EXPECT_FALSE(early.hasNext());  // nothing until the publisher attached it
  EXPECT_EQ(early.next(m, missed), RingStatus::kEmpty);
  pub.addSubscriber(recent);
  pub.addSubscriber(greedy);
  EXPECT_EQ(recent->next, 36u);  // the last 5
  EXPECT_EQ(greedy->next, 26u);  // at most slotCount - 1 back: a loan may be rewriting one
  ASSERT_EQ(early.next(m, missed), RingStatus::kOk);
  EXPECT_EQ(m.seq, 36u);
  EXPECT_EQ(missed, 0u);
  // A cursor attached before anything was published starts with the first message.
  Topic fresh({16, 256});
  TopicPublisher pub2(fresh.writable.data(), fresh.geometry);
  auto* c = fresh.cursor(SlowConsumerPolicy::kBlockPublisher, 0);
  c->history = 10;
  pub2.addSubscriber(c);
  EXPECT_EQ(c->next, 1u);
}

TEST(TopicLog, DropOldestUnderARacingPublisherAcceptsNoTornMessage) {
  Topic t({8, 1024});
  TopicPublisher pub(t.writable.data(), t.geometry);
  auto* c = t.cursor(SlowConsumerPolicy::kDropOldest);
  pub.addSubscriber(c);
  constexpr uint64_t kMessages = 200'000;
  std::atomic<bool> finished{false};
  uint64_t received = 0, missedTotal = 0, bad = 0, last = 0;
  std::thread reader([&] {
    TopicSubscriber sub(t.readOnly.data(), t.geometry, c);
    for (;;) {
      TopicSubscriber::Message m;
      uint64_t missed = 0;
      const RingStatus st = sub.next(m, missed);
      missedTotal += missed;
      if (st == RingStatus::kEmpty) {
        if (finished.load(std::memory_order_acquire) && !sub.hasNext()) break;
        continue;
      }
      if (st != RingStatus::kOk || m.seq <= last || !intact(m, t.geometry.maxWords())) ++bad;
      last = m.seq;
      ++received;
      sub.release();
    }
  });
  for (uint64_t i = 0; i < kMessages; ++i) ASSERT_TRUE(publishOne(pub, monotonicNs()));
  finished.store(true, std::memory_order_release);
  reader.join();
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(received + missedTotal, kMessages);  // every message read or counted as missed
  EXPECT_EQ(last, kMessages);
}

TEST(TopicLog, ClosedCursorHoldsNobodyBack) {
  Topic t({4, 128});
  TopicPublisher pub(t.writable.data(), t.geometry);
  auto* c = t.cursor(SlowConsumerPolicy::kBlockPublisher);
  pub.addSubscriber(c);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(publishOne(pub));
  EXPECT_EQ(publishOne(pub, monotonicNs() + 1'000'000).code(), StatusCode::kDeadlineExceeded);
  // The subscriber died: the broker closes its cursor and wakes a waiting publisher.
  std::thread closer([&] {
    storeRelease(c->state, uint32_t(kEndClosed));
    wakeAlways(c->publisherWake);
  });
  EXPECT_TRUE(publishOne(pub, monotonicNs() + 10'000'000'000));
  closer.join();
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(publishOne(pub, monotonicNs()));
}

TEST(TopicLog, LateJoinerGetsTheHistoryItAskedFor) {
  Topic t({16, 256});
  TopicPublisher pub(t.writable.data(), t.geometry);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(publishOne(pub));
  // Five messages of history: start at the fifth from the end.
  auto* c = t.cursor(SlowConsumerPolicy::kBlockPublisher, pub.published() - 5 + 1);
  pub.addSubscriber(c);
  TopicSubscriber sub(t.readOnly.data(), t.geometry, c);
  TopicSubscriber::Message m;
  uint64_t missed = 0;
  for (uint64_t want = 36; want <= 40; ++want) {
    ASSERT_EQ(sub.next(m, missed), RingStatus::kOk);
    EXPECT_EQ(m.seq, want);
    EXPECT_TRUE(intact(m, t.geometry.maxWords()));
  }
  sub.release();
  EXPECT_EQ(sub.next(m, missed), RingStatus::kEmpty);
  ASSERT_TRUE(publishOne(pub));
  ASSERT_EQ(sub.next(m, missed), RingStatus::kOk);
  EXPECT_EQ(m.seq, 41u);
}

// Found by fuzz/topic_log_fuzz.cpp: a publisher that writes a message count near 2^64 into its
// log made a drop_oldest subscriber's next() loop forever (its position wrapped to 0 past the
// count). A count no publisher can reach is a corrupt log, for either policy.
TEST(TopicLog, AnImpossibleMessageCountIsACorruptLog_NotAnEndlessLoop) {
  for (const auto policy : {SlowConsumerPolicy::kDropOldest, SlowConsumerPolicy::kBlockPublisher}) {
    Topic t({4, 128});
    TopicPublisher pub(t.writable.data(), t.geometry);
    SubscriberCursor* c = t.cursor(policy);
    pub.addSubscriber(c);
    ASSERT_TRUE(publishOne(pub));
    TopicSubscriber sub(t.readOnly.data(), t.geometry, c);
    TopicSubscriber::Message m;
    uint64_t missed = 0;
    ASSERT_EQ(sub.next(m, missed), RingStatus::kOk);
    sub.release();
    reinterpret_cast<TopicHeader*>(t.writable.data())->published = ~uint64_t(0);
    EXPECT_EQ(sub.next(m, missed), RingStatus::kCorrupt);
  }
}

TEST(TopicLogDeathTest, ASubscriberCannotWriteTheLog) {
  Topic t({4, 128});
  EXPECT_DEATH(
      { *reinterpret_cast<volatile uint64_t*>(t.readOnly.data() + kTopicHeaderBytes) = 42; }, "");
}

}  // namespace
}  // namespace hms::ffi::detail
