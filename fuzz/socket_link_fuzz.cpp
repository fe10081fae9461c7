// libFuzzer target: the receiving end of a channel over a socket (libclient/src/socket_link.hpp),
// the transport used where shared memory cannot be mapped, whose peer may send any datagrams.
// The input is a script: send a datagram of the next N bytes, receive, or close the peer's end.
// Whatever the datagrams, tryReceive() answers kRecord, kEmpty, kClosed or kCorrupt; a record it
// hands out lies inside the link's receive buffer, as long as its header says, its message
// within it and no larger than the link's limit; once corrupt or closed it stays so. A record
// whose message validSingleSegmentMessage() accepts is read as the library reads one.
//
//   scripts/fuzz.sh socket-link 600
#include <capnp/any.h>
#include <capnp/message.h>
#include <kj/exception.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "fuzz_support.hpp"
#include "os.hpp"
#include "socket_link.hpp"

namespace {

using namespace hms::ffi;
using namespace hms::ffi::detail;

constexpr uint32_t kMaxMessageBytes = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  UniqueFd peer(fds[1]);
  SocketLink link(UniqueFd(fds[0]), kMaxMessageBytes);
  size_t at = 0;
  bool ended = false;  // kClosed or kCorrupt seen: the link must stay there
  for (int steps = 0; steps < 512 && at < size; ++steps) {
    const uint8_t op = data[at++];
    if (op % 4 == 3) {  // the peer closes its end
      peer.reset();
      continue;
    }
    if (op % 4 != 0) {  // the peer sends a datagram of the next (op >> 2) * 8 + 1.. bytes
      const size_t want = size_t(op >> 2) * 8 + (op % 4 == 2 ? 32 : 1);
      const size_t n = std::min(want, size - at);
      if (peer && n > 0) (void)::send(peer.get(), data + at, n, MSG_DONTWAIT | MSG_NOSIGNAL);
      at += n;
      continue;
    }
    RingConsumer::Record rec;
    const SocketLink::Recv r = link.tryReceive(rec);
    if (ended) HMS_FUZZ_CHECK(r == SocketLink::Recv::kClosed || r == SocketLink::Recv::kCorrupt);
    if (r == SocketLink::Recv::kClosed || r == SocketLink::Recv::kCorrupt) {
      ended = true;
      continue;
    }
    if (r != SocketLink::Recv::kRecord) continue;
    HMS_FUZZ_CHECK(rec.header.kind >= kRecordRequest && rec.header.kind <= kRecordKindLast);
    HMS_FUZZ_CHECK(uint64_t(rec.header.words) * 8 <= kMaxMessageBytes);
    const auto* base = rec.base;
    const auto* words = reinterpret_cast<const uint8_t*>(rec.words);
    HMS_FUZZ_CHECK(words == base + payloadOffset(rec.header.flags));
    HMS_FUZZ_CHECK(words + uint64_t(rec.header.words) * 8 == base + rec.header.length);
    fuzz::readInPlace(rec.words, rec.header.words);
  }
  return 0;
}
