@0xecc7c0ad42997953;
# The payload of a response record whose status is not OK.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ffi::wire");

struct RpcError {
  message @0 :Text;
  source @1 :Text;             # id of the service that produced the error
  details @2 :List(Detail);
  struct Detail {
    key @0 :Text;
    value @1 :Text;
  }
}
