@0xe528cebafbc99d79;
# The control protocol between a client (libhmsffi) and the broker (hms-ffid).
# One Cap'n Proto message per SOCK_SEQPACKET datagram, single segment, flat. File descriptors
# travel beside the message with SCM_RIGHTS; each message says how many it carries and what they are.
# The broker takes the client's identity from SO_PEERCRED, never from these messages.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ffi::wire");
using Schema = import "/capnp/schema.capnp";

const protocolVersion :UInt32 = 2;  # 2: registrations and advertisements carry schema nodes

struct Version {
  major @0 :UInt32;
  minor @1 :UInt32;
  patch @2 :UInt32;
}

struct MethodInfo {
  name @0 :Text;
  ordinal @1 :UInt16;
  paramSchemaId @2 :UInt64;
  resultSchemaId @3 :UInt64;
  stream @4 :Bool;             # a server stream: results come as items (Stub::openStream)
}

struct ServiceDescriptor {
  id @0 :Text;                 # dotted service id, e.g. "hms.emr.patient"
  version @1 :Version;
  interfaceId @2 :UInt64;      # Cap'n Proto type id of the interface the service implements
  interfaceName @3 :Text;
  methods @4 :List(MethodInfo);
  displayName @5 :Text;
  description @6 :Text;
  ringBytes @7 :UInt32;        # size of each ring of a channel to this service
}

# How a channel carries its messages. `auto` is a preference only: the broker picks shared memory
# when both ends can map it and nothing forces sockets.
enum Transport {
  auto @0;
  sharedMemory @1;
  socket @2;
}

struct StatusInfo {
  code @0 :UInt32;             # gRPC numbering
  message @1 :Text;
}

struct Request {
  id @0 :UInt64;               # chosen by the client, echoed in the reply
  union {
    hello @1 :Hello;
    register @2 :RegisterService;
    unregister @3 :UInt64;     # service key
    openChannel @4 :OpenChannel;  # shared memory: fd 0 the request ring's data, made by the
                                  # caller and sealed for readers (see OpenChannel)
    closeChannel @5 :UInt64;   # channel id
    getRegistry @6 :GetRegistry;
    advertise @7 :Advertise;   # shared memory: fd 0 the topic's log, sealed (see Advertise)
    unadvertise @8 :UInt64;    # topic key
    subscribe @9 :Subscribe;
    unsubscribe @10 :UInt64;   # subscription id
    getSchema @11 :GetSchema;
    listContracts @12 :ListContracts;
    getTopicSchema @13 :Text;  # topic id
    getMetrics @14 :GetMetrics;
    attachChannel @15 :AttachChannel;  # fd 0: the response ring's data (see AttachChannel)
  }
}

# Contracts (docs/contracts.md). A registration carries the Cap'n Proto schema nodes of its
# interface and of every struct, enum and interface they reach, as capnp::SchemaLoader takes
# them; the broker checks them, keeps every accepted contract in its store and serves them here.
# The registry segment carries only ids.
struct Contract {
  descriptor @0 :ServiceDescriptor;
  nodes @1 :List(Schema.Node);   # empty in listContracts replies
  providerName @2 :Text;         # the provider that registered it last
  firstSeenUnixMs @3 :Int64;     # when the broker first accepted this id and version
  lastSeenUnixMs @4 :Int64;      # when it was last live: registered, or its provider left
}

struct GetSchema {
  serviceId @0 :Text;
  version @1 :Version;           # exact; live or known from the store
}

# Every contract the broker knows (live or only in its store) whose id starts with `prefix`,
# sorted by id then version, in pages that fit a datagram.
struct ListContracts {
  prefix @0 :Text;
  offset @1 :UInt32;             # index of the first contract wanted
}

struct ContractList {
  contracts @0 :List(Contract);  # without their nodes
  nextOffset @1 :UInt32;         # 0: this was the last page
}

struct TopicSchema {
  topicId @0 :Text;
  typeId @1 :UInt64;
  nodes @2 :List(Schema.Node);   # the message struct's node and every node it reaches
}

# Publish/subscribe (docs/pubsub.md). A publisher with shared memory creates its topic's log
# (a memfd it maps read-write), seals it against any further writable mapping
# (F_SEAL_FUTURE_WRITE, F_SEAL_SHRINK, F_SEAL_GROW) and hands it over with `advertise`; the broker
# checks the seals and gives the same descriptor to subscribers, who can map it read-only only.
# A publisher without shared memory sends no descriptor; its subscribers all get sockets.
struct Advertise {
  topicId @0 :Text;            # dotted, like a service id, e.g. "hms.emr.vitals"
  typeId @1 :UInt64;           # Cap'n Proto type id of the message struct
  typeName @2 :Text;
  slotCount @3 :UInt32;        # the log's geometry (a power of two)
  slotBytes @4 :UInt32;        # header included; a multiple of 64
  displayName @5 :Text;
  description @6 :Text;
  tag @7 :UInt64;              # the client's own handle; echoed in its subscriber events
  schemaNodes @8 :List(Schema.Node);  # the message struct's node and every node it reaches
}

enum SlowConsumerPolicy {
  blockPublisher @0;           # the publisher waits for this subscriber: nothing is lost
  dropOldest @1;               # the publisher never waits; what it laps is counted as missed
}

struct Subscribe {
  topicId @0 :Text;
  typeId @1 :UInt64;           # must be the topic's
  policy @2 :SlowConsumerPolicy;
  history @3 :UInt32;          # start this many messages back (at most slotCount - 1)
}

# A registry snapshot for a client without shared memory, in chunks (a snapshot may be larger than
# a datagram). The reply is `unchanged` when the broker's generation is `knownGeneration`.
struct GetRegistry {
  knownGeneration @0 :UInt64;
  offset @1 :UInt64;
}

struct Hello {
  protocolVersion @0 :UInt32;
  clientName @1 :Text;
  hasDoorbell @2 :Bool;        # fd 0 is this client's doorbell from an earlier broker (reconnect)
  transport @3 :Transport;     # the client's setting (ClientOptions, $HMS_FFI_TRANSPORT)
  noSharedMemory @4 :Text;     # non-empty: this client cannot map shared memory, and why
  token @5 :Text;              # a JWT adding claims to the kernel's identity (docs/security.md);
                               # verified by the broker at hello, never forwarded
  mapsMetrics @6 :Bool;        # with noSharedMemory set: this client can still map its metrics
                               # segment (its channels use sockets by choice)
}

struct RegisterService {
  descriptor @0 :ServiceDescriptor;
  tag @1 :UInt64;              # the client's own handle; echoed in ChannelOpened
  schemaNodes @2 :List(Schema.Node);  # the interface's node and every node it reaches
}

# A channel over shared memory is three memfds: the broker's control page (header, end states,
# each ring's head and wake words; both ends map it writable) and one per ring, made and written
# only by that ring's producer, sealed against new writable mappings (F_SEAL_FUTURE_WRITE, and
# against resizing) before anyone else sees it, and mapped read-only by its consumer. The caller
# sends its request ring with OpenChannel (ServiceDescriptor.ringBytes long); the service sends
# its response ring with AttachChannel once ChannelOpened reached it; the broker answers the
# caller's OpenChannel only then. Without fd 0 the channel is a socket one, or refused if it
# must be shared memory.
struct OpenChannel {
  serviceKey @0 :UInt64;
  # Set by a gateway (docs/gateway.md) opening the channel for a caller of another host: the
  # broker decides the grant for that caller, if its policy lets this client speak for callers of
  # that host (remote_callers), and the service sees that caller.
  onBehalfOf @1 :RemoteCaller;
}

# A caller of another host as its own broker described it to the gateway there, and `host` the
# name the link's TLS certificate carries.
struct RemoteCaller {
  host @0 :Text;
  name @1 :Text;
  uid @2 :UInt32;              # on its own host
  pid @3 :UInt32;
  subject @4 :Text;
  issuer @5 :Text;
  authenticated @6 :Bool;
  roles @7 :List(Text);        # on its own host
}

struct AttachChannel {
  channelId @0 :UInt64;        # of a ChannelOpened this client received, not attached yet
}

struct Reply {
  id @0 :UInt64;
  status @1 :StatusInfo;       # code 0 = OK; otherwise the union below is `none`
  union {
    none @2 :Void;
    hello @3 :HelloReply;      # fd 0: registry segment (read-only), fd 1: this client's doorbell,
                               # then (when metricsBytes > 0) this client's metrics segment
    register @4 :RegisterReply;
    openChannel @5 :OpenChannelReply;  # shm: fd 0 the control page, fd 1 the response ring
                                       # (read-only), fd 2 the service's doorbell;
                                       # socket: fd 0 the caller's end of the socketpair
    registry @6 :RegistryChunk;
    advertise @7 :AdvertiseReply;
    subscribe @8 :SubscribeReply;  # shm: fd 0 the log (read-only), fd 1 the cursor page;
                                   # socket: fd 0 the subscriber's end of the socketpair
    schema @9 :Contract;
    contracts @10 :ContractList;
    topicSchema @11 :TopicSchema;
    metrics @12 :MetricsPage;
  }
}

struct AdvertiseReply {
  topicKey @0 :UInt64;
}

struct SubscribeReply {
  subscriptionId @0 :UInt64;
  topicKey @1 :UInt64;
  transport @2 :Transport;     # sharedMemory or socket
  slotCount @3 :UInt32;
  slotBytes @4 :UInt32;
  logBytes @5 :UInt64;
  publisherPid @6 :UInt32;
  publisherName @7 :Text;
}

struct RegistryChunk {
  generation @0 :UInt64;
  totalBytes @1 :UInt64;       # of the flat snapshot message
  offset @2 :UInt64;
  data @3 :Data;               # bytes [offset, offset + size) of the snapshot
  unchanged @4 :Bool;
}

struct HelloReply {
  clientId @0 :UInt64;
  registryBytes @1 :UInt64;
  brokerPid @2 :UInt32;
  sharedMemory @3 :Bool;       # false: no segments come with this reply; the registry comes by
                               # getRegistry and every channel of this client is a socket
  metricsBytes @4 :UInt64;     # > 0: the last fd is the metrics segment the client writes
                               # (fd 2 with shared memory, fd 0 without)
                               # (libclient/src/metrics_layout.hpp); 0: the client keeps none
}

# Metrics (docs/observability.md): the broker's merge of every client's metrics segment and of
# the totals of clients gone, per service and method, sorted by service then method, in pages.
struct GetMetrics {
  offset @0 :UInt32;             # index of the first entry wanted (methods, topics, rings)
  after @1 :MetricsKey;          # when set: the page starts after this entry (offset unused)
}

# An entry of the metrics pages, by what sorts it: pages asked for after a key do not skip or
# repeat an entry when series are added between two pages (an offset would).
struct MetricsKey {
  section @0 :UInt8;             # 0: none (use offset), 1: methods, 2: topics, 3: rings
  name @1 :Text;                 # the service id, or the topic id
  method @2 :Text;               # methods only
}

# A latency histogram: log-linear buckets (metricsBucket in metrics_layout.hpp), only those not
# empty, as (bucket index, count) pairs in increasing index.
struct Histogram {
  bucketIndex @0 :List(UInt16);
  bucketCount @1 :List(UInt64);
  count @2 :UInt64;
  sumNs @3 :UInt64;
  maxNs @4 :UInt64;              # the longest seen (by live clients and clients gone)
}

struct MethodMetrics {
  service @0 :Text;
  method @1 :Text;
  calls @2 :List(UInt64);        # calls ended, as their callers saw them, by status code 0..16
  inFlight @3 :UInt64;           # calls begun by live callers and not yet ended
  callDuration @4 :Histogram;    # as the callers saw them, send to reply
  handled @5 :List(UInt64);      # calls the service ran, by the code it answered, 0..16
  handlerDuration @6 :Histogram; # as the service saw them, handler start to answer
}

struct BrokerGauges {
  clients @0 :UInt32;
  channels @1 :UInt32;
  services @2 :UInt32;
  topics @3 :UInt32;
  subscriptions @4 :UInt32;
  registryGeneration @5 :UInt64;
  connectionsTotal @6 :UInt64;   # hellos accepted since the broker started
  reconnectsTotal @7 :UInt64;    # of those, clients back from an earlier connection
  metricsSlotsRefused @8 :UInt64;  # series not counted: a client's metrics segment was full
  startedUnixMs @9 :Int64;
}

struct TopicMetrics {
  topic @0 :Text;
  published @1 :UInt64;          # messages published
  publishedBytes @2 :UInt64;
  delivered @3 :UInt64;          # summed over the subscribers
  dropped @4 :UInt64;            # messages subscribers missed
  lagHighWater @5 :Float64;      # the furthest a subscriber fell behind, 0..1 of the log
}

struct RingMetrics {
  service @0 :Text;
  requestHighWater @1 :Float64;  # the fullest a request ring was, 0..1
  requestFull @2 :UInt64;        # times a caller found its request ring full
  responseHighWater @3 :Float64;
  responseFull @4 :UInt64;
}

# Pages run over the methods, then the topics, then the rings: `offset` and `total` count all.
struct MetricsPage {
  methods @0 :List(MethodMetrics);
  total @1 :UInt32;              # methods, topics and rings in all pages
  gauges @2 :BrokerGauges;
  takenUnixNs @3 :Int64;         # when the broker read the counters
  topics @4 :List(TopicMetrics);
  rings @5 :List(RingMetrics);
  more @6 :Bool;                 # entries follow this page: ask again, after its last one
}

struct RegisterReply {
  serviceKey @0 :UInt64;
}

struct OpenChannelReply {
  channelId @0 :UInt64;
  segmentBytes @1 :UInt64;
  transport @2 :Transport;     # sharedMemory or socket
  maxMessageBytes @3 :UInt32;  # the channel's limit (the segment header says it too, for shm)
}

# Sent by the broker unprompted.
struct Event {
  union {
    channelOpened @0 :ChannelOpened;   # shared memory: fd 0 the control page, fd 1 the request
                                       # ring (read-only), fd 2 (if the caller has one) the
                                       # caller's doorbell; answer with AttachChannel. Socket:
                                       # fd 0 the service's end of the socketpair
    channelClosed @1 :ChannelClosed;
    subscriberAdded @2 :SubscriberAdded;      # to the publisher. fd 0: the cursor page (shm)
                                              # or the publisher's end of the socketpair
    subscriberRemoved @3 :SubscriberRemoved;  # to the publisher
  }
}

struct SubscriberAdded {
  topicKey @0 :UInt64;
  subscriptionId @1 :UInt64;
  transport @2 :Transport;
  policy @3 :SlowConsumerPolicy;
  history @4 :UInt32;
  subscriberPid @5 :UInt32;
  subscriberName @6 :Text;
  publisherTag @7 :UInt64;     # Advertise.tag
}

struct SubscriberRemoved {
  topicKey @0 :UInt64;
  subscriptionId @1 :UInt64;
  reason @2 :Text;
  publisherTag @3 :UInt64;
}

struct ChannelOpened {
  channelId @0 :UInt64;
  serviceKey @1 :UInt64;
  segmentBytes @2 :UInt64;
  callerClientId @3 :UInt64;
  callerPid @4 :UInt32;
  callerUid @5 :UInt32;
  callerName @6 :Text;
  serviceTag @7 :UInt64;       # RegisterService.tag of the service
  transport @8 :Transport;     # socket: fd 0 is the service's end of the socketpair
  maxMessageBytes @9 :UInt32;
  grant @10 :Grant;            # what the caller may do on this channel (docs/security.md)
}

enum AuditLevel {
  none @0;
  standard @1;                 # who, what, outcome
  detailed @2;                 # and duration and trace id
}

# The broker's decision for one channel, sent to the *service* over its own control socket (never
# through shared memory, which the caller can write): the service's library checks every request
# against it before the handler runs. Decided from the caller's kernel identity and verified token.
struct Grant {
  enforced @0 :Bool;           # false: no policy is configured; every method is allowed
  allowed @1 :List(Bool);      # by method ordinal
  audit @2 :List(AuditLevel);  # by method ordinal
  denied @3 :List(Text);       # by method ordinal: why, for the PERMISSION_DENIED the caller sees
  caller @4 :CallerIdentity;
}

struct CallerIdentity {
  uid @0 :UInt32;
  gid @1 :UInt32;
  pid @2 :UInt32;
  groups @3 :List(UInt32);
  name @4 :Text;
  subject @5 :Text;            # the token's sub; empty without a token
  roles @6 :List(Text);        # every role the policy gives the caller (token and assignments)
  authenticated @7 :Bool;      # a token was presented and verified
  issuer @8 :Text;
  host @9 :Text;               # a caller of another host (through a gateway); empty: this host
}

struct ChannelClosed {
  channelId @0 :UInt64;
  reason @1 :Text;
}

struct ClientMessage {
  request @0 :Request;
}

struct BrokerMessage {
  union {
    reply @0 :Reply;
    event @1 :Event;
  }
}
