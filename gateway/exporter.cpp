#include "exporter.hpp"

#include <cstdlib>

#include "log.hpp"
#include "wire.hpp"

namespace hms::ffi::gateway {
namespace {

std::string keyOf(const std::string& id, const std::string& version) {
  return id + "@" + version;
}

// The name the peer's certificate carries (its first, where it carries several): what the
// handshake checked, unlike anything the peer states. Empty without one.
std::string certifiedName(const grpc::ServerContextBase& ctx) {
  if (auto auth = ctx.auth_context()) {
    const auto ids = auth->GetPeerIdentity();
    if (!ids.empty()) return std::string(ids[0].data(), ids[0].size());
  }
  return {};
}

// Who a peer is, for the log: its certified name, the name it gave, and its address.
std::string peerOf(const grpc::ServerContextBase& ctx, const std::string& said) {
  const std::string certified = certifiedName(ctx);
  return said + " (certificate " + (certified.empty() ? "?" : certified) + ", " + ctx.peer() + ")";
}

}  // namespace

Exporter::Exporter(Client& client, const GatewayConfig& config) : client_(client), config_(config) {
  exports_.set_host(config_.host);
  refresh();
  refresher_ = std::thread([this] { refreshLoop(); });
}

Exporter::~Exporter() {
  stop();
}

void Exporter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  reapStreams(true);  // the server's Shutdown waits for their handlers
}

void Exporter::refreshLoop() {
  // Ticks of at most 100 ms: streams whose peer went are cancelled within one; the registry is
  // read again every refreshInterval.
  const auto tick =
      std::min<std::chrono::milliseconds>(config_.refreshInterval, std::chrono::milliseconds(100));
  auto lastRefresh = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  while (!stopping_) {
    changed_.wait_for(lock, tick);
    if (stopping_) break;
    lock.unlock();
    reapStreams(false);
    if (std::chrono::steady_clock::now() - lastRefresh >= config_.refreshInterval) {
      refresh();
      lastRefresh = std::chrono::steady_clock::now();
    }
    lock.lock();
  }
}

void Exporter::reapStreams(bool all) {
  // A stream handler waits in JsonStream::nextRaw for the local service's next item, where it
  // cannot see its peer cancel; this does it for the handler.
  std::lock_guard lock(streamsMu_);
  for (const auto& [stream, ctx] : streams_) {
    if (all || ctx->IsCancelled()) (void)stream->cancel();
  }
}

bool Exporter::refresh() {
  v1::Exports next;
  next.set_host(config_.host);
  std::map<std::string, Exported> byKey;
  std::map<uint64_t, std::string> nodes;
  {
    std::lock_guard lock(mu_);
    nodes = nodesByRegistration_;  // contracts already fetched (a registration never changes)
  }
  std::map<uint64_t, std::string> kept;
  std::map<std::string, v1::ExportedTopic> topics;
  for (const auto& rule : config_.exports) {
    if (!rule.topic.empty()) {
      auto found = client_.discoverTopics(rule.topic);
      if (!found.ok()) continue;
      for (const TopicInfo& t : *found) {
        // Exact ids only (discoverTopics takes a prefix), and not a topic relayed from a peer.
        if (t.id != rule.topic || t.publisherName.rfind("hms-ffi-gateway:", 0) == 0) continue;
        auto it = nodes.find(t.key);
        if (it == nodes.end()) {
          auto type = client_.topicSchema(t.id);
          if (!type.ok() || !type->loader) {
            logLine("export topic " + t.id +
                    ": its message type cannot be read: " + type.status().toString());
            continue;
          }
          it = nodes.emplace(t.key, schemaNodesBytes(*type->loader)).first;
        }
        kept.emplace(t.key, it->second);
        v1::ExportedTopic w;
        w.set_id(t.id);
        w.set_type_id(t.typeId);
        w.set_schema_nodes(it->second);
        w.set_display_name(t.displayName);
        w.set_description(t.description);
        w.set_slots(t.slots);
        w.set_max_message_bytes(t.maxMessageBytes);
        *next.add_topics() = w;
        topics.emplace(t.id, std::move(w));
      }
      continue;
    }
    auto range = VersionRange::parse(rule.range);
    auto found = client_.discover(rule.service);
    if (!range.ok() || !found.ok()) continue;  // NOT_FOUND: not running now
    for (const ServiceInfo& s : *found) {
      // A proxy of another host's service is not passed on: hosts import from the host that
      // runs it, and two gateways importing from each other would loop.
      if (s.providerName.rfind("hms-ffi-gateway:", 0) == 0) continue;
      if (!range->contains(s.version)) continue;
      const std::string version = s.version.toString();
      if (byKey.count(keyOf(s.id, version)) != 0) continue;  // an older registration of it
      auto it = nodes.find(s.key);
      if (it == nodes.end()) {
        auto contract = client_.contract(s.id, s.version);
        if (!contract.ok() || !contract->loader) {
          logLine("export " + keyOf(s.id, version) +
                  ": its contract cannot be read: " + contract.status().toString());
          continue;
        }
        it = nodes.emplace(s.key, schemaNodesBytes(*contract->loader)).first;
      }
      kept.emplace(s.key, it->second);
      Exported e;
      auto& w = *next.add_services();
      w.set_id(s.id);
      w.set_version(version);
      w.set_interface_id(s.interfaceId);
      w.set_schema_nodes(it->second);
      w.set_display_name(s.displayName);
      w.set_description(s.description);
      w.set_ring_bytes(s.ringBytes);
      for (const MethodInfo& m : s.methods) {
        auto* wm = w.add_methods();
        wm->set_name(m.name);
        wm->set_ordinal(m.ordinal);
        wm->set_stream(m.stream);
        e.methods[m.ordinal] = {m.name, m.stream};
      }
      byKey.emplace(keyOf(s.id, version), std::move(e));
    }
  }
  std::lock_guard lock(mu_);
  nodesByRegistration_ = std::move(kept);
  if (next.SerializeAsString() == exports_.SerializeAsString()) return false;
  for (const auto& [key, e] : byKey_) {
    if (byKey.count(key) == 0) {
      logLine("export " + key + ": gone from the local registry");
      if (auto it = stubs_.find(key); it != stubs_.end()) {
        for (const auto& [who, pool] : it->second) pooled_ -= pool.size();
        stubs_.erase(it);
      }
    }
  }
  for (const auto& [key, e] : byKey) {
    if (byKey_.count(key) == 0) logLine("export " + key + ": offered to peers");
  }
  for (const auto& [id, t] : topics_) {
    if (topics.count(id) == 0) logLine("export topic " + id + ": gone from the local registry");
  }
  for (const auto& [id, t] : topics) {
    if (topics_.count(id) == 0) logLine("export topic " + id + ": offered to peers");
  }
  exports_ = std::move(next);
  byKey_ = std::move(byKey);
  topics_ = std::move(topics);
  ++generation_;
  changed_.notify_all();
  return true;
}

grpc::Status Exporter::Watch(grpc::ServerContext* ctx, const v1::WatchRequest* request,
                             grpc::ServerWriter<v1::Exports>* writer) {
  logLine("peer " + peerOf(*ctx, request->host()) + " is watching the exports");
  uint64_t sent = 0;
  bool first = true;
  std::unique_lock lock(mu_);
  while (!stopping_ && !ctx->IsCancelled()) {
    if (first || generation_ != sent) {
      first = false;
      sent = generation_;
      v1::Exports copy = exports_;
      lock.unlock();
      if (!writer->Write(copy)) {
        lock.lock();
        break;
      }
      lock.lock();
      continue;
    }
    // Woken by a change or stop; the timeout only notices a peer that left.
    changed_.wait_for(lock, std::chrono::milliseconds(200));
  }
  const bool stopping = stopping_;
  lock.unlock();
  logLine("peer " + request->host() + " stopped watching");
  if (stopping) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the gateway is stopping");
  return grpc::Status::OK;
}

Result<std::string> Exporter::methodOf(const v1::CallRequest& request, bool stream) const {
  std::lock_guard lock(mu_);
  auto it = byKey_.find(keyOf(request.service_id(), request.version()));
  if (it == byKey_.end()) {
    return Status(StatusCode::kUnavailable,
                  request.service_id() + "@" + request.version() + " is not exported by " +
                      config_.host + " now (its provider has gone, or no export rule names it)",
                  request.service_id());
  }
  auto m = it->second.methods.find(request.ordinal());
  if (m == it->second.methods.end() || m->second.second != stream) {
    return Status(StatusCode::kUnimplemented,
                  "method @" + std::to_string(request.ordinal()) + " of " + request.service_id() +
                      (stream ? " is not a server stream" : " is not a call"));
  }
  return m->second.first;
}

Caller Exporter::callerOf(const grpc::ServerContextBase& ctx) const {
  Caller c;
  const auto& md = ctx.client_metadata();
  if (auto it = md.find("hms-caller-bin"); it != md.end()) {
    v1::CallerInfo info;
    if (info.ParseFromArray(it->second.data(), int(it->second.size()))) {
      c.name = info.name();
      c.uid = uid_t(info.uid());
      c.pid = pid_t(info.pid());
      c.authenticated = info.authenticated();
      c.subject = info.subject();
      c.issuer = info.issuer();
      for (const auto& r : info.roles()) c.roles.push_back(r);
    }
  }
  // The host is the one the handshake checked, never the one the peer states.
  c.host = certifiedName(ctx);
  if (c.host.empty()) c.host = "unknown";
  return c;
}

namespace {

// The pool of stubs for one caller: every field that goes into its grant.
std::string callerKey(const Caller& c) {
  std::string k = c.host + '\n' + c.name + '\n' + std::to_string(c.uid) + '\n' +
                  std::to_string(c.pid) + '\n' + c.subject + '\n' + c.issuer + '\n' +
                  (c.authenticated ? "1" : "0");
  for (const auto& r : c.roles) k += '\n' + r;
  return k;
}

// Idle channels kept for reuse, over all callers and services.
constexpr size_t kMaxPooledStubs = 64;

}  // namespace

Result<std::unique_ptr<JsonStub>> Exporter::takeStub(const std::string& id,
                                                     const std::string& version,
                                                     const Caller& caller) {
  {
    std::lock_guard lock(mu_);
    auto& pool = stubs_[keyOf(id, version)][callerKey(caller)];
    if (!pool.empty()) {
      auto stub = std::move(pool.back());
      pool.pop_back();
      --pooled_;
      return stub;
    }
  }
  // A channel of its own per remote caller: this host's policy decides its grant for that
  // caller (remote_callers), and its service sees that caller.
  auto stub = client_.bindJsonFor(id, "=" + version, caller);
  if (stub.status().code() == StatusCode::kNotFound) {
    // Exported a moment ago: its provider has just gone, as for a call already in its channel.
    return Status(StatusCode::kUnavailable,
                  id + "@" + version + " stopped running on " + config_.host, id);
  }
  if (!stub.ok()) return stub.status();
  return std::make_unique<JsonStub>(std::move(*stub));
}

void Exporter::giveBack(const std::string& id, const std::string& version, const Caller& caller,
                        std::unique_ptr<JsonStub> stub) {
  // What is let go of closes after mu_ is released (a channel's close reaches the broker):
  // `stub` when its service is no longer exported, the whole pool when it is full. `closing` is
  // declared before the lock so that it goes after it, an exception included.
  decltype(stubs_) closing;
  std::unique_lock lock(mu_);
  if (byKey_.count(keyOf(id, version)) == 0) {
    lock.unlock();
    return;
  }
  if (pooled_ >= kMaxPooledStubs) {
    // Many callers: start again rather than keep a channel per caller for ever.
    closing.swap(stubs_);
    pooled_ = 0;
  }
  stubs_[keyOf(id, version)][callerKey(caller)].push_back(std::move(stub));
  ++pooled_;
}

Result<CallOptions> Exporter::callOptions(const grpc::ServerContextBase& ctx) const {
  CallOptions o;
  const auto deadline = ctx.deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const auto left = deadline - std::chrono::system_clock::now();
    if (left <= std::chrono::nanoseconds::zero()) {
      return Status(StatusCode::kDeadlineExceeded, "the deadline passed on the way between hosts");
    }
    o.timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(left);
  }
  const auto& md = ctx.client_metadata();
  if (auto it = md.find("hms-timeout-ns"); it != md.end() && o.timeout.count() > 0) {
    // The caller's exact budget (gRPC's own deadline is rounded up).
    const std::string text(it->second.data(), it->second.size());
    char* end = nullptr;
    const long long ns = std::strtoll(text.c_str(), &end, 10);
    if (end != text.c_str() && *end == '\0' && ns > 0 && ns < o.timeout.count()) {
      o.timeout = std::chrono::nanoseconds(ns);
    }
  }
  if (auto it = md.find("traceparent"); it != md.end()) {
    auto trace = TraceContext::parse(std::string_view(it->second.data(), it->second.size()));
    if (trace.ok()) o.trace = *trace;
  }
  return o;
}

Result<Exporter::Incoming> Exporter::incoming(const grpc::ServerContextBase& ctx,
                                              const v1::CallRequest& request, bool stream) {
  auto method = methodOf(request, stream);
  if (!method.ok()) return method.status();
  Incoming in;
  in.method = std::move(*method);
  auto options = callOptions(ctx);
  if (!options.ok()) return options.status();
  in.options = std::move(*options);
  auto params = wordsOf(request.params(), "params");
  if (!params.ok()) return params.status();
  in.params = std::move(*params);
  in.caller = callerOf(ctx);
  auto stub = takeStub(request.service_id(), request.version(), in.caller);
  if (!stub.ok()) return stub.status();
  in.stub = std::move(*stub);
  return in;
}

// One call from a peer, from its arrival to gRPC's OnDone. The local call's callback answers it;
// a cancel by the peer (or the server's shutdown) cancels the local call, and the local service
// sees the cancel. The stub goes back to the pool before the answer goes out, so that the peer's
// next call finds it there and does not open a channel of its own.
class Exporter::CallReactor final : public grpc::ServerUnaryReactor {
 public:
  CallReactor(Exporter& exporter, grpc::CallbackServerContext& ctx, v1::CallReply& reply)
      : exporter_(exporter), ctx_(ctx), reply_(reply) {}

  // Sends the local call, or finishes with why it cannot be sent.
  void start(const v1::CallRequest& request) {
    auto in = exporter_.incoming(ctx_, request, false);
    if (!in.ok()) {
      Finish(toGrpc(in.status(), ctx_));
      return;
    }
    id_ = request.service_id();
    version_ = request.version();
    caller_ = std::move(in->caller);
    stub_ = std::move(in->stub);
    auto handle = stub_->callSegmentAsync(
        in->method, in->params, [this](Result<RawReply> r) { answer(std::move(r)); }, in->options);
    if (!handle.ok()) {
      answer(handle.status());
      return;
    }
    std::lock_guard lock(m_);
    handle_.emplace(std::move(*handle));
    if (cancelled_) (void)handle_->cancel();  // the peer cancelled before the handle was kept
  }

  void OnCancel() override {
    std::optional<JsonCallHandle> handle;
    {
      std::lock_guard lock(m_);
      cancelled_ = true;
      handle = handle_;
    }
    if (handle) (void)handle->cancel();  // the callback answers CANCELLED, outside m_
  }

  void OnDone() override { delete this; }

 private:
  // On the client's completion thread (or in start). Nothing of this object is touched after
  // Finish: OnDone may delete it at once.
  void answer(Result<RawReply> r) {
    grpc::Status status;
    bool poolable = true;
    try {
      answerWith(std::move(r), status, poolable);
    } catch (const std::exception& e) {
      // Finished whatever happened: an unfinished reactor would hold the call, and the
      // server's shutdown, for ever.
      status = grpc::Status(grpc::StatusCode::INTERNAL,
                            std::string("the gateway could not pass the answer on: ") + e.what());
      poolable = false;
    }
    std::unique_ptr<JsonStub> stub = std::move(stub_);  // set before the call was sent
    if (poolable && stub) exporter_.giveBack(id_, version_, caller_, std::move(stub));
    stub.reset();  // not pooled: let go of (its channel closes once the call's handle goes too)
    Finish(status);
  }

  // The answer's results or error into the reply, and whether the stub may serve again.
  void answerWith(Result<RawReply> r, grpc::Status& status, bool& poolable) {
    if (r.ok()) {
      RawReply reply = std::move(*r);  // released before the stub can go back to the pool
      reply_.set_results(segmentBytes(reply.words()));
    } else {
      // A stub is pooled again only after an answer. Its channel is closed with it when the
      // provider went (UNAVAILABLE), or when the call may still be running there (deadline,
      // cancel): the service answers one channel's calls in order, so the next call on that
      // channel would wait behind it.
      const StatusCode code = r.status().code();
      poolable = code != StatusCode::kUnavailable && code != StatusCode::kDeadlineExceeded &&
                 code != StatusCode::kCancelled;
      status = toGrpc(r.status(), ctx_);
    }
  }

  Exporter& exporter_;
  grpc::CallbackServerContext& ctx_;
  v1::CallReply& reply_;
  std::string id_, version_;
  Caller caller_;
  std::mutex m_;
  std::unique_ptr<JsonStub> stub_;
  std::optional<JsonCallHandle> handle_;
  bool cancelled_ = false;
};

grpc::ServerUnaryReactor* Exporter::Call(grpc::CallbackServerContext* ctx,
                                         const v1::CallRequest* request, v1::CallReply* reply) {
  auto* reactor = new CallReactor(*this, *ctx, *reply);
  reactor->start(*request);
  return reactor;
}

grpc::Status Exporter::OpenStream(grpc::ServerContext* ctx, const v1::CallRequest* request,
                                  grpc::ServerWriter<v1::StreamItem>* writer) {
  auto in = incoming(*ctx, *request, true);
  if (!in.ok()) return toGrpc(in.status(), *ctx);
  const Caller& caller = in->caller;
  auto stream = in->stub->openStreamSegment(in->method, in->params, in->options);
  if (!stream.ok()) {
    if (stream.status().code() != StatusCode::kUnavailable) {
      giveBack(request->service_id(), request->version(), caller, std::move(in->stub));
    }
    return toGrpc(stream.status(), *ctx);
  }
  {
    std::lock_guard lock(streamsMu_);
    streams_.emplace(&*stream, ctx);
  }
  struct Unlist {
    Exporter& e;
    JsonStream* s;
    ~Unlist() {
      std::lock_guard lock(e.streamsMu_);
      e.streams_.erase(s);
    }
  } unlist{*this, &*stream};
  {
    // Stopping between the open and the listing: the reaper's last pass may have missed it.
    std::lock_guard lock(mu_);
    if (stopping_) (void)stream->cancel();
  }
  // The stream runs on its own; the stub may carry other calls meanwhile.
  giveBack(request->service_id(), request->version(), caller, std::move(in->stub));
  // One item at a time: the next is read from the ring only once the link took this one, so a
  // slow importer holds the local service back through the ring (back-pressure end to end).
  v1::StreamItem item;
  while (stream->nextRaw()) {
    item.set_item(segmentBytes(stream->rawItem()));
    if (ctx->IsCancelled() || !writer->Write(item)) {
      (void)stream->cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the importing gateway went away");
    }
  }
  return toGrpc(stream->status(), *ctx);
}

grpc::Status Exporter::Subscribe(grpc::ServerContext* ctx, const v1::SubscribeRequest* request,
                                 grpc::ServerWriter<v1::TopicMessage>* writer) {
  {
    std::lock_guard lock(mu_);
    if (topics_.count(request->topic_id()) == 0) {
      return toGrpc(Status(StatusCode::kUnavailable, "topic " + request->topic_id() +
                                                         " is not exported by " + config_.host +
                                                         " now (no publisher, or no export rule)"),
                    *ctx);
    }
  }
  // Drops the oldest when the link falls behind: the local publisher never waits for a peer.
  SubscribeOptions o;
  o.policy = SlowConsumer::kDropOldest;
  auto sub = client_.subscribeJson(request->topic_id(), o);
  if (!sub.ok()) {
    Status s = sub.status();
    if (s.code() == StatusCode::kNotFound) {
      s = Status(StatusCode::kUnavailable,
                 "topic " + request->topic_id() + " has no publisher now");
    }
    return toGrpc(s, *ctx);
  }
  logLine("peer " + peerOf(*ctx, request->host()) + " subscribed to topic " + request->topic_id());
  v1::TopicMessage m;
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
    }
    if (ctx->IsCancelled()) break;
    Status s = sub->nextRaw(std::chrono::milliseconds(200));
    if (s.code() == StatusCode::kDeadlineExceeded) continue;  // nothing yet: look at the peer
    if (!s.isOk()) return toGrpc(s, *ctx);  // the publisher has gone (UNAVAILABLE)
    m.set_message(segmentBytes(sub->rawMessage()));
    m.set_missed(sub->missed());
    if (!writer->Write(m)) break;
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "the subscription ended");
}

}  // namespace hms::ffi::gateway
