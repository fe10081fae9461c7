// libhmsffi: connect to the broker, serve services and call them, zero-copy over shared memory.
//
// A service contract is a Cap'n Proto `interface`. A method is named by the request method Cap'n
// Proto generates for it on the interface's Client class, e.g.
//
//     &hms::emr::PatientService::Client::getPatientRequest
//
// from which the library deduces the interface, the params and the results types, and finds the
// method's ordinal by schema reflection. Calling code fills the generated params builder, which
// lives in the channel's shared-memory ring, and reads the generated results reader, which points
// into the other ring: nothing is serialised or copied on the way.
//
//     auto client = hms::ffi::Client::connect().valueOrThrow();
//     auto patients = client->bind<PatientService>("hms.emr.patient", "^1.0").valueOrThrow();
//     auto call = patients.newCall<&PatientService::Client::getPatientRequest>().valueOrThrow();
//     call.params().setPatientId("p-1");
//     auto reply = std::move(call).send();          // Result<Reply<GetPatientResults>>
//     if (reply) use(reply->results().getPatient());
//
// Asynchronous calls (docs/calls.md): `sendAsync()` returns a Future (wait, poll, then) or takes a
// callback; many calls are in flight per Stub and complete in any order; callbacks run on the
// client's completion thread. `sendOneWay()` expects no reply. A method whose service registered
// it with ServiceDefinition::onStream answers with a Stream of items (`openStream`).
//
// Threads: a Client and its Stubs may be used from any thread. A Stub holds one channel; a call
// being built holds it until it is sent, and a synchronous send() until its Reply is destroyed
// (a second thread waits meanwhile); bind one Stub per thread for parallel synchronous calls, or
// use sendAsync. Handlers run on the client's dispatcher thread, or on a service's worker pool
// (ServiceOptions::workerThreads); stream handlers on its stream threads.
#pragma once

#include <capnp/any.h>
#include <capnp/capability.h>
#include <capnp/message.h>
#include <capnp/schema-loader.h>
#include <capnp/schema.h>
#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hms/ffi/metrics.hpp"
#include "hms/ffi/status.hpp"
#include "hms/ffi/topics.hpp"
#include "hms/ffi/tracing.hpp"
#include "hms/ffi/version.hpp"

namespace hms::ffi {

// How a thread waits for its peer (a reply, a request, ring space).
enum class WaitMode : uint8_t {
  kSpin,      // poll until the deadline; lowest latency, burns a core while waiting
  kAdaptive,  // poll for ClientOptions::spinBudget, then sleep on a futex (default)
  kBlocking,  // sleep on a futex at once
};

// How a client's channels carry messages (docs/transports.md).
enum class Transport : uint8_t {
  kAuto,          // shared memory when both ends can map it, else a Unix socketpair (default)
  kSharedMemory,  // shared memory only: connecting or opening a channel fails where it cannot be
  kSocket,        // no shared memory at all: every channel is a socketpair, the registry is read
                  // over the control socket
};

struct ClientOptions {
  // The broker's socket. Empty: $HMS_FFI_SOCKET, else $XDG_RUNTIME_DIR/hms-ffi/broker.sock, else
  // /run/hms-ffi/broker.sock (root) or /tmp/hms-ffi-<uid>/broker.sock.
  std::string socketPath;
  // Shown in the registry and the broker's log. Empty: "<program>[<pid>]".
  std::string name;
  WaitMode waitMode = WaitMode::kAdaptive;
  // How long kAdaptive polls before it sleeps. An idle process uses no CPU after it.
  std::chrono::nanoseconds spinBudget = std::chrono::microseconds(50);
  // Deadline of a call that sets none.
  std::chrono::nanoseconds defaultTimeout = std::chrono::seconds(30);
  // Bound on each control round trip to the broker (connect, register, bind).
  std::chrono::milliseconds controlTimeout = std::chrono::seconds(5);
  // Reconnect to a broker that went away (back-off 50 ms doubling to 2 s) and register the
  // client's services again. Open channels keep working meanwhile.
  bool reconnect = true;
  // kAuto defers to $HMS_FFI_TRANSPORT (auto, shm, socket), then to the broker's --transport.
  Transport transport = Transport::kAuto;
  // Users besides root and this process's own that may run the broker (e.g. a system user
  // hms-ffi); $HMS_FFI_BROKER_UID adds more (comma-separated uids or user names). Before its
  // hello, a client refuses a broker run by anyone else (PERMISSION_DENIED), and one whose socket
  // directory another user owns or may write (FAILED_PRECONDITION): such a broker may be a
  // stand-in. See docs/architecture.md, "Trust".
  std::vector<uid_t> brokerUids;
  // A token (JWT) adding claims (sub, roles, amr) to this process's kernel identity, for brokers
  // with an access policy (docs/security.md). Empty: $HMS_FFI_TOKEN, else the file named by
  // `tokenFile` or $HMS_FFI_TOKEN_FILE (read at each connect, so a renewed token is picked up
  // when the client reconnects). A token the broker refuses fails the connect (UNAUTHENTICATED).
  std::string token;
  std::string tokenFile;
  // Where this process's services write audit records of the calls their policy audits:
  // "journald", a file (JSON lines, appended) or "-" (standard error). Empty: $HMS_FFI_AUDIT_LOG,
  // else journald when it runs, else standard error.
  std::string auditLog;
  // Whether this process counts its calls in the broker's metrics (docs/observability.md):
  // on unless false here or $HMS_FFI_METRICS is "off" (or "0", "false").
  bool metrics = true;
  // Tracing (docs/observability.md). Spans of sampled traces go to `spanSink`, else, with a
  // trace directory (this or $HMS_FFI_TRACE_DIR), to DIR/<name>-<pid>.jsonl; with neither,
  // no spans are recorded (trace context is still carried). A call made with no trace context
  // (none in CallOptions, not from inside a handler) starts a new sampled trace with this
  // probability (0 to 1; or $HMS_FFI_TRACE_SAMPLE).
  std::shared_ptr<SpanSink> spanSink;
  std::string traceDir;
  double traceSampleRatio = 0;
};

struct ServiceOptions {
  std::string displayName;
  std::string description;
  // Size of each of the two rings of every channel to this service. The largest message is a
  // little under half of it (see Client::maxMessageBytes); raise it for larger messages.
  uint32_t ringBytes = 1u << 20;
  // 0: handlers run on the client's dispatcher thread, one call at a time. N: on a pool of up to
  // N worker threads (calls on different channels run in parallel; one channel stays in order),
  // each started when a call finds no idle one.
  unsigned workerThreads = 0;
  // Stream handlers (ServiceDefinition::onStream) run on a pool of up to this many threads, so
  // that a stream waiting for a slow caller holds up nobody else; streams beyond it wait their
  // turn. Started as streams need them, like the workers.
  unsigned streamThreads = 2;
};

struct CallOptions {
  // Zero: ClientOptions::defaultTimeout.
  std::chrono::nanoseconds timeout{0};
  std::optional<TraceContext> trace;
};

struct MethodInfo {
  std::string name;
  uint16_t ordinal = 0;
  uint64_t paramSchemaId = 0;
  uint64_t resultSchemaId = 0;
  bool stream = false;  // a server stream (Stub::openStream); known from the registration
};

// A live service as the registry describes it.
struct ServiceInfo {
  uint64_t key = 0;  // the broker's handle of this registration
  std::string id;
  Version version;
  uint64_t interfaceId = 0;
  std::string interfaceName;
  std::vector<MethodInfo> methods;
  std::string displayName;
  std::string description;
  uint32_t ringBytes = 0;
  uint64_t providerClientId = 0;
  pid_t providerPid = 0;
  uid_t providerUid = 0;
  std::string providerName;
};

// A contract as the broker knows it (docs/contracts.md): the registration of a live provider, or
// one the broker's store remembers after its provider left.
struct ContractInfo {
  std::string id;
  Version version;
  uint64_t interfaceId = 0;
  std::string interfaceName;
  std::vector<MethodInfo> methods;
  std::string displayName;
  std::string description;
  std::string providerName;  // the provider that registered it last
  std::chrono::system_clock::time_point firstSeen, lastSeen;
  // Client::contract() only (not Client::contracts()): the interface's schema, loaded from the
  // nodes its provider registered; valid while `loader` lives (copies share it).
  std::shared_ptr<const capnp::SchemaLoader> loader;
  capnp::InterfaceSchema schema;
};

// The message type of a topic, as its publisher advertised it.
struct TopicSchemaInfo {
  std::string topicId;
  uint64_t typeId = 0;
  std::shared_ptr<const capnp::SchemaLoader> loader;
  capnp::StructSchema schema;  // valid while `loader` lives
};

class JsonStub;  // hms/ffi/json.hpp
class JsonPublisher;
class JsonSubscription;

namespace detail {
class Dispatcher;
struct ServerCall;
struct AsyncCall;
class StreamSink;
struct PendingReply;
}  // namespace detail

// What a handler knows about the call it serves.
// Who is calling (docs/security.md): the calling process as the kernel told the broker when it
// connected (SO_PEERCRED, SO_PEERGROUPS), and the claims of the token it presented, which the
// broker verified. The caller cannot change any of it: it comes from the broker over the
// service's own control socket, not through the channel.
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::vector<gid_t> groups;       // supplementary groups
  std::string name;                // the caller's client name: informative only, it chose it
  bool authenticated = false;      // it presented a token the broker verified
  std::string subject;             // the token's sub
  std::string issuer;              // the token's iss
  std::vector<std::string> roles;  // every role the broker's policy gives it (empty: no policy)
  // A caller of another host, whose call a gateway brought in (docs/gateway.md): its host's name
  // as the link's TLS certificate carries it. Then uid, pid, name, subject and issuer are as its
  // own host knows them, gid and groups are unknown, and roles are those of its home roles this
  // host's policy accepts (remote_callers). Empty: a caller of this host.
  std::string host;
  bool hasRole(std::string_view role) const noexcept;
};

// The seed's §9.3 fields of a log line written inside a call: CallContext::logFields().
struct LogFields {
  std::string traceId;  // 32 hex, or empty outside a trace
  std::string spanId;   // 16 hex: this call's server span if recorded, else the caller's span
  std::string serviceId;
  std::string method;
  std::string userId;  // the caller's token subject, else "uid:<uid>"
  // "trace_id=… span_id=… service_id=… method=… user_id=…" (the empty ones left out).
  std::string text() const;
  // {"trace_id": …, "span_id": …, "service_id": …, "method": …, "user_id": …} (no newline).
  std::string json() const;
};

class CallContext {
 public:
  const std::string& serviceId() const noexcept { return *serviceId_; }
  uint16_t methodOrdinal() const noexcept { return method_; }
  const Caller& caller() const noexcept { return *caller_; }
  // The same as caller().pid, .uid, .name.
  pid_t callerPid() const noexcept { return caller_->pid; }
  uid_t callerUid() const noexcept { return caller_->uid; }
  const std::string& callerName() const noexcept { return caller_->name; }
  // Absolute CLOCK_MONOTONIC deadline in ns (INT64_MAX: none) and the time left until it.
  int64_t deadlineNs() const noexcept { return deadlineNs_; }
  std::chrono::nanoseconds timeLeft() const noexcept;
  // The trace context the caller sent (its span is this call's parent). Calls the handler makes
  // carry the trace by themselves (docs/observability.md).
  const std::optional<TraceContext>& trace() const noexcept { return trace_; }
  // The method's name ("" if the service does not know it).
  const std::string& methodName() const noexcept;
  // What a log line about this call should carry (the seed's §9.3).
  LogFields logFields() const;
  // True once the caller cancelled the call, its deadline passed, or the caller went away: the
  // handler may stop, its answer is not read. Cheap enough to check per item of a stream.
  bool cancelled() const noexcept;
  // Runs `fn` once when the call is cancelled (at once, on this thread, if it already is).
  // It runs on the thread that learns of the cancellation (the dispatcher), so it must be quick
  // and must not wait for the handler. Handlers running on the dispatcher thread itself learn of
  // a cancellation by the caller only when they return; use workers or streams for long work.
  void onCancel(std::function<void()> fn);

 private:
  friend class detail::Dispatcher;
  std::shared_ptr<detail::ServerCall> call_;
  const std::string* serviceId_ = nullptr;
  const Caller* caller_ = nullptr;
  uint16_t method_ = 0;
  int64_t deadlineNs_ = 0;
  std::optional<TraceContext> trace_;
  const std::string* methodName_ = nullptr;
  std::optional<TraceContext> span_;  // the context the handler runs in (its calls inherit it)
};

using Handler = std::function<Status(CallContext&, capnp::MessageReader& params,
                                     capnp::MessageBuilder& results)>;

// The answer to one call of a deferred handler (ServiceDefinition::onDeferred, serveDynamic's
// deferredHandlers), given later from any thread: the handler returns at once and the
// dispatcher goes on to the channel's next call, so that calls which wait on something else
// (another service, another host, a device) need no thread each and a caller's calls in flight
// overlap. Answer exactly once; a Responder destroyed unanswered answers INTERNAL. After the
// handler returns, its params are gone: keep a copy of what the answer needs.
class Responder {
 public:
  Responder() = default;
  Responder(Responder&&) noexcept = default;
  Responder& operator=(Responder&& o) noexcept;
  ~Responder();

  // Answers with the results `build` writes (in place in the caller's ring; `build` runs once,
  // on this thread), or, if it returns an error or throws, with that error. Returns OK once the
  // answer is out; UNAVAILABLE when nobody is left to read it (the caller went away, cancelled
  // or gave up at its deadline, or the service stopped); FAILED_PRECONDITION when this
  // Responder has answered already (or never had a call).
  Status reply(const std::function<Status(capnp::MessageBuilder& results)>& build) noexcept;
  // Answers with an error (an OK status becomes INTERNAL: use reply() for results).
  Status fail(Status status) noexcept;
  // The call's cancellation, as CallContext::cancelled() and onCancel() report it; callbacks
  // run on the thread that learns of it and must be quick.
  bool cancelled() const noexcept;
  void onCancel(std::function<void()> fn);
  // Whether it still has a call to answer.
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  friend class detail::Dispatcher;
  explicit Responder(std::shared_ptr<detail::PendingReply> p) : p_(std::move(p)) {}
  std::shared_ptr<detail::PendingReply> p_;
};

// A handler that answers through its Responder, now or later (see Responder). It may move the
// Responder out to keep it; if it returns without answering or keeping it, the call is answered
// INTERNAL; if it throws first, with the exception's status, as a Handler's would be.
using DeferredHandler =
    std::function<void(CallContext&, capnp::MessageReader& params, Responder& responder)>;
using StreamHandler =
    std::function<Status(CallContext&, capnp::MessageReader& params, detail::StreamSink& sink)>;

namespace detail {

class ClientImpl;
class CallerChannel;

// The interface, params and results of a generated `fooRequest` member of Interface::Client.
template <class F>
struct RequestFnTraits;
template <class C, class P, class R>
struct RequestFnTraits<capnp::Request<P, R> (C::*)(kj::Maybe<capnp::MessageSize>)> {
  using Interface = typename C::Calls;
  using Params = P;
  using Results = R;
};

struct MethodRef {
  bool found = false;
  uint16_t ordinal = 0;
  uint64_t paramSchemaId = 0;
  uint64_t resultSchemaId = 0;
  std::string name;
};

// Finds the method of `iface` whose params and results are the given structs.
MethodRef findMethod(capnp::InterfaceSchema iface, uint64_t paramId, uint64_t resultId);
std::vector<MethodInfo> describeMethods(capnp::InterfaceSchema iface);

template <auto RequestFn>
const MethodRef& methodRef() {
  using T = RequestFnTraits<decltype(RequestFn)>;
  static const MethodRef ref =
      findMethod(capnp::Schema::from<typename T::Interface>().asInterface(),
                 capnp::typeId<typename T::Params>(), capnp::typeId<typename T::Results>());
  return ref;
}

// The non-template call engine behind Stub, Call and Reply (client.cpp).
Result<capnp::MessageBuilder*> beginCall(CallerChannel& ch, const MethodRef& method,
                                         const CallOptions& options) noexcept;
Result<capnp::MessageReader*> finishCall(CallerChannel& ch) noexcept;
void abandonCall(CallerChannel& ch) noexcept;
void releaseReply(CallerChannel& ch) noexcept;
const ServiceInfo& boundService(const CallerChannel& ch) noexcept;
Transport boundTransport(const CallerChannel& ch) noexcept;

struct ServiceSpec {
  std::string id;
  Version version;
  capnp::InterfaceSchema schema;      // its nodes go with the registration (docs/contracts.md)
  std::vector<uint64_t> schemaNodes;  // filled by the library: a flat message of its nodes
  uint64_t interfaceId = 0;
  std::string interfaceName;
  std::vector<MethodInfo> methods;
  std::map<uint16_t, Handler> handlers;
  std::map<uint16_t, StreamHandler> streamHandlers;
  std::map<uint16_t, DeferredHandler> deferredHandlers;
  ServiceOptions options;
};

// Where a stream handler's items go (calls.cpp): one item at a time, built in place.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // Space for the next item: waits while the caller's ring is full (back-pressure). CANCELLED
  // when the call was cancelled or its deadline passed, UNAVAILABLE when the caller went away.
  virtual Result<capnp::MessageBuilder*> beginItem() noexcept = 0;
  virtual Status commitItem() noexcept = 0;
  virtual void abortItem() noexcept = 0;
};

using AsyncCallback = std::function<void(const std::shared_ptr<AsyncCall>&)>;
// Asynchronous sends of the call begun on `ch` (see beginCall). sendAsync never fails: a send
// that fails completes the call at once with the error.
// `ch` is kept by the call (a Call moves its own reference in: no count to bump per call).
std::shared_ptr<AsyncCall> sendAsync(std::shared_ptr<CallerChannel> ch, bool stream,
                                     AsyncCallback cb) noexcept;
// Whether the channel's replies go through the completion thread (stable while a call is built).
bool inAsyncMode(const CallerChannel& ch) noexcept;
Status sendOneWay(CallerChannel& ch) noexcept;
std::shared_ptr<AsyncCall> failedAsync(Status s, AsyncCallback cb) noexcept;
// Waits for the result; OK: `reader` reads it until releaseAsync.
Status awaitAsync(AsyncCall& call, capnp::MessageReader*& reader) noexcept;
bool asyncReady(const AsyncCall& call) noexcept;
bool awaitReady(AsyncCall& call, std::chrono::nanoseconds timeout) noexcept;
// The result of a completed call, for its callback.
Status takeAsync(AsyncCall& call, capnp::MessageReader*& reader) noexcept;
void releaseAsync(AsyncCall& call) noexcept;
// A Future dropped unread: its reply is released (now, or when it comes).
void dropAsync(const std::shared_ptr<AsyncCall>& call) noexcept;
Status cancelAsync(const std::shared_ptr<AsyncCall>& call) noexcept;
void thenAsync(const std::shared_ptr<AsyncCall>& call, AsyncCallback cb) noexcept;
uint64_t asyncCallId(const AsyncCall& call) noexcept;
// Streams: true and `reader` = the next item (valid until the next call), or false at the end
// with `status` set (OK: the service ended the stream normally).
bool streamNext(AsyncCall& call, capnp::MessageReader*& reader, Status& status) noexcept;

}  // namespace detail

// The results of a call, read in place in the channel's response ring. Valid while the Reply
// lives; the channel's next call waits until it is destroyed.
template <class Results>
class Reply {
 public:
  Reply(Reply&& o) noexcept
      : ch_(std::move(o.ch_)), call_(std::move(o.call_)), reader_(o.reader_) {}
  Reply& operator=(Reply&&) = delete;
  ~Reply() {
    if (ch_) detail::releaseReply(*ch_);
    if (call_) detail::releaseAsync(*call_);
  }
  // May throw kj::Exception if the service rewrites the ring under the reader (a hostile peer);
  // the message was validated when it arrived.
  typename Results::Reader results() const { return reader_->getRoot<Results>(); }

 private:
  template <class, class>
  friend class Call;
  template <class>
  friend class Future;
  Reply(std::shared_ptr<detail::CallerChannel> ch, capnp::MessageReader* reader)
      : ch_(std::move(ch)), reader_(reader) {}
  Reply(std::shared_ptr<detail::AsyncCall> call, capnp::MessageReader* reader)
      : call_(std::move(call)), reader_(reader) {}
  std::shared_ptr<detail::CallerChannel> ch_;  // a synchronous reply
  std::shared_ptr<detail::AsyncCall> call_;    // an asynchronous one
  capnp::MessageReader* reader_;
};

// The result of an asynchronous call, to come. Dropping a Future does not cancel the call (its
// reply is dropped when it arrives); cancel() does.
template <class Results>
class Future {
 public:
  Future() = default;
  Future(Future&& o) noexcept : call_(std::move(o.call_)) {}
  Future& operator=(Future&& o) noexcept {
    if (this != &o) {
      if (call_) detail::dropAsync(call_);
      call_ = std::move(o.call_);
    }
    return *this;
  }
  ~Future() {
    if (call_) detail::dropAsync(call_);
  }

  bool valid() const noexcept { return call_ != nullptr; }
  // Whether the result (or an error) is there: get() will not wait.
  bool ready() const noexcept { return call_ && detail::asyncReady(*call_); }
  // Waits up to `timeout` for the result; true when ready.
  bool waitFor(std::chrono::nanoseconds timeout) const {
    return call_ && detail::awaitReady(*call_, timeout);
  }
  // Waits for the result (the call's deadline bounds the wait). Once: the Future is spent.
  Result<Reply<Results>> get() {
    if (!call_) {
      return Status(StatusCode::kFailedPrecondition, "get() on an empty or spent Future");
    }
    auto call = std::move(call_);
    capnp::MessageReader* reader = nullptr;
    if (auto s = detail::awaitAsync(*call, reader); !s) return s;
    return Reply<Results>(std::move(call), reader);
  }
  // Runs `fn` with the result on the client's completion thread once it is there (at once if it
  // already is). The Future is spent.
  template <class F>
  void then(F fn) {
    if (!call_) return;
    detail::thenAsync(std::move(call_),
                      [fn = std::move(fn)](const std::shared_ptr<detail::AsyncCall>& c) mutable {
                        fn(Future::resultOf(c));
                      });
  }
  // Stops the call: the Future completes with CANCELLED unless the result came first; the
  // service is told and its handler sees CallContext::cancelled().
  Status cancel() { return call_ ? detail::cancelAsync(call_) : Status(); }
  uint64_t callId() const noexcept { return call_ ? detail::asyncCallId(*call_) : 0; }

  // The typed result of a completed call, for callbacks.
  static Result<Reply<Results>> resultOf(const std::shared_ptr<detail::AsyncCall>& c) {
    capnp::MessageReader* reader = nullptr;
    if (auto s = detail::takeAsync(*c, reader); !s) return s;
    return Reply<Results>(c, reader);
  }

 private:
  template <class, class>
  friend class Call;
  template <class>
  friend class Stub;
  explicit Future(std::shared_ptr<detail::AsyncCall> call) : call_(std::move(call)) {}
  std::shared_ptr<detail::AsyncCall> call_;
};

// The items of a server stream, read in place as they arrive. The service slows down when the
// caller reads slowly (nothing is dropped). Destroying a Stream that has not ended cancels it.
template <class Item>
class Stream {
 public:
  Stream(Stream&& o) noexcept
      : call_(std::move(o.call_)),
        reader_(o.reader_),
        status_(std::move(o.status_)),
        ended_(o.ended_) {}
  Stream& operator=(Stream&&) = delete;
  ~Stream() {
    if (call_ && !ended_) (void)detail::cancelAsync(call_);
  }

  // Waits for the next item: true, and item() reads it until the next call; or false once the
  // stream has ended, and status() says how (OK: the service finished it).
  bool next() {
    if (ended_ || !call_) return false;
    if (detail::streamNext(*call_, reader_, status_)) return true;
    ended_ = true;
    reader_ = nullptr;
    return false;
  }
  typename Item::Reader item() const { return reader_->getRoot<Item>(); }
  const Status& status() const noexcept { return status_; }
  bool ended() const noexcept { return ended_; }
  // Stops the stream: the service's handler sees CallContext::cancelled(); next() then returns
  // false with CANCELLED.
  Status cancel() { return call_ ? detail::cancelAsync(call_) : Status(); }

 private:
  template <class, class>
  friend class Call;
  template <class>
  friend class Stub;
  explicit Stream(std::shared_ptr<detail::AsyncCall> call) : call_(std::move(call)) {}
  std::shared_ptr<detail::AsyncCall> call_;
  capnp::MessageReader* reader_ = nullptr;
  Status status_;
  bool ended_ = false;
};

// A call being built: params() is a builder in the request ring. send() publishes it and waits for
// the reply; a Call destroyed unsent is abandoned and its ring space given back.
template <class Params, class Results>
class Call {
 public:
  Call(Call&& o) noexcept : ch_(std::move(o.ch_)), params_(o.params_) {}
  Call& operator=(Call&&) = delete;
  ~Call() {
    if (ch_) detail::abandonCall(*ch_);
  }

  typename Params::Builder params() noexcept { return params_; }

  Result<Reply<Results>> send() && {
    auto ch = std::move(ch_);
    if (detail::inAsyncMode(*ch)) {
      // On a Stub that also makes asynchronous calls, the reply comes through the completion
      // thread like theirs.
      auto call = detail::sendAsync(std::move(ch), false, nullptr);
      capnp::MessageReader* reader = nullptr;
      if (auto s = detail::awaitAsync(*call, reader); !s) return s;
      return Reply<Results>(std::move(call), reader);
    }
    auto reader = detail::finishCall(*ch);
    if (!reader.ok()) return reader.status();
    return Reply<Results>(std::move(ch), *reader);
  }

  // Sends the call and returns at once; the Future holds the result to come.
  Future<Results> sendAsync() && {
    auto ch = std::move(ch_);
    return Future<Results>(detail::sendAsync(std::move(ch), false, nullptr));
  }
  // Sends the call and returns at once; `fn(Result<Reply<Results>>)` runs exactly once on the
  // client's completion thread, with the results or the error (a send that failed included).
  template <class F>
  void sendAsync(F fn) && {
    auto ch = std::move(ch_);
    (void)detail::sendAsync(
        std::move(ch), false,
        [fn = std::move(fn)](const std::shared_ptr<detail::AsyncCall>& c) mutable {
          fn(Future<Results>::resultOf(c));
        });
  }
  // Sends the call expecting no reply: OK once it is in the channel (the service runs it in
  // order with the other calls of this Stub; its result and errors are not reported back).
  Status sendOneWay() && {
    auto ch = std::move(ch_);
    return detail::sendOneWay(*ch);
  }
  // Sends the call to a stream method (ServiceDefinition::onStream): its results type is the
  // stream's item.
  Stream<Results> openStream() && {
    auto ch = std::move(ch_);
    return Stream<Results>(detail::sendAsync(std::move(ch), true, nullptr));
  }

 private:
  template <class>
  friend class Stub;
  Call(std::shared_ptr<detail::CallerChannel> ch, typename Params::Builder params)
      : ch_(std::move(ch)), params_(params) {}
  std::shared_ptr<detail::CallerChannel> ch_;
  typename Params::Builder params_;
};

// A caller's handle on one service: one channel, re-opened on the next call if the provider went
// away (the registry is asked again for the highest version in the range).
template <class Interface>
class Stub {
 public:
  template <auto RequestFn>
  using ParamsOf = typename detail::RequestFnTraits<decltype(RequestFn)>::Params;
  template <auto RequestFn>
  using ResultsOf = typename detail::RequestFnTraits<decltype(RequestFn)>::Results;

  template <auto RequestFn>
  Result<Call<ParamsOf<RequestFn>, ResultsOf<RequestFn>>> newCall(const CallOptions& options = {}) {
    using T = detail::RequestFnTraits<decltype(RequestFn)>;
    static_assert(std::is_same_v<typename T::Interface, Interface>,
                  "the method belongs to another interface than this Stub's");
    auto builder = detail::beginCall(*ch_, detail::methodRef<RequestFn>(), options);
    if (!builder.ok()) return builder.status();
    typename T::Params::Builder params = (*builder)->template initRoot<typename T::Params>();
    return Call<typename T::Params, typename T::Results>(ch_, params);
  }

  // newCall, fill(params), send: the one-line form.
  template <auto RequestFn, class Fill>
  Result<Reply<ResultsOf<RequestFn>>> call(Fill&& fill, const CallOptions& options = {}) {
    auto c = newCall<RequestFn>(options);
    if (!c.ok()) return c.status();
    fill(c->params());
    return std::move(*c).send();
  }

  // newCall, fill(params), sendAsync: a Future, or with `done` the callback form.
  template <auto RequestFn, class Fill>
  Future<ResultsOf<RequestFn>> callAsync(Fill&& fill, const CallOptions& options = {}) {
    auto c = newCall<RequestFn>(options);
    if (!c.ok()) return failed<ResultsOf<RequestFn>>(c.status());
    fill(c->params());
    return std::move(*c).sendAsync();
  }
  template <auto RequestFn, class Fill, class Done>
  void callAsync(Fill&& fill, Done done, const CallOptions& options = {}) {
    auto c = newCall<RequestFn>(options);
    if (!c.ok()) {
      (void)detail::failedAsync(
          c.status(),
          [done = std::move(done)](const std::shared_ptr<detail::AsyncCall>& a) mutable {
            done(Future<ResultsOf<RequestFn>>::resultOf(a));
          });
      return;
    }
    fill(c->params());
    std::move(*c).sendAsync(std::move(done));
  }
  template <auto RequestFn, class Fill>
  Status callOneWay(Fill&& fill, const CallOptions& options = {}) {
    auto c = newCall<RequestFn>(options);
    if (!c.ok()) return c.status();
    fill(c->params());
    return std::move(*c).sendOneWay();
  }
  template <auto RequestFn, class Fill>
  Stream<ResultsOf<RequestFn>> openStream(Fill&& fill, const CallOptions& options = {}) {
    auto c = newCall<RequestFn>(options);
    if (!c.ok()) return failedStream<ResultsOf<RequestFn>>(c.status());
    fill(c->params());
    return std::move(*c).openStream();
  }

  // The provider the channel is bound to now.
  const ServiceInfo& service() const noexcept { return detail::boundService(*ch_); }
  // How the channel carries messages now: kSharedMemory or kSocket.
  Transport transport() const noexcept { return detail::boundTransport(*ch_); }

 private:
  friend class Client;
  explicit Stub(std::shared_ptr<detail::CallerChannel> ch) : ch_(std::move(ch)) {}
  template <class R>
  static Future<R> failed(Status s) {
    return Future<R>(detail::failedAsync(std::move(s), nullptr));
  }
  template <class R>
  static Stream<R> failedStream(Status s) {
    return Stream<R>(detail::failedAsync(std::move(s), nullptr));
  }
  std::shared_ptr<detail::CallerChannel> ch_;
};

// A stream handler's output: items built in place in the caller's ring.
template <class Item>
class StreamWriter {
 public:
  explicit StreamWriter(detail::StreamSink& sink) : sink_(sink) {}
  // Builds one item with fill(Item::Builder) and sends it. Waits while the caller has not read
  // enough of the earlier ones (back-pressure; nothing is dropped). CANCELLED once the caller
  // cancelled or the deadline passed, UNAVAILABLE when the caller went away,
  // RESOURCE_EXHAUSTED for an item larger than the channel's limit: stop writing then.
  template <class Fill>
  Status write(Fill&& fill) {
    auto b = sink_.beginItem();
    if (!b.ok()) return b.status();
    try {
      fill((*b)->template initRoot<Item>());
    } catch (...) {
      sink_.abortItem();
      throw;
    }
    return sink_.commitItem();
  }

 private:
  detail::StreamSink& sink_;
};

// The handlers of one service, by method.
template <class Interface>
class ServiceDefinition {
 public:
  // handler: Status(CallContext&, Params::Reader, Results::Builder). It may also throw
  // hms::ffi::Error to answer with that status; any other exception becomes INTERNAL.
  template <auto RequestFn, class F>
  ServiceDefinition& on(F handler) {
    using T = detail::RequestFnTraits<decltype(RequestFn)>;
    handlers_[ordinalOf<RequestFn>()] = [h = std::move(handler)](
                                            CallContext& ctx, capnp::MessageReader& params,
                                            capnp::MessageBuilder& results) -> Status {
      return h(ctx, params.getRoot<typename T::Params>(), results.initRoot<typename T::Results>());
    };
    return *this;
  }

  // A server stream: handler is Status(CallContext&, Params::Reader, StreamWriter<Results>&),
  // run on the service's stream threads. Each write() sends one item (the method's results
  // type); the returned status ends the stream. Callers use Stub::openStream.
  template <auto RequestFn, class F>
  ServiceDefinition& onStream(F handler) {
    using T = detail::RequestFnTraits<decltype(RequestFn)>;
    streamHandlers_[ordinalOf<RequestFn>()] = [h = std::move(handler)](
                                                  CallContext& ctx, capnp::MessageReader& params,
                                                  detail::StreamSink& sink) -> Status {
      StreamWriter<typename T::Results> writer(sink);
      return h(ctx, params.getRoot<typename T::Params>(), writer);
    };
    return *this;
  }

  // A call answered later (see Responder): handler is void(CallContext&, Params::Reader,
  // Responder&), and answers with responder.reply([](capnp::MessageBuilder& mb) {
  // mb.initRoot<Results>()...; return Status(); }) now or from another thread.
  template <auto RequestFn, class F>
  ServiceDefinition& onDeferred(F handler) {
    using T = detail::RequestFnTraits<decltype(RequestFn)>;
    deferredHandlers_[ordinalOf<RequestFn>()] = [h = std::move(handler)](
                                                    CallContext& ctx, capnp::MessageReader& params,
                                                    Responder& responder) {
      h(ctx, params.getRoot<typename T::Params>(), responder);
    };
    return *this;
  }

 private:
  friend class Client;
  // The ordinal of RequestFn, which must be a method of this definition's interface.
  template <auto RequestFn>
  static uint16_t ordinalOf() {
    static_assert(
        std::is_same_v<typename detail::RequestFnTraits<decltype(RequestFn)>::Interface, Interface>,
        "the method belongs to another interface than this definition's");
    return detail::methodRef<RequestFn>().ordinal;
  }
  std::map<uint16_t, Handler> handlers_;
  std::map<uint16_t, StreamHandler> streamHandlers_;
  std::map<uint16_t, DeferredHandler> deferredHandlers_;
};

// A registration: the service stays in the registry until stop() or destruction.
class ServiceHandle {
 public:
  ServiceHandle() = default;
  ServiceHandle(ServiceHandle&&) noexcept = default;
  ServiceHandle& operator=(ServiceHandle&&) noexcept;
  ~ServiceHandle();

  const std::string& id() const noexcept { return id_; }
  const Version& version() const noexcept { return version_; }
  // Leaves the registry; calls already queued are answered UNAVAILABLE. OK also while no broker
  // runs: the registration ended with the connection, and no later broker hears of it.
  Status stop();

 private:
  friend class detail::ClientImpl;
  std::weak_ptr<detail::ClientImpl> client_;
  uint64_t localKey_ = 0;
  std::string id_;
  Version version_;
};

class Client {
 public:
  // Connects to the broker (see ClientOptions::socketPath) and maps the registry.
  static Result<std::unique_ptr<Client>> connect(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Every live registration of `id`, highest version first (read from the registry segment; no
  // round trip to the broker).
  Result<std::vector<ServiceInfo>> discover(std::string_view id) const;
  // Every live registration whose id starts with `prefix`, sorted by id then version (highest
  // first).
  Result<std::vector<ServiceInfo>> discoverPrefix(std::string_view prefix) const;
  // The highest version of `id` inside `range` (see VersionRange). NOT_FOUND with what is live.
  Result<ServiceInfo> resolve(std::string_view id, std::string_view range = "*") const;

  // Opens a channel to the highest version of `id` in `range` that implements Interface.
  template <class Interface>
  Result<Stub<Interface>> bind(std::string_view id, std::string_view range = "*") {
    auto schema = capnp::Schema::from<Interface>();
    auto ch = bindImpl(id, range, schema.getProto().getId(), schema.getShortDisplayName().cStr());
    if (!ch.ok()) return ch.status();
    return Stub<Interface>(std::move(*ch));
  }

  // Registers `id` at `version` with the given handlers and serves it until the handle goes.
  template <class Interface>
  Result<ServiceHandle> serve(std::string_view id, Version version,
                              ServiceDefinition<Interface> definition,
                              ServiceOptions options = {}) {
    auto schema = capnp::Schema::from<Interface>();
    detail::ServiceSpec spec;
    spec.id = std::string(id);
    spec.version = version;
    spec.schema = schema.asInterface();
    spec.interfaceId = schema.getProto().getId();
    spec.interfaceName = schema.getShortDisplayName().cStr();
    spec.methods = detail::describeMethods(schema.asInterface());
    spec.handlers = std::move(definition.handlers_);
    spec.streamHandlers = std::move(definition.streamHandlers_);
    spec.deferredHandlers = std::move(definition.deferredHandlers_);
    spec.options = std::move(options);
    return serveImpl(std::move(spec));
  }

  // Serves an interface known only at run time (parsed from a schema file or loaded from schema
  // nodes), with handlers keyed by method ordinal: what the C ABI's hms_client_serve uses. C++
  // code with generated classes uses serve(). `schema` must stay valid while the service lives
  // (keep its loader); a method without a handler answers UNIMPLEMENTED. `deferredHandlers`
  // answer through a Responder (see there).
  Result<ServiceHandle> serveDynamic(std::string_view id, Version version,
                                     capnp::InterfaceSchema schema,
                                     std::map<uint16_t, Handler> handlers,
                                     std::map<uint16_t, StreamHandler> streamHandlers = {},
                                     ServiceOptions options = {},
                                     std::map<uint16_t, DeferredHandler> deferredHandlers = {});

  // Becomes the one publisher of topic `id`, whose messages are T (a Cap'n Proto struct).
  // ALREADY_EXISTS when the topic has a publisher (docs/pubsub.md).
  template <class T>
  Result<Publisher<T>> advertise(std::string_view id, TopicOptions options = {}) {
    auto core = detail::advertiseTopic(impl_, id, capnp::Schema::from<T>(), std::move(options));
    if (!core.ok()) return core.status();
    return Publisher<T>(std::move(*core));
  }
  // Subscribes to topic `id`, read with Subscription::next(). NOT_FOUND while nobody publishes
  // it; FAILED_PRECONDITION when its messages are not T.
  template <class T>
  Result<Subscription<T>> subscribe(std::string_view id, SubscribeOptions options = {}) {
    auto core = detail::subscribeTopic(impl_, id, capnp::typeId<T>(), options);
    if (!core.ok()) return core.status();
    return Subscription<T>(std::move(*core));
  }
  // The same, delivered to `fn(const Delivery<T>&)` on a thread of the subscription's own.
  template <class T, class F>
  Result<SubscriptionHandle> subscribe(std::string_view id, SubscribeOptions options, F fn) {
    auto core = detail::subscribeTopic(impl_, id, capnp::typeId<T>(), options);
    if (!core.ok()) return core.status();
    return SubscriptionHandle(detail::startDelivery(
        std::move(*core),
        [fn = std::move(fn)](capnp::MessageReader& r, uint64_t seq, uint64_t missed) mutable {
          fn(Delivery<T>{r.getRoot<T>(), seq, missed});
        }));
  }
  // Live topics whose id starts with `prefix`, sorted by id (from the registry).
  Result<std::vector<TopicInfo>> discoverTopics(std::string_view prefix = "") const;

  // Contracts (docs/contracts.md). Each is a round trip to the broker (blocking).
  // The contract of `id` at exactly `version`, with its schema: live or from the broker's store.
  // NOT_FOUND naming the versions the broker knows.
  Result<ContractInfo> contract(std::string_view id, const Version& version) const;
  // Every contract the broker knows whose id starts with `prefix` (live or not), sorted by id
  // then version (lowest first), without their schemas.
  Result<std::vector<ContractInfo>> contracts(std::string_view prefix = "") const;
  // The message type of topic `id` as its publisher advertised it (this broker's life).
  Result<TopicSchemaInfo> topicSchema(std::string_view id) const;

  // Call metrics of every service and method, merged by the broker from all its clients (live
  // and gone) (docs/observability.md). A round trip to the broker per page (blocking).
  Result<MetricsSnapshot> metrics() const;

  // A stub that calls the highest live version of `id` in `range` with JSON
  // (hms/ffi/json.hpp): no generated code needed, the schema comes from the broker.
  Result<JsonStub> bindJson(std::string_view id, std::string_view range = "*");
  // A gateway's (docs/gateway.md): binds for `caller`, a caller of another host (caller.host set),
  // whose grant the broker decides from its policy's remote_callers: PERMISSION_DENIED when the
  // policy does not let this client speak for callers of that host.
  Result<JsonStub> bindJsonFor(std::string_view id, std::string_view range, const Caller& caller);
  // One call with JSON in and out, for a one-off (bindJson each time: a channel open and a
  // contract fetch; keep a JsonStub for repeated calls).
  Result<std::string> callJson(std::string_view id, std::string_view range, std::string_view method,
                               std::string_view params, const CallOptions& options = {});
  // The publisher of topic `id` with JSON messages of the type its earlier publisher advertised
  // (NOT_FOUND when no publisher advertised it in this broker's life).
  Result<JsonPublisher> advertiseJson(std::string_view id, TopicOptions options = {});
  // The same with the message type given (e.g. parsed from a schema file at run time).
  Result<JsonPublisher> advertiseJson(std::string_view id, TopicSchemaInfo type,
                                      TopicOptions options = {});
  // A subscription to topic `id` whose messages come as JSON.
  Result<JsonSubscription> subscribeJson(std::string_view id, SubscribeOptions options = {});

  // The largest Cap'n Proto message a channel with rings of `ringBytes` carries.
  static uint32_t maxMessageBytes(uint32_t ringBytes) noexcept;

  uint64_t clientId() const noexcept;
  const ClientOptions& options() const noexcept;
  // Whether this client maps shared memory. False when it runs on sockets only, by setting or
  // because memfd/mmap were refused; sharedMemoryProblem() then says why.
  bool usesSharedMemory() const noexcept;
  const std::string& sharedMemoryProblem() const noexcept;

 private:
  explicit Client(std::shared_ptr<detail::ClientImpl> impl) : impl_(std::move(impl)) {}
  Result<std::shared_ptr<detail::CallerChannel>> bindImpl(std::string_view id,
                                                          std::string_view range,
                                                          uint64_t interfaceId,
                                                          std::string interfaceName,
                                                          const Caller* onBehalfOf = nullptr);
  Result<ServiceHandle> serveImpl(detail::ServiceSpec spec);
  Result<JsonStub> bindJsonImpl(std::string_view id, std::string_view range,
                                const Caller* onBehalfOf);

  std::shared_ptr<detail::ClientImpl> impl_;
};

}  // namespace hms::ffi
