// Single-producer / single-consumer byte ring of records in shared memory (layout: shm_layout.hpp).
//
// Guarantees: records arrive in the order committed, each whole or not at all. The consumer never
// writes the ring's data (it may map it read-only): it hands space back through `head` alone, and
// the producer restores the zeroes Cap'n Proto's builder needs before it reuses that space. The
// producer never reads what the consumer writes except `head`, which it checks; the consumer
// never trusts anything it reads: every length, kind and size is copied out and bounds-checked,
// and a violation reports kCorrupt instead of touching memory outside the ring. Not guaranteed:
// anything with more than one producer or more than one consumer thread at a time (callers
// serialise; see CallerChannel and Dispatcher).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>

#include "shm_layout.hpp"
#include "wait.hpp"

namespace hms::ffi::detail {

constexpr uint32_t roundUpRecord(uint64_t bytes) {
  return uint32_t((bytes + kRecordAlign - 1) & ~uint64_t(kRecordAlign - 1));
}

// A record's commit word: its length (a multiple of kRecordAlign) with the lap it was written in,
// modulo kRecordAlign, in the low bits. The consumer does not zero what it has read, so the word
// at its cursor may still be last lap's: only the lap it expects makes a record committed.
inline constexpr uint32_t kLapMask = kRecordAlign - 1;
constexpr uint32_t lapTag(uint64_t position, uint32_t capacityShift) {
  return uint32_t(position >> capacityShift) & kLapMask;
}
constexpr bool isCommitWord(uint32_t word, uint32_t lap) {
  return word != 0 && (word & kLapMask) == lap;
}

enum class RingStatus : uint8_t { kOk, kFull, kEmpty, kCorrupt };

// Asks for a cache line in exclusive state ahead of a write (PREFETCHW), so that the ownership
// transfer from the other core happens while this thread waits, not when it next writes.
inline void prefetchForWrite(const void* p) noexcept {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" ::"m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

// How many lines after its tail a producer claims ahead of its next record.
inline constexpr uint32_t kPrefetchLines = 4;
// The least space after its tail a producer keeps zeroed for its next records.
inline constexpr uint32_t kCleanAheadMin = 16 * 1024;
// From this ring size up, the producer zeroes space with stores that bypass the cache (x86), a
// piece of up to kStreamingZeroMaxBytes at a time (larger pieces are built in at once: cached),
// unless it is told that more records follow at once (RingProducer::setBurst).
inline constexpr uint32_t kStreamingZeroRingBytes = 512 * 1024;
inline constexpr uint32_t kStreamingZeroMaxBytes = 4096;

// Told how full a ring is each time its producer re-reads the consumer's position (metrics).
// A producer reads it when its cached copy says the ring is full: once a lap while the consumer
// keeps up, on every reservation while it does not, so the fuller the ring, the closer the
// samples; a high-water mark of them is exact once the ring has been full.
class RingWatch {
 public:
  // `usedBytes` of `capacity` hold records not yet released; `becameFull`: a reservation found
  // the ring full after one that did not (once per episode of waiting or refusing).
  virtual void sampled(uint64_t usedBytes, uint32_t capacity, bool becameFull) noexcept = 0;

 protected:
  ~RingWatch() = default;
};

class RingProducer {
 public:
  RingProducer() = default;
  RingProducer(RingControl* control, uint8_t* data, uint32_t capacity, WakeWord* consumerWake)
      : control_(control),
        data_(data),
        capacity_(capacity),
        mask_(capacity - 1),
        shift_(uint32_t(__builtin_ctz(capacity))),
        consumerWake_(consumerWake),
        cleanAhead_(std::min(capacity / 2, kCleanAheadMin)) {}

  // A reserved region at a record boundary: `bytes` contiguous zeroed bytes at `record`. The
  // first 4 (the commit word) are the ring's: commit() writes them.
  struct Slot {
    uint8_t* record = nullptr;
    uint32_t bytes = 0;
  };

  // Reserves one record's space: at least `minBytes`, at most `maxBytes` (both including the
  // header), as much as is free and contiguous. Writes a padding record when it must wrap.
  // kFull when the consumer has not freed enough yet; kCorrupt when `head` is impossible.
  RingStatus tryReserve(uint32_t minBytes, uint32_t maxBytes, Slot& slot) noexcept;

  // Lets every reservation from now on give up to `bytes` (at most half the ring): for code that
  // writes a message into its reservation itself (the raw level), which cannot spill into a heap
  // segment the way a builder does, and so would never widen the window by itself.
  void widenReservations(uint32_t bytes) noexcept {
    cleanAhead_ = std::min<uint32_t>(capacity_ / 2, std::max<uint32_t>(cleanAhead_, bytes));
  }
  uint32_t reservationLimit() const noexcept { return cleanAhead_; }

  // Publishes the record in `slot` (header fields other than `length` already written) whose
  // header, trace and message take `usedBytes`. SYNC POINT WRITE: the release store of `length`
  // pairs with the acquire load in RingConsumer::next().
  void commit(const Slot& slot, uint32_t usedBytes) noexcept;

  // Gives a reservation back unpublished, zeroing the `touchedBytes` the builder wrote (the
  // commit word excepted: a builder never writes it, and the consumer may be reading it).
  void abort(const Slot& slot, uint32_t touchedBytes) noexcept;

  // True when a record of `bytes` could be reserved now (reads `head`).
  bool hasSpaceFor(uint32_t bytes) noexcept;

  WakeWord& spaceWake() noexcept { return control_->producerWake; }
  // The consumer's `head` word: a waiter for space may watch it without touching the producer.
  const uint64_t* headWord() const noexcept { return &control_->head; }
  // Whether more records follow this one at once (calls pipelined, replies to them), or the
  // producer waits for an answer next. Streaming stores keep a lap-old line out of the cache, and
  // their fence is paid while the producer waits anyway: a round trip is faster for them. Records
  // back to back pay that fence on each and then miss on lines the stores sent to memory:
  // cached stores, ahead of the tail, run them at twice the rate (bench/RESULTS.md, 2026-12-02).
  void setBurst(bool burst) noexcept { burst_ = burst; }
  // A second word to wake after each commit (the caller's completion thread).
  void setExtraWake(WakeWord* w) noexcept { extraWake_ = w; }
  // Where to report how full the ring is (null: nowhere). Called on the producer's thread.
  void setWatch(RingWatch* w) noexcept { watch_ = w; }
  uint32_t capacity() const noexcept { return capacity_; }
  bool attached() const noexcept { return data_ != nullptr; }

 private:
  bool refreshHead() noexcept;  // false when the consumer's head is impossible
  uint64_t freeBytes() const noexcept { return capacity_ - (tail_ - cachedHead_); }
  // Zeroes what this producer wrote at positions [dirty_, upTo) (released by the consumer):
  // space it is about to hand out again. `readerAt`: the offset of the consumer's cursor if it
  // has taken every record (the tail, before any padding).
  void scrub(uint64_t upTo, uint32_t readerAt) noexcept;

  RingControl* control_ = nullptr;
  uint8_t* data_ = nullptr;
  uint32_t capacity_ = 0;
  uint32_t mask_ = 0;
  uint32_t shift_ = 0;  // log2(capacity_)
  WakeWord* consumerWake_ = nullptr;
  WakeWord* extraWake_ = nullptr;
  RingWatch* watch_ = nullptr;
  bool full_ = false;        // the last reservation that re-read `head` found the ring full
  bool burst_ = false;       // see setBurst()
  uint64_t tail_ = 0;        // bytes published; private to the producer
  uint64_t cachedHead_ = 0;  // last `head` read; re-read only when it says the ring is full
  // Bytes at positions [dirty_, tail_) may hold what this producer wrote (tail_ - dirty_ is at
  // most capacity_); every other byte of the ring is zero. Each byte written is zeroed once,
  // just before its space is handed out again: the cost of a record's zeroing is paid by the
  // record that reuses its space, in proportion to what was written.
  uint64_t dirty_ = 0;
  // How much space after the tail commit() keeps zeroed, and the most a reservation gives:
  // twice the largest record so far, at least kCleanAheadMin, at most half the ring.
  uint32_t cleanAhead_ = 0;
};

class RingConsumer {
 public:
  RingConsumer() = default;
  RingConsumer(RingControl* control, const uint8_t* data, uint32_t capacity)
      : control_(control),
        data_(data),
        capacity_(capacity),
        mask_(capacity - 1),
        shift_(uint32_t(__builtin_ctz(capacity))) {}

  // A record, its header copied out of shared memory and validated.
  struct Record {
    RecordHeader header;            // header.length is the validated length (no lap bits)
    const uint8_t* base = nullptr;  // the record in the ring
    const TraceContextWire* trace = nullptr;
    const uint64_t* words = nullptr;  // the Cap'n Proto segment, header.words long
  };

  // The next committed record after those already taken (padding is skipped), kEmpty, or
  // kCorrupt. The record stays in the ring, readable in place, until release(record).
  // SYNC POINT READ: the acquire load of `length` pairs with RingProducer::commit().
  RingStatus next(Record& record) noexcept;

  // Gives a taken record back. Records may be released in any order; their space returns to the
  // producer in ring order, once every record before them is released too (a record held long
  // holds up the space behind it, never the reading of what follows). SYNC POINT WRITE: the
  // release store of `head` pairs with the acquire load in RingProducer::refreshHead().
  void release(const Record& record) noexcept;

  // Whether a record (or padding) is committed after those taken: the cheap check for waits.
  // May run on a thread other than the one releasing: it reads the published head, not head_.
  bool hasData() const noexcept {
    if (read_ - loadAcquire(control_->head) >= capacity_) return false;
    const auto* h = reinterpret_cast<const RecordHeader*>(data_ + (read_ & mask_));
    return committed(loadAcquire(const_cast<uint32_t&>(h->length)));
  }
  // The commit word of the next record to take, for a thread that watches several rings; null
  // while every record in the ring is taken. It holds a record once it is not zero and its low
  // bits are nextLap().
  const uint32_t* nextLength() const noexcept {
    if (read_ - head_ >= capacity_) return nullptr;
    return &reinterpret_cast<const RecordHeader*>(data_ + (read_ & mask_))->length;
  }
  uint32_t nextLap() const noexcept { return lapTag(read_, shift_); }
  // Whether `word`, read at nextLength(), is the commit word of the next record (not zero, and
  // not a record of the last lap still in the ring).
  bool committed(uint32_t word) const noexcept { return isCommitWord(word, lapTag(read_, shift_)); }
  // Records taken and not released yet.
  size_t outstanding() const noexcept { return taken_.size(); }
  // Bytes between the oldest record not released and the next one to take.
  uint64_t heldBytes() const noexcept { return read_ - head_; }

  bool attached() const noexcept { return data_ != nullptr; }

  // A second word to wake when a release finds the producer waiting for space: the service's
  // doorbell, on a caller's response ring. A service parks a call whose reply has no room and
  // sleeps on its doorbell, not on this ring (Dispatcher::replyRoom()).
  void setSpaceWakeAlso(WakeWord* w) noexcept { spaceWakeAlso_ = w; }

 private:
  struct Taken {
    uint64_t pos;     // absolute byte position
    uint32_t length;  // bytes of the record
    bool padding;
    bool released;
  };
  void advancePast() noexcept;  // hands back the released records at the front

  RingControl* control_ = nullptr;
  const uint8_t* data_ = nullptr;
  uint32_t capacity_ = 0;
  uint32_t mask_ = 0;
  uint32_t shift_ = 0;       // log2(capacity_)
  uint64_t head_ = 0;        // bytes handed back; published in control_->head
  uint64_t read_ = 0;        // bytes taken (head_ <= read_ <= head_ + capacity_)
  std::deque<Taken> taken_;  // in ring order
  WakeWord* spaceWakeAlso_ = nullptr;
};

}  // namespace hms::ffi::detail
