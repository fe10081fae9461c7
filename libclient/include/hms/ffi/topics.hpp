// Publish/subscribe (docs/pubsub.md): one publisher per topic writes each message once, in place,
// into the topic's log; every subscriber reads it in place (shared memory) or gets it over its
// own socket (where shared memory is unavailable), in publication order.
//
//     auto vitals = client->advertise<VitalSigns>("hms.emr.vitals").valueOrThrow();
//     vitals.publish([&](VitalSigns::Builder v) { v.setHeartRate(72); });
//
//     auto sub = client->subscribe<VitalSigns>("hms.emr.vitals").valueOrThrow();
//     while (sub.next(std::chrono::seconds(1))) use(sub.message().getHeartRate());
//
// Included by client.hpp; use Client::advertise and Client::subscribe.
#pragma once

#include <capnp/message.h>
#include <capnp/schema.h>
#include <kj/function.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "hms/ffi/status.hpp"

namespace hms::ffi {

// What the publisher does about a subscriber that reads slower than it publishes.
enum class SlowConsumer : uint8_t {
  // The publisher waits for it (up to its publish timeout): the subscriber sees every message.
  kBlockPublisher,
  // The publisher never waits for it: messages it has not read when the log wraps are lost to
  // it, and it is told how many (Subscription::missed()).
  kDropOldest,
};

struct TopicOptions {
  // Messages the log keeps: how far a drop_oldest subscriber may fall behind before it loses
  // messages, how far a block_publisher one before the publisher waits, and the most history a
  // late joiner can ask for (slots - 1). A power of two, at least 2.
  uint32_t slots = 256;
  // The largest message. Each slot takes this plus 16 bytes, rounded up to 64.
  uint32_t maxMessageBytes = 4096 - 16;
  // How long publish() waits for a block_publisher subscriber. Zero: the client's default
  // timeout (ClientOptions::defaultTimeout).
  std::chrono::nanoseconds publishTimeout{0};
  std::string displayName;
  std::string description;
};

struct SubscribeOptions {
  SlowConsumer policy = SlowConsumer::kBlockPublisher;
  // Start with the last `history` messages already published (at most TopicOptions::slots - 1).
  uint32_t history = 0;
  // How long subscribe() waits for a publisher of the topic to appear (zero: not at all, a topic
  // nobody publishes is NOT_FOUND at once).
  std::chrono::nanoseconds waitForPublisher{0};
};

// A live topic as the registry describes it.
struct TopicInfo {
  uint64_t key = 0;
  std::string id;
  uint64_t typeId = 0;
  std::string typeName;
  std::string displayName;
  std::string description;
  uint32_t slots = 0;
  uint32_t maxMessageBytes = 0;
  uint64_t publisherClientId = 0;
  pid_t publisherPid = 0;
  uid_t publisherUid = 0;
  std::string publisherName;
  uint32_t subscribers = 0;
};

namespace detail {

class ClientImpl;

// The engines behind Publisher and Subscription (topics.cpp).
class PublisherCore {
 public:
  virtual ~PublisherCore() = default;
  // Space for the next message, as a builder over its slot in the log. Waits while a
  // block_publisher subscriber still reads the message the slot holds (DEADLINE_EXCEEDED after
  // the publish timeout). One loan at a time.
  virtual Result<capnp::MessageBuilder*> loan() noexcept = 0;
  // Publishes the loaned message: RESOURCE_EXHAUSTED (nothing published) when it is larger
  // than the topic's limit.
  virtual Status publish() noexcept = 0;
  // Loans, fills and publishes n messages under one lock; subscribers see them together (one
  // store of the count, one wake). A fill that throws: what was filled before is published, the
  // exception goes on.
  virtual Status publishBatch(size_t n,
                              kj::FunctionParam<void(size_t, capnp::MessageBuilder&)> fill) = 0;
  virtual void abandon() noexcept = 0;
  virtual uint64_t published() const noexcept = 0;
  virtual size_t subscribers() const noexcept = 0;
  virtual const std::string& topicId() const noexcept = 0;
  // Leaves the registry; subscribers read what was published, then see the end.
  virtual Status close() noexcept = 0;
};

class SubscriptionCore {
 public:
  virtual ~SubscriptionCore() = default;
  // The next message: OK and `reader` reads it (valid until the next call); DEADLINE_EXCEEDED
  // when none came in time; UNAVAILABLE once the publisher has gone and everything it published
  // (that this subscriber did not miss) has been read.
  virtual Status next(std::chrono::nanoseconds timeout, capnp::MessageReader*& reader) noexcept = 0;
  virtual uint64_t sequence() const noexcept = 0;  // of the message next() returned
  virtual uint64_t missed() const noexcept = 0;    // just before it
  virtual uint64_t dropped() const noexcept = 0;   // in all
  virtual bool sharedMemory() const noexcept = 0;
  virtual const std::string& topicId() const noexcept = 0;
  // Makes a next() waiting on another thread return CANCELLED (and every later one).
  virtual void interrupt() noexcept = 0;
  virtual Status close() noexcept = 0;
};

// `type` is the message struct; its schema nodes go with the advertisement (docs/contracts.md).
Result<std::unique_ptr<PublisherCore>> advertiseTopic(const std::shared_ptr<ClientImpl>& client,
                                                      std::string_view id, capnp::StructSchema type,
                                                      TopicOptions options);
Result<std::unique_ptr<SubscriptionCore>> subscribeTopic(const std::shared_ptr<ClientImpl>& client,
                                                         std::string_view id, uint64_t typeId,
                                                         const SubscribeOptions& options);

}  // namespace detail

// A message being built in its slot of the log. publish() makes it visible to every subscriber
// at once; a Loan destroyed unpublished gives the slot back.
template <class T>
class Loan {
 public:
  Loan(Loan&& o) noexcept : core_(std::exchange(o.core_, nullptr)), builder_(o.builder_) {}
  Loan& operator=(Loan&&) = delete;
  ~Loan() {
    if (core_) core_->abandon();
  }
  typename T::Builder message() noexcept { return builder_; }
  Status publish() && { return std::exchange(core_, nullptr)->publish(); }

 private:
  template <class>
  friend class Publisher;
  Loan(detail::PublisherCore* core, typename T::Builder b) : core_(core), builder_(b) {}
  detail::PublisherCore* core_;
  typename T::Builder builder_;
};

// The one publisher of a topic. Leaves the registry when closed or destroyed (subscribers read
// what was published, then see UNAVAILABLE). One thread at a time.
template <class T>
class Publisher {
 public:
  Publisher(Publisher&&) noexcept = default;
  Publisher& operator=(Publisher&&) noexcept = default;

  // Space for the next message, built in place. Waits (by the client's wait mode) while a
  // block_publisher subscriber has not read the message the slot still holds; DEADLINE_EXCEEDED
  // after TopicOptions::publishTimeout, naming how far behind it is.
  Result<Loan<T>> loan() {
    auto b = core_->loan();
    if (!b.ok()) return b.status();
    return Loan<T>(core_.get(), (*b)->template initRoot<T>());
  }
  // loan(), fill(T::Builder), publish.
  template <class Fill>
  Status publish(Fill&& fill) {
    auto l = loan();
    if (!l.ok()) return l.status();
    fill(l->message());
    return std::move(*l).publish();
  }
  // Publishes n messages: fill(i, T::Builder) builds the i-th in its slot, in order. Subscribers
  // see them together (one store of the count and one wake for the batch, where publish() pays
  // one per message), so a batch costs the publisher less per message; they may wait for a
  // block_publisher subscriber as publish() does, and a batch larger than the topic's slots
  // is published in parts as that subscriber reads. On an error (a message too large, a
  // subscriber that did not catch up in time) the messages before it are published and the
  // status says how many; published() counts them. An exception from fill goes on after the
  // messages before it are published.
  template <class Fill>
  Status publishBatch(size_t n, Fill&& fill) {
    return core_->publishBatch(
        n, [&](size_t i, capnp::MessageBuilder& mb) { fill(i, mb.initRoot<T>()); });
  }
  // Messages published so far (the sequence number of the last one).
  uint64_t published() const noexcept { return core_->published(); }
  // Subscribers attached now.
  size_t subscribers() const noexcept { return core_->subscribers(); }
  const std::string& topicId() const noexcept { return core_->topicId(); }
  Status close() { return core_->close(); }

 private:
  friend class Client;
  explicit Publisher(std::unique_ptr<detail::PublisherCore> core) : core_(std::move(core)) {}
  std::unique_ptr<detail::PublisherCore> core_;
};

// A subscription read by polling or waiting: next() then message(). Leaves when closed or
// destroyed. One thread at a time.
template <class T>
class Subscription {
 public:
  Subscription(Subscription&&) noexcept = default;
  Subscription& operator=(Subscription&&) noexcept = default;

  // Waits up to `timeout` (zero: does not wait) for the next message. OK: message() reads it in
  // place until the next call. DEADLINE_EXCEEDED: none came in time. UNAVAILABLE: the publisher
  // closed the topic or died, and every message it published has been read. DATA_LOSS: the log
  // or the socket was corrupt.
  Status next(std::chrono::nanoseconds timeout = std::chrono::seconds(30)) {
    return core_->next(timeout, reader_);
  }
  typename T::Reader message() const { return reader_->getRoot<T>(); }
  // Sequence number of the message (the publisher's count, from 1).
  uint64_t sequence() const noexcept { return core_->sequence(); }
  // Messages lost just before this one (drop_oldest; always 0 under block_publisher).
  uint64_t missed() const noexcept { return core_->missed(); }
  // Messages lost in all.
  uint64_t dropped() const noexcept { return core_->dropped(); }
  // Whether the messages are read in place in shared memory (else they come over a socket).
  bool sharedMemory() const noexcept { return core_->sharedMemory(); }
  const std::string& topicId() const noexcept { return core_->topicId(); }
  Status close() { return core_->close(); }

 private:
  friend class Client;
  explicit Subscription(std::unique_ptr<detail::SubscriptionCore> core) : core_(std::move(core)) {}
  std::unique_ptr<detail::SubscriptionCore> core_;
  capnp::MessageReader* reader_ = nullptr;
};

// What a subscription callback gets.
template <class T>
struct Delivery {
  typename T::Reader message;
  uint64_t sequence = 0;
  uint64_t missed = 0;  // lost just before this one (drop_oldest)
};

// A subscription delivered by callback, on a thread of its own: the callback runs once per
// message, in order. stop() (or destruction) waits for the callback to return.
class SubscriptionHandle {
 public:
  SubscriptionHandle() = default;
  SubscriptionHandle(SubscriptionHandle&&) noexcept = default;
  SubscriptionHandle& operator=(SubscriptionHandle&& o) noexcept {
    if (this != &o) {
      stop();
      state_ = std::move(o.state_);
    }
    return *this;
  }
  ~SubscriptionHandle() { stop(); }

  // Stops delivering and leaves the topic. Not from inside the callback.
  void stop();
  // Whether delivery has ended: stop(), the publisher gone, or an error; status() says which
  // (UNAVAILABLE when the publisher went, CANCELLED after stop()).
  bool ended() const;
  Status status() const;
  // Waits up to `timeout` for delivery to end; true when it has.
  bool waitEnded(std::chrono::nanoseconds timeout) const;
  uint64_t dropped() const;

  struct State;

 private:
  friend class Client;
  explicit SubscriptionHandle(std::shared_ptr<State> s) : state_(std::move(s)) {}
  std::shared_ptr<State> state_;
};

namespace detail {
// Runs `deliver` for each message of `core` on a new thread.
std::shared_ptr<SubscriptionHandle::State> startDelivery(
    std::unique_ptr<SubscriptionCore> core,
    std::function<void(capnp::MessageReader&, uint64_t seq, uint64_t missed)> deliver);
}  // namespace detail

}  // namespace hms::ffi
