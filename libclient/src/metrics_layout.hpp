// The metrics segment (docs/observability.md): counters and latency histograms in shared memory.
//
// The broker creates one per client connection that can map shared memory (memfd, sealed against
// resizing), hands it over with the hello reply and keeps its own read-only mapping. The client
// is its only writer; each slot has one writing thread at a time, so every update is a plain load
// and a relaxed store (no locked read-modify-write, no lock, no syscall). The broker reads the
// slots to serve metrics, and when the client goes it adds the slots' final values to totals of
// its own: a dead process's counts stay counted.
//
// The memory is the client's to write: the broker trusts none of it (names are bounded and
// checked, counts are only summed).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace hms::ffi::detail {

inline constexpr uint64_t kMetricsMagic = 0x5445'4d46'4653'4d48ULL;  // "HMSFFMET"
inline constexpr uint32_t kMetricsLayoutVersion = 2;
inline constexpr size_t kMetricsSegmentBytes = size_t(4)
                                               << 20;  // sparse: untouched pages cost nothing

inline constexpr uint32_t kMetricsCodes = 17;  // StatusCode 0 (OK) .. 16 (UNAUTHENTICATED)

// Log-linear latency buckets, four per power of two, from 1 ns to 2^36 ns (about 68.7 s):
// values 0..3 ns have a bucket each; above, a value v with e = floor(log2 v) and the two bits
// below its top bit s falls in bucket 4(e - 1) + s, which holds [(4 + s) << (e - 2),
// (5 + s) << (e - 2)). The last bucket also takes everything longer.
inline constexpr uint32_t kMetricsBuckets = 4 * 35 + 4;  // 144

constexpr uint32_t metricsBucket(uint64_t ns) noexcept {
  if (ns < 4) return uint32_t(ns);
  const uint32_t e = uint32_t(63 - std::countl_zero(ns));
  const uint32_t s = uint32_t(ns >> (e - 2)) & 3;
  const uint32_t b = 4 * (e - 1) + s;
  return b < kMetricsBuckets ? b : kMetricsBuckets - 1;
}

// The exclusive upper bound of bucket b in nanoseconds (the last bucket has none: UINT64_MAX).
constexpr uint64_t metricsBucketUpperNs(uint32_t b) noexcept {
  if (b + 1 >= kMetricsBuckets) return UINT64_MAX;
  if (b < 4) return b + 1;
  const uint32_t e = b / 4 + 1, s = b % 4;
  return uint64_t(5 + s) << (e - 2);
}

enum MetricsSide : uint32_t {
  kMetricsUnused = 0,
  kMetricsCaller = 1,   // a call as its caller saw it: every outcome, latency end to end
  kMetricsService = 2,  // a call as its service ran it: outcome and handler time
  // Topics (the topic id in `service`, `method` empty); only `started` and `sumNs` are used:
  kMetricsPublisher = 3,   // started: messages published; sumNs: their bytes
  kMetricsSubscriber = 4,  // started: messages delivered; sumNs: messages it missed (dropped);
                           // maxNs: the furthest behind it was, in millionths of the log
  // A service's rings (the service id in `service`, `method` empty), as their producer saw them:
  // started: times it found the ring full; maxNs: the fullest it saw it, in millionths.
  kMetricsRequestRing = 5,   // written by the callers
  kMetricsResponseRing = 6,  // written by the service
};

inline constexpr size_t kMetricsServiceChars = 208;  // service ids have at most 200
inline constexpr size_t kMetricsMethodChars = 64;

struct alignas(64) MetricsSlot {
  // Written once before the slot is published (MetricsHeader::slotsPublished), never after.
  uint32_t side;
  uint32_t reserved;
  char service[kMetricsServiceChars];  // NUL-terminated
  char method[kMetricsMethodChars];    // NUL-terminated
  // One writer each.
  uint64_t started;                // calls begun; started - sum(byCode) are in flight
  uint64_t byCode[kMetricsCodes];  // calls ended, by status code
  uint64_t sumNs;
  uint64_t maxNs;
  uint64_t buckets[kMetricsBuckets];
};

struct alignas(64) MetricsHeader {
  uint64_t magic;
  uint32_t layoutVersion;
  uint32_t slotBytes;       // sizeof(MetricsSlot)
  uint32_t capacity;        // slots that fit the segment
  uint32_t slotsPublished;  // release-stored by the client after a slot's names are written
  uint32_t slotsRefused;    // slots the client wanted when the segment was full
  uint32_t reserved;
};

inline constexpr uint32_t kMetricsCapacity =
    uint32_t((kMetricsSegmentBytes - sizeof(MetricsHeader)) / sizeof(MetricsSlot));

inline MetricsSlot* metricsSlots(MetricsHeader* h) noexcept {
  return reinterpret_cast<MetricsSlot*>(reinterpret_cast<uint8_t*>(h) + sizeof(MetricsHeader));
}
inline const MetricsSlot* metricsSlots(const MetricsHeader* h) noexcept {
  return reinterpret_cast<const MetricsSlot*>(reinterpret_cast<const uint8_t*>(h) +
                                              sizeof(MetricsHeader));
}

static_assert(metricsBucket(0) == 0 && metricsBucket(3) == 3 && metricsBucket(4) == 4);
static_assert(metricsBucket(7) == 7 && metricsBucket(8) == 8 && metricsBucket(9) == 8);
static_assert(metricsBucketUpperNs(4) == 5 && metricsBucketUpperNs(8) == 10);
static_assert(metricsBucket(60'000'000'000ull) < kMetricsBuckets - 1);

}  // namespace hms::ffi::detail
