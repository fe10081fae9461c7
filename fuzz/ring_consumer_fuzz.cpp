// libFuzzer target: the consumer side of a ring (libclient/src/ring.hpp), which a service reads
// requests from and a caller reads replies from, over memory its peer writes. The peer may write
// anything at any time: the input is the ring's bytes, then a script of what the consumer does
// (take a record, release one, look for data) interleaved with the peer rewriting bytes of the
// ring between those steps. Whatever the bytes:
//   - next() answers kOk, kEmpty or kCorrupt, and a record it hands out lies wholly inside the
//     ring, its trace and Cap'n Proto words inside the record;
//   - the consumer's published head never goes back, and it never holds more than the ring;
//   - a record that validSingleSegmentMessage() accepts is read as the library reads a reply (a
//     SegmentArrayMessageReader with ringReaderOptions) with no sanitizer finding.
// After kCorrupt the library ends the channel; the script stops there too.
//
//   scripts/fuzz.sh ring-consumer 600
#include <capnp/any.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz_support.hpp"
#include "hms/ffi/error.capnp.h"
#include "ring.hpp"

namespace {

using namespace hms::ffi;
using namespace hms::ffi::detail;

constexpr uint32_t kCapacity = 1024;  // small, so that the fuzzer reaches the wrap

struct Input {
  const uint8_t* data;
  size_t size;
  size_t at = 0;
  bool more() const { return at < size; }
  uint8_t byte() { return at < size ? data[at++] : 0; }
};

// As the library reads a reply or a request it has validated: an error reply as an RpcError,
// anything else whole.
void readAsTheLibraryDoes(const RingConsumer::Record& rec) {
  fuzz::readInPlace(rec.words, rec.header.words, [&](capnp::MessageReader& reader) {
    if (rec.header.kind == kRecordResponse && rec.header.status != 0) {
      auto err = reader.getRoot<wire::RpcError>();
      (void)err.getMessage().size();
      for (auto d : err.getDetails()) (void)(d.getKey().size() + d.getValue().size());
    } else {
      (void)reader.getRoot<capnp::AnyPointer>().targetSize();
    }
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  alignas(64) static RingControl control;
  alignas(64) static uint8_t ring[kCapacity];
  std::memset(&control, 0, sizeof control);
  std::memset(ring, 0, sizeof ring);
  std::memcpy(ring, data, std::min<size_t>(size, kCapacity));
  Input in{data, size, std::min<size_t>(size, kCapacity)};

  RingConsumer consumer(&control, ring, kCapacity);
  std::vector<RingConsumer::Record> held;
  uint64_t lastHead = 0;  // what it published last
  for (int steps = 0; steps < 4096 && in.more(); ++steps) {
    const uint8_t op = in.byte();
    switch (op % 8) {
      case 0:
      case 1:
      case 2: {
        RingConsumer::Record rec;
        const RingStatus s = consumer.next(rec);
        if (s == RingStatus::kCorrupt) return 0;
        if (s != RingStatus::kOk) {
          HMS_FUZZ_CHECK(s == RingStatus::kEmpty);
          break;
        }
        const uint8_t* end = ring + kCapacity;
        HMS_FUZZ_CHECK(rec.base >= ring && rec.base < end);
        HMS_FUZZ_CHECK(rec.header.length % kRecordAlign == 0 &&
                       rec.header.length >= sizeof(RecordHeader));
        HMS_FUZZ_CHECK(rec.base + rec.header.length <= end);
        HMS_FUZZ_CHECK(rec.header.kind >= kRecordRequest && rec.header.kind <= kRecordKindLast);
        const auto* words = reinterpret_cast<const uint8_t*>(rec.words);
        HMS_FUZZ_CHECK(words >= rec.base + sizeof(RecordHeader));
        HMS_FUZZ_CHECK(words + uint64_t(rec.header.words) * 8 <= rec.base + rec.header.length);
        if (rec.trace) {
          const auto* t = reinterpret_cast<const uint8_t*>(rec.trace);
          HMS_FUZZ_CHECK(t >= rec.base && t + sizeof(TraceContextWire) <= words);
        }
        readAsTheLibraryDoes(rec);
        if (held.size() < 64) {
          held.push_back(rec);
        } else {
          consumer.release(rec);
        }
        break;
      }
      case 3:  // release one, in any order
        if (!held.empty()) {
          const size_t i = in.byte() % held.size();
          consumer.release(held[i]);
          held.erase(held.begin() + long(i));
        }
        break;
      case 4:  // the cheap checks a waiting thread makes
        (void)consumer.hasData();
        if (const uint32_t* len = consumer.nextLength()) {
          HMS_FUZZ_CHECK(reinterpret_cast<const uint8_t*>(len) >= ring &&
                         reinterpret_cast<const uint8_t*>(len) < ring + kCapacity);
        }
        break;
      case 5:
      case 6:
      case 7: {  // the peer writes: `n` bytes at `pos`, wrapping
        const uint32_t pos = (uint32_t(in.byte()) << 8 | in.byte()) % kCapacity;
        const uint32_t n = in.byte() % 64;
        for (uint32_t i = 0; i < n; ++i) ring[(pos + i) % kCapacity] = in.byte();
        break;
      }
    }
    const uint64_t head = control.head;
    HMS_FUZZ_CHECK(head >= lastHead);  // never goes back
    HMS_FUZZ_CHECK(consumer.heldBytes() <= kCapacity);
    lastHead = head;
  }
  for (const auto& rec : held) consumer.release(rec);
  return 0;
}
