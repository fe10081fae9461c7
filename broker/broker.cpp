#include "broker.hpp"

#include <capnp/serialize.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "atomics.hpp"
#include "broker_trust.hpp"
#include "codec.hpp"
#include "contract_check.hpp"
#include "hms/ffi/registry.capnp.h"
#include "paths.hpp"
#include "request_check.hpp"
#include "shm_layout.hpp"
#include "topic_log.hpp"
#include "wait.hpp"

namespace hms::ffi::broker {

using detail::UniqueFd;

namespace {

constexpr uint64_t kListenTag = UINT64_MAX;
constexpr uint64_t kSignalTag = UINT64_MAX - 1;
constexpr uint64_t kStopTag = UINT64_MAX - 2;

bool validServiceId(std::string_view id) {
  if (id.empty() || id.size() > 200 || id.front() == '.' || id.back() == '.') return false;
  char prev = 0;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

std::string versionText(uint32_t a, uint32_t b, uint32_t c) {
  return std::to_string(a) + "." + std::to_string(b) + "." + std::to_string(c);
}

// The first id of this broker life: a random, non-zero 32-bit epoch in the high half, the count in
// the low half. Two lives share numbers only if they drew the same epoch (1 in 2^32); a life would
// have to hand out 2^32 ids of one kind to run into another epoch.
uint64_t idEpoch() {
  uint32_t r = 0;
  if (::getrandom(&r, sizeof(r), 0) != ssize_t(sizeof(r))) {
    // No entropy to be had: the clock still differs from one life to the next.
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    r = uint32_t(ts.tv_sec * 1000003) ^ uint32_t(ts.tv_nsec) ^ uint32_t(::getpid());
  }
  return (uint64_t(r == 0 ? 1 : r) << 32) + 1;
}

int64_t unixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A reader over a flat message the broker made itself (a stored contract, a topic schema).
capnp::FlatArrayMessageReader readFlat(const detail::FlatWords& words) {
  return capnp::FlatArrayMessageReader(detail::asWords(words), detail::controlReaderOptions());
}

template <class Grant>
std::string firstDenial(const Grant& g) {
  for (const auto& why : g.denied) {
    if (!why.empty()) return why;
  }
  return "it has no methods";
}

detail::FlatWords toFlat(capnp::MessageBuilder& mb) {
  return detail::toFlatWords(capnp::messageToFlatArray(mb));
}

}  // namespace

Broker::Broker(BrokerOptions options) : options_(std::move(options)) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    maxQueuedFds_ = std::max<size_t>(64, size_t(lim.rlim_cur) / 2);
  } else {
    maxQueuedFds_ = size_t(1) << 20;
  }
  socketPath_ = detail::resolveSocketPath(options_.socketPath);
  const uint64_t first = idEpoch();
  nextServiceKey_ = nextChannelId_ = nextTopicKey_ = nextSubscriptionId_ = first;
}

Broker::~Broker() {
  if (socketCreated_) ::unlink(socketPath_.c_str());
}

Status Broker::start() {
  // Signals first: from the moment the socket exists, a SIGTERM must mean a graceful stop.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  signalFd_.reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  // Socket activation (hms-ffid.socket): systemd made the socket, with its mode and group; its
  // path is the one served, whatever --socket says.
  auto activated = activatedSocket();
  if (!activated.ok()) return activated.status();
  if (*activated >= 0) {
    listenFd_.reset(*activated);
    activated_ = true;
    const std::string path = boundPath(*activated);
    if (!path.empty() && path != socketPath_) {
      spdlog::info("serving the socket systemd passed, {} (not {})", path, socketPath_);
      socketPath_ = path;
    }
  }
  namespace fs = std::filesystem;
  const fs::path path(socketPath_);
  std::error_code ec;
  if (path.has_parent_path()) {
    const bool existed = fs::exists(path.parent_path(), ec);
    fs::create_directories(path.parent_path(), ec);
    if (ec) {
      return Status(StatusCode::kFailedPrecondition, "cannot create the runtime directory " +
                                                         path.parent_path().string() + ": " +
                                                         ec.message());
    }
    // Clients refuse a socket directory that others may write (broker_trust.hpp), whatever the
    // umask made of one created here.
    if (!existed) {
      if (auto s = applySocketAccess(path.parent_path().string(), true); !s) return s;
    }
  }
  // A socket systemd passed is owned already: systemd runs one instance of the unit.
  if (!activated_) {
    if (auto s = lockSocketPath(); !s) return s;
  }

  if (auto s = openContractStore(); !s) return s;
  if (auto s = loadPolicy(); !s) return s;
  if (auto s = openAuditLog(); !s) return s;

  auto registry = detail::RegistryWriter::create(options_.registryBytes, uint32_t(::getpid()));
  if (!registry.ok()) return registry.status();
  registry_ = std::make_unique<detail::RegistryWriter>(std::move(*registry));
  publishRegistry();

  stopFd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  epollFd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!signalFd_ || !stopFd_ || !epollFd_) {
    return Status(StatusCode::kInternal, detail::errnoText("signalfd/eventfd/epoll", errno));
  }

  // The socket last: once it accepts, everything a client is served from exists (tests and
  // supervisors take an accepting socket for a broker that is up). An activated socket has
  // queued its first clients already; they are served from here on.
  if (activated_) return finishStart();
  struct stat st;
  if (::lstat(socketPath_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status(
          StatusCode::kFailedPrecondition,
          socketPath_ + " exists and is not a socket; remove it or choose another --socket");
    }
    spdlog::info("removing stale socket {} left by a broker that is gone", socketPath_);
    ::unlink(socketPath_.c_str());
  }
  // Bound and listening under a temporary name, then renamed into place: the socket appears
  // only once it accepts, with its mode set (a client that sees it never gets ECONNREFUSED).
  std::string bindPath = socketPath_ + "." + std::to_string(::getpid()) + ".new";
  if (bindPath.size() >= sizeof(sockaddr_un::sun_path)) bindPath = socketPath_;
  ::unlink(bindPath.c_str());
  auto listen = detail::listenSeqpacket(bindPath);
  if (!listen.ok()) return listen.status();
  listenFd_ = std::move(*listen);
  if (auto s = applySocketAccess(bindPath, false); !s) {
    ::unlink(bindPath.c_str());
    return s;
  }
  if (bindPath != socketPath_ && ::rename(bindPath.c_str(), socketPath_.c_str()) != 0) {
    const int e = errno;
    ::unlink(bindPath.c_str());
    return Status(StatusCode::kUnavailable,
                  detail::errnoText(("rename " + bindPath + " to " + socketPath_).c_str(), e));
  }
  socketCreated_ = true;
  if (auto s = detail::checkSocketDirectory(socketPath_, {0, ::geteuid()}); !s) {
    spdlog::warn("clients will refuse this broker: {}", s.message());
  }
  return finishStart();
}

// The lock file decides which broker owns the path, without races between two starting at once.
Status Broker::lockSocketPath() {
  const std::string lockPath = socketPath_ + ".lock";
  lockFd_.reset(::open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lockFd_) {
    return Status(StatusCode::kFailedPrecondition,
                  detail::errnoText(("open " + lockPath).c_str(), errno));
  }
  if (::flock(lockFd_.get(), LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    (void)!::pread(lockFd_.get(), buf, sizeof(buf) - 1, 0);
    return Status(StatusCode::kFailedPrecondition,
                  "another hms-ffid (pid " + std::string(buf[0] ? buf : "?") + ") already serves " +
                      socketPath_ + "; stop it first or give this one another --socket");
  }
  const std::string pid = std::to_string(::getpid());
  (void)!::ftruncate(lockFd_.get(), 0);
  (void)!::pwrite(lockFd_.get(), pid.data(), pid.size(), 0);
  return Status();
}

Status Broker::finishStart() {
  startedUnixMs_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  if (!options_.metricsListen.empty()) {
    auto ep =
        MetricsEndpoint::start(options_.metricsListen, [this] { return metricsBook_.snapshot(); });
    if (!ep.ok()) {
      return Status(ep.status().code(), "the metrics endpoint (--metrics " +
                                            options_.metricsListen + "): " + ep.status().message());
    }
    metricsEndpoint_ = std::move(*ep);
    spdlog::info("metrics on {}", metricsEndpoint_->address());
  }
  publishGauges();
  for (auto [fd, tag] :
       {std::pair{listenFd_.get(), kListenTag}, std::pair{signalFd_.get(), kSignalTag},
        std::pair{stopFd_.get(), kStopTag}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    ::epoll_ctl(epollFd_.get(), EPOLL_CTL_ADD, fd, &ev);
  }
  spdlog::info("hms-ffid {} serving on {} (pid {}){}", "0.1.0", socketPath_, ::getpid(),
               activated_ ? ", a socket systemd passed" : "");
  return Status();
}

std::string Broker::statusText() const {
  size_t clients = 0;
  for (const auto& [id, c] : conns_) clients += c->helloed ? 1 : 0;
  return "serving " + std::to_string(clients) + " client(s), " + std::to_string(services_.size()) +
         " service(s), " + std::to_string(topics_.size()) + " topic(s), " +
         std::to_string(channels_.size()) + " channel(s)";
}

int Broker::updateStatus() {
  if (!notifier_.active()) return -1;
  const std::string now = statusText();
  if (now == sentStatus_) return -1;
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const int64_t ms = int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  if (ms - statusSentMs_ < 1000) return int(1000 - (ms - statusSentMs_));
  notifier_.status(now);
  sentStatus_ = now;
  statusSentMs_ = ms;
  return -1;
}

Status Broker::openContractStore() {
  const std::string dir = options_.stateDir.empty() ? defaultStateDir() : options_.stateDir;
  auto store = ContractStore::open(dir);
  if (!store.ok()) return store.status();
  store_ = std::move(*store);
  auto all = store_->loadAll();
  if (!all.ok()) return all.status();
  for (auto& flat : *all) {
    auto reader = readFlat(flat);
    auto d = reader.getRoot<wire::Contract>().getDescriptor();
    auto v = d.getVersion();
    contracts_[d.getId().cStr()][{v.getMajor(), v.getMinor(), v.getPatch()}] = std::move(flat);
  }
  if (dir == ":memory:") {
    spdlog::warn(
        "contracts are kept in memory only (--state-dir :memory:): a restarted broker "
        "forgets them and checks new registrations against nothing older");
  } else {
    spdlog::info("contract store {}: {} contract(s) of {} service(s)", store_->path(), all->size(),
                 contracts_.size());
  }
  return Status();
}

void Broker::requestStop() {
  const uint64_t one = 1;
  (void)!::write(stopFd_.get(), &one, sizeof(one));
}

Status Broker::run() {
  epoll_event events[64];
  sentStatus_ = statusText();
  notifier_.ready(sentStatus_);
  for (;;) {
    // While accepting is paused, try again each second: descriptors also come free without a
    // client leaving (a channel or a subscription ends). The watchdog and STATUS= want their
    // turns too.
    publishGauges();
    int timeout = waitTimeoutMs();
    for (int t : {notifier_.watchdogTick(), updateStatus()}) {
      if (t >= 0) timeout = timeout < 0 ? t : std::min(timeout, t);
    }
    const int n = ::epoll_wait(epollFd_.get(), events, 64, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status(StatusCode::kInternal, detail::errnoText("epoll_wait", errno));
    }
    if (n == 0 && acceptPaused_) resumeAccepting();
    // A busy broker may never time out: expiries are checked whenever one is due.
    if (nextTokenExpiry_ != INT64_MAX && int64_t(::time(nullptr)) >= nextTokenExpiry_) {
      dropExpiredTokens();
      reapDropped();
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kListenTag) {
        accept();
      } else if (tag == kSignalTag) {
        signalfd_siginfo si;
        while (::read(signalFd_.get(), &si, sizeof(si)) == sizeof(si)) {
          if (si.ssi_signo == SIGHUP) {
            notifier_.reloading();
            reload();
            reapDropped();
            sentStatus_ = statusText();
            notifier_.ready(sentStatus_);
            continue;
          }
          spdlog::info("{}: stopping; {} client(s) connected", strsignal(int(si.ssi_signo)),
                       conns_.size());
          notifier_.stopping();
          return Status();
        }
      } else if (tag == kStopTag) {
        notifier_.stopping();
        return Status();
      } else {
        if (events[i].events & EPOLLOUT) flushOutbox(tag);
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) onReadable(tag);
      }
      reapDropped();
    }
  }
}

void Broker::accept() {
  for (;;) {
    UniqueFd fd(::accept4(listenFd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd) {
      const int err = errno;
      if (err == EINTR || err == ECONNABORTED) continue;  // that one connection, not the socket
      if (err != EAGAIN && err != EWOULDBLOCK) {
        pauseAccepting(err);
      } else if (fdShortage_) {
        // The backlog is drained with a descriptor to spare: the shortage is over. (Not at the
        // first accept after one: a client leaving lets the one waiting in, and the broker is
        // full again; that is the same shortage, not a new one to log.)
        fdShortage_ = false;
        spdlog::info("accepting clients again");
      }
      return;
    }
    auto cred = detail::peerIdentity(fd.get());
    if (!cred.ok()) {
      spdlog::warn("dropping a connection: {}", cred.status().toString());
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->id = nextConnId_++;
    c->cred = std::move(*cred);
    c->sock = std::move(fd);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = c->id;
    ::epoll_ctl(epollFd_.get(), EPOLL_CTL_ADD, c->sock.get(), &ev);
    spdlog::debug("client {} connected (pid {}, uid {})", c->id, c->cred.pid, c->cred.uid);
    conns_.emplace(c->id, std::move(c));
  }
}

void Broker::pauseAccepting(int err) {
  if (!acceptPaused_) {
    epoll_event ev{};
    ev.events = 0;  // registered still, reporting nothing
    ev.data.u64 = kListenTag;
    ::epoll_ctl(epollFd_.get(), EPOLL_CTL_MOD, listenFd_.get(), &ev);
    acceptPaused_ = true;
  }
  if (fdShortage_) return;  // logged once per episode
  fdShortage_ = true;
  if (err == EMFILE) {
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    spdlog::warn(
        "accept: {}: hms-ffid has reached its RLIMIT_NOFILE of {} descriptors ({} clients "
        "connected); new clients wait in the socket's backlog until one leaves. Raise the limit: "
        "LimitNOFILE= in its systemd unit, or ulimit -n before starting it",
        std::strerror(err), lim.rlim_cur, conns_.size());
  } else {
    spdlog::warn(
        "accept: {} ({} clients connected); new clients wait in the socket's backlog until "
        "descriptors or memory come free",
        std::strerror(err), conns_.size());
  }
}

void Broker::resumeAccepting() {
  if (!acceptPaused_) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  ::epoll_ctl(epollFd_.get(), EPOLL_CTL_MOD, listenFd_.get(), &ev);
  acceptPaused_ = false;
}

void Broker::onReadable(uint64_t connId) {
  auto it = conns_.find(connId);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  for (;;) {
    if (c.dropping) return;  // a request of its own found it not reading
    auto d = detail::receiveDatagram(c.sock.get());
    if (!d.ok()) {
      if (d.status().message().find("Resource temporarily unavailable") != std::string::npos)
        return;
      if (d.status().code() == StatusCode::kInvalidArgument) {
        spdlog::warn("client {} (pid {}) sent an oversized message; disconnecting it", c.id,
                     c.cred.pid);
      }
      disconnect(connId, "control socket error");
      return;
    }
    if (d->bytes.empty()) {
      disconnect(connId, "connection closed");
      return;
    }
    // The boundary of one client's message: whatever reading it throws ends this client's
    // connection only (checkRequest() should have found it first).
    Status s;
    try {
      s = handle(c, d->bytes, d->fds);
    } catch (const kj::Exception& e) {
      s = Status(StatusCode::kInvalidArgument,
                 std::string("handling its request threw: ") + e.getDescription().cStr());
    } catch (const std::exception& e) {
      s = Status(StatusCode::kInternal, std::string("handling its request threw: ") + e.what());
    }
    if (!s) {
      if (c.dropping) return;  // found not reading: reapDropped() disconnects it, saying so
      if (s.code() == StatusCode::kUnavailable) {  // the reply found the client gone
        disconnect(connId, "connection closed");
        return;
      }
      spdlog::warn("client {} (pid {}): {}; disconnecting it", c.id, c.cred.pid, s.toString());
      disconnect(connId, "protocol error");
      return;
    }
  }
}

Status Broker::reply(Conn& c, capnp::MessageBuilder& msg, const int* fds, size_t n) {
  if (send(c, detail::encodeMessage(msg), fds, n)) return Status();
  return Status(
      StatusCode::kUnavailable,
      "the client " + std::string(c.dropping ? "does not read its control socket" : "is gone"));
}

Status Broker::replyOk(Conn& c, uint64_t requestId) {
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(requestId);
  r.initStatus().setCode(0);
  r.setNone();
  return reply(c, mb);
}

Status Broker::replyError(Conn& c, uint64_t requestId, const Status& s) {
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(requestId);
  r.initStatus().setCode(uint32_t(s.code()));
  r.getStatus().setMessage(s.message());
  r.setNone();
  return reply(c, mb);
}

void Broker::sendEvent(uint64_t connId, capnp::MessageBuilder& msg, const int* fds, size_t n) {
  auto it = conns_.find(connId);
  if (it == conns_.end()) return;
  (void)sendOrDrop(*it->second, msg, fds, n);
}

bool Broker::sendOrDrop(Conn& to, capnp::MessageBuilder& msg, const int* fds, size_t n) {
  return send(to, detail::encodeMessage(msg), fds, n);
}

bool Broker::send(Conn& to, kj::Array<capnp::word> flat, const int* fds, size_t n) {
  if (to.dropping) return false;
  if (to.outbox.empty()) {
    int err = 0;
    if (detail::sendDatagram(to.sock.get(), flat.begin(), flat.size() * 8, fds, n, &err)) {
      return true;
    }
    if (err == EPIPE || err == ECONNRESET || err == ENOTCONN) {
      // It has just closed the connection (its exit races the message): only gone.
      spdlog::debug("client {} closed its connection before a message reached it", to.id);
      dropLater(to.id, "connection closed");
      return false;
    }
    if (err != EAGAIN && err != EWOULDBLOCK) {
      // Not the client's doing (ETOOMANYREFS: this broker's descriptors in flight to all clients
      // reached its RLIMIT_NOFILE; ENOBUFS, ENOMEM): the message is lost, the client stays.
      spdlog::warn("a message for client {} '{}' could not be sent: {}", to.id, to.name,
                   std::strerror(err));
      return false;
    }
  }
  // Its socket is full, or older messages wait: behind them, in order.
  // Bounded by --max-queued-messages-per-client, and the descriptors of all clients' outboxes by
  // maxQueuedFds_.
  const uint32_t maxMessages = options_.maxQueuedMessagesPerClient;
  if ((maxMessages != 0 && to.outbox.size() >= maxMessages) || queuedFds_ + n > maxQueuedFds_) {
    // A client that does not read its control socket cannot be served, whatever it provides: it
    // is treated as gone, as if it had died.
    spdlog::warn(
        "client {} '{}' (pid {}) does not read its control socket ({} messages and {} "
        "descriptors wait for it); treating it as gone",
        to.id, to.name, to.cred.pid, to.outbox.size(), to.outboxFds);
    dropLater(to.id, "not reading its control socket");
    return false;
  }
  Conn::Queued q;
  q.flat = std::move(flat);
  for (size_t i = 0; i < n; ++i) {
    detail::UniqueFd copy(::fcntl(fds[i], F_DUPFD_CLOEXEC, 0));
    if (!copy) {
      // Without its descriptors the message would mislead the client: it goes as one that
      // cannot be served.
      spdlog::warn(
          "client {} '{}' (pid {}): a message for it could not be kept ({}); treating it "
          "as gone",
          to.id, to.name, to.cred.pid, std::strerror(errno));
      dropLater(to.id, "a message for it could not be kept");
      return false;
    }
    q.fds.push_back(std::move(copy));
  }
  to.outboxFds += n;
  queuedFds_ += n;
  to.outbox.push_back(std::move(q));
  if (to.outbox.size() == 1) {
    spdlog::debug("client {} '{}': its control socket is full; queueing", to.id, to.name);
    watchWritable(to, true);
  }
  return true;
}

void Broker::watchWritable(Conn& c, bool on) {
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
  ev.data.u64 = c.id;
  ::epoll_ctl(epollFd_.get(), EPOLL_CTL_MOD, c.sock.get(), &ev);
}

void Broker::flushOutbox(uint64_t connId) {
  auto it = conns_.find(connId);
  if (it == conns_.end() || it->second->dropping) return;
  Conn& c = *it->second;
  while (!c.outbox.empty()) {
    Conn::Queued& q = c.outbox.front();
    int fds[detail::kMaxFdsPerMessage] = {};
    for (size_t i = 0; i < q.fds.size() && i < detail::kMaxFdsPerMessage; ++i) {
      fds[i] = q.fds[i].get();
    }
    int err = 0;
    if (!detail::sendDatagram(c.sock.get(), q.flat.begin(), q.flat.size() * 8, fds, q.fds.size(),
                              &err)) {
      if (err == EAGAIN || err == EWOULDBLOCK) return;  // EPOLLOUT again when it reads more
      if (err == EPIPE || err == ECONNRESET || err == ENOTCONN) {
        dropLater(connId, "connection closed");
        return;
      }
      spdlog::warn("a message for client {} '{}' could not be sent: {}", c.id, c.name,
                   std::strerror(err));
    }
    c.outboxFds -= q.fds.size();
    queuedFds_ -= q.fds.size();
    c.outbox.pop_front();
  }
  spdlog::debug("client {} '{}': its queued messages are all sent", c.id, c.name);
  watchWritable(c, false);
}

void Broker::dropLater(uint64_t connId, std::string why) {
  auto it = conns_.find(connId);
  if (it == conns_.end() || it->second->dropping) return;
  it->second->dropping = true;
  it->second->dropWhy = std::move(why);
  ::epoll_ctl(epollFd_.get(), EPOLL_CTL_DEL, it->second->sock.get(), nullptr);
  dropped_.push_back(connId);
}

void Broker::reapDropped() {
  // A disconnect can drop others (the peers it tells of ended channels): until none is left.
  while (!dropped_.empty()) {
    const uint64_t id = dropped_.back();
    dropped_.pop_back();
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    const std::string why = it->second->dropWhy;
    disconnect(id, why.c_str());
  }
}

Status Broker::handle(Conn& c, const std::vector<uint8_t>& bytes, std::vector<UniqueFd>& fds) {
  auto msg = detail::DecodedMessage::decode(bytes);
  if (!msg.ok()) return msg.status();
  wire::Request::Reader req;
  try {
    req = (*msg)->root<wire::ClientMessage>().getRequest();
  } catch (const kj::Exception& e) {
    return Status(StatusCode::kInvalidArgument, e.getDescription().cStr());
  }
  const uint64_t rid = req.getId();
  if (auto s = checkRequest(req); !s) {
    (void)replyError(c, rid, s);  // for a client that is only buggy; it is dropped either way
    return s;
  }
  if (!c.helloed && !req.isHello()) {
    return replyError(c, rid, Status(StatusCode::kFailedPrecondition, "say hello first"));
  }
  switch (req.which()) {
    case wire::Request::HELLO:
      return onHello(c, rid, req.getHello(), fds);
    case wire::Request::REGISTER:
      return onRegister(c, rid, req.getRegister());
    case wire::Request::UNREGISTER:
      return onUnregister(c, rid, req.getUnregister());
    case wire::Request::OPEN_CHANNEL:
      return onOpen(c, rid, req.getOpenChannel(), fds);
    case wire::Request::ATTACH_CHANNEL:
      return onAttach(c, rid, req.getAttachChannel().getChannelId(), fds);
    case wire::Request::CLOSE_CHANNEL:
      return onClose(c, rid, req.getCloseChannel());
    case wire::Request::GET_REGISTRY:
      return onGetRegistry(c, rid, req.getGetRegistry());
    case wire::Request::ADVERTISE:
      return onAdvertise(c, rid, req.getAdvertise(), fds);
    case wire::Request::UNADVERTISE:
      return onUnadvertise(c, rid, req.getUnadvertise());
    case wire::Request::SUBSCRIBE:
      return onSubscribe(c, rid, req.getSubscribe());
    case wire::Request::UNSUBSCRIBE:
      return onUnsubscribe(c, rid, req.getUnsubscribe());
    case wire::Request::GET_SCHEMA:
      return onGetSchema(c, rid, req.getGetSchema());
    case wire::Request::LIST_CONTRACTS:
      return onListContracts(c, rid, req.getListContracts());
    case wire::Request::GET_TOPIC_SCHEMA:
      return onGetTopicSchema(c, rid, req.getGetTopicSchema());
    case wire::Request::GET_METRICS:
      return onGetMetrics(c, rid, req.getGetMetrics());
  }
  return replyError(c, rid, Status(StatusCode::kUnimplemented, "unknown control request"));
}

Status Broker::onHello(Conn& c, uint64_t rid, wire::Hello::Reader hello,
                       std::vector<UniqueFd>& fds) {
  if (c.helloed) {
    return replyError(c, rid, Status(StatusCode::kFailedPrecondition, "hello sent twice"));
  }
  if (hello.getProtocolVersion() != wire::PROTOCOL_VERSION) {
    return replyError(c, rid,
                      Status(StatusCode::kFailedPrecondition,
                             "control protocol " + std::to_string(hello.getProtocolVersion()) +
                                 " is not this broker's " + std::to_string(wire::PROTOCOL_VERSION) +
                                 "; use a libhmsffi of the broker's release"));
  }
  c.name = std::string(hello.getClientName().cStr()).substr(0, 128);
  if (auto s = authenticate(c, hello.getToken().cStr()); !s) {
    audit("connect", &c, s);
    spdlog::warn("client {} '{}' (pid {}, uid {}) refused: {}", c.id, c.name, c.cred.pid,
                 c.cred.uid, s.message());
    return replyError(c, rid, s);
  }
  c.transport = hello.getTransport();
  c.noSharedMemory = std::string(hello.getNoSharedMemory().cStr()).substr(0, 512);
  const bool shm = c.noSharedMemory.empty();
  if (!shm && options_.transport == wire::Transport::SHARED_MEMORY) {
    return replyError(c, rid,
                      Status(StatusCode::kFailedPrecondition,
                             "this broker runs with --transport shm and this client has no "
                             "shared memory (" +
                                 c.noSharedMemory +
                                 "); allow memfd_create and mmap to it, or run the broker "
                                 "with --transport auto"));
  }
  if (shm) {
    if (hello.getHasDoorbell() && !fds.empty()) {
      // A client reconnecting after a broker restart keeps the doorbell its channels already use.
      // It comes from the client, so it is mapped (here, and by every peer it is passed on to)
      // only if nobody can shrink it: an earlier hms-ffid made it so (createSegment()).
      if (auto s = detail::checkSealedAgainstShrink(fds[0].get(), detail::kDoorbellBytes,
                                                    "the doorbell handed back in hello");
          !s) {
        return replyError(c, rid, s);
      }
      auto map = detail::Mapping::map(fds[0].get(), detail::kDoorbellBytes, true);
      if (!map.ok() || map->as<detail::DoorbellSegment>()->magic != detail::kDoorbellMagic) {
        return replyError(c, rid,
                          Status(StatusCode::kInvalidArgument,
                                 "the doorbell handed back is not an HMS-FFI doorbell"));
      }
      c.doorbellFd = std::move(fds[0]);
      c.doorbell = std::move(*map);
    } else {
      auto fd = detail::createSegment("hms-ffi-doorbell", detail::kDoorbellBytes);
      if (!fd.ok()) return replyError(c, rid, fd.status());
      auto map = detail::Mapping::map(fd->get(), detail::kDoorbellBytes, true);
      if (!map.ok()) return replyError(c, rid, map.status());
      auto* db = map->as<detail::DoorbellSegment>();
      db->magic = detail::kDoorbellMagic;
      db->layoutVersion = detail::kDoorbellLayoutVersion;
      c.doorbellFd = std::move(*fd);
      c.doorbell = std::move(*map);
    }
  }
  // The client's metrics segment: without one (memfd refused) it still works, uncounted.
  detail::UniqueFd metricsFd;
  if (shm || hello.getMapsMetrics()) {
    auto fd = metricsBook_.create(c.id);
    if (fd.ok()) {
      metricsFd = std::move(*fd);
    } else {
      spdlog::warn("client {} '{}' gets no metrics segment, its calls go uncounted: {}", c.id,
                   c.name, fd.status().toString());
    }
  }
  ++connectionsTotal_;
  if (hello.getHasDoorbell()) ++reconnectsTotal_;
  c.helloed = true;
  spdlog::info("client {} '{}' connected (pid {}, uid {}{}){}{}", c.id, c.name, c.cred.pid,
               c.cred.uid, c.identity.hasToken ? ", sub " + c.identity.token.subject : "",
               shm ? "" : " without shared memory: ", c.noSharedMemory);
  audit("connect", &c, Status());
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  auto h = r.initHello();
  h.setClientId(c.id);
  h.setBrokerPid(uint32_t(::getpid()));
  h.setSharedMemory(shm);
  if (metricsFd) h.setMetricsBytes(detail::kMetricsSegmentBytes);
  if (!shm) {
    // No segments but the metrics: registry by getRegistry, channels on sockets.
    const int out[1] = {metricsFd.get()};
    return metricsFd ? reply(c, mb, out, 1) : reply(c, mb);
  }
  h.setRegistryBytes(registry_->segmentBytes());
  const int out[3] = {registry_->fd(), c.doorbellFd.get(), metricsFd.get()};
  return reply(c, mb, out, metricsFd ? 3 : 2);
}

Status Broker::onRegister(Conn& c, uint64_t rid, wire::RegisterService::Reader reg) {
  auto d = reg.getDescriptor();
  const std::string id = d.getId().cStr();
  auto v = d.getVersion();
  if (!validServiceId(id)) {
    return replyError(c, rid,
                      Status(StatusCode::kInvalidArgument,
                             "service id '" + id.substr(0, 64) +
                                 "' is not a dotted name of letters, digits, '_' and '-' "
                                 "(e.g. hms.emr.patient)"));
  }
  if (auto st = mayProvide(c, id); !st) {
    audit("register", &c, st, {{"service", id}});
    spdlog::warn("refused the registration of {} by client {} '{}': {}", id, c.id, c.name,
                 st.message());
    return replyError(c, rid, st);
  }
  const uint32_t ring = d.getRingBytes();
  if (ring < detail::kMinRingBytes || ring > detail::kMaxRingBytes || (ring & (ring - 1)) != 0) {
    return replyError(c, rid,
                      Status(StatusCode::kInvalidArgument,
                             "ringBytes must be a power of two from 4096 to 1 GiB"));
  }
  for (const auto& [key, s] : services_) {
    if (s.id == id && s.major == v.getMajor() && s.minor == v.getMinor() &&
        s.patch == v.getPatch()) {
      const auto& owner = *conns_.at(s.clientId);
      return replyError(
          c, rid,
          Status(StatusCode::kAlreadyExists,
                 "service " + id + " " + versionText(s.major, s.minor, s.patch) +
                     " is already provided by '" + owner.name + "' (pid " +
                     std::to_string(owner.cred.pid) + "); stop it or register another version"));
    }
  }
  if (auto st =
          checkLimit(c, c.services.size(), options_.maxServicesPerClient, "service registrations",
                     "--max-services-per-client", "unregister services it no longer provides");
      !st) {
    return replyError(c, rid, st);
  }
  if (auto st = acceptContract(c, reg); !st) {
    spdlog::warn("refused the registration of {} {} by client {} '{}': {}", id,
                 versionText(v.getMajor(), v.getMinor(), v.getPatch()), c.id, c.name,
                 st.toString());
    return replyError(c, rid, st);
  }
  Service s;
  s.key = nextServiceKey_++;
  s.clientId = c.id;
  s.tag = reg.getTag();
  s.id = id;
  s.major = v.getMajor();
  s.minor = v.getMinor();
  s.patch = v.getPatch();
  s.ringBytes = ring;
  capnp::MallocMessageBuilder copy;
  copy.setRoot(d);
  s.descriptor = detail::toFlatWords(capnp::messageToFlatArray(copy));
  c.services.insert(s.key);
  const uint64_t key = s.key;
  services_.emplace(key, std::move(s));
  if (auto st = publishRegistry(); !st) {
    // It does not fit: as if it had never come.
    services_.erase(key);
    c.services.erase(key);
    return replyError(c, rid, st);
  }
  spdlog::info("registered {} {} (key {}) for client {} '{}'", id,
               versionText(v.getMajor(), v.getMinor(), v.getPatch()), key, c.id, c.name);
  audit("register", &c, Status(),
        {{"service", id}, {"version", versionText(v.getMajor(), v.getMinor(), v.getPatch())}});
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  r.initRegister().setServiceKey(key);
  return reply(c, mb);
}

Status Broker::acceptContract(const Conn& c, wire::RegisterService::Reader reg) {
  auto d = reg.getDescriptor();
  const std::string id = d.getId().cStr();
  auto v = d.getVersion();
  const std::string version = versionText(v.getMajor(), v.getMinor(), v.getPatch());
  if (!reg.hasSchemaNodes() || reg.getSchemaNodes().size() == 0) {
    return Status(StatusCode::kInvalidArgument,
                  "the registration of " + id + " " + version +
                      " carries no schema nodes; register it with a libhmsffi that sends its "
                      "contract");
  }
  if (auto st = validateContract(d, reg.getSchemaNodes()); !st) {
    return Status(st.code(),
                  "the contract of " + id + " " + version + " is not valid: " + st.message());
  }
  capnp::MallocMessageBuilder mb;
  auto contract = mb.initRoot<wire::Contract>();
  contract.setDescriptor(d);
  contract.setNodes(reg.getSchemaNodes());
  contract.setProviderName(c.name);
  const int64_t now = unixMillis();
  contract.setFirstSeenUnixMs(now);
  contract.setLastSeenUnixMs(now);
  const VersionKey mine{v.getMajor(), v.getMinor(), v.getPatch()};
  auto& known = contracts_[id];
  // Every known contract of the same major, older or newer, must be an evolution the other way
  // round: a provider of 1.0 that comes back after 1.2 was accepted is checked as the older one.
  for (const auto& [key, flat] : known) {
    if (std::get<0>(key) != v.getMajor()) continue;
    auto other = readFlat(flat);
    auto theirs = other.getRoot<wire::Contract>();
    const auto mineReader = contract.asReader();
    Status st;
    if (key < mine) {
      st = checkCompatible(theirs, mineReader);
    } else if (mine < key) {
      st = checkCompatible(mineReader, theirs);
    } else {  // the same version again: the same contract, both ways
      st = checkCompatible(theirs, mineReader);
      if (st) st = checkCompatible(mineReader, theirs);
      if (st) {
        contract.setFirstSeenUnixMs(theirs.getFirstSeenUnixMs());
      } else {
        st = Status(st.code(), id + " " + version +
                                   " was registered before with another contract; a changed "
                                   "contract needs a new version (a new minor if it only adds, "
                                   "else a new major). " +
                                   st.message());
      }
    }
    if (!st) return st;
  }
  if (auto st = store_->put(contract.asReader()); !st) {
    return Status(StatusCode::kUnavailable, "the broker cannot store the contract of " + id + " " +
                                                version + " (" + st.message() +
                                                "); the registration is refused, try again");
  }
  known[mine] = toFlat(mb);
  return Status();
}

Status Broker::onGetSchema(Conn& c, uint64_t rid, wire::GetSchema::Reader get) {
  const std::string id = get.getServiceId().cStr();
  auto v = get.getVersion();
  auto it = contracts_.find(id);
  const FlatContract* flat = nullptr;
  if (it != contracts_.end()) {
    auto vit = it->second.find({v.getMajor(), v.getMinor(), v.getPatch()});
    if (vit != it->second.end()) flat = &vit->second;
  }
  if (flat == nullptr) {
    std::string known;
    if (it != contracts_.end()) {
      for (const auto& [key, _] : it->second) {
        known += (known.empty() ? "" : ", ") +
                 versionText(std::get<0>(key), std::get<1>(key), std::get<2>(key));
      }
    }
    return replyError(
        c, rid,
        Status(StatusCode::kNotFound, "the broker knows no contract of " + id.substr(0, 200) + " " +
                                          versionText(v.getMajor(), v.getMinor(), v.getPatch()) +
                                          (known.empty() ? std::string(" (nor any version of it)")
                                                         : "; it knows " + known)));
  }
  auto reader = readFlat(*flat);
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  r.setSchema(reader.getRoot<wire::Contract>());
  return replyChecked(c, rid, mb, "the contract of " + id);
}

Status Broker::onListContracts(Conn& c, uint64_t rid, wire::ListContracts::Reader list) {
  const std::string prefix = list.getPrefix().cStr();
  std::vector<const FlatContract*> matching;
  for (const auto& [id, versions] : contracts_) {
    if (id.compare(0, prefix.size(), prefix) != 0) continue;
    for (const auto& [_, flat] : versions) matching.push_back(&flat);
  }
  // A page is what fits well inside a datagram: descriptors only, about 1 KiB each at most
  // in practice; stop adding once half the datagram is used.
  const size_t first = std::min<size_t>(list.getOffset(), matching.size());
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  size_t end = first;
  size_t bytes = 0;
  while (end < matching.size() && bytes < detail::kMaxControlMessageBytes / 2) {
    bytes +=
        readFlat(*matching[end]).getRoot<wire::Contract>().getDescriptor().totalSize().wordCount *
        8;
    ++end;
  }
  auto page = r.initContracts();
  auto out = page.initContracts(uint(end - first));
  for (size_t i = first; i < end; ++i) {
    auto reader = readFlat(*matching[i]);
    auto in = reader.getRoot<wire::Contract>();
    auto o = out[uint(i - first)];
    o.setDescriptor(in.getDescriptor());
    o.setProviderName(in.getProviderName());
    o.setFirstSeenUnixMs(in.getFirstSeenUnixMs());
    o.setLastSeenUnixMs(in.getLastSeenUnixMs());
  }
  page.setNextOffset(end < matching.size() ? uint32_t(end) : 0);
  return replyChecked(c, rid, mb, "the contract list");
}

void Broker::publishGauges() {
  BrokerGauges g;
  for (const auto& [id, c] : conns_) g.clients += c->helloed ? 1 : 0;
  g.channels = uint32_t(channels_.size());
  g.services = uint32_t(services_.size());
  g.topics = uint32_t(topics_.size());
  g.subscriptions = uint32_t(subscriptions_.size());
  g.registryGeneration = registry_ ? registry_->generation() : 0;
  g.connectionsTotal = connectionsTotal_;
  g.reconnectsTotal = reconnectsTotal_;
  g.startedUnixMs = startedUnixMs_;
  metricsBook_.setGauges(g);
}

namespace {

void setHistogram(wire::Histogram::Builder out, const LatencyHistogram& h) {
  auto idx = out.initBucketIndex(uint(h.buckets.size()));
  auto cnt = out.initBucketCount(uint(h.buckets.size()));
  for (uint i = 0; i < h.buckets.size(); ++i) {
    idx.set(i, h.buckets[i].first);
    cnt.set(i, h.buckets[i].second);
  }
  out.setCount(h.count);
  out.setSumNs(h.sumNs);
  out.setMaxNs(h.maxNs);
}

}  // namespace

Status Broker::onGetMetrics(Conn& c, uint64_t rid, wire::GetMetrics::Reader get) {
  publishGauges();
  const MetricsSnapshot snap = metricsBook_.snapshot();
  // Entries are the methods, then the topics, then the rings. A page is what fits well inside a
  // datagram: about 200 bytes a method and 20 a bucket, 100 a topic or a service's rings.
  const size_t topicsAt = snap.methods.size(), ringsAt = topicsAt + snap.topics.size();
  const size_t entries = ringsAt + snap.rings.size();
  size_t first = std::min<size_t>(get.getOffset(), entries);
  if (get.hasAfter() && get.getAfter().getSection() != 0) {
    // The first entry after the client's last one, in the sorted order the snapshot has.
    auto after = get.getAfter();
    const std::string name = after.getName(), method = after.getMethod();
    switch (after.getSection()) {
      case 1:
        first = size_t(std::upper_bound(snap.methods.begin(), snap.methods.end(),
                                        std::tie(name, method),
                                        [](const auto& key, const MethodMetrics& m) {
                                          return key < std::tie(m.service, m.method);
                                        }) -
                       snap.methods.begin());
        break;
      case 2:
        first =
            topicsAt + size_t(std::upper_bound(snap.topics.begin(), snap.topics.end(), name,
                                               [](const std::string& key, const TopicMetrics& t) {
                                                 return key < t.topic;
                                               }) -
                              snap.topics.begin());
        break;
      default:
        first = ringsAt + size_t(std::upper_bound(snap.rings.begin(), snap.rings.end(), name,
                                                  [](const std::string& key, const RingMetrics& r) {
                                                    return key < r.service;
                                                  }) -
                                 snap.rings.begin());
        break;
    }
  }
  size_t end = first;
  size_t bytes = 0;
  while (end < entries && bytes < detail::kMaxControlMessageBytes / 2) {
    if (end < topicsAt) {
      const auto& m = snap.methods[end];
      bytes += 256 + m.service.size() + m.method.size() +
               20 * (m.callDuration.buckets.size() + m.handlerDuration.buckets.size());
    } else if (end < ringsAt) {
      bytes += 100 + snap.topics[end - topicsAt].topic.size();
    } else {
      bytes += 100 + snap.rings[end - ringsAt].service.size();
    }
    ++end;
  }
  // The part of [first, end) that falls in [from, to), relative to `from`.
  auto part = [&](size_t from, size_t to) {
    const size_t a = std::clamp(first, from, to), b = std::clamp(end, from, to);
    return std::pair<size_t, size_t>(a - from, b - from);
  };
  const auto [methodFirst, methodEnd] = part(0, topicsAt);
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  auto page = r.initMetrics();
  page.setTotal(uint32_t(entries));
  page.setMore(end < entries);
  page.setTakenUnixNs(snap.takenUnixNs);
  auto g = page.initGauges();
  g.setClients(snap.gauges.clients);
  g.setChannels(snap.gauges.channels);
  g.setServices(snap.gauges.services);
  g.setTopics(snap.gauges.topics);
  g.setSubscriptions(snap.gauges.subscriptions);
  g.setRegistryGeneration(snap.gauges.registryGeneration);
  g.setConnectionsTotal(snap.gauges.connectionsTotal);
  g.setReconnectsTotal(snap.gauges.reconnectsTotal);
  g.setMetricsSlotsRefused(snap.gauges.metricsSlotsRefused);
  g.setStartedUnixMs(snap.gauges.startedUnixMs);
  auto out = page.initMethods(uint(methodEnd - methodFirst));
  for (size_t i = methodFirst; i < methodEnd; ++i) {
    const auto& m = snap.methods[i];
    auto o = out[uint(i - methodFirst)];
    o.setService(m.service);
    o.setMethod(m.method);
    auto calls = o.initCalls(uint(m.calls.size()));
    auto handled = o.initHandled(uint(m.handled.size()));
    for (uint k = 0; k < m.calls.size(); ++k) {
      calls.set(k, m.calls[k]);
      handled.set(k, m.handled[k]);
    }
    o.setInFlight(m.inFlight);
    setHistogram(o.initCallDuration(), m.callDuration);
    setHistogram(o.initHandlerDuration(), m.handlerDuration);
  }
  const auto [topicFirst, topicEnd] = part(topicsAt, ringsAt);
  auto topics = page.initTopics(uint(topicEnd - topicFirst));
  for (size_t i = topicFirst; i < topicEnd; ++i) {
    const auto& t = snap.topics[i];
    auto o = topics[uint(i - topicFirst)];
    o.setTopic(t.topic);
    o.setPublished(t.published);
    o.setPublishedBytes(t.publishedBytes);
    o.setDelivered(t.delivered);
    o.setDropped(t.dropped);
    o.setLagHighWater(t.lagHighWater);
  }
  const auto [ringFirst, ringEnd] = part(ringsAt, entries);
  auto rings = page.initRings(uint(ringEnd - ringFirst));
  for (size_t i = ringFirst; i < ringEnd; ++i) {
    const auto& r = snap.rings[i];
    auto o = rings[uint(i - ringFirst)];
    o.setService(r.service);
    o.setRequestHighWater(r.requestHighWater);
    o.setRequestFull(r.requestFull);
    o.setResponseHighWater(r.responseHighWater);
    o.setResponseFull(r.responseFull);
  }
  return replyChecked(c, rid, mb, "the metrics page");
}

Status Broker::onGetTopicSchema(Conn& c, uint64_t rid, capnp::Text::Reader topicId) {
  const std::string id = topicId.cStr();
  auto it = topicSchemas_.find(id);
  if (it == topicSchemas_.end()) {
    return replyError(c, rid,
                      Status(StatusCode::kNotFound,
                             "no publisher has advertised topic '" + id.substr(0, 200) +
                                 "' since this broker started, so its message type is unknown; "
                                 "start its publisher"));
  }
  auto reader = readFlat(it->second);
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  r.setTopicSchema(reader.getRoot<wire::TopicSchema>());
  return replyChecked(c, rid, mb, "the schema of topic " + id);
}

Status Broker::replyChecked(Conn& c, uint64_t rid, capnp::MessageBuilder& mb,
                            const std::string& what) {
  if (mb.sizeInWords() * sizeof(capnp::word) > detail::kMaxControlMessageBytes) {
    return replyError(c, rid,
                      Status(StatusCode::kResourceExhausted,
                             what + " is larger than a control message (" +
                                 std::to_string(detail::kMaxControlMessageBytes) + " bytes)"));
  }
  return reply(c, mb);
}

Status Broker::onUnregister(Conn& c, uint64_t rid, uint64_t key) {
  auto it = services_.find(key);
  if (it == services_.end() || it->second.clientId != c.id) {
    return replyError(c, rid,
                      Status(StatusCode::kNotFound,
                             "this client has no registration with key " + std::to_string(key)));
  }
  removeService(key, detail::kEndClosed, "unregistered");
  publishRegistry();
  return replyOk(c, rid);
}

Result<wire::Transport> Broker::channelTransport(const Conn& caller, const Conn& provider,
                                                 const std::string& serviceId) const {
  std::string why;
  if (!caller.noSharedMemory.empty()) {
    why = "this client has no shared memory (" + caller.noSharedMemory + ")";
  } else if (!provider.noSharedMemory.empty()) {
    why = "its provider has no shared memory (" + provider.noSharedMemory + ")";
  } else if (options_.transport == wire::Transport::SOCKET) {
    why = "the broker runs with --transport socket";
  } else {
    return wire::Transport::SHARED_MEMORY;
  }
  if (caller.transport == wire::Transport::SHARED_MEMORY) {
    return Status(StatusCode::kFailedPrecondition,
                  "this client requires shared memory (transport shm), but the channel to " +
                      serviceId + " must run over a socket: " + why +
                      "; use transport auto to accept the socket");
  }
  if (provider.transport == wire::Transport::SHARED_MEMORY) {
    return Status(StatusCode::kFailedPrecondition,
                  "the provider of " + serviceId +
                      " requires shared memory (transport shm), but the channel must run over a "
                      "socket: " +
                      why);
  }
  return wire::Transport::SOCKET;
}

Status Broker::onOpen(Conn& c, uint64_t rid, wire::OpenChannel::Reader req,
                      std::vector<UniqueFd>& fds) {
  const uint64_t key = req.getServiceKey();
  auto it = services_.find(key);
  if (it == services_.end()) {
    return replyError(c, rid,
                      Status(StatusCode::kUnavailable,
                             "that registration is gone (its provider stopped); discover "
                             "the service again"));
  }
  if (auto st = checkLimit(c, c.callerChannels, options_.maxChannelsPerClient, "open channels",
                           "--max-channels-per-client", "close Stubs it no longer uses");
      !st) {
    return replyError(c, rid, st);
  }
  Service& svc = it->second;
  Conn& provider = *conns_.at(svc.clientId);
  if (provider.dropping) {
    return replyError(c, rid,
                      Status(StatusCode::kUnavailable,
                             "the provider of " + svc.id + " is gone; discover the service again"));
  }
  std::shared_ptr<const RemoteCaller> remote;
  if (req.hasOnBehalfOf()) {
    // A gateway opening the channel for a caller of another host (docs/gateway.md).
    const auto r = req.getOnBehalfOf();
    auto rc = std::make_shared<RemoteCaller>();
    rc->host = r.getHost().cStr();
    rc->name = r.getName().cStr();
    rc->subject = r.getSubject().cStr();
    rc->issuer = r.getIssuer().cStr();
    rc->uid = r.getUid();
    rc->pid = r.getPid();
    rc->authenticated = r.getAuthenticated();
    for (auto role : r.getRoles()) rc->homeRoles.emplace_back(role.cStr());
    if (rc->host.empty()) {
      return replyError(c, rid,
                        Status(StatusCode::kInvalidArgument,
                               "an open on behalf of a remote caller names its host"));
    }
    remote = std::move(rc);
  }
  auto who = granteeOf(c, remote.get());
  if (!who.ok()) {
    Status denied = who.status();
    denied.withSource(svc.id);
    audit("open", &c, denied, {{"service", svc.id}, {"remote_host", remote->host}});
    return replyError(c, rid, denied);
  }
  const GrantDecision grant = decideGrant(*who, svc);
  if (!grant.any) {
    const std::string whom = remote ? "'" + remote->name + "' of host " + remote->host + " (uid " +
                                          std::to_string(remote->uid) +
                                          " there, through the gateway '" + c.name + "')"
                                    : "uid " + std::to_string(c.cred.uid) + " (pid " +
                                          std::to_string(c.cred.pid) + ", '" + c.name + "')";
    Status denied(StatusCode::kPermissionDenied,
                  whom + " may call no method of " + svc.id + ": " + firstDenial(grant));
    denied.withSource(svc.id);
    std::vector<detail::AuditField> fields = {{"service", svc.id}};
    if (remote) fields.push_back({"remote_host", remote->host});
    audit("open", &c, denied, std::move(fields));
    return replyError(c, rid, denied);
  }
  auto transport = channelTransport(c, provider, svc.id);
  if (!transport.ok()) return replyError(c, rid, transport.status());
  const uint32_t maxMessage = detail::maxMessageBytesForRing(svc.ringBytes);
  Channel ch;
  ch.id = nextChannelId_++;
  ch.callerClient = c.id;
  ch.serviceClient = svc.clientId;
  ch.serviceKey = key;
  ch.remote = remote;
  uint64_t bytes = 0;
  UniqueFd callerEnd, serviceEnd;  // socket channels
  UniqueFd requestRing;            // shared memory: the caller's, checked, for the service
  if (*transport == wire::Transport::SHARED_MEMORY) {
    if (fds.size() != 1) {
      return replyError(c, rid,
                        Status(StatusCode::kInvalidArgument,
                               "an open over shared memory carries the request ring (fd 0); "
                               "use a libhmsffi of the broker's release"));
    }
    if (auto st = detail::checkSealedSegment(fds[0].get(), svc.ringBytes,
                                             "the request ring of a channel to " + svc.id);
        !st) {
      return replyError(c, rid, st);
    }
    requestRing = std::move(fds[0]);
    bytes = detail::channelSegmentBytes(svc.ringBytes);
    auto fd = detail::createSegment("hms-ffi-channel", bytes);
    if (!fd.ok()) return replyError(c, rid, fd.status());
    auto map = detail::Mapping::map(fd->get(), bytes, true);
    if (!map.ok()) return replyError(c, rid, map.status());
    auto* h = map->as<detail::ChannelHeader>();
    h->magic = detail::kChannelMagic;
    h->layoutVersion = detail::kChannelLayoutVersion;
    h->headerBytes = detail::kPageBytes;
    h->channelId = ch.id;
    h->segmentBytes = bytes;
    h->ringBytes = svc.ringBytes;
    h->maxMessageBytes = maxMessage;
    h->callerPid = uint32_t(c.cred.pid);
    h->servicePid = uint32_t(provider.cred.pid);
    ch.fd = std::move(*fd);
    ch.map = std::move(*map);
  } else {
    // The broker keeps neither end: when a client dies, its peer reads EOF at once.
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      return replyError(c, rid,
                        Status(StatusCode::kResourceExhausted,
                               detail::errnoText("socketpair for a channel", errno)));
    }
    callerEnd.reset(sv[0]);
    serviceEnd.reset(sv[1]);
  }
  const bool shm = *transport == wire::Transport::SHARED_MEMORY;

  // The provider first, so that it attaches the channel while the caller builds its first request.
  {
    capnp::MallocMessageBuilder mb;
    auto o = mb.initRoot<wire::BrokerMessage>().initEvent().initChannelOpened();
    o.setChannelId(ch.id);
    o.setServiceKey(key);
    o.setServiceTag(svc.tag);
    o.setSegmentBytes(bytes);
    o.setCallerClientId(c.id);
    o.setCallerPid(uint32_t(c.cred.pid));
    o.setCallerUid(uint32_t(c.cred.uid));
    o.setCallerName(c.name);
    o.setTransport(*transport);
    o.setMaxMessageBytes(maxMessage);
    fillGrant(o.initGrant(), *who, grant);
    // With shared memory, fd 1 is the caller's request ring (read-only to the service) and fd 2
    // the caller's doorbell: the service wakes the caller's completion thread through it when it
    // answers asynchronous calls.
    const int out[3] = {shm ? ch.fd.get() : serviceEnd.get(), requestRing.get(),
                        c.doorbellFd.get()};
    const size_t outCount = shm ? (c.doorbellFd ? 3 : 2) : 1;
    if (!sendOrDrop(provider, mb, out, outCount)) {
      // A provider that cannot take the channel is gone (dropped with its services once this
      // request is done: sendOrDrop()); the channel was never known to anyone.
      return replyError(c, rid,
                        Status(StatusCode::kUnavailable,
                               "the provider of " + svc.id +
                                   " did not take the channel (it does not read its control "
                                   "socket, or it is gone); discover the service again"));
    }
  }
  c.channels.insert(ch.id);
  ++c.callerChannels;
  provider.channels.insert(ch.id);
  svc.channels.insert(ch.id);
  const uint64_t id = ch.id;
  ch.allowed = grant.allowed;
  ch.audit = grant.audit;
  ch.ringBytes = svc.ringBytes;
  ch.maxMessageBytes = maxMessage;
  if (shm) ch.pendingRid = rid;  // answered when the service attaches its response ring
  channels_.emplace(id, std::move(ch));
  spdlog::debug("channel {}: client {} -> {} (key {}) over {}", id, c.id, svc.id, key,
                shm ? "shared memory" : "a socketpair");
  if (policy_) {
    std::string allowed;
    const auto methods = readFlat(svc.descriptor).getRoot<wire::ServiceDescriptor>().getMethods();
    for (auto m : methods) {
      if (m.getOrdinal() < grant.allowed.size() && grant.allowed[m.getOrdinal()]) {
        allowed += (allowed.empty() ? "" : ",") + std::string(m.getName().cStr());
      }
    }
    std::vector<detail::AuditField> fields = {
        {"service", svc.id}, {"channel", std::to_string(id), true}, {"methods_allowed", allowed}};
    if (remote) {
      // The gateway is the record's client; the caller it brought in is named here.
      fields.push_back({"remote_host", remote->host});
      fields.push_back({"remote_caller", remote->name});
      if (!remote->subject.empty()) fields.push_back({"remote_sub", remote->subject});
      std::string roles;
      for (const auto& r : who->roles) roles += (roles.empty() ? "" : ",") + r;
      fields.push_back({"remote_roles", roles});
    }
    audit("open", &c, Status(), std::move(fields));
  }
  if (shm) return Status();  // answered once the service attaches its response ring (onAttach)
  const int sockFds[1] = {callerEnd.get()};
  return replyOpened(c, rid, id, 0, *transport, maxMessage, sockFds, 1);
}

Status Broker::replyOpened(Conn& c, uint64_t rid, uint64_t channelId, uint64_t segmentBytes,
                           wire::Transport transport, uint32_t maxMessage, const int* fds,
                           size_t n) {
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  auto o = r.initOpenChannel();
  o.setChannelId(channelId);
  o.setSegmentBytes(segmentBytes);
  o.setTransport(transport);
  o.setMaxMessageBytes(maxMessage);
  return reply(c, mb, fds, n);
}

Status Broker::onAttach(Conn& c, uint64_t rid, uint64_t channelId, std::vector<UniqueFd>& fds) {
  auto it = channels_.find(channelId);
  if (it == channels_.end() || it->second.serviceClient != c.id || it->second.pendingRid == 0) {
    return replyError(c, rid,
                      Status(StatusCode::kNotFound,
                             "no channel " + std::to_string(channelId) +
                                 " waits for this client's response ring (its caller left, or "
                                 "it is attached already)"));
  }
  Channel& ch = it->second;
  const Status st =
      fds.size() != 1
          ? Status(StatusCode::kInvalidArgument, "an attach carries the response ring (fd 0)")
          : detail::checkSealedSegment(fds[0].get(), ch.ringBytes, "the response ring");
  const uint64_t callerRid = ch.pendingRid;
  auto caller = conns_.find(ch.callerClient);
  if (!st) {
    // The caller hears why its open failed; the channel never served anything.
    if (caller != conns_.end() && !caller->second->dropping) {
      Status failed(StatusCode::kUnavailable,
                    "the provider's response ring was refused: " + std::string(st.message()));
      (void)replyError(*caller->second, callerRid, failed);
    }
    ch.pendingRid = 0;
    endChannel(channelId, false, detail::kEndClosed, "the response ring was refused");
    return replyError(c, rid, st);
  }
  ch.pendingRid = 0;
  if (auto s = replyOk(c, rid); !s) return s;
  if (caller == conns_.end() || caller->second->dropping) {
    endChannel(channelId, true, detail::kEndClosed, "its caller left before it was attached");
    return Status();
  }
  const int shmFds[3] = {ch.fd.get(), fds[0].get(), c.doorbellFd.get()};
  // This handles the provider's request: a reply that cannot reach the caller is the caller's
  // affair, never a reason to disconnect the provider. A caller that is gone (or dropped for
  // not reading) ends the channel as it goes; one that stays without its reply (a message the
  // kernel refused) gets the channel ended here, and times out its open.
  Conn& opener = *caller->second;
  if (!replyOpened(opener, callerRid, channelId, detail::channelSegmentBytes(ch.ringBytes),
                   wire::Transport::SHARED_MEMORY, ch.maxMessageBytes, shmFds, 3) &&
      !opener.dropping) {
    endChannel(channelId, true, detail::kEndClosed, "its caller could not be told it opened");
  }
  return Status();
}

Status Broker::onClose(Conn& c, uint64_t rid, uint64_t channelId) {
  auto it = channels_.find(channelId);
  if (it != channels_.end() &&
      (it->second.callerClient == c.id || it->second.serviceClient == c.id)) {
    endChannel(channelId, it->second.callerClient == c.id, detail::kEndClosed, "closed by its end");
  }
  return replyOk(c, rid);
}

void Broker::endChannel(uint64_t channelId, bool callerSide, uint32_t state, const char* why) {
  auto it = channels_.find(channelId);
  if (it == channels_.end()) return;
  Channel ch = std::move(it->second);
  channels_.erase(it);
  if (ch.pendingRid != 0) {
    // Its service never attached: the caller's open fails with why.
    if (auto pc = conns_.find(ch.callerClient); pc != conns_.end() && !pc->second->dropping) {
      (void)replyError(
          *pc->second, ch.pendingRid,
          Status(StatusCode::kUnavailable, std::string("the service did not attach the channel: ") +
                                               why + "; discover the service again"));
    }
  }
  if (auto* h = ch.map.as<detail::ChannelHeader>()) {
    uint32_t& mine = callerSide ? h->callerState : h->serviceState;
    if (detail::loadAcquire(mine) == detail::kEndOpen) detail::storeRelease(mine, state);
    // Wake whoever may sleep on this channel: the caller on its response ring, either producer
    // on a full ring, and the service's dispatcher on its doorbell. (A socket channel needs
    // none of it: the closed or dead end's socket says so itself.)
    detail::wakeAlways(h->response.consumerWake);
    detail::wakeAlways(h->request.producerWake);
    detail::wakeAlways(h->response.producerWake);
  }
  const uint64_t other = callerSide ? ch.serviceClient : ch.callerClient;
  if (auto pc = conns_.find(ch.serviceClient); pc != conns_.end() && pc->second->doorbell.data()) {
    detail::wakeAlways(pc->second->doorbell.as<detail::DoorbellSegment>()->wake);
  }
  if (auto pc = conns_.find(ch.callerClient); pc != conns_.end() && pc->second->doorbell.data()) {
    detail::wakeAlways(pc->second->doorbell.as<detail::DoorbellSegment>()->replyWake);
  }
  for (uint64_t cid : {ch.callerClient, ch.serviceClient}) {
    if (auto pc = conns_.find(cid); pc != conns_.end()) pc->second->channels.erase(channelId);
  }
  if (auto pc = conns_.find(ch.callerClient); pc != conns_.end()) --pc->second->callerChannels;
  if (auto s = services_.find(ch.serviceKey); s != services_.end())
    s->second.channels.erase(channelId);
  spdlog::debug("channel {} ended ({})", channelId, why);
  capnp::MallocMessageBuilder mb;
  auto cc = mb.initRoot<wire::BrokerMessage>().initEvent().initChannelClosed();
  cc.setChannelId(channelId);
  cc.setReason(why);
  sendEvent(other, mb);
}

void Broker::removeService(uint64_t key, uint32_t channelState, const char* why) {
  auto it = services_.find(key);
  if (it == services_.end()) return;
  std::set<uint64_t> chans = it->second.channels;
  for (uint64_t ch : chans) endChannel(ch, false, channelState, why);
  if (auto pc = conns_.find(it->second.clientId); pc != conns_.end())
    pc->second->services.erase(key);
  spdlog::info("{} {}.{}.{} left the registry ({})", it->second.id, it->second.major,
               it->second.minor, it->second.patch, why);
  touchContract(it->second);
  services_.erase(key);
}

void Broker::touchContract(const Service& s) {
  auto versions = contracts_.find(s.id);
  if (versions == contracts_.end()) return;
  auto flat = versions->second.find({s.major, s.minor, s.patch});
  if (flat == versions->second.end()) return;
  capnp::MallocMessageBuilder mb;
  {
    auto reader = readFlat(flat->second);
    mb.setRoot(reader.getRoot<wire::Contract>());
  }
  auto c = mb.getRoot<wire::Contract>();
  c.setLastSeenUnixMs(unixMillis());
  if (auto st = store_->put(c.asReader()); !st) {
    spdlog::warn("cannot record when {} {}.{}.{} was last seen: {}", s.id, s.major, s.minor,
                 s.patch, st.toString());
  }
  flat->second = toFlat(mb);
}

void Broker::disconnect(uint64_t connId, const char* why) {
  auto it = conns_.find(connId);
  if (it == conns_.end()) return;
  std::unique_ptr<Conn> c = std::move(it->second);
  conns_.erase(it);
  queuedFds_ -= c->outboxFds;  // closed with it
  ::epoll_ctl(epollFd_.get(), EPOLL_CTL_DEL, c->sock.get(), nullptr);
  spdlog::info("client {} '{}' (pid {}) gone: {}", c->id, c->name, c->cred.pid, why);
  metricsBook_.retire(c->id);  // its counts stay counted
  // Everything the client provided leaves the registry; every channel it had ends. Its peers wake
  // at once and fail their calls with UNAVAILABLE.
  const bool hadServices = !c->services.empty() || !c->topics.empty() || !c->subscriptions.empty();
  for (uint64_t key : std::set<uint64_t>(c->services)) {
    removeService(key, detail::kEndDead, "provider gone");
  }
  for (uint64_t key : std::set<uint64_t>(c->topics)) {
    removeTopic(key, detail::kEndDead, "publisher gone");
  }
  for (uint64_t id : std::set<uint64_t>(c->subscriptions)) {
    removeSubscription(id, detail::kEndDead, "subscriber gone");
  }
  for (uint64_t ch : std::set<uint64_t>(c->channels)) {
    auto cit = channels_.find(ch);
    if (cit == channels_.end()) continue;
    endChannel(ch, cit->second.callerClient == c->id, detail::kEndDead, "peer gone");
  }
  if (hadServices) publishRegistry();
  resumeAccepting();  // its descriptors are free: a waiting client may fit now
}

Status Broker::checkLimit(const Conn& c, size_t held, uint32_t limit, const char* what,
                          const char* flag, const char* advice) {
  if (limit == 0 || held < limit) return Status();
  return Status(StatusCode::kResourceExhausted,
                "client '" + c.name + "' already holds " + std::to_string(held) + " " + what +
                    ", the most one client may (hms-ffid " + flag + " " + std::to_string(limit) +
                    "); " + advice + ", or raise " + flag);
}

Status Broker::publishRegistry() {
  capnp::MallocMessageBuilder mb;
  auto snap = mb.initRoot<wire::RegistrySnapshot>();
  snap.setGeneration(registry_->generation() + 1);
  snap.setBrokerPid(uint32_t(::getpid()));
  auto list = snap.initServices(uint(services_.size()));
  uint i = 0;
  for (const auto& [key, s] : services_) {
    auto e = list[i++];
    e.setKey(key);
    capnp::FlatArrayMessageReader d(detail::asWords(s.descriptor));
    e.setDescriptor(d.getRoot<wire::ServiceDescriptor>());
    const Conn& owner = *conns_.at(s.clientId);
    e.setProviderClientId(s.clientId);
    e.setProviderPid(uint32_t(owner.cred.pid));
    e.setProviderUid(uint32_t(owner.cred.uid));
    e.setProviderName(owner.name);
    e.setState(wire::ServiceState::SERVING);
  }
  auto topics = snap.initTopics(uint(topics_.size()));
  i = 0;
  for (const auto& [key, t] : topics_) {
    auto e = topics[i++];
    e.setKey(key);
    e.setId(t.id);
    e.setTypeId(t.typeId);
    e.setTypeName(t.typeName);
    e.setDisplayName(t.displayName);
    e.setDescription(t.description);
    e.setSlotCount(t.slotCount);
    e.setMaxMessageBytes(detail::TopicGeometry{t.slotCount, t.slotBytes}.maxWords() * 8);
    const Conn& owner = *conns_.at(t.publisherClient);
    e.setPublisherClientId(t.publisherClient);
    e.setPublisherPid(uint32_t(owner.cred.pid));
    e.setPublisherUid(uint32_t(owner.cred.uid));
    e.setPublisherName(owner.name);
    e.setSubscribers(uint32_t(t.subscriptions.size()));
  }
  if (auto s = registry_->publish(mb); !s) {
    spdlog::error("registry not published: {}", s.toString());
    return s;
  }
  snapshot_ = detail::toFlatWords(capnp::messageToFlatArray(mb));
  return Status();
}

Status Broker::onGetRegistry(Conn& c, uint64_t rid, wire::GetRegistry::Reader get) {
  // Chunks well inside a control datagram (kMaxControlMessageBytes).
  constexpr uint64_t kChunkBytes = 48 * 1024;
  const uint64_t total = snapshot_.size() * sizeof(capnp::word);
  const uint64_t generation = registry_->generation();
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  auto chunk = r.initRegistry();
  chunk.setGeneration(generation);
  chunk.setTotalBytes(total);
  if (get.getKnownGeneration() == generation && get.getOffset() == 0) {
    chunk.setUnchanged(true);
    return reply(c, mb);
  }
  const uint64_t offset = std::min(get.getOffset(), total);
  const uint64_t n = std::min(kChunkBytes, total - offset);
  chunk.setOffset(offset);
  chunk.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(snapshot_.data()) + offset, n));
  return reply(c, mb);
}

// ---- publish/subscribe ---------------------------------------------------------------------

Status Broker::onAdvertise(Conn& c, uint64_t rid, wire::Advertise::Reader adv,
                           std::vector<UniqueFd>& fds) {
  const std::string id = adv.getTopicId().cStr();
  if (!validServiceId(id)) {
    return replyError(c, rid,
                      Status(StatusCode::kInvalidArgument,
                             "topic id '" + id.substr(0, 64) +
                                 "' is not a dotted name of letters, digits, '_' and '-' "
                                 "(e.g. hms.emr.vitals)"));
  }
  if (auto s = mayPublish(c, id); !s) {
    audit("advertise", &c, s, {{"topic", id}});
    return replyError(c, rid, s);
  }
  const detail::TopicGeometry g{adv.getSlotCount(), adv.getSlotBytes()};
  if (auto s = g.validate(); !s) return replyError(c, rid, s);
  if (auto s = checkLimit(c, c.topics.size(), options_.maxTopicsPerClient, "topics",
                          "--max-topics-per-client", "unadvertise topics it no longer publishes");
      !s) {
    return replyError(c, rid, s);
  }
  for (const auto& [key, t] : topics_) {
    if (t.id != id) continue;
    const Conn& owner = *conns_.at(t.publisherClient);
    return replyError(c, rid,
                      Status(StatusCode::kAlreadyExists,
                             "topic " + id + " already has a publisher, '" + owner.name +
                                 "' (pid " + std::to_string(owner.cred.pid) +
                                 "); a topic has one publisher: publish from there, or "
                                 "use another topic id"));
  }
  if (!adv.hasSchemaNodes() || adv.getSchemaNodes().size() == 0) {
    return replyError(
        c, rid,
        Status(StatusCode::kInvalidArgument, "the advertisement of topic " + id +
                                                 " carries no schema nodes for its message type"));
  }
  if (auto s = validateMessageType(adv.getTypeId(), adv.getSchemaNodes()); !s) {
    return replyError(
        c, rid,
        Status(s.code(), "the message type of topic " + id + " is not valid: " + s.message()));
  }
  Topic t;
  if (c.noSharedMemory.empty() && options_.transport != wire::Transport::SOCKET) {
    // The log must come, sealed so that nobody else can ever map it writable, and of the size
    // its geometry says.
    if (fds.size() != 1) {
      return replyError(c, rid,
                        Status(StatusCode::kInvalidArgument,
                               "advertise from a client with shared memory carries the log"));
    }
    if (auto s = detail::checkSealedReadOnly(fds[0].get()); !s) return replyError(c, rid, s);
    auto size = detail::segmentSize(fds[0].get());
    if (!size.ok()) return replyError(c, rid, size.status());
    if (*size != g.segmentBytes()) {
      return replyError(c, rid,
                        Status(StatusCode::kInvalidArgument,
                               "the topic log's size does not match its slot count and size"));
    }
    t.logFd = std::move(fds[0]);
    t.logBytes = *size;
  }
  t.key = nextTopicKey_++;
  t.id = id;
  t.typeId = adv.getTypeId();
  t.typeName = adv.getTypeName().cStr();
  t.displayName = adv.getDisplayName().cStr();
  t.description = adv.getDescription().cStr();
  t.slotCount = g.slotCount;
  t.slotBytes = g.slotBytes;
  t.publisherClient = c.id;
  t.tag = adv.getTag();
  const uint64_t key = t.key;
  {
    capnp::MallocMessageBuilder schema;
    auto ts = schema.initRoot<wire::TopicSchema>();
    ts.setTopicId(id);
    ts.setTypeId(adv.getTypeId());
    ts.setNodes(adv.getSchemaNodes());
    topicSchemas_[id] = toFlat(schema);
  }
  c.topics.insert(key);
  topics_.emplace(key, std::move(t));
  if (auto s = publishRegistry(); !s) {
    topics_.erase(key);
    c.topics.erase(key);
    return replyError(c, rid, s);
  }
  spdlog::info("topic {} (key {}) advertised by client {} '{}'", id, key, c.id, c.name);
  if (policy_) audit("advertise", &c, Status(), {{"topic", id}});
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  r.initAdvertise().setTopicKey(key);
  return reply(c, mb);
}

Status Broker::onUnadvertise(Conn& c, uint64_t rid, uint64_t key) {
  auto it = topics_.find(key);
  if (it == topics_.end() || it->second.publisherClient != c.id) {
    return replyError(c, rid,
                      Status(StatusCode::kNotFound,
                             "this client publishes no topic with key " + std::to_string(key)));
  }
  removeTopic(key, detail::kEndClosed, "unadvertised");
  publishRegistry();
  return replyOk(c, rid);
}

Status Broker::onSubscribe(Conn& c, uint64_t rid, wire::Subscribe::Reader sub) {
  const std::string id = sub.getTopicId().cStr();
  if (auto s = maySubscribe(c, id); !s) {
    audit("subscribe", &c, s, {{"topic", id}});
    return replyError(c, rid, s);
  }
  auto it = std::find_if(topics_.begin(), topics_.end(),
                         [&](const auto& kv) { return kv.second.id == id; });
  if (it == topics_.end()) {
    return replyError(c, rid,
                      Status(StatusCode::kNotFound,
                             "no publisher advertises topic '" + id.substr(0, 200) +
                                 "'; start its publisher first (a subscription does not wait "
                                 "for one)"));
  }
  if (auto s =
          checkLimit(c, c.subscriptions.size(), options_.maxSubscriptionsPerClient, "subscriptions",
                     "--max-subscriptions-per-client", "close subscriptions it no longer reads");
      !s) {
    return replyError(c, rid, s);
  }
  Topic& t = it->second;
  if (sub.getTypeId() != t.typeId) {
    return replyError(
        c, rid,
        Status(StatusCode::kFailedPrecondition,
               "topic " + id + " carries " + t.typeName + " messages; subscribe with that type"));
  }
  if (sub.getHistory() >= t.slotCount) {
    return replyError(
        c, rid,
        Status(StatusCode::kInvalidArgument, "history of " + std::to_string(sub.getHistory()) +
                                                 " messages: topic " + id + " keeps the last " +
                                                 std::to_string(t.slotCount - 1) + " at most"));
  }
  Conn& publisher = *conns_.at(t.publisherClient);
  if (publisher.dropping) {
    return replyError(c, rid,
                      Status(StatusCode::kUnavailable, "the publisher of " + id + " is gone"));
  }
  auto transport = channelTransport(c, publisher, id);
  if (!transport.ok()) return replyError(c, rid, transport.status());
  const bool shm = *transport == wire::Transport::SHARED_MEMORY && t.logFd;
  const bool drop = sub.getPolicy() == wire::SlowConsumerPolicy::DROP_OLDEST;
  Subscription s;
  s.id = nextSubscriptionId_++;
  s.topicKey = t.key;
  s.client = c.id;
  s.shm = shm;
  UniqueFd subscriberEnd, publisherEnd;
  if (shm) {
    auto fd = detail::createSegment("hms-ffi-cursor", detail::kCursorBytes);
    if (!fd.ok()) return replyError(c, rid, fd.status());
    auto map = detail::Mapping::map(fd->get(), detail::kCursorBytes, true);
    if (!map.ok()) return replyError(c, rid, map.status());
    auto* cur = map->as<detail::SubscriberCursor>();
    detail::initCursor(cur,
                       drop ? detail::SlowConsumerPolicy::kDropOldest
                            : detail::SlowConsumerPolicy::kBlockPublisher,
                       0);  // the publisher attaches it
    cur->history = sub.getHistory();
    s.cursorFd = std::move(*fd);
    s.cursor = std::move(*map);
  } else {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      return replyError(c, rid,
                        Status(StatusCode::kResourceExhausted,
                               detail::errnoText("socketpair for a subscription", errno)));
    }
    subscriberEnd.reset(sv[0]);
    publisherEnd.reset(sv[1]);
  }
  // The publisher first: it attaches the cursor (or starts sending to the socket) while the
  // subscriber maps what the reply brings.
  {
    capnp::MallocMessageBuilder mb;
    auto e = mb.initRoot<wire::BrokerMessage>().initEvent().initSubscriberAdded();
    e.setTopicKey(t.key);
    e.setSubscriptionId(s.id);
    e.setTransport(shm ? wire::Transport::SHARED_MEMORY : wire::Transport::SOCKET);
    e.setPolicy(sub.getPolicy());
    e.setHistory(sub.getHistory());
    e.setSubscriberPid(uint32_t(c.cred.pid));
    e.setSubscriberName(c.name);
    e.setPublisherTag(t.tag);
    const int out[1] = {shm ? s.cursorFd.get() : publisherEnd.get()};
    if (!sendOrDrop(publisher, mb, out, 1)) {
      return replyError(c, rid,
                        Status(StatusCode::kUnavailable,
                               "the publisher of " + id +
                                   " did not take the subscription (it does not read its "
                                   "control socket, or it is gone)"));
    }
  }
  capnp::MallocMessageBuilder mb;
  auto r = mb.initRoot<wire::BrokerMessage>().initReply();
  r.setId(rid);
  r.initStatus().setCode(0);
  auto o = r.initSubscribe();
  o.setSubscriptionId(s.id);
  o.setTopicKey(t.key);
  o.setTransport(shm ? wire::Transport::SHARED_MEMORY : wire::Transport::SOCKET);
  o.setSlotCount(t.slotCount);
  o.setSlotBytes(t.slotBytes);
  o.setLogBytes(t.logBytes);
  o.setPublisherPid(uint32_t(publisher.cred.pid));
  o.setPublisherName(publisher.name);
  const int shmFds[2] = {t.logFd.get(), s.cursorFd.get()};
  const int sockFds[1] = {subscriberEnd.get()};
  const uint64_t sid = s.id;
  t.subscriptions.insert(sid);
  c.subscriptions.insert(sid);
  subscriptions_.emplace(sid, std::move(s));
  publishRegistry();
  spdlog::debug("subscription {}: client {} to topic {} over {}, {}", sid, c.id, id,
                shm ? "shared memory" : "a socketpair", drop ? "drop_oldest" : "block_publisher");
  if (policy_) audit("subscribe", &c, Status(), {{"topic", id}});
  return shm ? reply(c, mb, shmFds, 2) : reply(c, mb, sockFds, 1);
}

Status Broker::onUnsubscribe(Conn& c, uint64_t rid, uint64_t id) {
  auto it = subscriptions_.find(id);
  if (it != subscriptions_.end() && it->second.client == c.id) {
    removeSubscription(id, detail::kEndClosed, "unsubscribed");
    publishRegistry();
  }
  return replyOk(c, rid);
}

void Broker::removeTopic(uint64_t key, uint32_t state, const char* why) {
  auto it = topics_.find(key);
  if (it == topics_.end()) return;
  Topic t = std::move(it->second);
  topics_.erase(it);
  for (uint64_t sid : t.subscriptions) {
    auto sit = subscriptions_.find(sid);
    if (sit == subscriptions_.end()) continue;
    Subscription& s = sit->second;
    if (auto* cur = s.cursor.as<detail::SubscriberCursor>()) {
      // The log says so itself when the publisher closes it; a dead one cannot.
      detail::storeRelease(cur->publisherState, state);
      detail::wakeAlways(cur->subscriberWake);
    }
    // (A socket subscriber reads EOF: the publisher's end died with it or was closed by it.)
    if (auto pc = conns_.find(s.client); pc != conns_.end()) pc->second->subscriptions.erase(sid);
    subscriptions_.erase(sit);
  }
  if (auto pc = conns_.find(t.publisherClient); pc != conns_.end()) pc->second->topics.erase(key);
  spdlog::info("topic {} (key {}) ended ({})", t.id, key, why);
}

void Broker::removeSubscription(uint64_t id, uint32_t state, const char* why) {
  auto it = subscriptions_.find(id);
  if (it == subscriptions_.end()) return;
  Subscription s = std::move(it->second);
  subscriptions_.erase(it);
  if (auto* cur = s.cursor.as<detail::SubscriberCursor>()) {
    if (detail::loadAcquire(cur->state) == detail::kEndOpen)
      detail::storeRelease(cur->state, state);
    detail::wakeAlways(cur->publisherWake);
  }
  if (auto pc = conns_.find(s.client); pc != conns_.end()) pc->second->subscriptions.erase(id);
  auto tit = topics_.find(s.topicKey);
  if (tit == topics_.end()) return;
  tit->second.subscriptions.erase(id);
  spdlog::debug("subscription {} to {} ended ({})", id, tit->second.id, why);
  capnp::MallocMessageBuilder mb;
  auto e = mb.initRoot<wire::BrokerMessage>().initEvent().initSubscriberRemoved();
  e.setTopicKey(s.topicKey);
  e.setSubscriptionId(id);
  e.setReason(why);
  e.setPublisherTag(tit->second.tag);
  sendEvent(tit->second.publisherClient, mb);
}

}  // namespace hms::ffi::broker
