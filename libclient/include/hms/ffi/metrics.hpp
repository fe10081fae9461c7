// Call metrics as the broker merges them (docs/observability.md): per service and method, the
// calls their callers made and the calls their services ran, with latency histograms. What
// Client::metrics() returns, `hms-ffi stats` shows and hms-ffid's metrics endpoint serves.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace hms::ffi {

// Log-linear buckets, four per power of two from 1 ns to about 68.7 s; only the buckets not
// empty are kept, as (index, count) in increasing index.
struct LatencyHistogram {
  static constexpr uint16_t kBuckets = 144;
  std::vector<std::pair<uint16_t, uint64_t>> buckets;
  uint64_t count = 0;
  uint64_t sumNs = 0;
  uint64_t maxNs = 0;  // the longest ever seen (not reduced by minus())

  // The exclusive upper bound of a bucket in nanoseconds; UINT64_MAX for the last.
  static uint64_t bucketUpperNs(uint16_t index) noexcept;
  // The bucket a duration falls in.
  static uint16_t bucketOf(uint64_t ns) noexcept;
  // An upper bound of the q-quantile (0 < q <= 1): the upper bound of the bucket that holds it,
  // at most maxNs; 0 when empty.
  uint64_t quantileNs(double q) const noexcept;
  // What was added since `earlier` (a snapshot of the same series taken before this one).
  LatencyHistogram minus(const LatencyHistogram& earlier) const;
};

struct MethodMetrics {
  std::string service;
  std::string method;
  std::array<uint64_t, 17> calls{};    // ended, as callers saw them, by StatusCode
  uint64_t inFlight = 0;               // begun by live callers, not ended
  LatencyHistogram callDuration;       // as callers saw them
  std::array<uint64_t, 17> handled{};  // run by the service, by the code it answered
  LatencyHistogram handlerDuration;    // handler start to answer

  uint64_t callsTotal() const noexcept;
  uint64_t errorsTotal() const noexcept;  // calls that ended other than OK
};

// A topic's messages, summed over its publishers and subscribers (live and gone).
struct TopicMetrics {
  std::string topic;
  uint64_t published = 0;       // messages published
  uint64_t publishedBytes = 0;  // their payload bytes
  uint64_t delivered = 0;       // messages delivered, summed over the subscribers
  uint64_t dropped = 0;         // messages subscribers missed (drop_oldest, fell behind)
  // The furthest any subscriber mapping the log fell behind, as a fraction of the log's slots
  // (1: the log was full of messages it had not read; under drop_oldest the next was lost).
  double lagHighWater = 0;
};

// How full a service's rings got (shared memory only; channels over the socket fallback have
// none), as their producers saw them. The high-water marks are sampled whenever a producer
// re-reads its consumer's position, which it does the more often the fuller the ring: exact once
// a ring has been full. Full counts are episodes: a producer that found the ring full, waited
// (or gave up) and then found room counts once.
struct RingMetrics {
  std::string service;
  double requestHighWater = 0;  // the fullest any caller's request ring was, 0 to 1
  uint64_t requestFull = 0;     // times a caller found its request ring full
  double responseHighWater = 0;
  uint64_t responseFull = 0;  // times the service found a response ring full
};

struct BrokerGauges {
  uint32_t clients = 0;
  uint32_t channels = 0;
  uint32_t services = 0;
  uint32_t topics = 0;
  uint32_t subscriptions = 0;
  uint64_t registryGeneration = 0;
  uint64_t connectionsTotal = 0;
  uint64_t reconnectsTotal = 0;
  uint64_t metricsSlotsRefused = 0;
  int64_t startedUnixMs = 0;
};

struct MetricsSnapshot {
  std::vector<MethodMetrics> methods;  // sorted by service, then method
  std::vector<TopicMetrics> topics;    // sorted by topic id
  std::vector<RingMetrics> rings;      // sorted by service
  BrokerGauges gauges;
  int64_t takenUnixNs = 0;
};

}  // namespace hms::ffi
