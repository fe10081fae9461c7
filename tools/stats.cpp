#include "stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <tuple>
#include <utility>

#include "hms/ffi/status.hpp"
#include "json_writer.hpp"

namespace hms::ffi::cli {

namespace {

uint64_t sum(const std::array<uint64_t, 17>& counts) {
  uint64_t n = 0;
  for (uint64_t c : counts) n += c;
  return n;
}

// What a counter gained since `before`; a counter that went back started again from zero.
uint64_t gained(uint64_t after, uint64_t before) {
  return after >= before ? after - before : after;
}

std::optional<uint64_t> quantile(const LatencyHistogram& interval, double q) {
  if (interval.buckets.empty()) return std::nullopt;
  return interval.quantileNs(q);
}

// A rate for the table: one decimal.
std::string formatRate(double perSecond) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", perSecond);
  return buf;
}

// A JSON number with at most three decimals and no trailing zeros ("12.5", "3").
std::string jsonNumber(double v) {
  if (!std::isfinite(v)) return "0";
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.3f", v);
  std::string s = buf;
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

// A fraction as a whole percentage ("37%"); "<1%" for a little above zero.
std::string formatPercent(double fraction) {
  if (fraction > 0 && fraction < 0.01) return "<1%";
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%.0f%%", std::clamp(fraction, 0.0, 1.0) * 100);
  return buf;
}

std::string durationOrDash(const std::optional<uint64_t>& ns) {
  return ns ? formatDuration(*ns) : std::string("-");
}

// The rows of `cells` (the header first) as aligned columns: the first `names` to the left,
// the rest (numbers) to the right.
void appendTable(std::string& out, const std::vector<std::vector<std::string>>& cells,
                 size_t names) {
  std::vector<size_t> widths(cells.front().size(), 0);
  for (const auto& row : cells) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  for (const auto& row : cells) {
    std::string text;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) text += "  ";
      const std::string pad(widths[c] - row[c].size(), ' ');
      if (c < names) {
        text += row[c];
        if (c + 1 < row.size()) text += pad;
      } else {
        text += pad;
        text += row[c];
      }
    }
    out += text;
    out += '\n';
  }
}

void optionalNs(JsonWriter& w, std::string_view key, const std::optional<uint64_t>& ns) {
  w.key(key);
  if (ns) {
    w.value(*ns);
  } else {
    w.null();
  }
}

}  // namespace

std::vector<StatsRow> statsRows(const MetricsSnapshot& before, const MetricsSnapshot& after,
                                double seconds, std::string_view prefix) {
  // A broker that started again between the snapshots counts everything from zero.
  const bool restarted = before.gauges.startedUnixMs != 0 && after.gauges.startedUnixMs != 0 &&
                         before.gauges.startedUnixMs != after.gauges.startedUnixMs;
  std::map<std::pair<std::string_view, std::string_view>, const MethodMetrics*> earlier;
  if (!restarted) {
    for (const auto& m : before.methods) earlier[{m.service, m.method}] = &m;
  }
  const MethodMetrics none;
  const double perSecond = seconds > 0 ? 1.0 / seconds : 0.0;

  std::vector<StatsRow> rows;
  for (const auto& m : after.methods) {
    if (!std::string_view(m.service).starts_with(prefix)) continue;
    const auto it = earlier.find({m.service, m.method});
    const MethodMetrics* b = it == earlier.end() ? &none : it->second;
    // A series that went back belongs to a new life of the broker: all of it is new.
    if (m.callsTotal() < b->callsTotal() || m.callDuration.count < b->callDuration.count ||
        sum(m.handled) < sum(b->handled) || m.handlerDuration.count < b->handlerDuration.count) {
      b = &none;
    }
    StatsRow r;
    r.service = m.service;
    r.method = m.method;
    r.callsTotal = m.callsTotal();
    r.errorsTotal = m.errorsTotal();
    r.callsPerSecond = double(gained(r.callsTotal, b->callsTotal())) * perSecond;
    r.errorsPerSecond = double(gained(r.errorsTotal, b->errorsTotal())) * perSecond;
    r.inFlight = m.inFlight;
    const LatencyHistogram calls = m.callDuration.minus(b->callDuration);
    r.p50Ns = quantile(calls, 0.5);
    r.p99Ns = quantile(calls, 0.99);
    if (m.callDuration.maxNs != 0) r.maxNs = m.callDuration.maxNs;
    r.callsByCode = m.calls;
    r.handledTotal = sum(m.handled);
    const LatencyHistogram handler = m.handlerDuration.minus(b->handlerDuration);
    r.handlerP50Ns = quantile(handler, 0.5);
    r.handlerP99Ns = quantile(handler, 0.99);
    rows.push_back(std::move(r));
  }
  std::sort(rows.begin(), rows.end(), [](const StatsRow& x, const StatsRow& y) {
    if (x.callsPerSecond != y.callsPerSecond) return x.callsPerSecond > y.callsPerSecond;
    if (x.callsTotal != y.callsTotal) return x.callsTotal > y.callsTotal;
    return std::tie(x.service, x.method) < std::tie(y.service, y.method);
  });
  return rows;
}

std::vector<TopicRow> topicRows(const MetricsSnapshot& before, const MetricsSnapshot& after,
                                double seconds, std::string_view prefix) {
  const bool restarted = before.gauges.startedUnixMs != 0 && after.gauges.startedUnixMs != 0 &&
                         before.gauges.startedUnixMs != after.gauges.startedUnixMs;
  std::map<std::string_view, const TopicMetrics*> earlier;
  if (!restarted) {
    for (const auto& t : before.topics) earlier[t.topic] = &t;
  }
  const TopicMetrics none;
  const double perSecond = seconds > 0 ? 1.0 / seconds : 0.0;

  std::vector<TopicRow> rows;
  for (const auto& t : after.topics) {
    if (!std::string_view(t.topic).starts_with(prefix)) continue;
    const auto it = earlier.find(t.topic);
    const TopicMetrics* b = it == earlier.end() ? &none : it->second;
    // A counter that went back belongs to a new life of the broker: all of it is new.
    if (t.published < b->published || t.publishedBytes < b->publishedBytes ||
        t.delivered < b->delivered || t.dropped < b->dropped) {
      b = &none;
    }
    TopicRow r;
    r.topic = t.topic;
    r.publishedTotal = t.published;
    r.deliveredTotal = t.delivered;
    r.droppedTotal = t.dropped;
    r.bytesTotal = t.publishedBytes;
    r.publishedPerSecond = double(gained(t.published, b->published)) * perSecond;
    r.deliveredPerSecond = double(gained(t.delivered, b->delivered)) * perSecond;
    r.droppedPerSecond = double(gained(t.dropped, b->dropped)) * perSecond;
    r.bytesPerSecond = double(gained(t.publishedBytes, b->publishedBytes)) * perSecond;
    r.lagHighWater = t.lagHighWater;
    rows.push_back(std::move(r));
  }
  std::sort(rows.begin(), rows.end(), [](const TopicRow& x, const TopicRow& y) {
    if (x.publishedPerSecond != y.publishedPerSecond) {
      return x.publishedPerSecond > y.publishedPerSecond;
    }
    if (x.publishedTotal != y.publishedTotal) return x.publishedTotal > y.publishedTotal;
    return x.topic < y.topic;
  });
  return rows;
}

double sampleSeconds(const MetricsSnapshot& before, const MetricsSnapshot& after,
                     double measuredSeconds) {
  if (before.takenUnixNs > 0 && after.takenUnixNs > before.takenUnixNs) {
    const double broker = double(after.takenUnixNs - before.takenUnixNs) / 1e9;
    // A clock step between the two would make the broker's interval wrong: trust ours then.
    if (measuredSeconds <= 0 || (broker > measuredSeconds / 2 && broker < measuredSeconds * 2)) {
      return broker;
    }
  }
  return measuredSeconds;
}

StatsSample statsSample(const MetricsSnapshot& before, const MetricsSnapshot& after, double seconds,
                        std::string_view prefix) {
  StatsSample s;
  s.gauges = after.gauges;
  s.takenUnixNs = after.takenUnixNs;
  s.intervalSeconds = seconds;
  s.anyMethods = !after.methods.empty();
  s.anyTopics = !after.topics.empty();
  s.rows = statsRows(before, after, seconds, prefix);
  s.topics = topicRows(before, after, seconds, prefix);
  for (const auto& r : after.rings) {
    if (std::string_view(r.service).starts_with(prefix)) s.rings.push_back(r);
  }
  std::stable_sort(s.rings.begin(), s.rings.end(), [](const RingMetrics& x, const RingMetrics& y) {
    return std::max(x.requestHighWater, x.responseHighWater) >
           std::max(y.requestHighWater, y.responseHighWater);
  });
  return s;
}

std::string formatDuration(uint64_t ns) {
  std::string out;
  if (ns < 1000) {
    out = std::to_string(ns);
    out += "ns";
    return out;
  }
  static constexpr struct {
    double divisor;
    const char* unit;
  } kUnits[] = {{1e3, "us"}, {1e6, "ms"}, {1e9, "s"}};
  char buf[48] = "";
  for (size_t i = 0; i < std::size(kUnits); ++i) {
    const double v = double(ns) / kUnits[i].divisor;
    // 999.7us would print as "1000us": it is "1.00ms".
    if (i + 1 < std::size(kUnits) && v >= 999.5) continue;
    const int decimals = v < 9.995 ? 2 : v < 99.95 ? 1 : 0;
    std::snprintf(buf, sizeof(buf), "%.*f%s", decimals, v, kUnits[i].unit);
    break;
  }
  out = buf;
  return out;
}

std::string formatByteRate(double bytesPerSecond) {
  double v = std::isfinite(bytesPerSecond) && bytesPerSecond > 0 ? bytesPerSecond : 0.0;
  static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  char buf[64] = "";
  for (size_t i = 0; i < std::size(kUnits); ++i) {
    const bool last = i + 1 == std::size(kUnits);
    // 999.97kB/s would print as "1000.0kB/s": it is "1.0MB/s".
    if (!last && v >= (i == 0 ? 999.5 : 999.95)) {
      v /= 1000;
      continue;
    }
    std::snprintf(buf, sizeof(buf), "%.*f%s/s", i == 0 ? 0 : 1, v, kUnits[i]);
    break;
  }
  return buf;
}

std::string renderStatsTable(const StatsSample& sample, std::string_view prefix) {
  const BrokerGauges& g = sample.gauges;
  char line[256];
  std::snprintf(line, sizeof(line),
                "hms-ffid: %u clients, %u channels, %u services, %u topics, %u subscriptions"
                "; rates over the last %.2fs\n",
                g.clients, g.channels, g.services, g.topics, g.subscriptions,
                sample.intervalSeconds);
  std::string out = line;
  if (sample.rows.empty() && sample.topics.empty() && sample.rings.empty()) {
    if ((!sample.anyMethods && !sample.anyTopics) || prefix.empty()) {
      out += "no calls have been made yet\n";
    } else {
      out += "no calls to services or messages on topics starting with '";
      out += prefix;
      out += "' yet\n";
    }
    return out;
  }

  if (!sample.rows.empty()) {
    std::vector<std::vector<std::string>> cells;
    cells.push_back({"SERVICE", "METHOD", "CALLS/S", "ERRORS/S", "CALLS", "ERRORS", "P50", "P99",
                     "MAX", "IN FLIGHT", "HANDLER P50", "HANDLER P99"});
    for (const auto& r : sample.rows) {
      cells.push_back({r.service, r.method, formatRate(r.callsPerSecond),
                       formatRate(r.errorsPerSecond), std::to_string(r.callsTotal),
                       std::to_string(r.errorsTotal), durationOrDash(r.p50Ns),
                       durationOrDash(r.p99Ns), durationOrDash(r.maxNs), std::to_string(r.inFlight),
                       durationOrDash(r.handlerP50Ns), durationOrDash(r.handlerP99Ns)});
    }
    appendTable(out, cells, 2);
  }
  if (!sample.topics.empty()) {
    if (!sample.rows.empty()) out += '\n';
    std::vector<std::vector<std::string>> cells;
    cells.push_back(
        {"TOPIC", "MSGS/S", "DELIVERED/S", "DROPPED/S", "TOTAL", "DROPPED", "BYTES/S", "LAG MAX"});
    for (const auto& t : sample.topics) {
      cells.push_back({t.topic, formatRate(t.publishedPerSecond), formatRate(t.deliveredPerSecond),
                       formatRate(t.droppedPerSecond), std::to_string(t.publishedTotal),
                       std::to_string(t.droppedTotal), formatByteRate(t.bytesPerSecond),
                       formatPercent(t.lagHighWater)});
    }
    appendTable(out, cells, 1);
  }
  if (!sample.rings.empty()) {
    if (!sample.rows.empty() || !sample.topics.empty()) out += '\n';
    std::vector<std::vector<std::string>> cells;
    cells.push_back({"SERVICE RINGS", "REQUEST FILL MAX", "REQUEST FULL", "RESPONSE FILL MAX",
                     "RESPONSE FULL"});
    for (const auto& r : sample.rings) {
      cells.push_back({r.service, formatPercent(r.requestHighWater), std::to_string(r.requestFull),
                       formatPercent(r.responseHighWater), std::to_string(r.responseFull)});
    }
    appendTable(out, cells, 1);
  }
  return out;
}

std::string renderStatsJson(const StatsSample& sample, bool pretty) {
  const BrokerGauges& g = sample.gauges;
  JsonWriter w(pretty);
  w.beginObject();
  w.key("taken_unix_ns").value(int64_t(sample.takenUnixNs));
  w.key("interval_seconds").raw(jsonNumber(sample.intervalSeconds));
  w.key("gauges").beginObject();
  w.key("clients").value(unsigned(g.clients)).key("channels").value(unsigned(g.channels));
  w.key("services").value(unsigned(g.services)).key("topics").value(unsigned(g.topics));
  w.key("subscriptions").value(unsigned(g.subscriptions));
  w.key("registry_generation").value(uint64_t(g.registryGeneration));
  w.key("connections_total").value(uint64_t(g.connectionsTotal));
  w.key("reconnects_total").value(uint64_t(g.reconnectsTotal));
  w.key("metrics_series_refused_total").value(uint64_t(g.metricsSlotsRefused));
  w.endObject();
  w.key("methods").beginArray();
  for (const auto& r : sample.rows) {
    w.beginObject();
    w.key("service").value(r.service).key("method").value(r.method);
    w.key("calls_total").value(uint64_t(r.callsTotal));
    w.key("errors_total").value(uint64_t(r.errorsTotal));
    w.key("calls_per_second").raw(jsonNumber(r.callsPerSecond));
    w.key("errors_per_second").raw(jsonNumber(r.errorsPerSecond));
    w.key("in_flight").value(uint64_t(r.inFlight));
    optionalNs(w, "p50_ns", r.p50Ns);
    optionalNs(w, "p99_ns", r.p99Ns);
    optionalNs(w, "max_ns", r.maxNs);
    w.key("calls_by_code").beginObject();
    for (size_t code = 0; code < r.callsByCode.size(); ++code) {
      if (r.callsByCode[code] == 0) continue;
      w.key(statusCodeName(StatusCode(code))).value(uint64_t(r.callsByCode[code]));
    }
    w.endObject();
    w.key("handled_total").value(uint64_t(r.handledTotal));
    optionalNs(w, "handler_p50_ns", r.handlerP50Ns);
    optionalNs(w, "handler_p99_ns", r.handlerP99Ns);
    w.endObject();
  }
  w.endArray();
  w.key("topics").beginArray();
  for (const auto& t : sample.topics) {
    w.beginObject();
    w.key("topic").value(t.topic);
    w.key("published_total").value(uint64_t(t.publishedTotal));
    w.key("delivered_total").value(uint64_t(t.deliveredTotal));
    w.key("dropped_total").value(uint64_t(t.droppedTotal));
    w.key("bytes_total").value(uint64_t(t.bytesTotal));
    w.key("published_per_second").raw(jsonNumber(t.publishedPerSecond));
    w.key("delivered_per_second").raw(jsonNumber(t.deliveredPerSecond));
    w.key("dropped_per_second").raw(jsonNumber(t.droppedPerSecond));
    w.key("bytes_per_second").raw(jsonNumber(t.bytesPerSecond));
    w.key("lag_high_water").raw(jsonNumber(t.lagHighWater));
    w.endObject();
  }
  w.endArray();
  w.key("rings").beginArray();
  for (const auto& r : sample.rings) {
    w.beginObject();
    w.key("service").value(r.service);
    w.key("request_high_water").raw(jsonNumber(r.requestHighWater));
    w.key("request_full_total").value(uint64_t(r.requestFull));
    w.key("response_high_water").raw(jsonNumber(r.responseHighWater));
    w.key("response_full_total").value(uint64_t(r.responseFull));
    w.endObject();
  }
  w.endArray();
  w.endObject();
  return w.str();
}

}  // namespace hms::ffi::cli
