// libFuzzer target: the subscriber side of a topic log (libclient/src/topic_log.hpp), which a
// subscriber maps read-only while the publisher, another process, writes it; the publisher may
// also write the subscriber's cursor page (it attaches it). The input is the log's header, its
// slots and the cursor's start, then a script of what the subscriber does (next, release, flush,
// the cheap checks) interleaved with the publisher rewriting bytes of the log and the cursor.
// Whatever the bytes:
//   - checkTopicLog() refuses a header whose geometry does not match what is mapped;
//   - next() answers kOk, kEmpty or kCorrupt in bounded time (libFuzzer's -timeout);
//   - a message it hands out lies inside its slot (block_publisher, read in place) or inside the
//     subscriber's copy (drop_oldest), no longer than a slot holds; sequences only go up, and
//     under drop_oldest a gap is exactly the count it reported missed since the last message;
//   - a message validSingleSegmentMessage() accepts is read as the library reads one.
//
//   scripts/fuzz.sh topic-log 600
#include <capnp/any.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "fuzz_support.hpp"
#include "topic_log.hpp"

namespace {

using namespace hms::ffi;
using namespace hms::ffi::detail;

// The mapping the subscriber was given: a header page and 512 bytes of slots (4 of 128, or any
// geometry the header claims that fits).
constexpr size_t kSlotArea = 512;
constexpr size_t kMapped = kTopicHeaderBytes + kSlotArea;
constexpr size_t kHeaderInput = 128;  // the header's words that matter (the rest is padding)

struct Input {
  const uint8_t* data;
  size_t size;
  size_t at = 0;
  bool more() const { return at < size; }
  uint8_t byte() { return at < size ? data[at++] : 0; }
  void copy(void* to, size_t n) {
    const size_t k = std::min(n, size - std::min(at, size));
    if (k) std::memcpy(to, data + at, k);
    at += n;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  alignas(4096) static uint8_t log[kMapped];
  alignas(64) static SubscriberCursor cursor;
  std::memset(log, 0, sizeof log);
  std::memset(&cursor, 0, sizeof cursor);
  Input in{data, size};
  const bool drop = in.byte() & 1;
  in.copy(log, kHeaderInput);
  in.copy(log + kTopicHeaderBytes, kSlotArea);
  uint64_t start = 0;
  in.copy(&start, sizeof start);

  auto g = checkTopicLog(log, kMapped);
  if (!g.ok()) return 0;
  HMS_FUZZ_CHECK(g->segmentBytes() <= kMapped && g->slotCount >= 2 && g->slotBytes % 64 == 0);
  initCursor(&cursor, drop ? SlowConsumerPolicy::kDropOldest : SlowConsumerPolicy::kBlockPublisher,
             start);
  TopicSubscriber sub(log, *g, &cursor);
  const uint8_t* slots = log + kTopicHeaderBytes;
  const uint8_t* slotsEnd = log + g->segmentBytes();
  uint64_t lastSeq = 0;
  uint64_t missedSince = 0;  // reported missed since lastSeq, by every call (kEmpty ones too)
  bool reading = false;
  for (int steps = 0; steps < 2048 && in.more(); ++steps) {
    const uint8_t op = in.byte();
    switch (op % 8) {
      case 0:
      case 1: {
        TopicSubscriber::Message m;
        uint64_t missed = 0;
        const RingStatus s = sub.next(m, missed);
        if (s == RingStatus::kCorrupt) return 0;  // the library ends the subscription
        missedSince += missed;
        if (s != RingStatus::kOk) {
          HMS_FUZZ_CHECK(s == RingStatus::kEmpty);
          break;
        }
        HMS_FUZZ_CHECK(m.wordCount <= g->maxWords());
        const auto* w = reinterpret_cast<const uint8_t*>(m.words);
        if (!drop) {
          HMS_FUZZ_CHECK(w >= slots + sizeof(TopicSlotHeader) &&
                         w + uint64_t(m.wordCount) * 8 <= slotsEnd);
          HMS_FUZZ_CHECK(missed == 0);
        }
        HMS_FUZZ_CHECK(m.seq != 0 && m.seq > lastSeq);
        if (drop && lastSeq != 0) HMS_FUZZ_CHECK(m.seq == lastSeq + 1 + missedSince);
        fuzz::readInPlace(m.words, m.wordCount);
        lastSeq = m.seq;
        missedSince = 0;
        reading = true;
        break;
      }
      case 2:
        if (reading) sub.release();
        reading = false;
        break;
      case 3:
        sub.flush();
        (void)sub.hasNext();
        (void)sub.publisherState();
        break;
      case 4:
      case 5: {  // the publisher writes the log: `n` bytes at `pos` of the header or the slots
        const bool header = in.byte() & 1;
        const size_t area = header ? kHeaderInput : kSlotArea;
        uint8_t* base = header ? log : log + kTopicHeaderBytes;
        const size_t pos = in.byte() % area;
        const size_t n = in.byte() % 32;
        for (size_t i = 0; i < n; ++i) base[(pos + i) % area] = in.byte();
        break;
      }
      case 6: {  // the publisher (or the broker) writes the cursor: `next` or the states
        const uint8_t which = in.byte() % 3;
        if (which == 0) in.copy(&cursor.next, sizeof cursor.next);
        if (which == 1) cursor.publisherState = in.byte() % 4;
        if (which == 2) cursor.state = in.byte() % 4;
        break;
      }
      case 7: {  // the publisher publishes: the count moves to a sequence the input gives
        uint64_t published = 0;
        in.copy(&published, sizeof published);
        reinterpret_cast<TopicHeader*>(log)->published = published;
        break;
      }
    }
    HMS_FUZZ_CHECK(sub.dropped() == cursor.dropped || !drop);
  }
  sub.close();
  return 0;
}
