#include "registry_segment.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include "codec.hpp"
#include "hms/ffi/registry.capnp.h"
#include "os.hpp"
#include "registry_view.hpp"

namespace hms::ffi::detail {
namespace {

void fillSnapshot(capnp::MallocMessageBuilder& mb, int services) {
  auto snap = mb.initRoot<wire::RegistrySnapshot>();
  auto list = snap.initServices(uint(services));
  for (int i = 0; i < services; ++i) {
    list[uint(i)].setKey(uint64_t(i + 1));
    list[uint(i)].initDescriptor().setId("hms.test.s" + std::to_string(i));
  }
}

TEST(RegistrySegment, ReaderSeesEachPublishedSnapshot) {
  auto writer = RegistryWriter::create(64 << 10, uint32_t(::getpid()));
  ASSERT_TRUE(writer.ok()) << writer.status().toString();
  auto reader = RegistryReader::attach(UniqueFd(::dup(writer->fd())), writer->segmentBytes());
  ASSERT_TRUE(reader.ok()) << reader.status().toString();
  EXPECT_EQ(reader->generation(), 0u);
  for (int round = 1; round <= 5; ++round) {
    capnp::MallocMessageBuilder mb;
    fillSnapshot(mb, round);
    ASSERT_TRUE(writer->publish(mb).isOk());
    EXPECT_EQ(reader->generation(), uint64_t(round));
    std::vector<uint64_t> words;
    auto gen = reader->copySnapshot(words);
    ASSERT_TRUE(gen.ok());
    EXPECT_EQ(*gen, uint64_t(round));
    capnp::FlatArrayMessageReader r(detail::asWords(words));
    auto services = r.getRoot<wire::RegistrySnapshot>().getServices();
    ASSERT_EQ(services.size(), uint(round));
    EXPECT_EQ(std::string(services[uint(round - 1)].getDescriptor().getId().cStr()),
              "hms.test.s" + std::to_string(round - 1));
  }
}

TEST(RegistrySegment, ClientsCannotMapItWritable) {
  auto writer = RegistryWriter::create(64 << 10, uint32_t(::getpid()));
  ASSERT_TRUE(writer.ok());
  void* rw =
      ::mmap(nullptr, writer->segmentBytes(), PROT_READ | PROT_WRITE, MAP_SHARED, writer->fd(), 0);
  EXPECT_EQ(rw, MAP_FAILED);
  EXPECT_EQ(::write(writer->fd(), "x", 1), -1);
  void* ro = ::mmap(nullptr, writer->segmentBytes(), PROT_READ, MAP_SHARED, writer->fd(), 0);
  ASSERT_NE(ro, MAP_FAILED);
  ::munmap(ro, writer->segmentBytes());
}

TEST(RegistrySegment, OversizedSnapshot_IsResourceExhausted_AndKeepsThePreviousOne) {
  auto writer = RegistryWriter::create(16 << 10, uint32_t(::getpid()));
  ASSERT_TRUE(writer.ok());
  capnp::MallocMessageBuilder small;
  fillSnapshot(small, 2);
  ASSERT_TRUE(writer->publish(small).isOk());
  capnp::MallocMessageBuilder big;
  fillSnapshot(big, 2000);
  auto s = writer->publish(big);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("--registry-bytes"), std::string::npos);
  auto reader = RegistryReader::attach(UniqueFd(::dup(writer->fd())), writer->segmentBytes());
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(reader->generation(), 1u);
}

// Found by fuzz/registry_snapshot_fuzz.cpp: a slot header whose word count or extent wraps 64
// bits passed the check, and the copy asked for an exabyte (std::length_error thrown through
// the client). A segment made by hand, as a broken broker could leave it.
TEST(RegistrySegment, ASlotHeaderThatWraps_IsDataLoss_NotAnException) {
  constexpr uint64_t kBytes = 16 << 10;
  auto fd = createSegment("registry-test", kBytes);
  ASSERT_TRUE(fd.ok());
  auto m = Mapping::map(fd->get(), kBytes, true);
  ASSERT_TRUE(m.ok());
  auto* h = m->as<RegistryHeader>();
  h->magic = kRegistryMagic;
  h->layoutVersion = kRegistryLayoutVersion;
  h->segmentBytes = kBytes;
  h->current = 1;
  RegistrySlotHeader& slot = h->slots[1];
  auto reader = RegistryReader::attach(UniqueFd(::dup(fd->get())), kBytes);
  ASSERT_TRUE(reader.ok()) << reader.status().toString();
  std::vector<uint64_t> words;
  slot = RegistrySlotHeader{0, (uint64_t(1) << 61) + 1, kPageBytes, 4096, {}};  // words * 8 wraps
  EXPECT_EQ(reader->copySnapshot(words).status().code(), StatusCode::kDataLoss);
  slot = RegistrySlotHeader{0, 1, kPageBytes, ~uint64_t(0) - 100, {}};  // offset + capacity wraps
  EXPECT_EQ(reader->copySnapshot(words).status().code(), StatusCode::kDataLoss);
  slot = RegistrySlotHeader{0, 0, kPageBytes, 4096, {}};  // empty: an empty snapshot
  auto gen = reader->copySnapshot(words);
  ASSERT_TRUE(gen.ok()) << gen.status().toString();
  EXPECT_TRUE(words.empty());
}

// Found by the same fuzzer: a services list of empty structs takes no words, and may claim a
// million entries; building their views took seconds and hundreds of MiB.
TEST(RegistrySegment, ASnapshotClaimingMoreEntriesThanItHasWords_IsDataLoss) {
  // Root pointer to a RegistrySnapshot (2 data words, 2 pointers), whose services pointer names a
  // composite list of 1 000 000 structs of no words.
  std::vector<uint64_t> w(6, 0);
  w[0] = (uint64_t(2) << 32) | (uint64_t(2) << 48);     // struct at w[1]
  w[3] = (uint64_t(1) << 2) | 1 | (uint64_t(7) << 32);  // list at w[5], 0 words
  w[5] = uint64_t(1'000'000) << 2;                      // tag: 1 000 000 elements of 0 words
  // As the segment holds it: flat, after its segment table (one segment of 6 words).
  w.insert(w.begin(), uint64_t(6) << 32);
  auto view = parseRegistryView(w, 1);
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(view.status().message().find("more entries than it has words"), std::string::npos);
}

TEST(RegistrySegment, Attach_RefusesASizeThatDoesNotMatch) {
  auto writer = RegistryWriter::create(64 << 10, uint32_t(::getpid()));
  ASSERT_TRUE(writer.ok());
  auto reader = RegistryReader::attach(UniqueFd(::dup(writer->fd())), writer->segmentBytes() * 2);
  EXPECT_EQ(reader.status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace hms::ffi::detail
