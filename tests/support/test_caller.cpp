// hms-ffi-test-service-caller SOCKET: calls hms.test echo in a loop (until killed), printing
// "calling" once the first call succeeded.
#include <cstdio>

#include "hms/ffi/client.hpp"
#include "test.capnp.h"

using hms::ffi::test::TestService;

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  hms::ffi::ClientOptions o;
  o.socketPath = argv[1];
  auto client = hms::ffi::Client::connect(o);
  if (!client) return 1;
  auto stub = (*client)->bind<TestService>("hms.test");
  if (!stub) return 1;
  for (uint64_t i = 0;; ++i) {
    auto r = stub->call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); });
    if (!r) return 1;
    if (i == 0) {
      std::printf("calling\n");
      std::fflush(stdout);
    }
  }
}
