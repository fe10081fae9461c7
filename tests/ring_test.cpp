// The SPSC record ring: ordering, wrap-around, back-pressure, zeroed space in every reservation
// while the consumer maps the data read-only, and refusal of corrupt shared state; stress across
// two threads and two processes.
#include "ring.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "os.hpp"

namespace hms::ffi::detail {
namespace {

// A ring whose data is a memfd mapped twice, as between two processes: writable for the producer,
// read-only for the consumer (a consumer that wrote into it would die of SIGSEGV). Its control
// words are anonymous shared memory; a forked child shares both.
struct SharedRing {
  explicit SharedRing(uint32_t capacity) : capacity(capacity) {
    controlBytes = sizeof(RingControl) + 2 * sizeof(WakeWord);
    mem = static_cast<uint8_t*>(
        ::mmap(nullptr, controlBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    control = reinterpret_cast<RingControl*>(mem);
    consumerWake = reinterpret_cast<WakeWord*>(mem + sizeof(RingControl));
    auto fd = createSegment("ring-test", capacity);
    if (!fd.ok()) std::abort();
    data = static_cast<uint8_t*>(
        ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0));
    readOnly =
        static_cast<const uint8_t*>(::mmap(nullptr, capacity, PROT_READ, MAP_SHARED, fd->get(), 0));
    if (mem == MAP_FAILED || data == MAP_FAILED || readOnly == MAP_FAILED) std::abort();
  }
  ~SharedRing() {
    ::munmap(mem, controlBytes);
    ::munmap(data, capacity);
    ::munmap(const_cast<uint8_t*>(readOnly), capacity);
  }
  RingProducer producer() { return RingProducer(control, data, capacity, consumerWake); }
  RingConsumer consumer() { return RingConsumer(control, readOnly, capacity); }

  uint32_t capacity;
  size_t controlBytes;
  uint8_t* mem;
  RingControl* control;
  WakeWord* consumerWake;
  uint8_t* data;
  const uint8_t* readOnly;
};

// Set when a reservation handed out space that was not all zero (Cap'n Proto builds in it as if
// it were): the producer must restore what it reuses, since the consumer cannot.
std::atomic<bool> gDirtySlot{false};

bool allZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// Writes a request record carrying `seq` in callId and `len` payload bytes derived from seq.
// Every byte of the reservation but the commit word is checked to be zero first.
bool produce(RingProducer& p, uint64_t seq, uint32_t payloadWords) {
  RingProducer::Slot slot;
  const uint32_t bytes = sizeof(RecordHeader) + payloadWords * 8;
  if (p.tryReserve(bytes, bytes, slot) != RingStatus::kOk) return false;
  if (!allZero(slot.record + 4, slot.bytes - 4)) gDirtySlot = true;
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

// The producer re-reads `head` when the space it keeps zeroed ahead of its tail (half of this
// small ring) reaches what it last knew was released: once every 4096 - 2048 bytes here.
TEST(RingWatch, ARingThatKeepsUp_IsSampledOnceALapOfItsUncleanSpace_AndNeverFull) {
  SharedRing ring(4096);
  auto p = ring.producer();
  auto c = ring.consumer();
  WatchLog log;
  p.setWatch(&log);
  RingConsumer::Record r;
  const uint32_t record = roundUpRecord(sizeof(RecordHeader) + 48);
  const int laps = int(1000 * uint64_t(record) / (4096 - 2048));
  for (uint64_t seq = 0; seq < 1000; ++seq) {
    ASSERT_TRUE(produce(p, seq, 6));
    ASSERT_EQ(c.next(r), RingStatus::kOk);
    c.release(r);
  }
  EXPECT_EQ(log.episodes, 0);
  EXPECT_GE(log.samples, laps - 1);
  EXPECT_LE(log.samples, laps + 2);
  // Never more than the record just committed (after the padding that skips the ring's end).
  EXPECT_LT(log.maxUsed, 2 * record);
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
  // Every reservation, on every lap, was zero: what the producer reused it had zeroed itself.
  EXPECT_FALSE(gDirtySlot.exchange(false));
}

// The largest reservations reuse the most of the last lap: records that fill their reservation,
// after small ones, and a padding record on every lap. In a small ring (plain stores) and in one
// large enough for the producer to zero with stores that bypass the cache. `switchBursts`: the
// producer is told every few records that a burst begins or ends (cached stores, then streaming
// ones again), as a caller that mixes pipelined and synchronous calls is.
void checkEveryReservationIsZero(uint32_t capacity, uint64_t records, bool switchBursts = false) {
  SharedRing ring(capacity);
  auto p = ring.producer();
  auto c = ring.consumer();
  for (uint64_t seq = 0; seq < records; ++seq) {
    if (switchBursts) p.setBurst((seq / 3) % 2 == 0);
    RingProducer::Slot slot;
    const uint32_t minBytes = sizeof(RecordHeader) + uint32_t(seq % 7) * 8;
    // As a builder reserves: the least it needs, as much as the ring can give.
    ASSERT_EQ(p.tryReserve(minBytes, capacity / 2, slot), RingStatus::kOk) << seq;
    ASSERT_TRUE(allZero(slot.record + 4, slot.bytes - 4)) << "reservation " << seq;
    // The builder writes all it was given (as a large message would) but uses only some.
    std::memset(slot.record + 4, 0x5A, slot.bytes - 4);
    auto* h = reinterpret_cast<RecordHeader*>(slot.record);
    h->kind = kRecordRequest;
    h->flags = 0;
    h->words = 0;
    const uint32_t used = seq % 5 == 0 ? slot.bytes : minBytes;
    if (used < slot.bytes) {
      std::memset(slot.record + roundUpRecord(used), 0, slot.bytes - roundUpRecord(used));
    }
    p.commit(slot, used);
    RingConsumer::Record r;
    ASSERT_EQ(c.next(r), RingStatus::kOk) << seq;
    EXPECT_EQ(r.header.length, roundUpRecord(used));
    c.release(r);
    ASSERT_EQ(c.next(r), RingStatus::kEmpty) << "last lap's bytes read as a record at " << seq;
  }
}

TEST(Ring, EveryReservationIsZero_ThoughTheConsumerNeverWritesTheData) {
  checkEveryReservationIsZero(4096, 3000);
}

TEST(Ring, EveryReservationIsZero_InARingZeroedWithStoresThatBypassTheCache) {
  static_assert((1u << 20) >= kStreamingZeroRingBytes);
  checkEveryReservationIsZero(1u << 20, 3000);  // ~10 laps
}

TEST(Ring, EveryReservationIsZero_WhenBurstsSwitchBetweenCachedAndStreamingStores) {
  checkEveryReservationIsZero(1u << 20, 3000, true);
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
  EXPECT_FALSE(gDirtySlot.exchange(false));
}

// A reservation is as much contiguous free space as the producer keeps zeroed ahead of its tail
// (twice its largest record, at least kCleanAheadMin), up to the maximum asked for.
TEST(Ring, ReserveGivesTheCleanSpaceAhead_UpToTheMaximum_GrowingWithTheRecords) {
  SharedRing ring(1 << 16);
  auto p = ring.producer();
  RingProducer::Slot slot;
  ASSERT_EQ(p.tryReserve(64, 1 << 20, slot), RingStatus::kOk);
  EXPECT_EQ(slot.bytes, kCleanAheadMin);
  ASSERT_EQ(p.tryReserve(64, 1000, slot), RingStatus::kOk);
  EXPECT_EQ(slot.bytes, 992u);  // rounded down to whole records
  // A record of 10 KiB: the next reservations may be twice that.
  ASSERT_EQ(p.tryReserve(10240, 10240, slot), RingStatus::kOk);
  reinterpret_cast<RecordHeader*>(slot.record)->kind = kRecordRequest;
  p.commit(slot, 10240);
  ASSERT_EQ(p.tryReserve(64, 1 << 20, slot), RingStatus::kOk);
  EXPECT_EQ(slot.bytes, 20480u);
  EXPECT_TRUE(allZero(slot.record + 4, slot.bytes - 4));
}

TEST(Ring, AbortZeroesWhatTheBuilderTouched) {
  SharedRing ring(4096);
  auto p = ring.producer();
  RingProducer::Slot slot;
  ASSERT_EQ(p.tryReserve(64, 4096, slot), RingStatus::kOk);
  std::memset(slot.record + 4, 0xAB, 196);  // a builder never writes the commit word
  p.abort(slot, 200);
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(ring.data[i], 0);
  auto c = ring.consumer();
  RingConsumer::Record r;
  EXPECT_EQ(c.next(r), RingStatus::kEmpty);
}

// The consumer never erases what it read: its cursor may rest on last lap's record, or on
// anything last lap's records held. Only a word that carries the lap it expects is a record.
TEST(Ring, Consumer_TakesAWordOfAnotherLap_AsNotCommittedYet) {
  SharedRing ring(4096);
  reinterpret_cast<RecordHeader*>(ring.data)->kind = kRecordRequest;
  reinterpret_cast<RecordHeader*>(ring.data)->length = 64 | 31;  // lap 31, i.e. the one before 0
  auto c = ring.consumer();
  RingConsumer::Record r;
  EXPECT_EQ(c.next(r), RingStatus::kEmpty);
  EXPECT_FALSE(c.hasData());
  reinterpret_cast<RecordHeader*>(ring.data)->length = 64;  // lap 0: this one
  EXPECT_TRUE(c.hasData());
  EXPECT_EQ(c.next(r), RingStatus::kOk);
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
  EXPECT_FALSE(gDirtySlot.exchange(false));
}

TEST(Ring, TwoProcesses_MillionRecords_SequenceChecked) {
  SharedRing ring(1 << 16);
  constexpr uint64_t kCount = 1'000'000;
  WaitPolicy policy{WaitKind::kAdaptive, 20'000};
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    produceSequence(ring, kCount);
    ::_exit(gDirtySlot ? 1 : 0);  // 1: a reservation was not zero
  }
  // A failed assertion returns early: the producer must not outlive the test.
  struct Reap {
    pid_t pid;
    ~Reap() {
      if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reap{child};
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
  reap.pid = 0;
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
