// The table of a channel's calls in flight: found by id in any order, a long-lived call among
// many short ones neither lost nor making the table grow without end.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "client_impl.hpp"

namespace hms::ffi::detail {
namespace {

std::shared_ptr<AsyncCall> callWithId(uint64_t id) {
  auto c = std::make_shared<AsyncCall>();
  c->callId = id;
  return c;
}

size_t count(PendingCalls& p) {
  size_t n = 0;
  p.forEach([&](const std::shared_ptr<AsyncCall>&) { ++n; });
  return n;
}

TEST(PendingCalls, TenThousandInFlight_EachFoundByItsId_InAnyOrder) {
  PendingCalls p;
  std::vector<std::shared_ptr<AsyncCall>> calls;
  for (uint64_t id = 1; id <= 10'000; ++id) {
    calls.push_back(callWithId(id));
    p.insert(calls.back());
  }
  EXPECT_EQ(count(p), 10'000u);
  EXPECT_EQ(p.find(10'001), nullptr);
  EXPECT_EQ(p.find(0), nullptr);
  for (uint64_t id = 10'000; id >= 1; --id) {  // back to front
    auto* at = p.find(id);
    ASSERT_NE(at, nullptr) << id;
    ASSERT_EQ(*at, calls[id - 1]);
    p.erase(at);
    ASSERT_EQ(p.find(id), nullptr);
  }
  EXPECT_TRUE(p.empty());
  EXPECT_LE(p.slotCount(), 1024u);  // the burst's table is given back once empty
}

TEST(PendingCalls, CallbacksAreCounted_AsTheyComeAndGo) {
  PendingCalls p;
  auto future = callWithId(1);
  auto withCallback = callWithId(2);
  withCallback->hasCallback = true;
  p.insert(future);
  p.insert(withCallback);
  EXPECT_EQ(p.callbacks(), 1u);
  p.countCallback(*future);  // then() on a Future still in flight
  p.countCallback(*future);  // once only
  EXPECT_EQ(p.callbacks(), 2u);
  p.erase(p.find(2));
  EXPECT_EQ(p.callbacks(), 1u);
  p.clear();
  EXPECT_EQ(p.callbacks(), 0u);
  EXPECT_FALSE(future->callbackCounted);
}

TEST(PendingCalls, ALongLivedCallAmongAMillionShortOnes_StaysFound_AndTheTableStaysSmall) {
  PendingCalls p;
  auto stream = callWithId(1);
  p.insert(stream);
  for (uint64_t id = 2; id < 1'000'000; ++id) {
    p.insert(callWithId(id));
    auto* at = p.find(id);
    ASSERT_NE(at, nullptr) << id;
    p.erase(at);
    ASSERT_NE(p.find(1), nullptr) << "after " << id;
  }
  EXPECT_EQ(*p.find(1), stream);
  EXPECT_LE(p.slotCount(), 64u);  // one slot taken for good does not make it double each lap
  EXPECT_FALSE(p.empty());
  EXPECT_EQ(count(p), 1u);
  p.clear();
  EXPECT_TRUE(p.empty());
  EXPECT_EQ(p.find(1), nullptr);
  EXPECT_EQ(count(p), 0u);
}

TEST(PendingCalls, IdsThatMeetInOneSlot_BothStayFound) {
  PendingCalls p;
  std::vector<std::shared_ptr<AsyncCall>> calls;
  // Ids 64 apart share a slot of the first table; 40 of them fill more than a quarter of it.
  for (uint64_t k = 0; k < 40; ++k) {
    calls.push_back(callWithId(5 + 64 * k));
    p.insert(calls.back());
  }
  for (auto& c : calls) {
    auto* at = p.find(c->callId);
    ASSERT_NE(at, nullptr) << c->callId;
    EXPECT_EQ(*at, c);
  }
  for (auto& c : calls) p.erase(p.find(c->callId));
  EXPECT_TRUE(p.empty());
  EXPECT_EQ(count(p), 0u);
}

}  // namespace
}  // namespace hms::ffi::detail
