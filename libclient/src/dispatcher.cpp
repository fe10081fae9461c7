// The service side of the data path: the Dispatcher reads every channel's requests, runs the
// handlers (inline, on workers, or on stream threads), and writes replies and stream items in
// place in the caller's ring or socket.
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <stdexcept>
#include <system_error>

#include "client_impl.hpp"
#include "hms/ffi/error.capnp.h"
#include "log.hpp"
#include "message_check.hpp"

namespace hms::ffi {

bool CallContext::cancelled() const noexcept {
  if (call_ && call_->cancelled.load(std::memory_order_relaxed)) return true;
  return deadlineNs_ != detail::kNoDeadline && detail::monotonicNs() >= deadlineNs_;
}

void CallContext::onCancel(std::function<void()> fn) {
  if (!call_) {
    // A handler on the dispatcher thread: nobody can learn of a cancel while it runs.
    if (cancelled()) fn();
    return;
  }
  std::unique_lock lock(call_->m);
  if (call_->cancelled.load()) {
    lock.unlock();
    fn();
    return;
  }
  call_->onCancel.push_back(std::move(fn));
}

namespace detail {

void ServerCall::cancel() {
  if (cancelled.exchange(true)) return;
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard lock(m);
    fns.swap(onCancel);
  }
  if (spaceWake) wakeAlways(*spaceWake);
  for (auto& fn : fns) {
    try {
      fn();
    } catch (const std::exception& e) {
      log().error("hms-ffi: an onCancel callback threw: {}", e.what());
    } catch (...) {
      log().error("hms-ffi: an onCancel callback threw a non-exception");
    }
  }
}

struct Dispatcher::Service {
  uint64_t tag;
  ServiceSpec spec;
  std::string limitHint;
  std::vector<const Handler*> byOrdinal;
  std::vector<const StreamHandler*> streamByOrdinal;
  std::vector<const DeferredHandler*> deferredByOrdinal;
  std::vector<std::string> methodNames;
  // The metrics series of each method as this service runs it (0: not yet known).
  std::unique_ptr<std::atomic<uint32_t>[]> metricsFamilies;
  // Each method's metrics slot as the dispatcher's own thread last found it (its other threads,
  // workers and deferred answers, look theirs up): a call run in place pays two compares.
  std::unique_ptr<CachedMetricsSlot[]> dispatcherSlots;
  std::unique_ptr<RingMetrics> ringMetrics;  // how full its channels' response rings get
  std::unique_ptr<moodycamel::BlockingConcurrentQueue<Work>> work;
  std::vector<std::thread> workers;
  std::unique_ptr<moodycamel::BlockingConcurrentQueue<Work>> streams;
  std::vector<std::thread> streamWorkers;
  // Workers and stream threads start as calls need them, up to the options' counts: a service
  // nobody calls holds none. Spawned by the dispatcher and the socket thread, under threadsMu;
  // none once the service is retired (its stop sentinels are counted then).
  std::mutex threadsMu;
  bool retired = false;
  std::atomic<unsigned> idleWorkers{0};
  std::atomic<unsigned> idleStreams{0};
  bool removed = false;
};

// A channel as its deferred calls' Responders see it: `ch` is cleared (under `m`) when the
// channel is destroyed, so a Responder that outlives its channel, service or client finds
// nobody. While `ch` is set, so is the dispatcher that owns it. `m` is held while an answer is
// written, and guards `pending`.
struct ChannelRef {
  std::mutex m;
  Dispatcher::Channel* ch = nullptr;
  Dispatcher* dispatcher = nullptr;
  std::set<PendingReply*> pending;  // its calls not answered yet (each leaves as it is answered)
};

// One call of a deferred handler, to be answered (Responder).
struct PendingReply {
  std::shared_ptr<ChannelRef> ref;
  std::shared_ptr<ServerCall> call;  // in the channel's `running` until answered
  RecordHeader header{};             // of the answer: kind, call id, method
  int64_t replyDeadline = 0;         // how long an answer may wait for room in the ring
  std::mutex m;                      // guards what follows (never held while waiting)
  bool answered = false;             // an answer was begun: the only one
  bool handedOff = false;            // the handler returned; until then runDeferred() owns `timing`
  bool done = false;                 // an answer ended before that, as `early`
  bool timingEnded = false;
  Status early;
  MetricsTiming timing;  // the call's metrics and server span, ended once: by the answer's thread
                         // if the handler had returned, else by runDeferred() when it does
  // Ends the metrics, the span and the audit record with what the caller was told (under m).
  void end(const Status& outcome) {
    timing.end(outcome);
    timingEnded = true;
    if (call && call->auditLater) {
      auto write = std::move(call->auditLater);
      call->auditLater = nullptr;
      try {
        write(outcome);  // from noexcept paths (the answer, ~Channel)
      } catch (const std::exception& e) {
        log().error("hms-ffi: an audit record could not be written: {}", e.what());
      }
    }
  }
};

struct Dispatcher::Channel {
  ~Channel() {
    std::lock_guard lock(ref->m);  // waits for an answer being written from another thread
    ref->ch = nullptr;
    // Deferred calls never answered: counted as cancelled now, while the client is sure to live
    // (an answer may come after it is gone). Nothing else is left in `running` by now.
    for (PendingReply* p : ref->pending) {
      std::lock_guard pl(p->m);
      if (p->handedOff && !p->timingEnded) {
        p->end(Status(StatusCode::kCancelled, "its channel closed before it was answered"));
      }
    }
    ref->pending.clear();
    ref->dispatcher->runningCalls_.fetch_sub(uint32_t(running.size()), std::memory_order_relaxed);
  }
  uint64_t session = 0;  // the broker connection that opened it; (session, id) names it
  uint64_t id = 0;
  std::shared_ptr<Service> service;
  Mapping segment;       // the broker's control page
  Mapping requestRing;   // the caller's, read-only here
  Mapping responseRing;  // ours, read-only to the caller
  ChannelHeader* hdr = nullptr;
  RingConsumer requests;   // next(): dispatcher/socket thread; release(): any, under inMu
  RingProducer responses;  // under outMu
  uint32_t maxMessageBytes = 0;
  std::shared_ptr<const ChannelGrant> grant;  // never null
  Mapping callerDoorbell;
  std::atomic<bool> busy{false};     // a worker runs the channel's current call: the next waits
  std::atomic<int> active{0};        // streams running on stream threads
  std::atomic<int> deferredOut{0};   // deferred calls not answered yet (Responder, any thread)
  // The request answered now came right behind another in one look at the ring (the caller
  // pipelines its calls): its reply is one of a burst (RingProducer::setBurst). A hint, set by
  // the dispatcher, read by whichever thread writes the reply.
  std::atomic<bool> burst{false};
  std::shared_ptr<ChannelRef> ref = std::make_shared<ChannelRef>();
  bool closed = false;               // dispatcher/socket thread
  bool parked = false;               // queued.front() waits for room for its reply (dispatcher)
  std::unique_ptr<SocketLink> link;  // socket channels (served by the socket thread)
  bool armed = false;                // in the socket thread's epoll set
  uint32_t watching = EPOLLIN;       // what the socket thread's epoll set waits for on it
  std::mutex inMu;                   // see lockRequests()
  std::mutex outMu;                  // one record at a time is built for the caller
  std::deque<std::shared_ptr<Queued>> queued;  // dispatcher/socket thread
  std::mutex runningMu;
  std::unordered_map<uint64_t, std::shared_ptr<ServerCall>> running;

  std::unique_lock<std::mutex> lockRequests();

  // No other thread is using the channel's rings: no worker runs its call, none of its streams
  // runs and no deferred call waits for its answer. Only the thread that serves the channel
  // (dispatcher or socket thread) raises `busy`, `active` or `deferredOut` (or a worker, while
  // `busy`); the thread done with the rings lowers them (release), and asks while its own is
  // still raised. So when this holds, inMu and outMu guard nothing, and the fast path skips
  // their locked instructions: each waits for the stores of the reply just written into lines
  // the caller's CPU holds, which cost more than the rest of the lock in a pipelined run.
  bool alone() const noexcept {
    return !busy.load(std::memory_order_acquire) && active.load(std::memory_order_acquire) == 0 &&
           deferredOut.load(std::memory_order_acquire) == 0;
  }

  bool callerGone() const noexcept {
    if (link) return link->ended();
    return loadAcquire(hdr->callerState) != kEndOpen || loadAcquire(hdr->serviceState) != kEndOpen;
  }
};

namespace {

// The error message a failed call answers with (wire::RpcError in place of the results).
void buildError(capnp::MessageBuilder& mb, const Status& status, const std::string& serviceId) {
  auto err = mb.initRoot<wire::RpcError>();
  err.setMessage(status.message());
  err.setSource(status.source().empty() ? serviceId : status.source());
  auto details = err.initDetails(uint(status.details().size()));
  for (size_t i = 0; i < status.details().size(); ++i) {
    details[uint(i)].setKey(status.details()[i].first);
    details[uint(i)].setValue(status.details()[i].second);
  }
}

int64_t replyDeadlineOf(const RingConsumer::Record& rec) {
  return rec.header.deadlineNs > 0 ? rec.header.deadlineNs : monotonicNs() + 1'000'000'000;
}

// While a call is parked, the dispatcher looks at its caller's ring at least this often, woken or
// not: a stream thread of the channel that waited for room too may have cleared the word the
// caller's release reads (waitFor() does when its wait ends).
constexpr int64_t kParkedRecheckNs = 20'000'000;

// Calls a socket channel may have queued (copied out of its socket) before the socket thread
// stops reading it until they have run.
constexpr size_t kSocketBacklog = 64;

}  // namespace

// ---- streams: where a handler's items go -----------------------------------------------------

class ChannelSink final : public StreamSink {
  using Channel = Dispatcher::Channel;

 public:
  ChannelSink(Channel& ch, ServerCall& call, const RingConsumer::Record& rec,
              const WaitPolicy& policy, const std::string& limitHint)
      : ch_(ch),
        call_(call),
        callId_(rec.header.callId),
        method_(rec.header.method),
        deadline_(rec.header.deadlineNs > 0 ? rec.header.deadlineNs : kNoDeadline),
        policy_(policy),
        limitHint_(limitHint) {}
  // Cap'n Proto's builders may throw from their destructors (noexcept(false)); a StreamSink's
  // destructor does not.
  ~ChannelSink() noexcept override = default;

  Result<capnp::MessageBuilder*> beginItem() noexcept override { return reserve(true); }

  Status commitItem() noexcept override { return publish(kRecordStreamItem, 0); }

  void abortItem() noexcept override {
    if (!builder_) return;
    if (ch_.link) {
      ch_.link->discard(*builder_);
    } else {
      ch_.responses.abort(slot_, uint32_t(payloadOffset(0) + builder_->ringWordsTouched() * 8));
    }
    builder_.reset();
    if (out_.owns_lock()) out_.unlock();
  }

  // The end record: OK, or the handler's error.
  void end(const Status& status, const std::string& serviceId) noexcept {
    if (call_.cancelled.load() || ch_.callerGone()) return;  // nobody reads it
    auto b = reserve(false);
    if (!b.ok()) return;
    try {
      if (status) {
        (*b)->getRoot<capnp::AnyPointer>();  // an empty message: a null root
      } else {
        buildError(**b, status, serviceId);
      }
    } catch (const kj::Exception&) {
      abortItem();
      return;
    }
    (void)publish(kRecordStreamEnd, uint16_t(status.code()));
  }

 private:
  // `item`: a stream item (cancel checked, headroom kept); else the stream's end.
  Result<capnp::MessageBuilder*> reserve(bool item) noexcept {
    const bool checkCancel = item;
    const uint32_t offset = payloadOffset(0);
    for (;;) {
      if (checkCancel && call_.cancelled.load(std::memory_order_relaxed)) {
        return Status(StatusCode::kCancelled, "the caller cancelled the stream");
      }
      if (monotonicNs() >= deadline_) {
        call_.cancel();
        return Status(StatusCode::kCancelled, "the stream's deadline passed");
      }
      if (ch_.callerGone()) return callerGone();
      if (ch_.link) {
        // Wait (in short slices, to notice a cancel) until the socket takes more.
        pollfd p{ch_.link->fd(), POLLOUT, 0};
        if (::poll(&p, 1, 20) <= 0) continue;
        out_ = std::unique_lock(ch_.outMu);
        builder_.emplace(ch_.link->scratch());
        return static_cast<capnp::MessageBuilder*>(&*builder_);
      }
      out_ = std::unique_lock(ch_.outMu);
      // Items leave a quarter of the ring free: the replies of other calls on the channel (and
      // the stream's end) get through while the caller holds items unread, instead of waiting
      // behind them until the caller reads on (which it may be waiting for those replies to do).
      const bool roomLeft =
          !item || ch_.responses.hasSpaceFor(offset + 64 + ch_.responses.capacity() / 4);
      const RingStatus st =
          roomLeft ? ch_.responses.tryReserve(offset + 64, offset + ch_.maxMessageBytes, slot_)
                   : RingStatus::kFull;
      if (st == RingStatus::kOk) {
        builder_.emplace(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot_.record + offset),
                                      (slot_.bytes - offset) / sizeof(capnp::word)));
        return static_cast<capnp::MessageBuilder*>(&*builder_);
      }
      const uint64_t head = loadAcquire(*ch_.responses.headWord());
      out_.unlock();
      if (st == RingStatus::kCorrupt) {
        return Status(StatusCode::kDataLoss, "the caller's response-ring index is impossible");
      }
      // Back-pressure: the caller has not read enough yet. Sleep until it frees space (its head
      // moves), the call is cancelled, or a bounded slice passes (to re-check the rest).
      const int64_t until = std::min(deadline_, monotonicNs() + 100'000'000);
      waitFor(ch_.responses.spaceWake(), policy_, until, [&] {
        return loadAcquire(*ch_.responses.headWord()) != head ||
               call_.cancelled.load(std::memory_order_relaxed) || ch_.callerGone();
      });
    }
  }

  Status publish(uint16_t kind, uint16_t status) noexcept {
    if (!builder_) return Status(StatusCode::kFailedPrecondition, "no item begun");
    RecordHeader header{};
    header.kind = kind;
    header.callId = callId_;
    header.method = method_;
    header.status = status;
    const int64_t deadline = std::min(deadline_, monotonicNs() + 5'000'000'000);
    Status s;
    try {
      if (ch_.link) {
        s = ch_.link->send(header, nullptr, *builder_, policy_, deadline, limitHint_);
      } else {
        ch_.responses.setBurst(kind == kRecordStreamItem);  // items come back to back
        s = publishRecord(ch_.responses, slot_, *builder_, header, nullptr, ch_.maxMessageBytes,
                          limitHint_, [&](uint32_t bytes) -> Status {
                            const bool ok =
                                waitFor(ch_.responses.spaceWake(), policy_, deadline, [&] {
                                  return ch_.responses.hasSpaceFor(bytes) || ch_.callerGone();
                                });
                            if (!ok || ch_.callerGone()) {
                              return Status(StatusCode::kUnavailable, "the caller is gone");
                            }
                            return Status();
                          });
      }
    } catch (const kj::Exception& e) {
      s = Status(StatusCode::kInternal, e.getDescription().cStr());
    }
    builder_.reset();
    if (out_.owns_lock()) out_.unlock();
    if (s.code() == StatusCode::kUnavailable) return callerGone();
    return s;
  }

  // The sink may learn first that the caller went away (a send fails): the call is cancelled
  // then, whoever notices, so that cancelled() and onCancel say so.
  Status callerGone() noexcept {
    call_.cancel();
    return Status(StatusCode::kUnavailable, "the caller closed the channel or went away");
  }

  Channel& ch_;
  ServerCall& call_;
  uint64_t callId_;
  uint16_t method_;
  int64_t deadline_;
  const WaitPolicy& policy_;
  const std::string& limitHint_;
  std::unique_lock<std::mutex> out_;
  RingProducer::Slot slot_;
  std::optional<RingMessageBuilder> builder_;
};

// ---- the dispatcher ----------------------------------------------------------------------------

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
  s->streamByOrdinal.assign(size_t(maxOrdinal) + 1, nullptr);
  s->deferredByOrdinal.assign(size_t(maxOrdinal) + 1, nullptr);
  s->methodNames.assign(size_t(maxOrdinal) + 1, "");
  for (const auto& m : spec.methods) s->methodNames[m.ordinal] = m.name;
  s->metricsFamilies = std::make_unique<std::atomic<uint32_t>[]>(s->methodNames.size());
  s->dispatcherSlots = std::make_unique<CachedMetricsSlot[]>(s->methodNames.size());
  s->ringMetrics = std::make_unique<RingMetrics>(client_.metrics, kMetricsResponseRing, s->spec.id);
  for (const auto& [ordinal, h] : s->spec.handlers) {
    if (ordinal < s->byOrdinal.size()) s->byOrdinal[ordinal] = &h;
  }
  for (const auto& [ordinal, h] : s->spec.streamHandlers) {
    if (ordinal < s->streamByOrdinal.size()) s->streamByOrdinal[ordinal] = &h;
  }
  for (const auto& [ordinal, h] : s->spec.deferredHandlers) {
    if (ordinal < s->deferredByOrdinal.size()) s->deferredByOrdinal[ordinal] = &h;
  }
  if (spec.options.workerThreads > 0) {
    s->work = std::make_unique<moodycamel::BlockingConcurrentQueue<Work>>();
  }
  if (!spec.streamHandlers.empty()) {
    s->streams = std::make_unique<moodycamel::BlockingConcurrentQueue<Work>>();
  }
  post(Event{Event::kAddService, tag, std::move(s), {}});
}

// A worker (or stream thread) runs one call and hands the channel back to whichever thread
// serves it: the dispatcher (shared memory) or the socket thread. `socket` is read before the
// channel is handed back: after that it may be reaped at once.
void Dispatcher::handBack(bool socket) {
  if (socket) {
    toSocketThread({});
  } else {
    wakeAlways(*doorbell_);
  }
}

void Dispatcher::workerLoop(Service* svc) {
  nameThisThread("hms-worker");
  Work w;
  for (;;) {
    svc->idleWorkers.fetch_add(1, std::memory_order_release);
    svc->work->wait_dequeue(w);
    svc->idleWorkers.fetch_sub(1, std::memory_order_relaxed);
    if (w.channel == nullptr) return;  // stop
    Channel& ch = *w.channel;
    if (w.item->rec.header.flags & kRecordOneWay) {
      runOneWay(ch, *w.item);
    } else {
      runUnary(ch, *w.item, w.call);
    }
    {
      // A deferred call stays until it is answered (answerDeferred).
      std::lock_guard lock(ch.runningMu);
      if (!w.call->deferred) {
        runningCalls_.fetch_sub(uint32_t(ch.running.erase(w.item->rec.header.callId)),
                                std::memory_order_relaxed);
      }
    }
    w = Work{};
    const bool socket = ch.link != nullptr;
    ch.busy.store(false, std::memory_order_release);
    handBack(socket);
  }
}

void Dispatcher::streamLoop(Service* svc) {
  nameThisThread("hms-stream");
  Work w;
  for (;;) {
    svc->idleStreams.fetch_add(1, std::memory_order_release);
    svc->streams->wait_dequeue(w);
    svc->idleStreams.fetch_sub(1, std::memory_order_relaxed);
    if (w.channel == nullptr) return;  // stop
    Channel& ch = *w.channel;
    runStream(ch, *w.item, w.call);
    w = Work{};
    const bool socket = ch.link != nullptr;
    ch.active.fetch_sub(1, std::memory_order_release);
    handBack(socket);
  }
}

void Dispatcher::enqueueWork(Service& svc, bool stream, Work w) {
  auto& pool = stream ? *svc.streams : *svc.work;
  auto& idle = stream ? svc.idleStreams : svc.idleWorkers;
  if (idle.load(std::memory_order_acquire) == 0) {
    // Nobody waits for work: one more thread, if the pool is not full. (A thread about to wait
    // again may make it one more than needed, never more than the options allow.)
    std::lock_guard lock(svc.threadsMu);
    auto& threads = stream ? svc.streamWorkers : svc.workers;
    const size_t most =
        stream ? std::max(1u, svc.spec.options.streamThreads) : svc.spec.options.workerThreads;
    if (!svc.retired && threads.size() < most) {
      Service* p = &svc;
      try {
        if (stream) {
          threads.emplace_back([this, p] { streamLoop(p); });
        } else {
          threads.emplace_back([this, p] { workerLoop(p); });
        }
      } catch (const std::system_error& e) {
        // Out of threads (RLIMIT_NPROC, memory): the call waits for one of those there are.
        log().error("hms-ffi: {} could not start a {} thread ({} running): {}", svc.spec.id,
                    stream ? "stream" : "worker", threads.size(), e.what());
      }
    }
  }
  pool.enqueue(std::move(w));
}

// Stops the service's threads once they finished what they hold (one sentinel each); no thread
// starts after this.
void Dispatcher::retireThreads(Service& svc) {
  std::lock_guard lock(svc.threadsMu);
  svc.retired = true;
  if (svc.work) {
    for (size_t i = 0; i < svc.workers.size(); ++i) svc.work->enqueue(Work{});
  }
  if (svc.streams) {
    for (size_t i = 0; i < svc.streamWorkers.size(); ++i) svc.streams->enqueue(Work{});
  }
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

void Dispatcher::channelClosed(uint64_t session, uint64_t channelId) {
  post(Event{Event::kClose, channelId, {}, {}, {}, session});
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
        // Its workers and stream threads finish what they hold, then stop; they are joined
        // when the dispatcher stops.
        retireThreads(*it->second);
        retired_.push_back(it->second);
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
          if (ch->id == ev.id && ch->session == ev.session) {
            found = true;
            runWhatTheCallerLeft(*ch);
            // The service's side ends too, so that a caller still alive (one the broker
            // disconnected, or a channel a policy reload ended) sees it at once instead of
            // waiting for answers until its deadline.
            if (loadAcquire(ch->hdr->serviceState) == kEndOpen) {
              storeRelease(ch->hdr->serviceState, uint32_t(kEndClosed));
            }
            wakeAlways(ch->hdr->response.consumerWake);
            wakeAlways(ch->hdr->request.producerWake);
            if (ch->callerDoorbell.data()) {
              wakeAlways(ch->callerDoorbell.as<DoorbellSegment>()->replyWake);
            }
            ch->closed = anyClosed_ = true;
            cancelRunning(*ch);
          }
        }
        if (!found && socketThread_.joinable()) {
          toSocketThread([this, id = ev.id, session = ev.session] {
            for (auto& ch : socketChannels_) {
              if (ch->id != id || ch->session != session || ch->closed) continue;
              // Everything the caller sent before it left may still be in the socket, more than
              // one batch of it: read to the end of what is there.
              socketRead(*ch, kDrainAll);
              runWhatTheCallerLeft(*ch);
              socketClose(*ch, "closed by the broker");
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
  ch->session = ev.session;
  ch->id = ev.channelId;
  ch->service = services_.at(ev.tag);
  ch->grant = ev.grant ? ev.grant : std::make_shared<const ChannelGrant>();
  ch->ref->ch = ch.get();
  ch->ref->dispatcher = this;
  return ch;
}

void Dispatcher::attach(const ChannelOpenedEvent& ev) {
  auto map = attachChannel(ev.fd->get(), ev.segmentBytes);
  if (!map.ok()) {
    log().error("hms-ffi: refusing channel {}: {}", ev.channelId, map.status().toString());
    return;
  }
  const uint32_t ring = map->as<ChannelHeader>()->ringBytes;
  auto requestRing =
      ev.requestRing
          ? attachPeerRing(ev.requestRing->get(), ring, "the request ring")
          : Result<Mapping>(Status(StatusCode::kDataLoss, "the caller sent no request ring"));
  if (!requestRing.ok()) {
    log().error("hms-ffi: refusing channel {}: {}", ev.channelId, requestRing.status().toString());
    return;
  }
  // The response ring is ours: made and sealed here, handed to the broker for the caller, whose
  // open the broker answers only now.
  auto own = makeOwnRing(ring, "hms-ffi-response-ring");
  if (!own.ok()) {
    log().error("hms-ffi: cannot make the response ring of channel {}: {}", ev.channelId,
                own.status().toString());
    return;
  }
  const int ownFd = own->fd.get();
  auto attached = client_.roundTrip(
      [&](wire::Request::Builder req) { req.initAttachChannel().setChannelId(ev.channelId); },
      &ownFd, 1, ev.session);
  if (!attached.ok()) {
    log().warn("hms-ffi: channel {} not attached: {}", ev.channelId, attached.status().toString());
    return;
  }
  auto ch = newChannel(ev);
  ch->segment = std::move(*map);
  ch->requestRing = std::move(*requestRing);
  ch->responseRing = std::move(own->map);
  ch->hdr = ch->segment.as<ChannelHeader>();
  ch->maxMessageBytes = ch->hdr->maxMessageBytes;
  ch->requests = RingConsumer(&ch->hdr->request, ch->requestRing.data(), ring);
  ch->responses = RingProducer(&ch->hdr->response, ch->responseRing.data(), ring,
                               &ch->hdr->response.consumerWake);
  if (client_.metrics.enabled()) ch->responses.setWatch(ch->service->ringMetrics.get());
  if (ev.callerDoorbell) {
    const Status sealed =
        checkSealedAgainstShrink(ev.callerDoorbell->get(), kDoorbellBytes, "the caller's doorbell");
    auto db = sealed ? Mapping::map(ev.callerDoorbell->get(), kDoorbellBytes, true)
                     : Result<Mapping>(sealed);
    if (db.ok() && db->as<DoorbellSegment>()->magic == kDoorbellMagic) {
      ch->callerDoorbell = std::move(*db);
      ch->responses.setExtraWake(&ch->callerDoorbell.as<DoorbellSegment>()->replyWake);
    } else {
      log().warn(
          "hms-ffi: channel {}: the caller's doorbell is unusable; its asynchronous calls "
          "complete only when it polls",
          ev.channelId);
    }
  }
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
  toSocketThread([this, raw] { socketChannels_.push_back(std::unique_ptr<Channel>(raw)); });
}

void Dispatcher::reapClosed() {
  if (!anyClosed_) return;
  std::erase_if(channels_, [](const std::unique_ptr<Channel>& ch) {
    return ch->closed && !ch->busy.load(std::memory_order_acquire) &&
           ch->active.load(std::memory_order_acquire) == 0;
  });
  // A closed channel still held by a worker or a stream is reaped on a later pass.
  anyClosed_ = std::any_of(channels_.begin(), channels_.end(),
                           [](const std::unique_ptr<Channel>& ch) { return ch->closed; });
}

void Dispatcher::cancelRunning(Channel& ch) {
  std::vector<std::shared_ptr<ServerCall>> calls;
  {
    std::lock_guard lock(ch.runningMu);
    for (auto& [id, c] : ch.running) calls.push_back(c);
  }
  for (auto& c : calls) c->cancel();
}

void Dispatcher::closeChannelLocal(Channel& ch, uint32_t myState, const char* why) {
  if (ch.closed) return;
  storeRelease(ch.hdr->serviceState, myState);
  wakeAlways(ch.hdr->response.consumerWake);
  wakeAlways(ch.hdr->request.producerWake);
  wakeAlways(ch.hdr->response.producerWake);
  if (ch.callerDoorbell.data()) wakeAlways(ch.callerDoorbell.as<DoorbellSegment>()->replyWake);
  ch.closed = anyClosed_ = true;
  cancelRunning(ch);
  const uint64_t id = ch.id;
  client_.sendOneWay([id](wire::Request::Builder req) { req.setCloseChannel(id); });
  if (myState == kEndCorrupt) {
    log().error("hms-ffi: closed channel {} of {} with DATA_LOSS: {}", ch.id, ch.service->spec.id,
                why);
  }
}

void Dispatcher::runWhatTheCallerLeft(Channel& ch) {
  if (ch.closed) return;
  if (!ch.link) {
    // A dead caller writes no more: the ring holds what it committed, read to its end.
    for (;;) {
      RingConsumer::Record rec;
      RingStatus st;
      {
        auto lock = ch.lockRequests();
        st = ch.requests.next(rec);
      }
      if (st != RingStatus::kOk) break;  // empty, or corrupt: nothing more to trust
      if (!take(ch, rec, nullptr)) {
        auto lock = ch.lockRequests();
        ch.requests.release(rec);
      }
    }
  }
  auto queued = std::move(ch.queued);
  ch.queued.clear();
  for (auto& q : queued) {
    if (!q->dropped && (q->rec.header.flags & kRecordOneWay)) {
      runOneWay(ch, *q);
    } else {
      finish(ch, *q);
    }
  }
}

int64_t Dispatcher::sweepDeadlines(std::vector<std::unique_ptr<Channel>>& list) {
  // Calls run in place (no workers, no stream) are not in `running`: with none there, nothing to
  // look at (a lock per channel per loop otherwise, on the fast path of a busy service).
  if (runningCalls_.load(std::memory_order_relaxed) == 0) return kNoDeadline;
  const int64_t now = monotonicNs();
  int64_t next = kNoDeadline;
  std::vector<std::shared_ptr<ServerCall>> due;
  for (auto& ch : list) {
    std::lock_guard lock(ch->runningMu);
    for (auto& [id, c] : ch->running) {
      if (c->cancelled.load(std::memory_order_relaxed)) continue;
      if (c->deadlineNs <= now) {
        due.push_back(c);
      } else {
        next = std::min(next, c->deadlineNs);
      }
    }
  }
  // The handler is told its call is over: the caller has reported DEADLINE_EXCEEDED already.
  for (auto& c : due) c->cancel();
  return next;
}

bool Dispatcher::take(Channel& ch, const RingConsumer::Record& rec,
                      std::unique_ptr<uint64_t[]> copy) {
  if (rec.header.kind == kRecordCancel) {
    const uint64_t id = rec.header.callId;
    if (!ch.link) {
      auto lock = ch.lockRequests();
      ch.requests.release(rec);
    }
    std::shared_ptr<ServerCall> target;
    {
      std::lock_guard lock(ch.runningMu);
      if (auto it = ch.running.find(id); it != ch.running.end()) target = it->second;
    }
    if (target) {
      target->cancel();
    } else {
      // Not started yet: it never runs, and nobody waits for its answer.
      for (auto& q : ch.queued) {
        if (q->rec.header.callId == id) q->dropped = true;
      }
    }
    return true;
  }
  if (rec.header.kind != kRecordRequest) return false;
  auto q = std::make_shared<Queued>();
  q->rec = rec;
  q->copy = std::move(copy);
  ch.queued.push_back(std::move(q));
  return true;
}

bool Dispatcher::replyRoom(Channel& ch, bool arm) {
  if (ch.link) return ch.link->writable();
  // Stream threads build their items in the same ring, under outMu: never wait for one here.
  std::unique_lock<std::mutex> out;
  if (!ch.alone()) {
    out = std::unique_lock(ch.outMu, std::try_to_lock);
    if (!out.owns_lock()) return false;
  }
  if (arm && loadRelaxed(doorbell_->sleeping) != 0) {
    // About to sleep (waitFor() announced it on the doorbell; while it spins, nothing is armed,
    // so that the caller's releases cost no wake-ups then). The caller's next release sees this
    // and rings the doorbell too (RingConsumer::release()): set before `head` is read, so that
    // either this read sees its release or it sees this.
    storeRelaxed(ch.responses.spaceWake().sleeping, 1u);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  return ch.responses.hasSpaceFor(payloadOffset(0) + 64);
}

bool Dispatcher::dispatch(Channel& ch, int budget) {
  bool did = false;
  ch.parked = false;
  while (budget-- > 0 && !ch.closed && !ch.busy.load(std::memory_order_acquire) &&
         !ch.queued.empty()) {
    if (Queued& front = *ch.queued.front();
        !front.dropped && !(front.rec.header.flags & (kRecordStream | kRecordOneWay)) &&
        !replyRoom(ch, false)) {
      // The caller has not read enough of its replies for this one: park the call, its request
      // in place, and serve the other channels; their callers do not wait for this one.
      const int64_t now = monotonicNs();
      if (front.parkedUntil == 0) front.parkedUntil = replyDeadlineOf(front.rec);
      if (now < front.parkedUntil) {
        ch.parked = true;
        int64_t& wake = ch.link ? socketParkedWake_ : parkedWake_;
        wake = std::min({wake, front.parkedUntil, now + kParkedRecheckNs});
        break;
      }
      // Its deadline passed unanswered: the caller has given up on it (DEADLINE_EXCEEDED).
      front.dropped = true;
    }
    std::shared_ptr<Queued> q = std::move(ch.queued.front());
    ch.queued.pop_front();
    did = true;
    if (q->dropped) {
      finish(ch, *q);
      continue;
    }
    const RecordHeader& h = q->rec.header;
    auto cancellable = [&] {
      auto call = std::make_shared<ServerCall>();
      call->callId = h.callId;
      call->deadlineNs = h.deadlineNs > 0 ? h.deadlineNs : kNoDeadline;
      if (!ch.link) call->spaceWake = &ch.hdr->response.producerWake;
      std::lock_guard lock(ch.runningMu);
      if (ch.running.insert_or_assign(h.callId, call).second) {
        runningCalls_.fetch_add(1, std::memory_order_relaxed);
      }
      return call;
    };
    if (h.flags & kRecordStream) {
      auto call = cancellable();
      ch.active.fetch_add(1, std::memory_order_relaxed);
      if (ch.service->streams) {
        enqueueWork(*ch.service, true, Work{&ch, std::move(q), std::move(call)});
      } else {
        runStream(ch, *q, call);  // no stream handler at all: it ends at once with the error
        ch.active.fetch_sub(1, std::memory_order_relaxed);
      }
      continue;
    }
    if (onWorker(ch, h)) {
      auto call = cancellable();
      ch.busy.store(true, std::memory_order_relaxed);
      enqueueWork(*ch.service, false, Work{&ch, std::move(q), std::move(call)});
      break;
    }
    if (h.flags & kRecordOneWay) {
      runOneWay(ch, *q);
    } else {
      runUnary(ch, *q, nullptr);
    }
  }
  return did;
}

bool Dispatcher::runInPlace(Channel& ch, const RingConsumer::Record& rec) {
  // The common case runs at once, in place: a plain or one-way call on an idle channel of a
  // service without workers.
  if (rec.header.kind != kRecordRequest || (rec.header.flags & kRecordStream) ||
      !ch.queued.empty() || onWorker(ch, rec.header) || ch.busy.load(std::memory_order_relaxed)) {
    return false;
  }
  Queued q;
  q.rec = rec;
  if (rec.header.flags & kRecordOneWay) {
    runOneWay(ch, q);
    return true;
  }
  // No room for the reply: queued, where dispatch() parks it. (Over shared memory runUnary()
  // finds out when it reserves, at no cost on the fast path; a socket is asked first.)
  if (ch.link && !replyRoom(ch, false)) return false;
  return runUnary(ch, q, nullptr, true);
}

bool Dispatcher::onWorker(const Channel& ch, const RecordHeader& h) {
  const Service& svc = *ch.service;
  if (!svc.work) return false;
  // A deferred handler only starts its call, so it runs here (and the channel's next call does
  // not wait for a worker); a one-way call to it runs where the others do, in their order.
  if (h.flags & kRecordOneWay) return true;
  return h.method >= svc.deferredByOrdinal.size() || svc.deferredByOrdinal[h.method] == nullptr ||
         (h.method < svc.byOrdinal.size() && svc.byOrdinal[h.method] != nullptr);
}

std::unique_lock<std::mutex> Dispatcher::Channel::lockRequests() {
  // Only workers and stream threads release requests off the dispatcher thread, each while it
  // holds the channel (`busy`, `active`): a channel none holds needs no lock.
  if (alone()) return {};
  return std::unique_lock(inMu);
}

void Dispatcher::finish(Channel& ch, Queued& q) {
  if (ch.link || q.copy) return;  // a heap copy, freed with q
  auto lock = ch.lockRequests();
  ch.requests.release(q.rec);
}

bool Dispatcher::pollChannels() {
  bool did = false;
  parkedWake_ = kNoDeadline;  // dispatch() lowers it for each channel it parks
  // Begin with the channel served last. Callers that share a CPU take turns of milliseconds, so
  // the next request most likely comes on it; a scan from the first channel would add the look
  // at every channel before it to each of its round trips.
  const size_t n = channels_.size();
  const size_t start = lastServed_ < n ? lastServed_ : 0;
  for (size_t i = 0, at = start; i < n; ++i, at = at + 1 == n ? 0 : at + 1) {
    Channel& ch = *channels_[at];
    if (ch.closed) continue;
    if (loadAcquire(ch.hdr->callerState) != kEndOpen) {
      runWhatTheCallerLeft(ch);
      closeChannelLocal(ch, kEndClosed, "the caller closed it or went away");
      continue;
    }
    // Read what has come (a bounded batch, so that one busy caller cannot starve the others).
    for (int n = 0; n < 64 && !ch.closed; ++n) {
      RingConsumer::Record rec;
      RingStatus st;
      {
        auto lock = ch.lockRequests();
        st = ch.requests.next(rec);
      }
      if (st == RingStatus::kEmpty) break;
      did = true;
      lastServed_ = at;
      if (st == RingStatus::kCorrupt) {
        closeChannelLocal(ch, kEndCorrupt, "malformed record in the request ring");
        break;
      }
      ch.burst.store(n > 0, std::memory_order_relaxed);
      if (runInPlace(ch, rec)) continue;
      if (!take(ch, rec, nullptr)) {
        closeChannelLocal(ch, kEndCorrupt, "a record other than a request or a cancel");
        break;
      }
    }
    did |= dispatch(ch, 64);
  }
  reapClosed();
  return did;
}

void MetricsTiming::end(const Status& answered) noexcept {
  if (slot) metricsEnd(slot, uint32_t(answered.code()), uint64_t(monotonicNs() - startNs));
  slot = nullptr;
  if (span && spans) {
    try {
      span->endUnixNs = realtimeNs();
      span->code = answered.code();
      span->message = answered.message();
      spans->record(*span);
    } catch (const std::exception&) {
    }
  }
  span.reset();
}

MetricsSlot* Dispatcher::metricsSlot(const Service& svc, uint16_t ordinal) noexcept {
  MetricsWriter& w = client_.metrics;
  if (!w.enabled() || ordinal >= svc.methodNames.size() || svc.methodNames[ordinal].empty()) {
    return nullptr;
  }
  auto lookup = [&]() -> MetricsSlot* {
    try {
      return w.slot(w.family(svc.metricsFamilies[ordinal], kMetricsService, svc.spec.id,
                             svc.methodNames[ordinal]));
    } catch (const std::exception&) {
      return nullptr;
    }
  };
  if (metricsThreadSerial() == runSerial_.load(std::memory_order_relaxed)) {
    return svc.dispatcherSlots[ordinal].get(w, lookup);
  }
  return lookup();
}

Status Dispatcher::invoke(Channel& ch, const RingConsumer::Record& rec,
                          const std::shared_ptr<ServerCall>* call, bool stream,
                          const std::function<Status(CallContext&, capnp::MessageReader&)>* run,
                          capnp::MessageBuilder* results, MetricsTiming* timing) {
  const uint16_t ordinal = rec.header.method;
  const Service& svc = *ch.service;
  const bool named = ordinal < svc.methodNames.size() && !svc.methodNames[ordinal].empty();
  MetricsSlot* m = metricsSlot(svc, ordinal);
  if (!m && !rec.trace) return invokeChecked(ch, rec, call, stream, run, results);
  // The trace the handler runs in, which the calls it makes inherit: the caller's, or (spans
  // being recorded, the trace sampled) this call's server span, a child of the caller's span.
  std::optional<TraceContext> current;
  std::optional<Span> span;
  if (rec.trace) {
    TraceContext in;
    std::memcpy(in.traceId.data(), rec.trace->traceId, 16);
    std::memcpy(in.spanId.data(), rec.trace->spanId, 8);
    in.flags = rec.trace->traceFlags;
    current = in;
    if (client_.spans && in.sampled()) {
      span.emplace();
      span->context = in;
      span->context.spanId = newSpanId();
      span->parentSpanId = in.spanId;
      span->kind = Span::Kind::kServer;
      span->service = svc.spec.id;
      span->method = named ? svc.methodNames[ordinal] : "ordinal " + std::to_string(ordinal);
      span->startUnixNs = realtimeNs();
      current->spanId = span->context.spanId;
    }
  }
  const int64_t t0 = monotonicNs();
  metricsStart(m);
  Status status;
  {
    std::optional<TraceScope> scope;
    if (current) scope.emplace(current);
    status = invokeChecked(ch, rec, call, stream, run, results, t0);
  }
  MetricsTiming here;
  MetricsTiming& t = timing ? *timing : here;
  t.slot = m;
  t.startNs = t0;
  t.span = std::move(span);
  t.spans = client_.spans.get();
  if (!timing) t.end(status);  // else the caller ends it once the reply is out
  return status;
}

Status Dispatcher::invokeChecked(
    Channel& ch, const RingConsumer::Record& rec, const std::shared_ptr<ServerCall>* call,
    bool stream, const std::function<Status(CallContext&, capnp::MessageReader&)>* run,
    capnp::MessageBuilder* results, int64_t nowNs) {
  const ChannelGrant& grant = *ch.grant;
  const uint16_t ordinal = rec.header.method;
  if (!grant.enforced) return invokeGranted(ch, rec, call, stream, run, results, nowNs);
  // The broker's word for this caller, sent to this process over its own control socket: what
  // the caller writes into the channel cannot widen it.
  const bool allowed = ordinal < grant.allowed.size() && grant.allowed[ordinal] != 0;
  const uint8_t level = allowed && ordinal < grant.audit.size() ? grant.audit[ordinal] : 0;
  Status status;
  const int64_t started = level != 0 ? monotonicNs() : 0;
  if (!allowed) {
    const Service& svc = *ch.service;
    const std::string method = ordinal < svc.methodNames.size() && !svc.methodNames[ordinal].empty()
                                   ? svc.methodNames[ordinal]
                                   : "method " + std::to_string(ordinal);
    const std::string why = ordinal < grant.denied.size() && !grant.denied[ordinal].empty()
                                ? grant.denied[ordinal]
                                : "the broker's policy grants it to no caller of this channel";
    const Caller& who = grant.caller;
    status =
        Status(StatusCode::kPermissionDenied,
               svc.spec.id + "." + method + " is not allowed for " +
                   (who.host.empty() ? "" : "a caller of host " + who.host + ", ") + "uid " +
                   std::to_string(who.uid) + " (pid " + std::to_string(who.pid) + ", '" + who.name +
                   "'" + (who.subject.empty() ? "" : ", sub " + who.subject) + "): " + why,
               svc.spec.id, {{"service", svc.spec.id}, {"method", method}, {"reason", why}});
  } else {
    status = invokeGranted(ch, rec, call, stream, run, results, nowNs);
  }
  // Denials are always recorded; allowed calls as the policy's audit level asks.
  if (!allowed || level != 0) {
    if (auto record = auditRecord(ch, rec, level, started)) {
      // A deferred call handed off has no outcome yet: it is recorded when it is answered.
      if (allowed && status.isOk() && call != nullptr && *call && (*call)->deferred) {
        (*call)->auditLater = std::move(record);
      } else {
        record(status);
      }
    }
  }
  return status;
}

std::function<void(const Status&)> Dispatcher::auditRecord(Channel& ch,
                                                           const RingConsumer::Record& rec,
                                                           uint8_t level, int64_t startedNs) {
  AuditLog* log = client_.auditLog();
  if (log == nullptr) return {};
  const Service& svc = *ch.service;
  const Caller& who = ch.grant->caller;
  const uint16_t ordinal = rec.header.method;
  std::string method =
      ordinal < svc.methodNames.size() ? svc.methodNames[ordinal] : std::to_string(ordinal);
  std::string roles;
  for (const auto& r : who.roles) roles += (roles.empty() ? "" : ",") + r;
  std::string trace;
  if (level >= uint8_t(wire::AuditLevel::DETAILED) && rec.trace) {
    static const char* hex = "0123456789abcdef";
    for (int i = 0; i < 16; ++i) {
      trace += hex[rec.trace->traceId[i] >> 4];
      trace += hex[rec.trace->traceId[i] & 15];
    }
  }
  // Copies: a deferred call's record is written after the record and its channel are gone.
  return [log, service = svc.spec.id, version = svc.spec.version.toString(),
          method = std::move(method), uid = who.uid, gid = who.gid, pid = who.pid, name = who.name,
          roles = std::move(roles), subject = who.subject, level, startedNs,
          trace = std::move(trace)](const Status& status) {
    std::vector<AuditField> f{
        {"event", "call"},
        {"service", service},
        {"version", version},
        {"method", method},
        {"outcome", status.isOk() ? "ok" : "error"},
        {"code", std::string(statusCodeName(status.code()))},
        {"uid", std::to_string(uid), true},
        {"gid", std::to_string(gid), true},
        {"pid", std::to_string(pid), true},
        {"caller_name", name},
        {"roles", roles},
    };
    if (!subject.empty()) f.push_back({"sub", subject});
    if (!status.isOk()) f.push_back({"reason", status.message()});
    if (level >= uint8_t(wire::AuditLevel::DETAILED)) {
      f.push_back({"duration_us", std::to_string((monotonicNs() - startedNs) / 1000), true});
      if (!trace.empty()) f.push_back({"trace_id", trace});
    }
    log->record(service + "." + method + " called by uid " + std::to_string(uid) + " pid " +
                    std::to_string(pid) + ": " + std::string(statusCodeName(status.code())),
                f);
  };
}

// Runs the handler with what a handler knows, catching what it throws.
Status Dispatcher::invokeGranted(
    Channel& ch, const RingConsumer::Record& rec, const std::shared_ptr<ServerCall>* call,
    bool stream, const std::function<Status(CallContext&, capnp::MessageReader&)>* run,
    capnp::MessageBuilder* results, int64_t nowNs) {
  Service& svc = *ch.service;
  static const std::string kNoName;
  const uint16_t ordinal = rec.header.method;
  const std::string& methodName =
      ordinal < svc.methodNames.size() ? svc.methodNames[ordinal] : kNoName;
  const Handler* unary = ordinal < svc.byOrdinal.size() ? svc.byOrdinal[ordinal] : nullptr;
  const StreamHandler* streamer =
      ordinal < svc.streamByOrdinal.size() ? svc.streamByOrdinal[ordinal] : nullptr;
  const DeferredHandler* deferred =
      ordinal < svc.deferredByOrdinal.size() ? svc.deferredByOrdinal[ordinal] : nullptr;
  auto label = [&] {
    return methodName.empty() ? "ordinal " + std::to_string(ordinal) : "'" + methodName + "'";
  };
  if (rec.header.deadlineNs > 0 && (nowNs ? nowNs : monotonicNs()) >= rec.header.deadlineNs) {
    return Status(StatusCode::kDeadlineExceeded,
                  "the deadline passed before " + svc.spec.id + "." + methodName + " started");
  }
  if (!unary && !streamer && !deferred) {
    return Status(StatusCode::kUnimplemented, "service '" + svc.spec.id + "' " +
                                                  svc.spec.version.toString() +
                                                  " has no handler for method " + label());
  }
  if (stream && !streamer) {
    return Status(StatusCode::kFailedPrecondition,
                  svc.spec.id + "." + methodName +
                      " is not a stream method; make it a call (send or sendAsync, "
                      "hms_stub_call_json, or the binding's call)");
  }
  if (!stream && !unary && !deferred) {
    return Status(
        StatusCode::kFailedPrecondition,
        svc.spec.id + "." + methodName +
            " is a stream method; open it as a stream (openStream, hms_stub_open_stream_json, "
            "or the binding's stream call)");
  }
  kj::ArrayPtr<const capnp::word> seg[1] = {
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(rec.words), rec.header.words)};
  try {
    capnp::SegmentArrayMessageReader params(kj::arrayPtr(seg, 1),
                                            ringReaderOptions(rec.header.words));
    if (!validSingleSegmentMessage(rec.words, rec.header.words)) {
      return Status(StatusCode::kInvalidArgument, "the request to " + svc.spec.id + "." +
                                                      methodName +
                                                      " is not a valid Cap'n Proto message");
    }
    CallContext ctx;
    ctx.serviceId_ = &svc.spec.id;
    ctx.caller_ = &ch.grant->caller;
    ctx.method_ = ordinal;
    ctx.methodName_ = &methodName;
    if (const TraceContext* t = currentTrace()) ctx.span_ = *t;
    ctx.deadlineNs_ = rec.header.deadlineNs > 0 ? rec.header.deadlineNs : kNoDeadline;
    if (call) ctx.call_ = *call;
    if (rec.trace) {
      TraceContext t;
      std::memcpy(t.traceId.data(), rec.trace->traceId, 16);
      std::memcpy(t.spanId.data(), rec.trace->spanId, 8);
      t.flags = rec.trace->traceFlags;
      ctx.trace_ = t;
    }
    if (stream || run) return (*run)(ctx, params);  // a stream, or runDeferred()'s call
    if (!unary) {
      // A one-way call to a deferred method: nobody reads its answer.
      Responder none;
      (*deferred)(ctx, params, none);
      return Status();
    }
    return (*unary)(ctx, params, *results);
  } catch (const Error& e) {
    return e.status();
  } catch (const kj::Exception& e) {
    return Status(StatusCode::kInternal,
                  svc.spec.id + "." + methodName + " failed: " + e.getDescription().cStr());
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal, svc.spec.id + "." + methodName + " threw: " + e.what());
  } catch (...) {
    return Status(StatusCode::kUnknown, svc.spec.id + "." + methodName + " threw a non-exception");
  }
}

void Dispatcher::runOneWay(Channel& ch, Queued& q) {
  // Nobody reads the results: they are built on the heap and dropped.
  capnp::MallocMessageBuilder scratch(256);
  const Status status = invoke(ch, q.rec, nullptr, false, nullptr, &scratch);
  if (!status) {
    const Service& svc = *ch.service;
    const uint16_t ordinal = q.rec.header.method;
    LogFields f;
    f.serviceId = svc.spec.id;
    f.method =
        ordinal < svc.methodNames.size() ? svc.methodNames[ordinal] : std::to_string(ordinal);
    const Caller& who = ch.grant->caller;
    f.userId = who.subject.empty() ? "uid:" + std::to_string(who.uid) : who.subject;
    if (q.rec.trace) {
      TraceContext t;
      std::memcpy(t.traceId.data(), q.rec.trace->traceId, 16);
      std::memcpy(t.spanId.data(), q.rec.trace->spanId, 8);
      const std::string tp = t.traceparent();
      f.traceId = tp.substr(3, 32);
      f.spanId = tp.substr(36, 16);
    }
    ScopedLogFields scope(f);
    log().warn("hms-ffi: a one-way call from {} failed: {} ({})", who.name, status.toString(),
               f.text());
  }
  finish(ch, q);
}

void Dispatcher::runStream(Channel& ch, Queued& q, const std::shared_ptr<ServerCall>& call) {
  Service& svc = *ch.service;
  ChannelSink sink(ch, *call, q.rec, client_.policy, svc.limitHint);
  const StreamHandler* h = q.rec.header.method < svc.streamByOrdinal.size()
                               ? svc.streamByOrdinal[q.rec.header.method]
                               : nullptr;
  std::function<Status(CallContext&, capnp::MessageReader&)> run =
      [&](CallContext& ctx, capnp::MessageReader& params) { return (*h)(ctx, params, sink); };
  Status status = invoke(ch, q.rec, &call, true, &run, nullptr);
  sink.abortItem();  // an item begun and never committed (the handler threw)
  sink.end(status, svc.spec.id);
  {
    std::lock_guard lock(ch.runningMu);
    runningCalls_.fetch_sub(uint32_t(ch.running.erase(q.rec.header.callId)),
                            std::memory_order_relaxed);
  }
  finish(ch, q);
}

template <class Build>
std::optional<Status> Dispatcher::writeAnswer(Channel& ch, RecordHeader header,
                                              int64_t replyDeadline, bool mayPark, bool& corrupt,
                                              Build&& build) {
  const Service& svc = *ch.service;
  corrupt = false;
  if (ch.link) {
    Status status;
    {
      // The request is read in place (receive buffer or copy); the results are built in the
      // link's scratch, a separate buffer.
      RingMessageBuilder results(ch.link->scratch());
      try {
        status = build(static_cast<capnp::MessageBuilder&>(results));
        if (status) {
          const Status sent =
              ch.link->send(header, nullptr, results, client_.policy, replyDeadline, svc.limitHint);
          if (sent.code() != StatusCode::kResourceExhausted) return Status();  // sent, or nobody
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
    return status;
  }

  const uint32_t offset = payloadOffset(0);
  auto callerGone = [&] { return ch.callerGone(); };  // or this side closed it
  // Space for the reply first: the request stays in place (it is read in place) until answered.
  RingProducer::Slot slot;
  ch.responses.setBurst(ch.burst.load(std::memory_order_relaxed));
  for (;;) {
    const RingStatus st = ch.responses.tryReserve(offset + 64, offset + ch.maxMessageBytes, slot);
    if (st == RingStatus::kOk) break;
    if (st == RingStatus::kFull && mayPark) return std::nullopt;  // nothing done: to be parked
    if (st == RingStatus::kCorrupt) {
      corrupt = true;
      return Status();
    }
    const bool ok = waitFor(ch.responses.spaceWake(), client_.policy, replyDeadline,
                            [&] { return ch.responses.hasSpaceFor(offset + 64) || callerGone(); });
    if (!ok || callerGone()) return Status();  // nobody is left to read the reply
  }

  std::optional<RingMessageBuilder> results;
  results.emplace(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                               (slot.bytes - offset) / sizeof(capnp::word)));
  Status status = build(static_cast<capnp::MessageBuilder&>(*results));

  auto waitSpace = [&](uint32_t bytes) -> Status {
    const bool ok = waitFor(ch.responses.spaceWake(), client_.policy, replyDeadline,
                            [&] { return ch.responses.hasSpaceFor(bytes) || callerGone(); });
    if (!ok || callerGone()) return Status(StatusCode::kDeadlineExceeded, "caller is gone");
    return Status();
  };
  if (status) {
    Status published;
    try {
      published = publishRecord(ch.responses, slot, *results, header, nullptr, ch.maxMessageBytes,
                                svc.limitHint, waitSpace);
    } catch (const kj::Exception& e) {
      published = Status(StatusCode::kInternal, e.getDescription().cStr());
    }
    if (published) return Status();
    // Tell the caller why there are no results (typically RESOURCE_EXHAUSTED); the slot was
    // given back, so reserve again for the small error message.
    status = published;
    results.reset();
    if (ch.responses.tryReserve(offset + 256, offset + ch.maxMessageBytes, slot) !=
        RingStatus::kOk) {
      return status;
    }
    results.emplace(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                 (slot.bytes - offset) / sizeof(capnp::word)));
  } else {
    ch.responses.abort(slot, uint32_t(offset + results->ringWordsTouched() * 8));
    results.reset();
    results.emplace(kj::arrayPtr(reinterpret_cast<capnp::word*>(slot.record + offset),
                                 (slot.bytes - offset) / sizeof(capnp::word)));
  }
  header.status = uint16_t(status.code());
  buildError(*results, status, svc.spec.id);
  (void)publishRecord(ch.responses, slot, *results, header, nullptr, ch.maxMessageBytes,
                      svc.limitHint, waitSpace);
  return status;
}

bool Dispatcher::runUnary(Channel& ch, Queued& q, const std::shared_ptr<ServerCall>& callp,
                          bool mayPark) {
  const RingConsumer::Record& rec = q.rec;
  const Service& svc = *ch.service;
  if (const uint16_t m = rec.header.method;
      m < svc.deferredByOrdinal.size() && svc.deferredByOrdinal[m] != nullptr &&
      (m >= svc.byOrdinal.size() || svc.byOrdinal[m] == nullptr)) {
    runDeferred(ch, q, callp, *svc.deferredByOrdinal[m]);
    return true;
  }
  const std::shared_ptr<ServerCall>* call = callp ? &callp : nullptr;
  RecordHeader header{};
  header.kind = kRecordResponse;
  header.callId = rec.header.callId;
  header.method = rec.header.method;
  // A worker holds the channel (`busy`), so it locks; the dispatcher only while a stream of the
  // channel may be building an item in the same ring, or a deferred call may be answered.
  std::unique_lock out(ch.outMu, std::defer_lock);
  if (!ch.alone()) out.lock();
  // The call's end is counted once its reply is out (or there is nobody to send it to), with
  // the code the service answered.
  MetricsTiming timing;
  Status answered;
  struct EndCount {
    MetricsTiming& t;
    const Status& s;
    ~EndCount() { t.end(s); }
  } endCount{timing, answered};
  bool corrupt = false;
  const auto told = writeAnswer(ch, header, replyDeadlineOf(rec), mayPark, corrupt,
                                [&](capnp::MessageBuilder& results) {
                                  return invoke(ch, rec, call, false, nullptr, &results, &timing);
                                });
  if (!told) return false;  // no room: to be parked, nothing done
  answered = *told;
  if (out.owns_lock()) out.unlock();
  if (corrupt) closeChannelLocal(ch, kEndCorrupt, "the caller's response-ring index is impossible");
  finish(ch, q);
  return true;
}

void Dispatcher::runDeferred(Channel& ch, Queued& q, const std::shared_ptr<ServerCall>& callp,
                             const DeferredHandler& handler) {
  const RingConsumer::Record& rec = q.rec;
  auto p = std::make_shared<PendingReply>();
  p->ref = ch.ref;
  p->header.kind = kRecordResponse;
  p->header.callId = rec.header.callId;
  p->header.method = rec.header.method;
  p->replyDeadline = replyDeadlineOf(rec);
  p->call = callp;
  {
    // In `running` until answered: the caller's cancel, its deadline and the channel's end
    // reach the call (and the handler's onCancel callbacks) after its handler returned.
    std::lock_guard lock(ch.runningMu);
    if (!p->call) {
      p->call = std::make_shared<ServerCall>();
      p->call->callId = rec.header.callId;
      p->call->deadlineNs = rec.header.deadlineNs > 0 ? rec.header.deadlineNs : kNoDeadline;
      if (!ch.link) p->call->spaceWake = &ch.hdr->response.producerWake;
    }
    p->call->deferred = true;
    if (ch.running.insert_or_assign(rec.header.callId, p->call).second) {
      runningCalls_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  ch.deferredOut.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lock(ch.ref->m);
    ch.ref->pending.insert(p.get());
  }
  Responder responder(p);
  const std::function<Status(CallContext&, capnp::MessageReader&)> run =
      [&](CallContext& ctx, capnp::MessageReader& params) {
        handler(ctx, params, responder);
        return Status();
      };
  const Status status = invoke(ch, rec, &p->call, false, &run, nullptr, &p->timing);
  finish(ch, q);  // the params are the handler's no more
  if (!status) {
    // Refused before the handler ran (policy, deadline, a malformed request), or it threw.
    (void)answerDeferred(*p, status, nullptr);
  } else if (responder) {
    const Service& svc = *ch.service;
    const uint16_t m = rec.header.method;
    (void)answerDeferred(
        *p,
        Status(StatusCode::kInternal,
               svc.spec.id + "." + (m < svc.methodNames.size() ? svc.methodNames[m] : "") +
                   " returned without answering its call or keeping its Responder to answer "
                   "later"),
        nullptr);
  }
  std::lock_guard lock(p->m);
  p->handedOff = true;
  if (p->done && !p->timingEnded) p->end(p->early);  // answered while the handler ran
}

Status Dispatcher::answerDeferred(
    PendingReply& p, Status status,
    const std::function<Status(capnp::MessageBuilder&)>* build) noexcept {
  {
    std::lock_guard lock(p.m);
    if (p.answered) {
      return Status(StatusCode::kFailedPrecondition, "this call was answered already");
    }
    p.answered = true;
  }
  auto answer = [&](capnp::MessageBuilder& results) -> Status {
    if (!build) {
      return status.isOk() ? Status(StatusCode::kInternal, "the service failed the call with OK")
                           : status;
    }
    try {
      return (*build)(results);
    } catch (const Error& e) {
      return e.status();
    } catch (const kj::Exception& e) {
      return Status(StatusCode::kInternal,
                    std::string("building the answer failed: ") + e.getDescription().cStr());
    } catch (const std::exception& e) {
      return Status(StatusCode::kInternal, std::string("building the answer threw: ") + e.what());
    }
  };
  Status result;
  Status told;                     // what the call's metrics count
  std::lock_guard lock(p.ref->m);  // the channel stays while this holds
  Channel* ch = p.ref->ch;
  if (ch == nullptr) {
    result = Status(StatusCode::kUnavailable,
                    "the call's channel is closed: its caller went away or the service stopped");
  } else if (p.call->cancelled.load(std::memory_order_acquire)) {
    result = Status(StatusCode::kUnavailable,
                    "nobody reads this answer: the caller cancelled the call, gave up at its "
                    "deadline, or went away");
    told = Status(StatusCode::kCancelled, "cancelled before it was answered");
  } else {
    Dispatcher& d = *p.ref->dispatcher;
    bool corrupt = false;
    try {
      std::unique_lock out(ch->outMu);  // never alone while this call is out (deferredOut)
      told = *d.writeAnswer(*ch, p.header, p.replyDeadline, false, corrupt, answer);
    } catch (const std::exception& e) {
      told = Status(StatusCode::kInternal, e.what());
    }
    if (corrupt) {
      log().error(
          "hms-ffi: closing channel {} of {}: the caller's response-ring index is impossible",
          ch->id, ch->service->spec.id);
      d.channelClosed(ch->session, ch->id);
    }
    // Results that could not go (too large for the ring, or `build` failed) went as an error.
    if (build && !told) result = told;
  }
  {
    std::lock_guard pl(p.m);
    if (!p.handedOff) {
      p.early = told;  // runDeferred() counts it when the handler returns
      p.done = true;
    } else if (ch != nullptr && !p.timingEnded) {  // (with no channel, ~Channel counted it)
      // A slot has one writer, its thread: this thread counts the end in its own (the series
      // sums its slots).
      if (p.timing.slot)
        p.timing.slot = p.ref->dispatcher->metricsSlot(*ch->service, p.header.method);
      p.end(told);
    }
  }
  if (ch != nullptr) {
    Dispatcher& d = *p.ref->dispatcher;
    {
      std::lock_guard rl(ch->runningMu);
      if (auto it = ch->running.find(p.header.callId);
          it != ch->running.end() && it->second == p.call) {
        ch->running.erase(it);
        d.runningCalls_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    p.ref->pending.erase(&p);
    ch->deferredOut.fetch_sub(1, std::memory_order_release);
  }
  return result;
}

void Dispatcher::run() {
  nameThisThread("hms-dispatch");
  runSerial_.store(metricsThreadSerial(), std::memory_order_relaxed);
  int64_t nextDeadline = kNoDeadline;
  for (;;) {
    const bool events = drainEvents();
    if (stopping_.load(std::memory_order_acquire)) break;
    const bool did = pollChannels();
    if (nextDeadline <= monotonicNs() || did) nextDeadline = sweepDeadlines(channels_);
    if (events || did) continue;
    waitFor(*doorbell_, client_.policy, std::min(nextDeadline, parkedWake_), [&] {
      if (pendingEvents_.load(std::memory_order_relaxed) != 0 ||
          stopping_.load(std::memory_order_relaxed)) {
        return true;
      }
      const size_t n = channels_.size();
      const size_t start = lastServed_ < n ? lastServed_ : 0;
      for (size_t i = 0, at = start; i < n; ++i, at = at + 1 == n ? 0 : at + 1) {
        Channel* ch = channels_[at].get();
        if (ch->closed) continue;
        if (ch->requests.hasData()) return true;
        // Acquire: pairs with a worker's release of `busy`. A parked call waits for room.
        if (!ch->queued.empty() && !ch->busy.load(std::memory_order_acquire) &&
            (!ch->parked || replyRoom(*ch, true))) {
          return true;
        }
      }
      return false;
    });
    nextDeadline = sweepDeadlines(channels_);
  }
  // Stop: tell every caller, stop the socket thread, the workers and the stream threads.
  for (auto& ch : channels_) closeChannelLocal(*ch, kEndClosed, "client stopped");
  if (socketThread_.joinable()) {
    toSocketThread([this] { socketsStopping_ = true; });
    socketThread_.join();
  }
  for (auto& [tag, svc] : services_) retireThreads(*svc);
  for (auto& [tag, svc] : services_) {
    for (auto& t : svc->workers) t.join();
    for (auto& t : svc->streamWorkers) t.join();
  }
  for (auto& svc : retired_) {
    for (auto& t : svc->workers) t.join();
    for (auto& t : svc->streamWorkers) t.join();
  }
  retired_.clear();
  channels_.clear();
  socketChannels_.clear();
  services_.clear();
}

// ---- socket channels --------------------------------------------------------------------------

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
    nameThisThread("hms-dispatch-so");
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
  cancelRunning(ch);
  log().debug("hms-ffi: closed socket channel {} of {}: {}", ch.id, ch.service->spec.id, why);
  const uint64_t id = ch.id;
  client_.sendOneWay([id](wire::Request::Builder req) { req.setCloseChannel(id); });
}

void Dispatcher::runSockets() {
  epoll_event events[64];
  int64_t nextDeadline = kNoDeadline;
  for (;;) {
    // Channels: close the finished, arm the new, run what is queued.
    bool did = false;
    socketParkedWake_ = kNoDeadline;  // dispatch() lowers it for each channel it parks
    for (auto& ch : socketChannels_) {
      if (ch->closed) continue;
      if (ch->link->ended() && !ch->busy.load(std::memory_order_acquire)) {
        runWhatTheCallerLeft(*ch);
        socketClose(*ch, "the caller closed it or went away");
        continue;
      }
      if (!ch->armed) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = ch.get();
        ::epoll_ctl(epollFd_.get(), EPOLL_CTL_ADD, ch->link->fd(), &ev);
        ch->armed = true;
      }
      did |= dispatch(*ch, 64);
      // The socket is not read while its call is parked (watched for room instead) or while a
      // backlog waits for the channel's worker: what the caller sends meanwhile waits in the
      // socket, not copied into this process. A hang-up is reported either way.
      const uint32_t want = ch->parked                            ? uint32_t(EPOLLOUT)
                            : ch->queued.size() >= kSocketBacklog ? 0u
                                                                  : uint32_t(EPOLLIN);
      if (want != ch->watching && !ch->closed) {
        epoll_event ev{};
        ev.events = want;
        ev.data.ptr = ch.get();
        ::epoll_ctl(epollFd_.get(), EPOLL_CTL_MOD, ch->link->fd(), &ev);
        ch->watching = want;
      }
    }
    std::erase_if(socketChannels_, [](const std::unique_ptr<Channel>& ch) {
      return ch->closed && !ch->busy.load(std::memory_order_acquire) &&
             ch->active.load(std::memory_order_acquire) == 0;
    });
    if (socketsStopping_) break;
    nextDeadline = std::min(sweepDeadlines(socketChannels_), socketParkedWake_);
    int timeoutMs = -1;
    if (did) {
      timeoutMs = 0;
    } else if (nextDeadline < kNoDeadline) {
      timeoutMs = int(
          std::clamp<int64_t>((nextDeadline - monotonicNs() + 999'999) / 1'000'000, 0, 1 << 30));
    }
    const int n = ::epoll_wait(epollFd_.get(), events, 64, timeoutMs);
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
      // Channels closed in this batch stay allocated until the reaping above. Room on a parked
      // channel's socket: its call runs at the top of the loop.
      if (!ch->closed && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) socketRead(*ch);
    }
  }
  for (auto& ch : socketChannels_) socketClose(*ch, "client stopped");
}

void Dispatcher::socketRead(Channel& ch, size_t maxRecords) {
  for (size_t n = 0; n < maxRecords; ++n) {
    RingConsumer::Record rec;
    switch (ch.link->tryReceive(rec)) {
      case SocketLink::Recv::kEmpty:
        n = maxRecords - 1;  // part of a record, or nothing: the rest is on its way
        continue;
      case SocketLink::Recv::kClosed:
        runWhatTheCallerLeft(ch);
        socketClose(ch, "the caller closed it or went away");
        return;
      case SocketLink::Recv::kCorrupt:
        socketClose(ch, "malformed datagram");
        return;
      case SocketLink::Recv::kRecord:
        break;
    }
    // Read in place in the receive buffer, before the next receive reuses it.
    if (runInPlace(ch, rec)) {
      if (ch.link->ended()) {
        runWhatTheCallerLeft(ch);
        socketClose(ch, "the caller closed it or went away");
        return;
      }
      continue;
    }
    // Anything kept past the next receive is copied out of the receive buffer.
    const size_t bytes = rec.header.length;
    auto copy = std::make_unique<uint64_t[]>((bytes + 7) / 8);
    std::memcpy(copy.get(), rec.base, bytes);
    const auto* base = reinterpret_cast<const uint8_t*>(copy.get());
    rec.base = base;
    rec.trace = rec.trace ? reinterpret_cast<const TraceContextWire*>(base + sizeof(RecordHeader))
                          : nullptr;
    rec.words = reinterpret_cast<const uint64_t*>(base + payloadOffset(rec.header.flags));
    if (!take(ch, rec, std::move(copy))) {
      socketClose(ch, "a record other than a request or a cancel from the caller");
      return;
    }
  }
  dispatch(ch, 64);
}

}  // namespace detail
}  // namespace hms::ffi

namespace hms::ffi {

namespace {
Status noCall() {
  return Status(StatusCode::kFailedPrecondition,
                "this Responder has no call to answer: it answered already, was moved from, or "
                "belongs to a one-way call, whose answer nobody reads");
}
}  // namespace

Responder& Responder::operator=(Responder&& o) noexcept {
  if (this != &o) {
    if (p_)
      (void)fail(Status(StatusCode::kInternal,
                        "the service replaced the call's Responder "
                        "without answering"));
    p_ = std::move(o.p_);
  }
  return *this;
}

Responder::~Responder() {
  if (p_) {
    (void)detail::Dispatcher::answerDeferred(
        *p_,
        Status(StatusCode::kInternal, "the service dropped the call's Responder without answering"),
        nullptr);
  }
}

Status Responder::reply(
    const std::function<Status(capnp::MessageBuilder& results)>& build) noexcept {
  if (!p_) return noCall();
  const auto p = std::move(p_);
  return detail::Dispatcher::answerDeferred(*p, Status(), &build);
}

Status Responder::fail(Status status) noexcept {
  if (!p_) return noCall();
  if (status.isOk()) status = Status(StatusCode::kInternal, "the service failed the call with OK");
  const auto p = std::move(p_);
  return detail::Dispatcher::answerDeferred(*p, std::move(status), nullptr);
}

bool Responder::cancelled() const noexcept {
  if (!p_) return false;
  const detail::ServerCall& c = *p_->call;
  return c.cancelled.load(std::memory_order_relaxed) ||
         (c.deadlineNs != detail::kNoDeadline && detail::monotonicNs() >= c.deadlineNs);
}

void Responder::onCancel(std::function<void()> fn) {
  if (!p_) return;
  detail::ServerCall& c = *p_->call;
  std::unique_lock lock(c.m);
  if (c.cancelled.load()) {
    lock.unlock();
    fn();
    return;
  }
  c.onCancel.push_back(std::move(fn));
}

}  // namespace hms::ffi
