// hms-ffi-test-service-caller SOCKET: calls hms.test echo in a loop (until killed), printing
// "calling" once the first call succeeded.
// hms-ffi-test-service-caller SOCKET --notes N: sends N one-way notes (seq 0..N-1) and exits at
// once, without waiting for the service to run them.
#include <cstdio>
#include <cstdlib>
#include <cstring>

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
  if (argc >= 4 && std::strcmp(argv[2], "--notes") == 0) {
    const uint64_t n = std::strtoull(argv[3], nullptr, 10);
    for (uint64_t i = 0; i < n; ++i) {
      auto s = stub->callOneWay<&TestService::Client::noteRequest>([&](auto p) { p.setSeq(i); });
      if (!s) return 1;
    }
    std::printf("sent %llu\n", static_cast<unsigned long long>(n));
    return 0;
  }
  for (uint64_t i = 0;; ++i) {
    auto r = stub->call<&TestService::Client::echoRequest>([&](auto p) { p.setSeq(i); });
    if (!r) return 1;
    if (i == 0) {
      std::printf("calling\n");
      std::fflush(stdout);
    }
  }
}
