// The broker's side of the call metrics (docs/observability.md): the metrics segment of every
// live client, read-only, and the totals of the clients gone. Thread-safe: the control loop adds
// and retires segments and sets the gauges; the metrics endpoint and getMetrics take snapshots.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "hms/ffi/metrics.hpp"
#include "metrics_layout.hpp"
#include "os.hpp"

namespace hms::ffi::broker {

class MetricsBook {
 public:
  // A fresh segment for client `connId`: the fd to hand over (writable by the client) and the
  // broker's own read-only mapping kept here.
  Result<detail::UniqueFd> create(uint64_t connId);
  // The client is gone: its slots' final values join the totals, its mapping goes.
  void retire(uint64_t connId);
  void setGauges(const BrokerGauges& g);
  MetricsSnapshot snapshot() const;

 private:
  struct Series {
    std::array<uint64_t, detail::kMetricsCodes> byCode{};
    // Of live clients: calls begun and ended, summed over slots (an asynchronous call begins in
    // one thread's slot and ends in another's); inFlight is their difference after the merge.
    uint64_t liveStarted = 0;
    uint64_t liveEnded = 0;
    std::array<uint64_t, detail::kMetricsBuckets> buckets{};
    uint64_t sumNs = 0;
    uint64_t maxNs = 0;
  };
  struct Totals {
    Series caller;
    Series service;
  };
  struct TopicTotals {
    uint64_t published = 0, publishedBytes = 0, delivered = 0, dropped = 0;
    uint64_t lagPpm = 0;  // high-water, millionths of the log
  };
  struct RingTotals {
    uint64_t requestPpm = 0, requestFull = 0, responsePpm = 0, responseFull = 0;
  };
  struct Merged {
    std::map<std::pair<std::string, std::string>, Totals> methods;
    std::map<std::string, TopicTotals> topics;
    std::map<std::string, RingTotals> rings;
  };
  using Key = std::pair<std::string, std::string>;  // service, method
  // Adds the published, well-formed slots of one segment; `live` counts calls in flight.
  static void addSegment(const detail::Mapping& m, bool live, Merged& into, uint64_t& refused);

  mutable std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<detail::Mapping>> live_;
  Merged retired_;
  uint64_t retiredRefused_ = 0;
  BrokerGauges gauges_;
};

}  // namespace hms::ffi::broker
