// HMS-SYS: asks HMS-CDF to evaluate access policies before releasing records.
#include <cstdio>

#include "hms/cdf/debate.capnp.h"
#include "hms/ffi/client.hpp"

using hms::cdf::DebateService;

namespace {
const char* name(hms::cdf::Decision d) {
  switch (d) {
    case hms::cdf::Decision::APPROVE:
      return "APPROVE";
    case hms::cdf::Decision::DENY:
      return "DENY";
    default:
      return "ESCALATE";
  }
}
}  // namespace

int main() {
  auto client = hms::ffi::Client::connect({.name = "hms-sys"});
  if (!client) {
    std::fprintf(stderr, "hms-sys: %s\n", client.status().toString().c_str());
    return 1;
  }
  auto cdf = (*client)->bind<DebateService>("hms.cdf.debate", "^2.0");
  if (!cdf) {
    std::fprintf(stderr, "hms-sys: %s\n", cdf.status().toString().c_str());
    return 1;
  }
  struct Case {
    const char* label;
    std::vector<std::pair<const char*, const char*>> facts;
  };
  const Case cases[] = {
      {"ER access, no consent",
       {{"encounter", "emergency"}, {"consent", "no"}, {"dataClass", "sensitive"}}},
      {"research export, no consent",
       {{"encounter", "none"}, {"consent", "no"}, {"dataClass", "sensitive"}}},
      {"routine visit, consent",
       {{"encounter", "routine"}, {"consent", "yes"}, {"dataClass", "general"}}},
  };
  for (const auto& c : cases) {
    auto reply = cdf->call<&DebateService::Client::evaluatePolicyRequest>([&](auto params) {
      params.setPolicyId("records.release");
      params.setMaxRounds(3);
      auto facts = params.initFacts(uint(c.facts.size()));
      for (size_t i = 0; i < c.facts.size(); ++i) {
        facts[uint(i)].setKey(c.facts[i].first);
        facts[uint(i)].setValue(c.facts[i].second);
      }
    });
    if (!reply) {
      std::fprintf(stderr, "hms-sys: %s: %s\n", c.label, reply.status().toString().c_str());
      return 1;
    }
    auto r = reply->results();
    std::printf("hms-sys: %-28s -> %s (confidence %.2f, %u arguments)\n", c.label,
                name(r.getDecision()), r.getConfidence(), r.getArguments().size());
  }
  return 0;
}
