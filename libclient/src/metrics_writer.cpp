#include "metrics_writer.hpp"

#include <algorithm>
#include <cstring>

namespace hms::ffi::detail {

namespace {

std::atomic<uint64_t> gEpochs{0};

// Per thread: for each writer (by the epoch of its segment, unique in the process), the slot of
// each series this thread has counted in. Usually one writer.
// A slot for the series of a full segment: counted nowhere, one per thread (no sharing).
thread_local MetricsSlot tDiscard;

struct ThreadSlots {
  const MetricsWriter* writer = nullptr;
  uint64_t epoch = 0;
  std::vector<MetricsSlot*> slots;        // by series
  std::shared_ptr<MetricsSlotPool> pool;  // where they go when the thread ends

  ThreadSlots(const MetricsWriter* w, uint64_t e) : writer(w), epoch(e) {}
  ThreadSlots(ThreadSlots&&) noexcept = default;
  ThreadSlots& operator=(ThreadSlots&&) noexcept = default;
  ~ThreadSlots() { giveBack(); }

  // SYNC POINT: the pool's mutex orders this thread's last writes to its slots before the
  // first writes of the thread that takes them next.
  void giveBack() noexcept {
    if (!pool) return;
    try {
      std::lock_guard lock(pool->mu);
      for (size_t f = 0; f < slots.size(); ++f) {
        if (!slots[f] || slots[f] == &tDiscard) continue;
        if (pool->free.size() <= f) pool->free.resize(f + 1);
        pool->free[f].push_back(slots[f]);
      }
    } catch (const std::exception&) {
      // out of memory: the slots stay unused
    }
    slots.clear();
    pool.reset();
  }
};
thread_local std::vector<ThreadSlots> tThreadSlots;

std::atomic<uint64_t> gThreadSerials{0};
thread_local const uint64_t tThreadSerial = gThreadSerials.fetch_add(1) + 1;

}  // namespace

uint64_t metricsThreadSerial() noexcept {
  return tThreadSerial;
}

Status MetricsWriter::attach(UniqueFd fd, uint64_t bytes) {
  if (bytes < sizeof(MetricsHeader) + sizeof(MetricsSlot) || bytes > (uint64_t(1) << 30)) {
    return Status(StatusCode::kInternal, "the metrics segment has an impossible size");
  }
  if (auto s = checkSealedAgainstShrink(fd.get(), bytes, "the metrics segment"); !s) return s;
  auto map = Mapping::map(fd.get(), bytes, true);
  if (!map.ok()) return map.status();
  auto* h = map->as<MetricsHeader>();
  if (h->magic != kMetricsMagic || h->layoutVersion != kMetricsLayoutVersion ||
      h->slotBytes != sizeof(MetricsSlot) ||
      sizeof(MetricsHeader) + uint64_t(h->capacity) * sizeof(MetricsSlot) > bytes) {
    return Status(StatusCode::kFailedPrecondition,
                  "the metrics segment has an unknown layout; use a libhmsffi of the broker's "
                  "release");
  }
  std::lock_guard lock(mu_);
  maps_.push_back(std::make_shared<Mapping>(std::move(*map)));
  header_ = h;
  next_ = 0;
  pool_ = std::make_shared<MetricsSlotPool>();
  epoch_.store(gEpochs.fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_release);
  return Status();
}

uint32_t MetricsWriter::family(std::atomic<uint32_t>& cell, MetricsSide side,
                               const std::string& service, std::string_view method) {
  const uint32_t known = cell.load(std::memory_order_acquire);
  if (known) return known - 1;
  std::lock_guard lock(mu_);
  auto key = std::make_tuple(side, service, std::string(method));
  auto [it, added] = index_.emplace(key, uint32_t(families_.size()));
  if (added) families_.push_back(std::move(key));
  cell.store(it->second + 1, std::memory_order_release);
  return it->second;
}

MetricsSlot* MetricsWriter::slot(uint32_t family) {
  const uint64_t epoch = epoch_.load(std::memory_order_acquire);
  if (epoch == 0) return nullptr;
  ThreadSlots* mine = nullptr;
  for (auto& t : tThreadSlots) {
    if (t.writer == this) mine = &t;
  }
  if (!mine) mine = &tThreadSlots.emplace_back(this, epoch - 1);
  if (mine->epoch != epoch) {  // a new writer or segment (a reconnect): new slots
    mine->slots.clear();       // of a segment retired (or of another writer at this address)
    mine->pool.reset();
    mine->epoch = epoch;
  }
  if (family < mine->slots.size() && mine->slots[family]) return mine->slots[family];
  MetricsSlot* s = newSlot(family, mine->pool);
  if (mine->slots.size() <= family) mine->slots.resize(family + 1, nullptr);
  mine->slots[family] = s;
  return s;
}

MetricsSlot* MetricsWriter::newSlot(uint32_t family, std::shared_ptr<MetricsSlotPool>& pool) {
  std::lock_guard lock(mu_);
  if (!header_ || family >= families_.size()) return &tDiscard;
  if (!pool) pool = pool_;
  if (pool != pool_) return &tDiscard;  // attached anew meanwhile: the next call counts there
  {
    std::lock_guard free(pool_->mu);
    if (family < pool_->free.size() && !pool_->free[family].empty()) {
      MetricsSlot* s = pool_->free[family].back();
      pool_->free[family].pop_back();
      return s;
    }
  }
  if (next_ >= std::min(header_->capacity, kMetricsCapacity)) {
    bumpSingleWriter(header_->slotsRefused, uint32_t(1));  // under mu_: one writer
    return &tDiscard;
  }
  MetricsSlot* s = metricsSlots(header_) + next_;
  const auto& [side, service, method] = families_[family];
  s->side = side;
  const size_t sn = std::min(service.size(), sizeof(s->service) - 1);
  std::memcpy(s->service, service.data(), sn);
  s->service[sn] = '\0';
  const size_t mn = std::min(method.size(), sizeof(s->method) - 1);
  std::memcpy(s->method, method.data(), mn);
  s->method[mn] = '\0';
  ++next_;
  storeRelease(header_->slotsPublished, next_);
  return s;
}

void RingMetrics::sampled(uint64_t usedBytes, uint32_t capacity, bool becameFull) noexcept {
  if (!writer_.enabled()) return;
  try {
    MetricsSlot* s = writer_.slot(writer_.family(family_, side_, service_, ""));
    metricsHighWater(s, usedBytes, capacity);
    if (becameFull && s) bumpSingleWriter(s->started, uint64_t(1));
  } catch (const std::exception&) {
    // out of memory: uncounted
  }
}

}  // namespace hms::ffi::detail
