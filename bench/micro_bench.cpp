// Google Benchmark micro-benchmarks of the pieces on the call path, in one thread: the ring
// (reserve/commit/next/release), a 64-byte message built in place and read in place, the
// validator of messages read from shared memory, and the pub/sub topic log. Whole-process round
// trips are hms-ffi-bench's job.
#include <benchmark/benchmark.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "hms/emr/patient.capnp.h"
#include "hms/ffi/bench.capnp.h"
#include "message_check.hpp"
#include "ring.hpp"
#include "ring_message.hpp"
#include "topic_log.hpp"

namespace {

using namespace hms::ffi::detail;

struct Ring {
  explicit Ring(uint32_t capacity) : capacity(capacity) {
    bytes = sizeof(RingControl) + sizeof(WakeWord) + capacity;
    mem = static_cast<uint8_t*>(
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    control = reinterpret_cast<RingControl*>(mem);
    wake = reinterpret_cast<WakeWord*>(mem + sizeof(RingControl));
    data = mem + sizeof(RingControl) + sizeof(WakeWord);
  }
  ~Ring() { munmap(mem, bytes); }
  uint32_t capacity;
  size_t bytes;
  uint8_t* mem;
  RingControl* control;
  WakeWord* wake;
  uint8_t* data;
};

// One record of `state.range(0)` payload bytes through the ring: reserve, write, commit, peek,
// release (the producer zeroes the space when it reuses it).
void BM_RingRecord(benchmark::State& state) {
  Ring ring(1 << 20);
  RingProducer p(ring.control, ring.data, ring.capacity, ring.wake);
  RingConsumer c(ring.control, ring.data, ring.capacity);
  const uint32_t bytes = uint32_t(sizeof(RecordHeader) + state.range(0));
  for (auto _ : state) {
    RingProducer::Slot slot;
    p.tryReserve(bytes, bytes, slot);
    std::memset(slot.record + sizeof(RecordHeader), 1, size_t(state.range(0)));
    auto* h = reinterpret_cast<RecordHeader*>(slot.record);
    h->kind = kRecordRequest;
    h->words = uint32_t(state.range(0) / 8);
    p.commit(slot, bytes);
    RingConsumer::Record r;
    c.next(r);
    benchmark::DoNotOptimize(r.words[0]);
    c.release(r);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_RingRecord)->Arg(64)->Arg(1024)->Arg(65536);

// One 64-byte message through a topic log of 1024 slots: loan, write, publish, then every one of
// `state.range(0)` block_publisher subscribers reads it in place and releases it. The publisher's
// share of the cost is what target P6 compares across subscriber counts.
void BM_TopicPublishRead(benchmark::State& state) {
  const TopicGeometry g{1024, 128};
  const size_t bytes = g.segmentBytes();
  auto* log = static_cast<uint8_t*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  initTopicLog(log, g);
  TopicPublisher pub(log, g);
  std::vector<SubscriberCursor> cursors(size_t(state.range(0)));
  std::vector<TopicSubscriber> subs;
  for (auto& c : cursors) {
    initCursor(&c, SlowConsumerPolicy::kBlockPublisher, 1);
    pub.addSubscriber(&c);
    subs.emplace_back(log, g, &c);
  }
  const WaitPolicy policy{WaitKind::kSpin, 0};
  for (auto _ : state) {
    TopicPublisher::Loan loan;
    (void)pub.loan(policy, INT64_MAX, loan);
    std::memset(loan.words, 1, 64);
    pub.publish(loan, 8);
    for (auto& sub : subs) {
      TopicSubscriber::Message m;
      uint64_t missed = 0;
      sub.next(m, missed);
      benchmark::DoNotOptimize(m.words[7]);
      sub.release();
    }
  }
  munmap(log, bytes);
}
BENCHMARK(BM_TopicPublishRead)->Arg(1)->Arg(2)->Arg(4)->Arg(8);

// A 64-byte Echo request built in place in the ring, published, validated and read in place.
void BM_InPlaceMessage64(benchmark::State& state) {
  Ring ring(1 << 20);
  RingProducer p(ring.control, ring.data, ring.capacity, ring.wake);
  RingConsumer c(ring.control, ring.data, ring.capacity);
  const uint32_t offset = payloadOffset(0);
  auto noWait = [](uint32_t) { return hms::ffi::Status(); };
  uint64_t sink = 0;
  for (auto _ : state) {
    RingProducer::Slot slot;
    p.tryReserve(offset + 64, offset + 4096, slot);
    {
      RingMessageBuilder b(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                        (slot.bytes - offset) / 8));
      auto d = b.initRoot<hms::ffi::bench::Echo::EchoParams>().initPayload(64);
      std::memset(d.begin(), 7, 64);
      RecordHeader h{};
      h.kind = kRecordRequest;
      (void)publishRecord(p, slot, b, h, nullptr, 4096, "", noWait);
    }
    RingConsumer::Record r;
    c.next(r);
    if (validSingleSegmentMessage(r.words, r.header.words)) {
      kj::ArrayPtr<const capnp::word> seg[1] = {
          kj::arrayPtr(reinterpret_cast<const capnp::word*>(r.words), r.header.words)};
      capnp::SegmentArrayMessageReader reader(kj::arrayPtr(seg, 1),
                                              ringReaderOptions(r.header.words));
      sink += reader.getRoot<hms::ffi::bench::Echo::EchoParams>().getPayload()[63];
    }
    c.release(r);
  }
  benchmark::DoNotOptimize(sink);
}
BENCHMARK(BM_InPlaceMessage64);

// The validator on a list of `state.range(0)` patients (structs with text and nested lists).
void BM_ValidatePatients(benchmark::State& state) {
  capnp::MallocMessageBuilder mb(1 << 16);
  auto list = mb.initRoot<hms::emr::PatientService::SearchPatientsResults>().initPatients(
      uint(state.range(0)));
  for (uint i = 0; i < list.size(); ++i) {
    list[i].setPatientId("p-1001");
    list[i].setFamilyName("Okafor");
    list[i].initAllergies(2)[0].setSubstance("latex");
  }
  auto flat = capnp::messageToFlatArray(mb);
  const auto* words = reinterpret_cast<const uint64_t*>(flat.begin() + 1);  // skip the table
  const uint32_t count = uint32_t(flat.size() - 1);
  for (auto _ : state) benchmark::DoNotOptimize(validSingleSegmentMessage(words, count));
  state.SetBytesProcessed(int64_t(state.iterations()) * count * 8);
}
BENCHMARK(BM_ValidatePatients)->Arg(1)->Arg(100);

}  // namespace

BENCHMARK_MAIN();
