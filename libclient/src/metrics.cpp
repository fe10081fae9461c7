#include "hms/ffi/metrics.hpp"

#include <algorithm>
#include <cmath>

#include "metrics_layout.hpp"

namespace hms::ffi {

static_assert(LatencyHistogram::kBuckets == detail::kMetricsBuckets);

uint64_t LatencyHistogram::bucketUpperNs(uint16_t index) noexcept {
  return detail::metricsBucketUpperNs(index);
}

uint16_t LatencyHistogram::bucketOf(uint64_t ns) noexcept {
  return uint16_t(detail::metricsBucket(ns));
}

uint64_t LatencyHistogram::quantileNs(double q) const noexcept {
  uint64_t total = 0;
  for (const auto& b : buckets) total += b.second;
  if (total == 0) return 0;
  const uint64_t rank = std::max<uint64_t>(1, uint64_t(std::ceil(q * double(total))));
  uint64_t seen = 0;
  for (const auto& [index, n] : buckets) {
    seen += n;
    if (seen >= rank) {
      const uint64_t upper = bucketUpperNs(index);
      return maxNs ? std::min(upper, maxNs) : upper;
    }
  }
  return maxNs;
}

LatencyHistogram LatencyHistogram::minus(const LatencyHistogram& earlier) const {
  LatencyHistogram out;
  out.count = count >= earlier.count ? count - earlier.count : count;
  out.sumNs = sumNs >= earlier.sumNs ? sumNs - earlier.sumNs : sumNs;
  out.maxNs = maxNs;
  size_t j = 0;
  for (const auto& [index, n] : buckets) {
    while (j < earlier.buckets.size() && earlier.buckets[j].first < index) ++j;
    uint64_t before = 0;
    if (j < earlier.buckets.size() && earlier.buckets[j].first == index)
      before = earlier.buckets[j].second;
    // A series that went backwards (a broker restart) counts from zero again.
    const uint64_t d = n >= before ? n - before : n;
    if (d) out.buckets.emplace_back(index, d);
  }
  return out;
}

uint64_t MethodMetrics::callsTotal() const noexcept {
  uint64_t n = 0;
  for (auto c : calls) n += c;
  return n;
}

uint64_t MethodMetrics::errorsTotal() const noexcept {
  return callsTotal() - calls[0];
}

}  // namespace hms::ffi
