@0xea405f13b0414d6c;
# The service hms-ffi-bench measures.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ffi::bench");

interface Echo {
  echo @0 (payload :Data) -> (payload :Data);
  sink @1 (payload :Data) -> (size :UInt64);
  # A server stream of `count` items, each carrying `itemBytes` bytes the service wrote.
  items @2 (count :UInt64, itemBytes :UInt32) -> (seq :UInt64, payload :Data);
}

# The message of the publish/subscribe rows.
struct Sample {
  seq @0 :UInt64;
  payload @1 :Data;
}
