@0xa92a0c2021abbc39;
# The service the integration tests start in separate processes.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ffi::test");

interface TestService {
  echo @0 (seq :UInt64, payload :Data) -> (seq :UInt64, payload :Data);
  sleep @1 (ms :UInt32) -> (timeLeftMs :UInt64, calls :UInt64);
  fail @2 (code :UInt32, message :Text) -> ();
  blob @3 (size :UInt32) -> (data :Data);
  whoami @4 () -> (pid :UInt32, version :Text, callerPid :UInt32);
}

interface OtherService {
  ping @0 () -> ();
}
