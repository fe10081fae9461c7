#include "ring.hpp"

#include <algorithm>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "atomics.hpp"

namespace hms::ffi::detail {

bool RingProducer::refreshHead() noexcept {
  const uint64_t head = loadAcquire(control_->head);
  // The consumer can only have consumed what was published, in whole records.
  if (tail_ - head > capacity_ || (head & (kRecordAlign - 1)) != 0) return false;
  cachedHead_ = head;
  return true;
}

bool RingProducer::hasSpaceFor(uint32_t bytes) noexcept {
  const uint32_t need = roundUpRecord(bytes);
  const uint32_t toEnd = capacity_ - uint32_t(tail_ & mask_);
  const uint64_t required = toEnd >= need ? need : uint64_t(toEnd) + need;
  if (freeBytes() >= required) return true;
  const uint64_t before = cachedHead_;
  if (!refreshHead()) return false;
  // A waiter asks again and again: report a sample only when the consumer moved.
  if (watch_ && cachedHead_ != before) watch_->sampled(tail_ - cachedHead_, capacity_, false);
  const bool room = freeBytes() >= required;
  if (room) full_ = false;  // the wait is over: the next full ring is another episode
  return room;
}

namespace {

// Zeroes [p, p + bytes), both 32-byte aligned; with `streaming`, by stores that bypass the cache
// (x86): in a ring larger than a core's own caches, lines last touched a lap ago would otherwise
// be read in (from the consumer's cache or memory) at a miss per line, every store after it held
// up behind the miss. commit() fences them (sfence) before it publishes a record.
inline void zeroAligned(uint8_t* p, uint32_t bytes, bool streaming) noexcept {
#if defined(__x86_64__)
  if (streaming) {
    auto* v = reinterpret_cast<__m128i*>(p);
    const __m128i zero = _mm_setzero_si128();
    for (uint32_t i = 0; i < bytes / 16; ++i) _mm_stream_si128(v + i, zero);
    return;
  }
#else
  (void)streaming;
#endif
  std::memset(p, 0, bytes);
}

inline void fenceZeroes() noexcept {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

}  // namespace

RingStatus RingProducer::tryReserve(uint32_t minBytes, uint32_t maxBytes, Slot& slot) noexcept {
  const uint32_t need = roundUpRecord(minBytes);
  if (need > capacity_ / 2) return RingStatus::kFull;  // callers check limits first
  uint32_t pos = uint32_t(tail_ & mask_);
  uint32_t toEnd = capacity_ - pos;
  const uint64_t required = toEnd >= need ? need : uint64_t(toEnd) + need;
  if (freeBytes() < required) {
    if (!refreshHead()) return RingStatus::kCorrupt;
    const bool full = freeBytes() < required;
    if (watch_) watch_->sampled(tail_ - cachedHead_, capacity_, full && !full_);
    full_ = full;
    if (full) return RingStatus::kFull;
  }
  // Skip the tail end when the record does not fit there: a padding record running to the end of
  // the ring (written below, once the space is scrubbed; its body is never read).
  const bool pad = toEnd < need;
  const uint64_t padAt = tail_;
  if (pad) {
    tail_ += toEnd;
    toEnd = capacity_;
  }
  // As much as is free and contiguous, up to `maxBytes` and to what is kept clean ahead of the
  // tail (a message that outgrows it spills and is copied once; then the window grows).
  const uint64_t avail = std::min<uint64_t>(toEnd, freeBytes());
  slot.record = data_ + uint32_t(tail_ & mask_);
  slot.bytes = uint32_t(std::min<uint64_t>({avail, maxBytes & ~(kRecordAlign - 1), cleanAhead_}));
  if (slot.bytes < need) slot.bytes = need;
  // What the slot reuses of the last lap must be zero again before Cap'n Proto builds in it; and
  // so must the commit word just past it, where the consumer looks next if the record fills the
  // slot (last lap's bytes there could be anything, and look committed). Unless that word is the
  // consumer's oldest record, not released: it reads no further until it is, and then finds a
  // header of last lap there. Usually commit() has done it already, off the critical path.
  const uint64_t cleanTo = std::min(tail_ + slot.bytes + kRecordAlign - capacity_, cachedHead_);
  if (int64_t(cleanTo - dirty_) > 0) scrub(cleanTo, pos);
  if (pad) {
    auto* header = reinterpret_cast<RecordHeader*>(data_ + pos);
    header->kind = kRecordPadding;
    fenceZeroes();  // the zeroed commit word at 0 before the padding that leads there
    // SYNC POINT WRITE, pairs with RingConsumer::next()
    storeRelease(header->length, (capacity_ - pos) | lapTag(padAt, shift_));
  }
  return RingStatus::kOk;
}

void RingProducer::scrub(uint64_t upTo, uint32_t readerAt) noexcept {
  // Every position in [dirty_, upTo) was released (upTo <= head); in ring offsets the range runs
  // from dirty_'s, wrapping at most once. Positions are multiples of kRecordAlign.
  // Streaming stores for the small pieces of a large ring (a record or so, reused only a clean
  // window later); plain ones for large pieces, which the next records build in at once.
  const bool streaming =
      !burst_ && capacity_ >= kStreamingZeroRingBytes && upTo - dirty_ <= kStreamingZeroMaxBytes;
  while (dirty_ != upTo) {
    const uint32_t from = uint32_t(dirty_ & mask_);
    const uint32_t bytes = uint32_t(std::min<uint64_t>(upTo - dirty_, capacity_ - from));
    // The commit word at `readerAt` is the one place the consumer may be reading (its cursor,
    // when it has taken everything): zeroed by an atomic store, the rest of its record-sized
    // block by memset.
    if (readerAt >= from && readerAt < from + bytes) {
      zeroAligned(data_ + from, readerAt - from, streaming);
      storeRelaxed(reinterpret_cast<RecordHeader*>(data_ + readerAt)->length, 0u);
      std::memset(data_ + readerAt + 4, 0, kRecordAlign - 4);
      zeroAligned(data_ + readerAt + kRecordAlign, from + bytes - readerAt - kRecordAlign,
                  streaming);
    } else {
      zeroAligned(data_ + from, bytes, streaming);
    }
    dirty_ += bytes;
  }
  // Drain the streaming stores now, off the critical path: left in the write-combining buffers
  // (a record's end is rarely a line's), the fence before the next commit would wait for them.
  if (streaming) fenceZeroes();
}

void RingProducer::commit(const Slot& slot, uint32_t usedBytes) noexcept {
  const uint32_t length = roundUpRecord(usedBytes);
  auto* header = reinterpret_cast<RecordHeader*>(slot.record);
  fenceZeroes();  // what scrub() zeroed is in memory before the record is
  // SYNC POINT WRITE, pairs with RingConsumer::next()
  storeRelease(header->length, length | lapTag(tail_, shift_));
  tail_ += length;
  bumpSingleWriter(control_->records, uint64_t{1});  // single writer: the producer
  bumpSingleWriter(control_->bytes, uint64_t{length});
  if (extraWake_) {
    wakeEitherIfSleeping(*consumerWake_, extraWake_);
  } else {
    wakeIfSleeping(*consumerWake_);
  }
  // While the peer works on this record: zero the space the next ones will reuse (so that a
  // reservation rarely has to), and claim the lines of the next record. Only lines the consumer
  // has released may be touched (a prefetch writes nothing, but stays inside the ring).
  if (length * 2 > cleanAhead_) {
    cleanAhead_ = std::min<uint32_t>(capacity_ / 2, std::max<uint32_t>(length * 2, cleanAhead_));
  }
  const uint32_t pos = uint32_t(tail_ & mask_);
  const uint64_t want = tail_ + cleanAhead_ + kRecordAlign - capacity_;
  if (int64_t(want - dirty_) > 0) {
    const uint64_t before = cachedHead_;
    // (An impossible head is left for tryReserve to report.)
    if (int64_t(want - cachedHead_) > 0 && refreshHead() && watch_ && cachedHead_ != before) {
      watch_->sampled(tail_ - cachedHead_, capacity_, false);
    }
    const uint64_t to = int64_t(want - cachedHead_) > 0 ? cachedHead_ : want;
    if (int64_t(to - dirty_) > 0) scrub(to, pos);
  }
  const uint32_t lines = std::min<uint32_t>(kPrefetchLines, (capacity_ - pos) / kCacheLine);
  for (uint32_t i = 0; i < lines; ++i) prefetchForWrite(data_ + pos + i * kCacheLine);
}

void RingProducer::abort(const Slot& slot, uint32_t touchedBytes) noexcept {
  const uint32_t bytes = std::min(touchedBytes, slot.bytes);
  if (bytes > sizeof(uint32_t)) std::memset(slot.record + 4, 0, bytes - sizeof(uint32_t));
}

RingStatus RingConsumer::next(Record& record) noexcept {
  for (;;) {
    // Everything in the ring taken: what is at the cursor is the oldest record, still held.
    if (read_ - head_ >= capacity_) return RingStatus::kEmpty;
    const uint32_t pos = uint32_t(read_ & mask_);
    const auto* shared = reinterpret_cast<const RecordHeader*>(data_ + pos);
    const uint32_t word = loadAcquire(const_cast<uint32_t&>(shared->length));
    if (!committed(word)) return RingStatus::kEmpty;  // not yet, or last lap's record
    const uint32_t length = word & ~kLapMask;
    // Copy the header out once; validate the copy, never re-read the shared one.
    std::memcpy(&record.header, shared, sizeof(RecordHeader));
    record.header.length = length;
    if (length % kRecordAlign != 0 || length > capacity_ - pos ||
        read_ + length > head_ + capacity_) {
      return RingStatus::kCorrupt;
    }
    if (record.header.kind == kRecordPadding) {
      if (pos + length != capacity_) return RingStatus::kCorrupt;
      taken_.push_back(Taken{read_, length, true, true});
      read_ += length;
      if (taken_.size() == 1) advancePast();
      continue;
    }
    if (record.header.kind < kRecordRequest || record.header.kind > kRecordKindLast) {
      return RingStatus::kCorrupt;
    }
    const uint32_t traceBytes =
        (record.header.flags & kRecordHasTrace) ? uint32_t(sizeof(TraceContextWire)) : 0;
    const uint64_t needed = sizeof(RecordHeader) + traceBytes + uint64_t(record.header.words) * 8;
    if (needed > length) return RingStatus::kCorrupt;
    record.base = data_ + pos;
    // Fetch the start of the record in parallel rather than line after line as it is read; past
    // a few lines the hardware prefetcher follows a sequential read by itself, and prefetching a
    // large record whole would only delay its first use.
    const uint32_t prefetchEnd = std::min<uint32_t>(length, 16 * kCacheLine);
    for (uint32_t off = kCacheLine; off < prefetchEnd; off += kCacheLine) {
      __builtin_prefetch(record.base + off, 0, 3);
    }
    record.trace =
        traceBytes ? reinterpret_cast<const TraceContextWire*>(record.base + sizeof(RecordHeader))
                   : nullptr;
    record.words =
        reinterpret_cast<const uint64_t*>(record.base + sizeof(RecordHeader) + traceBytes);
    taken_.push_back(Taken{read_, length, false, false});
    read_ += length;
    return RingStatus::kOk;
  }
}

void RingConsumer::release(const Record& record) noexcept {
  if (taken_.empty() || record.base < data_ || record.base >= data_ + capacity_) return;
  // Records taken lie in [head_, head_ + capacity_): the offset names exactly one of them.
  const uint64_t offset = uint64_t(record.base - data_);
  const uint64_t pos = head_ + ((offset - head_) & mask_);
  if (taken_.front().pos == pos) {
    taken_.front().released = true;
    advancePast();
    return;
  }
  auto it = std::lower_bound(taken_.begin(), taken_.end(), pos,
                             [](const Taken& t, uint64_t p) { return t.pos < p; });
  if (it != taken_.end() && it->pos == pos) it->released = true;
}

void RingConsumer::advancePast() noexcept {
  const uint64_t before = head_;
  // The space goes back as it is: the producer zeroes what it reuses (the ring's data may be
  // mapped read-only here).
  while (!taken_.empty() && taken_.front().released) {
    head_ += taken_.front().length;
    taken_.pop_front();
  }
  if (head_ == before) return;
  storeRelease(control_->head, head_);  // SYNC POINT WRITE, pairs with RingProducer::refreshHead()
  if (wakeIfSleeping(control_->producerWake) && spaceWakeAlso_) wakeAlways(*spaceWakeAlso_);
}

}  // namespace hms::ffi::detail
