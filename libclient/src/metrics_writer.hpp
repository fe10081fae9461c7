// The client's side of the call metrics (docs/observability.md): it writes the metrics segment
// the broker gave it at hello (metrics_layout.hpp). Each thread gets a slot of its own per
// series (side, service, method), so that every update is a plain load and a relaxed store.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "atomics.hpp"
#include "metrics_layout.hpp"
#include "os.hpp"
#include "ring.hpp"

namespace hms::ffi::detail {

// The slots of a segment whose threads have ended, by series, for the next thread that counts
// in that series: its counts go on from where they were (a slot's values only grow), so thread
// churn does not fill the segment. Shared with the threads' records of their slots, which give
// them back when the thread ends, whether or not the writer is still there.
struct MetricsSlotPool {
  std::mutex mu;
  std::vector<std::vector<MetricsSlot*>> free;  // by series
};

class MetricsWriter {
 public:
  // A segment from the broker (each hello brings a new one: the broker added what the earlier
  // one counted to its totals when that connection ended). A segment that is not one is
  // refused and nothing is counted.
  Status attach(UniqueFd fd, uint64_t bytes);
  bool enabled() const noexcept { return epoch_.load(std::memory_order_relaxed) != 0; }
  // Changes with every attach (0: none): what a cached slot is checked against.
  uint64_t epoch() const noexcept { return epoch_.load(std::memory_order_relaxed); }

  // The series of (side, service, method), cached in `cell` (0: not yet known).
  uint32_t family(std::atomic<uint32_t>& cell, MetricsSide side, const std::string& service,
                  std::string_view method);
  // The calling thread's slot of a series: null when there is no segment, or it is full.
  MetricsSlot* slot(uint32_t family);

 private:
  MetricsSlot* newSlot(uint32_t family, std::shared_ptr<MetricsSlotPool>& pool);

  std::mutex mu_;
  std::shared_ptr<MetricsSlotPool> pool_;       // the current segment's
  std::vector<std::shared_ptr<Mapping>> maps_;  // the current one last; earlier ones stay mapped
  std::atomic<uint64_t> epoch_{0};              // unique in the process for each attach
  MetricsHeader* header_ = nullptr;
  uint32_t next_ = 0;
  std::vector<std::tuple<MetricsSide, std::string, std::string>> families_;
  std::map<std::tuple<MetricsSide, std::string, std::string>, uint32_t> index_;
};

// The fill of a service's rings of one kind (request or response), reported by their producers:
// the high-water mark and the times they were found full (ring.hpp, RingWatch). One per caller
// channel or served service; each producing thread writes its own slot.
// A number for the calling thread, never given to another thread of the process (a thread id may
// be reused once its thread ends; a cached metrics slot must not be).
uint64_t metricsThreadSerial() noexcept;

// One series' slot for the thread that last asked, kept while that thread keeps asking and the
// segment stays the same: a per-message path (publish, deliver) then pays two compares instead
// of a lookup (the lookup cost ~20 ns a message, which was enough to tip pub/sub into its slow
// regime). Not for concurrent use: its owner serialises the calls (the publisher's lock, a
// subscription's one reader).
class CachedMetricsSlot {
 public:
  template <class Lookup>
  MetricsSlot* get(const MetricsWriter& w, Lookup&& lookup) noexcept {
    const uint64_t epoch = w.epoch();
    if (epoch == 0) return nullptr;
    const uint64_t me = metricsThreadSerial();
    if (epoch != epoch_ || me != thread_) {
      slot_ = lookup();
      epoch_ = epoch;
      thread_ = me;
    }
    return slot_;
  }

 private:
  MetricsSlot* slot_ = nullptr;
  uint64_t epoch_ = 0;
  uint64_t thread_ = 0;
};

class RingMetrics final : public RingWatch {
 public:
  RingMetrics(MetricsWriter& writer, MetricsSide side, std::string service)
      : writer_(writer), side_(side), service_(std::move(service)) {}
  void sampled(uint64_t usedBytes, uint32_t capacity, bool becameFull) noexcept override;

 private:
  MetricsWriter& writer_;
  MetricsSide side_;
  std::string service_;
  std::atomic<uint32_t> family_{0};
};

// A high-water mark in millionths of `of` (one writer).
inline void metricsHighWater(MetricsSlot* s, uint64_t value, uint64_t of) noexcept {
  if (!s || of == 0) return;
  const uint64_t ppm = std::min<uint64_t>(value, of) * 1'000'000 / of;
  if (ppm > loadRelaxed(s->maxNs)) storeRelaxed(s->maxNs, ppm);
}

// Counting one call in a slot (one writer: plain loads and relaxed stores).
inline void metricsStart(MetricsSlot* s) noexcept {
  if (s) bumpSingleWriter(s->started, uint64_t(1));
}
inline void metricsEnd(MetricsSlot* s, uint32_t code, uint64_t ns) noexcept {
  if (!s) return;
  bumpSingleWriter(s->byCode[code < kMetricsCodes ? code : 2], uint64_t(1));  // else UNKNOWN
  bumpSingleWriter(s->buckets[metricsBucket(ns)], uint64_t(1));
  bumpSingleWriter(s->sumNs, ns);
  if (ns > loadRelaxed(s->maxNs)) storeRelaxed(s->maxNs, ns);
}

}  // namespace hms::ffi::detail
