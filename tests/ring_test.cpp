// The SPSC record ring: ordering, wrap-around, back-pressure, the zeroed-free-space invariant, and
// refusal of corrupt shared state; stress across two threads and two processes.
#include "ring.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "os.hpp"

namespace hms::ffi::detail {
namespace {

// A ring in anonymous shared memory (so that a forked child shares it).
struct SharedRing {
  explicit SharedRing(uint32_t capacity) : capacity(capacity) {
    bytes = sizeof(RingControl) + 2 * sizeof(WakeWord) + capacity;
    mem = static_cast<uint8_t*>(
        ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    control = reinterpret_cast<RingControl*>(mem);
    consumerWake = reinterpret_cast<WakeWord*>(mem + sizeof(RingControl));
    data = mem + sizeof(RingControl) + 2 * sizeof(WakeWord);
  }
  ~SharedRing() { ::munmap(mem, bytes); }
  RingProducer producer() { return RingProducer(control, data, capacity, consumerWake); }
  RingConsumer consumer() { return RingConsumer(control, data, capacity); }

  uint32_t capacity;
  size_t bytes;
  uint8_t* mem;
  RingControl* control;
  WakeWord* consumerWake;
  uint8_t* data;
};

// Writes a request record carrying `seq` in callId and `len` payload bytes derived from seq.
bool produce(RingProducer& p, uint64_t seq, uint32_t payloadWords) {
  RingProducer::Slot slot;
  const uint32_t bytes = sizeof(RecordHeader) + payloadWords * 8;
  if (p.tryReserve(bytes, bytes, slot) != RingStatus::kOk) return false;
  auto* h = reinterpret_cast<RecordHeader*>(slot.record);
  h->kind = kRecordRequest;
  h->callId = seq;
  h->words = payloadWords;
  auto* w = reinterpret_cast<uint64_t*>(slot.record + sizeof(RecordHeader));
  for (uint32_t i = 0; i < payloadWords; ++i) w[i] = seq * 1000 + i;
  p.commit(slot, bytes);
  return true;
}

// What a producer reports of its ring's fill (metrics): a sample each time it re-reads the
// consumer's position, and one "became full" per episode of finding no room.
struct WatchLog final : RingWatch {
  void sampled(uint64_t usedBytes, uint32_t capacity, bool becameFull) noexcept override {
    maxUsed = std::max(maxUsed, usedBytes);
    this->capacity = capacity;
    if (becameFull) ++episodes;
    ++samples;
  }
  uint64_t maxUsed = 0;
  uint32_t capacity = 0;
  int episodes = 0;
  int samples = 0;
};

// Fills the ring until a reservation fails; the records produced.
uint64_t fill(RingProducer& p, uint64_t firstSeq) {
  uint64_t seq = firstSeq;
  while (produce(p, seq, 6)) ++seq;
  return seq - firstSeq;
}

TEST(RingWatch, CountsEachEpisodeOfAFullRing_AndTheHighWaterMark) {
  SharedRing ring(4096);
  auto p = ring.producer();
  auto c = ring.consumer();
  WatchLog log;
  p.setWatch(&log);
  ASSERT_GT(fill(p, 0), 10u);
  EXPECT_EQ(log.episodes, 1);
  EXPECT_EQ(log.capacity, 4096u);
  EXPECT_GT(log.maxUsed, 4096u - 128);  // full but for less than a record
  // Refused again while nothing was read: the same episode.
  EXPECT_FALSE(produce(p, 999, 6));
  EXPECT_EQ(log.episodes, 1);
  // The consumer reads everything; the producer, waiting for room, sees it (hasSpaceFor) and
  // fills the ring again: a second episode.
  RingConsumer::Record r;
  while (c.next(r) == RingStatus::kOk) c.release(r);
  ASSERT_TRUE(p.hasSpaceFor(sizeof(RecordHeader) + 48));
  ASSERT_GT(fill(p, 1000), 10u);
  EXPECT_EQ(log.episodes, 2);
  // And once more by tryReserve alone (no waiting in between).
  while (c.next(r) == RingStatus::kOk) c.release(r);
  ASSERT_GT(fill(p, 2000), 10u);
  EXPECT_EQ(log.episodes, 3);
}

TEST(RingWatch, ARingThatKeepsUp_IsSampledOnceALap_AndNeverFull) {
  SharedRing ring(4096);
  auto p = ring.producer();
  auto c = ring.consumer();
  WatchLog log;
  p.setWatch(&log);
  RingConsumer::Record r;
  const uint32_t record = roundUpRecord(sizeof(RecordHeader) + 48);
  const int laps = int(1000 * uint64_t(record) / 4096);
  for (uint64_t seq = 0; seq < 1000; ++seq) {
    ASSERT_TRUE(produce(p, seq, 6));
    ASSERT_EQ(c.next(r), RingStatus::kOk);
    c.release(r);
  }
  EXPECT_EQ(log.episodes, 0);
  EXPECT_GE(log.samples, laps - 1);  // once a lap
  EXPECT_LE(log.samples, laps + 1);
  EXPECT_LE(log.maxUsed, record);  // never more than the record in hand
}

// Produces records 0..count-1 of varied sizes, sleeping (adaptive) whenever the ring is full.
void produceSequence(SharedRing& ring, uint64_t count) {
  auto p = ring.producer();
  WaitPolicy policy{WaitKind::kAdaptive, 20'000};
  for (uint64_t seq = 0; seq < count; ++seq) {
    const uint32_t words = uint32_t(seq % 13);
    while (!produce(p, seq, words)) {
      waitFor(ring.control->producerWake, policy, kNoDeadline,
              [&] { return p.hasSpaceFor(sizeof(RecordHeader) + words * 8); });
    }
  }
}

bool checkRecord(const RingConsumer::Record& r, uint64_t seq) {
  if (r.header.callId != seq || r.header.kind != kRecordRequest) return false;
  for (uint32_t i = 0; i < r.header.words; ++i) {
    if (r.words[i] != seq * 1000 + i) return false;
  }
  return true;
}

TEST(Ring, DeliversRecordsInOrder_AcrossManyWraps) {
  SharedRing ring(4096);
  auto p = ring.producer();
  auto c = ring.consumer();
  uint64_t next = 0;
  for (uint64_t seq = 0; seq < 5000; ++seq) {
    const uint32_t words = uint32_t(seq % 37);
    while (!produce(p, seq, words)) {
      RingConsumer::Record r;
      ASSERT_EQ(c.next(r), RingStatus::kOk);
      ASSERT_TRUE(checkRecord(r, next++));
      c.release(r);
    }
  }
  RingConsumer::Record r;
  while (c.next(r) == RingStatus::kOk) {
    ASSERT_TRUE(checkRecord(r, next++));
    c.release(r);
  }
  EXPECT_EQ(next, 5000u);
  // Everything consumed: the whole ring is zero again, ready to be handed out as Cap'n Proto
  // segments.
  for (uint32_t i = 0; i < ring.capacity; ++i) ASSERT_EQ(ring.data[i], 0) << "byte " << i;
}

TEST(Ring, ReportsFull_UntilTheConsumerReleases) {
  SharedRing ring(4096);
  auto p = ring.producer();
  auto c = ring.consumer();
  int n = 0;
  while (produce(p, uint64_t(n), 27)) ++n;  // 32 + 216 bytes -> 256-byte records
  EXPECT_EQ(n, 16);
  EXPECT_FALSE(p.hasSpaceFor(256));
  RingConsumer::Record r;
  ASSERT_EQ(c.next(r), RingStatus::kOk);
  c.release(r);
  EXPECT_TRUE(p.hasSpaceFor(256));
  EXPECT_TRUE(produce(p, 99, 27));
}

// Many calls in flight: records are read past one still held, released in any order, and their
// space comes back in ring order only (a held record holds up the space behind it).
TEST(Ring, ReleaseInAnyOrder_ReturnsSpaceInRingOrder) {
  SharedRing ring(4096);
  auto p = ring.producer();
  auto c = ring.consumer();
  int n = 0;
  while (produce(p, uint64_t(n), 27)) ++n;  // 16 records of 256 bytes fill the ring
  ASSERT_EQ(n, 16);
  std::vector<RingConsumer::Record> recs(16);
  for (int i = 0; i < 16; ++i) {
    ASSERT_EQ(c.next(recs[i]), RingStatus::kOk);
    ASSERT_TRUE(checkRecord(recs[i], uint64_t(i)));
  }
  RingConsumer::Record none;
  EXPECT_EQ(c.next(none), RingStatus::kEmpty);
  EXPECT_EQ(c.outstanding(), 16u);
  // Releasing 1..15 frees nothing while record 0 is held; they stay readable in place.
  for (int i = 15; i >= 1; --i) c.release(recs[i]);
  EXPECT_FALSE(p.hasSpaceFor(256));
  EXPECT_TRUE(checkRecord(recs[0], 0));
  c.release(recs[0]);
  EXPECT_EQ(c.outstanding(), 0u);
  EXPECT_TRUE(p.hasSpaceFor(2048));
  for (uint32_t i = 0; i < ring.capacity; ++i) ASSERT_EQ(ring.data[i], 0) << "byte " << i;
  // Released twice, or a pointer that is no record of ours: ignored.
  c.release(recs[3]);
  EXPECT_EQ(c.outstanding(), 0u);
}

TEST(Ring, OutOfOrderRelease_AcrossWraps_KeepsEveryRecordIntact) {
  SharedRing ring(4096);
  auto p = ring.producer();
  auto c = ring.consumer();
  std::vector<RingConsumer::Record> held;
  uint64_t produced = 0, consumed = 0;
  while (consumed < 3000) {
    while (produced < 3000 && produce(p, produced, uint32_t(produced % 11))) ++produced;
    RingConsumer::Record r;
    while (c.next(r) == RingStatus::kOk) {
      ASSERT_TRUE(checkRecord(r, consumed++));
      held.push_back(r);
    }
    // Release every other held record, newest first, then the rest: a different order each time.
    for (size_t i = held.size(); i-- > 0;) {
      if (i % 2 == 1) c.release(held[i]);
    }
    for (const auto& h : held) ASSERT_TRUE(checkRecord(h, h.header.callId));
    for (size_t i = 0; i < held.size(); i += 2) c.release(held[i]);
    held.clear();
  }
  EXPECT_EQ(c.outstanding(), 0u);
  for (uint32_t i = 0; i < ring.capacity; ++i) ASSERT_EQ(ring.data[i], 0) << "byte " << i;
}

TEST(Ring, ReserveGivesAllContiguousFreeSpace_UpToTheMaximum) {
  SharedRing ring(1 << 16);
  auto p = ring.producer();
  RingProducer::Slot slot;
  ASSERT_EQ(p.tryReserve(64, 1 << 20, slot), RingStatus::kOk);
  EXPECT_EQ(slot.bytes, 1u << 16);
  ASSERT_EQ(p.tryReserve(64, 1000, slot), RingStatus::kOk);
  EXPECT_EQ(slot.bytes, 992u);  // rounded down to whole records
}

TEST(Ring, AbortZeroesWhatTheBuilderTouched) {
  SharedRing ring(4096);
  auto p = ring.producer();
  RingProducer::Slot slot;
  ASSERT_EQ(p.tryReserve(64, 4096, slot), RingStatus::kOk);
  std::memset(slot.record, 0xAB, 200);
  p.abort(slot, 200);
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(ring.data[i], 0);
  auto c = ring.consumer();
  RingConsumer::Record r;
  EXPECT_EQ(c.next(r), RingStatus::kEmpty);
}

TEST(Ring, Consumer_ReportsCorrupt_OnLengthNotAMultipleOfTheRecordSize) {
  SharedRing ring(4096);
  reinterpret_cast<RecordHeader*>(ring.data)->kind = kRecordRequest;
  reinterpret_cast<RecordHeader*>(ring.data)->length = 40;
  auto c = ring.consumer();
  RingConsumer::Record r;
  EXPECT_EQ(c.next(r), RingStatus::kCorrupt);
}

TEST(Ring, Consumer_ReportsCorrupt_OnRecordRunningPastTheEnd) {
  SharedRing ring(4096);
  auto* h = reinterpret_cast<RecordHeader*>(ring.data);
  h->kind = kRecordRequest;
  h->length = 8192;
  auto c = ring.consumer();
  RingConsumer::Record r;
  EXPECT_EQ(c.next(r), RingStatus::kCorrupt);
}

TEST(Ring, Consumer_ReportsCorrupt_OnPayloadLargerThanTheRecord) {
  SharedRing ring(4096);
  auto* h = reinterpret_cast<RecordHeader*>(ring.data);
  h->kind = kRecordRequest;
  h->words = 100;  // 800 bytes claimed in a 64-byte record
  h->length = 64;
  auto c = ring.consumer();
  RingConsumer::Record r;
  EXPECT_EQ(c.next(r), RingStatus::kCorrupt);
}

TEST(Ring, Consumer_ReportsCorrupt_OnUnknownKindAndOnPaddingNotAtTheEnd) {
  {
    SharedRing ring(4096);
    auto* h = reinterpret_cast<RecordHeader*>(ring.data);
    h->kind = 77;
    h->length = 64;
    auto c = ring.consumer();
    RingConsumer::Record r;
    EXPECT_EQ(c.next(r), RingStatus::kCorrupt);
  }
  {
    SharedRing ring(4096);
    auto* h = reinterpret_cast<RecordHeader*>(ring.data);
    h->kind = kRecordPadding;
    h->length = 64;
    auto c = ring.consumer();
    RingConsumer::Record r;
    EXPECT_EQ(c.next(r), RingStatus::kCorrupt);
  }
}

TEST(Ring, Producer_ReportsCorrupt_OnImpossibleHead) {
  SharedRing ring(4096);
  auto p = ring.producer();
  while (produce(p, 1, 27)) {
  }
  ring.control->head = 12345;  // not a record boundary, and ahead of the tail
  RingProducer::Slot slot;
  EXPECT_EQ(p.tryReserve(256, 256, slot), RingStatus::kCorrupt);
}

TEST(Ring, TwoThreads_MillionRecords_SequenceChecked) {
  SharedRing ring(1 << 16);
  constexpr uint64_t kCount = 1'000'000;
  WaitPolicy policy{WaitKind::kAdaptive, 20'000};
  std::thread producer([&] { produceSequence(ring, kCount); });
  auto c = ring.consumer();
  uint64_t bad = 0;
  for (uint64_t seq = 0; seq < kCount; ++seq) {
    RingConsumer::Record r;
    RingStatus st;
    // hasData() may see a padding record whose successor is not committed yet: wait again.
    while ((st = c.next(r)) == RingStatus::kEmpty) {
      waitFor(*ring.consumerWake, policy, kNoDeadline, [&] { return c.hasData(); });
    }
    ASSERT_EQ(st, RingStatus::kOk);
    if (!checkRecord(r, seq)) ++bad;
    c.release(r);
  }
  producer.join();
  EXPECT_EQ(bad, 0u);
}

TEST(Ring, TwoProcesses_MillionRecords_SequenceChecked) {
  SharedRing ring(1 << 16);
  constexpr uint64_t kCount = 1'000'000;
  WaitPolicy policy{WaitKind::kAdaptive, 20'000};
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    produceSequence(ring, kCount);
    ::_exit(0);
  }
  auto c = ring.consumer();
  uint64_t bad = 0;
  for (uint64_t seq = 0; seq < kCount; ++seq) {
    RingConsumer::Record r;
    RingStatus st;
    while ((st = c.next(r)) == RingStatus::kEmpty) {
      const bool got = waitFor(*ring.consumerWake, policy, monotonicNs() + 60'000'000'000,
                               [&] { return c.hasData(); });
      ASSERT_TRUE(got) << "producer stalled at " << seq;
    }
    ASSERT_EQ(st, RingStatus::kOk);
    if (!checkRecord(r, seq)) ++bad;
    c.release(r);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(bad, 0u);
}

TEST(Wait, SleeperIsWokenByTheProducer_AndTimesOutOtherwise) {
  SharedRing ring(4096);
  WaitPolicy blocking{WaitKind::kBlocking, 0};
  auto c = ring.consumer();
  const int64_t t0 = monotonicNs();
  EXPECT_FALSE(waitFor(*ring.consumerWake, blocking, t0 + 20'000'000, [&] { return c.hasData(); }));
  EXPECT_GE(monotonicNs() - t0, 20'000'000);

  std::thread producer([&] {
    // Publish only once the consumer has announced that it sleeps.
    while (loadAcquire(ring.consumerWake->sleeping) == 0) std::this_thread::yield();
    auto p = ring.producer();
    produce(p, 7, 1);
  });
  EXPECT_TRUE(waitFor(*ring.consumerWake, blocking, monotonicNs() + 20'000'000'000,
                      [&] { return c.hasData(); }));
  producer.join();
  EXPECT_EQ(ring.consumerWake->wakes, 1u);  // exactly one FUTEX_WAKE, for the announced sleeper
}

TEST(Wait, ProducerMakesNoWakeSyscall_WhileTheConsumerIsAwake) {
  SharedRing ring(1 << 16);
  auto p = ring.producer();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(produce(p, uint64_t(i), 1));
  EXPECT_EQ(ring.consumerWake->wakes, 0u);
}

}  // namespace
}  // namespace hms::ffi::detail
