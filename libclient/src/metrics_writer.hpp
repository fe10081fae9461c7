// The client's side of the call metrics (docs/observability.md): it writes the metrics segment
// the broker gave it at hello (metrics_layout.hpp). Each thread gets a slot of its own per
// series (side, service, method), so that every update is a plain load and a relaxed store.
#pragma once

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

namespace hms::ffi::detail {

class MetricsWriter {
 public:
  // A segment from the broker (each hello brings a new one: the broker added what the earlier
  // one counted to its totals when that connection ended). A segment that is not one is
  // refused and nothing is counted.
  Status attach(UniqueFd fd, uint64_t bytes);
  bool enabled() const noexcept { return epoch_.load(std::memory_order_relaxed) != 0; }

  // The series of (side, service, method), cached in `cell` (0: not yet known).
  uint32_t family(std::atomic<uint32_t>& cell, MetricsSide side, const std::string& service,
                  std::string_view method);
  // The calling thread's slot of a series: null when there is no segment, or it is full.
  MetricsSlot* slot(uint32_t family);

 private:
  MetricsSlot* newSlot(uint32_t family);

  std::mutex mu_;
  std::vector<std::shared_ptr<Mapping>> maps_;  // the current one last; earlier ones stay mapped
  std::atomic<uint64_t> epoch_{0};              // unique in the process for each attach
  MetricsHeader* header_ = nullptr;
  uint32_t next_ = 0;
  std::vector<std::tuple<MetricsSide, std::string, std::string>> families_;
  std::map<std::tuple<MetricsSide, std::string, std::string>, uint32_t> index_;
};

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
