// ClientImpl: the control connection to the broker, its reconnection, and the registry view.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "broker_trust.hpp"
#include "client_impl.hpp"
#include "hms/ffi/registry.capnp.h"
#include "log.hpp"
#include "paths.hpp"
#include "schema_nodes.hpp"

namespace hms::ffi::detail {

WaitPolicy toWaitPolicy(const ClientOptions& o) {
  WaitPolicy p;
  p.kind = o.waitMode == WaitMode::kSpin       ? WaitKind::kSpin
           : o.waitMode == WaitMode::kBlocking ? WaitKind::kBlocking
                                               : WaitKind::kAdaptive;
  p.spinNs = std::chrono::duration_cast<std::chrono::nanoseconds>(o.spinBudget).count();
  return p;
}

namespace {

std::string defaultClientName() {
  return std::string(program_invocation_short_name) + "[" + std::to_string(::getpid()) + "]";
}

ClientOptions withDefaults(ClientOptions o) {
  if (o.name.empty()) o.name = defaultClientName();
  if (o.token.empty()) {
    if (const char* t = std::getenv("HMS_FFI_TOKEN"); t && *t) o.token = t;
  }
  if (o.tokenFile.empty()) {
    if (const char* t = std::getenv("HMS_FFI_TOKEN_FILE"); t && *t) o.tokenFile = t;
  }
  if (o.auditLog.empty()) {
    if (const char* t = std::getenv("HMS_FFI_AUDIT_LOG"); t && *t) o.auditLog = t;
  }
  if (const char* m = std::getenv("HMS_FFI_METRICS");
      m && (std::string_view(m) == "off" || std::string_view(m) == "0" ||
            std::string_view(m) == "false")) {
    o.metrics = false;
  }
  if (o.traceDir.empty()) {
    if (const char* t = std::getenv("HMS_FFI_TRACE_DIR"); t && *t) o.traceDir = t;
  }
  if (o.traceSampleRatio <= 0) {
    if (const char* t = std::getenv("HMS_FFI_TRACE_SAMPLE"); t && *t) {
      char* end = nullptr;
      const double r = std::strtod(t, &end);
      if (end != t && *end == '\0' && r >= 0 && r <= 1) {
        o.traceSampleRatio = r;
      } else {
        log().warn("hms-ffi: HMS_FFI_TRACE_SAMPLE='{}' is not a probability from 0 to 1; ignored",
                   t);
      }
    }
  }
  if (o.defaultTimeout <= std::chrono::nanoseconds::zero())
    o.defaultTimeout = std::chrono::seconds(30);
  if (o.controlTimeout <= std::chrono::milliseconds::zero())
    o.controlTimeout = std::chrono::seconds(5);
  return o;
}

// The token for this connect: the option or $HMS_FFI_TOKEN, else the token file, read now so that
// a renewed token is used from the next reconnect on. Surrounding whitespace is not the token's.
Result<std::string> currentToken(const ClientOptions& o) {
  std::string token = o.token;
  if (token.empty() && !o.tokenFile.empty()) {
    UniqueFd fd(::open(o.tokenFile.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      return Status(StatusCode::kFailedPrecondition,
                    errnoText(("cannot read the token file " + o.tokenFile).c_str(), errno));
    }
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status(StatusCode::kFailedPrecondition,
                      errnoText(("cannot read the token file " + o.tokenFile).c_str(), errno));
      }
      token.append(buf, size_t(n));
      if (token.size() > 64 * 1024) {
        return Status(StatusCode::kInvalidArgument,
                      "the token file " + o.tokenFile + " is larger than 64 KiB: not a token");
      }
    }
  }
  const auto first = token.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return std::string();
  token = token.substr(first, token.find_last_not_of(" \t\r\n") - first + 1);
  return token;
}

// The grant of a channel, as the broker sent it (its lists by method ordinal).
std::shared_ptr<const ChannelGrant> readGrant(wire::ChannelOpened::Reader o) {
  auto g = std::make_shared<ChannelGrant>();
  Caller& who = g->caller;
  who.pid = pid_t(o.getCallerPid());
  who.uid = uid_t(o.getCallerUid());
  who.name = o.getCallerName().cStr();
  if (!o.hasGrant()) return g;  // a broker without grants: nothing enforced
  auto w = o.getGrant();
  g->enforced = w.getEnforced();
  for (bool a : w.getAllowed()) g->allowed.push_back(a ? 1 : 0);
  for (auto a : w.getAudit()) g->audit.push_back(uint8_t(a));
  for (auto d : w.getDenied()) g->denied.emplace_back(d.cStr());
  auto c = w.getCaller();
  if (c.getHost().size() > 0) {
    // A caller of another host, for whom a gateway (the opener above) opened the channel.
    who.host = c.getHost().cStr();
    who.uid = uid_t(c.getUid());
    who.pid = pid_t(c.getPid());
    who.name = c.getName().cStr();
  }
  who.gid = gid_t(c.getGid());
  for (uint32_t gid : c.getGroups()) who.groups.push_back(gid_t(gid));
  who.authenticated = c.getAuthenticated();
  who.subject = c.getSubject().cStr();
  who.issuer = c.getIssuer().cStr();
  for (auto r : c.getRoles()) who.roles.emplace_back(r.cStr());
  return g;
}

Status statusFromReply(wire::Reply::Reader reply) {
  auto st = reply.getStatus();
  if (st.getCode() == 0) return Status();
  return Status(statusCodeFromWire(st.getCode()), st.getMessage().cStr());
}

}  // namespace

ClientImpl::ClientImpl(ClientOptions o)
    : options(withDefaults(std::move(o))),
      policy(toWaitPolicy(options)),
      socketPath(resolveSocketPath(options.socketPath)),
      spans(options.spanSink           ? options.spanSink
            : options.traceDir.empty() ? nullptr
                                       : jsonLinesSpanSink(options.traceDir, options.name)) {}

ClientImpl::~ClientImpl() {
  shutdown();
}

// A request larger than the broker takes would end this client's connection.
static Status checkControlSize(size_t bytes) {
  if (bytes <= kMaxControlMessageBytes) return Status();
  return Status(StatusCode::kResourceExhausted,
                "the control request is " + std::to_string(bytes) + " bytes, more than the " +
                    std::to_string(kMaxControlMessageBytes) +
                    " a control message may carry (a contract this large must be split into "
                    "smaller interfaces)");
}

Result<ControlReply> ClientImpl::directRoundTrip(int sock, capnp::MessageBuilder& request,
                                                 const int* fds, size_t fdCount) {
  auto flat = encodeMessage(request);
  if (auto s = checkControlSize(flat.size() * sizeof(capnp::word)); !s) return s;
  const uint64_t id = request.getRoot<wire::ClientMessage>().getRequest().getId();
  if (auto s = sendDatagram(sock, flat.begin(), flat.size() * 8, fds, fdCount); !s) return s;
  const auto deadline = std::chrono::steady_clock::now() + options.controlTimeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Status(StatusCode::kDeadlineExceeded,
                    "the broker did not answer within " +
                        std::to_string(options.controlTimeout.count()) + " ms");
    }
    pollfd p{sock, POLLIN, 0};
    const int n = ::poll(&p, 1, int(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    auto d = receiveDatagram(sock);
    if (!d.ok()) return d.status();
    if (d->bytes.empty())
      return Status(StatusCode::kUnavailable, "the broker closed the connection");
    auto msg = DecodedMessage::decode(d->bytes);
    if (!msg.ok()) return msg.status();
    auto root = (*msg)->root<wire::BrokerMessage>();
    if (!root.isReply()) {
      // An event for what was registered before this request (a caller opening a channel to a
      // service registered again a moment ago): handled as the control loop would.
      handleMessage(std::move(d->bytes), std::move(d->fds));
      continue;
    }
    if (root.getReply().getId() != id) continue;
    ControlReply r{std::move(*msg), std::move(d->fds), session()};
    if (auto s = statusFromReply(r.reply()); !s) return s;
    return r;
  }
}

Status ClientImpl::chooseTransport() {
  transport_ = options.transport;
  const char* env = std::getenv("HMS_FFI_TRANSPORT");
  if (transport_ == Transport::kAuto && env && *env) {
    const std::string_view t = env;
    if (t == "auto") {
      transport_ = Transport::kAuto;
    } else if (t == "shm") {
      transport_ = Transport::kSharedMemory;
    } else if (t == "socket") {
      transport_ = Transport::kSocket;
    } else {
      return Status(StatusCode::kInvalidArgument,
                    "HMS_FFI_TRANSPORT='" + std::string(t) + "' is not auto, shm or socket");
    }
  }
  if (transport_ == Transport::kSocket) {
    noSharedMemory_ = "transport set to socket";
    // Its channels use sockets by choice; its metrics still go to shared memory if it can.
    mapsMetrics_ = probeSharedMemory().isOk();
    log().debug("hms-ffi: transport set to socket; this client maps no channel memory");
    return Status();
  }
  Status probe = probeSharedMemory();
  if (probe) return Status();
  if (transport_ == Transport::kSharedMemory) {
    return Status(StatusCode::kFailedPrecondition,
                  "shared memory is required (transport shm) but this process cannot map it: " +
                      probe.message() +
                      "; allow memfd_create and mmap to it, or use transport auto to fall back "
                      "to sockets");
  }
  noSharedMemory_ = probe.message();
  log().warn(
      "hms-ffi: shared memory is unavailable to this process ({}); its channels use the "
      "Unix-socket transport: same API and semantics, socket latency",
      noSharedMemory_);
  return Status();
}

Status ClientImpl::connectAndHello(UniqueFd& sock, std::shared_ptr<RegistryReader>& registry) {
  auto fd = connectSeqpacket(socketPath);
  if (!fd.ok()) return fd.status();
  // Nothing is sent to a broker that may be another user's stand-in.
  if (auto s = checkBroker(fd->get(), socketPath, brokerUids_); !s) return s;
  capnp::MallocMessageBuilder mb;
  auto req = mb.initRoot<wire::ClientMessage>().initRequest();
  req.setId(nextRequestId_++);
  auto hello = req.initHello();
  hello.setProtocolVersion(wire::PROTOCOL_VERSION);
  hello.setClientName(options.name);
  hello.setTransport(transport_ == Transport::kSharedMemory ? wire::Transport::SHARED_MEMORY
                     : transport_ == Transport::kSocket     ? wire::Transport::SOCKET
                                                            : wire::Transport::AUTO);
  hello.setNoSharedMemory(noSharedMemory_);
  hello.setMapsMetrics(mapsMetrics_ && options.metrics);
  auto token = currentToken(options);
  if (!token.ok()) return token.status();
  hello.setToken(*token);
  if (!sharedMemory()) {
    auto reply = directRoundTrip(fd->get(), mb, nullptr, 0);
    if (!reply.ok()) return reply.status();
    auto r = reply->reply();
    if (!r.isHello() || r.getHello().getSharedMemory()) {
      return Status(StatusCode::kInternal, "the broker's hello reply does not match the request");
    }
    if (options.metrics && r.getHello().getMetricsBytes() > 0 && reply->fds.size() >= 1) {
      if (auto s = metrics.attach(std::move(reply->fds[0]), r.getHello().getMetricsBytes()); !s) {
        log().warn("hms-ffi: this client's calls go uncounted: {}", s.toString());
      }
    }
    clientId.store(r.getHello().getClientId(), std::memory_order_relaxed);
    session_.fetch_add(1, std::memory_order_acq_rel);
    registry.reset();
    sock = std::move(*fd);
    return Status();
  }
  const int myDoorbell = doorbellFd_.get();
  hello.setHasDoorbell(myDoorbell >= 0);
  auto reply = directRoundTrip(fd->get(), mb, myDoorbell >= 0 ? &myDoorbell : nullptr,
                               myDoorbell >= 0 ? 1 : 0);
  if (!reply.ok()) return reply.status();
  auto r = reply->reply();
  if (!r.isHello() || reply->fds.size() < 2) {
    return Status(StatusCode::kInternal, "the broker's hello reply lacks its segments");
  }
  auto h = r.getHello();
  auto reader = RegistryReader::attach(std::move(reply->fds[0]), h.getRegistryBytes());
  if (!reader.ok()) return reader.status();
  if (myDoorbell < 0) {
    if (auto s = checkSealedAgainstShrink(reply->fds[1].get(), kDoorbellBytes, "the doorbell");
        !s) {
      return s;
    }
    doorbellFd_ = std::move(reply->fds[1]);
    auto map = Mapping::map(doorbellFd_.get(), kDoorbellBytes, true);
    if (!map.ok()) return map.status();
    const auto* db = map->as<DoorbellSegment>();
    if (db->magic != kDoorbellMagic || db->layoutVersion != kDoorbellLayoutVersion) {
      return Status(
          StatusCode::kFailedPrecondition,
          "doorbell segment has an unknown layout; use a libhmsffi of the broker's release");
    }
    doorbell_ = std::move(*map);
  }
  if (options.metrics && h.getMetricsBytes() > 0 && reply->fds.size() >= 3) {
    // Without it the client works all the same, uncounted.
    if (auto s = metrics.attach(std::move(reply->fds[2]), h.getMetricsBytes()); !s) {
      log().warn("hms-ffi: this client's calls go uncounted: {}", s.toString());
    }
  }
  clientId.store(h.getClientId(), std::memory_order_relaxed);
  // Events of this connection (handled from now on, during re-registration already) carry the new
  // session; no event of the old one can come any more, its socket is closed.
  session_.fetch_add(1, std::memory_order_acq_rel);
  registry = std::make_shared<RegistryReader>(std::move(*reader));
  sock = std::move(*fd);
  return Status();
}

Status ClientImpl::start() {
  stopFd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stopFd_) return Status(StatusCode::kInternal, errnoText("eventfd", errno));
  if (auto s = chooseTransport(); !s) return s;
  auto uids = trustedBrokerUids(options.brokerUids);
  if (!uids.ok()) return uids.status();
  brokerUids_ = std::move(*uids);
  std::shared_ptr<RegistryReader> registry;
  if (auto s = connectAndHello(sock_, registry); !s) return s;
  {
    std::lock_guard lock(registryMu_);
    registry_ = std::move(registry);
  }
  controlThread_ = std::thread([this] { controlLoop(); });
  return Status();
}

Completions& ClientImpl::completions() {
  std::call_once(completionsOnce_, [&] { completions_ = std::make_unique<Completions>(*this); });
  return *completions_;
}

void ClientImpl::shutdown() {
  if (closing_.exchange(true)) return;
  if (completions_) completions_->stop();
  if (dispatcher_) dispatcher_->stop();
  if (stopFd_) {
    const uint64_t one = 1;
    (void)!::write(stopFd_.get(), &one, sizeof(one));
  }
  if (controlThread_.joinable()) controlThread_.join();
  dispatcher_.reset();
  failAllPending(Status(StatusCode::kUnavailable, "the client is shutting down"));
  std::lock_guard lock(sendMu_);
  sock_.reset();
}

Result<ControlReply> ClientImpl::roundTrip(const BuildRequest& build, const int* fds,
                                           size_t fdCount, uint64_t onlySession) {
  if (closing_.load()) return Status(StatusCode::kUnavailable, "the client is shutting down");
  capnp::MallocMessageBuilder mb;
  auto req = mb.initRoot<wire::ClientMessage>().initRequest();
  const uint64_t id = nextRequestId_++;
  req.setId(id);
  build(req);
  auto flat = encodeMessage(mb);
  if (auto s = checkControlSize(flat.size() * sizeof(capnp::word)); !s) return s;
  auto pending = std::make_shared<Pending>();
  {
    std::lock_guard lock(pendingMu_);
    pending_[id] = pending;
  }
  Status sent;
  {
    std::lock_guard lock(sendMu_);
    if (!sock_) {
      sent = Status(StatusCode::kUnavailable, "not connected to the broker (reconnecting)");
    } else if (onlySession != 0 && session() != onlySession) {
      sent = Status(StatusCode::kUnavailable, "the broker this request was for is gone");
    } else {
      sent = sendDatagram(sock_.get(), flat.begin(), flat.size() * 8, fds, fdCount);
    }
  }
  if (sent) {
    std::unique_lock lock(pending->m);
    pending->cv.wait_for(lock, options.controlTimeout, [&] { return pending->done; });
  }
  {
    std::lock_guard lock(pendingMu_);
    pending_.erase(id);
  }
  if (!sent) return sent;
  std::lock_guard lock(pending->m);
  if (!pending->done) {
    return Status(StatusCode::kDeadlineExceeded,
                  "the broker did not answer within " +
                      std::to_string(options.controlTimeout.count()) + " ms");
  }
  if (!pending->status) return pending->status;
  if (auto s = statusFromReply(pending->reply.reply()); !s) return s;
  return std::move(pending->reply);
}

void ClientImpl::sendOneWay(const BuildRequest& build) {
  capnp::MallocMessageBuilder mb;
  auto req = mb.initRoot<wire::ClientMessage>().initRequest();
  req.setId(nextRequestId_++);
  build(req);
  auto flat = encodeMessage(mb);
  std::lock_guard lock(sendMu_);
  if (sock_) (void)sendDatagram(sock_.get(), flat.begin(), flat.size() * 8);
}

void ClientImpl::failAllPending(const Status& why) {
  std::lock_guard lock(pendingMu_);
  for (auto& [id, p] : pending_) {
    std::lock_guard pl(p->m);
    if (!p->done) {
      p->done = true;
      p->status = why;
      p->cv.notify_all();
    }
  }
}

void ClientImpl::handleMessage(std::vector<uint8_t> bytes, std::vector<UniqueFd> fds) {
  auto msg = DecodedMessage::decode(bytes);
  if (!msg.ok()) {
    log().error("hms-ffi: ignoring a malformed message from the broker: {}",
                msg.status().toString());
    return;
  }
  auto root = (*msg)->root<wire::BrokerMessage>();
  if (root.isReply()) {
    std::shared_ptr<Pending> p;
    {
      std::lock_guard lock(pendingMu_);
      auto it = pending_.find(root.getReply().getId());
      if (it == pending_.end()) return;  // a one-way request's reply, or one that timed out
      p = it->second;
    }
    std::lock_guard pl(p->m);
    p->reply = ControlReply{std::move(*msg), std::move(fds), session()};
    p->done = true;
    p->cv.notify_all();
    return;
  }
  auto ev = root.getEvent();
  if (ev.isChannelOpened()) {
    auto o = ev.getChannelOpened();
    if (fds.empty()) return;
    Dispatcher::ChannelOpenedEvent e;
    e.session = session();
    e.channelId = o.getChannelId();
    e.tag = o.getServiceTag();
    e.segmentBytes = o.getSegmentBytes();
    e.grant = readGrant(o);
    e.fd = std::make_shared<UniqueFd>(std::move(fds[0]));
    e.socket = o.getTransport() == wire::Transport::SOCKET;
    if (!e.socket && fds.size() > 1) e.requestRing = std::make_shared<UniqueFd>(std::move(fds[1]));
    if (!e.socket && fds.size() > 2)
      e.callerDoorbell = std::make_shared<UniqueFd>(std::move(fds[2]));
    e.maxMessageBytes = o.getMaxMessageBytes();
    std::lock_guard lock(servedMu_);
    if (dispatcher_) dispatcher_->channelOpened(std::move(e));
  } else if (ev.isChannelClosed()) {
    std::lock_guard lock(servedMu_);
    if (dispatcher_) dispatcher_->channelClosed(session(), ev.getChannelClosed().getChannelId());
  } else if (ev.isSubscriberAdded() || ev.isSubscriberRemoved()) {
    const uint64_t tag = ev.isSubscriberAdded() ? ev.getSubscriberAdded().getPublisherTag()
                                                : ev.getSubscriberRemoved().getPublisherTag();
    std::shared_ptr<PublisherEvents> p;
    {
      std::lock_guard lock(publishersMu_);
      if (auto it = publishers_.find(tag); it != publishers_.end()) p = it->second.lock();
    }
    if (!p) return;  // closed meanwhile: the descriptor closes with `fds`
    if (ev.isSubscriberRemoved()) {
      p->subscriberRemoved(ev.getSubscriberRemoved().getSubscriptionId());
      return;
    }
    auto a = ev.getSubscriberAdded();
    if (fds.empty()) return;
    SubscriberAddedEvent e;
    e.subscriptionId = a.getSubscriptionId();
    e.socket = a.getTransport() == wire::Transport::SOCKET;
    e.dropOldest = a.getPolicy() == wire::SlowConsumerPolicy::DROP_OLDEST;
    e.history = a.getHistory();
    e.pid = pid_t(a.getSubscriberPid());
    e.name = a.getSubscriberName().cStr();
    e.fd = std::move(fds[0]);
    p->subscriberAdded(std::move(e));
  }
}

Result<ControlReply> ClientImpl::directRequest(int sock, const BuildRequest& build, const int* fds,
                                               size_t fdCount) {
  capnp::MallocMessageBuilder mb;
  auto req = mb.initRoot<wire::ClientMessage>().initRequest();
  req.setId(nextRequestId_++);
  build(req);
  return directRoundTrip(sock, mb, fds, fdCount);
}

uint64_t ClientImpl::addPublisher(std::weak_ptr<PublisherEvents> p) {
  std::lock_guard lock(publishersMu_);
  const uint64_t tag = nextPublisherTag_++;
  publishers_.emplace(tag, std::move(p));
  return tag;
}

void ClientImpl::removePublisher(uint64_t tag) {
  std::lock_guard lock(publishersMu_);
  publishers_.erase(tag);
}

void ClientImpl::controlLoop() {
  nameThisThread("hms-control");
  for (;;) {
    int sock;
    {
      std::lock_guard lock(sendMu_);
      sock = sock_.get();
    }
    pollfd fds[2] = {{sock, POLLIN, 0}, {stopFd_.get(), POLLIN, 0}};
    const int n = ::poll(fds, 2, -1);
    if (closing_.load()) return;
    if (n < 0) continue;
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      auto d = receiveDatagram(sock);
      if (d.ok() && !d->bytes.empty()) {
        handleMessage(std::move(d->bytes), std::move(d->fds));
        continue;
      }
      // The broker went away. Open channels keep working; the control plane comes back.
      log().warn("hms-ffi: lost the connection to the broker at {}{}", socketPath,
                 options.reconnect ? "; reconnecting" : "");
      {
        std::lock_guard lock(sendMu_);
        sock_.reset();
      }
      {
        // The dead broker's registry stays mapped but no longer says what is live: discover()
        // and bind() are UNAVAILABLE until the next broker answers, as without shared memory.
        std::lock_guard lock(registryMu_);
        registry_.reset();
        view_.reset();
      }
      failAllPending(Status(StatusCode::kUnavailable, "lost the connection to the broker"));
      if (!options.reconnect || !reconnect()) return;
    }
  }
}

Status ClientImpl::registerWith(int sock, uint64_t tag, Served& served, bool direct,
                                uint64_t* session) {
  const ServiceSpec& spec = served.spec;
  auto fill = [&](wire::Request::Builder req) {
    auto r = req.initRegister();
    r.setTag(tag);
    auto d = r.initDescriptor();
    d.setId(spec.id);
    auto v = d.initVersion();
    v.setMajor(spec.version.major);
    v.setMinor(spec.version.minor);
    v.setPatch(spec.version.patch);
    d.setInterfaceId(spec.interfaceId);
    d.setInterfaceName(spec.interfaceName);
    auto methods = d.initMethods(uint(spec.methods.size()));
    for (size_t i = 0; i < spec.methods.size(); ++i) {
      methods[uint(i)].setName(spec.methods[i].name);
      methods[uint(i)].setOrdinal(spec.methods[i].ordinal);
      methods[uint(i)].setParamSchemaId(spec.methods[i].paramSchemaId);
      methods[uint(i)].setResultSchemaId(spec.methods[i].resultSchemaId);
      methods[uint(i)].setStream(spec.streamHandlers.count(spec.methods[i].ordinal) != 0);
    }
    d.setDisplayName(spec.options.displayName);
    d.setDescription(spec.options.description);
    d.setRingBytes(spec.options.ringBytes);
    capnp::FlatArrayMessageReader nodes(asWords(spec.schemaNodes));
    r.setSchemaNodes(nodes.getRoot<capnp::schema::CodeGeneratorRequest>().getNodes());
  };
  Result<ControlReply> reply = Status(StatusCode::kInternal, "unreachable");
  if (direct) {
    capnp::MallocMessageBuilder mb;
    auto req = mb.initRoot<wire::ClientMessage>().initRequest();
    req.setId(nextRequestId_++);
    fill(req);
    reply = directRoundTrip(sock, mb, nullptr, 0);
  } else {
    reply = roundTrip(fill);
  }
  if (!reply.ok()) return reply.status();
  served.brokerKey = reply->reply().getRegister().getServiceKey();
  if (session) *session = reply->session;
  return Status();
}

bool ClientImpl::reconnect() {
  auto backoff = std::chrono::milliseconds(50);
  while (!closing_.load()) {
    pollfd p{stopFd_.get(), POLLIN, 0};
    (void)::poll(&p, 1, int(backoff.count()));
    if (closing_.load()) return false;
    // Held until the new connection is in use (see registrationsMu()).
    std::unique_lock registrations(registrationsMu_);
    UniqueFd sock;
    std::shared_ptr<RegistryReader> registry;
    Status s = connectAndHello(sock, registry);
    if (s.code() == StatusCode::kPermissionDenied || s.code() == StatusCode::kFailedPrecondition) {
      // What serves the path now is not a broker this client may use (perhaps someone else's,
      // put there while the real one was gone): said once, retried like an absent broker.
      if (s.message() != refusedBroker_) {
        refusedBroker_ = s.message();
        log().error("hms-ffi: not reconnecting to {}: {}", socketPath, s.toString());
      }
    }
    if (s) {
      std::lock_guard lock(servedMu_);
      for (auto& [tag, served] : served_) {
        if (auto rs = registerWith(sock.get(), tag, served, true); !rs) {
          log().error("hms-ffi: could not register {} {} again after reconnecting: {}",
                      served.spec.id, served.spec.version.toString(), rs.toString());
        }
      }
    }
    if (s) {
      std::vector<std::shared_ptr<PublisherEvents>> publishers;
      {
        std::lock_guard lock(publishersMu_);
        for (auto& [tag, weak] : publishers_) {
          if (auto p = weak.lock()) publishers.push_back(std::move(p));
        }
      }
      for (auto& p : publishers) {
        if (auto as = p->advertiseAgain(*this, sock.get()); !as) {
          log().error("hms-ffi: could not advertise a topic again after reconnecting: {}",
                      as.toString());
        }
      }
    }
    if (s) {
      {
        std::lock_guard lock(registryMu_);
        registry_ = std::move(registry);
        view_.reset();
      }
      std::lock_guard lock(sendMu_);
      sock_ = std::move(sock);
      log().info("hms-ffi: reconnected to the broker at {}", socketPath);
      return true;
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
  return false;
}

Result<std::shared_ptr<const RegistryView>> ClientImpl::fetchRegistry(uint64_t knownGeneration) {
  // Without shared memory the snapshot comes over the control socket, in chunks; a snapshot that
  // changes between chunks is fetched again.
  for (int attempt = 0; attempt < 8; ++attempt) {
    FlatWords words;
    uint64_t generation = 0;
    uint64_t offset = 0;
    for (;;) {
      auto reply = roundTrip([&](wire::Request::Builder req) {
        auto g = req.initGetRegistry();
        g.setKnownGeneration(offset == 0 ? knownGeneration : 0);
        g.setOffset(offset);
      });
      if (!reply.ok()) return reply.status();
      auto r = reply->reply();
      if (!r.isRegistry()) {
        return Status(StatusCode::kInternal, "the broker answered getRegistry with something else");
      }
      auto chunk = r.getRegistry();
      if (chunk.getUnchanged() && view_) return std::shared_ptr<const RegistryView>(view_);
      const uint64_t total = chunk.getTotalBytes();
      if (offset == 0) {
        generation = chunk.getGeneration();
        if (total % sizeof(capnp::word) != 0 || total > (64ull << 20)) {
          return Status(StatusCode::kDataLoss, "the broker's registry snapshot has a bad size");
        }
        words.assign(total / sizeof(capnp::word), 0);
      } else if (chunk.getGeneration() != generation || total != words.size() * 8) {
        break;  // changed meanwhile: start again
      }
      auto data = chunk.getData();
      if (chunk.getOffset() != offset || data.size() > total - offset ||
          (data.size() == 0 && offset < total)) {
        return Status(StatusCode::kDataLoss, "the broker's registry chunks do not line up");
      }
      std::memcpy(reinterpret_cast<uint8_t*>(words.data()) + offset, data.begin(), data.size());
      offset += data.size();
      if (offset == total) {
        auto view = parseRegistryView(words, generation);
        if (!view.ok()) return view.status();
        view_ = std::move(*view);
        return std::shared_ptr<const RegistryView>(view_);
      }
    }
  }
  return Status(StatusCode::kUnavailable, "the registry kept changing while it was read");
}

Result<std::shared_ptr<const RegistryView>> ClientImpl::registryView() {
  std::lock_guard lock(registryMu_);
  if (!sharedMemory()) return fetchRegistry(view_ ? view_->generation : 0);
  if (!registry_) {
    return Status(StatusCode::kUnavailable, "not connected to the broker (reconnecting)");
  }
  const uint64_t gen = registry_->generation();
  if (view_ && view_->generation == gen) return view_;
  FlatWords words;
  auto copied = registry_->copySnapshot(words);
  if (!copied.ok()) return copied.status();
  auto view = parseRegistryView(words, *copied);
  if (!view.ok()) return view.status();
  view_ = std::move(*view);
  return std::shared_ptr<const RegistryView>(view_);
}

Result<ServiceHandle> ClientImpl::serve(ServiceSpec spec) {
  if (spec.options.ringBytes < kMinRingBytes || spec.options.ringBytes > kMaxRingBytes ||
      (spec.options.ringBytes & (spec.options.ringBytes - 1)) != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "ServiceOptions::ringBytes must be a power of two from 4096 to 1 GiB, not " +
                      std::to_string(spec.options.ringBytes));
  }
  spec.schemaNodes = flatNodes(spec.schema);
  uint64_t tag;
  {
    std::lock_guard lock(servedMu_);
    if (!dispatcher_) dispatcher_ = std::make_unique<Dispatcher>(*this);
    tag = nextTag_++;
    // The dispatcher knows the service before the broker can send a channel for it.
    dispatcher_->addService(tag, spec);
  }
  Served served{std::move(spec), 0};
  // A registration answered by a broker that has been replaced since (the reconnect that
  // followed did not know of it) is made again with the new one.
  for (int attempt = 0;; ++attempt) {
    uint64_t answeredOn = 0;
    Status s = registerWith(-1, tag, served, false, &answeredOn);
    if (s) {
      std::lock_guard registrations(registrationsMu_);
      // Answered by the broker connected now: registered, however many attempts it took (giving
      // up on it here would leave the broker with a registration nobody serves).
      if (answeredOn == session()) {
        ServiceHandle h;
        h.client_ = weak_from_this();
        h.localKey_ = tag;
        h.id_ = served.spec.id;
        h.version_ = served.spec.version;
        std::lock_guard lock(servedMu_);
        served_.emplace(tag, std::move(served));
        return h;
      }
      if (attempt < 3) continue;
      s = Status(StatusCode::kUnavailable, "the broker kept restarting while " + served.spec.id +
                                               " registered; serve it again");
    }
    std::lock_guard lock(servedMu_);
    dispatcher_->removeService(tag);
    return s;
  }
}

AuditLog* ClientImpl::auditLog() {
  std::call_once(auditOnce_, [this] {
    auto opened = AuditLog::open(options.auditLog, "", options.name);
    if (!opened.ok()) {
      log().error("hms-ffi: audit records of {}'s services are lost: {}", options.name,
                  opened.status().message());
      return;
    }
    audit_ = std::move(*opened);
  });
  return audit_.get();
}

Status ClientImpl::unregister(uint64_t tag) {
  uint64_t key, on;
  {
    std::lock_guard registrations(registrationsMu_);
    std::lock_guard lock(servedMu_);
    auto it = served_.find(tag);
    if (it == served_.end()) return Status();
    key = it->second.brokerKey;
    on = session();
    served_.erase(it);
  }
  // The key is that broker's: a later one may have given it to another registration.
  auto reply =
      roundTrip([&](wire::Request::Builder req) { req.setUnregister(key); }, nullptr, 0, on);
  std::lock_guard lock(servedMu_);
  if (dispatcher_) dispatcher_->removeService(tag);
  // UNAVAILABLE: the connection it was registered on is gone, and the registration with it (no
  // later broker hears of it).
  if (!reply.ok() && reply.status().code() != StatusCode::kUnavailable) return reply.status();
  return Status();
}

}  // namespace hms::ffi::detail
