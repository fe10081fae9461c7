// The validator of single-segment messages read from shared memory: everything Cap'n Proto builds
// passes; every pointer that leaves the segment, aliases its way into unbounded work, or is of a
// kind HMS-FFI never sends, fails.
#include "message_check.hpp"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "hms/cdf/debate.capnp.h"
#include "hms/emr/patient.capnp.h"
#include "test.capnp.h"

namespace hms::ffi::detail {
namespace {

std::vector<uint64_t> flat(capnp::MallocMessageBuilder& mb) {
  auto segs = mb.getSegmentsForOutput();
  EXPECT_EQ(segs.size(), 1u);
  std::vector<uint64_t> w(segs[0].size());
  std::memcpy(w.data(), segs[0].begin(), w.size() * 8);
  return w;
}

bool valid(const std::vector<uint64_t>& w) {
  return validSingleSegmentMessage(w.data(), uint32_t(w.size()));
}

std::vector<uint64_t> patients() {
  capnp::MallocMessageBuilder mb(4096);
  auto r = mb.initRoot<hms::emr::PatientService::SearchPatientsResults>();
  auto list = r.initPatients(3);  // a composite list of structs with text and nested lists
  for (uint i = 0; i < 3; ++i) {
    list[i].setPatientId("p-" + std::to_string(i));
    list[i].setGivenName("Given");
    auto a = list[i].initAllergies(i);
    for (uint j = 0; j < i; ++j) a[j].setSubstance("latex");
  }
  return flat(mb);
}

TEST(MessageCheck, AcceptsWhatCapnProtoBuilds) {
  EXPECT_TRUE(valid(patients()));
  capnp::MallocMessageBuilder mb(4096);
  auto p = mb.initRoot<hms::cdf::DebateService::EvaluatePolicyParams>();
  p.setPolicyId("records.release");
  p.initFacts(2)[1].setValue("yes");
  EXPECT_TRUE(valid(flat(mb)));
  capnp::MallocMessageBuilder empty(64);
  empty.initRoot<test::TestService::WhoamiParams>();  // an empty struct
  EXPECT_TRUE(valid(flat(empty)));
  capnp::MallocMessageBuilder data(4096);
  data.initRoot<test::TestService::EchoParams>().initPayload(1000);
  EXPECT_TRUE(valid(flat(data)));
}

TEST(MessageCheck, RefusesAnEmptyMessage) {
  EXPECT_FALSE(validSingleSegmentMessage(nullptr, 0));
}

TEST(MessageCheck, RefusesARootStructPastTheEnd) {
  auto w = patients();
  w.resize(2);  // the root points at a struct that is no longer there
  EXPECT_FALSE(valid(w));
}

TEST(MessageCheck, RefusesAListLongerThanTheSegment) {
  capnp::MallocMessageBuilder mb(4096);
  mb.initRoot<test::TestService::EchoParams>().initPayload(64);
  auto w = flat(mb);
  // Root -> struct (1 data word, 1 pointer); the payload pointer is w[2]. Claim 1 MiB of bytes.
  w[2] = (w[2] & 0x00000007ffffffffull) | (uint64_t(1u << 20) << 35);
  EXPECT_FALSE(valid(w));
}

TEST(MessageCheck, RefusesFarAndCapabilityPointers) {
  auto w = patients();
  w[0] = (w[0] & ~3ull) | 2;  // far
  EXPECT_FALSE(valid(w));
  w = patients();
  w[0] = 3;  // capability
  EXPECT_FALSE(valid(w));
}

TEST(MessageCheck, RefusesACompositeListWhoseTagLies) {
  auto w = patients();
  // Root struct's first pointer is the composite list; find its tag and inflate the count.
  const uint64_t root = w[0];
  const int64_t structAt = 1 + (int64_t(int32_t(uint32_t(root))) >> 2);
  const uint64_t dataWords = (root >> 32) & 0xffff;
  const int64_t listPtrAt = structAt + int64_t(dataWords);
  const uint64_t lp = w[size_t(listPtrAt)];
  const int64_t tagAt = listPtrAt + 1 + (int64_t(int32_t(uint32_t(lp))) >> 2);
  w[size_t(tagAt)] = (w[size_t(tagAt)] & ~0xfffffffcull) | (uint64_t(1000) << 2);
  EXPECT_FALSE(valid(w));
}

TEST(MessageCheck, BoundsTheWorkOfAliasingPointers) {
  // A list of 4000 pointers that all point at the same list of 4000 pointers...: valid bounds
  // everywhere, exponential work if followed naively.
  std::vector<uint64_t> w(4002, 0);
  w[0] = (uint64_t(0) << 2) | 1 | (uint64_t(6) << 32) | (uint64_t(4000) << 35);  // list at w[1]
  for (int i = 1; i <= 4000; ++i) {
    const int64_t off = 1 - (i + 1);  // back to w[1]
    w[size_t(i)] =
        (uint64_t(uint32_t(int32_t(off) << 2)) | 1) | (uint64_t(6) << 32) | (uint64_t(4000) << 35);
  }
  EXPECT_FALSE(valid(w));
}

// Ends the test binary if the scope is not left within `limit`: for a check that, broken, does
// not fail but runs for hours. Correct code takes microseconds; the limit is generous.
class Watchdog {
 public:
  explicit Watchdog(std::chrono::seconds limit)
      : thread_([this, limit] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr, "the check is still walking after %llds: unbounded work\n",
                         static_cast<long long>(limit.count()));
            std::abort();
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

uint64_t listPointer(int64_t from, int64_t to, uint64_t sizeTag, uint64_t n) {
  const int64_t off = to - (from + 1);
  return (uint64_t(uint32_t(int32_t(off) << 2)) | 1) | (sizeTag << 32) | (n << 35);
}

uint64_t structPointer(int64_t from, int64_t to, uint64_t dataWords, uint64_t ptrs) {
  const int64_t off = to - (from + 1);
  return uint64_t(uint32_t(int32_t(off) << 2)) | (dataWords << 32) | (ptrs << 48);
}

TEST(MessageCheck, ZeroSizedStructListsCostNothingToCheck_HoweverManyTheyClaim) {
  // Found by fuzz/message_check_fuzz.cpp: a composite list's tag may claim 2^29 - 1 structs of no
  // words in a single word. Cap'n Proto reads it (and charges its traversal limit for it); the
  // check walked it element by element. Here 2 000 pointers name that list: a trillion steps.
  const int64_t n = 2000;
  std::vector<uint64_t> w(size_t(n + 3), 0);
  w[0] = listPointer(0, 1, 6, uint64_t(n));
  const int64_t tagAt = n + 1;
  for (int64_t i = 1; i <= n; ++i) w[size_t(i)] = listPointer(i, tagAt, 7, 0);
  w[size_t(tagAt)] = uint64_t((int64_t(1) << 29) - 1) << 2;  // the tag: elements, no words each
  Watchdog watchdog(std::chrono::seconds(60));
  EXPECT_TRUE(valid(w));
}

TEST(MessageCheck, BoundsTheWorkOfPointersThatNameOneWideStruct) {
  // A list of 16 384 pointers, all to one struct of 16 384 null pointers: every bound holds and
  // only 16 384 pointers are followed, but each one looks at every slot again: 2^28 steps for a
  // 256 KiB message. The check's budget counts the slots it looks at, not just the pointers.
  const int64_t n = 16384, slots = 16384;
  std::vector<uint64_t> w(size_t(1 + n + slots), 0);
  w[0] = listPointer(0, 1, 6, uint64_t(n));
  const int64_t structAt = 1 + n;
  for (int64_t i = 1; i <= n; ++i) w[size_t(i)] = structPointer(i, structAt, 0, uint64_t(slots));
  EXPECT_FALSE(valid(w));
  // One pointer to it is an ordinary message.
  w[0] = listPointer(0, 1, 6, 1);
  EXPECT_TRUE(valid(w));
}

TEST(MessageCheck, RefusesNestingDeeperThanTheLimit) {
  // Each word is a one-pointer list pointing at the next word: 200 levels deep.
  std::vector<uint64_t> w(201, 0);
  for (int i = 0; i < 200; ++i) w[size_t(i)] = 1 | (uint64_t(6) << 32) | (uint64_t(1) << 35);
  EXPECT_FALSE(valid(w));
  std::vector<uint64_t> shallow(11, 0);
  for (int i = 0; i < 10; ++i) shallow[size_t(i)] = 1 | (uint64_t(6) << 32) | (uint64_t(1) << 35);
  EXPECT_TRUE(valid(shallow));
}

}  // namespace
}  // namespace hms::ffi::detail
