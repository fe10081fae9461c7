#include "registry_segment.hpp"

#include <capnp/serialize.h>

#include <atomic>
#include <cstring>

#include "atomics.hpp"

namespace hms::ffi::detail {

Result<RegistryWriter> RegistryWriter::create(uint64_t segmentBytes, uint32_t brokerPid) {
  if (segmentBytes < 4 * kPageBytes) {
    return Status(StatusCode::kInvalidArgument, "registry segment must be at least 16 KiB");
  }
  segmentBytes = (segmentBytes + kPageBytes - 1) & ~uint64_t(kPageBytes - 1);
  auto fd = createSegment("hms-ffi-registry", segmentBytes);
  if (!fd.ok()) return fd.status();
  RegistryWriter w;
  w.fd_ = std::move(*fd);
  auto mapping = Mapping::map(w.fd_.get(), segmentBytes, true);
  if (!mapping.ok()) return mapping.status();
  w.mapping_ = std::move(*mapping);
  // The broker keeps its writable mapping; from now on nobody can map the segment for writing.
  if (auto s = sealReadOnlyForOthers(w.fd_.get()); !s) return s;
  auto* h = w.mapping_.as<RegistryHeader>();
  h->magic = kRegistryMagic;
  h->layoutVersion = kRegistryLayoutVersion;
  h->brokerPid = brokerPid;
  h->segmentBytes = segmentBytes;
  const uint64_t slotBytes = ((segmentBytes - kPageBytes) / 2) & ~uint64_t(7);
  for (int i = 0; i < 2; ++i) {
    h->slots[i].offset = kPageBytes + uint64_t(i) * slotBytes;
    h->slots[i].capacity = slotBytes;
  }
  return w;
}

Status RegistryWriter::publish(capnp::MessageBuilder& snapshot) {
  auto* h = mapping_.as<RegistryHeader>();
  const uint64_t next = generation_ + 1;
  RegistrySlotHeader& slot = h->slots[next & 1];
  // Flat form with its segment table, so that a multi-segment builder is readable as well.
  const size_t words = capnp::computeSerializedSizeInWords(snapshot);
  if (words * 8 > slot.capacity) {
    return Status(StatusCode::kResourceExhausted,
                  "registry snapshot of " + std::to_string(words * 8) +
                      " bytes exceeds the slot of " + std::to_string(slot.capacity) +
                      " bytes; start hms-ffid with a larger "
                      "--registry-bytes");
  }
  auto flat = capnp::messageToFlatArray(snapshot);
  const uint64_t seq = slot.seq;
  storeRelaxed(slot.seq, seq + 1);  // odd: being written
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(mapping_.data() + slot.offset, flat.begin(), flat.size() * 8);
  storeRelaxed(slot.words, uint64_t(flat.size()));
  storeRelease(slot.seq, seq + 2);  // SYNC POINT WRITE, pairs with copySnapshot()
  storeRelease(h->current, next);   // SYNC POINT WRITE, pairs with generation()/copySnapshot()
  generation_ = next;
  return Status();
}

Result<RegistryReader> RegistryReader::attach(UniqueFd fd, uint64_t segmentBytes) {
  if (auto s = checkSealedAgainstShrink(fd.get(), 0, "the registry segment"); !s) {
    return s;
  }
  auto actual = segmentSize(fd.get());
  if (!actual.ok()) return actual.status();
  if (*actual != segmentBytes || segmentBytes < 4 * kPageBytes) {
    return Status(StatusCode::kDataLoss, "registry segment size does not match the broker's word");
  }
  auto mapping = Mapping::map(fd.get(), segmentBytes, false);
  if (!mapping.ok()) return mapping.status();
  const auto* h = mapping->as<RegistryHeader>();
  if (h->magic != kRegistryMagic || h->layoutVersion != kRegistryLayoutVersion) {
    return Status(StatusCode::kFailedPrecondition,
                  "registry segment has layout version " + std::to_string(h->layoutVersion) +
                      ", this library reads " + std::to_string(kRegistryLayoutVersion) +
                      "; use a libhmsffi of the broker's release");
  }
  RegistryReader r;
  r.fd_ = std::move(fd);
  r.mapping_ = std::move(*mapping);
  return r;
}

uint64_t RegistryReader::generation() const noexcept {
  return loadAcquire(mapping_.as<RegistryHeader>()->current);
}

Result<uint64_t> RegistryReader::copySnapshot(std::vector<uint64_t>& out) const {
  auto* h = mapping_.as<RegistryHeader>();
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const uint64_t gen = loadAcquire(h->current);
    if (gen == 0) {
      out.clear();
      return gen;
    }
    RegistrySlotHeader& slot = h->slots[gen & 1];
    const uint64_t seq1 = loadAcquire(slot.seq);  // SYNC POINT READ, pairs with publish()
    if (seq1 & 1) continue;
    const uint64_t words = loadRelaxed(slot.words);
    const uint64_t offset = slot.offset;
    const uint64_t capacity = slot.capacity;
    // Checked without a sum or a product that could wrap (found by the registry-snapshot fuzzer:
    // a word count near 2^61 passed `words * 8 > capacity` and asked for an exabyte).
    if (offset < kPageBytes || offset > mapping_.size() || capacity > mapping_.size() - offset ||
        words > capacity / 8) {
      return Status(StatusCode::kDataLoss, "registry segment header is corrupt");
    }
    out.resize(words);
    if (words != 0) std::memcpy(out.data(), mapping_.data() + offset, words * 8);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (loadRelaxed(slot.seq) == seq1) return gen;
  }
  return Status(StatusCode::kUnavailable, "registry segment kept changing while being read");
}

}  // namespace hms::ffi::detail
