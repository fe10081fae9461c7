// Private state of a Client: the control connection, the registry view, the caller channels and
// the dispatcher that serves this client's services.
#pragma once

#include <capnp/message.h>
#include <concurrentqueue/blockingconcurrentqueue.h>
#include <concurrentqueue/concurrentqueue.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "codec.hpp"
#include "hms/ffi/client.hpp"
#include "hms/ffi/control.capnp.h"
#include "os.hpp"
#include "registry_segment.hpp"
#include "ring.hpp"
#include "ring_message.hpp"
#include "socket_link.hpp"
#include "wait.hpp"

namespace hms::ffi::detail {

WaitPolicy toWaitPolicy(const ClientOptions& o);

// A registry snapshot parsed once per generation: services sorted by id, then version descending.
struct RegistryView {
  uint64_t generation = 0;
  std::vector<ServiceInfo> services;
};

// A reply from the broker, with the descriptors that came with it.
struct ControlReply {
  std::unique_ptr<DecodedMessage> message;
  std::vector<UniqueFd> fds;
  wire::Reply::Reader reply() { return message->root<wire::BrokerMessage>().getReply(); }
};

class Dispatcher;

class ClientImpl : public std::enable_shared_from_this<ClientImpl> {
 public:
  explicit ClientImpl(ClientOptions options);
  ~ClientImpl();

  Status start();
  void shutdown();

  using BuildRequest = std::function<void(wire::Request::Builder)>;
  // Sends a request and waits (ClientOptions::controlTimeout) for its reply. A non-OK reply status
  // becomes the returned Status.
  Result<ControlReply> roundTrip(const BuildRequest& build, const int* fds = nullptr,
                                 size_t fdCount = 0);
  // Sends a request whose reply nobody waits for.
  void sendOneWay(const BuildRequest& build);

  Result<std::shared_ptr<const RegistryView>> registryView();

  Result<ServiceHandle> serve(ServiceSpec spec);
  Status unregister(uint64_t tag);

  bool closing() const noexcept { return closing_.load(std::memory_order_acquire); }
  // The word the dispatcher sleeps on: in the doorbell segment callers ring, or (without shared
  // memory) a private one only this process rings.
  WakeWord& doorbellWake() noexcept {
    return doorbell_.data() ? doorbell_.as<DoorbellSegment>()->wake : localDoorbell_.wake;
  }
  bool sharedMemory() const noexcept { return noSharedMemory_.empty(); }
  const std::string& noSharedMemory() const noexcept { return noSharedMemory_; }

  const ClientOptions options;
  const WaitPolicy policy;
  const std::string socketPath;
  std::atomic<uint64_t> clientId{0};

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
  Status registerWith(int sock, uint64_t tag, Served& served, bool direct);

  std::mutex sendMu_;  // guards sock_ writes and its replacement
  UniqueFd sock_;
  UniqueFd stopFd_;  // eventfd that wakes the control thread for shutdown
  std::thread controlThread_;
  std::atomic<bool> closing_{false};
  std::atomic<uint64_t> nextRequestId_{1};

  std::mutex pendingMu_;
  std::map<uint64_t, std::shared_ptr<Pending>> pending_;

  mutable std::mutex registryMu_;
  std::shared_ptr<RegistryReader> registry_;
  std::shared_ptr<const RegistryView> view_;

  UniqueFd doorbellFd_;
  Mapping doorbell_;
  DoorbellSegment localDoorbell_{};

  Transport transport_ = Transport::kAuto;  // the setting, after $HMS_FFI_TRANSPORT
  std::string noSharedMemory_;              // why this client has none; empty: it has

  std::mutex servedMu_;
  std::map<uint64_t, Served> served_;  // by tag
  uint64_t nextTag_ = 1;
  std::unique_ptr<Dispatcher> dispatcher_;
};

// One caller->service channel and the call in progress on it.
class CallerChannel {
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

  // Channel (valid while isOpen).
  bool isOpen = false;
  Transport transport = Transport::kSharedMemory;
  std::unique_ptr<SocketLink> link;  // the socket transport; null on shared memory
  uint64_t channelId = 0;
  ServiceInfo service;
  Mapping segment;
  Mapping doorbellMap;
  ChannelHeader* hdr_ = nullptr;
  RingProducer requests;
  RingConsumer responses;
  uint32_t maxMessageBytes = 0;
  std::string limitHint;

  // The call in progress.
  uint64_t nextCallId = 1;
  uint64_t callId = 0;
  int64_t deadlineNs = 0;
  std::string methodName;
  RingProducer::Slot slot;
  RecordHeader pendingHeader{};
  TraceContextWire trace{};
  std::optional<RingMessageBuilder> builder;
  kj::ArrayPtr<const capnp::word> replySegment[1];
  std::optional<capnp::SegmentArrayMessageReader> reader;
  RingConsumer::Record replyRecord{};
  bool holdingReply = false;

 private:
  std::mutex leaseMu_;
  std::condition_variable leaseCv_;
  bool leased_ = false;
  std::thread::id owner_;
};

// Serves the client's services: one thread watches every channel's request ring and sleeps on the
// client's doorbell when all are idle. No thread and no futex per caller.
class Dispatcher {
 public:
  Dispatcher(ClientImpl& client);
  ~Dispatcher();

  struct ChannelOpenedEvent {
    uint64_t channelId = 0;
    uint64_t tag = 0;
    uint64_t segmentBytes = 0;
    pid_t callerPid = 0;
    uid_t callerUid = 0;
    std::string callerName;
    std::shared_ptr<UniqueFd> fd;
    bool socket = false;  // fd is the service's end of a socketpair, not a segment
    uint32_t maxMessageBytes = 0;
  };
  void addService(uint64_t tag, const ServiceSpec& spec);
  // Returns once no handler of the service will run again and its channels are closed (callers
  // see UNAVAILABLE), except when called from the service's own threads (a handler stopping its
  // service), which cannot wait for themselves.
  void removeService(uint64_t tag);
  void channelOpened(ChannelOpenedEvent ev);
  void channelClosed(uint64_t channelId);
  void stop();

 private:
  struct Service;
  struct Channel;
  struct Work {
    Channel* channel;
    RingConsumer::Record record;
  };
  struct Event {
    enum Kind { kAddService, kRemoveService, kOpen, kClose, kStop } kind;
    uint64_t id = 0;
    std::shared_ptr<Service> service;
    ChannelOpenedEvent open;
    std::shared_ptr<std::promise<void>> done;  // kRemoveService: set once it took effect
  };

  void post(Event ev);
  void run();
  // Socket channels: served by a second thread (started with the first one) that sleeps in
  // epoll, since a thread cannot sleep on a futex and sockets at once.
  void startSocketThread();
  void runSockets();
  void toSocketThread(std::function<void()> fn);
  void socketAttach(std::unique_ptr<Channel> ch);
  void socketServe(Channel& ch);
  void socketClose(Channel& ch, const char* why);
  void handleSocket(Channel& ch, const RingConsumer::Record& rec);
  Status invoke(Channel& ch, const RingConsumer::Record& rec, capnp::MessageBuilder& results);
  bool drainEvents();
  std::unique_ptr<Channel> newChannel(const ChannelOpenedEvent& ev);  // the caller's side of it
  void attach(const ChannelOpenedEvent& ev);
  void attachSocket(ChannelOpenedEvent& ev);
  bool pollChannels();
  void handle(Channel& ch, const RingConsumer::Record& rec);
  void closeChannelLocal(Channel& ch, uint32_t myState, const char* why);
  void reapClosed();

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
  bool anyClosed_ = false;  // a channel was marked closed and awaits reaping (dispatcher thread)
  std::atomic<bool> stopping_{false};
  std::map<uint64_t, std::shared_ptr<Service>> services_;  // by tag; dispatcher thread only
  std::vector<std::unique_ptr<Channel>> channels_;         // dispatcher thread only

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
