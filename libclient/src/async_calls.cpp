// Asynchronous calls and streams, the caller's side: AsyncCall, routing of replies and stream
// items by call id, and the completion threads (docs/calls.md).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <tuple>

#include "client_impl.hpp"
#include "hms/ffi/error.capnp.h"
#include "log.hpp"
#include "message_check.hpp"
#include "wait.hpp"

namespace hms::ffi::detail {

namespace {

Status errorFromRecord(const RingConsumer::Record& rec, const std::string& serviceId) {
  Status s(statusCodeFromWire(rec.header.status), "", serviceId);
  if (!validSingleSegmentMessage(rec.words, rec.header.words)) return s;
  try {
    kj::ArrayPtr<const capnp::word> seg[1] = {
        kj::arrayPtr(reinterpret_cast<const capnp::word*>(rec.words), rec.header.words)};
    capnp::SegmentArrayMessageReader reader(kj::arrayPtr(seg, 1),
                                            ringReaderOptions(rec.header.words));
    auto err = reader.getRoot<wire::RpcError>();
    Status::Details details;
    for (auto d : err.getDetails()) details.emplace_back(d.getKey().cStr(), d.getValue().cStr());
    return Status(statusCodeFromWire(rec.header.status), err.getMessage().cStr(),
                  err.getSource().size() ? err.getSource().cStr() : serviceId, std::move(details));
  } catch (const kj::Exception&) {
    return s;
  }
}

// A heap copy of a record (socket receive buffers are reused; a ring that needs its space back).
AsyncMessage copyRecord(const RingConsumer::Record& rec) {
  AsyncMessage m;
  m.heap = std::make_unique<uint64_t[]>(std::max<size_t>(rec.header.words, 1));
  std::memcpy(m.heap.get(), rec.words, size_t(rec.header.words) * 8);
  m.rec = rec;
  m.rec.base = nullptr;
  m.rec.trace = nullptr;
  m.rec.words = m.heap.get();
  return m;
}

// Gives a message's ring space back (if it is still in the ring of the current connection).
void releaseMessage(CallerChannel& ch, AsyncMessage& m) {
  if (!m.inRing) return;
  std::lock_guard lock(ch.asyncMu);
  if (m.conn == ch.conn && ch.isOpen && !ch.link) ch.responses.release(m.rec);
  m.inRing = false;
  m.keep.reset();
}

}  // namespace

namespace {

// An AsyncCall is about 900 bytes: glibc's per-thread cache keeps 7 blocks of a size, so with
// more calls than that in flight nearly every allocation and free took malloc's slow path
// (about 400 instructions a call, measured with callgrind). Each thread keeps the blocks it
// frees, up to kMax, for the calls it makes next. A call is often freed on another thread than
// the one that made it (the completion thread drops the last reference of calls whose replies
// it routed): a thread whose cache is full hands half of it to a pool the threads share, and one
// whose cache is empty takes up to half a cache from there, one lock for kMax / 2 calls.
struct CallBlockPool {
  std::mutex mu;
  size_t bytes = 0;  // the one block size it holds
  std::vector<void*> blocks;
  std::atomic<size_t> count{0};  // blocks.size(), for a look without the lock
  // About a megabyte: a burst of calls freed by one thread and not made again is not kept.
  static constexpr size_t kMaxBlocks = 1024;
  static CallBlockPool& get() {
    // Never destroyed: threads may give blocks back while the process exits. (What it holds
    // stays reachable from here.)
    static CallBlockPool* pool = new CallBlockPool;
    return *pool;
  }
};

struct CallBlockCache {
  static constexpr size_t kMax = 64;
  size_t bytes = 0;  // the one block size it holds (the control block with its AsyncCall)
  size_t count = 0;
  void* blocks[kMax];
  void* take(size_t n) noexcept {
    if (count == 0) {
      if (bytes == 0) bytes = n;
      if (n == bytes) refill();
    }
    return count != 0 && n == bytes ? blocks[--count] : nullptr;
  }
  bool give(void* p, size_t n) noexcept {
    if (bytes == 0) bytes = n;
    if (n != bytes) return false;
    if (count == kMax) spill();
    blocks[count++] = p;
    return true;
  }
  // Both take the pool's lock only if it is free: a busy pool is left alone (the heap serves),
  // and a child forked while another thread held it never waits for it.
  void refill() noexcept {
    CallBlockPool& pool = CallBlockPool::get();
    if (pool.count.load(std::memory_order_relaxed) == 0) return;  // (no lock while it is empty)
    std::unique_lock lock(pool.mu, std::try_to_lock);
    if (!lock || pool.bytes != bytes) return;
    while (count < kMax / 2 && !pool.blocks.empty()) {
      blocks[count++] = pool.blocks.back();
      pool.blocks.pop_back();
    }
    pool.count.store(pool.blocks.size(), std::memory_order_relaxed);
  }
  void spill() noexcept {
    {
      CallBlockPool& pool = CallBlockPool::get();
      std::unique_lock lock(pool.mu, std::try_to_lock);
      if (lock) {
        if (pool.bytes == 0) pool.bytes = bytes;
        try {
          while (pool.bytes == bytes && count > kMax / 2 &&
                 pool.blocks.size() < CallBlockPool::kMaxBlocks) {
            pool.blocks.push_back(blocks[count - 1]);
            --count;
          }
        } catch (const std::bad_alloc&) {
        }
        pool.count.store(pool.blocks.size(), std::memory_order_relaxed);
      }
    }
    while (count > kMax / 2) ::operator delete(blocks[--count]);
  }
  ~CallBlockCache() {
    while (count != 0) ::operator delete(blocks[--count]);
    bytes = ~size_t{0};  // a call freed later in this thread's exit goes back to the heap
  }
};
thread_local CallBlockCache tCallBlocks;

template <class T>
struct CallBlockAllocator {
  using value_type = T;
  CallBlockAllocator() = default;
  template <class U>
  CallBlockAllocator(const CallBlockAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n == 1) {
      if (void* p = tCallBlocks.take(sizeof(T))) return static_cast<T*>(p);
    }
    return static_cast<T*>(::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept {
    if (n != 1 || !tCallBlocks.give(p, sizeof(T))) ::operator delete(p);
  }
  template <class U>
  bool operator==(const CallBlockAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace

std::shared_ptr<AsyncCall> newAsyncCall() {
  return std::allocate_shared<AsyncCall>(CallBlockAllocator<AsyncCall>());
}

void PendingCalls::countCallback(AsyncCall& call) noexcept {
  if (call.callbackCounted) return;
  call.callbackCounted = true;
  ++callbacks_;
}

void PendingCalls::insert(std::shared_ptr<AsyncCall> call) {
  if (call->hasCallback.load(std::memory_order_relaxed)) countCallback(*call);
  if (slots_.empty()) slots_.resize(64);
  for (;;) {
    auto& s = slots_[call->callId & (slots_.size() - 1)];
    if (!s) {
      s = std::move(call);
      ++count_;
      return;
    }
    if (count_ * 4 < slots_.size()) {
      overflow_.emplace(call->callId, std::move(call));
      ++count_;
      return;
    }
    std::vector<std::shared_ptr<AsyncCall>> old(slots_.size() * 2);
    old.swap(slots_);
    for (auto& c : old) {
      if (c) slots_[c->callId & (slots_.size() - 1)] = std::move(c);  // ids distinct mod 2n
    }
  }
}

std::shared_ptr<AsyncCall> PendingCalls::take(std::shared_ptr<AsyncCall>* at) noexcept {
  --count_;
  if ((*at)->callbackCounted) {
    (*at)->callbackCounted = false;
    --callbacks_;
  }
  std::shared_ptr<AsyncCall> call;
  const std::less<const std::shared_ptr<AsyncCall>*> before;
  if (!slots_.empty() && !before(at, slots_.data()) && before(at, slots_.data() + slots_.size())) {
    call = std::move(*at);
  } else {
    auto it = overflow_.find((*at)->callId);
    call = std::move(it->second);
    overflow_.erase(it);
  }
  // A burst of many calls in flight leaves a large table behind: given back once it is empty.
  if (count_ == 0 && slots_.size() > kKeptSlots) clear();
  return call;
}

void PendingCalls::clear() noexcept {
  forEach([](const std::shared_ptr<AsyncCall>& c) { c->callbackCounted = false; });
  if (slots_.size() > kKeptSlots) {
    std::vector<std::shared_ptr<AsyncCall>>().swap(slots_);
  } else {
    for (auto& s : slots_) s.reset();
  }
  overflow_.clear();
  count_ = 0;
  callbacks_ = 0;
}

std::string AsyncCall::what() const {
  std::string s = ch ? ch->serviceId : std::string();
  s += '.';
  s += method;
  return s;
}

void countAsyncEnd(AsyncCall& call, int64_t nowNs) noexcept {
  if (call.span && call.ch && call.ch->client->spans) {
    try {
      call.span->endUnixNs = realtimeNs();
      call.span->code = call.status.code();
      call.span->message = call.status.message();
      call.ch->client->spans->record(*call.span);
    } catch (const std::exception&) {
    }
    call.span.reset();
  }
  if (call.metricsFamily == 0 || !call.ch) return;
  const uint32_t family = call.metricsFamily - 1;
  call.metricsFamily = 0;  // once
  try {
    metricsEnd(call.ch->client->metrics.slot(family), uint32_t(call.status.code()),
               uint64_t((nowNs != 0 ? nowNs : monotonicNs()) - call.startNs));
  } catch (const std::exception&) {
  }
}

namespace {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
              std::atomic<uint32_t>::is_always_lock_free);
uint32_t* futexWord(std::atomic<uint32_t>& a) noexcept {
  return reinterpret_cast<uint32_t*>(&a);  // (a process-local word: the private futex calls)
}

// Wakes the threads asleep on `call`, its lock held, after the change they wait for.
void notifySleepers(AsyncCall& call) noexcept {
  if (call.sleepers == 0) return;
  call.changes.fetch_add(1, std::memory_order_relaxed);
  futexWakeAllPrivate(futexWord(call.changes));
}

// Sleeps until a change of `call` (notifySleepers) or `untilNs`, which may come early: the
// caller checks again. `cl` holds the call's lock on entry and on return; a change made after
// the count is read here is a different count, so the futex does not sleep through it.
void sleepOnCall(AsyncCall& call, std::unique_lock<std::mutex>& cl, int64_t untilNs) noexcept {
  ++call.sleepers;
  const uint32_t seen = call.changes.load(std::memory_order_relaxed);
  cl.unlock();
  futexWaitPrivate(futexWord(call.changes), seen, untilNs);
  cl.lock();
  --call.sleepers;
}

// Completes `call` (not yet finished) under its lock; the caller posts the callback. `nowNs`: as
// for countAsyncEnd.
void completeLocked(AsyncCall& call, Status status, std::optional<AsyncMessage> result,
                    int64_t nowNs = 0) {
  call.status = std::move(status);
  countAsyncEnd(call, nowNs);
  call.result = std::move(result);
  call.finished.store(true, std::memory_order_release);
  notifySleepers(call);
}

void expire(const std::shared_ptr<AsyncCall>& call) {
  std::optional<AsyncMessage> dropped;
  std::list<AsyncMessage> items;
  if (call->ch) {
    std::lock_guard lock(call->ch->asyncMu);
    auto* at = call->ch->pending.find(call->callId);
    if (!at || *at != call) return;  // completed meanwhile
    call->ch->pending.erase(at);
    std::lock_guard cl(call->m);
    items.swap(call->items);
    for (auto& m : items) {
      if (m.inRing && m.conn == call->ch->conn && !call->ch->link)
        call->ch->responses.release(m.rec);
    }
    completeLocked(
        *call,
        Status(StatusCode::kDeadlineExceeded,
               "no " + std::string(call->stream ? "end of the stream from " : "reply from ") +
                   call->what() + " before the deadline",
               call->ch->serviceId),
        std::nullopt);
  }
}

// Expires `call` if it is still pending on its channel; true if it was.
bool expirePending(AsyncCall& call) {
  std::shared_ptr<AsyncCall> self;
  if (call.ch) {
    std::lock_guard lock(call.ch->asyncMu);
    if (auto* at = call.ch->pending.find(call.callId)) self = *at;
  }
  if (self) expire(self);
  return self != nullptr;
}

}  // namespace

void failPendingLocked(CallerChannel& ch, const Status& why,
                       std::vector<std::shared_ptr<AsyncCall>>& completed) {
  ch.pending.forEach([&](const std::shared_ptr<AsyncCall>& call) {
    std::lock_guard cl(call->m);
    for (auto& m : call->items) {
      if (m.inRing && m.conn == ch.conn && !ch.link && ch.isOpen) ch.responses.release(m.rec);
    }
    call->items.clear();
    completeLocked(*call, why, std::nullopt);
    if (call->callback) completed.push_back(call);
  });
  ch.pending.clear();
}

// A reader of the call's result (its lock held, or the call not finished yet).
static void openResult(AsyncCall& call, const RingConsumer::Record& rec) {
  call.segment[0] = kj::arrayPtr(reinterpret_cast<const capnp::word*>(rec.words), rec.header.words);
  call.reader.emplace(kj::arrayPtr(call.segment, 1), ringReaderOptions(rec.header.words));
}

// Routes one record (asyncMu held). Returns false when the channel broke. `now`: the clock,
// read once for all the calls one drain completes (0 until it is read). `taker`: the call whose
// get() drains, which takes its result here if this is it (AsyncCall::handedOver).
static bool route(CallerChannel& ch, const RingConsumer::Record& rec, bool inRing,
                  std::vector<std::shared_ptr<AsyncCall>>& completed, int64_t& now,
                  AsyncCall* taker) {
  auto drop = [&] {
    if (inRing) ch.responses.release(rec);
  };
  if (rec.header.kind != kRecordResponse && rec.header.kind != kRecordStreamItem &&
      rec.header.kind != kRecordStreamEnd) {
    drop();
    return false;
  }
  auto* at = ch.pending.find(rec.header.callId);
  if (!at) {
    drop();  // the late answer of a call that was cancelled or timed out
    return true;
  }
  auto message = [&] {
    AsyncMessage m;
    if (inRing) {
      m.rec = rec;
      m.inRing = true;
      m.conn = ch.conn;
      m.keep = ch.segment;
    } else {
      m = copyRecord(rec);
    }
    return m;
  };
  const bool valid = validSingleSegmentMessage(rec.words, rec.header.words);
  if (rec.header.kind == kRecordStreamItem && (*at)->stream && valid) {
    AsyncCall& call = **at;
    std::lock_guard cl(call.m);
    call.items.push_back(message());
    notifySleepers(call);
    return true;
  }
  std::shared_ptr<AsyncCall> call = ch.pending.take(at);
  Status status;
  std::optional<AsyncMessage> result;
  if (!valid) {
    status = Status(StatusCode::kDataLoss,
                    "the answer from " + call->what() + " is not a valid Cap'n Proto message",
                    ch.serviceId);
    drop();
  } else if (rec.header.status != 0) {
    status = errorFromRecord(rec, ch.serviceId);
    drop();
  } else if (rec.header.kind == kRecordStreamEnd || call->stream) {
    if (call->stream && rec.header.kind != kRecordStreamEnd) {
      status = Status(StatusCode::kFailedPrecondition,
                      call->what() +
                          " answered with one reply, not a stream: it is not a stream "
                          "method; call it with send() or sendAsync()",
                      ch.serviceId);
    }
    drop();
  } else {
    result = message();
  }
  std::lock_guard cl(call->m);
  bool unread = false;
  if (result && call->taken) {
    drop();  // its Future was dropped unread
    result.reset();
  } else if (result && call.get() == taker) {
    // Taken at once by the thread that waits for it: no lock to take it again, and not in the
    // list of unread replies (a taken one is never moved out of the ring).
    call->taken = true;
    call->handedOver = true;
    openResult(*call, result->rec);  // (the record's words stay where they are when it moves)
  } else if (result && result->inRing) {
    call->resultInRing.store(true, std::memory_order_relaxed);
    unread = true;
  }
  if (now == 0 && call->metricsFamily != 0) now = monotonicNs();
  completeLocked(*call, std::move(status), std::move(result), now);
  if (call->callback) completed.push_back(call);
  if (unread) ch.unread.push_back(std::move(call));  // (the list keeps it alive past the lock)
  return true;
}

bool drainAsync(CallerChannel& ch, Completions& completions, AsyncCall* taker) {
  std::vector<std::shared_ptr<AsyncCall>> completed;
  bool did = false;
  int64_t now = 0;
  {
    std::lock_guard lock(ch.asyncMu);
    if (!ch.isOpen || ch.failedConn) return false;
    bool broken = false;
    RingConsumer::Record rec;
    if (ch.link) {
      for (bool more = true; more && !broken;) {
        switch (ch.link->tryReceive(rec)) {
          case SocketLink::Recv::kRecord:
            did = true;
            broken = !route(ch, rec, false, completed, now, taker);
            break;
          case SocketLink::Recv::kEmpty:
            more = false;
            break;
          case SocketLink::Recv::kClosed:
          case SocketLink::Recv::kCorrupt:
            broken = true;
            break;
        }
      }
      if (broken) {
        failPendingLocked(ch, ch.peerGoneStatus(), completed);
        ch.failedConn = true;
        did = true;
      }
    } else {
      for (;;) {
        const RingStatus st = ch.responses.next(rec);
        if (st == RingStatus::kEmpty) break;
        did = true;
        if (st == RingStatus::kCorrupt || !route(ch, rec, true, completed, now, taker)) {
          broken = true;
          break;
        }
      }
      if (broken) {
        failPendingLocked(ch,
                          Status(StatusCode::kDataLoss,
                                 "the response ring from " + ch.serviceId +
                                     " is corrupt; the channel is closed on the next call",
                                 ch.serviceId),
                          completed);
        ch.failedConn = true;
        ch.brokenConn = true;
      } else if (ch.peerGone()) {
        failPendingLocked(ch, ch.peerGoneStatus(), completed);
        ch.failedConn = true;
        did = true;
      }
      // Completed replies nobody has read yet must not keep the service from answering the
      // rest: past half the ring, move the oldest out to the heap (a copy, the price of keeping
      // them).
      while (!ch.unread.empty()) {
        auto& front = ch.unread.front();
        // Most were read and given back already: those leave the list without a lock.
        if (front->resultInRing.load(std::memory_order_acquire)) {
          std::unique_lock cl(front->m);
          // Taken: its taker reads it in place and gives it back without this lock (releaseAsync),
          // so it is not looked at here.
          if (front->taken) break;
          if (front->result && front->result->inRing &&
              ch.responses.heldBytes() > ch.ringBytes / 2) {
            AsyncMessage copy = copyRecord(front->result->rec);
            ch.responses.release(front->result->rec);
            front->result = std::move(copy);
            front->resultInRing.store(false, std::memory_order_relaxed);
          } else if (front->result && front->result->inRing) {
            break;  // still in the ring: either read now, or no need to move it yet
          }
        }
        ch.unread.pop_front();
      }
    }
  }
  for (auto& c : completed) completions.post(std::move(c));
  return did;
}

// ---- the calls' side ---------------------------------------------------------------------------

std::shared_ptr<AsyncCall> failedAsync(Status s, AsyncCallback cb) noexcept {
  auto call = newAsyncCall();
  call->status = std::move(s);
  call->finished.store(true, std::memory_order_relaxed);  // not shared yet
  call->callback = std::move(cb);
  // A callback runs on a completion thread like any other; there is none without a channel, so
  // run it here, with no lock held.
  if (call->callback) {
    auto fn = std::move(call->callback);
    call->callback = nullptr;
    fn(call);
  }
  return call;
}

bool asyncReady(const AsyncCall& call) noexcept {
  return call.finished.load(std::memory_order_acquire);
}

namespace {

// A waiter that gave up spinning and sleeps on its call (sleepOnCall): while one does, the
// completion thread reads the channel (nobody else will), however busy other waiters on it are.
struct Sleeper {
  CallerChannel* ch = nullptr;
  void arm(CallerChannel& c) noexcept {
    if (ch) return;
    ch = &c;
    ch->sleepers.fetch_add(1, std::memory_order_acq_rel);
  }
  Sleeper() = default;
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;
  ~Sleeper() {
    if (ch) ch->sleepers.fetch_sub(1, std::memory_order_acq_rel);
  }
};

// While its wait policy lets it spin, a thread waiting on its own call reads the channel's
// response ring itself, so the reply (or stream item) does not have to go through the completion
// thread and a futex wake-up to reach it: the difference between about a microsecond and tens of
// them per reply on these machines. `there()` says whether what it waits for is there (it takes
// call.m itself if it needs it). On a socket channel each look is a non-blocking receive, as the
// socket transport's own spin does. Returns false when it is not by the end of the spin budget
// (or at once for blocking waits): the caller then sleeps on the call (sleepOnCall) and the
// completion thread delivers.
// `limit(now)`: when to stop waiting at the latest, given the clock (read only once the spin
// begins).
// `taker`: as for drainAsync.
template <class Limit, class There>
bool spinOnOwnChannel(AsyncCall& call, Limit&& limit, Sleeper& sleeper, There&& there,
                      AsyncCall* taker = nullptr) {
  CallerChannel* ch = call.ch.get();
  if (!ch || ch->client->policy.kind == WaitKind::kBlocking) return false;
  // Found there: not counted as reading the channel (it read nothing), or a thread that only
  // collects finished calls would keep the completion thread from delivering the rest.
  if (there()) return true;
  Completions& completions = ch->client->completions();
  // With calls pipelined the answer is usually in the ring already: one read first, before
  // anything the spin below sets up. Found that way, it counts as reading the channel (the spin
  // epoch), so that the completion thread goes on sleeping while callers read their own.
  (void)drainAsync(*ch, completions, taker);
  if (there()) {
    ch->spinEpoch.store(ch->spinEpoch.load(std::memory_order_relaxed) + 1,
                        std::memory_order_release);
    return true;
  }
  std::shared_ptr<Mapping> keep;  // the counters below stay mapped if the channel reopens
  const uint64_t* records = nullptr;
  const uint32_t* serviceState = nullptr;
  bool socket = false;
  {
    std::lock_guard lock(ch->asyncMu);
    if (!ch->isOpen || ch->failedConn || ch->conn != call.conn) return false;
    socket = ch->link != nullptr;
    if (!socket) {
      keep = ch->segment;
      records = &ch->hdr_->response.records;
      serviceState = &ch->hdr_->serviceState;
    }
  }
  const WaitPolicy& policy = ch->client->policy;
  const int64_t now = monotonicNs();
  const int64_t until = limit(now);
  const int64_t spinUntil =
      policy.kind == WaitKind::kSpin ? until : std::min(until, now + policy.spinNs);
  // While this thread reads the channel, the completion thread sleeps instead of spinning
  // beside it; if it stops without what it waits for, the completion thread takes over.
  struct Cover {
    CallerChannel& ch;
    Completions& completions;
    Sleeper& sleeper;
    bool got = false;
    Cover(CallerChannel& c, Completions& cs, Sleeper& s) : ch(c), completions(cs), sleeper(s) {
      ch.spinners.fetch_add(1, std::memory_order_acq_rel);
    }
    ~Cover() {
      // Counted as a sleeper before it stops counting as a spinner: the completion thread never
      // sees a channel that nobody reads as covered.
      if (!got) sleeper.arm(ch);
      ch.spinEpoch.fetch_add(1, std::memory_order_acq_rel);
      ch.spinners.fetch_sub(1, std::memory_order_acq_rel);
      if (!got) completions.uncover(ch);
    }
  };
  std::optional<Cover> cover;
  if (!socket) cover.emplace(*ch, completions, sleeper);
  auto found = [&] {
    if (cover) cover->got = true;
    return true;
  };
  uint64_t seen = ~uint64_t{0};  // a first read at once
  for (uint32_t i = 1;; ++i) {
    if (socket) {  // a non-blocking receive is the look (the socket fallback's busy poll)
      (void)drainAsync(*ch, completions, taker);
      if (there()) return true;
      if (monotonicNs() >= spinUntil) return false;
      continue;
    }
    const uint64_t committed = loadAcquire(*const_cast<uint64_t*>(records));
    // The count is bumped after the record is published, relaxed: a change says to look, and a
    // look every 64 rounds covers a count seen before its record.
    const bool look = committed != seen ||
                      loadAcquire(*const_cast<uint32_t*>(serviceState)) != kEndOpen ||
                      (i & 63) == 0;
    if (look) {
      seen = committed;
      (void)drainAsync(*ch, completions, taker);
      if (there()) return found();
    }
    // The clock after the first look (a wait with no time left ends there), then every 16
    // rounds, not after every look: with calls pipelined most looks find other calls' replies,
    // and a clock read cost as much as the look.
    if (((i & 15) == 0 || i == 1) && monotonicNs() >= spinUntil) return false;
    cpuRelax();
  }
}

// awaitReady, for awaitAsync too (`take`: it takes the result next).
bool awaitCall(AsyncCall& call, std::chrono::nanoseconds timeout, bool take) noexcept {
  if (call.finished.load(std::memory_order_acquire)) return true;
  // Read the clock only when it is needed: a pipelined call's reply is usually there already.
  std::optional<int64_t> untilAt;
  auto limit = [&](int64_t now) {
    if (!untilAt) {
      untilAt = timeout.count() >= kNoDeadline - now ? kNoDeadline : now + timeout.count();
    }
    return std::min(*untilAt, call.deadlineNs);
  };
  auto finished = [&] { return call.finished.load(std::memory_order_acquire); };
  Sleeper sleeper;
  if (spinOnOwnChannel(call, limit, sleeper, finished, take ? &call : nullptr)) return true;
  const int64_t wakeAt = limit(monotonicNs());  // (the clock is used only if the spin did not)
  {
    std::unique_lock cl(call.m);
    while (!finished() && monotonicNs() < wakeAt) sleepOnCall(call, cl, wakeAt);
    if (finished() || *untilAt < call.deadlineNs) return finished();
  }
  // The call's deadline passed with no answer: complete it here (the completion thread does so
  // only for calls with callbacks).
  (void)expirePending(call);
  return finished();
}

}  // namespace

bool awaitReady(AsyncCall& call, std::chrono::nanoseconds timeout) noexcept {
  return awaitCall(call, timeout, false);
}

Status takeAsync(AsyncCall& call, capnp::MessageReader*& reader) noexcept {
  std::lock_guard cl(call.m);
  if (call.taken) return Status(StatusCode::kFailedPrecondition, "the result was taken already");
  call.taken = true;
  if (!call.status) return call.status;
  if (!call.result) return Status(StatusCode::kInternal, "a completed call without a result");
  openResult(call, call.result->rec);
  reader = &*call.reader;
  return Status();
}

Status awaitAsync(AsyncCall& call, capnp::MessageReader*& reader) noexcept {
  (void)awaitCall(call, std::chrono::nanoseconds(kNoDeadline), true);
  if (call.handedOver) {  // routed by this thread's own drain, and taken there
    reader = &*call.reader;
    return Status();
  }
  Status s = takeAsync(call, reader);
  if (!s) releaseAsync(call);
  return s;
}

void releaseAsync(AsyncCall& call) noexcept {
  std::optional<AsyncMessage> m;
  auto takeOut = [&] {
    call.reader.reset();
    m = std::move(call.result);
    call.result.reset();
    call.resultInRing.store(false, std::memory_order_release);
  };
  if (call.finished.load(std::memory_order_acquire)) {
    // Its result was taken (or the Future dropped) under call.m before this, and it is finished:
    // route() wrote the result before `finished`, and drainAsync's list of unread replies moves
    // only results not taken. Nothing else touches it now, so no lock.
    takeOut();
  } else {
    std::lock_guard cl(call.m);  // a dropped Future's call: its reply may be routed meanwhile
    takeOut();
  }
  if (m && call.ch) releaseMessage(*call.ch, *m);
}

void dropAsync(const std::shared_ptr<AsyncCall>& call) noexcept {
  {
    std::lock_guard cl(call->m);
    if (call->taken || call->stream) return;
    call->taken = true;  // a reply that comes later is released at once
  }
  releaseAsync(*call);
}

uint64_t asyncCallId(const AsyncCall& call) noexcept {
  return call.callId;
}

void thenAsync(const std::shared_ptr<AsyncCall>& call, AsyncCallback cb) noexcept {
  call->hasCallback.store(true, std::memory_order_relaxed);
  if (call->ch) {  // still in flight: the completion thread must deliver it
    std::lock_guard lock(call->ch->asyncMu);
    auto* at = call->ch->pending.find(call->callId);
    if (at && *at == call) call->ch->pending.countCallback(*call);
  }
  bool now = false;
  {
    std::lock_guard cl(call->m);
    call->callback = std::move(cb);
    now = call->finished.load(std::memory_order_relaxed);
  }
  if (!call->ch) {
    auto fn = std::move(call->callback);
    fn(call);
    return;
  }
  auto& completions = call->ch->client->completions();
  if (now) {
    completions.post(call);
    return;
  }
  completions.track(call);
  // It may have completed between the check and the callback being set; a second post is
  // harmless (the callback is taken out once).
  bool done;
  {
    std::lock_guard cl(call->m);
    done = call->finished.load(std::memory_order_relaxed) && !call->callbackQueued;
  }
  if (done) completions.post(call);
}

Status cancelAsync(const std::shared_ptr<AsyncCall>& call) noexcept {
  if (!call->ch) return Status();
  CallerChannel& ch = *call->ch;
  std::vector<std::shared_ptr<AsyncCall>> completed;
  bool wasPending = false;
  uint64_t conn = 0;
  {
    std::lock_guard lock(ch.asyncMu);
    auto* at = ch.pending.find(call->callId);
    if (at && *at == call) {
      wasPending = true;
      conn = call->conn;
      ch.pending.erase(at);
      std::lock_guard cl(call->m);
      for (auto& m : call->items) {
        if (m.inRing && m.conn == ch.conn && !ch.link) ch.responses.release(m.rec);
      }
      call->items.clear();
      call->cancelled = true;
      completeLocked(*call,
                     Status(StatusCode::kCancelled, call->what() + " was cancelled by the caller",
                            ch.serviceId),
                     std::nullopt);
      if (call->callback) completed.push_back(call);
    }
  }
  for (auto& c : completed) ch.client->completions().post(std::move(c));
  if (!wasPending) return Status();
  return sendCancel(ch, call->callId, conn);
}

bool streamNext(AsyncCall& call, capnp::MessageReader*& reader, Status& status) noexcept {
  Sleeper sleeper;  // counted while this thread sleeps on the call
  std::unique_lock cl(call.m);
  call.reader.reset();
  std::optional<AsyncMessage> previous = std::move(call.current);
  call.current.reset();
  // The item read before goes back to the ring (what lets the service go on) after this lock is
  // let go (lock order: the channel's before the call's), and before any wait.
  auto givePreviousBack = [&] {
    if (previous && call.ch) releaseMessage(*call.ch, *previous);
    previous.reset();
  };
  auto ended = [&] { return call.finished.load(std::memory_order_relaxed); };  // (under m)
  if (call.items.empty() && !ended()) {
    cl.unlock();
    givePreviousBack();
    (void)spinOnOwnChannel(
        call, [&](int64_t) { return call.deadlineNs; }, sleeper,
        [&] {
          std::lock_guard lock(call.m);
          return ended() || !call.items.empty();
        });
    cl.lock();
  }
  bool got = false;
  for (;;) {
    if (!call.items.empty()) {
      call.current = std::move(call.items.front());
      call.items.pop_front();
      const auto& rec = call.current->rec;
      call.segment[0] =
          kj::arrayPtr(reinterpret_cast<const capnp::word*>(rec.words), rec.header.words);
      call.reader.emplace(kj::arrayPtr(call.segment, 1), ringReaderOptions(rec.header.words));
      reader = &*call.reader;
      got = true;
      break;
    }
    if (ended()) {
      status = call.status;
      break;
    }
    if (monotonicNs() >= call.deadlineNs) {
      cl.unlock();
      givePreviousBack();
      if (expirePending(call)) {
        (void)sendCancel(*call.ch, call.callId, call.conn);  // the service stops too
      }
      cl.lock();
      if (!ended()) {
        call.status = Status(StatusCode::kDeadlineExceeded, "the stream's deadline passed");
        countAsyncEnd(call);
        call.finished.store(true, std::memory_order_release);
      }
      continue;
    }
    sleepOnCall(call, cl, call.deadlineNs);
  }
  cl.unlock();
  givePreviousBack();
  return got;
}

// ---- Completions --------------------------------------------------------------------------------

namespace {
thread_local bool tOnCompletionThread = false;  // set for good by the completion threads
// How long the shared-memory completion thread sleeps at a time while waiters read its channels
// themselves. A reply nobody waits on that comes just after the last of them stopped may wait up
// to twice this (a look that saw it spin sleeps once more); never a callback's, nor that of a
// waiter that gave up spinning (those end the cover at once).
constexpr int64_t kCoverNs = 1'000'000;
}  // namespace

Completions::Completions(ClientImpl& client) : client_(client) {
  eventFd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  epollFd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!eventFd_ || !epollFd_) {
    throw std::runtime_error(errnoText("eventfd/epoll for the completion thread", errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  ::epoll_ctl(epollFd_.get(), EPOLL_CTL_ADD, eventFd_.get(), &ev);
}

Completions::~Completions() {
  stop();
}

void Completions::stop() {
  if (stopping_.exchange(true)) return;
  // Calls still in flight end now: their callbacks run once more, on the completion thread.
  for (bool socket : {false, true}) {
    for (auto& ch : channels(socket)) {
      std::vector<std::shared_ptr<AsyncCall>> completed;
      {
        std::lock_guard lock(ch->asyncMu);
        failPendingLocked(*ch,
                          Status(StatusCode::kUnavailable,
                                 "the Client was destroyed with the call in flight", ch->serviceId),
                          completed);
        ch->unread.clear();
      }
      for (auto& c : completed) post(std::move(c));
    }
  }
  wakeAll();
  if (shmThread_.joinable()) shmThread_.join();
  if (socketThread_.joinable()) socketThread_.join();
  runCallbacks();
}

void Completions::wakeAll() {
  wakeAlways(client_.replyWake());
  wakeIfSleeping(coverWake_);
  const uint64_t one = 1;
  (void)!::write(eventFd_.get(), &one, sizeof(one));
}

void Completions::uncover(CallerChannel& ch) {
  ch.spinnerGaveUp.store(true, std::memory_order_release);
  uncovers_.fetch_add(1, std::memory_order_acq_rel);
  wakeIfSleeping(coverWake_);
}

void Completions::watch(const std::shared_ptr<CallerChannel>& ch) {
  std::lock_guard lock(mu_);
  if (stopping_.load()) return;
  const bool socket = ch->link != nullptr;
  (socket ? sockets_ : shm_).push_back(ch);
  changes_.fetch_add(1, std::memory_order_release);
  if (socket && !socketThread_.joinable()) {
    socketThread_ = std::thread([this] { runSockets(); });
  } else if (!socket && !shmThread_.joinable()) {
    shmThread_ = std::thread([this] { runShm(); });
  }
  wakeAll();
}

void Completions::relink(const std::shared_ptr<CallerChannel>& ch) {
  // A channel that opened again may have changed transport.
  {
    std::lock_guard lock(mu_);
    if (stopping_.load()) return;
    auto has = [&](std::vector<std::weak_ptr<CallerChannel>>& v) {
      return std::any_of(v.begin(), v.end(), [&](auto& w) { return w.lock() == ch; });
    };
    const bool socket = ch->link != nullptr;
    if (!has(socket ? sockets_ : shm_)) {
      (socket ? sockets_ : shm_).push_back(ch);
      if (socket && !socketThread_.joinable()) {
        socketThread_ = std::thread([this] { runSockets(); });
      } else if (!socket && !shmThread_.joinable()) {
        shmThread_ = std::thread([this] { runShm(); });
      }
    }
    changes_.fetch_add(1, std::memory_order_release);
  }
  wakeAll();
}

void Completions::track(const std::shared_ptr<AsyncCall>& call) {
  if (call->deadlineNs >= kNoDeadline) return;
  std::lock_guard lock(mu_);
  deadlines_.emplace(call->deadlineNs, call);
  if (call->deadlineNs < earliest_.load(std::memory_order_relaxed)) {
    earliest_.store(call->deadlineNs, std::memory_order_relaxed);
    // The shared-memory thread sleeps until the deadline it read; a change is what makes its
    // wait's condition true, so that it wakes and sleeps again until this earlier one.
    changes_.fetch_add(1, std::memory_order_release);
    wakeAll();
  }
}

void Completions::post(std::shared_ptr<AsyncCall> call) {
  {
    std::lock_guard cl(call->m);
    if (!call->callback) return;
    call->callbackQueued = true;
  }
  callbacks_.enqueue(std::move(call));
  queued_.fetch_add(1, std::memory_order_release);
  // A completion thread runs the queue before it next sleeps: only another thread's post needs
  // to wake one (two syscalls a callback otherwise).
  if (!tOnCompletionThread) wakeAll();
}

void Completions::runCallbacks() {
  std::shared_ptr<AsyncCall> call;
  while (callbacks_.try_dequeue(call)) {
    queued_.fetch_sub(1, std::memory_order_relaxed);
    AsyncCallback fn;
    {
      std::lock_guard cl(call->m);
      fn = std::move(call->callback);
      call->callback = nullptr;
    }
    if (!fn) continue;  // ran already
    try {
      fn(call);
    } catch (const std::exception& e) {
      log().error("hms-ffi: a completion callback threw: {}", e.what());
    } catch (...) {
      log().error("hms-ffi: a completion callback threw a non-exception");
    }
    call.reset();
  }
}

void Completions::expireDeadlines(int64_t now) {
  if (earliest_.load(std::memory_order_relaxed) > now) return;
  std::vector<std::shared_ptr<AsyncCall>> due;
  {
    std::lock_guard lock(mu_);
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      if (auto c = deadlines_.begin()->second.lock()) due.push_back(std::move(c));
      deadlines_.erase(deadlines_.begin());
    }
    earliest_.store(deadlines_.empty() ? kNoDeadline : deadlines_.begin()->first,
                    std::memory_order_relaxed);
  }
  for (auto& c : due) {
    bool open;
    {
      std::lock_guard cl(c->m);
      open = !c->finished.load(std::memory_order_relaxed);
    }
    if (!open) continue;
    expire(c);
    post(c);
  }
}

std::vector<std::shared_ptr<CallerChannel>> Completions::channels(bool socket) {
  std::lock_guard lock(mu_);
  auto& list = socket ? sockets_ : shm_;
  std::vector<std::shared_ptr<CallerChannel>> out;
  std::erase_if(list, [&](const std::weak_ptr<CallerChannel>& w) {
    auto ch = w.lock();
    if (!ch) return true;
    // A channel that moved to the other transport leaves this list (relink added it there).
    // isOpen and link change under asyncMu (a reopen); one busy now is looked at next time.
    std::unique_lock busy(ch->asyncMu, std::try_to_lock);
    if (busy.owns_lock() && ch->isOpen && (ch->link != nullptr) != socket) return true;
    busy = {};
    out.push_back(std::move(ch));
    return false;
  });
  return out;
}

void Completions::runShm() {
  tOnCompletionThread = true;
  nameThisThread("hms-completion");
  struct Watch {
    std::shared_ptr<Mapping> keep;
    const uint32_t* nextLength = nullptr;  // null while the ring is all taken
    uint32_t nextLap = 0;                  // the lap bits of its commit word once committed
    const uint64_t* records = nullptr;     // the producer's count of records committed
    uint64_t seen = 0;
    const uint32_t* serviceState = nullptr;
    const std::atomic<uint32_t>* spinners = nullptr;
  };
  std::vector<Watch> watches;
  // Spin mode is for the waits of the caller's threads (and they read their own replies). This
  // thread delivers what nobody waits on: it spins for the spin budget at most, then sleeps, so
  // that a spin-mode client with calls in flight does not keep a second core busy for it.
  WaitPolicy ownPolicy = client_.policy;
  if (ownPolicy.kind == WaitKind::kSpin) ownPolicy.kind = WaitKind::kAdaptive;
  while (!stopping_.load(std::memory_order_acquire)) {
    runCallbacks();
    auto chans = channels(false);
    // What to watch is noted before reading: a record committed after this is seen either by
    // the reading below or by the wait.
    const uint64_t changes = changes_.load(std::memory_order_acquire);
    const uint64_t uncovers = uncovers_.load(std::memory_order_acquire);
    watches.clear();
    // Covered: every channel is read by a thread spinning on its own call, or was since the last
    // look (see below). Then this thread sleeps where the replies do not wake it, for up to
    // kCoverNs at a time, instead of spinning beside them.
    bool covered = true;
    const int64_t now = monotonicNs();
    for (auto& ch : chans) {
      std::lock_guard lock(ch->asyncMu);
      if (!ch->isOpen || ch->link || ch->failedConn) continue;
      // Not covered: a waiter gave up since the last look, or one sleeps on its call; or nobody
      // reads the channel now and, with a callback to deliver, nobody did in the last kCoverNs
      // either (a callback is this thread's to run, and soon). Measured over kCoverNs, not
      // since the last look: waiters that find their replies by one read each (calls pipelined)
      // mark the epoch once per read of the ring, and this thread may look far more often.
      const bool gaveUp = ch->spinnerGaveUp.exchange(false, std::memory_order_acq_rel);
      const uint64_t epoch = ch->spinEpoch.load(std::memory_order_acquire);
      const bool spinning = ch->spinners.load(std::memory_order_acquire) != 0;
      if (epoch != ch->coverSeen) {
        ch->coverSeen = epoch;
        ch->coverSeenNs = now;
      }
      const bool readLately = ch->coverSeenNs != 0 && now - ch->coverSeenNs < kCoverNs;
      const bool spun = spinning || (readLately && ch->pending.callbacks() == 0);
      if (gaveUp || ch->sleepers.load(std::memory_order_acquire) != 0 || !spun) covered = false;
      const uint64_t* records = &ch->hdr_->response.records;
      watches.push_back(Watch{ch->segment, ch->responses.nextLength(), ch->responses.nextLap(),
                              records, loadAcquire(*const_cast<uint64_t*>(records)),
                              &ch->hdr_->serviceState, &ch->spinners});
    }
    if (covered && !watches.empty()) {
      chans.clear();
      expireDeadlines(monotonicNs());
      runCallbacks();
      const WaitPolicy sleepAtOnce{WaitKind::kBlocking, 0};
      waitFor(coverWake_, sleepAtOnce,
              std::min(earliest_.load(std::memory_order_relaxed), monotonicNs() + kCoverNs), [&] {
                return queued_.load(std::memory_order_relaxed) != 0 ||
                       stopping_.load(std::memory_order_relaxed) ||
                       changes_.load(std::memory_order_relaxed) != changes ||
                       uncovers_.load(std::memory_order_relaxed) != uncovers;
              });
      continue;
    }
    bool did = false;
    for (auto& ch : chans) did |= drainAsync(*ch, *this);
    runCallbacks();
    expireDeadlines(monotonicNs());
    if (did) continue;
    chans.clear();
    // Sleep until a watched ring has a record, a service goes away, a callback is queued, the
    // set of channels changes, or the earliest deadline.
    waitFor(client_.replyWake(), ownPolicy, earliest_.load(std::memory_order_relaxed), [&] {
      if (queued_.load(std::memory_order_relaxed) != 0 ||
          stopping_.load(std::memory_order_relaxed) ||
          changes_.load(std::memory_order_relaxed) != changes) {
        return true;
      }
      // Waiters are back on every channel: leave the reading to them (the loop sleeps, covered).
      if (!watches.empty() && std::all_of(watches.begin(), watches.end(), [](const Watch& w) {
            return w.spinners->load(std::memory_order_relaxed) != 0;
          })) {
        return true;
      }
      for (const auto& w : watches) {
        // nextLength may be stale (the waiter itself reads the ring while it spins, and may have
        // wrapped it since): a hint only; `records` is what cannot miss a commit.
        if ((w.nextLength && isCommitWord(loadHint(*w.nextLength), w.nextLap)) ||
            loadAcquire(*const_cast<uint64_t*>(w.records)) != w.seen ||
            loadAcquire(*const_cast<uint32_t*>(w.serviceState)) != kEndOpen) {
          return true;
        }
      }
      return false;
    });
  }
  runCallbacks();
}

void Completions::runSockets() {
  tOnCompletionThread = true;
  nameThisThread("hms-compl-sock");
  // fd registered per channel, and for which connection: (conn, broker's channel id, fd). The id
  // tells a channel from a later one at the same address with the same fd number, which a
  // closed channel's fd leaving the epoll set would otherwise leave unwatched.
  using Registration = std::tuple<uint64_t, uint64_t, int>;
  std::map<CallerChannel*, Registration> registered;
  epoll_event events[64];
  while (!stopping_.load(std::memory_order_acquire)) {
    runCallbacks();
    auto chans = channels(true);
    std::map<CallerChannel*, Registration> now;
    for (auto& ch : chans) {
      // Under the channel's lock: its link (and fd) cannot be closed meanwhile. A closed fd
      // leaves the epoll set by itself; only one still open is taken out by hand.
      std::lock_guard lock(ch->asyncMu);
      if (!ch->isOpen || !ch->link) continue;
      const int fd = ch->link->fd();
      auto it = registered.find(ch.get());
      const Registration what{ch->conn, ch->channelId, fd};
      const bool known = it != registered.end() && it->second == what;
      if (ch->failedConn) {
        if (known) ::epoll_ctl(epollFd_.get(), EPOLL_CTL_DEL, fd, nullptr);
        continue;
      }
      if (!known) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = ch.get();
        if (::epoll_ctl(epollFd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST) {
          ::epoll_ctl(epollFd_.get(), EPOLL_CTL_MOD, fd, &ev);
        }
      }
      now[ch.get()] = what;
    }
    registered.swap(now);
    bool did = false;
    for (auto& ch : chans) did |= drainAsync(*ch, *this);
    runCallbacks();
    expireDeadlines(monotonicNs());
    // Callbacks of calls that expired just now are queued: run them before sleeping (epoll does
    // not see the queue; the shared-memory thread's wait checks it).
    if (did || queued_.load(std::memory_order_relaxed) != 0) continue;
    chans.clear();
    const int64_t deadline = earliest_.load(std::memory_order_relaxed);
    int timeoutMs = -1;
    if (deadline < kNoDeadline) {
      timeoutMs =
          int(std::clamp<int64_t>((deadline - monotonicNs() + 999'999) / 1'000'000, 0, 1 << 30));
    }
    const int n = ::epoll_wait(epollFd_.get(), events, 64, timeoutMs);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        uint64_t count;
        (void)!::read(eventFd_.get(), &count, sizeof(count));
      }
    }
  }
  runCallbacks();
}

}  // namespace hms::ffi::detail
