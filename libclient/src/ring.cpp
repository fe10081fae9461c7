#include "ring.hpp"

#include <algorithm>

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
  if (toEnd < need) {
    // Skip the tail end: a padding record running to the end of the ring. Its body is already
    // zero (free space always is); only the header is written.
    auto* pad = reinterpret_cast<RecordHeader*>(data_ + pos);
    pad->kind = kRecordPadding;
    storeRelease(pad->length, toEnd);  // SYNC POINT WRITE, pairs with RingConsumer::next()
    tail_ += toEnd;
    pos = 0;
    toEnd = capacity_;
  }
  const uint64_t avail = std::min<uint64_t>(toEnd, freeBytes());
  slot.record = data_ + pos;
  slot.bytes = uint32_t(std::min<uint64_t>(avail, maxBytes & ~(kRecordAlign - 1)));
  if (slot.bytes < need) slot.bytes = need;
  return RingStatus::kOk;
}

void RingProducer::commit(const Slot& slot, uint32_t usedBytes) noexcept {
  const uint32_t length = roundUpRecord(usedBytes);
  auto* header = reinterpret_cast<RecordHeader*>(slot.record);
  storeRelease(header->length, length);  // SYNC POINT WRITE, pairs with RingConsumer::next()
  tail_ += length;
  bumpSingleWriter(control_->records, uint64_t{1});  // single writer: the producer
  bumpSingleWriter(control_->bytes, uint64_t{length});
  if (extraWake_) {
    wakeEitherIfSleeping(*consumerWake_, extraWake_);
  } else {
    wakeIfSleeping(*consumerWake_);
  }
  // Claim the lines of the next record now, while the peer works on this one. Only lines the
  // consumer has released may be touched (a prefetch writes nothing, but stays inside the ring).
  const uint32_t pos = uint32_t(tail_ & mask_);
  const uint32_t lines = std::min<uint32_t>(kPrefetchLines, (capacity_ - pos) / kCacheLine);
  for (uint32_t i = 0; i < lines; ++i) prefetchForWrite(data_ + pos + i * kCacheLine);
}

void RingProducer::abort(const Slot& slot, uint32_t touchedBytes) noexcept {
  std::memset(slot.record, 0, std::min(touchedBytes, slot.bytes));
}

RingStatus RingConsumer::next(Record& record) noexcept {
  for (;;) {
    // Everything in the ring taken: what is at the cursor is the oldest record, still held.
    if (read_ - head_ >= capacity_) return RingStatus::kEmpty;
    const uint32_t pos = uint32_t(read_ & mask_);
    const auto* shared = reinterpret_cast<const RecordHeader*>(data_ + pos);
    const uint32_t length = loadAcquire(const_cast<uint32_t&>(shared->length));
    if (length == 0) return RingStatus::kEmpty;
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
  while (!taken_.empty() && taken_.front().released) {
    const Taken& t = taken_.front();
    // Free space is zero: the producer hands it to Cap'n Proto as a fresh segment.
    uint8_t* p = const_cast<uint8_t*>(data_ + (t.pos & mask_));
    // The length word by an atomic store: a thread watching for the next record (a completion
    // thread's nextLength()) may be reading it.
    static_assert(offsetof(RecordHeader, length) == 0);
    storeRelaxed(reinterpret_cast<RecordHeader*>(p)->length, 0u);
    std::memset(p + sizeof(uint32_t), 0,
                (t.padding ? sizeof(RecordHeader) : t.length) - sizeof(uint32_t));
    head_ += t.length;
    taken_.pop_front();
  }
  if (head_ == before) return;
  storeRelease(control_->head, head_);  // SYNC POINT WRITE, pairs with RingProducer::refreshHead()
  if (wakeIfSleeping(control_->producerWake) && spaceWakeAlso_) wakeAlways(*spaceWakeAlso_);
}

}  // namespace hms::ffi::detail
