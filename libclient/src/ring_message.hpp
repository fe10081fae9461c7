// Cap'n Proto messages built and read in place in a ring record.
#pragma once

#include <capnp/message.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "hms/ffi/status.hpp"
#include "ring.hpp"

namespace hms::ffi::detail {

// A MessageBuilder whose first segment is ring space (already zero: the ring's invariant). A
// message that outgrows it spills into heap segments, which publishRecord() copies into the ring
// (the slow path) or refuses when over the limit; a message that fits is never copied.
class RingMessageBuilder final : public capnp::MessageBuilder {
 public:
  explicit RingMessageBuilder(kj::ArrayPtr<capnp::word> space) : space_(space) {}

  kj::ArrayPtr<capnp::word> allocateSegment(uint minimumSize) override {
    if (!gaveSpace_) {
      gaveSpace_ = true;
      if (space_.size() >= minimumSize && space_.size() > 0) return space_;
    }
    const size_t words = std::max<size_t>(minimumSize, 1024);
    auto seg = kj::heapArray<capnp::word>(words);
    std::memset(seg.begin(), 0, words * sizeof(capnp::word));
    auto ptr = seg.asPtr();
    spill_.push_back(kj::mv(seg));
    return ptr;
  }

  // The raw level (C ABI): the whole space, handed to code that writes a single-segment message
  // into it itself (root pointer at word 0). The builder is not used for building afterwards.
  kj::ArrayPtr<capnp::word> loanRaw() {
    gaveSpace_ = true;
    raw_ = true;
    rawWords_ = 0;
    return space_;
  }
  bool isRaw() const noexcept { return raw_; }
  // Ends a raw loan: the message is the first `words` words of the space. INVALID_ARGUMENT
  // (nothing set) for none, or for more than the loan holds.
  Status setRawWords(size_t words) {
    if (words == 0 || words > space_.size()) {
      return Status(StatusCode::kInvalidArgument,
                    "a raw message of " + std::to_string(words) +
                        " words does not fit its loan of " + std::to_string(space_.size()) +
                        " words (at least the root pointer)");
    }
    rawWords_ = words;
    return Status();
  }

  // The message's one segment when the whole message is that segment in the ring space; nullopt
  // when it spilled (one look at the arena: a message is published once per look).
  std::optional<kj::ArrayPtr<const capnp::word>> inPlaceWords() {
    if (raw_) return kj::arrayPtr<const capnp::word>(space_.begin(), rawWords_);
    auto segs = getSegmentsForOutput();
    if (segs.size() == 1 && segs[0].begin() == space_.begin()) return segs[0];
    return std::nullopt;
  }

  // Words of ring space the builder wrote into (to zero on abort).
  size_t ringWordsTouched() {
    if (raw_) return space_.size();  // raw code may have written anywhere in the loan
    if (!gaveSpace_) return 0;
    auto segs = getSegmentsForOutput();
    if (segs.size() > 0 && segs[0].begin() == space_.begin()) return segs[0].size();
    return 0;
  }

  // Whether the whole message is the one segment in the ring space.
  bool inPlace() { return inPlaceWords().has_value(); }

 private:
  kj::ArrayPtr<capnp::word> space_;
  bool gaveSpace_ = false;
  bool raw_ = false;
  size_t rawWords_ = 0;
  std::vector<kj::Array<capnp::word>> spill_;
};

// Reader options for messages read from a ring. The traversal limit bounds the work a message
// whose pointers alias each other can cause; it counts every getter call, so it must leave room
// for user code that reads a field in a loop: Cap'n Proto's default (64 MiB), or 64x the message.
inline capnp::ReaderOptions ringReaderOptions(uint64_t words) {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = std::max<uint64_t>(8ull << 20, words * 64);
  o.nestingLimit = 64;
  return o;
}

inline uint32_t payloadOffset(uint16_t flags) {
  return sizeof(RecordHeader) + ((flags & kRecordHasTrace) ? sizeof(TraceContextWire) : 0);
}

// Publishes the message in `builder`, which was built over `slot`. `header` holds every field but
// length and words. If the message spilled out of the slot, it is copied into a new reservation
// once `waitSpace(bytes)` says there is room (the slow path); RESOURCE_EXHAUSTED when it is over
// `maxMessageBytes`. On any error the slot is given back.
template <class WaitSpace>
Status publishRecord(RingProducer& ring, const RingProducer::Slot& slot,
                     RingMessageBuilder& builder, RecordHeader header,
                     const TraceContextWire* trace, uint32_t maxMessageBytes,
                     const std::string& limitHint, WaitSpace&& waitSpace) {
  const uint32_t offset = payloadOffset(header.flags);
  if (const auto inPlace = builder.inPlaceWords()) {
    const size_t words = inPlace->size();
    if (words * 8 > maxMessageBytes) {
      ring.abort(slot, uint32_t(offset + words * 8));
      return Status(StatusCode::kResourceExhausted,
                    "message of " + std::to_string(words * 8) + " bytes exceeds the limit of " +
                        std::to_string(maxMessageBytes) + " bytes; " + limitHint);
    }
    header.words = uint32_t(words);
    std::memcpy(slot.record + sizeof(uint32_t), reinterpret_cast<const uint8_t*>(&header) + 4,
                sizeof(RecordHeader) - 4);
    if (trace) std::memcpy(slot.record + sizeof(RecordHeader), trace, sizeof(TraceContextWire));
    ring.commit(slot, uint32_t(offset + words * 8));
    return Status();
  }
  // Slow path: flatten to one heap segment, give the slot back, reserve exactly, copy.
  size_t total = 0;
  const auto spilled = builder.getSegmentsForOutput();
  for (auto seg : spilled) total += seg.size();
  const size_t touched = builder.ringWordsTouched();
  // The segments hold a far pointer's landing pad (two words at most) per segment that one
  // points into, which the flat copy below does without: only more than that is surely over.
  const size_t pads = 2 * (spilled.size() - 1);
  if ((total > pads ? total - pads : 0) * 8 > maxMessageBytes) {
    ring.abort(slot, uint32_t(std::min<size_t>(offset + touched * 8, slot.bytes)));
    return Status(StatusCode::kResourceExhausted,
                  "message of about " + std::to_string(total * 8) + " bytes exceeds the limit of " +
                      std::to_string(maxMessageBytes) + " bytes; " + limitHint);
  }
  capnp::MallocMessageBuilder flat(uint(total + 16), capnp::AllocationStrategy::FIXED_SIZE);
  flat.setRoot(builder.getRoot<capnp::AnyPointer>().asReader());
  auto segs = flat.getSegmentsForOutput();
  if (segs.size() != 1 || segs[0].size() * 8 > maxMessageBytes) {
    ring.abort(slot, uint32_t(std::min<size_t>(offset + touched * 8, slot.bytes)));
    return Status(
        StatusCode::kResourceExhausted,
        "message exceeds the limit of " + std::to_string(maxMessageBytes) + " bytes; " + limitHint);
  }
  ring.abort(slot, uint32_t(std::min<size_t>(offset + touched * 8, slot.bytes)));
  const uint32_t bytes = uint32_t(offset + segs[0].size() * 8);
  RingProducer::Slot exact;
  for (;;) {
    const RingStatus st = ring.tryReserve(bytes, bytes, exact);
    if (st == RingStatus::kOk) break;
    if (st == RingStatus::kCorrupt) {
      return Status(StatusCode::kDataLoss, "ring index corrupt while publishing a message");
    }
    if (auto s = waitSpace(bytes); !s) return s;
  }
  header.words = uint32_t(segs[0].size());
  std::memcpy(exact.record + sizeof(uint32_t), reinterpret_cast<const uint8_t*>(&header) + 4,
              sizeof(RecordHeader) - 4);
  if (trace) std::memcpy(exact.record + sizeof(RecordHeader), trace, sizeof(TraceContextWire));
  std::memcpy(exact.record + offset, segs[0].begin(), segs[0].size() * 8);
  ring.commit(exact, bytes);
  return Status();
}

}  // namespace hms::ffi::detail
