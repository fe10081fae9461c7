// One end of a channel over a SOCK_SEQPACKET socketpair: the transport used where shared memory
// cannot be mapped. It carries the same records as a ring (RecordHeader, optional trace context,
// one Cap'n Proto segment), so both transports share every check and every status.
//
// Framing: the first datagram of a record holds its header, trace and the first words of the
// message; the rest follow in datagrams of at most chunkBytes(). header.length is the record's
// exact size (header + trace + message), so the receiver knows how much is still to come. The
// socketpair has one writer per direction (the caller's lease; the service's busy flag), so the
// datagrams of two records never interleave. A record cut short (a send that hit its deadline
// half-way) leaves the stream unusable: the link is shut down and the channel closed.
//
// Messages are built in a scratch buffer the link owns (zeroed, as Cap'n Proto expects) and sent
// from it; a received record is read in place in the link's receive buffer until the next receive.
#pragma once

#include <capnp/message.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "hms/ffi/status.hpp"
#include "os.hpp"
#include "ring.hpp"
#include "ring_message.hpp"
#include "wait.hpp"

namespace hms::ffi::detail {

class SocketLink {
 public:
  SocketLink(UniqueFd fd, uint32_t maxMessageBytes);
  ~SocketLink();
  SocketLink(const SocketLink&) = delete;
  SocketLink& operator=(const SocketLink&) = delete;

  int fd() const noexcept { return fd_.get(); }
  uint32_t maxMessageBytes() const noexcept { return maxMessageBytes_; }
  size_t chunkBytes() const noexcept { return chunkBytes_; }

  // Zeroed space for the next message to send: maxMessageBytes long.
  kj::ArrayPtr<capnp::word> scratch() noexcept;

  // Sends the message built in `builder` (over scratch()) as one record and zeroes the scratch
  // it used. RESOURCE_EXHAUSTED over the limit (nothing sent); UNAVAILABLE when the peer is gone;
  // DEADLINE_EXCEEDED when the socket stayed full (if part of the record had gone, the link is
  // shut down: see broken()).
  Status send(RecordHeader header, const TraceContextWire* trace, RingMessageBuilder& builder,
              const WaitPolicy& policy, int64_t deadlineNs, const std::string& limitHint);
  // Sends a record of `count` words that are already one flat Cap'n Proto segment (a topic's
  // message, from its log). DEADLINE_EXCEEDED with nothing sent when the first datagram finds
  // no room before `firstDeadlineNs`; once it went, the rest wait until `restDeadlineNs` (past
  // it, the link is shut down: see broken()).
  Status sendWords(RecordHeader header, const uint64_t* words, uint32_t count,
                   const WaitPolicy& policy, int64_t firstDeadlineNs, int64_t restDeadlineNs);
  // Sends a record of a header alone (a cancel).
  Status sendHeader(RecordHeader header, const WaitPolicy& policy, int64_t deadlineNs);
  // Zeroes what `builder` wrote in the scratch, sending nothing.
  void discard(RingMessageBuilder& builder) noexcept;

  enum class Recv : uint8_t { kRecord, kEmpty, kClosed, kCorrupt };
  // Reads what has arrived, without blocking, until a record is whole (kRecord: `record` points
  // into the receive buffer, valid until the next call) or nothing more is waiting (kEmpty).
  // kClosed: the peer closed its end or died. kCorrupt: a datagram broke the framing (see
  // corruptReason()); the link is shut down.
  Recv tryReceive(RingConsumer::Record& record) noexcept;

  // Whether the socket takes more now (POLLOUT), or has failed (the next send says how). A
  // Unix socket is writable while at most a quarter of its send buffer is taken by datagrams the
  // peer has not read.
  bool writable() noexcept;

  // Waits by the policy until a datagram or a hang-up is waiting, or the deadline passes (false).
  bool waitReadable(const WaitPolicy& policy, int64_t deadlineNs) noexcept;

  // Whether the peer has gone: EOF already seen, or the socket reports a hang-up now.
  bool peerClosed() noexcept;
  // A record was cut short or corrupt: the stream cannot be used any more.
  bool broken() const noexcept { return broken_.load(std::memory_order_relaxed); }
  // EOF seen, shut down, or broken: nothing more will pass.
  bool ended() const noexcept {
    return eof_.load(std::memory_order_relaxed) || broken_.load(std::memory_order_relaxed);
  }
  const std::string& corruptReason() const noexcept { return corruptReason_; }

  // Shuts both directions down: the peer sees EOF at once, even while another copy of the
  // descriptor lives.
  void shutdown() noexcept;

 private:
  Recv corrupt(std::string why) noexcept;
  // Sends one datagram of the iovecs, waiting for socket space by the policy.
  Status sendDatagramV(const iovec* iov, int iovcnt, const WaitPolicy& policy, int64_t deadlineNs);

  UniqueFd fd_;
  uint32_t maxMessageBytes_;
  size_t chunkBytes_;
  size_t bufferBytes_;              // receive buffer: record overhead + maxMessageBytes
  capnp::word* scratch_ = nullptr;  // calloc'd: pages become resident only when written
  uint8_t* recv_ = nullptr;
  size_t received_ = 0;  // bytes of the record in progress
  size_t expected_ = 0;  // its header.length, once the first datagram arrived
  // Atomic: a service may shut a channel down (stop, unregister) while a worker uses its link.
  std::atomic<bool> eof_{false};
  std::atomic<bool> broken_{false};
  std::string corruptReason_;
};

}  // namespace hms::ffi::detail
