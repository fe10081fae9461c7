// Messages built in place in a ring record and read in place; the slow path for messages that
// outgrow the reserved space; the limit; control-message decoding of bad input.
#include <capnp/message.h>
#include <gtest/gtest.h>
#include <sys/mman.h>

#include "codec.hpp"
#include "hms/ffi/control.capnp.h"
#include "ring_message.hpp"
#include "test.capnp.h"

namespace hms::ffi::detail {
namespace {

struct Ring {
  explicit Ring(uint32_t capacity) : capacity(capacity) {
    mem.assign(sizeof(RingControl) + sizeof(WakeWord) + capacity + 64, 0);
    base =
        reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(mem.data()) + 63) & ~uintptr_t(63));
    control = reinterpret_cast<RingControl*>(base);
    wake = reinterpret_cast<WakeWord*>(base + sizeof(RingControl));
    data = base + sizeof(RingControl) + sizeof(WakeWord);
  }
  std::vector<uint8_t> mem;
  uint8_t* base;
  uint32_t capacity;
  RingControl* control;
  WakeWord* wake;
  uint8_t* data;
};

Status noWait(uint32_t) {
  return Status(StatusCode::kDeadlineExceeded, "full");
}

TEST(InPlaceMessage, IsBuiltInTheRingAndReadInPlace_WithoutACopy) {
  Ring ring(1 << 16);
  RingProducer p(ring.control, ring.data, ring.capacity, ring.wake);
  RingConsumer c(ring.control, ring.data, ring.capacity);
  RingProducer::Slot slot;
  ASSERT_EQ(p.tryReserve(96, 96 + 4096, slot), RingStatus::kOk);
  const uint32_t offset = payloadOffset(0);
  RingMessageBuilder b(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                    (slot.bytes - offset) / 8));
  auto params = b.initRoot<test::TestService::EchoParams>();
  params.setSeq(42);
  auto payload = params.initPayload(64);
  // The payload builder points into the ring itself.
  EXPECT_GE(payload.begin(), slot.record);
  EXPECT_LT(payload.begin(), slot.record + slot.bytes);
  for (int i = 0; i < 64; ++i) payload[i] = uint8_t(i);
  EXPECT_TRUE(b.inPlace());
  RecordHeader h{};
  h.kind = kRecordRequest;
  h.callId = 9;
  ASSERT_TRUE(publishRecord(p, slot, b, h, nullptr, 4096, "hint", noWait).isOk());

  RingConsumer::Record r;
  ASSERT_EQ(c.next(r), RingStatus::kOk);
  EXPECT_EQ(r.header.callId, 9u);
  EXPECT_EQ(r.base, slot.record);  // same bytes, read where they were written
  kj::ArrayPtr<const capnp::word> seg[1] = {
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(r.words), r.header.words)};
  capnp::SegmentArrayMessageReader reader(kj::arrayPtr(seg, 1), ringReaderOptions(r.header.words));
  auto got = reader.getRoot<test::TestService::EchoParams>();
  EXPECT_EQ(got.getSeq(), 42u);
  ASSERT_EQ(got.getPayload().size(), 64u);
  EXPECT_EQ(got.getPayload().begin(), payload.begin());
  EXPECT_EQ(got.getPayload()[63], 63);
}

TEST(InPlaceMessage, ThatOutgrowsTheReservation_IsCopiedIntoTheRingOnce) {
  Ring ring(1 << 16);
  RingProducer p(ring.control, ring.data, ring.capacity, ring.wake);
  RingConsumer c(ring.control, ring.data, ring.capacity);
  RingProducer::Slot slot;
  const uint32_t offset = payloadOffset(0);
  ASSERT_EQ(p.tryReserve(offset + 64, offset + 64, slot), RingStatus::kOk);  // only 64 bytes
  RingMessageBuilder b(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                    (slot.bytes - offset) / 8));
  auto params = b.initRoot<test::TestService::EchoParams>();
  params.setSeq(7);
  auto payload = params.initPayload(1000);
  for (int i = 0; i < 1000; ++i) payload[i] = uint8_t(i * 3);
  EXPECT_FALSE(b.inPlace());
  RecordHeader h{};
  h.kind = kRecordRequest;
  h.callId = 1;
  ASSERT_TRUE(publishRecord(p, slot, b, h, nullptr, 8192, "hint", noWait).isOk());
  RingConsumer::Record r;
  ASSERT_EQ(c.next(r), RingStatus::kOk);
  kj::ArrayPtr<const capnp::word> seg[1] = {
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(r.words), r.header.words)};
  capnp::SegmentArrayMessageReader reader(kj::arrayPtr(seg, 1));
  auto got = reader.getRoot<test::TestService::EchoParams>();
  EXPECT_EQ(got.getSeq(), 7u);
  ASSERT_EQ(got.getPayload().size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(got.getPayload()[i], uint8_t(i * 3));
}

// A message exactly at the limit that outgrew its reservation (the ring's free space was short
// of it, or split at the ring's end): its spilled segments hold a far pointer's landing pad that
// the flat copy does without. It is sent, not refused for the pad.
TEST(InPlaceMessage, AtTheLimit_ThatOutgrowsTheReservation_IsSentNotRefused) {
  Ring ring(1 << 16);
  RingProducer p(ring.control, ring.data, ring.capacity, ring.wake);
  RingConsumer c(ring.control, ring.data, ring.capacity);
  RingProducer::Slot slot;
  const uint32_t offset = payloadOffset(0);
  ASSERT_EQ(p.tryReserve(offset + 64, offset + 64, slot), RingStatus::kOk);
  RingMessageBuilder b(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                    (slot.bytes - offset) / 8));
  auto params = b.initRoot<test::TestService::EchoParams>();
  params.setSeq(11);
  auto payload = params.initPayload(1000);
  for (int i = 0; i < 1000; ++i) payload[i] = uint8_t(i * 7);
  ASSERT_FALSE(b.inPlace());
  // Flat: the root pointer, the struct (one data word, one pointer) and 125 words of payload.
  const uint32_t limit = (1 + 2 + 125) * 8;
  RecordHeader h{};
  h.kind = kRecordRequest;
  auto sent = publishRecord(p, slot, b, h, nullptr, limit, "hint", noWait);
  ASSERT_TRUE(sent.isOk()) << sent.toString();
  RingConsumer::Record r;
  ASSERT_EQ(c.next(r), RingStatus::kOk);
  EXPECT_EQ(r.header.words * 8u, limit);
  kj::ArrayPtr<const capnp::word> seg[1] = {
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(r.words), r.header.words)};
  capnp::SegmentArrayMessageReader reader(kj::arrayPtr(seg, 1));
  auto got = reader.getRoot<test::TestService::EchoParams>();
  EXPECT_EQ(got.getSeq(), 11u);
  ASSERT_EQ(got.getPayload().size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(got.getPayload()[i], uint8_t(i * 7));
}

TEST(InPlaceMessage, OverTheLimit_IsResourceExhausted_NamingTheLimitAndTheSetting) {
  Ring ring(1 << 16);
  RingProducer p(ring.control, ring.data, ring.capacity, ring.wake);
  RingConsumer c(ring.control, ring.data, ring.capacity);
  RingProducer::Slot slot;
  const uint32_t offset = payloadOffset(0);
  ASSERT_EQ(p.tryReserve(offset + 64, offset + 32768, slot), RingStatus::kOk);
  RingMessageBuilder b(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                    (slot.bytes - offset) / 8));
  b.initRoot<test::TestService::EchoParams>().initPayload(5000);
  RecordHeader h{};
  h.kind = kRecordRequest;
  auto s = publishRecord(p, slot, b, h, nullptr, 4096, "raise ServiceOptions::ringBytes", noWait);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("4096"), std::string::npos);
  EXPECT_NE(s.message().find("ringBytes"), std::string::npos);
  RingConsumer::Record r;
  EXPECT_EQ(c.next(r), RingStatus::kEmpty);  // nothing was published
  for (uint32_t i = 0; i < ring.capacity; ++i)
    ASSERT_EQ(ring.data[i], 0);  // and nothing left behind
}

TEST(ControlCodec, RejectsBytesThatAreNotAMessage) {
  auto empty = DecodedMessage::decode({});
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  auto odd = DecodedMessage::decode(std::vector<uint8_t>(13, 1));
  EXPECT_EQ(odd.status().code(), StatusCode::kInvalidArgument);
  // A segment table that claims far more data than there is.
  std::vector<uint8_t> lying(16, 0);
  lying[4] = 0xff;
  lying[5] = 0xff;
  auto bad = DecodedMessage::decode(lying);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(ControlCodec, RoundTripsAControlRequest) {
  capnp::MallocMessageBuilder mb;
  auto req = mb.initRoot<wire::ClientMessage>().initRequest();
  req.setId(77);
  req.initOpenChannel().setServiceKey(5);
  auto flat = encodeMessage(mb);
  std::vector<uint8_t> bytes(flat.asBytes().begin(), flat.asBytes().end());
  auto decoded = DecodedMessage::decode(bytes);
  ASSERT_TRUE(decoded.ok());
  auto r = (*decoded)->root<wire::ClientMessage>().getRequest();
  EXPECT_EQ(r.getId(), 77u);
  EXPECT_EQ(r.getOpenChannel().getServiceKey(), 5u);
}

}  // namespace
}  // namespace hms::ffi::detail
