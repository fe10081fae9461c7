// The socket transport's framing over a real socketpair: records split into datagrams and put
// together again, the limit, a peer that closes, and datagrams that break the framing.
#include "socket_link.hpp"

#include <capnp/message.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>

#include "message_check.hpp"
#include "test.capnp.h"

namespace hms::ffi::detail {
namespace {

constexpr uint32_t kLimit = 1u << 20;

struct Pair {
  Pair(uint32_t limit = kLimit) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    a = std::make_unique<SocketLink>(UniqueFd(sv[0]), limit);
    b = std::make_unique<SocketLink>(UniqueFd(sv[1]), limit);
  }
  std::unique_ptr<SocketLink> a, b;
};

WaitPolicy blocking() {
  WaitPolicy p;
  p.kind = WaitKind::kBlocking;
  return p;
}

int64_t in(int64_t ms) {
  return monotonicNs() + ms * 1'000'000;
}

Status sendEcho(SocketLink& link, uint64_t seq, size_t payload, int64_t deadline) {
  RingMessageBuilder mb(link.scratch());
  auto p = mb.initRoot<test::TestService::EchoParams>();
  p.setSeq(seq);
  auto d = p.initPayload(uint(payload));
  for (size_t i = 0; i < payload; ++i) d[i] = uint8_t(seq * 7 + i);
  RecordHeader h{};
  h.kind = kRecordRequest;
  h.callId = seq;
  return link.send(h, nullptr, mb, blocking(), deadline, "raise it");
}

SocketLink::Recv receive(SocketLink& link, RingConsumer::Record& rec, int64_t deadline) {
  for (;;) {
    const auto r = link.tryReceive(rec);
    if (r != SocketLink::Recv::kEmpty) return r;
    if (!link.waitReadable(blocking(), deadline)) return r;
  }
}

void expectEcho(const RingConsumer::Record& rec, uint64_t seq, size_t payload) {
  ASSERT_EQ(rec.header.callId, seq);
  ASSERT_TRUE(validSingleSegmentMessage(rec.words, rec.header.words));
  kj::ArrayPtr<const capnp::word> seg[1] = {
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(rec.words), rec.header.words)};
  capnp::SegmentArrayMessageReader reader(kj::arrayPtr(seg, 1));
  auto p = reader.getRoot<test::TestService::EchoParams>();
  ASSERT_EQ(p.getSeq(), seq);
  auto data = p.getPayload();
  ASSERT_EQ(data.size(), payload);
  for (size_t i = 0; i < payload; ++i) ASSERT_EQ(data[i], uint8_t(seq * 7 + i)) << i;
}

TEST(SocketLink, RecordsOfEverySize_ArriveWholeAndInOrder) {
  Pair pair;
  // From one datagram to many (the limit is ~1 MiB, a datagram at most 64 KiB); the sender runs
  // in its own thread since the socket holds less than the largest record.
  const std::vector<size_t> sizes = {0, 1, 64, 4000, 65'000, 65'536, 200'000, kLimit - 1024};
  std::vector<Status> sent(sizes.size());
  std::thread sender([&] {
    for (size_t i = 0; i < sizes.size(); ++i) sent[i] = sendEcho(*pair.a, i, sizes[i], in(20'000));
  });
  std::vector<SocketLink::Recv> got;
  for (size_t i = 0; i < sizes.size(); ++i) {
    RingConsumer::Record rec;
    got.push_back(receive(*pair.b, rec, in(20'000)));
    if (got.back() != SocketLink::Recv::kRecord) break;
    expectEcho(rec, i, sizes[i]);
  }
  sender.join();
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(sent[i].isOk()) << sizes[i] << ": " << sent[i].toString();
    ASSERT_LT(i, got.size());
    EXPECT_EQ(got[i], SocketLink::Recv::kRecord) << sizes[i] << ": " << pair.b->corruptReason();
  }
  EXPECT_GT(kLimit - 1024, pair.a->chunkBytes() * 4);  // the largest really was split
}

// Callers keep no record between receives that found nothing (a record's first datagram may
// come in one call, its last in another): each receive here starts from a fresh, garbage-filled
// Record, and what it returns must come from the datagrams alone.
SocketLink::Recv receiveFresh(SocketLink& link, RingConsumer::Record& out, int64_t deadline) {
  for (;;) {
    RingConsumer::Record rec;
    std::memset(static_cast<void*>(&rec), 0xa5, sizeof(rec));
    const auto r = link.tryReceive(rec);
    if (r != SocketLink::Recv::kEmpty) {
      out = rec;
      return r;
    }
    if (!link.waitReadable(blocking(), deadline)) return r;
  }
}

TEST(SocketLink, ManyRecordsOfTwoDatagrams_AllArriveInOrder) {
  Pair pair;
  constexpr uint64_t kRecords = 3000;
  constexpr size_t kPayload = 60'000;  // header + payload: just over one datagram
  ASSERT_GT(kPayload, pair.a->chunkBytes());
  Status failed;
  std::thread sender([&] {
    for (uint64_t i = 0; i < kRecords && failed.isOk(); ++i) {
      failed = sendEcho(*pair.a, i, kPayload, in(20'000));
    }
  });
  uint64_t got = 0;
  for (; got < kRecords; ++got) {
    RingConsumer::Record rec;
    const auto r = receiveFresh(*pair.b, rec, in(20'000));
    ASSERT_EQ(r, SocketLink::Recv::kRecord) << "record " << got << ": " << pair.b->corruptReason();
    expectEcho(rec, got, kPayload);
    if (HasFatalFailure()) break;
  }
  sender.join();
  EXPECT_TRUE(failed.isOk()) << failed.toString();
  EXPECT_EQ(got, kRecords);
}

TEST(SocketLink, OverTheLimit_IsResourceExhausted_AndNothingIsSent) {
  Pair pair(64 * 1024);
  const Status s = sendEcho(*pair.a, 1, 70'000, in(1000));
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("raise it"), std::string::npos) << s.toString();
  RingConsumer::Record rec;
  EXPECT_EQ(pair.b->tryReceive(rec), SocketLink::Recv::kEmpty);
  // The scratch was cleaned: the next message is whole and right.
  ASSERT_TRUE(sendEcho(*pair.a, 2, 10, in(1000)).isOk());
  ASSERT_EQ(receive(*pair.b, rec, in(1000)), SocketLink::Recv::kRecord);
  expectEcho(rec, 2, 10);
}

TEST(SocketLink, PeerClosed_IsSeenByTheReceiverAndTheSender) {
  Pair pair;
  pair.a.reset();
  RingConsumer::Record rec;
  EXPECT_EQ(receive(*pair.b, rec, in(1000)), SocketLink::Recv::kClosed);
  EXPECT_TRUE(pair.b->peerClosed());
  EXPECT_EQ(sendEcho(*pair.b, 1, 1, in(1000)).code(), StatusCode::kUnavailable);
}

TEST(SocketLink, AFullSocket_IsDeadlineExceeded_AndACutRecordEndsTheStream) {
  Pair pair;
  // Nobody reads: a record larger than the socket buffer can only go part of the way.
  const Status s = sendEcho(*pair.a, 1, kLimit - 1024, in(200));
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.toString();
  EXPECT_TRUE(pair.a->broken());
  EXPECT_TRUE(pair.a->ended());
}

void sendRaw(int fd, const void* data, size_t size) {
  ASSERT_EQ(::send(fd, data, size, 0), ssize_t(size));
}

TEST(SocketLink, DatagramsThatBreakTheFraming_AreCorrupt) {
  struct Case {
    const char* what;
    std::function<void(int)> write;
  };
  const std::vector<Case> cases = {
      {"shorter than a header", [](int fd) { sendRaw(fd, "tiny", 4); }},
      {"unknown kind",
       [](int fd) {
         RecordHeader h{};
         h.kind = 42;
         h.length = sizeof(h);
         sendRaw(fd, &h, sizeof(h));
       }},
      {"length disagrees with words",
       [](int fd) {
         RecordHeader h{};
         h.kind = kRecordRequest;
         h.words = 4;
         h.length = sizeof(h) + 8;
         uint8_t buf[sizeof(h) + 8] = {};
         std::memcpy(buf, &h, sizeof(h));
         sendRaw(fd, buf, sizeof(buf));
       }},
      {"more words than the limit",
       [](int fd) {
         RecordHeader h{};
         h.kind = kRecordRequest;
         h.words = kLimit;
         h.length = uint32_t(sizeof(h) + uint64_t(kLimit) * 8);
         sendRaw(fd, &h, sizeof(h));
       }},
      {"a continuation longer than the record",
       [](int fd) {
         RecordHeader h{};
         h.kind = kRecordRequest;
         h.words = 2;
         h.length = sizeof(h) + 16;
         sendRaw(fd, &h, sizeof(h));
         uint8_t extra[64] = {};
         sendRaw(fd, extra, sizeof(extra));
       }},
  };
  for (const auto& c : cases) {
    Pair pair;
    c.write(pair.a->fd());  // a raw write on the sender's socket
    RingConsumer::Record rec;
    EXPECT_EQ(receive(*pair.b, rec, in(1000)), SocketLink::Recv::kCorrupt) << c.what;
    EXPECT_FALSE(pair.b->corruptReason().empty()) << c.what;
    EXPECT_TRUE(pair.b->ended()) << c.what;
  }
}

}  // namespace
}  // namespace hms::ffi::detail
