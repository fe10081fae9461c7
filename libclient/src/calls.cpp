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

const std::string& CallContext::methodName() const noexcept {
  static const std::string kNone;
  return methodName_ ? *methodName_ : kNone;
}

LogFields CallContext::logFields() const {
  LogFields f;
  const std::optional<TraceContext>& t = span_ ? span_ : trace_;
  if (t) {
    const std::string tp = t->traceparent();
    f.traceId = tp.substr(3, 32);
    f.spanId = tp.substr(36, 16);
  }
  f.serviceId = serviceId_ ? *serviceId_ : "";
  f.method = methodName();
  if (caller_) {
    f.userId = caller_->subject.empty() ? "uid:" + std::to_string(caller_->uid) : caller_->subject;
  }
  return f;
}

std::string LogFields::text() const {
  std::string out;
  auto add = [&](const char* key, const std::string& v) {
    if (v.empty()) return;
    if (!out.empty()) out += ' ';
    out += key;
    out += '=';
    out += v;
  };
  add("trace_id", traceId);
  add("span_id", spanId);
  add("service_id", serviceId);
  add("method", method);
  add("user_id", userId);
  return out;
}

std::string LogFields::json() const {
  std::string out = "{";
  auto add = [&](const char* key, const std::string& v) {
    if (out.size() > 1) out += ',';
    detail::appendJsonString(out, key);
    out += ':';
    detail::appendJsonString(out, v);
  };
  add("trace_id", traceId);
  add("span_id", spanId);
  add("service_id", serviceId);
  add("method", method);
  add("user_id", userId);
  out += '}';
  return out;
}

bool Caller::hasRole(std::string_view role) const noexcept {
  for (const auto& r : roles) {
    if (r == role) return true;
  }
  return false;
}

std::chrono::nanoseconds CallContext::timeLeft() const noexcept {
  if (deadlineNs_ == detail::kNoDeadline) return std::chrono::nanoseconds::max();
  return std::chrono::nanoseconds(std::max<int64_t>(0, deadlineNs_ - detail::monotonicNs()));
}

namespace detail {

// Maps a channel segment handed over by the broker and checks what the broker wrote in it.
Result<Mapping> attachChannel(int fd, uint64_t claimedBytes) {
  if (auto s = checkSealedAgainstShrink(fd, 0, "the channel segment"); !s) return s;
  auto actual = segmentSize(fd);
  if (!actual.ok()) return actual.status();
  if (*actual != claimedBytes || claimedBytes != kPageBytes) {
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

Result<Mapping> attachPeerRing(int fd, uint32_t ringBytes, const char* what) {
  if (auto s = checkSealedSegment(fd, ringBytes, what); !s) {
    return Status(StatusCode::kDataLoss, s.message());
  }
  return Mapping::map(fd, ringBytes, false);
}

Result<OwnRing> makeOwnRing(uint32_t ringBytes, const char* name) {
  auto fd = createSegment(name, ringBytes);
  if (!fd.ok()) return fd.status();
  auto map = Mapping::map(fd->get(), ringBytes, true);
  if (!map.ok()) return map.status();
  if (auto s = sealForReaders(fd->get()); !s) return s;
  return OwnRing{std::move(*fd), std::move(*map)};
}

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
  std::vector<std::shared_ptr<AsyncCall>> completed;
  std::unique_lock async(asyncMu, std::defer_lock);
  if (asyncMode.load(std::memory_order_acquire)) {
    // Calls in flight on this connection end with it; replies read in place keep its mapping.
    async.lock();
    failPendingLocked(
        *this,
        peerGone() ? peerGoneStatus()
                   : Status(StatusCode::kUnavailable,
                            "the channel to " + serviceId + " was closed with the call in flight",
                            serviceId),
        completed);
    unread.clear();
    ++conn;
  }
  if (link) {
    link->shutdown();  // the service reads EOF at once
    link.reset();
  } else {
    storeRelease(hdr_->callerState, myState);
    if (doorbellMap.data()) wakeAlways(doorbellMap.as<DoorbellSegment>()->wake);
  }
  // Only the broker that opened the channel knows its id; after a restart, the number may be
  // another channel's (the service learns of the close from the header or the socket anyway).
  const uint64_t id = channelId;
  if (client->session() == session) {
    client->sendOneWay([id](wire::Request::Builder req) { req.setCloseChannel(id); });
  }
  isOpen = false;
  hdr_ = nullptr;
  requests = RingProducer();
  responses = RingConsumer();
  segment.reset();
  doorbellMap = Mapping();
  if (async.owns_lock()) async.unlock();
  for (auto& c : completed) client->completions().post(std::move(c));
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
  const auto self = std::this_thread::get_id();
  uint32_t free = 0;
  if (lease_.compare_exchange_strong(free, 1, std::memory_order_acquire)) {
    owner_.store(self, std::memory_order_relaxed);
    return Status();
  }
  // Only this thread stores its own id, and clears it before it gives the lease back.
  if (owner_.load(std::memory_order_relaxed) == self) {
    return Status(StatusCode::kFailedPrecondition,
                  "this thread still holds a Call or Reply of the Stub for " + serviceId +
                      "; destroy it before the next call (or bind another Stub)");
  }
  std::unique_lock lock(leaseMu_);
  // Marked as waited for (2), so that the holder's release wakes a waiter; an exchange that
  // finds it free takes it (leaving 2: at worst one wake-up that finds nobody).
  const bool got = leaseCv_.wait_for(lock, std::chrono::nanoseconds(deadline - monotonicNs()), [&] {
    return lease_.exchange(2, std::memory_order_acquire) == 0;
  });
  if (!got) {
    return Status(StatusCode::kDeadlineExceeded,
                  "the Stub for " + serviceId + " stayed busy with another thread's call");
  }
  owner_.store(self, std::memory_order_relaxed);
  return Status();
}

void CallerChannel::releaseLease() {
  owner_.store(std::thread::id(), std::memory_order_relaxed);
  if (lease_.exchange(0, std::memory_order_release) == 2) {
    // A thread waits (or did): wake it under the lock it checks the lease under, so that the
    // wake-up cannot fall between its check and its wait.
    { std::lock_guard lock(leaseMu_); }
    leaseCv_.notify_all();
  }
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
  // Over shared memory the request ring is ours: made, mapped writable and sealed here, so that
  // the service can only read it. (If the broker picks sockets, it is dropped unused.)
  std::optional<OwnRing> own;
  if (client->sharedMemory() && info.ringBytes >= kMinRingBytes &&
      info.ringBytes <= kMaxRingBytes && (info.ringBytes & (info.ringBytes - 1)) == 0) {
    auto made = makeOwnRing(info.ringBytes, "hms-ffi-request-ring");
    if (!made.ok()) return made.status();
    own.emplace(std::move(*made));
  }
  const int ownFd = own ? own->fd.get() : -1;
  auto reply = client->roundTrip(
      [&](wire::Request::Builder req) {
        auto open = req.initOpenChannel();
        open.setServiceKey(info.key);
        if (onBehalfOf) {
          auto who = open.initOnBehalfOf();
          who.setHost(onBehalfOf->host);
          who.setName(onBehalfOf->name);
          who.setUid(uint32_t(onBehalfOf->uid));
          who.setPid(uint32_t(onBehalfOf->pid));
          who.setSubject(onBehalfOf->subject);
          who.setIssuer(onBehalfOf->issuer);
          who.setAuthenticated(onBehalfOf->authenticated);
          auto roles = who.initRoles(unsigned(onBehalfOf->roles.size()));
          for (size_t i = 0; i < onBehalfOf->roles.size(); ++i) {
            roles.set(unsigned(i), onBehalfOf->roles[i]);
          }
        }
      },
      own ? &ownFd : nullptr, own ? 1 : 0);
  if (!reply.ok()) return reply.status();
  auto r = reply->reply();
  // What both transports record once their end is attached.
  const auto bound = [&](Transport t, uint32_t ring) {
    channelId = r.getOpenChannel().getChannelId();
    session = reply->session;
    service = std::move(info);
    limitHint = "the limit comes from the rings of service " + serviceId + " (" +
                std::to_string(ring) +
                " bytes each); its provider can raise ServiceOptions::ringBytes";
    transport = t;
    ringBytes = ring;
    {
      std::lock_guard lock(asyncMu);
      ++conn;
      failedConn = false;
      brokenConn = false;
      isOpen = true;
    }
    if (asyncMode.load(std::memory_order_acquire)) {
      client->completions().relink(shared_from_this());
    }
    return Status();
  };
  if (r.isOpenChannel() && r.getOpenChannel().getTransport() == wire::Transport::SOCKET) {
    const uint32_t maxMessage = r.getOpenChannel().getMaxMessageBytes();
    if (reply->fds.empty() || maxMessage == 0 || maxMessage > kMaxRingBytes) {
      return Status(StatusCode::kInternal, "the broker's open reply lacks the channel's socket");
    }
    {
      std::lock_guard lock(asyncMu);
      link = std::make_unique<SocketLink>(std::move(reply->fds[0]), maxMessage);
    }
    maxMessageBytes = link->maxMessageBytes();
    return bound(Transport::kSocket, info.ringBytes);
  }
  if (!r.isOpenChannel() || reply->fds.size() < 3 || !own) {
    return Status(StatusCode::kInternal, "the broker's open reply lacks the channel's segments");
  }
  auto seg = attachChannel(reply->fds[0].get(), r.getOpenChannel().getSegmentBytes());
  if (!seg.ok()) return seg.status();
  if (seg->as<ChannelHeader>()->ringBytes != info.ringBytes) {
    return Status(StatusCode::kDataLoss, "the channel's rings are not the size the registry gives");
  }
  auto responseRing = attachPeerRing(reply->fds[1].get(), info.ringBytes, "the response ring");
  if (!responseRing.ok()) return responseRing.status();
  if (auto s =
          checkSealedAgainstShrink(reply->fds[2].get(), kDoorbellBytes, "the service's doorbell");
      !s) {
    return s;
  }
  auto db = Mapping::map(reply->fds[2].get(), kDoorbellBytes, true);
  if (!db.ok()) return db.status();
  if (db->as<DoorbellSegment>()->magic != kDoorbellMagic) {
    return Status(StatusCode::kDataLoss, "the service's doorbell segment is not one");
  }
  uint32_t ring;
  {
    std::lock_guard lock(asyncMu);  // the completion thread reads `responses`
    // One owner for the three mappings; `segment` (the control page) keeps them all, for every
    // reply still read in place.
    auto maps = std::make_shared<ChannelMaps>(
        ChannelMaps{std::move(*seg), std::move(own->map), std::move(*responseRing)});
    segment = std::shared_ptr<Mapping>(maps, &maps->control);
    doorbellMap = std::move(*db);
    hdr_ = segment->as<ChannelHeader>();
    ring = hdr_->ringBytes;
    maxMessageBytes = hdr_->maxMessageBytes;
    requests = RingProducer(&hdr_->request, maps->requestRing.data(), ring,
                            &doorbellMap.as<DoorbellSegment>()->wake);
    responses = RingConsumer(&hdr_->response, maps->responseRing.data(), ring);
    responses.setSpaceWakeAlso(&doorbellMap.as<DoorbellSegment>()->wake);
    if (client->metrics.enabled()) {
      if (!ringMetrics) {
        ringMetrics =
            std::make_unique<RingMetrics>(client->metrics, kMetricsRequestRing, serviceId);
      }
      requests.setWatch(ringMetrics.get());
    }
  }
  return bound(Transport::kSharedMemory, ring);
}

MetricsSlot* callerMetricsSlot(CallerChannel& ch, uint16_t ordinal, std::string_view method,
                               uint32_t* family) noexcept {
  MetricsWriter& w = ch.client->metrics;
  if (!w.enabled()) return nullptr;
  try {
    std::atomic<uint32_t> spare{0};  // an ordinal past the cache: looked up each time
    auto& cell = ordinal < ch.metricsFamilies.size() ? ch.metricsFamilies[ordinal] : spare;
    const uint32_t f = w.family(cell, kMetricsCaller, ch.serviceId, method);
    if (family) *family = f + 1;
    // Under the channel's lease: one thread at a time uses the cache.
    if (ordinal < ch.metricsSlots.size()) {
      return ch.metricsSlots[ordinal].get(w, [&] { return w.slot(f); });
    }
    return w.slot(f);
  } catch (const std::exception&) {
    return nullptr;  // out of memory: uncounted
  }
}

// The slot a call ends in: the ending thread's own (a call may be begun on one thread and sent
// or dropped on another; each slot has one writer).
MetricsSlot* endingSlot(CallerChannel& ch) noexcept {
  if (ch.metricsFamily == 0) return nullptr;
  try {
    MetricsWriter& w = ch.client->metrics;
    const uint16_t ordinal = ch.pendingHeader.method;
    if (ordinal < ch.metricsSlots.size()) {  // under the lease, as in callerMetricsSlot
      return ch.metricsSlots[ordinal].get(w, [&] { return w.slot(ch.metricsFamily - 1); });
    }
    return w.slot(ch.metricsFamily - 1);
  } catch (const std::exception&) {
    return nullptr;
  }
}

Result<capnp::MessageBuilder*> beginCall(CallerChannel& ch, const MethodRef& method,
                                         const CallOptions& options) noexcept {
  try {
    // One clock read for the deadline and the call's start (the metrics).
    const int64_t t0 = monotonicNs();
    const auto timeout =
        options.timeout.count() > 0 ? options.timeout : ch.client->options.defaultTimeout;
    const int64_t deadline = t0 + timeout.count();
    if (auto s = ch.acquire(deadline); !s) return s;
    ch.metricsFamily = 0;
    ch.metricsSlot = method.found
                         ? callerMetricsSlot(ch, method.ordinal, method.name, &ch.metricsFamily)
                         : nullptr;
    ch.startNs = t0;
    metricsStart(ch.metricsSlot);
    auto fail = [&](Status s) -> Result<capnp::MessageBuilder*> {
      if (ch.metricsSlot) metricsEnd(ch.metricsSlot, uint32_t(s.code()), monotonicNs() - t0);
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
    // The trace the call carries: its options', else that of the handler it is made from, else
    // (spans being recorded) a new sampled one at ClientOptions::traceSampleRatio.
    ClientImpl& client = *ch.client;
    const TraceContext* parent = options.trace ? &*options.trace : currentTrace();
    std::optional<TraceContext> root;
    if (!parent && client.spans && drawSample(client.options.traceSampleRatio)) {
      root.emplace();
      root->traceId = newTraceId();
      root->flags = 1;  // sampled; its span id stays zero: the call's span is the root
      parent = &*root;
    }
    const uint16_t flags = parent ? kRecordHasTrace : 0;
    if (!ch.link) {
      // Replies to calls that timed out earlier are still in the ring: drop them now (in async
      // mode the completion thread does).
      RingConsumer::Record stale;
      for (bool direct = !ch.asyncMode.load(std::memory_order_acquire); direct;) {
        const RingStatus st = ch.responses.next(stale);
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
    if (ch.methodNameOrdinal != method.ordinal) {  // (a channel serves one interface)
      ch.methodName = method.name;
      ch.methodNameOrdinal = method.ordinal;
    }
    ch.pendingHeader = RecordHeader{};
    ch.pendingHeader.kind = kRecordRequest;
    ch.pendingHeader.flags = flags;
    ch.pendingHeader.callId = ch.callId;
    ch.pendingHeader.deadlineNs = deadline;
    ch.pendingHeader.method = method.ordinal;
    ch.spanActive = false;
    if (parent) {
      std::memcpy(ch.trace.traceId, parent->traceId.data(), 16);
      ch.trace.traceFlags = parent->flags;
      if (client.spans && parent->sampled()) {
        // The call's own client span: the service sees it as the parent of its server span.
        const auto id = newSpanId();
        std::memcpy(ch.trace.spanId, id.data(), 8);
        ch.spanParent = parent->spanId;
        ch.spanStartUnixNs = realtimeNs();
        ch.spanActive = true;
      } else {
        std::memcpy(ch.trace.spanId, parent->spanId.data(), 8);
      }
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
  if (ch.metricsSlot) {
    metricsEnd(endingSlot(ch), uint32_t(StatusCode::kCancelled), monotonicNs() - ch.startNs);
  }
  endClientSpan(ch, Status(StatusCode::kCancelled, "the call was dropped before it was sent"));
  ch.releaseLease();
}

namespace {

Span clientSpan(const CallerChannel& ch) {
  Span sp;
  std::memcpy(sp.context.traceId.data(), ch.trace.traceId, 16);
  std::memcpy(sp.context.spanId.data(), ch.trace.spanId, 8);
  sp.context.flags = ch.trace.traceFlags;
  sp.parentSpanId = ch.spanParent;
  sp.kind = Span::Kind::kClient;
  sp.service = ch.serviceId;
  sp.method = ch.methodName;
  sp.startUnixNs = ch.spanStartUnixNs;
  return sp;
}

}  // namespace

void endClientSpan(CallerChannel& ch, const Status& outcome) noexcept {
  if (!ch.spanActive) return;
  ch.spanActive = false;
  try {
    Span sp = clientSpan(ch);
    sp.endUnixNs = realtimeNs();
    sp.code = outcome.code();
    sp.message = outcome.message();
    ch.client->spans->record(sp);
  } catch (const std::exception&) {
  }
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

// Publishes the call built in ch.builder (the lease held). On error the channel is closed where
// it can no longer be used. `awaited`: the caller waits for the answer next (a synchronous call),
// rather than going on to send more (RingProducer::setBurst).
static Status publishPending(CallerChannel& ch, bool awaited) noexcept {
  Status published;
  const TraceContextWire* trace = (ch.pendingHeader.flags & kRecordHasTrace) ? &ch.trace : nullptr;
  try {
    if (ch.link) {
      published = ch.link->send(ch.pendingHeader, trace, *ch.builder, ch.client->policy,
                                ch.deadlineNs, ch.limitHint);
      if (published.code() == StatusCode::kUnavailable) published = ch.peerGoneStatus();
    } else {
      ch.requests.setBurst(!awaited);
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
  }
  return published;
}

bool inAsyncMode(const CallerChannel& ch) noexcept {
  return ch.asyncMode.load(std::memory_order_acquire);
}

std::shared_ptr<AsyncCall> sendAsync(std::shared_ptr<CallerChannel> chp, bool stream,
                                     AsyncCallback cb) noexcept {
  CallerChannel& ch = *chp;
  if (!ch.builder) {
    return failedAsync(Status(StatusCode::kFailedPrecondition, "the call was sent already"),
                       std::move(cb));
  }
  auto call = newAsyncCall();
  try {
    call->ch = std::move(chp);  // (`ch` stays valid: the call keeps it)
    call->callId = ch.callId;
    call->deadlineNs = ch.deadlineNs;
    call->stream = stream;
    call->method = ch.methodName;
    const bool hasCallback = cb != nullptr;
    call->hasCallback.store(hasCallback, std::memory_order_relaxed);
    call->callback = std::move(cb);
    if (ch.metricsSlot) {
      // Begun on this thread's slot; ended on the slot of whichever thread ends it.
      call->metricsFamily = ch.metricsFamily;  // the series beginCall looked up
      call->startNs = ch.startNs;
    }
    if (ch.spanActive) {
      // Recorded by whichever thread ends the call.
      call->span = clientSpan(ch);
      ch.spanActive = false;
    }
    Completions& completions = ch.client->completions();
    if (!ch.asyncMode.load(std::memory_order_acquire)) {
      // From now on the completion thread reads this channel's replies. The lease is ours, so
      // no synchronous call is reading them now.
      ch.asyncMode.store(true, std::memory_order_release);
      completions.watch(call->ch);
    }
    if (stream) ch.pendingHeader.flags |= kRecordStream;
    {
      // Registered before it is sent: the answer may come at once.
      std::lock_guard lock(ch.asyncMu);
      call->conn = ch.conn;
      ch.pending.insert(call);
    }
    // Sent asynchronously: most likely one of several in flight (RingProducer::setBurst).
    Status published = publishPending(ch, false);
    if (!published) {
      std::vector<std::shared_ptr<AsyncCall>> completed;
      {
        std::lock_guard lock(ch.asyncMu);
        auto* at = ch.pending.find(call->callId);
        if (at && *at == call) ch.pending.erase(at);
        std::lock_guard cl(call->m);
        if (!call->finished.load(std::memory_order_relaxed)) {
          call->status = published;
          countAsyncEnd(*call);
          call->finished.store(true, std::memory_order_release);
          if (call->callback) completed.push_back(call);
        }
      }
      ch.releaseLease();
      for (auto& c : completed) completions.post(std::move(c));
      return call;
    }
    ch.releaseLease();
    // A callback's deadline is kept by the completion thread; a Future's by whoever waits on it.
    if (hasCallback) {
      bool track;
      {
        std::lock_guard cl(call->m);
        track = call->callback && !call->finished.load(std::memory_order_relaxed);
      }
      if (track) completions.track(call);
    }
    return call;
  } catch (const std::exception& e) {
    if (ch.builder) abandonCall(ch);
    return failedAsync(Status(StatusCode::kInternal, std::string("sendAsync: ") + e.what()),
                       std::move(call->callback));
  }
}

Status sendOneWay(CallerChannel& ch) noexcept {
  if (!ch.builder) return Status(StatusCode::kFailedPrecondition, "the call was sent already");
  ch.pendingHeader.flags |= kRecordOneWay;
  Status s = publishPending(ch, false);
  // A one-way call ends when it is in the channel.
  if (ch.metricsSlot) metricsEnd(endingSlot(ch), uint32_t(s.code()), monotonicNs() - ch.startNs);
  endClientSpan(ch, s);
  ch.releaseLease();
  return s;
}

Status sendCancel(CallerChannel& ch, uint64_t callId, uint64_t conn) noexcept {
  // Bounded: a cancel is worth a short wait for the channel, not a hang.
  const int64_t deadline =
      monotonicNs() + std::chrono::nanoseconds(ch.client->options.controlTimeout).count();
  if (auto s = ch.acquire(deadline); !s) {
    if (s.code() == StatusCode::kFailedPrecondition) {
      return Status(StatusCode::kFailedPrecondition,
                    "cancel() while this thread builds a call on the same Stub; send or drop it "
                    "first");
    }
    return s;
  }
  Status result;
  {
    std::unique_lock lock(ch.asyncMu);
    const bool current = ch.isOpen && ch.conn == conn && !ch.failedConn;
    lock.unlock();
    if (current && !ch.peerGone()) {
      RecordHeader h{};
      h.kind = kRecordCancel;
      h.callId = callId;
      if (ch.link) {
        result = ch.link->sendHeader(h, ch.client->policy, deadline);
      } else {
        RingProducer::Slot slot;
        for (;;) {
          const RingStatus st =
              ch.requests.tryReserve(sizeof(RecordHeader), sizeof(RecordHeader), slot);
          if (st == RingStatus::kOk) break;
          if (st == RingStatus::kCorrupt) {
            result = Status(StatusCode::kDataLoss, "the request ring is corrupt");
            break;
          }
          if (!waitFor(
                  ch.requests.spaceWake(), ch.client->policy, deadline,
                  [&] { return ch.requests.hasSpaceFor(sizeof(RecordHeader)) || ch.peerGone(); }) ||
              ch.peerGone()) {
            result = Status(StatusCode::kDeadlineExceeded,
                            "the cancel could not be sent: the request ring stayed full");
            break;
          }
        }
        if (result) {
          std::memcpy(slot.record + sizeof(uint32_t), reinterpret_cast<const uint8_t*>(&h) + 4,
                      sizeof(RecordHeader) - 4);
          ch.requests.commit(slot, sizeof(RecordHeader));
        }
      }
    }
  }
  ch.releaseLease();
  return result;
}

Result<capnp::MessageReader*> finishCall(CallerChannel& ch) noexcept {
  auto fail = [&](Status s) -> Result<capnp::MessageReader*> {
    if (ch.metricsSlot) {
      metricsEnd(endingSlot(ch), uint32_t(s.code()), monotonicNs() - ch.startNs);
    }
    endClientSpan(ch, s);
    ch.releaseLease();
    return s;
  };
  if (Status published = publishPending(ch, true); !published) return fail(published);

  RingConsumer::Record rec;
  if (ch.link) {
    if (auto s = awaitSocketReply(ch, rec); !s) return fail(s);
  } else {
    for (;;) {
      const bool ready = waitFor(ch.hdr_->response.consumerWake, ch.client->policy, ch.deadlineNs,
                                 [&] { return ch.responses.hasData() || ch.peerGone(); });
      const RingStatus st = ch.responses.next(rec);
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
  if (ch.metricsSlot) metricsEnd(endingSlot(ch), 0, monotonicNs() - ch.startNs);
  endClientSpan(ch, Status());
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
                                                                std::string interfaceName,
                                                                const Caller* onBehalfOf) {
  auto r = VersionRange::parse(range);
  if (!r.ok()) return r.status();
  auto ch = std::make_shared<detail::CallerChannel>(impl_, std::string(id), std::move(*r),
                                                    interfaceId, std::move(interfaceName));
  if (onBehalfOf != nullptr) {
    if (onBehalfOf->host.empty()) {
      return Status(StatusCode::kInvalidArgument,
                    "bindJsonFor: the caller's host is empty (it is for callers of other hosts)");
    }
    ch->onBehalfOf = *onBehalfOf;
  }
  if (auto s = ch->open(true); !s) return s;
  return ch;
}

Result<ServiceHandle> Client::serveDynamic(std::string_view id, Version version,
                                           capnp::InterfaceSchema schema,
                                           std::map<uint16_t, Handler> handlers,
                                           std::map<uint16_t, StreamHandler> streamHandlers,
                                           ServiceOptions options,
                                           std::map<uint16_t, DeferredHandler> deferredHandlers) {
  detail::ServiceSpec spec;
  spec.id = std::string(id);
  spec.version = version;
  spec.schema = schema;
  spec.interfaceId = schema.getProto().getId();
  spec.interfaceName = schema.getShortDisplayName().cStr();
  spec.methods = detail::describeMethods(schema);
  spec.handlers = std::move(handlers);
  spec.streamHandlers = std::move(streamHandlers);
  spec.deferredHandlers = std::move(deferredHandlers);
  spec.options = std::move(options);
  return serveImpl(std::move(spec));
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
