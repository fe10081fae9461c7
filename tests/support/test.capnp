@0xa92a0c2021abbc39;
# The service the integration tests start in separate processes.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ffi::test");

interface TestService {
  echo @0 (seq :UInt64, payload :Data) -> (seq :UInt64, payload :Data);
  sleep @1 (ms :UInt32) -> (timeLeftMs :UInt64, calls :UInt64);
  fail @2 (code :UInt32, message :Text) -> ();
  blob @3 (size :UInt32) -> (data :Data);
  whoami @4 () -> (pid :UInt32, version :Text, callerPid :UInt32, callerHost :Text,
                   callerRoles :List(Text));
  # A server stream: n items, value = from + i, payload of payloadBytes derived from the value,
  # delayUs between items; failAt (if non-zero) ends the stream with ABORTED at that item.
  count @5 (from :UInt64, n :UInt64, payloadBytes :UInt32, delayUs :UInt32, failAt :UInt64)
      -> (value :UInt64, payload :Data);
  # Sent one-way: the service remembers the order they ran in.
  note @6 (seq :UInt64) -> ();
  stats @7 () -> (notes :List(UInt64), streamsCancelled :UInt64, streamsFinished :UInt64,
                  cancelCallbacks :UInt64);
}

interface OtherService {
  ping @0 () -> ();
}

# The message of the publish/subscribe tests: `payload` is derived from `seq` (tickByte), so a
# torn, misplaced or altered message shows.
struct Tick {
  seq @0 :UInt64;
  payload @1 :Data;
}

struct Other {
  x @0 :UInt32;
}
