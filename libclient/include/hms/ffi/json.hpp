// The JSON level (docs/contracts.md#json): calls, streams and topics with JSON in and out, for
// any service or topic the broker knows the contract of, without generated code. The request is
// built from the JSON directly in the channel's ring (or the topic's log) with the schema nodes the
// provider registered; the reply is read in place and written out as JSON. It is what `hms-ffi
// call|pub|sub` and the C ABI's JSON level use; typed C++ callers never pay for it.
//
//     auto patient = client->bindJson("hms.emr.patient", "^1.0").valueOrThrow();
//     auto json = patient.call("getPatient", R"({"patientId": "p-1001"})");
//     if (json) std::puts(json->c_str());   // {"patient":{"patientId":"p-1001",...}}
//
// The mapping (proto3's JSON mapping where Cap'n Proto has the same thing) is in
// libclient/src/json_codec.hpp and docs/contracts.md. JSON that does not fit the schema (bad
// syntax, unknown fields, wrong types, out-of-range numbers) is INVALID_ARGUMENT naming the field
// path; nothing is sent.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "hms/ffi/client.hpp"

namespace hms::ffi {

namespace detail {
class RingMessageBuilder;
}  // namespace detail

struct JsonCallOptions : CallOptions {
  bool pretty = false;  // indent the result (two spaces, a field per line)
};

// The items of a server stream as JSON, one at a time. Destroying it before the end cancels it.
class JsonStream {
 public:
  JsonStream(JsonStream&&) noexcept;
  JsonStream& operator=(JsonStream&&) = delete;
  ~JsonStream();
  // Blocking. True and item() holds the next item; false at the end, and status() says how (OK:
  // the service finished the stream).
  bool next();
  const std::string& item() const noexcept { return item_; }
  // next() without the JSON: the item's one segment (root pointer at word 0), read in place in
  // the channel's ring and valid until the next call.
  bool nextRaw();
  kj::ArrayPtr<const capnp::word> rawItem() const noexcept { return rawItem_; }
  const Status& status() const noexcept { return status_; }
  Status cancel();

 private:
  friend class JsonStub;
  JsonStream(std::shared_ptr<detail::AsyncCall> call, capnp::StructSchema itemType, bool pretty,
             std::shared_ptr<const ContractInfo> contract);
  std::shared_ptr<detail::AsyncCall> call_;
  capnp::StructSchema itemType_;
  bool pretty_ = false;
  std::shared_ptr<const ContractInfo> contract_;  // keeps itemType_'s loader alive
  std::string item_;
  kj::ArrayPtr<const capnp::word> rawItem_;
  Status status_;
  bool ended_ = false;
};

// A JSON call in flight (JsonStub::callAsync). Dropping it does not cancel the call.
class JsonCallHandle {
 public:
  // Stops the call: its callback gets CANCELLED unless the result came first.
  Status cancel();
  uint64_t callId() const noexcept;

 private:
  friend class JsonStub;
  explicit JsonCallHandle(std::shared_ptr<detail::AsyncCall> call) : call_(std::move(call)) {}
  std::shared_ptr<detail::AsyncCall> call_;
};

// The reply of a raw call (JsonStub::sendRaw): its one Cap'n Proto segment, read in place in the
// channel's ring. The stub's next call waits until it is destroyed.
class RawReply {
 public:
  RawReply(RawReply&& o) noexcept
      : ch_(std::move(o.ch_)), call_(std::move(o.call_)), words_(o.words_) {}
  RawReply& operator=(RawReply&&) = delete;
  ~RawReply();
  // The segment (root pointer at word 0).
  kj::ArrayPtr<const capnp::word> words() const noexcept { return words_; }

 private:
  friend class JsonStub;
  RawReply(std::shared_ptr<detail::CallerChannel> ch, std::shared_ptr<detail::AsyncCall> call,
           kj::ArrayPtr<const capnp::word> words)
      : ch_(std::move(ch)), call_(std::move(call)), words_(words) {}
  std::shared_ptr<detail::CallerChannel> ch_;  // a synchronous reply
  std::shared_ptr<detail::AsyncCall> call_;    // one through the completion thread
  kj::ArrayPtr<const capnp::word> words_;
};

// A bound service called by method name with JSON. Like Stub: one call at a time per JsonStub
// (use one per thread); movable, closes its channel when destroyed.
class JsonStub {
 public:
  JsonStub(JsonStub&&) noexcept = default;
  JsonStub& operator=(JsonStub&&) noexcept = default;
  ~JsonStub();

  // The bound registration and its contract (the exact version bound).
  const ServiceInfo& service() const noexcept;
  const ContractInfo& contract() const noexcept { return *contract_; }

  // Blocking: calls `method` with `params` (a JSON object) and returns the results as a JSON
  // object. UNIMPLEMENTED for a method the contract lacks, FAILED_PRECONDITION for a stream
  // method (use openStream), INVALID_ARGUMENT for JSON that does not fit, else the call's status.
  Result<std::string> call(std::string_view method, std::string_view params,
                           const JsonCallOptions& options = {});
  // Sends the call and returns at once. `done` runs exactly once, on the client's completion
  // thread, with the results as JSON or the error (a send that failed included), unless this
  // returns an error itself (an unknown method, JSON that does not fit: nothing was sent).
  // Several calls may be in flight on one JsonStub.
  Result<JsonCallHandle> callAsync(std::string_view method, std::string_view params,
                                   std::function<void(Result<std::string>)> done,
                                   const JsonCallOptions& options = {});
  // Sends a call expecting no reply: OK once it is in the channel.
  Status callOneWay(std::string_view method, std::string_view params,
                    const CallOptions& options = {});
  // The raw level (the C ABI's, docs/c-abi.md): the params of `method` written by the caller as
  // one Cap'n Proto segment (root pointer at word 0, no segment table) straight into the
  // channel's ring. loanRaw returns the zeroed space and holds the channel; sendRaw(words) sends
  // the first `words` words and waits for the reply (blocking), abandonRaw gives the space back.
  // The service checks the message like any other. Nothing may be written beyond `words`.
  Result<kj::ArrayPtr<capnp::word>> loanRaw(std::string_view method,
                                            const CallOptions& options = {});
  Result<RawReply> sendRaw(size_t words);
  void abandonRaw();
  // Params given as one Cap'n Proto segment (root pointer at word 0) that the library copies into
  // the channel, of any size up to the channel's limit: what a gateway forwards from another
  // host. callSegment waits for the reply like sendRaw; openStreamSegment opens a server stream,
  // read with JsonStream::nextRaw. A segment that is not a valid message is INVALID_ARGUMENT.
  Result<RawReply> callSegment(std::string_view method, kj::ArrayPtr<const capnp::word> params,
                               const CallOptions& options = {});
  Result<JsonStream> openStreamSegment(std::string_view method,
                                       kj::ArrayPtr<const capnp::word> params,
                                       const CallOptions& options = {});
  // callSegment without the wait, as callAsync is call's: `done` runs exactly once, on the
  // client's completion thread, with the reply (read in place until the RawReply is destroyed)
  // or the error, unless this returns an error itself (nothing was sent). The handle cancels it,
  // and the service sees the cancel: what lets a gateway pass on a cancel from another host.
  Result<JsonCallHandle> callSegmentAsync(std::string_view method,
                                          kj::ArrayPtr<const capnp::word> params,
                                          std::function<void(Result<RawReply>)> done,
                                          const CallOptions& options = {});
  // Opens a server stream (a method the service serves with onStream).
  Result<JsonStream> openStream(std::string_view method, std::string_view params,
                                const JsonCallOptions& options = {});

 private:
  friend class Client;
  struct Method {
    detail::MethodRef ref;
    capnp::StructSchema params, results;
    bool stream = false;
  };
  JsonStub(std::shared_ptr<detail::CallerChannel> ch, std::shared_ptr<const ContractInfo> contract)
      : ch_(std::move(ch)), contract_(std::move(contract)) {}
  Result<Method> method(std::string_view name) const;
  // The same, FAILED_PRECONDITION ("... is a server stream; <otherwise>") when it is not a
  // server stream (`stream`) or not a call (`!stream`).
  Result<Method> method(std::string_view name, bool stream, const char* otherwise) const;
  // Begins a call of `m` on the channel with the JSON params built in the ring.
  Status build(const Method& m, std::string_view params, const CallOptions& options);
  // The same with the params copied from a segment.
  Status copy(const Method& m, kj::ArrayPtr<const capnp::word> params, const CallOptions& options);
  // Sends the call begun and waits for its reply, read in place.
  Result<RawReply> sendAndWait();

  std::shared_ptr<detail::CallerChannel> ch_;
  std::shared_ptr<const ContractInfo> contract_;
  detail::RingMessageBuilder* raw_ = nullptr;  // the loan of loanRaw(), until sent or abandoned
};

// Copies the root struct of a one-segment message (root pointer at word 0, as the raw and segment
// levels pass them) into `into`, which allocates as it needs (a ring builder spills). Nothing is
// trusted: INVALID_ARGUMENT "<what> is not a valid message: ..." when the segment is malformed.
Status copySegment(kj::ArrayPtr<const capnp::word> segment, capnp::MessageBuilder& into,
                   std::string_view what);

// The one publisher of a topic, publishing JSON messages of the topic's type (known to the
// broker from an earlier publisher of the topic in its life). Client::advertiseJson.
class JsonPublisher {
 public:
  JsonPublisher(JsonPublisher&&) noexcept = default;
  JsonPublisher& operator=(JsonPublisher&&) noexcept = default;
  ~JsonPublisher();
  // Builds `message` (a JSON object) in the log and publishes it. May block like
  // Publisher::publish (a block_publisher subscriber that reads slowly).
  Status publish(std::string_view message);
  // The raw level (the C ABI's, docs/c-abi.md): the next message written by the caller as one
  // Cap'n Proto segment (root pointer at word 0) straight into its slot of the log. loanRaw
  // waits like publish() for the slot; publishRaw(words) publishes the first `words` words;
  // abandonRaw gives the slot back. Nothing may be written beyond `words`.
  Result<kj::ArrayPtr<capnp::word>> loanRaw();
  Status publishRaw(size_t words);
  void abandonRaw();
  // Subscribers attached now.
  size_t subscribers() const noexcept;
  const TopicSchemaInfo& type() const noexcept { return *type_; }
  Status close();

 private:
  friend class Client;
  JsonPublisher(std::unique_ptr<detail::PublisherCore> core,
                std::shared_ptr<const TopicSchemaInfo> type)
      : core_(std::move(core)), type_(std::move(type)) {}
  std::unique_ptr<detail::PublisherCore> core_;
  std::shared_ptr<const TopicSchemaInfo> type_;
  detail::RingMessageBuilder* raw_ = nullptr;  // the loan of loanRaw(), until published
};

// A subscription whose messages come as JSON. Client::subscribeJson.
class JsonSubscription {
 public:
  JsonSubscription(JsonSubscription&&) noexcept = default;
  JsonSubscription& operator=(JsonSubscription&&) noexcept = default;
  ~JsonSubscription();
  // Blocking, up to `timeout`: OK and message() holds the next message; DEADLINE_EXCEEDED when
  // none came; UNAVAILABLE once the publisher has gone and everything was read.
  Status next(std::chrono::nanoseconds timeout, bool pretty = false);
  const std::string& message() const noexcept { return message_; }
  // The raw level: the next message's one segment, read in place in the log; rawMessage() is
  // valid until the next call. Statuses as next().
  Status nextRaw(std::chrono::nanoseconds timeout);
  kj::ArrayPtr<const capnp::word> rawMessage() const noexcept { return raw_; }
  uint64_t sequence() const noexcept;
  uint64_t missed() const noexcept;  // messages lost before this one (drop_oldest)
  const TopicSchemaInfo& type() const noexcept { return *type_; }
  Status close();

 private:
  friend class Client;
  JsonSubscription(std::unique_ptr<detail::SubscriptionCore> core,
                   std::shared_ptr<const TopicSchemaInfo> type)
      : core_(std::move(core)), type_(std::move(type)) {}
  std::unique_ptr<detail::SubscriptionCore> core_;
  std::shared_ptr<const TopicSchemaInfo> type_;
  std::string message_;
  kj::ArrayPtr<const capnp::word> raw_;
};

}  // namespace hms::ffi
