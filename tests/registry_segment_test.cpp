#include "registry_segment.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include "codec.hpp"
#include "hms/ffi/registry.capnp.h"

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

TEST(RegistrySegment, Attach_RefusesASizeThatDoesNotMatch) {
  auto writer = RegistryWriter::create(64 << 10, uint32_t(::getpid()));
  ASSERT_TRUE(writer.ok());
  auto reader = RegistryReader::attach(UniqueFd(::dup(writer->fd())), writer->segmentBytes() * 2);
  EXPECT_EQ(reader.status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace hms::ffi::detail
