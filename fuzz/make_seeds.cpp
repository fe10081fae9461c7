// hms-ffi-fuzz-seeds OUTDIR: writes seed inputs for the shared-memory fuzz targets, made by the
// library's own writers (RingProducer, TopicPublisher, RegistryWriter, Cap'n Proto builders), so
// that the seeds follow the layouts as they change. scripts/fuzz.sh runs it before each target;
// the control-request seeds are files in fuzz/corpus/ (capnp encode).
//
// Each seed is laid out as its target reads its input (the target's header comment).
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "hms/ffi/control.capnp.h"
#include "hms/ffi/error.capnp.h"
#include "hms/ffi/registry.capnp.h"
#include "registry_segment.hpp"
#include "ring.hpp"
#include "ring_message.hpp"
#include "topic_log.hpp"

namespace {

using namespace hms::ffi;
using namespace hms::ffi::detail;
namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

fs::path outDir;

void write(const std::string& target, const std::string& name, const Bytes& bytes) {
  fs::create_directories(outDir / target);
  std::ofstream(outDir / target / name, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

void append(Bytes& to, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  to.insert(to.end(), b, b + n);
}

void fillError(wire::RpcError::Builder e, int i) {
  e.setMessage("patient " + std::to_string(i) + " not found");
  e.setSource("hms.emr.patient");
  auto d = e.initDetails(2);
  d[0].setKey("patient_id");
  d[0].setValue("p-" + std::to_string(i));
  d[1].setKey("retry");
  d[1].setValue("no");
}

void fillDescriptor(wire::ServiceDescriptor::Builder d) {
  d.setId("hms.emr.patient");
  d.getVersion().setMajor(1);
  d.getVersion().setMinor(2);
  d.setInterfaceId(0xabcdef0123456789ull);
  d.setInterfaceName("PatientService");
  auto m = d.initMethods(3);
  const char* names[] = {"getPatient", "searchPatients", "watchVitals"};
  for (unsigned i = 0; i < 3; ++i) {
    m[i].setName(names[i]);
    m[i].setOrdinal(uint16_t(i));
    m[i].setStream(i == 2);
  }
  d.setDisplayName("Patient records");
  d.setRingBytes(65536);
}

void fillSnapshot(wire::RegistrySnapshot::Builder s, int services) {
  s.setGeneration(7);
  s.setBrokerPid(4242);
  auto list = s.initServices(unsigned(services));
  for (int i = 0; i < services; ++i) {
    list[unsigned(i)].setKey(uint64_t(i + 1));
    fillDescriptor(list[unsigned(i)].initDescriptor());
    list[unsigned(i)].setProviderPid(100 + unsigned(i));
    list[unsigned(i)].setProviderName("emr-service");
  }
  auto topics = s.initTopics(1);
  topics[0].setKey(9);
  topics[0].setId("hms.emr.vitals");
  topics[0].setTypeName("Vitals");
  topics[0].setSlotCount(64);
  topics[0].setMaxMessageBytes(256);
}

Bytes segmentOf(capnp::MessageBuilder& mb) {
  auto segs = mb.getSegmentsForOutput();
  Bytes b;
  append(b, segs[0].begin(), segs[0].size() * sizeof(capnp::word));
  return b;
}

// ---- message-check: one segment's words --------------------------------------------------

void messageCheckSeeds() {
  {
    capnp::MallocMessageBuilder mb;
    fillError(mb.initRoot<wire::RpcError>(), 1);
    write("message-check", "rpc-error", segmentOf(mb));
  }
  {
    capnp::MallocMessageBuilder mb;
    fillDescriptor(mb.initRoot<wire::ServiceDescriptor>());
    write("message-check", "service-descriptor", segmentOf(mb));
  }
  {
    capnp::MallocMessageBuilder mb(8192);
    fillSnapshot(mb.initRoot<wire::RegistrySnapshot>(), 3);
    write("message-check", "registry-snapshot", segmentOf(mb));
  }
}

// ---- ring-consumer: 1024 bytes of ring, then the script ----------------------------------

constexpr uint32_t kRing = 1024;

struct Ring {
  alignas(64) RingControl control{};
  alignas(64) uint8_t data[kRing]{};
  WakeWord doorbell{};
  RingProducer producer{&control, data, kRing, &doorbell};
  RingConsumer consumer{&control, data, kRing};
};

// Commits one record of `kind` with a message built by `build` (none when null).
bool produce(Ring& r, uint16_t kind, uint16_t flags, uint16_t status, uint64_t callId,
             const std::function<void(capnp::MessageBuilder&)>& build) {
  RingProducer::Slot slot;
  if (r.producer.tryReserve(kRecordOverhead + 64, 256, slot) != RingStatus::kOk) return false;
  auto* h = reinterpret_cast<RecordHeader*>(slot.record);
  h->kind = kind;
  h->flags = flags;
  h->callId = callId;
  h->method = 1;
  h->status = status;
  const uint32_t offset = payloadOffset(flags);
  if (flags & kRecordHasTrace) {
    auto* t = reinterpret_cast<TraceContextWire*>(slot.record + sizeof(RecordHeader));
    for (int i = 0; i < 16; ++i) t->traceId[i] = uint8_t(i + 1);
    t->spanId[0] = 7;
    t->traceFlags = 1;
  }
  uint32_t words = 0;
  if (build) {
    RingMessageBuilder b(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                      (slot.bytes - offset) / 8));
    build(b);
    const auto inPlace = b.inPlaceWords();
    if (!inPlace) return false;
    words = uint32_t(inPlace->size());
  }
  h->words = words;
  r.producer.commit(slot, offset + words * 8);
  return true;
}

bool produceError(Ring& r, uint64_t callId) {
  return produce(r, kRecordResponse, 0, uint16_t(StatusCode::kNotFound), callId,
                 [&](capnp::MessageBuilder& b) { fillError(b.initRoot<wire::RpcError>(), 1); });
}

bool produceRequest(Ring& r, uint64_t callId, uint16_t flags) {
  return produce(r, kRecordRequest, flags, 0, callId, [&](capnp::MessageBuilder& b) {
    auto d = b.initRoot<wire::ServiceDescriptor>();
    d.setId("hms.emr.patient");
    d.setDisplayName("p-" + std::to_string(callId));
  });
}

Bytes ringSeed(const Ring& r, const Bytes& script) {
  Bytes b(r.data, r.data + kRing);
  b.insert(b.end(), script.begin(), script.end());
  return b;
}

void ringSeeds() {
  // Script ops (ring_consumer_fuzz.cpp): 0 next, 3 i release the i-th held, 4 look, 5 write.
  const Bytes takeAll = {0, 0, 0, 0, 0, 0, 4, 3, 0, 3, 0, 3, 0, 3, 0, 3, 0, 0, 4};
  {
    Ring r;
    produceRequest(r, 1, kRecordHasTrace);
    produceRequest(r, 2, kRecordOneWay);
    produceError(r, 3);
    produce(r, kRecordCancel, 0, 0, 4, nullptr);
    write("ring-consumer", "mixed", ringSeed(r, takeAll));
  }
  {
    // Full, then the first records taken and released, then one more that wraps: a padding
    // record at the end and the new record at the start.
    Ring r;
    uint64_t id = 1;
    while (produceError(r, id)) ++id;
    for (int i = 0; i < 2; ++i) {
      RingConsumer::Record rec;
      if (r.consumer.next(rec) == RingStatus::kOk) r.consumer.release(rec);
    }
    produceRequest(r, 100, kRecordHasTrace | kRecordStream);
    Bytes script(40, 0);
    for (int i = 0; i < 10; ++i) script.insert(script.end(), {3, 0});
    write("ring-consumer", "wrapped", ringSeed(r, script));
  }
  {
    Ring r;
    for (uint64_t id = 1; id <= 3; ++id) {
      produce(r, kRecordStreamItem, 0, 0, 9,
              [&](capnp::MessageBuilder& b) { fillError(b.initRoot<wire::RpcError>(), int(id)); });
    }
    produce(r, kRecordStreamEnd, 0, 0, 9, nullptr);
    // Taken, then the peer rewrites the length of the record after the first.
    Bytes script = {0, 3, 0, 5, 0, 0, 4, 0x40, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0};
    write("ring-consumer", "stream", ringSeed(r, script));
  }
}

// ---- topic-log: policy, 128 header bytes, 512 slot bytes, cursor start, script -------------

void topicSeeds() {
  const TopicGeometry g{4, 128};
  for (const bool drop : {false, true}) {
    std::vector<uint8_t> log(g.segmentBytes(), 0);
    initTopicLog(log.data(), g);
    TopicPublisher pub(log.data(), g);
    const int count = drop ? 6 : 3;  // drop_oldest: lapped, with messages missed
    for (int i = 0; i < count; ++i) {
      TopicPublisher::Loan loan;
      if (!pub.tryLoan(loan)) break;
      RingMessageBuilder b(
          kj::arrayPtr(reinterpret_cast<capnp::word*>(loan.words), loan.capacityWords));
      auto e = b.initRoot<wire::RpcError>();
      e.setMessage("bp " + std::to_string(i));
      e.setSource("vitals");
      pub.publish(loan, uint32_t(b.inPlaceWords().value().size()));  // a small message
    }
    Bytes b;
    b.push_back(drop ? 1 : 0);
    append(b, log.data(), 128);
    append(b, log.data() + kTopicHeaderBytes, 512);
    const uint64_t start = 1;
    append(b, &start, sizeof start);
    // Script ops (topic_log_fuzz.cpp): 0 next, 2 release, 3 flush, 4 write log, 6 cursor, 7
    // published.
    const Bytes script = {0, 2, 0, 2, 0, 2, 3, 0, 2, 0, 0, 3};
    b.insert(b.end(), script.begin(), script.end());
    write("topic-log", drop ? "drop-oldest" : "block-publisher", b);
  }
}

// ---- registry-snapshot: the header page's first 256 bytes, then the slots' bytes -----------

void registrySeeds() {
  constexpr uint64_t kSegment = 16384;
  auto w = RegistryWriter::create(kSegment, 4242);
  if (!w.ok()) {
    std::fprintf(stderr, "registry: %s\n", w.status().toString().c_str());
    return;
  }
  for (int round = 1; round <= 2; ++round) {
    capnp::MallocMessageBuilder mb;
    fillSnapshot(mb.initRoot<wire::RegistrySnapshot>(), round);
    if (auto s = w->publish(mb); !s) std::fprintf(stderr, "registry: %s\n", s.toString().c_str());
    void* p = ::mmap(nullptr, kSegment, PROT_READ, MAP_SHARED, w->fd(), 0);
    if (p == MAP_FAILED) return;
    const auto* base = static_cast<const uint8_t*>(p);
    Bytes b(base, base + 256);
    // The slots, up to the end of what the published snapshots use.
    b.insert(b.end(), base + kPageBytes, base + kPageBytes + 6144);
    ::munmap(p, kSegment);
    write("registry-snapshot", "generation-" + std::to_string(round), b);
  }
}

// ---- socket-link: a script of datagrams to send (op (W << 2) | 2: 32 + 8W bytes) and receives
// (op 0) ------------------------------------------------------------------------------------

Bytes socketRecord(uint16_t kind, uint16_t status, const Bytes& message) {
  RecordHeader h{};
  h.kind = kind;
  h.status = status;
  h.callId = 5;
  h.words = uint32_t(message.size() / 8);
  h.length = uint32_t(sizeof(RecordHeader) + message.size());
  Bytes b;
  append(b, &h, sizeof h);
  b.insert(b.end(), message.begin(), message.end());
  return b;
}

void socketSeeds() {
  capnp::MallocMessageBuilder mb;
  fillError(mb.initRoot<wire::RpcError>(), 2);
  const Bytes error = segmentOf(mb);
  Bytes script;
  for (const Bytes& rec : {socketRecord(kRecordResponse, uint16_t(StatusCode::kNotFound), error),
                           socketRecord(kRecordStreamEnd, 0, {})}) {
    script.push_back(uint8_t(((rec.size() - 32) / 8) << 2 | 2));
    script.insert(script.end(), rec.begin(), rec.end());
    script.push_back(0);
  }
  script.push_back(3);  // the peer closes
  script.push_back(0);
  write("socket-link", "records", script);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  outDir = argv[1];
  messageCheckSeeds();
  ringSeeds();
  topicSeeds();
  registrySeeds();
  socketSeeds();
  return 0;
}
