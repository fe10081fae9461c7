#include "metrics_book.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>

#include "atomics.hpp"

namespace hms::ffi::broker {

namespace {

using detail::kMetricsBuckets;
using detail::kMetricsCapacity;
using detail::kMetricsCodes;
using detail::loadAcquire;
using detail::loadRelaxed;
using detail::MetricsHeader;
using detail::MetricsSlot;

// Series the broker keeps for clients gone: the names come from clients, so a client that
// reconnects in a loop could otherwise grow the broker without end. Past it, a gone client's
// counts of a series not yet kept are refused (and counted as such).
constexpr size_t kMaxRetiredSeries = 16384;

// High-water marks are kept in millionths (metrics_layout.hpp); a client's larger value is its
// own nonsense and counts as full.
constexpr uint64_t kPpm = 1'000'000;

// A name the client wrote: NUL-terminated within its field and of the characters service ids
// and method names have; anything else is not counted (the memory is the client's).
bool readName(const char* field, size_t size, bool dotted, std::string& out) {
  const void* end = std::memchr(field, 0, size);
  if (!end || end == field) return false;
  out.assign(field, static_cast<const char*>(end));
  for (char ch : out) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || (dotted && (ch == '.' || ch == '-'));
    if (!ok) return false;
  }
  return true;
}

LatencyHistogram toHistogram(const std::array<uint64_t, kMetricsBuckets>& buckets, uint64_t sumNs,
                             uint64_t maxNs) {
  LatencyHistogram h;
  for (uint32_t b = 0; b < kMetricsBuckets; ++b) {
    if (buckets[b] == 0) continue;
    h.buckets.emplace_back(uint16_t(b), buckets[b]);
    h.count += buckets[b];
  }
  h.sumNs = sumNs;
  h.maxNs = maxNs;
  return h;
}

}  // namespace

Result<detail::UniqueFd> MetricsBook::create(uint64_t connId) {
  auto fd = detail::createSegment("hms-ffi-metrics", detail::kMetricsSegmentBytes);
  if (!fd.ok()) return fd.status();
  {
    // The header, written once through a mapping of our own before the client has the fd.
    auto rw = detail::Mapping::map(fd->get(), detail::kMetricsSegmentBytes, true);
    if (!rw.ok()) return rw.status();
    auto* h = rw->as<MetricsHeader>();
    h->magic = detail::kMetricsMagic;
    h->layoutVersion = detail::kMetricsLayoutVersion;
    h->slotBytes = uint32_t(sizeof(MetricsSlot));
    h->capacity = kMetricsCapacity;
  }
  auto ro = detail::Mapping::map(fd->get(), detail::kMetricsSegmentBytes, false);
  if (!ro.ok()) return ro.status();
  std::lock_guard lock(mu_);
  live_[connId] = std::make_shared<detail::Mapping>(std::move(*ro));
  return fd;
}

void MetricsBook::retire(uint64_t connId) {
  std::lock_guard lock(mu_);
  auto it = live_.find(connId);
  if (it == live_.end()) return;
  addSegment(*it->second, false, retired_, retiredRefused_);
  live_.erase(it);
}

void MetricsBook::setGauges(const BrokerGauges& g) {
  std::lock_guard lock(mu_);
  gauges_ = g;
}

void MetricsBook::addSegment(const detail::Mapping& m, bool live, Merged& into, uint64_t& refused) {
  auto* h = m.as<MetricsHeader>();
  refused += loadRelaxed(h->slotsRefused);
  const uint32_t published = std::min(loadAcquire(h->slotsPublished), kMetricsCapacity);
  MetricsSlot* slots = detail::metricsSlots(h);
  std::string service, method;
  for (uint32_t i = 0; i < published; ++i) {
    MetricsSlot& s = slots[i];
    const uint32_t side = loadRelaxed(s.side);
    if (side == detail::kMetricsPublisher || side == detail::kMetricsSubscriber) {
      if (!readName(s.service, sizeof(s.service), true, service)) continue;
      if (!live && into.topics.size() >= kMaxRetiredSeries && !into.topics.count(service)) {
        ++refused;  // see kMaxRetiredSeries
        continue;
      }
      TopicTotals& t = into.topics[service];
      if (side == detail::kMetricsPublisher) {
        t.published += loadRelaxed(s.started);
        t.publishedBytes += loadRelaxed(s.sumNs);
      } else {
        t.delivered += loadRelaxed(s.started);
        t.dropped += loadRelaxed(s.sumNs);
        t.lagPpm = std::max(t.lagPpm, std::min<uint64_t>(loadRelaxed(s.maxNs), kPpm));
      }
      continue;
    }
    if (side == detail::kMetricsRequestRing || side == detail::kMetricsResponseRing) {
      if (!readName(s.service, sizeof(s.service), true, service)) continue;
      if (!live && into.rings.size() >= kMaxRetiredSeries && !into.rings.count(service)) {
        ++refused;  // see kMaxRetiredSeries
        continue;
      }
      RingTotals& r = into.rings[service];
      const uint64_t ppm = std::min<uint64_t>(loadRelaxed(s.maxNs), kPpm);
      if (side == detail::kMetricsRequestRing) {
        r.requestPpm = std::max(r.requestPpm, ppm);
        r.requestFull += loadRelaxed(s.started);
      } else {
        r.responsePpm = std::max(r.responsePpm, ppm);
        r.responseFull += loadRelaxed(s.started);
      }
      continue;
    }
    if (side != detail::kMetricsCaller && side != detail::kMetricsService) continue;
    if (!readName(s.service, sizeof(s.service), true, service) ||
        !readName(s.method, sizeof(s.method), false, method)) {
      continue;
    }
    if (!live && into.methods.size() >= kMaxRetiredSeries &&
        !into.methods.count({service, method})) {
      ++refused;  // see kMaxRetiredSeries
      continue;
    }
    Totals& t = into.methods[{service, method}];
    Series& out = side == detail::kMetricsCaller ? t.caller : t.service;
    uint64_t ended = 0;
    for (uint32_t c = 0; c < kMetricsCodes; ++c) {
      const uint64_t n = loadRelaxed(s.byCode[c]);
      out.byCode[c] += n;
      ended += n;
    }
    if (live) {
      out.liveStarted += loadRelaxed(s.started);
      out.liveEnded += ended;
    }
    for (uint32_t b = 0; b < kMetricsBuckets; ++b) out.buckets[b] += loadRelaxed(s.buckets[b]);
    out.sumNs += loadRelaxed(s.sumNs);
    out.maxNs = std::max(out.maxNs, loadRelaxed(s.maxNs));
  }
}

MetricsSnapshot MetricsBook::snapshot() const {
  MetricsSnapshot snap;
  Merged merged;
  uint64_t refused = 0;
  {
    std::lock_guard lock(mu_);
    merged = retired_;
    refused = retiredRefused_;
    for (const auto& [id, m] : live_) addSegment(*m, true, merged, refused);
    snap.gauges = gauges_;
  }
  snap.gauges.metricsSlotsRefused = refused;
  snap.takenUnixNs = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  snap.methods.reserve(merged.methods.size());
  for (const auto& [key, t] : merged.methods) {
    MethodMetrics mm;
    mm.service = key.first;
    mm.method = key.second;
    for (uint32_t c = 0; c < kMetricsCodes; ++c) {
      mm.calls[c] = t.caller.byCode[c];
      mm.handled[c] = t.service.byCode[c];
    }
    mm.inFlight =
        t.caller.liveStarted > t.caller.liveEnded ? t.caller.liveStarted - t.caller.liveEnded : 0;
    mm.callDuration = toHistogram(t.caller.buckets, t.caller.sumNs, t.caller.maxNs);
    mm.handlerDuration = toHistogram(t.service.buckets, t.service.sumNs, t.service.maxNs);
    snap.methods.push_back(std::move(mm));
  }
  for (const auto& [topic, t] : merged.topics) {
    snap.topics.push_back(TopicMetrics{topic, t.published, t.publishedBytes, t.delivered, t.dropped,
                                       double(t.lagPpm) / kPpm});
  }
  for (const auto& [service, r] : merged.rings) {
    snap.rings.push_back(RingMetrics{service, double(r.requestPpm) / kPpm, r.requestFull,
                                     double(r.responsePpm) / kPpm, r.responseFull});
  }
  return snap;
}

}  // namespace hms::ffi::broker
