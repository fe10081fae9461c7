// hms-ffi stats without a broker: the rows, the table and the JSON it makes of two crafted
// metrics snapshots (tools/stats.hpp).
#include "stats.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "hms/ffi/status.hpp"

namespace hms::ffi::cli {
namespace {

constexpr size_t kOk = size_t(StatusCode::kOk);
constexpr size_t kUnavailable = size_t(StatusCode::kUnavailable);
constexpr size_t kDeadline = size_t(StatusCode::kDeadlineExceeded);

// Records `n` durations of `ns` in `h`, as the library would.
void record(LatencyHistogram& h, uint64_t ns, uint64_t n) {
  const uint16_t b = LatencyHistogram::bucketOf(ns);
  auto it =
      std::lower_bound(h.buckets.begin(), h.buckets.end(), b,
                       [](const auto& bucket, uint16_t index) { return bucket.first < index; });
  if (it != h.buckets.end() && it->first == b) {
    it->second += n;
  } else {
    h.buckets.insert(it, {b, n});
  }
  h.count += n;
  h.sumNs += ns * n;
  h.maxNs = std::max(h.maxNs, ns);
}

// A method whose callers saw `ok` calls end OK and `unavailable` end UNAVAILABLE, each taking
// `ns`; the service ran the OK ones in `handlerNs`.
MethodMetrics method(std::string service, std::string name, uint64_t ok, uint64_t unavailable = 0,
                     uint64_t ns = 1000, uint64_t handlerNs = 500) {
  MethodMetrics m;
  m.service = std::move(service);
  m.method = std::move(name);
  m.calls[kOk] = ok;
  m.calls[kUnavailable] = unavailable;
  if (ok + unavailable) record(m.callDuration, ns, ok + unavailable);
  m.handled[kOk] = ok;
  if (ok) record(m.handlerDuration, handlerNs, ok);
  return m;
}

MetricsSnapshot snapshot(std::vector<MethodMetrics> methods, int64_t takenUnixNs = 0) {
  MetricsSnapshot s;
  s.methods = std::move(methods);
  s.gauges.startedUnixMs = 1'700'000'000'000;
  s.takenUnixNs = takenUnixNs;
  return s;
}

// What quantileNs answers for durations all of `ns`: their bucket's upper bound, at most the
// longest call seen.
uint64_t upperBound(uint64_t ns, uint64_t maxNs) {
  return std::min(LatencyHistogram::bucketUpperNs(LatencyHistogram::bucketOf(ns)), maxNs);
}

TopicMetrics topic(std::string id, uint64_t published, uint64_t delivered = 0, uint64_t dropped = 0,
                   uint64_t bytes = 0) {
  TopicMetrics t;
  t.topic = std::move(id);
  t.published = published;
  t.delivered = delivered;
  t.dropped = dropped;
  t.publishedBytes = bytes;
  return t;
}

MetricsSnapshot withTopics(std::vector<TopicMetrics> topics,
                           std::vector<MethodMetrics> methods = {}) {
  auto s = snapshot(std::move(methods));
  s.topics = std::move(topics);
  return s;
}

const StatsRow* find(const std::vector<StatsRow>& rows, std::string_view method) {
  for (const auto& r : rows) {
    if (r.method == method) return &r;
  }
  return nullptr;
}

TEST(StatsRows, RatesAreTheDifferenceOverTheInterval) {
  const auto before = snapshot({method("hms.emr.patient", "getPatient", 100, 2)});
  const auto after = snapshot({method("hms.emr.patient", "getPatient", 300, 12)});
  const auto rows = statsRows(before, after, 2.0, "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].service, "hms.emr.patient");
  EXPECT_EQ(rows[0].method, "getPatient");
  EXPECT_DOUBLE_EQ(rows[0].callsPerSecond, 105.0);  // (312 - 102) / 2
  EXPECT_DOUBLE_EQ(rows[0].errorsPerSecond, 5.0);   // (12 - 2) / 2
  EXPECT_EQ(rows[0].callsTotal, 312u);
  EXPECT_EQ(rows[0].errorsTotal, 12u);
  EXPECT_EQ(rows[0].handledTotal, 300u);
  EXPECT_EQ(rows[0].callsByCode[kOk], 300u);
  EXPECT_EQ(rows[0].callsByCode[kUnavailable], 12u);
}

TEST(StatsRows, FractionalIntervalScalesTheRates) {
  const auto before = snapshot({method("s", "m", 10)});
  const auto after = snapshot({method("s", "m", 15)});
  EXPECT_DOUBLE_EQ(statsRows(before, after, 0.5, "")[0].callsPerSecond, 10.0);
}

TEST(StatsRows, QuantilesUseOnlyTheCallsOfTheInterval) {
  // A thousand slow calls (1 ms) before; ten fast ones (10 us) in the interval.
  auto early = method("s", "m", 1000, 0, 1'000'000, 800'000);
  auto late = early;
  record(late.callDuration, 10'000, 10);
  late.calls[kOk] += 10;
  record(late.handlerDuration, 2'000, 10);
  late.handled[kOk] += 10;
  const auto rows = statsRows(snapshot({early}), snapshot({late}), 1.0, "");
  ASSERT_EQ(rows.size(), 1u);
  const uint64_t fastUpper = LatencyHistogram::bucketUpperNs(LatencyHistogram::bucketOf(10'000));
  ASSERT_TRUE(rows[0].p50Ns && rows[0].p99Ns);
  EXPECT_EQ(*rows[0].p50Ns, fastUpper);
  EXPECT_EQ(*rows[0].p99Ns, fastUpper);
  EXPECT_GE(*rows[0].p99Ns, 10'000u);
  EXPECT_LT(*rows[0].p99Ns, 12'000u);  // an upper bound within ~19%
  const uint64_t handlerUpper = LatencyHistogram::bucketUpperNs(LatencyHistogram::bucketOf(2'000));
  ASSERT_TRUE(rows[0].handlerP50Ns && rows[0].handlerP99Ns);
  EXPECT_EQ(*rows[0].handlerP50Ns, handlerUpper);
  EXPECT_EQ(*rows[0].handlerP99Ns, handlerUpper);
  // The maximum is the longest ever, not of the interval.
  ASSERT_TRUE(rows[0].maxNs);
  EXPECT_EQ(*rows[0].maxNs, 1'000'000u);
}

TEST(StatsRows, QuantilesAreEmpty_WhenNoCallEndedInTheInterval) {
  const auto m = method("s", "m", 50, 0, 3'000);
  const auto rows = statsRows(snapshot({m}), snapshot({m}), 1.0, "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].callsPerSecond, 0.0);
  EXPECT_FALSE(rows[0].p50Ns);
  EXPECT_FALSE(rows[0].p99Ns);
  EXPECT_FALSE(rows[0].handlerP50Ns);
  EXPECT_FALSE(rows[0].handlerP99Ns);
  ASSERT_TRUE(rows[0].maxNs);
  EXPECT_EQ(*rows[0].maxNs, 3'000u);
}

TEST(StatsRows, SortsBusiestFirst_ThenByTotal_ThenByName) {
  const auto before = snapshot({method("a", "idle", 500), method("b", "quiet", 5),
                                method("c", "busy", 0), method("d", "z", 1), method("d", "a", 1)});
  const auto after =
      snapshot({method("a", "idle", 500), method("b", "quiet", 5), method("c", "busy", 100),
                method("d", "z", 11), method("d", "a", 11)});
  const auto rows = statsRows(before, after, 1.0, "");
  std::vector<std::string> order;
  for (const auto& r : rows) order.push_back(r.service + "/" + r.method);
  EXPECT_EQ(order, (std::vector<std::string>{"c/busy", "d/a", "d/z", "a/idle", "b/quiet"}));
}

TEST(StatsRows, PrefixKeepsOnlyMatchingServices) {
  const auto s = snapshot({method("hms.emr.patient", "get", 1), method("hms.emr.vitals", "read", 1),
                           method("hms.ach.batch", "run", 1)});
  const auto rows = statsRows(s, s, 1.0, "hms.emr.");
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& r : rows) EXPECT_EQ(r.service.rfind("hms.emr.", 0), 0u) << r.service;
  EXPECT_TRUE(statsRows(s, s, 1.0, "nothing").empty());
  EXPECT_EQ(statsRows(s, s, 1.0, "").size(), 3u);
}

TEST(StatsRows, MethodOnlyInTheLaterSnapshotCountsFromZero) {
  const auto before = snapshot({method("s", "old", 10)});
  const auto after = snapshot({method("s", "old", 10), method("s", "new", 6, 2, 50'000, 40'000)});
  const auto rows = statsRows(before, after, 2.0, "");
  const StatsRow* r = find(rows, "new");
  ASSERT_NE(r, nullptr);
  EXPECT_DOUBLE_EQ(r->callsPerSecond, 4.0);
  EXPECT_DOUBLE_EQ(r->errorsPerSecond, 1.0);
  ASSERT_TRUE(r->p50Ns);
  EXPECT_EQ(*r->p50Ns, upperBound(50'000, 50'000));
  EXPECT_EQ(rows.front().method, "new");  // the busiest
}

TEST(StatsRows, CounterThatWentBackIsNotANegativeRate) {
  // The broker restarted (same start time reported, as an older broker might): the counters
  // begin again below where they were.
  const auto before = snapshot({method("s", "m", 1000, 50, 1'000'000)});
  const auto after = snapshot({method("s", "m", 30, 4, 20'000)});
  const auto rows = statsRows(before, after, 1.0, "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].callsPerSecond, 34.0);
  EXPECT_DOUBLE_EQ(rows[0].errorsPerSecond, 4.0);
  ASSERT_TRUE(rows[0].p50Ns);
  EXPECT_EQ(*rows[0].p50Ns, upperBound(20'000, 20'000));
}

TEST(StatsRows, NewBrokerStartTimeCountsEverythingFromZero) {
  auto before = snapshot({method("s", "m", 10)});
  auto after = snapshot({method("s", "m", 25)});  // more calls, but in a new life of the broker
  after.gauges.startedUnixMs = before.gauges.startedUnixMs + 5'000;
  const auto rows = statsRows(before, after, 1.0, "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].callsPerSecond, 25.0);
}

TEST(StatsRows, NoRatesForANonPositiveInterval) {
  const auto rows =
      statsRows(snapshot({method("s", "m", 1)}), snapshot({method("s", "m", 9)}), 0.0, "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].callsPerSecond, 0.0);
}

TEST(StatsRows, InFlightComesFromTheLaterSnapshot) {
  auto before = snapshot({method("s", "m", 1)});
  auto after = snapshot({method("s", "m", 1)});
  before.methods[0].inFlight = 9;
  after.methods[0].inFlight = 3;
  EXPECT_EQ(statsRows(before, after, 1.0, "")[0].inFlight, 3u);
}

TEST(TopicRows, RatesAreTheDifferenceOverTheInterval) {
  const auto before = withTopics({topic("hms.emr.vitals", 100, 180, 4, 10'000)});
  const auto after = withTopics({topic("hms.emr.vitals", 300, 570, 10, 2'410'000)});
  const auto rows = topicRows(before, after, 2.0, "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].topic, "hms.emr.vitals");
  EXPECT_EQ(rows[0].publishedTotal, 300u);
  EXPECT_EQ(rows[0].deliveredTotal, 570u);
  EXPECT_EQ(rows[0].droppedTotal, 10u);
  EXPECT_EQ(rows[0].bytesTotal, 2'410'000u);
  EXPECT_DOUBLE_EQ(rows[0].publishedPerSecond, 100.0);    // (300 - 100) / 2
  EXPECT_DOUBLE_EQ(rows[0].deliveredPerSecond, 195.0);    // (570 - 180) / 2
  EXPECT_DOUBLE_EQ(rows[0].droppedPerSecond, 3.0);        // (10 - 4) / 2
  EXPECT_DOUBLE_EQ(rows[0].bytesPerSecond, 1'200'000.0);  // (2410000 - 10000) / 2
  EXPECT_DOUBLE_EQ(topicRows(before, after, 0.0, "")[0].publishedPerSecond, 0.0);
}

TEST(TopicRows, CounterThatWentBackIsNotANegativeRate) {
  // Only the drops went back: the whole topic is counted from zero.
  const auto before = withTopics({topic("t", 1000, 2000, 50, 100'000)});
  const auto after = withTopics({topic("t", 1010, 2020, 3, 101'000)});
  const auto rows = topicRows(before, after, 1.0, "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].publishedPerSecond, 1010.0);
  EXPECT_DOUBLE_EQ(rows[0].deliveredPerSecond, 2020.0);
  EXPECT_DOUBLE_EQ(rows[0].droppedPerSecond, 3.0);
  EXPECT_DOUBLE_EQ(rows[0].bytesPerSecond, 101'000.0);
}

TEST(TopicRows, NewBrokerStartTimeCountsEverythingFromZero) {
  auto before = withTopics({topic("t", 10, 10)});
  auto after = withTopics({topic("t", 25, 30)});
  after.gauges.startedUnixMs = before.gauges.startedUnixMs + 5'000;
  const auto rows = topicRows(before, after, 1.0, "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].publishedPerSecond, 25.0);
  EXPECT_DOUBLE_EQ(rows[0].deliveredPerSecond, 30.0);
}

TEST(TopicRows, TopicOnlyInTheLaterSnapshotCountsFromZero) {
  const auto before = withTopics({topic("old", 10, 10)});
  const auto after = withTopics({topic("new", 8, 16, 2, 800), topic("old", 10, 10)});
  const auto rows = topicRows(before, after, 2.0, "");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].topic, "new");  // the busiest
  EXPECT_DOUBLE_EQ(rows[0].publishedPerSecond, 4.0);
  EXPECT_DOUBLE_EQ(rows[0].deliveredPerSecond, 8.0);
  EXPECT_DOUBLE_EQ(rows[0].droppedPerSecond, 1.0);
  EXPECT_DOUBLE_EQ(rows[0].bytesPerSecond, 400.0);
  EXPECT_DOUBLE_EQ(rows[1].publishedPerSecond, 0.0);
}

TEST(TopicRows, SortsBusiestFirst_ThenByTotal_ThenById) {
  const auto before = withTopics({topic("a.idle", 500), topic("b.quiet", 5), topic("c.busy", 0),
                                  topic("d.z", 1), topic("d.a", 1)});
  const auto after = withTopics({topic("a.idle", 500), topic("b.quiet", 5), topic("c.busy", 100),
                                 topic("d.z", 11), topic("d.a", 11)});
  std::vector<std::string> order;
  for (const auto& r : topicRows(before, after, 1.0, "")) order.push_back(r.topic);
  EXPECT_EQ(order, (std::vector<std::string>{"c.busy", "d.a", "d.z", "a.idle", "b.quiet"}));
}

TEST(TopicRows, PrefixKeepsOnlyMatchingTopics) {
  const auto s = withTopics(
      {topic("hms.ach.events", 1), topic("hms.emr.alerts", 1), topic("hms.emr.vitals", 1)},
      {method("hms.emr.patient", "get", 1), method("hms.ach.batch", "run", 1)});
  const auto sample = statsSample(s, s, 1.0, "hms.emr.");
  ASSERT_EQ(sample.topics.size(), 2u);
  for (const auto& t : sample.topics) EXPECT_EQ(t.topic.rfind("hms.emr.", 0), 0u) << t.topic;
  ASSERT_EQ(sample.rows.size(), 1u);
  EXPECT_TRUE(sample.anyTopics);
  EXPECT_TRUE(topicRows(s, s, 1.0, "nothing").empty());
  EXPECT_EQ(topicRows(s, s, 1.0, "").size(), 3u);
}

TEST(FormatByteRate, DecimalUnitsWithOneDecimal) {
  EXPECT_EQ(formatByteRate(0), "0B/s");
  EXPECT_EQ(formatByteRate(-3), "0B/s");
  EXPECT_EQ(formatByteRate(850), "850B/s");
  EXPECT_EQ(formatByteRate(999.7), "1.0kB/s");  // not "1000B/s"
  EXPECT_EQ(formatByteRate(1'234), "1.2kB/s");
  EXPECT_EQ(formatByteRate(999'970), "1.0MB/s");  // not "1000.0kB/s"
  EXPECT_EQ(formatByteRate(1'200'000), "1.2MB/s");
  EXPECT_EQ(formatByteRate(45'600'000), "45.6MB/s");
  EXPECT_EQ(formatByteRate(3'400'000'000), "3.4GB/s");
}

TEST(SampleSeconds, UsesTheBrokersTimestamps_WhenTheyAgreeWithOurClock) {
  const auto before = snapshot({}, 1'000'000'000);
  const auto after = snapshot({}, 2'100'000'000);
  EXPECT_DOUBLE_EQ(sampleSeconds(before, after, 1.05), 1.1);
  // A clock step: ten seconds by the broker's wall clock, one by ours.
  const auto stepped = snapshot({}, 11'000'000'000);
  EXPECT_DOUBLE_EQ(sampleSeconds(before, stepped, 1.0), 1.0);
  // No timestamps.
  EXPECT_DOUBLE_EQ(sampleSeconds(snapshot({}), snapshot({}), 0.5), 0.5);
}

TEST(FormatDuration, ThreeSignificantDigitsInTheLargestUnit) {
  EXPECT_EQ(formatDuration(0), "0ns");
  EXPECT_EQ(formatDuration(850), "850ns");
  EXPECT_EQ(formatDuration(999), "999ns");
  EXPECT_EQ(formatDuration(1'000), "1.00us");
  EXPECT_EQ(formatDuration(12'345), "12.3us");
  EXPECT_EQ(formatDuration(123'456), "123us");
  EXPECT_EQ(formatDuration(999'700), "1.00ms");  // not "1000us"
  EXPECT_EQ(formatDuration(4'560'000), "4.56ms");
  EXPECT_EQ(formatDuration(45'600'000), "45.6ms");
  EXPECT_EQ(formatDuration(1'200'000'000), "1.20s");
  EXPECT_EQ(formatDuration(68'700'000'000), "68.7s");
  EXPECT_EQ(formatDuration(1'234'000'000'000), "1234s");
}

TEST(RenderStatsTable, SaysNoCallsYet_WhenTheBrokerHasNoMethods) {
  auto after = snapshot({});
  after.gauges.clients = 2;
  const auto text = renderStatsTable(statsSample(snapshot({}), after, 1.0, ""), "");
  EXPECT_NE(text.find("2 clients"), std::string::npos) << text;
  EXPECT_NE(text.find("no calls have been made yet"), std::string::npos) << text;
}

TEST(RenderStatsTable, SaysNoCallsToThePrefix_WhenNoServiceMatches) {
  const auto s = withTopics({topic("hms.ach.events", 3)}, {method("hms.ach.batch", "run", 1)});
  const auto text = renderStatsTable(statsSample(s, s, 1.0, "hms.emr."), "hms.emr.");
  EXPECT_NE(text.find("no calls to services or messages on topics starting with 'hms.emr.' yet"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("TOPIC"), std::string::npos) << text;
}

TEST(RenderStatsTable, HasGaugesHeaderAndARowPerMethod) {
  auto before = snapshot({method("hms.emr.patient", "getPatient", 100, 0, 4'560'000, 850)});
  auto after = snapshot({method("hms.emr.patient", "getPatient", 110, 0, 4'560'000, 850),
                         method("hms.emr.vitals", "read", 3)});
  after.gauges.clients = 3;
  after.gauges.channels = 4;
  after.gauges.services = 2;
  after.gauges.topics = 1;
  after.gauges.subscriptions = 5;
  after.methods[1].calls = {};
  after.methods[1].callDuration = {};
  after.methods[1].inFlight = 2;
  const auto text = renderStatsTable(statsSample(before, after, 1.0, ""), "");
  EXPECT_NE(text.find("3 clients, 4 channels, 2 services, 1 topics, 5 subscriptions"),
            std::string::npos)
      << text;
  for (const char* column : {"SERVICE", "METHOD", "CALLS/S", "ERRORS/S", "CALLS", "ERRORS", "P50",
                             "P99", "MAX", "IN FLIGHT", "HANDLER P50", "HANDLER P99"}) {
    EXPECT_NE(text.find(column), std::string::npos) << column << "\n" << text;
  }
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 4) << text;  // gauges, header, 2 rows
  const auto patient = text.find("getPatient");
  ASSERT_NE(patient, std::string::npos);
  const std::string row = text.substr(patient, text.find('\n', patient) - patient);
  EXPECT_NE(row.find("10.0"), std::string::npos) << row;
  EXPECT_NE(row.find("ms"), std::string::npos) << row;
  EXPECT_NE(row.find("850ns"), std::string::npos) << row;
  const auto vitals = text.find("read");
  ASSERT_NE(vitals, std::string::npos);
  const std::string idle = text.substr(vitals, text.find('\n', vitals) - vitals);
  EXPECT_NE(idle.find(" - "), std::string::npos) << idle;
  EXPECT_LT(patient, vitals);  // busiest first
}

TEST(RenderStatsTable, ShowsTopicsAfterTheMethods) {
  const auto before = withTopics({topic("hms.emr.vitals", 100, 200, 0, 0), topic("quiet", 7, 7)},
                                 {method("hms.emr.patient", "getPatient", 100)});
  const auto after =
      withTopics({topic("hms.emr.vitals", 150, 290, 10, 1'200'000), topic("quiet", 7, 7)},
                 {method("hms.emr.patient", "getPatient", 110)});
  const auto text = renderStatsTable(statsSample(before, after, 1.0, ""), "");
  for (const char* column :
       {"TOPIC", "MSGS/S", "DELIVERED/S", "DROPPED/S", "TOTAL", "DROPPED", "BYTES/S"}) {
    EXPECT_NE(text.find(column), std::string::npos) << column << "\n" << text;
  }
  // gauges, methods header and row, a blank line, topics header and 2 rows
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 7) << text;
  EXPECT_NE(text.find("\n\nTOPIC"), std::string::npos) << text;
  EXPECT_LT(text.find("getPatient"), text.find("TOPIC"));
  const auto vitals = text.find("hms.emr.vitals");
  ASSERT_NE(vitals, std::string::npos);
  const std::string row = text.substr(vitals, text.find('\n', vitals) - vitals);
  for (const char* cell : {" 50.0 ", " 90.0 ", " 10.0 ", " 150 ", " 10 ", " 1.2MB/s"}) {
    EXPECT_NE(row.find(cell), std::string::npos) << cell << " in\n" << row;
  }
  EXPECT_LT(vitals, text.find("quiet"));  // busiest first
  EXPECT_EQ(text.find("no calls"), std::string::npos) << text;
}

TEST(RenderStatsTable, ShowsTopics_WhenNoMethodWasCalled) {
  const auto before = withTopics({topic("hms.emr.vitals", 10)});
  const auto after = withTopics({topic("hms.emr.vitals", 15, 5, 0, 500)});
  const auto text = renderStatsTable(statsSample(before, after, 1.0, ""), "");
  EXPECT_EQ(text.find("no calls"), std::string::npos) << text;
  EXPECT_EQ(text.find("SERVICE"), std::string::npos) << text;
  EXPECT_NE(text.find("TOPIC"), std::string::npos) << text;
  EXPECT_NE(text.find("hms.emr.vitals"), std::string::npos) << text;
  EXPECT_NE(text.find("500B/s"), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3) << text;  // gauges, header, a row
  // The same with a prefix that matches the topic and no service.
  const auto prefixed = renderStatsTable(statsSample(before, after, 1.0, "hms.emr."), "hms.emr.");
  EXPECT_EQ(prefixed.find("no calls"), std::string::npos) << prefixed;
  EXPECT_NE(prefixed.find("hms.emr.vitals"), std::string::npos) << prefixed;
}

TEST(RenderStatsJson, HasTheFieldsAndNumbers) {
  auto before = snapshot({method("hms.emr.patient", "getPatient", 100, 2, 20'000, 5'000),
                          method("hms.emr.vitals", "read", 7)},
                         1'000'000'000);
  auto after = snapshot({method("hms.emr.patient", "getPatient", 300, 12, 20'000, 5'000),
                         method("hms.emr.vitals", "read", 7)},
                        3'000'000'000);
  after.methods[0].calls[kDeadline] = 1;
  after.methods[0].inFlight = 4;
  after.gauges.clients = 3;
  after.gauges.channels = 4;
  after.gauges.services = 2;
  after.gauges.topics = 1;
  after.gauges.subscriptions = 5;
  after.gauges.registryGeneration = 17;
  after.gauges.connectionsTotal = 40;
  after.gauges.reconnectsTotal = 6;
  after.gauges.metricsSlotsRefused = 1;
  const auto json = renderStatsJson(statsSample(before, after, 2.0, ""), false);
  const uint64_t p = upperBound(20'000, 20'000);
  const uint64_t hp = upperBound(5'000, 5'000);
  for (const std::string& expected : {
           std::string("{\"taken_unix_ns\":3000000000,\"interval_seconds\":2,"),
           std::string("\"gauges\":{\"clients\":3,\"channels\":4,\"services\":2,\"topics\":1,"
                       "\"subscriptions\":5,\"registry_generation\":17,\"connections_total\":40,"
                       "\"reconnects_total\":6,\"metrics_series_refused_total\":1}"),
           std::string("{\"service\":\"hms.emr.patient\",\"method\":\"getPatient\","
                       "\"calls_total\":313,\"errors_total\":13,\"calls_per_second\":105.5,"
                       "\"errors_per_second\":5.5,\"in_flight\":4,\"p50_ns\":") +
               std::to_string(p) + ",\"p99_ns\":" + std::to_string(p) +
               ",\"max_ns\":20000,\"calls_by_code\":{\"OK\":300,\"DEADLINE_EXCEEDED\":1,"
               "\"UNAVAILABLE\":12},\"handled_total\":300,\"handler_p50_ns\":" +
               std::to_string(hp) + ",\"handler_p99_ns\":" + std::to_string(hp) + "}",
           std::string("{\"service\":\"hms.emr.vitals\",\"method\":\"read\",\"calls_total\":7,"
                       "\"errors_total\":0,\"calls_per_second\":0,\"errors_per_second\":0,"
                       "\"in_flight\":0,\"p50_ns\":null,\"p99_ns\":null,\"max_ns\":1000,"
                       "\"calls_by_code\":{\"OK\":7},\"handled_total\":7,"
                       "\"handler_p50_ns\":null,\"handler_p99_ns\":null}"),
       }) {
    EXPECT_NE(json.find(expected), std::string::npos) << expected << "\nin\n" << json;
  }
  EXPECT_EQ(json.find('\n'), std::string::npos);  // one line when not pretty
  EXPECT_LT(json.find("getPatient"), json.find("read"));
}

TEST(RenderStatsJson, EmptyMethodsArray_WhenNoCallsYet) {
  const auto json = renderStatsJson(statsSample(snapshot({}), snapshot({}), 1.0, ""), false);
  EXPECT_NE(json.find("\"methods\":[]"), std::string::npos) << json;
  EXPECT_NE(json.find("\"topics\":[]"), std::string::npos) << json;
}

TEST(RenderStatsJson, HasTheTopicFields) {
  const auto before = withTopics({topic("hms.emr.vitals", 100, 200, 1, 10'000), topic("quiet", 3)});
  const auto after = withTopics({topic("hms.emr.vitals", 105, 209, 2, 12'500), topic("quiet", 3)});
  const auto json = renderStatsJson(statsSample(before, after, 2.0, ""), false);
  for (const std::string expected : {
           "\"methods\":[],\"topics\":[{\"topic\":\"hms.emr.vitals\",\"published_total\":105,"
           "\"delivered_total\":209,\"dropped_total\":2,\"bytes_total\":12500,"
           "\"published_per_second\":2.5,\"delivered_per_second\":4.5,"
           "\"dropped_per_second\":0.5,\"bytes_per_second\":1250,\"lag_high_water\":0}",
           "{\"topic\":\"quiet\",\"published_total\":3,\"delivered_total\":0,"
           "\"dropped_total\":0,\"bytes_total\":0,\"published_per_second\":0,"
           "\"delivered_per_second\":0,\"dropped_per_second\":0,\"bytes_per_second\":0,"
           "\"lag_high_water\":0}],\"rings\":[]}",
       }) {
    EXPECT_NE(json.find(expected), std::string::npos) << expected << "\nin\n" << json;
  }
}

MetricsSnapshot withRings(std::vector<RingMetrics> rings) {
  auto s = snapshot({});
  s.rings = std::move(rings);
  return s;
}

TEST(StatsSample, RingsOfThePrefix_TheFullestFirst) {
  const auto s = withRings({{"hms.ach.transaction", 0.02, 0, 0.0, 0},
                            {"hms.emr.patient", 0.25, 0, 1.0, 3},
                            {"other", 0.9, 1, 0, 0}});
  const auto sample = statsSample(s, s, 1.0, "hms.");
  ASSERT_EQ(sample.rings.size(), 2u);
  EXPECT_EQ(sample.rings[0].service, "hms.emr.patient");
  EXPECT_EQ(sample.rings[1].service, "hms.ach.transaction");
  const auto text = renderStatsTable(sample, "hms.");
  for (const char* column : {"SERVICE RINGS", "REQUEST FILL MAX", "REQUEST FULL",
                             "RESPONSE FILL MAX", "RESPONSE FULL"}) {
    EXPECT_NE(text.find(column), std::string::npos) << column << "\n" << text;
  }
  const auto emr = text.find("hms.emr.patient");
  ASSERT_NE(emr, std::string::npos) << text;
  const std::string row = text.substr(emr, text.find('\n', emr) - emr);
  EXPECT_NE(row.find("25%"), std::string::npos) << row;
  EXPECT_NE(row.find("100%"), std::string::npos) << row;
  EXPECT_EQ(text.find("other"), std::string::npos) << text;
  const auto json = renderStatsJson(sample, false);
  EXPECT_NE(json.find("\"rings\":[{\"service\":\"hms.emr.patient\",\"request_high_water\":0.25,"
                      "\"request_full_total\":0,\"response_high_water\":1,"
                      "\"response_full_total\":3}"),
            std::string::npos)
      << json;
}

TEST(RenderStatsJson, PrettyIsIndented) {
  const auto s = snapshot({method("s", "m", 1)});
  const auto json = renderStatsJson(statsSample(s, s, 1.0, ""), true);
  EXPECT_NE(json.find("\n  \"gauges\": {"), std::string::npos) << json;
}

}  // namespace
}  // namespace hms::ffi::cli
