#include "socket_link.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace hms::ffi::detail {

namespace {

// Largest datagram we send. A SOCK_SEQPACKET datagram must fit the sender's socket buffer
// (net.core.wmem_default, 208 KiB on Debian); 64 KiB leaves room for a few in flight.
constexpr size_t kMaxChunkBytes = 64 * 1024;

void* zeroedPages(size_t bytes) {
  // calloc of this size maps fresh zero pages: untouched space costs address space only.
  void* p = std::calloc(1, std::max<size_t>(bytes, 64));
  if (!p) throw std::bad_alloc();
  return p;
}

}  // namespace

SocketLink::SocketLink(UniqueFd fd, uint32_t maxMessageBytes)
    : fd_(std::move(fd)),
      maxMessageBytes_(maxMessageBytes & ~7u),
      bufferBytes_(size_t(kRecordOverhead) + (maxMessageBytes & ~7u)) {
  int sndbuf = 0;
  socklen_t len = sizeof(sndbuf);
  size_t chunk = kMaxChunkBytes;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0 && sndbuf > 0) {
    // The kernel reports twice what it accounts for payload; stay well inside that.
    chunk = std::min(chunk, std::max<size_t>(size_t(sndbuf) / 4, 4096));
  }
  chunkBytes_ = chunk & ~size_t(7);
  scratch_ = static_cast<capnp::word*>(zeroedPages(maxMessageBytes_));
  recv_ = static_cast<uint8_t*>(zeroedPages(bufferBytes_));
}

SocketLink::~SocketLink() {
  std::free(scratch_);
  std::free(recv_);
}

kj::ArrayPtr<capnp::word> SocketLink::scratch() noexcept {
  return kj::arrayPtr(scratch_, maxMessageBytes_ / sizeof(capnp::word));
}

void SocketLink::discard(RingMessageBuilder& builder) noexcept {
  std::memset(scratch_, 0, builder.ringWordsTouched() * sizeof(capnp::word));
}

void SocketLink::shutdown() noexcept {
  if (fd_) ::shutdown(fd_.get(), SHUT_RDWR);
  eof_ = true;
}

bool SocketLink::writable() noexcept {
  pollfd p{fd_.get(), POLLOUT, 0};
  return ::poll(&p, 1, 0) != 0;  // POLLOUT, POLLERR or POLLHUP (or poll's own error)
}

Status SocketLink::sendDatagramV(const iovec* iov, int iovcnt, const WaitPolicy& policy,
                                 int64_t deadlineNs) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = size_t(iovcnt);
  const int64_t spinUntil = policy.kind == WaitKind::kSpin       ? deadlineNs
                            : policy.kind == WaitKind::kAdaptive ? monotonicNs() + policy.spinNs
                                                                 : 0;
  for (;;) {
    const ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return Status();
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
      eof_ = true;
      return Status(StatusCode::kUnavailable, "the peer closed the channel's socket");
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
      return Status(StatusCode::kInternal, errnoText("sendmsg on a channel socket", errno));
    }
    const int64_t now = monotonicNs();
    if (now >= deadlineNs) {
      return Status(StatusCode::kDeadlineExceeded,
                    "the channel's socket stayed full until the deadline");
    }
    if (now < spinUntil) {
      cpuRelax();
      continue;
    }
    pollfd p{fd_.get(), POLLOUT, 0};
    const int64_t leftMs = (deadlineNs - now + 999'999) / 1'000'000;
    (void)::poll(&p, 1, int(std::min<int64_t>(leftMs, 1000)));
  }
}

Status SocketLink::send(RecordHeader header, const TraceContextWire* trace,
                        RingMessageBuilder& builder, const WaitPolicy& policy, int64_t deadlineNs,
                        const std::string& limitHint) {
  if (broken_ || eof_) {
    discard(builder);
    return Status(StatusCode::kUnavailable, "the channel's socket is closed");
  }
  // The message as one segment: in place in the scratch (the usual case, no copy), or flattened
  // when it spilled out of it.
  auto exhausted = [&](size_t bytes) {
    discard(builder);
    return Status(StatusCode::kResourceExhausted,
                  "message of about " + std::to_string(bytes) + " bytes exceeds the limit of " +
                      std::to_string(maxMessageBytes_) + " bytes; " + limitHint);
  };
  kj::ArrayPtr<const capnp::word> words;
  std::optional<capnp::MallocMessageBuilder> flat;
  if (const auto inPlace = builder.inPlaceWords()) {
    words = *inPlace;  // within the scratch, so within the limit
  } else {
    size_t total = 0;
    for (auto seg : builder.getSegmentsForOutput()) total += seg.size();
    if (total * 8 > maxMessageBytes_) return exhausted(total * 8);
    flat.emplace(uint(total + 16), capnp::AllocationStrategy::FIXED_SIZE);
    flat->setRoot(builder.getRoot<capnp::AnyPointer>().asReader());
    auto segs = flat->getSegmentsForOutput();
    if (segs.size() != 1 || segs[0].size() * 8 > maxMessageBytes_) return exhausted(total * 8);
    words = segs[0];
  }
  const size_t offset = payloadOffset(header.flags);
  header.words = uint32_t(words.size());
  header.length = uint32_t(offset + words.size() * 8);

  const auto* bytes = reinterpret_cast<const uint8_t*>(words.begin());
  const size_t totalBytes = words.size() * 8;
  size_t sent = std::min(totalBytes, chunkBytes_ - offset);
  iovec iov[3];
  int n = 0;
  iov[n++] = {&header, sizeof(header)};
  if (trace) iov[n++] = {const_cast<TraceContextWire*>(trace), sizeof(TraceContextWire)};
  if (sent) iov[n++] = {const_cast<uint8_t*>(bytes), sent};
  Status s = sendDatagramV(iov, n, policy, deadlineNs);
  while (s && sent < totalBytes) {
    const size_t part = std::min(totalBytes - sent, chunkBytes_);
    iovec more{const_cast<uint8_t*>(bytes + sent), part};
    s = sendDatagramV(&more, 1, policy, deadlineNs);
    if (!s) {
      // The receiver holds part of a record it can never complete: end the stream.
      broken_ = true;
      shutdown();
      break;
    }
    sent += part;
  }
  discard(builder);
  return s;
}

Status SocketLink::sendWords(RecordHeader header, const uint64_t* words, uint32_t count,
                             const WaitPolicy& policy, int64_t firstDeadlineNs,
                             int64_t restDeadlineNs) {
  if (broken_ || eof_) return Status(StatusCode::kUnavailable, "the socket is closed");
  if (uint64_t(count) * 8 > maxMessageBytes_) {
    return Status(StatusCode::kResourceExhausted, "message over the socket's limit");
  }
  header.flags &= uint16_t(~kRecordHasTrace);
  header.words = count;
  header.length = uint32_t(sizeof(RecordHeader) + uint64_t(count) * 8);
  const auto* bytes = reinterpret_cast<const uint8_t*>(words);
  const size_t totalBytes = size_t(count) * 8;
  size_t sent = std::min(totalBytes, chunkBytes_ - sizeof(RecordHeader));
  iovec iov[2] = {{&header, sizeof(header)}, {const_cast<uint8_t*>(bytes), sent}};
  Status s = sendDatagramV(iov, sent ? 2 : 1, policy, firstDeadlineNs);
  while (s && sent < totalBytes) {
    const size_t part = std::min(totalBytes - sent, chunkBytes_);
    iovec more{const_cast<uint8_t*>(bytes + sent), part};
    s = sendDatagramV(&more, 1, policy, restDeadlineNs);
    if (!s) {
      broken_ = true;
      shutdown();
      break;
    }
    sent += part;
  }
  return s;
}

Status SocketLink::sendHeader(RecordHeader header, const WaitPolicy& policy, int64_t deadlineNs) {
  if (broken_ || eof_) return Status(StatusCode::kUnavailable, "the channel's socket is closed");
  header.flags &= uint16_t(~kRecordHasTrace);
  header.words = 0;
  header.length = sizeof(RecordHeader);
  iovec iov{&header, sizeof(header)};
  return sendDatagramV(&iov, 1, policy, deadlineNs);
}

SocketLink::Recv SocketLink::corrupt(std::string why) noexcept {
  broken_ = true;
  corruptReason_ = std::move(why);
  shutdown();
  return Recv::kCorrupt;
}

SocketLink::Recv SocketLink::tryReceive(RingConsumer::Record& record) noexcept {
  if (broken_) return Recv::kCorrupt;
  if (eof_) return Recv::kClosed;
  for (;;) {
    if (expected_ != 0 && received_ == expected_) {
      // The previous call returned this record; start the next one.
      received_ = expected_ = 0;
    }
    const size_t room = expected_ ? expected_ - received_ : bufferBytes_;
    // MSG_TRUNC: the datagram's real length, so one larger than the room is caught, not cut.
    const ssize_t n = ::recv(fd_.get(), recv_ + received_, room, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Recv::kEmpty;
      eof_ = true;
      return Recv::kClosed;
    }
    if (n == 0) {
      // A zero-length datagram is never sent; 0 means the peer's end is closed.
      eof_ = true;
      return Recv::kClosed;
    }
    if (size_t(n) > room) return corrupt("a datagram larger than the record it belongs to");
    if (expected_ == 0) {
      if (size_t(n) < sizeof(RecordHeader)) return corrupt("a record shorter than its header");
      std::memcpy(&record.header, recv_, sizeof(RecordHeader));
      const RecordHeader& h = record.header;
      if (h.kind < kRecordRequest || h.kind > kRecordKindLast) {
        return corrupt("a record of unknown kind " + std::to_string(h.kind));
      }
      const size_t offset = payloadOffset(h.flags);
      if (uint64_t(h.words) * 8 > maxMessageBytes_ || h.length != offset + uint64_t(h.words) * 8 ||
          size_t(n) > h.length) {
        return corrupt("a record whose length, size and header disagree");
      }
      expected_ = h.length;
    }
    received_ += size_t(n);
    if (received_ < expected_) continue;
    // The header from the buffer, not from `record`: a record's datagrams may come over several
    // calls, each with a record of its caller's that holds nothing of the earlier ones.
    std::memcpy(&record.header, recv_, sizeof(RecordHeader));
    record.header.length = uint32_t(expected_);
    record.base = recv_;
    record.trace = (record.header.flags & kRecordHasTrace)
                       ? reinterpret_cast<const TraceContextWire*>(recv_ + sizeof(RecordHeader))
                       : nullptr;
    record.words = reinterpret_cast<const uint64_t*>(recv_ + payloadOffset(record.header.flags));
    return Recv::kRecord;
  }
}

bool SocketLink::waitReadable(const WaitPolicy& policy, int64_t deadlineNs) noexcept {
  if (eof_ || broken_) return true;
  pollfd p{fd_.get(), POLLIN, 0};
  if (policy.kind != WaitKind::kBlocking) {
    const int64_t spinUntil =
        policy.kind == WaitKind::kSpin ? deadlineNs : monotonicNs() + policy.spinNs;
    for (;;) {
      if (::poll(&p, 1, 0) > 0) return true;
      const int64_t now = monotonicNs();
      if (now >= deadlineNs) return false;
      if (now >= spinUntil) break;
    }
  }
  for (;;) {
    const int64_t now = monotonicNs();
    if (now >= deadlineNs) return ::poll(&p, 1, 0) > 0;
    const int64_t leftMs =
        deadlineNs == kNoDeadline ? -1 : (deadlineNs - now + 999'999) / 1'000'000;
    const int n = ::poll(&p, 1, leftMs < 0 ? -1 : int(std::min<int64_t>(leftMs, 1 << 30)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return true;  // let the receive report the error
  }
}

bool SocketLink::peerClosed() noexcept {
  if (eof_ || broken_) return true;
  pollfd p{fd_.get(), POLLIN, 0};
  if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) return true;
  return false;
}

}  // namespace hms::ffi::detail
