// Private state of a Client: the control connection, the registry view, the caller channels and
// the dispatcher that serves this client's services.
#pragma once

#include <capnp/message.h>
#include <concurrentqueue/blockingconcurrentqueue.h>
#include <concurrentqueue/concurrentqueue.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "audit.hpp"
#include "codec.hpp"
#include "hms/ffi/client.hpp"
#include "hms/ffi/control.capnp.h"
#include "metrics_writer.hpp"
#include "os.hpp"
#include "registry_segment.hpp"
#include "registry_view.hpp"
#include "ring.hpp"
#include "ring_message.hpp"
#include "socket_link.hpp"
#include "tracing_impl.hpp"
#include "wait.hpp"

namespace hms::ffi::detail {

WaitPolicy toWaitPolicy(const ClientOptions& o);

// What the broker tells a publisher about its subscribers (topics.cpp), on the control thread.
struct SubscriberAddedEvent {
  uint64_t subscriptionId = 0;
  bool socket = false;  // fd: the publisher's end of a socketpair; else the cursor page
  bool dropOldest = false;
  uint32_t history = 0;
  pid_t pid = 0;
  std::string name;
  UniqueFd fd;
};
class PublisherEvents {
 public:
  virtual ~PublisherEvents() = default;
  virtual void subscriberAdded(SubscriberAddedEvent ev) = 0;
  virtual void subscriberRemoved(uint64_t subscriptionId) = 0;
  // After a reconnect, on the control thread: advertises the topic to the new broker.
  virtual Status advertiseAgain(ClientImpl& client, int sock) = 0;
};

// A reply from the broker, with the descriptors that came with it.
struct ControlReply {
  std::unique_ptr<DecodedMessage> message;
  std::vector<UniqueFd> fds;
  uint64_t session = 0;  // ClientImpl::session() of the connection it came on
  wire::Reply::Reader reply() { return message->root<wire::BrokerMessage>().getReply(); }
};

class Dispatcher;
class Completions;
class CallerChannel;

// A message that came for an asynchronous call: in place in the response ring (shared memory;
// `keep` holds the mapping), or a heap copy (socket channels, and replies moved out of a ring
// that needed the space).
struct AsyncMessage {
  RingConsumer::Record rec{};
  bool inRing = false;
  uint64_t conn = 0;  // CallerChannel::conn when it was read
  std::shared_ptr<Mapping> keep;
  std::unique_ptr<uint64_t[]> heap;
  const uint64_t* words() const noexcept { return rec.words; }
};

// The shared state of one asynchronous call (or stream) in flight.
struct AsyncCall {
  std::shared_ptr<CallerChannel> ch;  // null for a call that failed before it was sent
  uint64_t callId = 0;
  uint64_t conn = 0;  // the channel connection it went out on
  int64_t deadlineNs = 0;
  bool stream = false;
  std::string method;  // for messages (short names need no allocation)
  // "service.method", for messages (built when one is written, not per call).
  std::string what() const;

  mutable std::mutex m;
  // Threads asleep waiting for a change of the call (under m): a completion that nobody sleeps
  // on wakes nobody.
  int sleepers = 0;
  // What sleepers sleep on, a futex word bumped under m at each change a sleeper waits for (a
  // condition variable cost a construction and a destruction per call; most calls have no
  // sleeper). See notifySleepers() and sleepOnCall() in async_calls.cpp.
  std::atomic<uint32_t> changes{0};
  // The result, the stream's end, or an error is there. Set under m (release) after everything
  // it says is there; read under m (relaxed) or without it (acquire).
  std::atomic<bool> finished{false};
  // For a call in the channel's list of unread replies: whether `result` is a reply in the ring
  // still. The list skips the calls whose reply was read and given back without taking each
  // one's lock. (A reply handed over in route() is never in the list, and this stays false.)
  std::atomic<bool> resultInRing{false};
  // get()/then()/streamNext() handed the result out, or route() did to a waiting get().
  bool taken = false;
  // Taken by the drain of the thread whose get() waits for it, on that thread (read only there).
  bool handedOver = false;
  bool cancelled = false;
  Status status;
  std::optional<AsyncMessage> result;   // unary: the reply
  std::list<AsyncMessage> items;        // stream: items not read yet (an empty list allocates
                                        // nothing, unlike a deque: most calls are not streams)
  std::optional<AsyncMessage> current;  // stream: the item the caller reads now
  kj::ArrayPtr<const capnp::word> segment[1];
  std::optional<capnp::SegmentArrayMessageReader> reader;
  AsyncCallback callback;  // runs once on the completion thread
  bool callbackQueued = false;
  std::atomic<bool> hasCallback{false};  // a callback (not a Future's waiter) takes the result
  bool callbackCounted = false;          // in PendingCalls::callbacks() (the channel's asyncMu)
  uint32_t metricsFamily = 0;  // the series + 1 (0: uncounted), ended by whichever thread ends it
  int64_t startNs = 0;
  std::optional<Span> span;  // the client span, recorded when the call ends
};

// The calls in flight on one channel, by call id. A channel hands its ids out in order, so a
// table indexed by an id's low bits holds them with no allocation per call (an unordered_map
// made a node per call); it doubles when two ids in flight meet in one slot while it is a
// quarter full or more, and otherwise (a long-lived stream among many short calls) the newcomer
// goes to a small map beside it.
class PendingCalls {
 public:
  std::shared_ptr<AsyncCall>* find(uint64_t id) noexcept {
    if (slots_.empty()) return nullptr;
    auto& s = slots_[id & (slots_.size() - 1)];
    if (s && s->callId == id) return &s;
    if (overflow_.empty()) return nullptr;
    auto it = overflow_.find(id);
    return it == overflow_.end() ? nullptr : &it->second;
  }
  void insert(std::shared_ptr<AsyncCall> call);
  // Takes out the call `find` returned, and gives it (moved, not copied).
  std::shared_ptr<AsyncCall> take(std::shared_ptr<AsyncCall>* at) noexcept;
  void erase(std::shared_ptr<AsyncCall>* at) noexcept { (void)take(at); }
  template <class F>
  void forEach(F&& f) {
    for (auto& s : slots_) {
      if (s) f(s);
    }
    for (auto& [id, c] : overflow_) f(c);
  }
  void clear() noexcept;
  bool empty() const noexcept { return count_ == 0; }
  size_t slotCount() const noexcept { return slots_.size(); }  // the table's size (tests)
  // Calls in it whose result goes to a callback (not to a Future's waiter): what the completion
  // thread must deliver whoever else reads the channel. `call` must be in it.
  void countCallback(AsyncCall& call) noexcept;
  size_t callbacks() const noexcept { return callbacks_; }

 private:
  std::vector<std::shared_ptr<AsyncCall>> slots_;
  std::unordered_map<uint64_t, std::shared_ptr<AsyncCall>> overflow_;
  static constexpr size_t kKeptSlots = 1024;  // a larger table goes once it is empty
  size_t count_ = 0;
  size_t callbacks_ = 0;
};

// Records the client span of the call in progress on `ch` (if it has one) with its outcome.
void endClientSpan(CallerChannel& ch, const Status& outcome) noexcept;

// A call the service began counting whose end is counted later, off the reply's path: after the
// reply is published (the handler's time then includes the publish).
struct MetricsTiming {
  MetricsSlot* slot = nullptr;
  int64_t startNs = 0;
  std::optional<Span> span;  // the server span, recorded at the end too
  SpanSink* spans = nullptr;
  void end(const Status& answered) noexcept;
};

// Metrics of the calls (metrics_writer.hpp): the calling thread's slot of a caller-side series.
MetricsSlot* callerMetricsSlot(CallerChannel& ch, uint16_t ordinal, std::string_view method,
                               uint32_t* family = nullptr) noexcept;
// Ends an asynchronous call in the metrics, on the thread that ends it (call.m held).
// `nowNs`: the end time if the caller read the clock already (0: read it here).
void countAsyncEnd(AsyncCall& call, int64_t nowNs = 0) noexcept;
// A new AsyncCall, its block from the allocating thread's cache of blocks it freed before.
std::shared_ptr<AsyncCall> newAsyncCall();

class ClientImpl : public std::enable_shared_from_this<ClientImpl> {
 public:
  explicit ClientImpl(ClientOptions options);
  ~ClientImpl();

  Status start();
  void shutdown();

  using BuildRequest = std::function<void(wire::Request::Builder)>;
  // Sends a request and waits (ClientOptions::controlTimeout) for its reply. A non-OK reply status
  // becomes the returned Status.
  // `onlySession`, if not 0: sent only on that connection (session()); on a later one, the
  // request is UNAVAILABLE unsent (it names what an earlier broker gave).
  Result<ControlReply> roundTrip(const BuildRequest& build, const int* fds = nullptr,
                                 size_t fdCount = 0, uint64_t onlySession = 0);
  // The same on a socket the control thread is not reading yet (while it reconnects).
  Result<ControlReply> directRequest(int sock, const BuildRequest& build, const int* fds = nullptr,
                                     size_t fdCount = 0);
  // Sends a request whose reply nobody waits for.
  void sendOneWay(const BuildRequest& build);

  Result<std::shared_ptr<const RegistryView>> registryView();

  Result<ServiceHandle> serve(ServiceSpec spec);
  Status unregister(uint64_t tag);
  // Where this client's services write audit records (ClientOptions::auditLog), opened at the
  // first record; null if it cannot be opened (logged once).
  AuditLog* auditLog();

  // Publishers of this client, by the tag their advertise carried, for the broker's events.
  uint64_t addPublisher(std::weak_ptr<PublisherEvents> p);
  void removePublisher(uint64_t tag);

  // What this client registered (services, topics) is repeated to each new broker by
  // reconnect(), which holds this lock from its hello to the new connection's first use. A
  // registration is recorded, and a withdrawal taken out of the record together with the
  // session() it goes to, under this lock: so each is repeated by reconnect() or made on the new
  // connection by its caller, never both and never neither.
  std::mutex& registrationsMu() noexcept { return registrationsMu_; }

  bool closing() const noexcept { return closing_.load(std::memory_order_acquire); }
  // The word the dispatcher sleeps on: in the doorbell segment callers ring, or (without shared
  // memory) a private one only this process rings.
  WakeWord& doorbellWake() noexcept {
    return doorbell_.data() ? doorbell_.as<DoorbellSegment>()->wake : localDoorbell_.wake;
  }
  bool sharedMemory() const noexcept { return noSharedMemory_.empty(); }
  const std::string& noSharedMemory() const noexcept { return noSharedMemory_; }

  // Which connection to the broker this is: 1 for the first, one more after every reconnect.
  // What a broker names (a channel id) is that broker's name only: a later broker may give the
  // same number to something else, so ids are kept with the session they came in.
  uint64_t session() const noexcept { return session_.load(std::memory_order_acquire); }

  // The completion threads of asynchronous calls, started with the first one.
  Completions& completions();
  // The word this client's completion thread sleeps on (services answering it wake it).
  WakeWord& replyWake() noexcept {
    return doorbell_.data() ? doorbell_.as<DoorbellSegment>()->replyWake : localDoorbell_.replyWake;
  }

  const ClientOptions options;
  const WaitPolicy policy;
  const std::string socketPath;
  std::atomic<uint64_t> clientId{0};
  // This process's call metrics, in the segment of the current broker connection.
  MetricsWriter metrics;
  // Where spans of sampled traces go (tracing.hpp); null: none are recorded.
  const std::shared_ptr<SpanSink> spans;

 private:
  struct Pending {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    Status status;
    ControlReply reply;
  };
  struct Served {
    ServiceSpec spec;  // kept for re-registration after a broker restart
    uint64_t brokerKey = 0;
  };

  Status chooseTransport();
  Status connectAndHello(UniqueFd& sock, std::shared_ptr<RegistryReader>& registry);
  Result<std::shared_ptr<const RegistryView>> fetchRegistry(uint64_t knownGeneration);
  Result<ControlReply> directRoundTrip(int sock, capnp::MessageBuilder& request, const int* fds,
                                       size_t fdCount);
  void controlLoop();
  void handleMessage(std::vector<uint8_t> bytes, std::vector<UniqueFd> fds);
  void failAllPending(const Status& why);
  bool reconnect();
  Status registerWith(int sock, uint64_t tag, Served& served, bool direct,
                      uint64_t* session = nullptr);

  std::mutex sendMu_;  // guards sock_ writes and its replacement
  UniqueFd sock_;
  UniqueFd stopFd_;  // eventfd that wakes the control thread for shutdown
  std::thread controlThread_;
  std::atomic<bool> closing_{false};
  std::atomic<uint64_t> nextRequestId_{1};
  std::atomic<uint64_t> session_{0};  // bumped by connectAndHello(), control thread only

  std::mutex pendingMu_;
  std::map<uint64_t, std::shared_ptr<Pending>> pending_;

  mutable std::mutex registryMu_;
  std::shared_ptr<RegistryReader> registry_;
  std::shared_ptr<const RegistryView> view_;

  bool mapsMetrics_ = false;  // without channel memory: whether the metrics segment is wanted
  UniqueFd doorbellFd_;
  Mapping doorbell_;
  DoorbellSegment localDoorbell_{};

  Transport transport_ = Transport::kAuto;  // the setting, after $HMS_FFI_TRANSPORT
  std::vector<uid_t> brokerUids_;           // who may run the broker (broker_trust.hpp)
  std::string refusedBroker_;               // why the last broker was refused (logged once)
  std::string noSharedMemory_;              // why this client has none; empty: it has
  std::once_flag auditOnce_;
  std::unique_ptr<AuditLog> audit_;

  std::mutex registrationsMu_;  // before servedMu_, publishersMu_, sendMu_
  std::mutex servedMu_;
  std::map<uint64_t, Served> served_;  // by tag
  uint64_t nextTag_ = 1;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::mutex publishersMu_;
  std::map<uint64_t, std::weak_ptr<PublisherEvents>> publishers_;
  uint64_t nextPublisherTag_ = 1;
  std::once_flag completionsOnce_;
  std::unique_ptr<Completions> completions_;
};

// One caller->service channel and the call in progress on it.
class CallerChannel : public std::enable_shared_from_this<CallerChannel> {
 public:
  CallerChannel(std::shared_ptr<ClientImpl> client, std::string serviceId, VersionRange range,
                uint64_t interfaceId, std::string interfaceName);
  ~CallerChannel();

  // Opens (or re-opens) the channel to the best provider. `initial` picks NOT_FOUND over
  // UNAVAILABLE when nothing is live.
  Status open(bool initial);

  // The lease: one call at a time per channel, held from beginCall until the Reply is gone.
  Status acquire(int64_t deadlineNs);
  void releaseLease();

  bool peerGone() const noexcept {
    if (brokenConn.load(std::memory_order_relaxed)) return true;
    if (link) return link->peerClosed();
    return hdr_ && loadAcquire(hdr_->serviceState) != kEndOpen;
  }
  Status peerGoneStatus() const;
  void closeChannel(uint32_t myState);

  std::shared_ptr<ClientImpl> client;
  const std::string serviceId;
  const VersionRange range;
  const uint64_t interfaceId;
  const std::string interfaceName;

  // Set before the first open by a gateway (Client::bindJsonFor): every open of this channel is
  // for that caller of another host.
  std::optional<Caller> onBehalfOf;

  // Channel (valid while isOpen).
  bool isOpen = false;
  uint64_t session = 0;  // the broker connection channelId belongs to
  Transport transport = Transport::kSharedMemory;
  std::unique_ptr<SocketLink> link;  // the socket transport; null on shared memory
  uint64_t channelId = 0;
  ServiceInfo service;
  std::shared_ptr<Mapping> segment;  // shared with replies still read in place after a reopen
  Mapping doorbellMap;
  ChannelHeader* hdr_ = nullptr;
  RingProducer requests;
  RingConsumer responses;
  std::unique_ptr<RingMetrics> ringMetrics;  // how full `requests` gets (metrics)
  uint32_t maxMessageBytes = 0;
  std::string limitHint;

  // The call in progress.
  uint64_t nextCallId = 1;
  uint64_t callId = 0;
  int64_t deadlineNs = 0;
  std::string methodName;
  uint32_t methodNameOrdinal = ~0u;    // the method methodName names
  int64_t startNs = 0;                 // when the call began (for the metrics)
  MetricsSlot* metricsSlot = nullptr;  // the beginning thread's
  uint32_t metricsFamily = 0;          // the call's series + 1 (0: uncounted)
  // The call's client span, when its trace is sampled and spans are recorded: its id is the
  // span id in `trace`.
  bool spanActive = false;
  std::array<uint8_t, 8> spanParent{};
  int64_t spanStartUnixNs = 0;
  // The metrics series of each method of this channel, by ordinal (0: not yet known).
  std::array<std::atomic<uint32_t>, 64> metricsFamilies{};
  // The leasing thread's slot of each, kept between its calls (metrics_writer.hpp).
  std::array<CachedMetricsSlot, 64> metricsSlots{};
  RingProducer::Slot slot;
  RecordHeader pendingHeader{};
  TraceContextWire trace{};
  std::optional<RingMessageBuilder> builder;
  kj::ArrayPtr<const capnp::word> replySegment[1];
  std::optional<capnp::SegmentArrayMessageReader> reader;
  RingConsumer::Record replyRecord{};
  bool holdingReply = false;

  // Asynchronous calls. Once a call on this channel is sent asynchronously, the completion thread
  // reads its response side for good (asyncMode), and synchronous sends wait on their call like
  // any other. asyncMu guards what follows, `responses` and `link` receives in async mode, and
  // closing; lock order: asyncMu before any AsyncCall::m.
  std::mutex asyncMu;
  std::atomic<bool> asyncMode{false};
  uint64_t conn = 1;     // bumped on every open and close: which connection a record belongs to
  PendingCalls pending;  // by call id
  std::deque<std::shared_ptr<AsyncCall>> unread;  // completed, reply still in the ring
  bool failedConn = false;              // pending calls of this connection were failed (peer gone)
  std::atomic<bool> brokenConn{false};  // the completion thread found the ring corrupt
  uint32_t ringBytes = 0;
  // Threads that read this channel's replies themselves while they spin on their own call
  // (spinOnOwnChannel). While one does, or did since the completion thread last looked, the
  // completion thread leaves the channel to them and sleeps instead of spinning beside them
  // (two spinning threads of one process on one core halve each other). A waiter that stops
  // spinning without its answer sets spinnerGaveUp, and the completion thread takes over at once.
  std::atomic<uint32_t> spinners{0};
  // Bumped when a spin begins and ends, and when a waiter found its reply by one read.
  std::atomic<uint64_t> spinEpoch{0};
  std::atomic<bool> spinnerGaveUp{false};
  std::atomic<uint32_t> sleepers{0};  // waiters asleep on their call (they gave up spinning)
  // spinEpoch as the completion thread last saw it change, and when (its own).
  uint64_t coverSeen = 0;
  int64_t coverSeenNs = 0;

 private:
  // The lease: 0 free, 1 held, 2 held while another thread waits for it (under leaseMu_, on
  // leaseCv_). Taken and given back with one atomic each when nobody waits.
  std::atomic<uint32_t> lease_{0};
  std::atomic<std::thread::id> owner_{};
  std::mutex leaseMu_;
  std::condition_variable leaseCv_;
};

// Completes asynchronous calls: reads the response side of every channel in async mode, routes
// each reply and stream item to its call by call id, times calls out at their deadline, and runs
// callbacks (never under a library lock). One thread for shared-memory channels (it sleeps on the
// client's reply wake word) and, where there are socket channels, one that sleeps in epoll.
class Completions {
 public:
  explicit Completions(ClientImpl& client);
  ~Completions();
  void stop();

  // A channel entering async mode.
  void watch(const std::shared_ptr<CallerChannel>& ch);
  // A call with a deadline to keep.
  void track(const std::shared_ptr<AsyncCall>& call);
  // Runs call->callback on the completion thread.
  void post(std::shared_ptr<AsyncCall> call);
  // A channel in async mode opened again (perhaps on the other transport).
  void relink(const std::shared_ptr<CallerChannel>& ch);
  // A waiter stopped spinning on `ch` without its answer: the completion thread reads the
  // channel again from now on.
  void uncover(CallerChannel& ch);

 private:
  void runShm();
  void runSockets();
  void runCallbacks();
  void expireDeadlines(int64_t now);
  int64_t nextDeadline();
  std::vector<std::shared_ptr<CallerChannel>> channels(bool socket);
  void wakeAll();

  ClientImpl& client_;
  std::mutex mu_;
  std::vector<std::weak_ptr<CallerChannel>> shm_;
  std::vector<std::weak_ptr<CallerChannel>> sockets_;
  std::multimap<int64_t, std::weak_ptr<AsyncCall>> deadlines_;
  std::atomic<int64_t> earliest_{kNoDeadline};
  moodycamel::ConcurrentQueue<std::shared_ptr<AsyncCall>> callbacks_;
  std::atomic<uint32_t> queued_{0};
  std::atomic<uint64_t> changes_{0};  // bumped when the watched channels change
  std::atomic<bool> stopping_{false};
  // Where the shared-memory thread sleeps while waiters read all its channels themselves: a
  // process-local word, so that the services' replies do not wake it (they wake replyWake).
  WakeWord coverWake_{};
  std::atomic<uint64_t> uncovers_{0};
  std::thread shmThread_;
  std::thread socketThread_;
  UniqueFd epollFd_;
  UniqueFd eventFd_;
};

// Routes the records waiting on `ch` (in async mode) to their calls; completed calls with
// callbacks are posted. Returns whether anything was read. Called with nothing locked. `taker`:
// the call whose get() this thread waits in; if its reply is among them, it is taken here.
bool drainAsync(CallerChannel& ch, Completions& completions, AsyncCall* taker = nullptr);
// Fails every call pending on `ch` with `why` (its connection ended); asyncMu held.
void failPendingLocked(CallerChannel& ch, const Status& why,
                       std::vector<std::shared_ptr<AsyncCall>>& completed);
// Tells the service that call `callId` (sent on connection `conn`) is cancelled.
Status sendCancel(CallerChannel& ch, uint64_t callId, uint64_t conn) noexcept;

Result<Mapping> attachChannel(int fd, uint64_t claimedBytes);
// The data of a ring this process consumes, made by its peer: a memfd of `ringBytes` sealed for
// readers (anything else is refused), mapped read-only.
Result<Mapping> attachPeerRing(int fd, uint32_t ringBytes, const char* what);
// The data of a ring this process produces: a new memfd of `ringBytes`, mapped writable here and
// then sealed for readers, so that the peer it is handed to can map it read-only only.
struct OwnRing {
  UniqueFd fd;
  Mapping map;
};
// A shared-memory channel's mappings: the broker's control page and the two rings' data.
struct ChannelMaps {
  Mapping control;
  Mapping requestRing;   // writable by the caller, read-only to the service
  Mapping responseRing;  // writable by the service, read-only to the caller
};
Result<OwnRing> makeOwnRing(uint32_t ringBytes, const char* name);

// A call a service is running where it can be cancelled: a stream, or a call on a worker.
struct ServerCall {
  uint64_t callId = 0;
  int64_t deadlineNs = kNoDeadline;
  std::atomic<bool> cancelled{false};
  // Answered later through a Responder: it leaves the channel's `running` when answered, not
  // when its handler returns (guarded by the channel's runningMu).
  bool deferred = false;
  // A deferred call's audit record, written with the outcome when it is answered (or its channel
  // ends unanswered). Set by the dispatcher before the hand-off; then the PendingReply's.
  std::function<void(const Status&)> auditLater;
  WakeWord* spaceWake = nullptr;  // woken on cancel: a stream may sleep on a full ring
  std::mutex m;
  std::vector<std::function<void()>> onCancel;
  // Sets the flag and runs the callbacks, once.
  void cancel();
};

// Serves the client's services: one thread watches every channel's request ring and sleeps on the
// client's doorbell when all are idle. No thread and no futex per caller. Records are read as
// they come (a cancel takes effect while earlier calls run) and run in order per channel; streams
// run on the service's stream threads, beside the channel's other calls.
// The broker's decision for one channel (control.capnp, Grant): checked before every handler.
struct ChannelGrant {
  bool enforced = false;            // false: no policy; everything allowed, nothing audited
  std::vector<uint8_t> allowed;     // by ordinal
  std::vector<uint8_t> audit;       // by ordinal: wire::AuditLevel
  std::vector<std::string> denied;  // by ordinal: why not
  Caller caller;
};

class Dispatcher {
 public:
  Dispatcher(ClientImpl& client);
  ~Dispatcher();

  struct ChannelOpenedEvent {
    uint64_t session = 0;  // ClientImpl::session() it came in: channelId is unique only within it
    uint64_t channelId = 0;
    uint64_t tag = 0;
    uint64_t segmentBytes = 0;
    std::shared_ptr<const ChannelGrant> grant;
    std::shared_ptr<UniqueFd> fd;
    bool socket = false;  // fd is the service's end of a socketpair, not a segment
    std::shared_ptr<UniqueFd> requestRing;     // shared memory: the caller's, to map read-only
    std::shared_ptr<UniqueFd> callerDoorbell;  // shared memory: wakes the caller's completions
    uint32_t maxMessageBytes = 0;
  };
  void addService(uint64_t tag, const ServiceSpec& spec);
  // Returns once no handler of the service will run again and its channels are closed (callers
  // see UNAVAILABLE), except when called from the service's own threads (a handler stopping its
  // service), which cannot wait for themselves.
  void removeService(uint64_t tag);
  void channelOpened(ChannelOpenedEvent ev);
  // The broker of `session` ended channel `channelId`; a channel of the same number from another
  // broker is not this one.
  void channelClosed(uint64_t session, uint64_t channelId);
  void stop();

  struct Service;
  struct Channel;
  // A record read from a channel and not yet run. On socket channels it is a heap copy (the
  // link's receive buffer is reused); on shared memory it stays in the ring until released.
  struct Queued {
    RingConsumer::Record rec{};
    std::unique_ptr<uint64_t[]> copy;
    bool dropped = false;     // cancelled before it ran
    int64_t parkedUntil = 0;  // parked (replyRoom()): given up at this time; 0: never parked
  };
  struct Work {
    Channel* channel = nullptr;
    std::shared_ptr<Queued> item;
    std::shared_ptr<ServerCall> call;
  };

 private:
  struct Event {
    enum Kind { kAddService, kRemoveService, kOpen, kClose, kStop } kind;
    uint64_t id = 0;
    std::shared_ptr<Service> service;
    ChannelOpenedEvent open;
    std::shared_ptr<std::promise<void>> done;  // kRemoveService: set once it took effect
    uint64_t session = 0;                      // kClose: the broker connection `id` belongs to
  };

  void post(Event ev);
  void run();
  // Socket channels: served by a second thread (started with the first one) that sleeps in
  // epoll, since a thread cannot sleep on a futex and sockets at once.
  void startSocketThread();
  void runSockets();
  void handBack(bool socket);
  void workerLoop(Service* svc);
  void streamLoop(Service* svc);
  // Queues a call for the service's workers (or stream threads), starting one if none is idle
  // and the pool is not full.
  void enqueueWork(Service& svc, bool stream, Work w);
  void retireThreads(Service& svc);
  void toSocketThread(std::function<void()> fn);
  void socketClose(Channel& ch, const char* why);
  // Reads and runs (or queues) up to `maxRecords` records from a socket channel: a batch of 64
  // on the poll loop, so that one busy caller cannot starve the others; kDrainAll when the
  // channel is ending and what its caller sent must all run.
  static constexpr size_t kDrainAll = SIZE_MAX;
  void socketRead(Channel& ch, size_t maxRecords = 64);
  bool drainEvents();
  std::unique_ptr<Channel> newChannel(const ChannelOpenedEvent& ev);  // the caller's side of it
  void attach(const ChannelOpenedEvent& ev);
  void attachSocket(ChannelOpenedEvent& ev);
  bool pollChannels();
  // What both transports do with a record read: a cancel takes effect, a request is queued.
  // False: the record is not one a caller may send.
  bool take(Channel& ch, const RingConsumer::Record& rec, std::unique_ptr<uint64_t[]> copy);
  // Runs queued calls in order while the channel is free; returns whether any ran.
  bool dispatch(Channel& ch, int budget);
  // This thread's metrics slot of a method of `svc` (null: metrics off, or a method unnamed).
  MetricsSlot* metricsSlot(const Service& svc, uint16_t ordinal) noexcept;
  // metricsThreadSerial() of the thread in run() (0 before it starts): the one thread that may
  // use a Service's dispatcherSlots.
  std::atomic<uint64_t> runSerial_{0};
  // Whether a call goes to the service's workers (else it runs on the thread serving the channel).
  static bool onWorker(const Channel& ch, const RecordHeader& h);
  // Runs a plain or one-way call at once if nothing is ahead of it; false: it must be queued.
  bool runInPlace(Channel& ch, const RingConsumer::Record& rec);
  // Whether the caller's response ring (or socket) has room for a reply now. A call whose reply
  // has none is parked at the front of its channel's queue (its request stays in the ring; a
  // socket channel is not read while parked) instead of waited for in place, so that a caller
  // that does not read its replies holds up only its own channel. `arm`: from the idle wait,
  // which the caller's next release must wake (shared memory).
  bool replyRoom(Channel& ch, bool arm);
  // `mayPark` (in place on the dispatcher thread): false, having done nothing, when the caller's
  // response ring has no room for the reply; the call is then queued, and dispatch() parks it.
  bool runUnary(Channel& ch, Queued& q, const std::shared_ptr<ServerCall>& call,
                bool mayPark = false);
  void runOneWay(Channel& ch, Queued& q);
  void runStream(Channel& ch, Queued& q, const std::shared_ptr<ServerCall>& call);
  // A deferred handler's call (Responder): the handler runs, the request is given back, and the
  // answer goes out whenever (and from whichever thread) the Responder gives it.
  void runDeferred(Channel& ch, Queued& q, const std::shared_ptr<ServerCall>& call,
                   const DeferredHandler& handler);
  friend class hms::ffi::Responder;
  // The answer of a deferred call: the results `build` writes, or `status`. Any thread.
  static Status answerDeferred(PendingReply& p, Status status,
                               const std::function<Status(capnp::MessageBuilder&)>* build) noexcept;
  // Writes a call's answer into the caller's ring or socket, `ch.outMu` held (or the channel
  // alone): the results `build(MessageBuilder&)` makes, or the error it returns. Returns what
  // the caller is told (OK also when nobody is left to tell); nothing, having done nothing, when
  // `mayPark` and the ring has no room now. `corrupt`: the ring's index was impossible.
  template <class Build>
  std::optional<Status> writeAnswer(Channel& ch, RecordHeader header, int64_t replyDeadline,
                                    bool mayPark, bool& corrupt, Build&& build);
  void finish(Channel& ch, Queued& q);  // gives the request back
  // Runs the unary handler into `results`, or (stream) `run`; the checks before it are shared.
  // First the channel's grant: a method it does not allow is PERMISSION_DENIED and no handler
  // runs; then the audit record the grant asks for, whatever the outcome.
  // The handler run of invoke(), once the grant allowed the call.
  Status invokeGranted(Channel& ch, const RingConsumer::Record& rec,
                       const std::shared_ptr<ServerCall>* call, bool stream,
                       const std::function<Status(CallContext&, capnp::MessageReader&)>* run,
                       capnp::MessageBuilder* results, int64_t nowNs = 0);
  Status invoke(Channel& ch, const RingConsumer::Record& rec,
                const std::shared_ptr<ServerCall>* call, bool stream,
                const std::function<Status(CallContext&, capnp::MessageReader&)>* run,
                capnp::MessageBuilder* results, MetricsTiming* timing = nullptr);
  // invoke() without the metrics: the grant, the handler and the audit.
  Status invokeChecked(Channel& ch, const RingConsumer::Record& rec,
                       const std::shared_ptr<ServerCall>* call, bool stream,
                       const std::function<Status(CallContext&, capnp::MessageReader&)>* run,
                       capnp::MessageBuilder* results, int64_t nowNs = 0);
  // The audit record of a call, made from what the call arrived with and written with its
  // outcome when called. Empty when the client keeps no audit log.
  std::function<void(const Status&)> auditRecord(Channel& ch, const RingConsumer::Record& rec,
                                                 uint8_t level, int64_t startedNs);
  void closeChannelLocal(Channel& ch, uint32_t myState, const char* why);
  // The caller left (closed the channel or died): the one-way calls it committed were
  // acknowledged when they entered the channel, so they still run, in order, on this thread;
  // calls waiting for an answer are dropped (nobody reads it). Reads a shared-memory ring to its
  // end first. Before the channel is closed.
  void runWhatTheCallerLeft(Channel& ch);
  void cancelRunning(Channel& ch);
  void reapClosed();
  int64_t sweepDeadlines(std::vector<std::unique_ptr<Channel>>& list);

  ClientImpl& client_;
  WakeWord* doorbell_;
  // Events arrive from several threads (serve(), the control thread, stop()), and their order
  // matters: a service must be known before its first channel. The queue is FIFO per producer
  // only, so every post goes through one producer token, under postMu_ (control events are rare).
  moodycamel::ConcurrentQueue<Event> events_;
  std::mutex postMu_;
  moodycamel::ProducerToken postToken_{events_};
  // Events posted and not yet taken: the idle loop reads this one word instead of the queue.
  std::atomic<uint32_t> pendingEvents_{0};
  // Calls in the channels' `running` maps (on workers and stream threads), all channels together.
  std::atomic<uint32_t> runningCalls_{0};
  bool anyClosed_ = false;  // a channel was marked closed and awaits reaping (dispatcher thread)
  // The earliest time a parked call must be looked at again (dispatcher thread): its deadline,
  // or the next re-check (kParkedRecheckNs) while any is parked.
  int64_t parkedWake_ = kNoDeadline;
  int64_t socketParkedWake_ = kNoDeadline;  // the same for socket channels (socket thread)
  std::atomic<bool> stopping_{false};
  std::map<uint64_t, std::shared_ptr<Service>> services_;  // by tag; dispatcher thread only
  std::vector<std::unique_ptr<Channel>> channels_;         // dispatcher thread only
  // Where the last request came (an index into channels_): its scans begin there.
  size_t lastServed_ = 0;
  std::vector<std::shared_ptr<Service>> retired_;          // removed; threads joined at stop

  std::thread thread_;

  // Socket thread. Its inbox takes work from other threads; channels_ of its own.
  std::mutex socketMu_;
  std::vector<std::function<void()>> socketInbox_;
  UniqueFd socketEventFd_;
  UniqueFd epollFd_;
  std::vector<std::unique_ptr<Channel>> socketChannels_;  // socket thread only
  bool socketsStopping_ = false;                          // socket thread only
  std::thread socketThread_;
  std::atomic<std::thread::id> socketThreadId_{};
};

}  // namespace hms::ffi::detail
