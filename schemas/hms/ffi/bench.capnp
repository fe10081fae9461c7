@0xea405f13b0414d6c;
# The service hms-ffi-bench measures.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ffi::bench");

interface Echo {
  echo @0 (payload :Data) -> (payload :Data);
  sink @1 (payload :Data) -> (size :UInt64);
}
