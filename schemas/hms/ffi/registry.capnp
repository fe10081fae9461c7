@0x9501209fb814f877;
# The registry snapshot the broker publishes into the registry segment (read in place by clients).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ffi::wire");
using Control = import "control.capnp";

enum ServiceState {
  serving @0;
  draining @1;
}

struct ServiceEntry {
  key @0 :UInt64;              # broker-assigned, unique for the broker's lifetime; used to open
  descriptor @1 :Control.ServiceDescriptor;
  providerClientId @2 :UInt64;
  providerPid @3 :UInt32;
  providerUid @4 :UInt32;
  providerName @5 :Text;
  state @6 :ServiceState;
}

struct TopicEntry {
  key @0 :UInt64;
  id @1 :Text;
  typeId @2 :UInt64;
  typeName @3 :Text;
  displayName @4 :Text;
  description @5 :Text;
  slotCount @6 :UInt32;
  maxMessageBytes @7 :UInt32;
  publisherClientId @8 :UInt64;
  publisherPid @9 :UInt32;
  publisherUid @10 :UInt32;
  publisherName @11 :Text;
  subscribers @12 :UInt32;
}

struct RegistrySnapshot {
  generation @0 :UInt64;
  brokerPid @1 :UInt32;
  services @2 :List(ServiceEntry);
  topics @3 :List(TopicEntry);
}
