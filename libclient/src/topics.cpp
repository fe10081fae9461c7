// Publish/subscribe: Publisher and Subscription over the topic log (topic_log.hpp), the broker's
// subscriber events, and the relay that carries a topic to subscribers without shared memory.
//
// Publisher side. A publisher with shared memory creates its log in a memfd, maps it read-write,
// seals it against any other writable mapping and hands it to the broker, which gives it to
// shared-memory subscribers (read-only) with a cursor page each. Cursors come and go on the
// control thread (broker events) while the publishing thread may be waiting inside loan(): they
// are queued and applied by whichever thread holds the publisher's lock next, so the lock is
// never waited for by the control thread. A subscriber over a socket is served by the relay
// thread: it reads the log like a shared-memory subscriber (a private cursor, the same policy,
// so block_publisher holds the publisher back and drop_oldest counts what it missed) and sends
// each message over the subscriber's socket. A publisher without shared memory keeps its log in
// private memory; all its subscribers are relayed.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "client_impl.hpp"
#include "hms/ffi/client.hpp"
#include "log.hpp"
#include "message_check.hpp"
#include "schema_nodes.hpp"
#include "topic_log.hpp"

namespace hms::ffi {
namespace detail {

namespace {

constexpr uint32_t kMaxTopicSlots = 1u << 20;
constexpr uint32_t kMaxTopicMessageBytes = 64u << 20;
// How long the relay waits for the rest of a message whose first datagram went out.
constexpr int64_t kRelayRestNs = 5'000'000'000;
// The publishing thread re-takes queued cursor changes at least this often while it waits.
constexpr int64_t kLoanSliceNs = 20'000'000;
// A shared-memory subscriber attached under an earlier broker looks this often, while it waits,
// for its publisher's process.
constexpr int64_t kOrphanCheckNs = 100'000'000;

int64_t deadlineAfter(std::chrono::nanoseconds timeout) {
  const int64_t now = monotonicNs();
  if (timeout.count() <= 0) return now;
  if (timeout.count() >= kNoDeadline - now) return kNoDeadline;
  return now + timeout.count();
}

// Anonymous private memory for the log of a publisher without shared memory.
class PrivateLog {
 public:
  PrivateLog() = default;
  PrivateLog(const PrivateLog&) = delete;
  PrivateLog& operator=(const PrivateLog&) = delete;
  ~PrivateLog() {
    if (addr_) ::munmap(addr_, bytes_);
  }
  Status allocate(uint64_t bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return Status(StatusCode::kResourceExhausted, errnoText("mmap of a topic log", errno));
    }
    addr_ = p;
    bytes_ = bytes;
    return Status();
  }
  uint8_t* data() const noexcept { return static_cast<uint8_t*>(addr_); }

 private:
  void* addr_ = nullptr;
  uint64_t bytes_ = 0;
};

// A cursor the publisher has attached (or will): the broker's page (shared memory) or a page of
// the relay's own (a socket subscriber).
struct CursorRef {
  uint64_t subscriptionId = 0;
  SubscriberCursor* cursor = nullptr;
  Mapping page;                               // shared memory
  std::unique_ptr<SubscriberCursor> ownPage;  // relay
  bool relayed = false;
  pid_t pid = 0;       // the subscriber's, as the broker saw it
  uint64_t epoch = 0;  // the broker (counted from this client's first) that handed it out
};

// The calling thread's slot of a topic's publisher or subscriber series; null when uncounted.
MetricsSlot* topicMetricsSlot(ClientImpl& client, std::atomic<uint32_t>& cell, MetricsSide side,
                              const std::string& topic) noexcept {
  MetricsWriter& w = client.metrics;
  if (!w.enabled()) return nullptr;
  try {
    return w.slot(w.family(cell, side, topic, ""));
  } catch (const std::exception&) {
    return nullptr;
  }
}

class PublisherState;

// Sends a topic to its socket subscribers (one thread per publisher that has any).
class Relay {
 public:
  explicit Relay(PublisherState& owner);
  ~Relay() { stop(); }
  Status start();
  void add(std::shared_ptr<CursorRef> ref, std::unique_ptr<SocketLink> link);
  void remove(uint64_t subscriptionId);
  // After a publish (or a cursor attached): wakes the thread if it sleeps.
  void notify() noexcept;
  // Waits until every subscriber has been sent everything up to `seq`, or has gone.
  bool flush(uint64_t seq, int64_t deadlineNs);
  void stop();

 private:
  struct Sub {
    std::shared_ptr<CursorRef> ref;
    std::unique_ptr<SocketLink> link;
    std::unique_ptr<TopicSubscriber> reader;
    TopicSubscriber::Message held{};
    uint64_t missed = 0;
    bool holding = false;  // `held` is read but not sent yet (its socket was full)
    bool wantWrite = false;
    bool gone = false;
  };
  void run();
  void drop(Sub& s, const char* why);
  bool pump(Sub& s);  // sends what it can; whether anything went

  PublisherState& owner_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Sub>> inbox_;
  std::vector<uint64_t> removals_;
  std::vector<std::shared_ptr<CursorRef>> refs_;  // for flush()
  std::vector<std::unique_ptr<Sub>> subs_;        // relay thread only
  UniqueFd eventFd_;
  UniqueFd epollFd_;
  std::atomic<uint32_t> sleeping_{0};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

class PublisherState final : public PublisherEvents,
                             public std::enable_shared_from_this<PublisherState> {
 public:
  PublisherState(std::shared_ptr<ClientImpl> client, std::string id, TopicGeometry g,
                 std::chrono::nanoseconds timeout)
      : client(std::move(client)),
        id(std::move(id)),
        geometry(g),
        policy(this->client->policy),
        timeout(timeout.count() > 0 ? timeout : this->client->options.defaultTimeout) {}
  ~PublisherState() override { relay.reset(); }

  std::atomic<uint32_t> metricsFamily{0};  // this topic's publisher series (metrics_writer.hpp)

  Status createLog() {
    if (client->sharedMemory()) {
      auto fd = createSegment("hms-ffi-topic", geometry.segmentBytes());
      if (!fd.ok()) return fd.status();
      auto map = Mapping::map(fd->get(), geometry.segmentBytes(), true);
      if (!map.ok()) return map.status();
      initTopicLog(map->data(), geometry);
      // Mapped writable here first; from now on nobody else can map it so.
      if (auto s = sealForReaders(fd->get()); !s) return s;
      logFd = std::move(*fd);
      shared = std::move(*map);
      logBase = shared.data();
    } else {
      if (auto s = own.allocate(geometry.segmentBytes()); !s) return s;
      logBase = own.data();
      initTopicLog(logBase, geometry);
    }
    pub = std::make_unique<TopicPublisher>(logBase, geometry);
    return Status();
  }

  // ---- cursor changes, queued and applied under mu ----
  void queue(bool add, std::shared_ptr<CursorRef> ref, uint64_t subscriptionId) {
    {
      std::lock_guard lock(pendMu);
      pending.push_back({add, std::move(ref), subscriptionId});
      hasPending.store(true);
    }
    drain();
  }
  // Applies queued changes if the lock is free; whoever holds it applies them when it lets go.
  void drain() {
    while (hasPending.load() && mu.try_lock()) {
      applyPendingLocked();
      mu.unlock();
    }
  }
  void applyPendingLocked() {
    std::vector<Op> ops;
    {
      std::lock_guard lock(pendMu);
      ops.swap(pending);
      hasPending.store(false);
    }
    bool relayed = false;
    for (auto& op : ops) {
      if (op.add) {
        pub->addSubscriber(op.ref->cursor);
        relayed |= op.ref->relayed;
        attached[op.subscriptionId] = std::move(op.ref);
      } else if (auto it = attached.find(op.subscriptionId); it != attached.end()) {
        pub->removeSubscriber(it->second->cursor);
        attached.erase(it);
      }
    }
    subscriberCount.store(attached.size(), std::memory_order_relaxed);
    relayedBlocking.clear();
    for (const auto& [sid, ref] : attached) {
      if (ref->relayed && ref->cursor->policy == uint32_t(SlowConsumerPolicy::kBlockPublisher)) {
        relayedBlocking.push_back(ref);
      }
    }
    if (Relay* r = relayRaw.load(); relayed && r) r->notify();
  }

  // ---- broker events (control thread) ----
  void subscriberAdded(SubscriberAddedEvent ev) override {
    if (closed.load()) return;
    ev.subscriptionId = localKey(ev.subscriptionId);
    auto ref = std::make_shared<CursorRef>();
    ref->subscriptionId = ev.subscriptionId;
    ref->pid = ev.pid;
    ref->epoch = brokerEpoch.load();
    if (!ev.socket) {
      auto page = checkSealedAgainstShrink(ev.fd.get(), kCursorBytes, "the cursor page")
                      ? Mapping::map(ev.fd.get(), kCursorBytes, true)
                      : Result<Mapping>(Status(StatusCode::kInvalidArgument, "not sealed"));
      if (!page.ok() || page->as<SubscriberCursor>()->magic != kCursorMagic ||
          page->as<SubscriberCursor>()->layoutVersion != kCursorLayoutVersion) {
        log().error("hms-ffi: topic {}: cannot attach the cursor of subscriber '{}' (pid {})", id,
                    ev.name, ev.pid);
        return;
      }
      ref->page = std::move(*page);
      ref->cursor = ref->page.as<SubscriberCursor>();
      queue(true, std::move(ref), ev.subscriptionId);
      return;
    }
    ref->ownPage = std::make_unique<SubscriberCursor>();
    ref->cursor = ref->ownPage.get();
    initCursor(
        ref->cursor,
        ev.dropOldest ? SlowConsumerPolicy::kDropOldest : SlowConsumerPolicy::kBlockPublisher, 0);
    ref->cursor->history = ev.history;
    ref->relayed = true;
    auto link = std::make_unique<SocketLink>(std::move(ev.fd), geometry.maxWords() * 8);
    {
      std::lock_guard lock(relayMu);
      if (closed.load()) return;
      if (!relay) {
        auto r = std::make_unique<Relay>(*this);
        if (auto s = r->start(); !s) {
          log().error("hms-ffi: topic {}: cannot serve subscriber '{}' (pid {}): {}", id, ev.name,
                      ev.pid, s.toString());
          return;
        }
        relay = std::move(r);
        relayRaw.store(relay.get());
      }
      relay->add(ref, std::move(link));
    }
    queue(true, std::move(ref), ev.subscriptionId);
  }

  void subscriberRemoved(uint64_t subscriptionId) override {
    subscriptionId = localKey(subscriptionId);
    {
      std::lock_guard lock(relayMu);
      if (relay) relay->remove(subscriptionId);
    }
    queue(false, nullptr, subscriptionId);
  }

  // The advertise request, for the first broker and any after a reconnect.
  void fillAdvertise(wire::Request::Builder req) const {
    auto a = req.initAdvertise();
    a.setTopicId(id);
    a.setTypeId(typeId);
    a.setTypeName(typeName);
    capnp::FlatArrayMessageReader nodes(detail::asWords(schemaNodes));
    a.setSchemaNodes(nodes.getRoot<capnp::schema::CodeGeneratorRequest>().getNodes());
    a.setSlotCount(geometry.slotCount);
    a.setSlotBytes(geometry.slotBytes);
    a.setDisplayName(displayName);
    a.setDescription(description);
    a.setTag(tag);
  }

  Status advertiseAgain(ClientImpl& c, int sock) override {
    // Not yet advertised: its own advertise goes to the new broker (advertiseTopic()).
    if (closed.load() || advertisedOn.load() == 0) return Status();
    // Subscribers attached under the old broker keep reading; the new broker counts only those
    // that come now (and cannot close a cursor of the old one for a subscriber that dies).
    const int fd = logFd.get();
    auto reply = c.directRequest(
        sock, [&](wire::Request::Builder req) { fillAdvertise(req); }, fd >= 0 ? &fd : nullptr,
        fd >= 0 ? 1 : 0);
    if (!reply.ok()) return Status(reply.status().code(), id + ": " + reply.status().message());
    topicKey.store(reply->reply().getAdvertise().getTopicKey());
    advertisedOn.store(c.session());
    brokerEpoch.fetch_add(1);
    return Status();
  }

  // A subscription's key here: the broker's id, told apart from the same id given by an earlier
  // broker (ids start again at 1 after a restart). Control thread only, like the epoch.
  uint64_t localKey(uint64_t brokerId) const noexcept {
    return (brokerEpoch.load() << 48) ^ brokerId;
  }
  std::atomic<uint64_t> brokerEpoch{0};

  // Shared-memory subscribers attached under an earlier broker have nobody to close their cursor
  // if they die: while the publisher waits, it looks for them itself (their pid gone). mu held.
  void reapOrphansLocked() {
    const uint64_t now = brokerEpoch.load();
    for (auto it = attached.begin(); it != attached.end();) {
      const CursorRef& r = *it->second;
      if (r.relayed || r.epoch == now || r.pid <= 0 || !(::kill(r.pid, 0) != 0 && errno == ESRCH)) {
        ++it;
        continue;
      }
      log().warn(
          "hms-ffi: topic {}: subscriber pid {} (attached before the broker restarted) is "
          "gone; it holds the publisher back no more",
          id, r.pid);
      storeRelease(r.cursor->state, uint32_t(kEndDead));
      pub->removeSubscriber(r.cursor);
      it = attached.erase(it);
    }
    subscriberCount.store(attached.size(), std::memory_order_relaxed);
  }

  struct Op {
    bool add;
    std::shared_ptr<CursorRef> ref;
    uint64_t subscriptionId;
  };

  const std::shared_ptr<ClientImpl> client;
  const std::string id;
  const TopicGeometry geometry;
  const WaitPolicy policy;
  const std::chrono::nanoseconds timeout;
  uint64_t typeId = 0;
  std::string typeName, displayName, description;
  detail::FlatWords schemaNodes;      // flatNodes(type), sent with every advertise
  std::atomic<uint64_t> topicKey{0};  // the broker's; changes when it is advertised again
  // The connection (ClientImpl::session()) topicKey is of; 0 until the first advertise is
  // answered. Written under ClientImpl::registrationsMu().
  std::atomic<uint64_t> advertisedOn{0};
  uint64_t tag = 0;

  UniqueFd logFd;
  Mapping shared;
  PrivateLog own;
  uint8_t* logBase = nullptr;

  std::mutex mu;  // pub, attached
  std::unique_ptr<TopicPublisher> pub;
  std::map<uint64_t, std::shared_ptr<CursorRef>> attached;
  std::vector<std::shared_ptr<CursorRef>> relayedBlocking;  // attached, over sockets, blocking
  std::atomic<size_t> subscriberCount{0};

  std::mutex pendMu;
  std::vector<Op> pending;
  std::atomic<bool> hasPending{false};

  std::mutex relayMu;  // creating and stopping the relay
  std::unique_ptr<Relay> relay;
  std::atomic<Relay*> relayRaw{nullptr};  // for notify(); changed under mu
  std::atomic<bool> closed{false};
};

// ---- relay -----------------------------------------------------------------------------

Relay::Relay(PublisherState& owner) : owner_(owner) {}

Status Relay::start() {
  eventFd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  epollFd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!eventFd_ || !epollFd_) {
    return Status(StatusCode::kResourceExhausted, errnoText("eventfd/epoll for a relay", errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  ::epoll_ctl(epollFd_.get(), EPOLL_CTL_ADD, eventFd_.get(), &ev);
  thread_ = std::thread([this] { run(); });
  return Status();
}

void Relay::add(std::shared_ptr<CursorRef> ref, std::unique_ptr<SocketLink> link) {
  auto s = std::make_unique<Sub>();
  s->reader = std::make_unique<TopicSubscriber>(owner_.logBase, owner_.geometry, ref->cursor);
  s->ref = ref;
  s->link = std::move(link);
  {
    std::lock_guard lock(mu_);
    inbox_.push_back(std::move(s));
    refs_.push_back(std::move(ref));
  }
  const uint64_t one = 1;
  (void)!::write(eventFd_.get(), &one, sizeof(one));
}

void Relay::remove(uint64_t subscriptionId) {
  {
    std::lock_guard lock(mu_);
    removals_.push_back(subscriptionId);
  }
  const uint64_t one = 1;
  (void)!::write(eventFd_.get(), &one, sizeof(one));
}

void Relay::notify() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the fence in run()
  if (sleeping_.load(std::memory_order_relaxed) != 0 && sleeping_.exchange(0) != 0) {
    const uint64_t one = 1;
    (void)!::write(eventFd_.get(), &one, sizeof(one));
  }
}

bool Relay::flush(uint64_t seq, int64_t deadlineNs) {
  for (;;) {
    bool done = true;
    {
      std::lock_guard lock(mu_);
      for (const auto& r : refs_) {
        const uint64_t next = loadAcquire(r->cursor->next);
        if (loadAcquire(r->cursor->state) == kEndOpen && next != 0 && next <= seq) done = false;
      }
    }
    if (done) return true;
    if (monotonicNs() >= deadlineNs) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void Relay::stop() {
  if (stopping_.exchange(true)) return;
  const uint64_t one = 1;
  if (eventFd_) (void)!::write(eventFd_.get(), &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  // Closing the links: each subscriber reads what was sent, then the end.
  subs_.clear();
  inbox_.clear();
}

void Relay::drop(Sub& s, const char* why) {
  if (s.gone) return;
  s.gone = true;
  s.reader->close();  // holds the publisher back no more
  ::epoll_ctl(epollFd_.get(), EPOLL_CTL_DEL, s.link->fd(), nullptr);
  s.link->shutdown();
  owner_.queue(false, nullptr, s.ref->subscriptionId);
  log().debug("hms-ffi: topic {}: socket subscriber {} dropped ({})", owner_.id,
              s.ref->subscriptionId, why);
}

bool Relay::pump(Sub& s) {
  bool progress = false;
  for (int budget = 256; budget > 0 && !s.gone; --budget) {
    if (!s.holding) {
      uint64_t missed = 0;
      const RingStatus st = s.reader->next(s.held, missed);
      s.missed += missed;
      if (st == RingStatus::kEmpty) break;
      if (st == RingStatus::kCorrupt) {
        drop(s, "the log is corrupt");
        break;
      }
      s.holding = true;
    }
    RecordHeader h{};
    h.kind = kRecordTopicMessage;
    h.callId = s.held.seq;
    h.deadlineNs = int64_t(s.missed);
    const int64_t now = monotonicNs();
    const Status st = s.link->sendWords(h, s.held.words, s.held.wordCount, owner_.policy, now,
                                        now + kRelayRestNs);
    if (st) {
      s.holding = false;
      s.missed = 0;
      s.reader->release();
      progress = true;
      continue;
    }
    if (st.code() == StatusCode::kDeadlineExceeded && !s.link->broken()) {
      s.wantWrite = true;  // full: wait for room (drop_oldest: the publisher goes on meanwhile)
      break;
    }
    drop(s, st.code() == StatusCode::kUnavailable ? "subscriber gone" : "socket error");
  }
  // What was sent is the subscriber's: the publisher may reuse those slots (and a publish()
  // waiting for it returns).
  if (!s.gone) s.reader->flush();
  return progress;
}

void Relay::run() {
  nameThisThread("hms-relay");
  std::vector<epoll_event> events(64);
  while (!stopping_.load()) {
    {
      std::lock_guard lock(mu_);
      for (auto& s : inbox_) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;  // a subscriber never writes: readable means gone
        ev.data.ptr = s.get();
        ::epoll_ctl(epollFd_.get(), EPOLL_CTL_ADD, s->link->fd(), &ev);
        subs_.push_back(std::move(s));
      }
      inbox_.clear();
      for (uint64_t id : removals_) {
        for (auto& s : subs_) {
          if (s->ref->subscriptionId == id) drop(*s, "unsubscribed");
        }
      }
      removals_.clear();
    }
    bool progress = false;
    for (auto& s : subs_) progress |= pump(*s);
    if (std::erase_if(subs_, [](const auto& s) { return s->gone; }) > 0) {
      std::lock_guard lock(mu_);
      std::erase_if(refs_, [](const auto& r) { return loadAcquire(r->cursor->state) != kEndOpen; });
    }
    if (progress) continue;
    // Sleep until a publish, a subscriber's room or hang-up, or a change. The publisher reads
    // `sleeping_` after it published (notify()), so a message cannot slip in unseen.
    sleeping_.store(1);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    bool ready = false;
    for (auto& s : subs_) ready |= !s->holding && s->reader->hasNext();
    if (ready) {
      sleeping_.store(0);
      continue;
    }
    for (auto& s : subs_) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP | (s->wantWrite ? EPOLLOUT : 0u);
      ev.data.ptr = s.get();
      ::epoll_ctl(epollFd_.get(), EPOLL_CTL_MOD, s->link->fd(), &ev);
    }
    const int n = ::epoll_wait(epollFd_.get(), events.data(), int(events.size()), -1);
    sleeping_.store(0);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {
        uint64_t v;
        (void)!::read(eventFd_.get(), &v, sizeof(v));
        continue;
      }
      auto* s = static_cast<Sub*>(events[i].data.ptr);
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if (s->link->peerClosed()) drop(*s, "subscriber gone");
      }
      if (events[i].events & EPOLLOUT) s->wantWrite = false;
    }
  }
}

// ---- the public Publisher's engine -----------------------------------------------------

class PublisherImpl final : public PublisherCore {
 public:
  explicit PublisherImpl(std::shared_ptr<PublisherState> st) : st_(std::move(st)) {}
  ~PublisherImpl() noexcept override { (void)close(); }

  Result<capnp::MessageBuilder*> loan() noexcept override {
    if (st_->closed.load()) {
      return Status(StatusCode::kFailedPrecondition, "the publisher of " + st_->id + " is closed");
    }
    if (loan_) {
      return Status(StatusCode::kFailedPrecondition,
                    "a message of " + st_->id + " is on loan: publish or drop it first");
    }
    TopicPublisher::Loan out;
    {
      std::unique_lock lock(st_->mu);
      int64_t deadline = 0;  // read the clock only when there is a wait
      for (;;) {
        if (st_->hasPending.load()) st_->applyPendingLocked();
        if (st_->pub->tryLoan(out)) break;
        if (deadline == 0) deadline = deadlineAfter(st_->timeout);
        const int64_t slice = std::min(deadline, monotonicNs() + kLoanSliceNs);
        Status s = st_->pub->loan(st_->policy, slice, out);
        if (s) break;
        if (s.code() == StatusCode::kDeadlineExceeded && monotonicNs() < deadline) {
          if (st_->brokerEpoch.load() != 0) st_->reapOrphansLocked();
          continue;
        }
        lock.unlock();
        st_->drain();
        return Status(s.code(), "publishing to " + st_->id + ": " + s.message());
      }
      // The loan keeps the lock until publish() or abandon(): one lock per message. The control
      // thread never waits for it (cursor changes queue up and are applied when it is let go).
      held_ = std::move(lock);
    }
    loan_ = out;
    builder_.emplace(kj::arrayPtr(reinterpret_cast<capnp::word*>(out.words), out.capacityWords));
    return static_cast<capnp::MessageBuilder*>(&*builder_);
  }

  Status publish() noexcept override {
    if (!loan_) return Status(StatusCode::kFailedPrecondition, "no message is on loan");
    uint32_t words = 0;
    try {
      if (const auto inPlace = builder_->inPlaceWords()) {
        words = uint32_t(inPlace->size());
      } else {
        // It outgrew the slot's first segment: flattened into the slot if it fits.
        size_t total = 0;
        for (auto seg : builder_->getSegmentsForOutput()) total += seg.size();
        capnp::MallocMessageBuilder flat(uint(total + 16), capnp::AllocationStrategy::FIXED_SIZE);
        flat.setRoot(builder_->getRoot<capnp::AnyPointer>().asReader());
        auto segs = flat.getSegmentsForOutput();
        if (segs.size() != 1 || segs[0].size() > loan_->capacityWords) {
          abandon();
          return tooLarge(total * 8);
        }
        std::memset(loan_->words, 0, size_t(loan_->capacityWords) * 8);
        std::memcpy(loan_->words, segs[0].begin(), segs[0].size() * 8);
        words = uint32_t(segs[0].size());
      }
    } catch (const kj::Exception& e) {
      abandon();
      return Status(StatusCode::kInternal,
                    std::string("building a message: ") + e.getDescription().cStr());
    }
    const uint64_t seq = loan_->seq;
    st_->pub->publish(*loan_, words);
    if (MetricsSlot* m = metrics_.get(st_->client->metrics, [&] {
          return topicMetricsSlot(*st_->client, st_->metricsFamily, kMetricsPublisher, st_->id);
        })) {
      bumpSingleWriter(m->started, uint64_t(1));
      bumpSingleWriter(m->sumNs, uint64_t(words) * 8);
    }
    published_.store(seq, std::memory_order_relaxed);
    if (!st_->relayedBlocking.empty()) relayedBlocking_ = st_->relayedBlocking;
    held_.unlock();
    builder_.reset();
    loan_.reset();
    if (Relay* r = st_->relayRaw.load()) r->notify();
    st_->drain();
    // A block_publisher subscriber over a socket has the message once it is in its socket: wait
    // for the relay to put it there, so that it survives this process (as the log does for
    // shared-memory subscribers). Past the publish timeout the relay still sends it, later.
    const int64_t deadline = relayedBlocking_.empty() ? 0 : deadlineAfter(st_->timeout);
    for (const auto& ref : relayedBlocking_) {
      SubscriberCursor* c = ref->cursor;
      (void)waitFor(c->publisherWake, st_->policy, deadline, [&] {
        return loadAcquire(c->next) > seq || loadAcquire(c->state) != kEndOpen;
      });
    }
    relayedBlocking_.clear();
    return Status();
  }

  // loan() and publish() keep their own code rather than the helpers below: built on the helpers
  // they cost 200-210 ns of publisher CPU per message in hms-ffi-bench pubsub against 150-170 ns
  // (2026-12-01, four runs each in alternation), for reasons the profile did not show.
  Status publishBatch(size_t n,
                      kj::FunctionParam<void(size_t, capnp::MessageBuilder&)> fill) override {
    if (auto s = mayLoan(); !s) return s;
    if (n == 0) return Status();
    std::unique_lock lock(st_->mu);
    uint64_t last = 0, bytes = 0;
    size_t done = 0;
    // Whatever happens, what was committed is published, and counted.
    auto finish = [&](Status s) {
      st_->pub->announce();
      if (done) countPublished(last, done, bytes);
      lock.unlock();
      if (done) {
        if (Status relayed = afterPublish(last); s) s = relayed;
      } else {
        st_->drain();
      }
      if (!s && done) {
        s = Status(s.code(), s.message() + " (" + std::to_string(done) + " of the batch's " +
                                 std::to_string(n) + " messages were published)");
      }
      return s;
    };
    for (size_t i = 0; i < n; ++i) {
      TopicPublisher::Loan out;
      if (auto s = loanLocked(out); !s) return finish(s);
      RingMessageBuilder builder(
          kj::arrayPtr(reinterpret_cast<capnp::word*>(out.words), out.capacityWords));
      try {
        fill(i, builder);
      } catch (...) {
        st_->pub->abandon(out);
        (void)finish(Status());
        throw;
      }
      auto words = wordsOf(builder, out);
      if (!words.ok()) {
        st_->pub->abandon(out);
        return finish(words.status());
      }
      st_->pub->commit(out, *words);
      last = out.seq;
      bytes += uint64_t(*words) * 8;
      ++done;
    }
    return finish(Status());
  }

  void abandon() noexcept override {
    if (!loan_) return;
    st_->pub->abandon(*loan_);
    held_.unlock();
    st_->drain();
    builder_.reset();
    loan_.reset();
  }

  uint64_t published() const noexcept override {
    return published_.load(std::memory_order_relaxed);
  }
  size_t subscribers() const noexcept override {
    return st_->subscriberCount.load(std::memory_order_relaxed);
  }
  const std::string& topicId() const noexcept override { return st_->id; }

  Status close() noexcept override {
    if (st_->closed.exchange(true)) return Status();
    abandon();
    {
      std::lock_guard lock(st_->mu);
      st_->pub->close();
    }
    // Socket subscribers get what was published before they see the end (block_publisher: all
    // of it, within the publish timeout).
    std::unique_ptr<Relay> relay;
    {
      std::lock_guard lock(st_->relayMu);
      relay = std::move(st_->relay);
      std::lock_guard pubLock(st_->mu);
      st_->relayRaw.store(nullptr);
    }
    if (relay) {
      (void)relay->flush(published(), deadlineAfter(st_->timeout));
      relay->stop();
    }
    uint64_t key, on;
    {
      // Either the reconnect that repeats advertisements has passed (the key and session are
      // the new broker's), or it will not repeat this one.
      std::lock_guard registrations(st_->client->registrationsMu());
      st_->client->removePublisher(st_->tag);
      key = st_->topicKey.load();
      on = st_->advertisedOn.load();
    }
    // UNAVAILABLE: the connection it was advertised on is gone, and the topic with it.
    auto reply = st_->client->roundTrip(
        [&](wire::Request::Builder req) { req.setUnadvertise(key); }, nullptr, 0, on);
    if (!reply.ok() && reply.status().code() != StatusCode::kUnavailable) return reply.status();
    return Status();
  }

 private:
  Status mayLoan() const {
    if (st_->closed.load()) {
      return Status(StatusCode::kFailedPrecondition, "the publisher of " + st_->id + " is closed");
    }
    if (loan_) {
      return Status(StatusCode::kFailedPrecondition,
                    "a message of " + st_->id + " is on loan: publish or drop it first");
    }
    return Status();
  }

  // The next slot, under st_->mu: waits while a block_publisher subscriber still reads the
  // message it holds, up to the publish timeout (the wait is in slices, to reap subscribers an
  // earlier broker attached and that died). Committed messages are announced before any wait.
  Status loanLocked(TopicPublisher::Loan& out) {
    int64_t deadline = 0;  // read the clock only when there is a wait
    for (;;) {
      if (st_->hasPending.load()) st_->applyPendingLocked();
      if (st_->pub->tryLoan(out)) return Status();
      // A batch's messages so far, to the subscribers (and the relay to those over sockets).
      st_->pub->announce();
      if (Relay* r = st_->relayRaw.load()) r->notify();
      if (deadline == 0) deadline = deadlineAfter(st_->timeout);
      const int64_t slice = std::min(deadline, monotonicNs() + kLoanSliceNs);
      Status s = st_->pub->loan(st_->policy, slice, out);
      if (s) return s;
      if (s.code() == StatusCode::kDeadlineExceeded && monotonicNs() < deadline) {
        if (st_->brokerEpoch.load() != 0) st_->reapOrphansLocked();
        continue;
      }
      return Status(s.code(), "publishing to " + st_->id + ": " + s.message());
    }
  }

  // The words of the message built over the loaned slot: in place, or flattened into the slot
  // when it spilled out of it. RESOURCE_EXHAUSTED when it does not fit.
  Result<uint32_t> wordsOf(RingMessageBuilder& builder, const TopicPublisher::Loan& loan) {
    try {
      if (const auto inPlace = builder.inPlaceWords()) return uint32_t(inPlace->size());
      size_t total = 0;
      for (auto seg : builder.getSegmentsForOutput()) total += seg.size();
      capnp::MallocMessageBuilder flat(uint(total + 16), capnp::AllocationStrategy::FIXED_SIZE);
      flat.setRoot(builder.getRoot<capnp::AnyPointer>().asReader());
      auto segs = flat.getSegmentsForOutput();
      if (segs.size() != 1 || segs[0].size() > loan.capacityWords) return tooLarge(total * 8);
      std::memset(loan.words, 0, size_t(loan.capacityWords) * 8);
      std::memcpy(loan.words, segs[0].begin(), segs[0].size() * 8);
      return uint32_t(segs[0].size());
    } catch (const kj::Exception& e) {
      return Status(StatusCode::kInternal,
                    std::string("building a message: ") + e.getDescription().cStr());
    }
  }

  // Under st_->mu, once messages up to `seq` are published: the metrics and the count.
  void countPublished(uint64_t seq, size_t count, uint64_t bytes) {
    if (MetricsSlot* m = metrics_.get(st_->client->metrics, [&] {
          return topicMetricsSlot(*st_->client, st_->metricsFamily, kMetricsPublisher, st_->id);
        })) {
      bumpSingleWriter(m->started, uint64_t(count));
      bumpSingleWriter(m->sumNs, bytes);
    }
    published_.store(seq, std::memory_order_relaxed);
    if (!st_->relayedBlocking.empty()) relayedBlocking_ = st_->relayedBlocking;
  }

  // After st_->mu is let go: the relay to socket subscribers is told.
  Status afterPublish(uint64_t seq) {
    if (Relay* r = st_->relayRaw.load()) r->notify();
    st_->drain();
    // A block_publisher subscriber over a socket has the message once it is in its socket: wait
    // for the relay to put it there, so that it survives this process (as the log does for
    // shared-memory subscribers). Past the publish timeout the relay still sends it, later.
    const int64_t deadline = relayedBlocking_.empty() ? 0 : deadlineAfter(st_->timeout);
    for (const auto& ref : relayedBlocking_) {
      SubscriberCursor* c = ref->cursor;
      (void)waitFor(c->publisherWake, st_->policy, deadline, [&] {
        return loadAcquire(c->next) > seq || loadAcquire(c->state) != kEndOpen;
      });
    }
    relayedBlocking_.clear();
    return Status();
  }

  Status tooLarge(size_t bytes) {
    return Status(StatusCode::kResourceExhausted,
                  "message of about " + std::to_string(bytes) + " bytes exceeds the limit of " +
                      std::to_string(st_->geometry.maxWords() * 8) + " bytes of topic " + st_->id +
                      "; raise TopicOptions::maxMessageBytes");
  }

  std::shared_ptr<PublisherState> st_;
  std::optional<TopicPublisher::Loan> loan_;
  std::optional<RingMessageBuilder> builder_;
  std::atomic<uint64_t> published_{0};
  std::vector<std::shared_ptr<CursorRef>> relayedBlocking_;  // reused by publish()
  std::unique_lock<std::mutex> held_;  // st_->mu, from loan() to publish() or abandon()
  CachedMetricsSlot metrics_;          // the publishing thread's slot of this topic's series
};

// ---- the public Subscription's engine --------------------------------------------------

class SubscriptionImpl final : public SubscriptionCore {
 public:
  SubscriptionImpl(std::shared_ptr<ClientImpl> client, std::string id, uint64_t subscriptionId)
      : client_(std::move(client)),
        id_(std::move(id)),
        subscriptionId_(subscriptionId),
        policy_(client_->policy) {}
  ~SubscriptionImpl() noexcept override { (void)close(); }

  Status attachShm(UniqueFd logFd, UniqueFd cursorFd, uint64_t logBytes,
                   const TopicGeometry& claimed) {
    if (auto s = checkSealedAgainstShrink(logFd.get(), 0, "the topic log"); !s) return s;
    if (auto s = checkSealedAgainstShrink(cursorFd.get(), kCursorBytes, "the cursor page"); !s)
      return s;
    auto size = segmentSize(logFd.get());
    if (!size.ok()) return size.status();
    if (*size < logBytes || logBytes != claimed.segmentBytes()) {
      return Status(StatusCode::kDataLoss, "the topic log is smaller than the broker said");
    }
    auto log = Mapping::map(logFd.get(), logBytes, false);  // read-only: all we can have
    if (!log.ok()) return log.status();
    auto g = checkTopicLog(log->data(), log->size());
    if (!g.ok()) return g.status();
    if (g->slotCount != claimed.slotCount || g->slotBytes != claimed.slotBytes) {
      return Status(StatusCode::kDataLoss, "the topic log's geometry is not the broker's");
    }
    auto cursor = Mapping::map(cursorFd.get(), kCursorBytes, true);
    if (!cursor.ok()) return cursor.status();
    if (cursor->as<SubscriberCursor>()->magic != kCursorMagic) {
      return Status(StatusCode::kDataLoss, "the cursor page is not one");
    }
    log_ = std::move(*log);
    cursor_ = std::move(*cursor);
    sub_ = std::make_unique<TopicSubscriber>(log_.data(), *g, cursor_.as<SubscriberCursor>());
    return Status();
  }
  void attachedBy(uint64_t session, pid_t publisherPid) {
    attachedSession_ = session;
    publisherPid_ = publisherPid;
  }
  void attachSocket(UniqueFd fd, uint32_t maxMessageBytes) {
    link_ = std::make_unique<SocketLink>(std::move(fd), maxMessageBytes);
  }

  Status next(std::chrono::nanoseconds timeout, capnp::MessageReader*& reader) noexcept override {
    reader_.reset();
    reader = nullptr;
    if (closed_) {
      return Status(StatusCode::kFailedPrecondition, "the subscription to " + id_ + " is closed");
    }
    Status s = sub_ ? nextShm(timeout) : nextSocket(timeout);
    if (!s) return s;
    try {
      segment_[0] = kj::arrayPtr(reinterpret_cast<const capnp::word*>(words_), wordCount_);
      reader_.emplace(kj::arrayPtr(segment_, 1), ringReaderOptions(wordCount_));
    } catch (const kj::Exception& e) {
      return Status(StatusCode::kDataLoss, e.getDescription().cStr());
    }
    reader = &*reader_;
    return Status();
  }

  uint64_t sequence() const noexcept override { return seq_; }
  uint64_t missed() const noexcept override { return missed_; }
  uint64_t dropped() const noexcept override { return dropped_; }
  bool sharedMemory() const noexcept override { return sub_ != nullptr; }
  const std::string& topicId() const noexcept override { return id_; }

  void interrupt() noexcept override {
    interrupted_.store(true);
    if (sub_) wakeAlways(sub_->wake());
    if (link_) link_->shutdown();
  }

  Status close() noexcept override {
    if (closed_) return Status();
    closed_ = true;
    reader_.reset();
    if (sub_) sub_->close();
    if (link_) link_->shutdown();
    const uint64_t sid = subscriptionId_;
    client_->sendOneWay([sid](wire::Request::Builder req) { req.setUnsubscribe(sid); });
    return Status();
  }

 private:
  Status delivered(uint64_t seq, const uint64_t* words, uint32_t count, uint64_t missed) {
    if (!validSingleSegmentMessage(words, count)) {
      return Status(StatusCode::kDataLoss,
                    "message " + std::to_string(seq) + " of topic " + id_ + " is malformed");
    }
    seq_ = seq;
    missed_ = missed;
    dropped_ += missed;
    if (MetricsSlot* m = metrics_.get(client_->metrics, [&] {
          return topicMetricsSlot(*client_, metricsFamily_, kMetricsSubscriber, id_);
        })) {
      bumpSingleWriter(m->started, uint64_t(1));
      if (missed) bumpSingleWriter(m->sumNs, missed);
      // Only when it grew (or the slot is another, after a reconnect): no division a message.
      if (sub_ && (sub_->maxLag() > lagCounted_ || m != lagSlot_)) {
        lagCounted_ = sub_->maxLag();
        lagSlot_ = m;
        metricsHighWater(m, lagCounted_, sub_->slotCount());
      }
    }
    words_ = words;
    wordCount_ = count;
    return Status();
  }

  Status ended() {
    if (interrupted_.load()) return Status(StatusCode::kCancelled, "the subscription was stopped");
    const char* how = !sub_ ? "gone (closed the topic or died)"
                      : publisherVanished_ || sub_->publisherState() == kEndDead
                          ? "died"
                          : "closed the topic";
    return Status(StatusCode::kUnavailable, "the publisher of " + id_ + " has " + how +
                                                "; every message it published has been read");
  }

  Status nextShm(std::chrono::nanoseconds timeout) {
    int64_t deadline = 0;  // read the clock only when there is a wait
    bool over = false;
    for (;;) {
      TopicSubscriber::Message m;
      uint64_t missed = 0;
      const RingStatus st = sub_->next(m, missed);
      pendingMissed_ += missed;
      if (st == RingStatus::kOk) {
        const uint64_t gap = std::exchange(pendingMissed_, 0);
        return delivered(m.seq, m.words, m.wordCount, gap);
      }
      if (st == RingStatus::kCorrupt) {
        return Status(StatusCode::kDataLoss, "the log of topic " + id_ + " is corrupt");
      }
      if (over) return ended();
      // A publisher publishes before it closes: an end seen now means the log is empty for good
      // once the next look finds nothing.
      if (sub_->publisherClosed() || interrupted_.load()) {
        over = true;
        continue;
      }
      if (deadline == 0) deadline = deadlineAfter(timeout);
      // Attached under a broker that is gone, nobody will mark the publisher's death in the
      // cursor: the wait comes up for air to look for its process (as the publisher looks for
      // orphaned subscribers, reapOrphansLocked()).
      const bool orphaned = publisherPid_ > 0 && client_->session() != attachedSession_;
      const int64_t until =
          orphaned ? std::min(deadline, monotonicNs() + kOrphanCheckNs) : deadline;
      const bool ready = waitFor(sub_->wake(), policy_, until, [&] {
        return sub_->hasNext() || sub_->publisherClosed() || interrupted_.load();
      });
      if (ready) continue;
      if (until == deadline) return timedOut();
      if (processGone(publisherPid_, publisherPidfd_)) {
        publisherVanished_ = true;  // one more look: what it published before it died is read
        over = true;
      }
    }
  }

  Status nextSocket(std::chrono::nanoseconds timeout) {
    int64_t deadline = 0;
    for (;;) {
      RingConsumer::Record rec{};
      switch (link_->tryReceive(rec)) {
        case SocketLink::Recv::kRecord: {
          const RecordHeader& h = rec.header;
          const uint64_t missed = uint64_t(h.deadlineNs);
          if (h.kind != kRecordTopicMessage || h.deadlineNs < 0 || h.callId <= lastSeq_ ||
              (lastSeq_ != 0 && h.callId != lastSeq_ + 1 + missed)) {
            return Status(StatusCode::kDataLoss,
                          "the socket of topic " + id_ + " carried an out-of-sequence record");
          }
          lastSeq_ = h.callId;
          return delivered(h.callId, rec.words, h.words, missed);
        }
        case SocketLink::Recv::kEmpty:
          if (deadline == 0) deadline = deadlineAfter(timeout);
          if (!link_->waitReadable(policy_, deadline)) return timedOut();
          continue;
        case SocketLink::Recv::kClosed:
          return ended();
        case SocketLink::Recv::kCorrupt:
          return Status(StatusCode::kDataLoss,
                        "the socket of topic " + id_ + ": " + link_->corruptReason());
      }
    }
  }

  Status timedOut() const {
    return Status(StatusCode::kDeadlineExceeded, "no message on topic " + id_ + " in time");
  }

  std::shared_ptr<ClientImpl> client_;
  const std::string id_;
  const uint64_t subscriptionId_;
  const WaitPolicy policy_;
  Mapping log_, cursor_;
  std::unique_ptr<TopicSubscriber> sub_;
  std::unique_ptr<SocketLink> link_;
  uint64_t lastSeq_ = 0;
  uint64_t seq_ = 0, missed_ = 0, dropped_ = 0, pendingMissed_ = 0;
  const uint64_t* words_ = nullptr;
  uint32_t wordCount_ = 0;
  kj::ArrayPtr<const capnp::word> segment_[1];
  std::optional<capnp::SegmentArrayMessageReader> reader_;
  std::atomic<bool> interrupted_{false};
  bool closed_ = false;
  // The publisher's process, and the connection (ClientImpl::session()) of the broker that
  // attached this subscription and marks the publisher's death in the cursor.
  pid_t publisherPid_ = 0;
  uint64_t attachedSession_ = 0;
  UniqueFd publisherPidfd_;                 // opened when first looked for
  bool publisherVanished_ = false;          // found gone by this subscriber itself
  std::atomic<uint32_t> metricsFamily_{0};  // this topic's subscriber series
  CachedMetricsSlot metrics_;               // the reading thread's slot of it
  uint64_t lagCounted_ = 0;                 // the lag last written to lagSlot_
  MetricsSlot* lagSlot_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<PublisherCore>> advertiseTopic(const std::shared_ptr<ClientImpl>& client,
                                                      std::string_view id, capnp::StructSchema type,
                                                      TopicOptions options) {
  if (options.slots < 2 || options.slots > kMaxTopicSlots ||
      (options.slots & (options.slots - 1)) != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "TopicOptions::slots must be a power of two from 2 to " +
                      std::to_string(kMaxTopicSlots) + ", not " + std::to_string(options.slots));
  }
  if (options.maxMessageBytes < 8 || options.maxMessageBytes > kMaxTopicMessageBytes) {
    return Status(StatusCode::kInvalidArgument,
                  "TopicOptions::maxMessageBytes must be from 8 bytes to 64 MiB");
  }
  const uint64_t slotBytes =
      (uint64_t(options.maxMessageBytes) + sizeof(TopicSlotHeader) + 63) & ~uint64_t(63);
  const TopicGeometry g{options.slots, uint32_t(slotBytes)};
  if (auto s = g.validate(); !s) return s;
  auto st = std::make_shared<PublisherState>(client, std::string(id), g, options.publishTimeout);
  if (auto s = st->createLog(); !s) return s;
  st->typeId = type.getProto().getId();
  st->typeName = type.getShortDisplayName().cStr();
  st->schemaNodes = flatNodes(type);
  st->displayName = std::move(options.displayName);
  st->description = std::move(options.description);
  // Known before the broker can send an event for it; repeated to a new broker once answered.
  st->tag = client->addPublisher(st);
  const int fd = st->logFd.get();
  for (int attempt = 0;; ++attempt) {
    auto reply = client->roundTrip([&](wire::Request::Builder req) { st->fillAdvertise(req); },
                                   fd >= 0 ? &fd : nullptr, fd >= 0 ? 1 : 0);
    if (reply.ok()) {
      std::lock_guard registrations(client->registrationsMu());
      if (reply->session == client->session()) {
        st->topicKey = reply->reply().getAdvertise().getTopicKey();
        st->advertisedOn = reply->session;
        return std::unique_ptr<PublisherCore>(std::make_unique<PublisherImpl>(std::move(st)));
      }
      // Answered by a broker replaced since, whose successor was not told: advertised again.
      if (attempt < 3) continue;
    }
    client->removePublisher(st->tag);
    if (!reply.ok()) return reply.status();
    return Status(StatusCode::kUnavailable, "the broker kept restarting while topic " + st->id +
                                                " was advertised; "
                                                "advertise it again");
  }
}

Result<std::unique_ptr<SubscriptionCore>> subscribeTopic(const std::shared_ptr<ClientImpl>& client,
                                                         std::string_view id, uint64_t typeId,
                                                         const SubscribeOptions& options) {
  auto request = [&] {
    return client->roundTrip([&](wire::Request::Builder req) {
      auto s = req.initSubscribe();
      s.setTopicId(std::string(id));
      s.setTypeId(typeId);
      s.setPolicy(options.policy == SlowConsumer::kDropOldest
                      ? wire::SlowConsumerPolicy::DROP_OLDEST
                      : wire::SlowConsumerPolicy::BLOCK_PUBLISHER);
      s.setHistory(options.history);
    });
  };
  auto reply = request();
  if (!reply.ok() && reply.status().code() == StatusCode::kNotFound &&
      options.waitForPublisher.count() > 0) {
    // Nobody publishes it yet: ask again as the registry changes, until the deadline.
    const int64_t deadline = deadlineAfter(options.waitForPublisher);
    auto pause = std::chrono::milliseconds(5);
    while (!reply.ok() && reply.status().code() == StatusCode::kNotFound &&
           monotonicNs() < deadline && !client->closing()) {
      const int64_t left = deadline - monotonicNs();
      std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(
          pause, std::chrono::nanoseconds(std::max<int64_t>(left, 0))));
      pause = std::min(pause * 2, std::chrono::milliseconds(100));
      reply = request();
    }
  }
  if (!reply.ok()) return reply.status();
  auto r = reply->reply().getSubscribe();
  auto sub = std::make_unique<SubscriptionImpl>(client, std::string(id), r.getSubscriptionId());
  sub->attachedBy(reply->session, pid_t(r.getPublisherPid()));
  const TopicGeometry g{r.getSlotCount(), r.getSlotBytes()};
  Status s;
  if (auto v = g.validate(); !v) {
    s = Status(StatusCode::kDataLoss, "the broker described the topic's log wrongly");
  } else if (r.getTransport() == wire::Transport::SHARED_MEMORY) {
    s = reply->fds.size() == 2
            ? sub->attachShm(std::move(reply->fds[0]), std::move(reply->fds[1]), r.getLogBytes(), g)
            : Status(StatusCode::kInternal,
                     "the subscription came without "
                     "its log and cursor");
  } else if (reply->fds.size() == 1) {
    sub->attachSocket(std::move(reply->fds[0]), g.maxWords() * 8);
  } else {
    s = Status(StatusCode::kInternal, "the subscription came without its socket");
  }
  if (!s) return s;  // ~SubscriptionImpl unsubscribes
  return std::unique_ptr<SubscriptionCore>(std::move(sub));
}

}  // namespace detail

// ---- callback delivery -----------------------------------------------------------------

struct SubscriptionHandle::State {
  std::unique_ptr<detail::SubscriptionCore> core;
  std::function<void(capnp::MessageReader&, uint64_t, uint64_t)> deliver;
  std::atomic<bool> stopping{false};
  mutable std::mutex m;
  mutable std::condition_variable cv;
  bool ended = false;
  Status status;
  std::atomic<uint64_t> dropped{0};
  std::thread thread;

  void run() {
    detail::nameThisThread("hms-subscriber");
    Status end;
    for (;;) {
      capnp::MessageReader* reader = nullptr;
      Status s = core->next(std::chrono::hours(1), reader);
      if (stopping.load()) {
        end = Status(StatusCode::kCancelled, "the subscription was stopped");
        break;
      }
      if (s.code() == StatusCode::kDeadlineExceeded) continue;
      if (!s) {
        end = s;
        break;
      }
      dropped.store(core->dropped(), std::memory_order_relaxed);
      try {
        deliver(*reader, core->sequence(), core->missed());
      } catch (const std::exception& e) {
        detail::log().error("hms-ffi: a callback of topic {} threw: {}", core->topicId(), e.what());
      } catch (...) {
        detail::log().error("hms-ffi: a callback of topic {} threw", core->topicId());
      }
    }
    std::lock_guard lock(m);
    ended = true;
    status = end;
    cv.notify_all();
  }
};

namespace detail {
std::shared_ptr<SubscriptionHandle::State> startDelivery(
    std::unique_ptr<SubscriptionCore> core,
    std::function<void(capnp::MessageReader&, uint64_t seq, uint64_t missed)> deliver) {
  auto st = std::make_shared<SubscriptionHandle::State>();
  st->core = std::move(core);
  st->deliver = std::move(deliver);
  // The thread holds the state too: stop() from inside the callback detaches it.
  st->thread = std::thread([st] { st->run(); });
  return st;
}
}  // namespace detail

void SubscriptionHandle::stop() {
  if (!state_) return;
  auto st = std::move(state_);
  st->stopping.store(true);
  st->core->interrupt();
  if (st->thread.joinable()) {
    if (st->thread.get_id() == std::this_thread::get_id()) {
      st->thread.detach();  // from the callback: it ends when the callback returns
      return;
    }
    st->thread.join();
  }
  (void)st->core->close();
}

bool SubscriptionHandle::ended() const {
  if (!state_) return true;
  std::lock_guard lock(state_->m);
  return state_->ended;
}

Status SubscriptionHandle::status() const {
  if (!state_) return Status(StatusCode::kCancelled, "the subscription was stopped");
  std::lock_guard lock(state_->m);
  return state_->status;
}

bool SubscriptionHandle::waitEnded(std::chrono::nanoseconds timeout) const {
  if (!state_) return true;
  std::unique_lock lock(state_->m);
  return state_->cv.wait_for(lock, timeout, [&] { return state_->ended; });
}

uint64_t SubscriptionHandle::dropped() const {
  return state_ ? state_->dropped.load(std::memory_order_relaxed) : 0;
}

Result<std::vector<TopicInfo>> Client::discoverTopics(std::string_view prefix) const {
  auto view = impl_->registryView();
  if (!view.ok()) return view.status();
  std::vector<TopicInfo> out;
  for (const auto& t : (*view)->topics) {
    if (t.id.compare(0, prefix.size(), prefix) == 0) out.push_back(t);
  }
  return out;
}

}  // namespace hms::ffi
