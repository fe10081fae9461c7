// A provider's mistake (schemas/hms/cdf/debate_breaking.capnp): hms.cdf.debate 2.2.0 with
// addEvidence's positionId retyped and exportDebate dropped. The broker knows 2.0/2.1 of the same
// major and refuses the registration with FAILED_PRECONDITION naming what breaks
// (docs/contracts.md). Exits 0 when refused so, 1 when accepted or refused for another reason.
#include <cstdio>

#include "hms/cdf/debate_breaking.capnp.h"
#include "hms/ffi/client.hpp"

using hms::cdf::breaking::DebateService;

int main() {
  auto client = hms::ffi::Client::connect({.name = "hms-cdf-breaking"});
  if (!client) {
    std::fprintf(stderr, "hms-cdf (breaking): %s\n", client.status().toString().c_str());
    return 1;
  }
  hms::ffi::ServiceDefinition<DebateService> def;  // never serves: the registration is refused
  auto handle = (*client)->serve("hms.cdf.debate", {2, 2, 0}, std::move(def));
  if (handle) {
    std::printf("hms-cdf (breaking): 2.2.0 was ACCEPTED; the broker did not check it\n");
    return 1;
  }
  std::printf("hms-cdf (breaking): registering 2.2.0 refused: %s\n",
              handle.status().toString().c_str());
  return handle.status().code() == hms::ffi::StatusCode::kFailedPrecondition ? 0 : 1;
}
