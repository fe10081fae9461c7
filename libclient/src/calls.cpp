// The data path: CallerChannel (a caller's end of a channel) and the Dispatcher (a service's).
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include "client_impl.hpp"
#include "hms/ffi/error.capnp.h"
#include "log.hpp"
#include "message_check.hpp"

namespace hms::ffi {

std::chrono::nanoseconds CallContext::timeLeft() const noexcept {
  if (deadlineNs_ == detail::kNoDeadline) return std::chrono::nanoseconds::max();
  return std::chrono::nanoseconds(std::max<int64_t>(0, deadlineNs_ - detail::monotonicNs()));
}

namespace detail {

namespace {

int64_t deadlineFrom(const CallOptions& o, const ClientOptions& c) {
  const auto timeout = o.timeout.count() > 0 ? o.timeout : c.defaultTimeout;
  return monotonicNs() + timeout.count();
}

// Maps a channel segment handed over by the broker and checks what the broker wrote in it.
Result<Mapping> attachChannel(int fd, uint64_t claimedBytes) {
  auto actual = segmentSize(fd);
  if (!actual.ok()) return actual.status();
  if (*actual != claimedBytes || claimedBytes < kPageBytes + 2 * kMinRingBytes) {
    return Status(StatusCode::kDataLoss, "channel segment size does not match the broker's word");
  }
  auto map = Mapping::map(fd, claimedBytes, true);
  if (!map.ok()) return map.status();
  const auto* h = map->as<ChannelHeader>();
  const uint32_t ring = h->ringBytes;
  if (h->magic != kChannelMagic || h->layoutVersion != kChannelLayoutVersion) {
    return Status(StatusCode::kFailedPrecondition,
                  "channel segment has layout version " + std::to_string(h->layoutVersion) +
                      ", this library speaks " + std::to_string(kChannelLayoutVersion) +
                      "; use a libhmsffi of the broker's release");
  }
  if (h->headerBytes != kPageBytes || ring < kMinRingBytes || (ring & (ring - 1)) != 0 ||
      channelSegmentBytes(ring) != claimedBytes ||
      h->maxMessageBytes != maxMessageBytesForRing(ring)) {
    return Status(StatusCode::kDataLoss, "channel segment header is inconsistent");
  }
  return map;
}

}  // namespace

// ---- method reflection ---------------------------------------------------------------------

MethodRef findMethod(capnp::InterfaceSchema iface, uint64_t paramId, uint64_t resultId) {
  MethodRef ref;
  for (auto m : iface.getMethods()) {
    if (m.getParamType().getProto().getId() == paramId &&
        m.getResultType().getProto().getId() == resultId) {
      if (ref.found) {
        // Two methods with the same explicit param and result structs: ambiguous by type.
        ref.found = false;
        ref.name = "(ambiguous: several methods take and return these structs)";
        return ref;
      }
      ref.found = true;
      ref.ordinal = m.getOrdinal();
      ref.paramSchemaId = paramId;
      ref.resultSchemaId = resultId;
      ref.name = m.getProto().getName().cStr();
    }
  }
  return ref;
}

std::vector<MethodInfo> describeMethods(capnp::InterfaceSchema iface) {
  std::vector<MethodInfo> out;
  for (auto m : iface.getMethods()) {
    out.push_back(MethodInfo{m.getProto().getName().cStr(), m.getOrdinal(),
                             m.getParamType().getProto().getId(),
                             m.getResultType().getProto().getId()});
  }
  return out;
}

// ---- caller side -----------------------------------------------------------------------------

CallerChannel::CallerChannel(std::shared_ptr<ClientImpl> c, std::string id, VersionRange r,
                             uint64_t ifaceId, std::string ifaceName)
    : client(std::move(c)),
      serviceId(std::move(id)),
      range(std::move(r)),
      interfaceId(ifaceId),
      interfaceName(std::move(ifaceName)) {}

CallerChannel::~CallerChannel() {
  if (isOpen) closeChannel(kEndClosed);
}

void CallerChannel::closeChannel(uint32_t myState) {
  if (!isOpen) return;
  if (link) {
    link->shutdown();  // the service reads EOF at once
    link.reset();
  } else {
    storeRelease(hdr_->callerState, myState);
    if (doorbellMap.data()) wakeAlways(doorbellMap.as<DoorbellSegment>()->wake);
  }
  const uint64_t id = channelId;
  client->sendOneWay([id](wire::Request::Builder req) { req.setCloseChannel(id); });
  isOpen = false;
  hdr_ = nullptr;
  requests = RingProducer();
  responses = RingConsumer();
  segment = Mapping();
  doorbellMap = Mapping();
}

Status CallerChannel::peerGoneStatus() const {
  const uint32_t state = hdr_ ? loadAcquire(hdr_->serviceState) : uint32_t(kEndDead);
  const std::string who = "service " + serviceId + " " + service.version.toString() + " (pid " +
                          std::to_string(service.providerPid) + ")";
  if (link) {
    if (link->broken() && !link->corruptReason().empty()) {
      return Status(StatusCode::kDataLoss,
                    "the socket from " + who + " broke its framing (" + link->corruptReason() +
                        "); the channel was closed, the next call opens another",
                    serviceId);
    }
    return Status(StatusCode::kUnavailable,
                  who +
                      " closed the channel's socket: it stopped serving or went away; a call in "
                      "flight may or may not have run; the next call looks for another provider",
                  serviceId);
  }
  switch (state) {
    case kEndClosed:
      return Status(StatusCode::kUnavailable,
                    who +
                        " closed the channel (it stopped serving); the next call looks for "
                        "another provider",
                    serviceId);
    case kEndCorrupt:
      return Status(StatusCode::kDataLoss,
                    who + " found the channel's shared memory corrupt and closed it", serviceId);
    default:
      return Status(StatusCode::kUnavailable,
                    who +
                        " went away (its process exited or lost the broker); a call in flight "
                        "may or may not have run; the next call looks for another provider",
                    serviceId);
  }
}

Status CallerChannel::acquire(int64_t deadline) {
  std::unique_lock lock(leaseMu_);
  if (leased_ && owner_ == std::this_thread::get_id()) {
    return Status(StatusCode::kFailedPrecondition,
                  "this thread still holds a Call or Reply of the Stub for " + serviceId +
                      "; destroy it before the next call (or bind another Stub)");
  }
  const auto left = std::chrono::nanoseconds(deadline - monotonicNs());
  if (!leaseCv_.wait_for(lock, left, [&] { return !leased_; })) {
    return Status(StatusCode::kDeadlineExceeded,
                  "the Stub for " + serviceId + " stayed busy with another thread's call");
  }
  leased_ = true;
  owner_ = std::this_thread::get_id();
  return Status();
}

void CallerChannel::releaseLease() {
  {
    std::lock_guard lock(leaseMu_);
    leased_ = false;
    owner_ = {};
  }
  leaseCv_.notify_one();
}

Status CallerChannel::open(bool initial) {
  if (isOpen) closeChannel(kEndClosed);
  auto view = client->registryView();
  if (!view.ok()) return view.status();
  const ServiceInfo* best = nullptr;
  std::string live;
  for (const auto& s : (*view)->services) {
    if (s.id != serviceId) continue;
    live += (live.empty() ? "" : ", ") + s.version.toString();
    if (range.contains(s.version) && (!best || s.version > best->version)) best = &s;
  }
  if (!best) {
    const std::string what = live.empty() ? "no live provider of service '" + serviceId + "'"
                                          : "no live version of '" + serviceId + "' in range '" +
                                                range.text() + "' (live: " + live + ")";
    return Status(initial ? StatusCode::kNotFound : StatusCode::kUnavailable,
                  what + "; start a provider or widen the version range");
  }
  if (best->interfaceId != interfaceId) {
    return Status(StatusCode::kFailedPrecondition,
                  "service '" + serviceId + "' " + best->version.toString() + " implements " +
                      best->interfaceName + ", not " + interfaceName +
                      "; bind it with the interface its provider registered");
  }
  ServiceInfo info = *best;
  auto reply = client->roundTrip(
      [&](wire::Request::Builder req) { req.initOpenChannel().setServiceKey(info.key); });
  if (!reply.ok()) return reply.status();
  auto r = reply->reply();
  // What both transports record once their end is attached.
  const auto bound = [&](Transport t, uint32_t ring) {
    channelId = r.getOpenChannel().getChannelId();
    service = std::move(info);
    limitHint = "the limit comes from the rings of service " + serviceId + " (" +
                std::to_string(ring) +
                " bytes each); its provider can raise ServiceOptions::ringBytes";
    transport = t;
    isOpen = true;
    return Status();
  };
  if (r.isOpenChannel() && r.getOpenChannel().getTransport() == wire::Transport::SOCKET) {
    const uint32_t maxMessage = r.getOpenChannel().getMaxMessageBytes();
    if (reply->fds.empty() || maxMessage == 0 || maxMessage > kMaxRingBytes) {
      return Status(StatusCode::kInternal, "the broker's open reply lacks the channel's socket");
    }
    link = std::make_unique<SocketLink>(std::move(reply->fds[0]), maxMessage);
    maxMessageBytes = link->maxMessageBytes();
    return bound(Transport::kSocket, info.ringBytes);
  }
  if (!r.isOpenChannel() || reply->fds.size() < 2) {
    return Status(StatusCode::kInternal, "the broker's open reply lacks the channel's segments");
  }
  auto seg = attachChannel(reply->fds[0].get(), r.getOpenChannel().getSegmentBytes());
  if (!seg.ok()) return seg.status();
  auto db = Mapping::map(reply->fds[1].get(), kDoorbellBytes, true);
  if (!db.ok()) return db.status();
  if (db->as<DoorbellSegment>()->magic != kDoorbellMagic) {
    return Status(StatusCode::kDataLoss, "the service's doorbell segment is not one");
  }
  segment = std::move(*seg);
  doorbellMap = std::move(*db);
  hdr_ = segment.as<ChannelHeader>();
  const uint32_t ring = hdr_->ringBytes;
  maxMessageBytes = hdr_->maxMessageBytes;
  uint8_t* base = segment.data() + kPageBytes;
  requests = RingProducer(&hdr_->request, base, ring, &doorbellMap.as<DoorbellSegment>()->wake);
  responses = RingConsumer(&hdr_->response, base + ring, ring);
  return bound(Transport::kSharedMemory, ring);
}

Result<capnp::MessageBuilder*> beginCall(CallerChannel& ch, const MethodRef& method,
                                         const CallOptions& options) noexcept {
  try {
    const int64_t deadline = deadlineFrom(options, ch.client->options);
    if (auto s = ch.acquire(deadline); !s) return s;
    auto fail = [&](Status s) -> Result<capnp::MessageBuilder*> {
      ch.releaseLease();
      return s;
    };
    if (ch.client->closing()) {
      return fail(Status(StatusCode::kUnavailable,
                         "the Client of this Stub for " + ch.serviceId +
                             " was destroyed; keep the Client alive as long as its Stubs"));
    }
    if (!method.found) {
      return fail(Status(StatusCode::kInvalidArgument,
                         "the method is not found in " + ch.interfaceName + " " + method.name));
    }
    if (!ch.isOpen || ch.peerGone()) {
      if (auto s = ch.open(false); !s) return fail(s);
    }
    const MethodInfo* remote = nullptr;
    for (const auto& m : ch.service.methods) {
      if (m.ordinal == method.ordinal) remote = &m;
    }
    if (!remote) {
      return fail(Status(StatusCode::kUnimplemented,
                         "service '" + ch.serviceId + "' " + ch.service.version.toString() +
                             " has no method '" + method.name + "' (ordinal " +
                             std::to_string(method.ordinal) +
                             "): its provider implements an older " + ch.interfaceName +
                             "; ask for a version range that has it",
                         ch.serviceId));
    }
    if (remote->paramSchemaId != method.paramSchemaId ||
        remote->resultSchemaId != method.resultSchemaId) {
      return fail(Status(StatusCode::kFailedPrecondition,
                         "schema mismatch for " + ch.serviceId + "." + method.name +
                             ": the provider's params/results types differ from this caller's; "
                             "rebuild both from the same .capnp",
                         ch.serviceId));
    }
    const uint16_t flags = options.trace ? kRecordHasTrace : 0;
    if (!ch.link) {
      // Replies to calls that timed out earlier are still in the ring: drop them now.
      RingConsumer::Record stale;
      for (;;) {
        const RingStatus st = ch.responses.peek(stale);
        if (st == RingStatus::kEmpty) break;
        if (st == RingStatus::kCorrupt) {
          ch.closeChannel(kEndCorrupt);
          return fail(Status(StatusCode::kDataLoss,
                             "the response ring of the channel to " + ch.serviceId +
                                 " is corrupt; the channel was closed, the next call opens another",
                             ch.serviceId));
        }
        ch.responses.release(stale);
      }
      const uint32_t offset = payloadOffset(flags);
      const uint32_t minBytes = offset + 64;
      for (;;) {
        const RingStatus st =
            ch.requests.tryReserve(minBytes, offset + ch.maxMessageBytes, ch.slot);
        if (st == RingStatus::kOk) break;
        if (st == RingStatus::kCorrupt) {
          ch.closeChannel(kEndCorrupt);
          return fail(Status(StatusCode::kDataLoss, "the request ring to " + ch.serviceId +
                                                        " is corrupt; the channel was closed"));
        }
        const bool ready = waitFor(ch.requests.spaceWake(), ch.client->policy, deadline, [&] {
          return ch.requests.hasSpaceFor(minBytes) || ch.peerGone();
        });
        if (ch.peerGone()) return fail(ch.peerGoneStatus());
        if (!ready) {
          return fail(
              Status(StatusCode::kDeadlineExceeded,
                     "the request ring to " + ch.serviceId + " stayed full until the deadline",
                     ch.serviceId));
        }
      }
    }
    ch.callId = ch.nextCallId++;
    ch.deadlineNs = deadline;
    ch.methodName = method.name;
    ch.pendingHeader = RecordHeader{};
    ch.pendingHeader.kind = kRecordRequest;
    ch.pendingHeader.flags = flags;
    ch.pendingHeader.callId = ch.callId;
    ch.pendingHeader.deadlineNs = deadline;
    ch.pendingHeader.method = method.ordinal;
    if (options.trace) {
      std::memcpy(ch.trace.traceId, options.trace->traceId.data(), 16);
      std::memcpy(ch.trace.spanId, options.trace->spanId.data(), 8);
      ch.trace.traceFlags = options.trace->flags;
    }
    if (ch.link) {
      // Built in the link's scratch; replies left by calls that timed out are skipped when the
      // reply is awaited (their call ids differ).
      ch.builder.emplace(ch.link->scratch());
    } else {
      const uint32_t offset = payloadOffset(flags);
      auto* space = reinterpret_cast<capnp::word*>(ch.slot.record + offset);
      ch.builder.emplace(kj::arrayPtr(space, (ch.slot.bytes - offset) / sizeof(capnp::word)));
    }
    return static_cast<capnp::MessageBuilder*>(&*ch.builder);
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal, std::string("beginCall: ") + e.what());
  }
}

void abandonCall(CallerChannel& ch) noexcept {
  if (!ch.builder) return;
  const uint32_t offset = payloadOffset(ch.pendingHeader.flags);
  if (ch.link) {
    ch.link->discard(*ch.builder);
  } else {
    ch.requests.abort(ch.slot, uint32_t(offset + ch.builder->ringWordsTouched() * 8));
  }
  ch.builder.reset();
  ch.releaseLease();
}

// Waits for the reply to ch.callId on a socket channel, skipping the late replies of calls that
// timed out earlier. On error the channel is closed where it can no longer be used.
static Status awaitSocketReply(CallerChannel& ch, RingConsumer::Record& rec) {
  SocketLink& link = *ch.link;
  for (;;) {
    // Wait first: the reply is seldom there the moment the request left, and a receive that
    // finds nothing is a syscall wasted.
    if (!link.waitReadable(ch.client->policy, ch.deadlineNs)) {
      return Status(StatusCode::kDeadlineExceeded,
                    "no reply from " + ch.serviceId + "." + ch.methodName + " before the deadline",
                    ch.serviceId);
    }
    switch (link.tryReceive(rec)) {
      case SocketLink::Recv::kRecord:
        if (rec.header.kind != kRecordResponse) {
          Status s(
              StatusCode::kDataLoss,
              "a request record on the socket from " + ch.serviceId + "; the channel was closed",
              ch.serviceId);
          ch.closeChannel(kEndCorrupt);
          return s;
        }
        if (rec.header.callId == ch.callId) return Status();
        continue;  // the late reply of an earlier call
      case SocketLink::Recv::kClosed:
      case SocketLink::Recv::kCorrupt: {
        Status s = ch.peerGoneStatus();
        ch.closeChannel(kEndClosed);
        return s;
      }
      case SocketLink::Recv::kEmpty:
        break;  // part of a record: wait for the rest
    }
  }
}

Result<capnp::MessageReader*> finishCall(CallerChannel& ch) noexcept {
  auto fail = [&](Status s) -> Result<capnp::MessageReader*> {
    ch.releaseLease();
    return s;
  };
  Status published;
  const TraceContextWire* trace = (ch.pendingHeader.flags & kRecordHasTrace) ? &ch.trace : nullptr;
  try {
    if (ch.link) {
      published = ch.link->send(ch.pendingHeader, trace, *ch.builder, ch.client->policy,
                                ch.deadlineNs, ch.limitHint);
      if (published.code() == StatusCode::kUnavailable) published = ch.peerGoneStatus();
    } else {
      published = publishRecord(
          ch.requests, ch.slot, *ch.builder, ch.pendingHeader, trace, ch.maxMessageBytes,
          ch.limitHint, [&](uint32_t bytes) -> Status {
            const bool ok = waitFor(ch.requests.spaceWake(), ch.client->policy, ch.deadlineNs, [&] {
              return ch.requests.hasSpaceFor(bytes) || ch.peerGone();
            });
            if (ch.peerGone()) return ch.peerGoneStatus();
            if (!ok) return Status(StatusCode::kDeadlineExceeded, "request ring stayed full");
            return Status();
          });
    }
  } catch (const kj::Exception& e) {
    published = Status(StatusCode::kInternal,
                       std::string("building the request failed: ") + e.getDescription().cStr());
  }
  ch.builder.reset();
  if (!published) {
    if (ch.link && (ch.link->broken() || ch.link->peerClosed())) ch.closeChannel(kEndClosed);
    published.withSource(ch.serviceId);
    return fail(published);
  }

  RingConsumer::Record rec;
  if (ch.link) {
    if (auto s = awaitSocketReply(ch, rec); !s) return fail(s);
  } else {
    for (;;) {
      const bool ready = waitFor(ch.hdr_->response.consumerWake, ch.client->policy, ch.deadlineNs,
                                 [&] { return ch.responses.hasData() || ch.peerGone(); });
      const RingStatus st = ch.responses.peek(rec);
      if (st == RingStatus::kOk) {
        if (rec.header.kind != kRecordResponse) {
          ch.closeChannel(kEndCorrupt);
          return fail(Status(StatusCode::kDataLoss,
                             "a request record in the response ring from " + ch.serviceId +
                                 "; the channel was closed",
                             ch.serviceId));
        }
        if (rec.header.callId != ch.callId) {
          ch.responses.release(rec);  // the late reply of an earlier call
          continue;
        }
        break;
      }
      if (st == RingStatus::kCorrupt) {
        ch.closeChannel(kEndCorrupt);
        return fail(Status(StatusCode::kDataLoss,
                           "the response ring from " + ch.serviceId +
                               " is corrupt; the channel was closed, the next call opens another",
                           ch.serviceId));
      }
      if (ch.peerGone()) {
        Status s = ch.peerGoneStatus();
        ch.closeChannel(kEndClosed);
        return fail(s);
      }
      if (!ready) {
        return fail(
            Status(StatusCode::kDeadlineExceeded,
                   "no reply from " + ch.serviceId + "." + ch.methodName + " before the deadline",
                   ch.serviceId));
      }
    }
  }
  if (!validSingleSegmentMessage(rec.words, rec.header.words)) {
    if (!ch.link) ch.responses.release(rec);
    return fail(Status(StatusCode::kDataLoss,
                       "the reply from " + ch.serviceId + "." + ch.methodName +
                           " is not a valid Cap'n Proto message",
                       ch.serviceId));
  }
  ch.replySegment[0] =
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(rec.words), rec.header.words);
  ch.reader.emplace(kj::arrayPtr(ch.replySegment, 1), ringReaderOptions(rec.header.words));
  if (rec.header.status != 0) {
    Status s(statusCodeFromWire(rec.header.status), "", ch.serviceId);
    try {
      auto err = ch.reader->getRoot<wire::RpcError>();
      Status::Details details;
      for (auto d : err.getDetails()) details.emplace_back(d.getKey().cStr(), d.getValue().cStr());
      s = Status(statusCodeFromWire(rec.header.status), err.getMessage().cStr(),
                 err.getSource().size() ? err.getSource().cStr() : ch.serviceId,
                 std::move(details));
    } catch (const kj::Exception&) {
    }
    ch.reader.reset();
    if (!ch.link) ch.responses.release(rec);
    return fail(s);
  }
  ch.replyRecord = rec;
  ch.holdingReply = true;
  return static_cast<capnp::MessageReader*>(&*ch.reader);
}

void releaseReply(CallerChannel& ch) noexcept {
  if (!ch.holdingReply) return;
  ch.reader.reset();
  // A socket reply lives in the link's receive buffer until the next receive: nothing to free.
  if (ch.isOpen && !ch.link) ch.responses.release(ch.replyRecord);
  ch.holdingReply = false;
  ch.releaseLease();
}

const ServiceInfo& boundService(const CallerChannel& ch) noexcept {
  return ch.service;
}

Transport boundTransport(const CallerChannel& ch) noexcept {
  return ch.transport;
}

// ---- service side ----------------------------------------------------------------------------

struct Dispatcher::Service {
  uint64_t tag;
  ServiceSpec spec;
  std::string limitHint;
  std::vector<const Handler*> byOrdinal;
  std::vector<std::string> methodNames;
  std::unique_ptr<moodycamel::BlockingConcurrentQueue<Work>> work;
  std::vector<std::thread> workers;
  bool removed = false;
};

struct Dispatcher::Channel {
  uint64_t id = 0;
  std::shared_ptr<Service> service;
  Mapping segment;
  ChannelHeader* hdr = nullptr;
  RingConsumer requests;
  RingProducer responses;
  uint32_t maxMessageBytes = 0;
  pid_t callerPid = 0;
  uid_t callerUid = 0;
  std::string callerName;
  std::atomic<bool> busy{false};  // a worker holds the channel's current request
  bool closed = false;
  std::unique_ptr<SocketLink> link;  // socket channels (served by the socket thread)
  bool armed = false;                // in the socket thread's epoll set
};

Dispatcher::Dispatcher(ClientImpl& client) : client_(client), doorbell_(&client.doorbellWake()) {
  thread_ = std::thread([this] { run(); });
}

Dispatcher::~Dispatcher() {
  stop();
}

void Dispatcher::post(Event ev) {
  {
    std::lock_guard lock(postMu_);
    events_.enqueue(postToken_, std::move(ev));
  }
  pendingEvents_.fetch_add(1, std::memory_order_release);
  wakeAlways(*doorbell_);
}

void Dispatcher::addService(uint64_t tag, const ServiceSpec& spec) {
  auto s = std::make_shared<Service>();
  s->tag = tag;
  s->spec = spec;
  s->limitHint = "the limit comes from ServiceOptions::ringBytes of " + spec.id + " (" +
                 std::to_string(spec.options.ringBytes) + " bytes per ring); raise it";
  uint16_t maxOrdinal = 0;
  for (const auto& m : spec.methods) maxOrdinal = std::max(maxOrdinal, m.ordinal);
  s->byOrdinal.assign(size_t(maxOrdinal) + 1, nullptr);
  s->methodNames.assign(size_t(maxOrdinal) + 1, "");
  for (const auto& m : spec.methods) s->methodNames[m.ordinal] = m.name;
  for (const auto& [ordinal, h] : s->spec.handlers) {
    if (ordinal < s->byOrdinal.size()) s->byOrdinal[ordinal] = &h;
  }
  if (spec.options.workerThreads > 0) {
    s->work = std::make_unique<moodycamel::BlockingConcurrentQueue<Work>>();
    for (unsigned i = 0; i < spec.options.workerThreads; ++i) {
      s->workers.emplace_back([this, svc = s.get()] {
        Work w;
        for (;;) {
          svc->work->wait_dequeue(w);
          if (w.channel == nullptr) return;  // stop
          if (w.channel->link) {
            handleSocket(*w.channel, w.record);
            w.channel->busy.store(false, std::memory_order_release);
            toSocketThread({});  // re-arms the channel
          } else {
            handle(*w.channel, w.record);
            w.channel->busy.store(false, std::memory_order_release);
            wakeAlways(*doorbell_);
          }
        }
      });
    }
  }
  post(Event{Event::kAddService, tag, std::move(s), {}});
}

void Dispatcher::removeService(uint64_t tag) {
  auto done = std::make_shared<std::promise<void>>();
  auto taken = done->get_future();
  post(Event{Event::kRemoveService, tag, {}, {}, done});
  const auto self = std::this_thread::get_id();
  if (self == thread_.get_id() || self == socketThreadId_.load() || stopping_.load()) return;
  // Bounded, as a guard: neither thread waits for anything this caller holds.
  taken.wait_for(std::chrono::seconds(10));
}

void Dispatcher::channelOpened(ChannelOpenedEvent ev) {
  Event e{Event::kOpen, ev.channelId, {}, std::move(ev)};
  post(std::move(e));
}

void Dispatcher::channelClosed(uint64_t channelId) {
  post(Event{Event::kClose, channelId, {}, {}});
}

void Dispatcher::stop() {
  if (stopping_.exchange(true)) return;
  post(Event{Event::kStop, 0, {}, {}});
  if (thread_.joinable()) thread_.join();
}

bool Dispatcher::drainEvents() {
  if (pendingEvents_.load(std::memory_order_acquire) == 0) {
    reapClosed();
    return false;
  }
  Event ev;
  bool any = false;
  while (events_.try_dequeue(ev)) {
    pendingEvents_.fetch_sub(1, std::memory_order_relaxed);
    any = true;
    switch (ev.kind) {
      case Event::kAddService:
        services_[ev.id] = ev.service;
        break;
      case Event::kRemoveService: {
        auto it = services_.find(ev.id);
        if (it == services_.end()) {
          if (ev.done) ev.done->set_value();
          break;
        }
        it->second->removed = true;
        for (auto& ch : channels_) {
          if (ch->service == it->second) closeChannelLocal(*ch, kEndClosed, "service stopped");
        }
        if (socketThread_.joinable()) {
          toSocketThread([this, svc = it->second, done = ev.done] {
            for (auto& ch : socketChannels_) {
              if (ch->service == svc) socketClose(*ch, "service stopped");
            }
            if (done) done->set_value();
          });
        } else if (ev.done) {
          ev.done->set_value();
        }
        services_.erase(it);
        break;
      }
      case Event::kOpen:
        // An unknown tag means the service was stopped meanwhile: dropping the event closes the
        // fd, and the broker has already ended the channel.
        if (!services_.count(ev.open.tag)) break;
        if (ev.open.socket) {
          attachSocket(ev.open);
        } else {
          attach(ev.open);
        }
        break;
      case Event::kClose: {
        bool found = false;
        for (auto& ch : channels_) {
          if (ch->id == ev.id) found = ch->closed = anyClosed_ = true;
        }
        if (!found && socketThread_.joinable()) {
          toSocketThread([this, id = ev.id] {
            for (auto& ch : socketChannels_) {
              if (ch->id == id) socketClose(*ch, "closed by the broker");
            }
          });
        }
        break;
      }
      case Event::kStop:
        break;
    }
  }
  reapClosed();
  return any;
}

std::unique_ptr<Dispatcher::Channel> Dispatcher::newChannel(const ChannelOpenedEvent& ev) {
  auto ch = std::make_unique<Channel>();
  ch->id = ev.channelId;
  ch->service = services_.at(ev.tag);
  ch->callerPid = ev.callerPid;
  ch->callerUid = ev.callerUid;
  ch->callerName = ev.callerName;
  return ch;
}

void Dispatcher::attach(const ChannelOpenedEvent& ev) {
  auto map = attachChannel(ev.fd->get(), ev.segmentBytes);
  if (!map.ok()) {
    log().error("hms-ffi: refusing channel {}: {}", ev.channelId, map.status().toString());
    return;
  }
  auto ch = newChannel(ev);
  ch->segment = std::move(*map);
  ch->hdr = ch->segment.as<ChannelHeader>();
  const uint32_t ring = ch->hdr->ringBytes;
  ch->maxMessageBytes = ch->hdr->maxMessageBytes;
  uint8_t* base = ch->segment.data() + kPageBytes;
  ch->requests = RingConsumer(&ch->hdr->request, base, ring);
  ch->responses =
      RingProducer(&ch->hdr->response, base + ring, ring, &ch->hdr->response.consumerWake);
  channels_.push_back(std::move(ch));
}

void Dispatcher::attachSocket(ChannelOpenedEvent& ev) {
  if (ev.maxMessageBytes < 64 || ev.maxMessageBytes > kMaxRingBytes / 2) {
    log().error("hms-ffi: refusing socket channel {}: message limit {} out of range", ev.channelId,
                ev.maxMessageBytes);
    return;
  }
  auto ch = newChannel(ev);
  ch->link = std::make_unique<SocketLink>(std::move(*ev.fd), ev.maxMessageBytes);
  ch->maxMessageBytes = ch->link->maxMessageBytes();
  startSocketThread();
  Channel* raw = ch.release();
  toSocketThread([this, raw] { socketAttach(std::unique_ptr<Channel>(raw)); });
}

void Dispatcher::reapClosed() {
  if (!anyClosed_) return;
  std::erase_if(channels_, [](const std::unique_ptr<Channel>& ch) {
    return ch->closed && !ch->busy.load(std::memory_order_acquire);
  });
  // A closed channel still held by a worker is reaped on a later pass.
  anyClosed_ = std::any_of(channels_.begin(), channels_.end(),
                           [](const std::unique_ptr<Channel>& ch) { return ch->closed; });
}

void Dispatcher::closeChannelLocal(Channel& ch, uint32_t myState, const char* why) {
  if (ch.closed) return;
  storeRelease(ch.hdr->serviceState, myState);
  wakeAlways(ch.hdr->response.consumerWake);
  wakeAlways(ch.hdr->request.producerWake);
  ch.closed = anyClosed_ = true;
  const uint64_t id = ch.id;
  client_.sendOneWay([id](wire::Request::Builder req) { req.setCloseChannel(id); });
  if (myState == kEndCorrupt) {
    log().error("hms-ffi: closed channel {} of {} with DATA_LOSS: {}", ch.id, ch.service->spec.id,
                why);
  }
}

bool Dispatcher::pollChannels() {
  bool did = false;
  for (auto& chp : channels_) {
    Channel& ch = *chp;
    if (ch.closed || ch.busy.load(std::memory_order_acquire)) continue;
    if (loadAcquire(ch.hdr->callerState) != kEndOpen) {
      closeChannelLocal(ch, kEndClosed, "the caller closed it or went away");
      continue;
    }
    RingConsumer::Record rec;
    const RingStatus st = ch.requests.peek(rec);
    if (st == RingStatus::kEmpty) continue;
    did = true;
    if (st == RingStatus::kCorrupt || rec.header.kind != kRecordRequest) {
      closeChannelLocal(ch, kEndCorrupt, "malformed record in the request ring");
      continue;
    }
    if (ch.service->work) {
      ch.busy.store(true, std::memory_order_relaxed);
      ch.service->work->enqueue(Work{&ch, rec});
    } else {
      handle(ch, rec);
    }
  }
  reapClosed();
  return did;
}

Status Dispatcher::invoke(Channel& ch, const RingConsumer::Record& rec,
                          capnp::MessageBuilder& results) {
  Service& svc = *ch.service;
  Status status;
  static const std::string kNoName;
  const std::string& methodName =
      rec.header.method < svc.methodNames.size() ? svc.methodNames[rec.header.method] : kNoName;
  if (rec.header.deadlineNs > 0 && monotonicNs() >= rec.header.deadlineNs) {
    status = Status(StatusCode::kDeadlineExceeded,
                    "the deadline passed before " + svc.spec.id + "." + methodName + " started");
  } else if (rec.header.method >= svc.byOrdinal.size() || !svc.byOrdinal[rec.header.method]) {
    status = Status(StatusCode::kUnimplemented,
                    "service '" + svc.spec.id + "' " + svc.spec.version.toString() +
                        " has no handler for method " +
                        (methodName.empty() ? "ordinal " + std::to_string(rec.header.method)
                                            : "'" + methodName + "'"));
  } else {
    kj::ArrayPtr<const capnp::word> seg[1] = {
        kj::arrayPtr(reinterpret_cast<const capnp::word*>(rec.words), rec.header.words)};
    try {
      capnp::SegmentArrayMessageReader params(kj::arrayPtr(seg, 1),
                                              ringReaderOptions(rec.header.words));
      if (!validSingleSegmentMessage(rec.words, rec.header.words)) {
        status = Status(StatusCode::kInvalidArgument, "the request to " + svc.spec.id + "." +
                                                          methodName +
                                                          " is not a valid Cap'n Proto message");
      } else {
        CallContext ctx;
        ctx.serviceId_ = &svc.spec.id;
        ctx.callerName_ = &ch.callerName;
        ctx.method_ = rec.header.method;
        ctx.callerPid_ = ch.callerPid;
        ctx.callerUid_ = ch.callerUid;
        ctx.deadlineNs_ = rec.header.deadlineNs > 0 ? rec.header.deadlineNs : kNoDeadline;
        if (rec.trace) {
          TraceContext t;
          std::memcpy(t.traceId.data(), rec.trace->traceId, 16);
          std::memcpy(t.spanId.data(), rec.trace->spanId, 8);
          t.flags = rec.trace->traceFlags;
          ctx.trace_ = t;
        }
        status = (*svc.byOrdinal[rec.header.method])(ctx, params, results);
      }
    } catch (const Error& e) {
      status = e.status();
    } catch (const kj::Exception& e) {
      status = Status(StatusCode::kInternal,
                      svc.spec.id + "." + methodName + " failed: " + e.getDescription().cStr());
    } catch (const std::exception& e) {
      status =
          Status(StatusCode::kInternal, svc.spec.id + "." + methodName + " threw: " + e.what());
    } catch (...) {
      status =
          Status(StatusCode::kUnknown, svc.spec.id + "." + methodName + " threw a non-exception");
    }
  }

  return status;
}

// The error message a failed call answers with (wire::RpcError in place of the results).
static void buildError(capnp::MessageBuilder& mb, const Status& status,
                       const std::string& serviceId) {
  auto err = mb.initRoot<wire::RpcError>();
  err.setMessage(status.message());
  err.setSource(status.source().empty() ? serviceId : status.source());
  auto details = err.initDetails(uint(status.details().size()));
  for (size_t i = 0; i < status.details().size(); ++i) {
    details[uint(i)].setKey(status.details()[i].first);
    details[uint(i)].setValue(status.details()[i].second);
  }
}

void Dispatcher::handle(Channel& ch, const RingConsumer::Record& rec) {
  Service& svc = *ch.service;
  const uint32_t offset = payloadOffset(0);
  const int64_t replyDeadline =
      rec.header.deadlineNs > 0 ? rec.header.deadlineNs : monotonicNs() + 1'000'000'000;
  auto callerGone = [&] { return loadAcquire(ch.hdr->callerState) != kEndOpen; };

  // Space for the reply first: the request stays in place (it is read in place) until answered.
  RingProducer::Slot slot;
  for (;;) {
    const RingStatus st = ch.responses.tryReserve(offset + 64, offset + ch.maxMessageBytes, slot);
    if (st == RingStatus::kOk) break;
    if (st == RingStatus::kCorrupt) {
      closeChannelLocal(ch, kEndCorrupt, "the caller's response-ring index is impossible");
      return;
    }
    const bool ok = waitFor(ch.responses.spaceWake(), client_.policy, replyDeadline,
                            [&] { return ch.responses.hasSpaceFor(offset + 64) || callerGone(); });
    if (!ok || callerGone()) {
      ch.requests.release(rec);  // nobody is left to read the reply
      return;
    }
  }

  std::optional<RingMessageBuilder> results;
  results.emplace(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                               (slot.bytes - offset) / sizeof(capnp::word)));
  Status status = invoke(ch, rec, *results);

  RecordHeader header{};
  header.kind = kRecordResponse;
  header.callId = rec.header.callId;
  header.method = rec.header.method;
  auto waitSpace = [&](uint32_t bytes) -> Status {
    const bool ok = waitFor(ch.responses.spaceWake(), client_.policy, replyDeadline,
                            [&] { return ch.responses.hasSpaceFor(bytes) || callerGone(); });
    if (!ok || callerGone()) return Status(StatusCode::kDeadlineExceeded, "caller is gone");
    return Status();
  };
  Status published;
  if (status) {
    try {
      published = publishRecord(ch.responses, slot, *results, header, nullptr, ch.maxMessageBytes,
                                svc.limitHint, waitSpace);
    } catch (const kj::Exception& e) {
      published = Status(StatusCode::kInternal, e.getDescription().cStr());
    }
    if (!published) {
      // Tell the caller why there are no results (typically RESOURCE_EXHAUSTED); the slot was
      // given back, so reserve again for the small error message.
      status = published;
      results.reset();
      if (ch.responses.tryReserve(offset + 256, offset + ch.maxMessageBytes, slot) !=
          RingStatus::kOk) {
        ch.requests.release(rec);
        return;
      }
      results.emplace(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                   (slot.bytes - offset) / sizeof(capnp::word)));
    }
  } else {
    ch.responses.abort(slot, uint32_t(offset + results->ringWordsTouched() * 8));
    results.reset();
    results.emplace(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                 (slot.bytes - offset) / sizeof(capnp::word)));
  }
  if (!status) {
    header.status = uint16_t(status.code());
    buildError(*results, status, svc.spec.id);
    (void)publishRecord(ch.responses, slot, *results, header, nullptr, ch.maxMessageBytes,
                        svc.limitHint, waitSpace);
  }
  ch.requests.release(rec);
}

void Dispatcher::run() {
  for (;;) {
    const bool events = drainEvents();
    if (stopping_.load(std::memory_order_acquire)) break;
    const bool did = pollChannels();
    if (events || did) continue;
    waitFor(*doorbell_, client_.policy, kNoDeadline, [&] {
      if (pendingEvents_.load(std::memory_order_relaxed) != 0 ||
          stopping_.load(std::memory_order_relaxed)) {
        return true;
      }
      for (auto& ch : channels_) {
        // Acquire: pairs with a worker's release of `busy`, after which the consumer is ours.
        if (!ch->closed && !ch->busy.load(std::memory_order_acquire) && ch->requests.hasData()) {
          return true;
        }
      }
      return false;
    });
  }
  // Stop: tell every caller, stop the socket thread and the workers.
  for (auto& ch : channels_) closeChannelLocal(*ch, kEndClosed, "client stopped");
  if (socketThread_.joinable()) {
    toSocketThread([this] { socketsStopping_ = true; });
    socketThread_.join();
  }
  for (auto& [tag, svc] : services_) {
    if (svc->work) {
      for (size_t i = 0; i < svc->workers.size(); ++i) svc->work->enqueue(Work{nullptr, {}});
      for (auto& t : svc->workers) t.join();
    }
  }
  channels_.clear();
  socketChannels_.clear();
  services_.clear();
}

// ---- service side, socket channels ------------------------------------------------------------

void Dispatcher::startSocketThread() {
  if (socketThread_.joinable()) return;
  socketEventFd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  epollFd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!socketEventFd_ || !epollFd_) {
    throw std::runtime_error(errnoText("eventfd/epoll for the socket channels", errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the inbox
  ::epoll_ctl(epollFd_.get(), EPOLL_CTL_ADD, socketEventFd_.get(), &ev);
  socketThread_ = std::thread([this] {
    socketThreadId_.store(std::this_thread::get_id());
    runSockets();
  });
}

void Dispatcher::toSocketThread(std::function<void()> fn) {
  if (fn) {
    std::lock_guard lock(socketMu_);
    socketInbox_.push_back(std::move(fn));
  }
  const uint64_t one = 1;
  (void)!::write(socketEventFd_.get(), &one, sizeof(one));
}

void Dispatcher::socketAttach(std::unique_ptr<Channel> ch) {
  socketChannels_.push_back(std::move(ch));
}

void Dispatcher::socketClose(Channel& ch, const char* why) {
  if (ch.closed) return;
  if (ch.armed) ::epoll_ctl(epollFd_.get(), EPOLL_CTL_DEL, ch.link->fd(), nullptr);
  ch.armed = false;
  if (ch.link->broken() && !ch.link->corruptReason().empty()) {
    log().error("hms-ffi: closed socket channel {} of {} with DATA_LOSS: {}", ch.id,
                ch.service->spec.id, ch.link->corruptReason());
  }
  ch.link->shutdown();  // the caller reads EOF at once
  ch.closed = true;
  log().debug("hms-ffi: closed socket channel {} of {}: {}", ch.id, ch.service->spec.id, why);
  const uint64_t id = ch.id;
  client_.sendOneWay([id](wire::Request::Builder req) { req.setCloseChannel(id); });
}

void Dispatcher::runSockets() {
  epoll_event events[64];
  for (;;) {
    // Channels: attach new ones, close the finished, (re-)arm those no worker holds.
    for (auto& ch : socketChannels_) {
      if (ch->closed || ch->busy.load(std::memory_order_acquire)) continue;
      if (ch->link->ended()) {
        socketClose(*ch, "the caller closed it or went away");
      } else if (!ch->armed) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = ch.get();
        ::epoll_ctl(epollFd_.get(), EPOLL_CTL_ADD, ch->link->fd(), &ev);
        ch->armed = true;
      }
    }
    std::erase_if(socketChannels_, [](const std::unique_ptr<Channel>& ch) {
      return ch->closed && !ch->busy.load(std::memory_order_acquire);
    });
    if (socketsStopping_) break;
    const int n = ::epoll_wait(epollFd_.get(), events, 64, -1);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        uint64_t count;
        (void)!::read(socketEventFd_.get(), &count, sizeof(count));
        std::vector<std::function<void()>> inbox;
        {
          std::lock_guard lock(socketMu_);
          inbox.swap(socketInbox_);
        }
        for (auto& fn : inbox) fn();
        continue;
      }
      auto* ch = static_cast<Channel*>(events[i].data.ptr);
      // Channels closed in this batch stay allocated until the reaping above.
      if (!ch->closed && !ch->busy.load(std::memory_order_acquire)) socketServe(*ch);
    }
  }
  for (auto& ch : socketChannels_) socketClose(*ch, "client stopped");
}

void Dispatcher::socketServe(Channel& ch) {
  RingConsumer::Record rec;
  switch (ch.link->tryReceive(rec)) {
    case SocketLink::Recv::kEmpty:
      return;  // part of a record; the rest is on its way
    case SocketLink::Recv::kClosed:
      socketClose(ch, "the caller closed it or went away");
      return;
    case SocketLink::Recv::kCorrupt:
      socketClose(ch, "malformed datagram");
      return;
    case SocketLink::Recv::kRecord:
      break;
  }
  if (rec.header.kind != kRecordRequest) {
    socketClose(ch, "a record other than a request from the caller");
    return;
  }
  if (ch.service->work) {
    // The worker owns the link until it is done; the channel leaves the epoll set meanwhile.
    ::epoll_ctl(epollFd_.get(), EPOLL_CTL_DEL, ch.link->fd(), nullptr);
    ch.armed = false;
    ch.busy.store(true, std::memory_order_relaxed);
    ch.service->work->enqueue(Work{&ch, rec});
    return;
  }
  handleSocket(ch, rec);
  if (ch.link->ended()) socketClose(ch, "the caller closed it or went away");
}

void Dispatcher::handleSocket(Channel& ch, const RingConsumer::Record& rec) {
  Service& svc = *ch.service;
  const int64_t replyDeadline =
      rec.header.deadlineNs > 0 ? rec.header.deadlineNs : monotonicNs() + 1'000'000'000;
  RecordHeader header{};
  header.kind = kRecordResponse;
  header.callId = rec.header.callId;
  header.method = rec.header.method;
  Status status;
  {
    // The request is read in place in the link's receive buffer; the results are built in its
    // scratch, a separate buffer.
    RingMessageBuilder results(ch.link->scratch());
    try {
      status = invoke(ch, rec, results);
      if (status) {
        const Status sent =
            ch.link->send(header, nullptr, results, client_.policy, replyDeadline, svc.limitHint);
        if (sent.code() != StatusCode::kResourceExhausted) return;  // sent, or nobody to tell
        status = sent;
      } else {
        ch.link->discard(results);
      }
    } catch (const kj::Exception& e) {
      ch.link->discard(results);
      status = Status(StatusCode::kInternal, e.getDescription().cStr());
    }
  }
  RingMessageBuilder error(ch.link->scratch());
  header.status = uint16_t(status.code());
  buildError(error, status, svc.spec.id);
  (void)ch.link->send(header, nullptr, error, client_.policy, replyDeadline, svc.limitHint);
}

}  // namespace detail

// ---- Client ----------------------------------------------------------------------------------

Result<std::unique_ptr<Client>> Client::connect(ClientOptions options) {
  auto impl = std::make_shared<detail::ClientImpl>(std::move(options));
  if (auto s = impl->start(); !s) return s;
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::~Client() {
  impl_->shutdown();
}

uint32_t Client::maxMessageBytes(uint32_t ringBytes) noexcept {
  return detail::maxMessageBytesForRing(ringBytes);
}

uint64_t Client::clientId() const noexcept {
  return impl_->clientId.load();
}
bool Client::usesSharedMemory() const noexcept {
  return impl_->sharedMemory();
}
const std::string& Client::sharedMemoryProblem() const noexcept {
  return impl_->noSharedMemory();
}
const ClientOptions& Client::options() const noexcept {
  return impl_->options;
}

Result<std::vector<ServiceInfo>> Client::discover(std::string_view id) const {
  auto view = impl_->registryView();
  if (!view.ok()) return view.status();
  std::vector<ServiceInfo> out;
  for (const auto& s : (*view)->services) {
    if (s.id == id) out.push_back(s);
  }
  return out;
}

Result<std::vector<ServiceInfo>> Client::discoverPrefix(std::string_view prefix) const {
  auto view = impl_->registryView();
  if (!view.ok()) return view.status();
  std::vector<ServiceInfo> out;
  for (const auto& s : (*view)->services) {
    if (std::string_view(s.id).starts_with(prefix)) out.push_back(s);
  }
  return out;
}

Result<ServiceInfo> Client::resolve(std::string_view id, std::string_view range) const {
  auto r = VersionRange::parse(range);
  if (!r.ok()) return r.status();
  auto all = discover(id);
  if (!all.ok()) return all.status();
  std::string live;
  for (const auto& s : *all) {
    if (r->contains(s.version)) return s;  // highest first
    live += (live.empty() ? "" : ", ") + s.version.toString();
  }
  return Status(StatusCode::kNotFound,
                live.empty() ? "no live provider of service '" + std::string(id) + "'"
                             : "no live version of '" + std::string(id) + "' in range '" +
                                   r->text() + "' (live: " + live + ")");
}

Result<std::shared_ptr<detail::CallerChannel>> Client::bindImpl(std::string_view id,
                                                                std::string_view range,
                                                                uint64_t interfaceId,
                                                                std::string interfaceName) {
  auto r = VersionRange::parse(range);
  if (!r.ok()) return r.status();
  auto ch = std::make_shared<detail::CallerChannel>(impl_, std::string(id), std::move(*r),
                                                    interfaceId, std::move(interfaceName));
  if (auto s = ch->open(true); !s) return s;
  return ch;
}

Result<ServiceHandle> Client::serveImpl(detail::ServiceSpec spec) {
  return impl_->serve(std::move(spec));
}

ServiceHandle& ServiceHandle::operator=(ServiceHandle&& o) noexcept {
  if (this != &o) {
    (void)stop();
    client_ = std::move(o.client_);
    localKey_ = std::exchange(o.localKey_, 0);
    id_ = std::move(o.id_);
    version_ = o.version_;
  }
  return *this;
}

ServiceHandle::~ServiceHandle() {
  (void)stop();
}

Status ServiceHandle::stop() {
  if (localKey_ == 0) return Status();
  auto client = client_.lock();
  const uint64_t key = std::exchange(localKey_, 0);
  if (!client) return Status();
  return client->unregister(key);
}

}  // namespace hms::ffi
