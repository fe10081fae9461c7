#include "importer.hpp"

#include <cstring>
#include <set>

#include "log.hpp"
#include "wire.hpp"

namespace hms::ffi::gateway {

// The gRPC calls the proxies of one link have in flight.
struct InFlight {
  std::mutex mu;
  std::set<std::shared_ptr<grpc::ClientContext>> calls;
  bool closed = false;

  // Tracks `ctx` until `done`; false (nothing tracked) when the link is closing.
  bool add(const std::shared_ptr<grpc::ClientContext>& ctx) {
    std::lock_guard lock(mu);
    if (closed) return false;
    calls.insert(ctx);
    return true;
  }
  void done(const std::shared_ptr<grpc::ClientContext>& ctx) {
    std::lock_guard lock(mu);
    calls.erase(ctx);
  }
  void cancelAll(bool close) {
    std::lock_guard lock(mu);
    closed = closed || close;
    for (const auto& c : calls) c->TryCancel();
  }
  void reopen() {
    std::lock_guard lock(mu);
    closed = false;
  }
};

namespace {

// What a proxy's handlers need; shared by the handlers of one proxy.
struct Route {
  std::shared_ptr<v1::Gateway::Stub> stub;
  std::shared_ptr<InFlight> inFlight;
  std::string peer;      // the peer's host name
  std::string thisHost;  // ours, for the exporter's log and policy
  std::string serviceId;
  std::string version;
};

// The gRPC context of one forwarded call: the caller's deadline, trace and identity, cancelled
// when the local call is.
Result<std::shared_ptr<grpc::ClientContext>> prepare(const Route& r, CallContext& ctx) {
  auto g = std::make_shared<grpc::ClientContext>();
  if (ctx.deadlineNs() != INT64_MAX) {
    const auto left = ctx.timeLeft();
    if (left <= std::chrono::nanoseconds::zero()) {
      return Status(StatusCode::kDeadlineExceeded, "the call's deadline passed before it left");
    }
    g->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(left));
    // gRPC rounds the timeout it sends up to three digits (5 s may arrive as 5.009 s); the
    // exact budget goes along, so that the remote service never gets more time than the caller.
    g->AddMetadata("hms-timeout-ns", std::to_string(left.count()));
  }
  if (auto tp = traceparentOf(ctx); !tp.empty()) g->AddMetadata("traceparent", tp);
  g->AddMetadata("hms-caller-bin", callerInfo(ctx.caller(), r.thisHost).SerializeAsString());
  if (!r.inFlight->add(g)) {
    return Status(StatusCode::kUnavailable, "the link to " + r.peer + " is closing", r.serviceId);
  }
  ctx.onCancel([g] { g->TryCancel(); });
  return g;
}

// The status of a forwarded call that failed on the way. A call cut short because the caller's
// deadline (CLOCK_MONOTONIC ns, INT64_MAX: none) passed (its cancel reached gRPC first, or
// gRPC's own deadline did) is DEADLINE_EXCEEDED, as the same call on one host would be.
Status failure(const Route& r, int64_t deadlineNs, const grpc::Status& gs,
               const grpc::ClientContext& g) {
  const bool cut = gs.error_code() == grpc::StatusCode::CANCELLED ||
                   gs.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  if (cut && deadlineNs != INT64_MAX && now >= deadlineNs) {
    return Status(StatusCode::kDeadlineExceeded,
                  "the call's deadline passed while it was at " + r.peer, r.serviceId);
  }
  return fromGrpc(gs, g, r.peer);
}

v1::CallRequest request(const Route& r, const CallContext& ctx, capnp::MessageReader& params) {
  v1::CallRequest req;
  req.set_service_id(r.serviceId);
  req.set_version(r.version);
  req.set_ordinal(ctx.methodOrdinal());
  req.set_params(messageBytes(params));
  return req;
}

// One call on its way to the peer: what gRPC writes into and the Responder that answers it.
struct Forwarded {
  std::shared_ptr<grpc::ClientContext> g;
  v1::CallRequest request;
  v1::CallReply reply;
  Responder responder;
  int64_t deadlineNs = INT64_MAX;
};

// The answer of a forwarded call, once the peer's came (or the call failed on the way).
void answer(const Route& r, Forwarded& f, const grpc::Status& gs) {
  r.inFlight->done(f.g);
  if (!gs.ok()) {
    (void)f.responder.fail(failure(r, f.deadlineNs, gs, *f.g));
    return;
  }
  auto words = wordsOf(f.reply.results(), "the results");
  if (!words.ok()) {
    (void)f.responder.fail(words.status());
    return;
  }
  (void)f.responder.reply([&](capnp::MessageBuilder& results) {
    return copySegment(*words, results, "the results that came over the link");
  });
}

// A call is started on the proxy's dispatcher and answered from gRPC's callback when the peer's
// answer comes: no thread waits for the link, and a caller's calls in flight cross it together.
// A one-way call (nobody reads its answer) is sent and waited for on the proxy's workers, one at
// a time per caller, so that one-way calls arrive in the order they were sent.
DeferredHandler callForwarder(std::shared_ptr<const Route> route) {
  return [route](CallContext& ctx, capnp::MessageReader& params, Responder& responder) {
    auto g = prepare(*route, ctx);
    if (!g.ok()) {
      (void)responder.fail(g.status());
      return;
    }
    auto f = std::make_shared<Forwarded>();
    f->g = std::move(*g);
    f->request = request(*route, ctx, params);
    f->deadlineNs = ctx.deadlineNs();
    if (!responder) {
      const grpc::Status gs = route->stub->Call(f->g.get(), f->request, &f->reply);
      answer(*route, *f, gs);
      return;
    }
    f->responder = std::move(responder);
    route->stub->async()->Call(f->g.get(), &f->request, &f->reply,
                               [route, f](grpc::Status gs) { answer(*route, *f, gs); });
  };
}

StreamHandler streamForwarder(std::shared_ptr<const Route> route) {
  return
      [route](CallContext& ctx, capnp::MessageReader& params, detail::StreamSink& sink) -> Status {
        auto g = prepare(*route, ctx);
        if (!g.ok()) return g.status();
        auto reader = route->stub->OpenStream(g->get(), request(*route, ctx, params));
        v1::StreamItem item;
        Status failed;
        // An item is read from the link only once the caller's ring took the last one: a slow
        // caller stops the reads, gRPC's flow control stops the peer's writes, and the peer stops
        // reading its service's ring.
        while (failed.isOk() && reader->Read(&item)) {
          auto words = wordsOf(item.item(), "a stream item");
          if (!words.ok()) {
            failed = words.status();
            break;
          }
          auto b = sink.beginItem();
          if (!b.ok()) {
            failed = b.status();
            break;
          }
          if (Status s = copySegment(*words, **b, "a stream item that came over the link"); !s) {
            sink.abortItem();
            failed = s;
            break;
          }
          failed = sink.commitItem();
        }
        if (!failed.isOk()) (*g)->TryCancel();
        const grpc::Status gs = reader->Finish();
        route->inFlight->done(*g);
        if (!failed.isOk()) return failed;
        return gs.ok() ? Status() : failure(*route, ctx.deadlineNs(), gs, **g);
      };
}

}  // namespace

PeerLink::PeerLink(const GatewayConfig& config, PeerConfig peer,
                   std::shared_ptr<grpc::ChannelCredentials> credentials)
    : config_(config), peer_(std::move(peer)), inFlight_(std::make_shared<InFlight>()) {
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(peer_.tlsName.empty() ? peer_.host : peer_.tlsName);
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  // A peer host that vanishes without closing its connections is noticed within ~15 s.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Reconnecting is this link's business (its own back-off), not the channel's.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, int(config_.backoffMin.count()));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, int(config_.backoffMax.count()));
  // Two connections: the watch and the topic relays block in reads for as long as the link
  // lives, and a thread blocked on a connection polls it for every call on it, so a call's reply
  // would hop through that thread. Calls get a connection of their own (local subchannel pools
  // keep gRPC from sharing one connection between the two channels).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  stub_ = v1::Gateway::NewStub(grpc::CreateCustomChannel(peer_.address, credentials, args));
  callStub_ = v1::Gateway::NewStub(grpc::CreateCustomChannel(peer_.address, credentials, args));
  thread_ = std::thread([this] { run(); });
}

PeerLink::~PeerLink() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (watch_ != nullptr) watch_->TryCancel();
  }
  wake_.notify_all();
  inFlight_->cancelAll(true);
  if (thread_.joinable()) thread_.join();
}

bool PeerLink::sleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, d, [this] { return stopping_; });
  return !stopping_;
}

bool PeerLink::connectLocal() {
  if (client_) return true;
  ClientOptions o;
  o.socketPath = config_.brokerSocket;
  o.name = "hms-ffi-gateway:" + peer_.host;
  // Every call through the gateway waits on the network anyway: a thread that spun for the
  // reply would only take a core from the gRPC threads and the services (two cores here).
  o.waitMode = WaitMode::kBlocking;
  auto c = Client::connect(o);
  if (!c.ok()) {
    logLine("peer " + peer_.host +
            ": the local broker cannot be reached: " + c.status().toString());
    return false;
  }
  client_ = std::move(*c);
  return true;
}

void PeerLink::run() {
  auto backoff = config_.backoffMin;
  std::string lastFailure;
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
    }
    if (connectLocal()) {
      grpc::ClientContext ctx;
      {
        std::lock_guard lock(mu_);
        if (stopping_) break;
        watch_ = &ctx;
      }
      v1::WatchRequest req;
      req.set_host(config_.host);
      inFlight_->reopen();
      auto reader = stub_->Watch(&ctx, req);
      v1::Exports exports;
      bool connected = false;
      while (reader->Read(&exports)) {
        if (!connected) {
          connected = true;
          lastFailure.clear();
          backoff = config_.backoffMin;
          logLine("peer " + peer_.host + ": connected to " + peer_.address + " (" + exports.host() +
                  ")");
        }
        reconcile(exports);
      }
      const grpc::Status st = reader->Finish();
      {
        std::lock_guard lock(mu_);
        watch_ = nullptr;
      }
      const std::string why = std::to_string(int(st.error_code())) + " " + st.error_message();
      if (connected) {
        dropAll("the link ended (" + st.error_message() + ")");
      } else if (why != lastFailure) {
        // Logged once per distinct failure, not at every retry.
        logLine("peer " + peer_.host + ": cannot connect to " + peer_.address + ": " +
                std::string(statusCodeName(statusCodeFromWire(uint32_t(st.error_code())))) + ": " +
                st.error_message());
        lastFailure = why;
      }
    }
    if (!sleepFor(backoff)) break;
    backoff = std::min(backoff * 2, config_.backoffMax);
  }
  dropAll("the gateway is stopping");
}

void PeerLink::reconcile(const v1::Exports& exports) {
  std::set<std::string> seen;
  for (const auto& s : exports.services()) {
    const std::string key = s.id() + "@" + s.version();
    seen.insert(key);
    if (proxies_.count(key) != 0) continue;
    auto p = makeProxy(s);
    if (!p.ok()) {
      logLine("peer " + peer_.host + ": cannot import " + key + ": " + p.status().toString());
      continue;
    }
    proxies_.emplace(key, std::move(*p));
    logLine("peer " + peer_.host + ": imported " + key);
  }
  std::set<std::string> seenTopics;
  for (const auto& t : exports.topics()) {
    seenTopics.insert(t.id());
    if (topics_.count(t.id()) != 0) continue;
    auto imported = importTopic(t);
    if (!imported.ok()) {
      logLine("peer " + peer_.host + ": cannot import topic " + t.id() + ": " +
              imported.status().toString());
      continue;
    }
    topics_.emplace(t.id(), std::move(*imported));
    logLine("peer " + peer_.host + ": imported topic " + t.id());
  }
  for (auto it = topics_.begin(); it != topics_.end();) {
    if (seenTopics.count(it->first) != 0) {
      ++it;
      continue;
    }
    withdrawTopic(*it->second);
    logLine("peer " + peer_.host + ": withdrew topic " + it->first);
    it = topics_.erase(it);
  }
  for (auto it = proxies_.begin(); it != proxies_.end();) {
    if (seen.count(it->first) != 0) {
      ++it;
      continue;
    }
    (void)it->second.handle.stop();
    logLine("peer " + peer_.host + ": withdrew " + it->first);
    it = proxies_.erase(it);
  }
}

Result<PeerLink::Proxy> PeerLink::makeProxy(const v1::ExportedService& s) {
  auto version = Version::parse(s.version());
  if (!version.ok()) return version.status();
  Proxy p;
  p.loader = std::make_shared<capnp::SchemaLoader>();
  if (Status st = loadSchemaNodes(s.schema_nodes(), *p.loader); !st) return st;
  capnp::InterfaceSchema schema;
  KJ_IF_MAYBE (found, p.loader->tryGet(s.interface_id())) {
    if (found->getProto().which() != capnp::schema::Node::INTERFACE) {
      return Status(StatusCode::kInvalidArgument, "its interface id names no interface");
    }
    schema = found->asInterface();
  } else {
    return Status(StatusCode::kInvalidArgument, "its schema nodes lack its interface");
  }
  std::map<uint16_t, DeferredHandler> calls;
  std::map<uint16_t, StreamHandler> streams;
  auto route = std::make_shared<Route>(
      Route{callStub_, inFlight_, peer_.host, config_.host, s.id(), s.version()});
  for (const auto& m : s.methods()) {
    if (m.stream()) {
      streams[uint16_t(m.ordinal())] = streamForwarder(route);
    } else {
      calls[uint16_t(m.ordinal())] = callForwarder(route);
    }
  }
  ServiceOptions o;
  o.displayName = s.display_name();
  o.description = s.description();
  if (s.ring_bytes() != 0) o.ringBytes = s.ring_bytes();
  // Calls need no thread while they cross (callForwarder); the workers send one-way calls, and
  // each stream holds a stream thread while it lasts.
  o.workerThreads = 2;
  o.streamThreads = 4;
  auto handle =
      client_->serveDynamic(s.id(), *version, schema, {}, std::move(streams), o, std::move(calls));
  if (!handle.ok()) return handle.status();
  p.handle = std::move(*handle);
  return p;
}

Result<std::unique_ptr<PeerLink::Topic>> PeerLink::importTopic(const v1::ExportedTopic& t) {
  TopicSchemaInfo type;
  type.topicId = t.id();
  type.typeId = t.type_id();
  auto loader = std::make_shared<capnp::SchemaLoader>();
  if (Status st = loadSchemaNodes(t.schema_nodes(), *loader); !st) return st;
  KJ_IF_MAYBE (found, loader->tryGet(t.type_id())) {
    if (found->getProto().which() != capnp::schema::Node::STRUCT) {
      return Status(StatusCode::kInvalidArgument, "its type id names no struct");
    }
    type.schema = found->asStruct();
  } else {
    return Status(StatusCode::kInvalidArgument, "its schema nodes lack its message type");
  }
  type.loader = std::move(loader);
  TopicOptions o;
  if (t.slots() != 0) o.slots = t.slots();
  if (t.max_message_bytes() != 0) o.maxMessageBytes = t.max_message_bytes();
  o.displayName = t.display_name();
  o.description = t.description();
  // A subscriber here that blocks the publisher holds the relay (and through the link's flow
  // control, the peer's drop-oldest subscription) at most this long per message.
  o.publishTimeout = std::chrono::seconds(5);
  auto publisher = client_->advertiseJson(t.id(), std::move(type), o);
  if (!publisher.ok()) return publisher.status();
  auto topic = std::make_unique<Topic>();
  topic->publisher = std::make_unique<JsonPublisher>(std::move(*publisher));
  topic->subscription = std::make_shared<grpc::ClientContext>();
  Topic* raw = topic.get();
  topic->relay = std::thread([this, raw, id = t.id()] { relay(*raw, id); });
  return topic;
}

void PeerLink::relay(Topic& topic, const std::string& id) {
  v1::SubscribeRequest req;
  req.set_topic_id(id);
  req.set_host(config_.host);
  auto reader = stub_->Subscribe(topic.subscription.get(), req);
  v1::TopicMessage m;
  uint64_t lost = 0;
  // Blocking publishes (a block_publisher subscriber here) stop the reads, and gRPC's flow
  // control then the peer's writes; the peer's own subscription drops rather than wait.
  while (reader->Read(&m)) {
    lost += m.missed();
    auto words = wordsOf(m.message(), "a topic message");
    if (!words.ok()) {
      logLine("topic " + id + " from " + peer_.host + ": " + words.status().toString());
      continue;
    }
    auto space = topic.publisher->loanRaw();
    if (!space.ok()) {
      logLine("topic " + id + " from " + peer_.host + ": " + space.status().toString());
      break;
    }
    if (words->size() > space->size()) {
      topic.publisher->abandonRaw();
      logLine("topic " + id + " from " + peer_.host + ": a message of " +
              std::to_string(words->size() * sizeof(capnp::word)) +
              " bytes does not fit the topic's slots; dropped");
      continue;
    }
    std::memcpy(space->begin(), words->begin(), words->size() * sizeof(capnp::word));
    if (Status s = topic.publisher->publishRaw(words->size()); !s) {
      logLine("topic " + id + " from " + peer_.host + ": " + s.toString());
    }
  }
  const grpc::Status st = reader->Finish();
  if (lost != 0) {
    logLine("topic " + id + " from " + peer_.host + ": " + std::to_string(lost) +
            " messages were dropped on the way (the link was slower than the publisher)");
  }
  if (!st.ok() && st.error_code() != grpc::StatusCode::CANCELLED) {
    logLine("topic " + id + " from " + peer_.host +
            ": the subscription ended: " + st.error_message());
  }
}

void PeerLink::withdrawTopic(Topic& topic) {
  topic.subscription->TryCancel();
  if (topic.relay.joinable()) topic.relay.join();
  (void)topic.publisher->close();
}

void PeerLink::dropAll(const std::string& why) {
  for (auto& [id, t] : topics_) {
    withdrawTopic(*t);
    logLine("peer " + peer_.host + ": withdrew topic " + id + ": " + why);
  }
  topics_.clear();
  inFlight_->cancelAll(false);
  for (auto& [key, p] : proxies_) {
    (void)p.handle.stop();
    logLine("peer " + peer_.host + ": withdrew " + key + ": " + why);
  }
  proxies_.clear();
}

}  // namespace hms::ffi::gateway
