// hms-ffid: the control plane. One thread, one epoll loop: it accepts clients on the control
// socket, keeps the registry, creates every segment, and notices when a client goes. It is never on
// the data path: once a channel is open, calls flow between the two clients' mappings only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "audit.hpp"
#include "contract_store.hpp"
#include "hms/ffi/control.capnp.h"
#include "hms/ffi/status.hpp"
#include "metrics_book.hpp"
#include "metrics_endpoint.hpp"
#include "os.hpp"
#include "policy.hpp"
#include "registry_segment.hpp"
#include "systemd.hpp"

namespace hms::ffi::broker {

struct BrokerOptions {
  std::string socketPath;  // empty: the library's default rules
  uint64_t registryBytes = detail::kDefaultRegistryBytes;
  // Channel transport: AUTO (shared memory where both ends can map it), SHARED_MEMORY (refuse
  // clients without it), SOCKET (every channel a socketpair).
  wire::Transport transport = wire::Transport::AUTO;
  // What one client may hold at once (0: no limit), so that no client can take the registry,
  // the broker's descriptors or its memory from the others. Beyond a limit a request is
  // RESOURCE_EXHAUSTED, naming the limit and its flag.
  uint32_t maxServicesPerClient = 1024;       // --max-services-per-client
  uint32_t maxTopicsPerClient = 1024;         // --max-topics-per-client
  uint32_t maxChannelsPerClient = 4096;       // --max-channels-per-client (as the caller)
  uint32_t maxSubscriptionsPerClient = 4096;  // --max-subscriptions-per-client
  // Messages the broker keeps for a client whose control socket is full (a provider busy while
  // many callers open channels to it); beyond, the client is treated as not reading, and gone.
  uint32_t maxQueuedMessagesPerClient = 8192;  // --max-queued-messages-per-client
  // Where the contract store lives (docs/contracts.md); empty: defaultStateDir(); ":memory:"
  // keeps contracts for this broker's life only.
  std::string stateDir;
  // Access policy (docs/security.md): empty, none (every local peer with socket access may do
  // anything, as before; one warning at startup). Reloaded on SIGHUP.
  std::string policyPath;
  // Token settings from the configuration file, replacing the policy file's (config.hpp).
  PolicyOverlay policyOverlay;
  // Where audit records go: "journald", a file, "-" (standard error); empty: journald when it
  // runs, else <state dir>/audit.jsonl (standard error with --state-dir :memory:).
  std::string auditLog;
  // The socket's group (name or number; empty: the broker's) and mode; a socket directory the
  // broker creates gets the same group and mode 0750 (g+rx, so that the group can reach it).
  std::string socketGroup;
  uint32_t socketMode = 0660;
  // trace, debug, info, warn, error, critical, off; applied by main() at start and on a reload.
  std::string logLevel = "info";
  std::string logFormat = "auto";  // or "text", "json", "journal" (logging.hpp)
  // Where a reload (SIGHUP) gets the options anew: the configuration file, then the flags over
  // it (main.cpp). Empty: only the policy file is read again.
  std::string configPath;
  // Where the metrics endpoint listens (docs/observability.md): "HOST:PORT" or "unix:PATH";
  // empty: none (the counters are kept all the same; `hms-ffi stats` reads them).
  std::string metricsListen;
};

class Broker {
 public:
  explicit Broker(BrokerOptions options);
  ~Broker();

  // Takes the socket path: refuses (FAILED_PRECONDITION) when another broker serves it, removes
  // a stale socket left by a dead one.
  Status start();
  // Serves until SIGTERM or SIGINT (or requestStop()).
  Status run();
  void requestStop();
  // How reload() rebuilds the options: the configuration file and the command line's flags.
  void setReloadSource(std::function<Result<BrokerOptions>()> source) {
    reloadSource_ = std::move(source);
  }

  const std::string& socketPath() const { return socketPath_; }

 private:
  struct Conn {
    uint64_t id = 0;
    detail::UniqueFd sock;
    detail::PeerCredentials cred;
    std::string name;
    bool helloed = false;
    Identity identity;               // at hello: kernel identity and verified token
    std::string token;               // as presented, to verify again on a reload
    std::vector<std::string> roles;  // under the current policy (rolesOf; recomputed on reload)
    detail::UniqueFd doorbellFd;
    detail::Mapping doorbell;
    wire::Transport transport = wire::Transport::AUTO;  // the client's own setting
    std::string noSharedMemory;                         // non-empty: it has none, and why
    std::set<uint64_t> services;                        // keys
    std::set<uint64_t> channels;                        // ids, as caller or as service
    uint32_t callerChannels = 0;                        // of `channels`, those it opened
    std::set<uint64_t> topics;                          // keys, as publisher
    std::set<uint64_t> subscriptions;                   // ids, as subscriber
    // Treated as gone (dropLater()): nothing more is read from or sent to it; it is disconnected
    // once the event being handled is done with it.
    bool dropping = false;
    std::string dropWhy;
    // What its socket had no room for, in order: a SOCK_SEQPACKET socket holds only
    // net.unix.max_dgram_qlen + 1 messages (11 by default), which a burst of channel opens from
    // many callers exceeds while the client is busy for a moment. Sent as it reads (EPOLLOUT);
    // past kMaxQueuedMessages or kMaxQueuedFds it is treated as not reading.
    struct Queued {
      kj::Array<capnp::word> flat;
      std::vector<detail::UniqueFd> fds;  // copies: the originals may close before it goes
    };
    std::deque<Queued> outbox;
    size_t outboxFds = 0;
  };
  struct Service {
    uint64_t key = 0;
    uint64_t clientId = 0;
    uint64_t tag = 0;
    detail::FlatWords descriptor;  // flat wire::ServiceDescriptor, copied from the request
    std::string id;
    uint32_t major = 0, minor = 0, patch = 0;
    uint32_t ringBytes = 0;
    std::set<uint64_t> channels;
  };
  // A caller of another host for whom a gateway opened a channel (OpenChannel.onBehalfOf), as
  // the gateway described it: informative but for `host` and `roles`, which decide its grant.
  struct RemoteCaller {
    std::string host, name, subject, issuer;
    uint32_t uid = 0, pid = 0;
    bool authenticated = false;
    std::vector<std::string> homeRoles;  // its roles on its own host
  };
  // Who a grant is for: the opener itself, or the remote caller it opened the channel for.
  struct Grantee {
    Identity identity;  // a remote caller's has no kernel identity here (uid and gid -1)
    std::vector<std::string> roles;
    std::string name;
    std::string host;  // empty: this host
    const RemoteCaller* remote = nullptr;
  };

  struct Channel {
    uint64_t id = 0;
    std::shared_ptr<const RemoteCaller> remote;  // null: the caller is the opener
    uint64_t callerClient = 0;
    uint64_t serviceClient = 0;
    uint64_t serviceKey = 0;
    detail::UniqueFd fd;  // shared memory only: the control page; a socket channel's ends
                          // belong to the clients
    detail::Mapping map;
    // Shared memory, until the service attaches its response ring: the caller's open request,
    // answered then (0: answered).
    uint64_t pendingRid = 0;
    uint32_t ringBytes = 0;
    uint32_t maxMessageBytes = 0;
    // The grant sent to the service (by ordinal), to see on reload whether the policy changed it.
    std::vector<bool> allowed;
    std::vector<AuditLevel> audit;
  };

  // A topic and its publisher (docs/pubsub.md). The log belongs to the publisher, which writes
  // it; the broker keeps the sealed descriptor to hand out and never maps it.
  struct Topic {
    uint64_t key = 0;
    std::string id;
    uint64_t typeId = 0;
    std::string typeName, displayName, description;
    uint32_t slotCount = 0, slotBytes = 0;
    uint64_t publisherClient = 0;
    uint64_t tag = 0;        // the publisher's handle (Advertise.tag)
    detail::UniqueFd logFd;  // none when the publisher has no shared memory
    uint64_t logBytes = 0;
    std::set<uint64_t> subscriptions;
  };
  struct Subscription {
    uint64_t id = 0;
    uint64_t topicKey = 0;
    uint64_t client = 0;
    bool shm = false;
    detail::UniqueFd cursorFd;  // shared memory: the cursor page, mapped to close it for a
    detail::Mapping cursor;     // subscriber that dies, and to tell it its publisher did
  };

  // start()'s end: the event loop's descriptors, once the socket exists or was passed.
  Status finishStart();
  Status
  lockSocketPath();  // <socket>.lock, flock'ed: FAILED_PRECONDITION when another broker has it
  Status openContractStore();
  void accept();
  // Out of descriptors (EMFILE, ENFILE) or kernel memory, accept() would fail at once again on
  // the still-readable listening socket: the loop would spin and the log fill. Instead the socket
  // leaves the epoll set (waiting clients stay in its backlog) until a client leaves or a second
  // passes, and the shortage is logged once per episode.
  void pauseAccepting(int err);
  void resumeAccepting();
  void onReadable(uint64_t connId);
  void disconnect(uint64_t connId, const char* why);
  // A client found unable to take what the broker must send it (its socket's queue is full: it
  // does not read) is gone, whether it is the one whose request is being handled, a provider, a
  // publisher or a peer told of a closed channel. Disconnecting it at once would pull its Conn
  // from under the handler that found it, so it is marked here and disconnected by reapDropped()
  // between events.
  void dropLater(uint64_t connId, std::string why);
  void reapDropped();
  // Sends a message to a client, or queues it behind those its socket had no room for (Conn::
  // outbox). A client past the outbox's bounds is dropped (dropLater()). False if the message
  // will not reach it.
  bool send(Conn& to, kj::Array<capnp::word> flat, const int* fds, size_t n);
  bool sendOrDrop(Conn& to, capnp::MessageBuilder& msg, const int* fds, size_t n);
  // Sends what waits in a client's outbox, as far as its socket takes it (on EPOLLOUT).
  void flushOutbox(uint64_t connId);
  // Whether the broker's epoll wakes it when `c`'s socket has room (its outbox is not empty).
  void watchWritable(Conn& c, bool on);
  Status handle(Conn& c, const std::vector<uint8_t>& bytes, std::vector<detail::UniqueFd>& fds);
  Status reply(Conn& c, capnp::MessageBuilder& msg, const int* fds = nullptr, size_t n = 0);
  Status replyOk(Conn& c, uint64_t requestId);  // an empty OK reply
  // Sends `mb`, or RESOURCE_EXHAUSTED naming `what` when it does not fit a datagram.
  Status replyChecked(Conn& c, uint64_t rid, capnp::MessageBuilder& mb, const std::string& what);
  Status replyError(Conn& c, uint64_t requestId, const Status& s);
  void sendEvent(uint64_t connId, capnp::MessageBuilder& msg, const int* fds = nullptr,
                 size_t n = 0);

  Status onHello(Conn& c, uint64_t rid, wire::Hello::Reader hello,
                 std::vector<detail::UniqueFd>& fds);
  Status onRegister(Conn& c, uint64_t rid, wire::RegisterService::Reader reg);
  Status onUnregister(Conn& c, uint64_t rid, uint64_t key);
  Status onOpen(Conn& c, uint64_t rid, wire::OpenChannel::Reader req,
                std::vector<detail::UniqueFd>& fds);
  Status onAttach(Conn& c, uint64_t rid, uint64_t channelId, std::vector<detail::UniqueFd>& fds);
  // The OK reply to an openChannel request, with the channel's fds.
  Status replyOpened(Conn& c, uint64_t rid, uint64_t channelId, uint64_t segmentBytes,
                     wire::Transport transport, uint32_t maxMessage, const int* fds, size_t n);
  Status onClose(Conn& c, uint64_t rid, uint64_t channelId);
  Status onGetRegistry(Conn& c, uint64_t rid, wire::GetRegistry::Reader get);
  Status onAdvertise(Conn& c, uint64_t rid, wire::Advertise::Reader adv,
                     std::vector<detail::UniqueFd>& fds);
  Status onUnadvertise(Conn& c, uint64_t rid, uint64_t key);
  Status onSubscribe(Conn& c, uint64_t rid, wire::Subscribe::Reader sub);
  Status onUnsubscribe(Conn& c, uint64_t rid, uint64_t id);
  Status onGetSchema(Conn& c, uint64_t rid, wire::GetSchema::Reader get);
  Status onListContracts(Conn& c, uint64_t rid, wire::ListContracts::Reader list);
  Status onGetTopicSchema(Conn& c, uint64_t rid, capnp::Text::Reader topicId);
  Status onGetMetrics(Conn& c, uint64_t rid, wire::GetMetrics::Reader get);
  // The broker's gauges, for the metrics book (after every change of what they count).
  void publishGauges();
  // Checks a registration's contract against what the broker knows of the same id at the same
  // major version, stores it and remembers it. INVALID_ARGUMENT, FAILED_PRECONDITION or the
  // store's error.
  Status acceptContract(const Conn& c, wire::RegisterService::Reader reg);
  // The publisher left (kEndClosed) or died (kEndDead): its subscribers read what is in the log,
  // then see the end.
  void removeTopic(uint64_t key, uint32_t state, const char* why);
  // A subscriber left or died: its cursor holds the publisher back no more, the publisher wakes
  // and is told.
  void removeSubscription(uint64_t id, uint32_t state, const char* why);
  // The transport of a channel from `caller` to `provider`, or why there can be none.
  Result<wire::Transport> channelTransport(const Conn& caller, const Conn& provider,
                                           const std::string& serviceId) const;

  // Marks one end of a channel (closed by it, or dead), wakes whoever waits on the other end,
  // tells the other end's client and forgets the channel.
  void endChannel(uint64_t channelId, bool callerSide, uint32_t state, const char* why);
  void removeService(uint64_t key, uint32_t channelState, const char* why);
  // Publishes the registry as it now is: RESOURCE_EXHAUSTED (naming --registry-bytes) if it does
  // not fit the segment, and then nothing changes for the clients.
  Status publishRegistry();
  // RESOURCE_EXHAUSTED when `held` has reached `limit` (0: none).
  static Status checkLimit(const Conn& c, size_t held, uint32_t limit, const char* what,
                           const char* flag, const char* advice);
  // Its provider leaves: the contract's lastSeen becomes now (in memory and in the store).
  void touchContract(const Service& s);

  // Access control (access.cpp, docs/security.md).
  Status loadPolicy();  // at start: --policy, or none (warned)
  Status openAuditLog();
  // SIGHUP: the configuration (setReloadSource) and the policy read again; anything bad keeps
  // all of the old.
  void reload();
  // The new policy in force: what it takes away ends (reload()).
  void applyPolicy(std::shared_ptr<const Policy> policy);
  // Ends a channel the policy no longer grants as it is, telling both ends: the service stops
  // serving it (a socket channel's caller then sees its socket close) and the caller opens it
  // again on its next call.
  void endChannelForPolicy(uint64_t channelId, const char* why);
  // A client's token is part of its identity only while it is valid: when it expires (or, on a
  // reload, no longer verifies) the client is disconnected; it reconnects with the token its
  // options or token file give then, or is refused.
  void dropExpiredTokens();
  // epoll_wait's timeout: until the next token expiry (nextTokenExpiry_), or a second while
  // accepting is paused; -1: none.
  int waitTimeoutMs();
  // The kernel identity plus, if `token` is non-empty, its verified claims; UNAUTHENTICATED when
  // the token does not verify.
  Status authenticate(Conn& c, const std::string& token);
  // What `caller` may call of `svc`: per method ordinal, allowed / audit level / why not.
  struct GrantDecision {
    std::vector<bool> allowed;
    std::vector<AuditLevel> audit;
    std::vector<std::string> denied;
    bool any = false;  // some method is allowed
  };
  // The grantee of a channel `opener` opens, for itself or for `remote`: PERMISSION_DENIED when
  // the policy does not let it speak for callers of that host.
  Result<Grantee> granteeOf(const Conn& opener, const RemoteCaller* remote) const;
  GrantDecision decideGrant(const Grantee& who, const Service& svc) const;
  void fillGrant(wire::Grant::Builder g, const Grantee& who, const GrantDecision& d) const;
  Status mayProvide(const Conn& c, const std::string& serviceId) const;
  Status mayPublish(const Conn& c, const std::string& topicId) const;
  Status maySubscribe(const Conn& c, const std::string& topicId) const;
  // One audit record: `event` (connect, register, open, advertise, subscribe, reload), the
  // outcome ("allowed", "denied", "failed"), the client's identity, and `fields`.
  void audit(const std::string& event, const Conn* c, const Status& outcome,
             std::vector<detail::AuditField> fields = {});
  Status applySocketAccess(const std::string& path, bool isDirectory);

  BrokerOptions options_;
  std::string socketPath_;
  detail::UniqueFd lockFd_;
  detail::UniqueFd listenFd_;
  detail::UniqueFd epollFd_;
  detail::UniqueFd signalFd_;
  detail::UniqueFd stopFd_;
  std::unique_ptr<detail::RegistryWriter> registry_;
  std::unique_ptr<ContractStore> store_;
  std::shared_ptr<const Policy> policy_;  // null: no policy
  std::function<Result<BrokerOptions>()> reloadSource_;
  std::unique_ptr<detail::AuditLog> audit_;
  gid_t socketGid_ = gid_t(-1);
  int64_t nextTokenExpiry_ = INT64_MAX;  // unix seconds; the earliest exp of a live token
  // systemd (docs/operations.md): the socket it passed (then systemd owns the path), and the
  // notifications of a Type=notify unit. STATUS= follows the counts, at most once a second.
  bool activated_ = false;
  Notifier notifier_;
  std::string sentStatus_;
  int64_t statusSentMs_ = 0;
  std::string statusText() const;
  // Sends STATUS= if the counts changed; returns the milliseconds until a held-back change is
  // due (-1: none), for the event loop's timeout.
  int updateStatus();
  // Every contract accepted (this broker's life and the store's history), by id then version.
  using VersionKey = std::tuple<uint32_t, uint32_t, uint32_t>;
  std::map<std::string, std::map<VersionKey, FlatContract>> contracts_;
  // The last message type of every topic advertised in this broker's life, flat
  // wire::TopicSchema, so that a JSON publisher can take over a topic whose publisher left.
  std::map<std::string, detail::FlatWords> topicSchemas_;
  detail::FlatWords snapshot_;  // the published snapshot, flat, for getRegistry
  std::map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::map<uint64_t, Service> services_;
  std::map<uint64_t, Channel> channels_;
  std::map<uint64_t, Topic> topics_;
  std::map<uint64_t, Subscription> subscriptions_;
  // Call metrics (docs/observability.md): every client's segment, the totals of those gone;
  // the endpoint reads them on its own thread.
  MetricsBook metricsBook_;
  std::unique_ptr<MetricsEndpoint> metricsEndpoint_;
  uint64_t connectionsTotal_ = 0;
  uint64_t reconnectsTotal_ = 0;
  int64_t startedUnixMs_ = 0;
  std::vector<uint64_t> dropped_;  // conns marked by dropLater(), not yet disconnected
  // Service keys, channel ids, topic keys and subscription ids outlive this broker in its
  // clients (an open channel keeps working across a restart), so a later broker must not hand
  // out the same numbers: each starts at this life's random epoch in the high 32 bits
  // (idEpoch()). Client ids name nothing after the connection ends and stay small.
  uint64_t nextConnId_ = 1;
  uint64_t nextServiceKey_ = 0;
  uint64_t nextChannelId_ = 0;
  uint64_t nextTopicKey_ = 0;
  uint64_t nextSubscriptionId_ = 0;
  bool socketCreated_ = false;
  bool acceptPaused_ = false;  // the listening socket is out of the epoll set
  bool fdShortage_ = false;    // an episode logged and not yet over (backlog not drained)
  // Descriptors held in all clients' outboxes (Conn::outbox), and their bound: half the
  // broker's RLIMIT_NOFILE at start, so that clients slow to read never take the descriptors
  // the others' requests need.
  size_t queuedFds_ = 0;
  size_t maxQueuedFds_ = 512;
};

}  // namespace hms::ffi::broker
