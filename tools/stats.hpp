// hms-ffi stats without a broker: from two metrics snapshots (hms/ffi/metrics.hpp) taken an
// interval apart, the rows of the table, the table and the JSON document. The command
// (stats_command.cpp) takes the snapshots; everything here is pure, so it is tested alone.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hms/ffi/metrics.hpp"

namespace hms::ffi::cli {

// One service method over one interval. Totals are since the broker started; rates and
// quantiles cover the interval only.
struct StatsRow {
  std::string service;
  std::string method;
  uint64_t callsTotal = 0;
  uint64_t errorsTotal = 0;   // calls that ended other than OK
  double callsPerSecond = 0;  // never negative: a series that went back counts from zero
  double errorsPerSecond = 0;
  uint64_t inFlight = 0;
  // Upper bounds (within a bucket, ~19%) of the callers' send-to-reply latency over the
  // interval; nothing when no call ended in it.
  std::optional<uint64_t> p50Ns;
  std::optional<uint64_t> p99Ns;
  std::optional<uint64_t> maxNs;           // the longest ever; nothing when no call ever ended
  std::array<uint64_t, 17> callsByCode{};  // totals, by StatusCode
  uint64_t handledTotal = 0;               // calls the service ran (its view)
  std::optional<uint64_t> handlerP50Ns;    // handler start to answer, over the interval
  std::optional<uint64_t> handlerP99Ns;
};

// The rows of the methods of `after` whose service starts with `prefix`, busiest first (calls/s,
// then total calls, descending; then service and method). A method missing from `before`
// started from zero; one whose calls went back (the broker restarted), or every one when the
// broker's start time changed, is rated from zero too. Rates are 0 when seconds <= 0.
std::vector<StatsRow> statsRows(const MetricsSnapshot& before, const MetricsSnapshot& after,
                                double seconds, std::string_view prefix);

// One topic over one interval: its messages summed over its publishers and subscribers (live
// and gone). Totals are since the broker started; rates cover the interval only.
struct TopicRow {
  std::string topic;
  uint64_t publishedTotal = 0;
  uint64_t deliveredTotal = 0;    // summed over the subscribers
  uint64_t droppedTotal = 0;      // messages subscribers missed
  uint64_t bytesTotal = 0;        // payload bytes published
  double publishedPerSecond = 0;  // never negative, like the rates of StatsRow
  double deliveredPerSecond = 0;
  double droppedPerSecond = 0;
  double bytesPerSecond = 0;
  double lagHighWater = 0;  // the furthest a subscriber fell behind, 0 to 1 of the log
};

// The rows of the topics of `after` whose id starts with `prefix`, busiest first (published/s,
// then published total, descending; then topic id). A topic missing from `before`, one whose
// counters went back, or every one when the broker's start time changed, is rated from zero.
// Rates are 0 when seconds <= 0.
std::vector<TopicRow> topicRows(const MetricsSnapshot& before, const MetricsSnapshot& after,
                                double seconds, std::string_view prefix);

// The interval between two snapshots in seconds: the broker's own timestamps when they agree
// with `measuredSeconds` (the caller's clock around the two requests) within a factor of two,
// else `measuredSeconds`.
double sampleSeconds(const MetricsSnapshot& before, const MetricsSnapshot& after,
                     double measuredSeconds);

// What one refresh of `hms-ffi stats` shows.
struct StatsSample {
  BrokerGauges gauges;
  int64_t takenUnixNs = 0;
  double intervalSeconds = 0;
  bool anyMethods = false;  // the broker has metrics of at least one method (prefix or not)
  bool anyTopics = false;   // the broker has metrics of at least one topic (prefix or not)
  std::vector<StatsRow> rows;
  std::vector<TopicRow> topics;
  // The rings of the services whose id starts with the prefix, the fullest first.
  std::vector<RingMetrics> rings;
};
StatsSample statsSample(const MetricsSnapshot& before, const MetricsSnapshot& after, double seconds,
                        std::string_view prefix);

// Three significant digits in the largest unit that keeps the number at least 1: "850ns",
// "12.3us", "4.56ms", "1.20s".
std::string formatDuration(uint64_t ns);

// A byte rate in decimal units with one decimal above bytes: "0B/s", "850B/s", "1.2kB/s",
// "45.6MB/s", "1.2GB/s".
std::string formatByteRate(double bytesPerSecond);

// The gauges line, then the methods table and the topics table (each when it has rows, a blank
// line between them), or a line saying there is nothing to show; each line ending in '\n'.
std::string renderStatsTable(const StatsSample& sample, std::string_view prefix);

// One JSON object (docs of `hms-ffi stats --help`), without a final newline.
std::string renderStatsJson(const StatsSample& sample, bool pretty);

}  // namespace hms::ffi::cli
