@0xe528cebafbc99d79;
# The control protocol between a client (libhmsffi) and the broker (hms-ffid).
# One Cap'n Proto message per SOCK_SEQPACKET datagram, single segment, flat. File descriptors
# travel beside the message with SCM_RIGHTS; each message says how many it carries and what they are.
# The broker takes the client's identity from SO_PEERCRED, never from these messages.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ffi::wire");

const protocolVersion :UInt32 = 1;

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
    openChannel @4 :OpenChannel;
    closeChannel @5 :UInt64;   # channel id
  }
}

struct Hello {
  protocolVersion @0 :UInt32;
  clientName @1 :Text;
  hasDoorbell @2 :Bool;        # fd 0 is this client's doorbell from an earlier broker (reconnect)
}

struct RegisterService {
  descriptor @0 :ServiceDescriptor;
  tag @1 :UInt64;              # the client's own handle; echoed in ChannelOpened
}

struct OpenChannel {
  serviceKey @0 :UInt64;
}

struct Reply {
  id @0 :UInt64;
  status @1 :StatusInfo;       # code 0 = OK; otherwise the union below is `none`
  union {
    none @2 :Void;
    hello @3 :HelloReply;      # fd 0: registry segment (read-only), fd 1: this client's doorbell
    register @4 :RegisterReply;
    openChannel @5 :OpenChannelReply;  # fd 0: channel segment, fd 1: the service's doorbell
  }
}

struct HelloReply {
  clientId @0 :UInt64;
  registryBytes @1 :UInt64;
  brokerPid @2 :UInt32;
}

struct RegisterReply {
  serviceKey @0 :UInt64;
}

struct OpenChannelReply {
  channelId @0 :UInt64;
  segmentBytes @1 :UInt64;
}

# Sent by the broker unprompted.
struct Event {
  union {
    channelOpened @0 :ChannelOpened;   # fd 0: channel segment (to the service's client)
    channelClosed @1 :ChannelClosed;
  }
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
