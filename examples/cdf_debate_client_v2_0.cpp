// HMS-SYS as it was built against hms.cdf.debate 2.0 (schemas/hms/cdf/debate_v2_0.capnp): it
// knows nothing of 2.1's mergeDebates and exportDebate, binds "^2.0" and runs a debate step by
// step against whatever 2.x the registry has (a 2.1 provider in the demo). The broker accepted
// 2.1 only because it is a compatible evolution of 2.0 (docs/contracts.md), which is why this
// keeps working. Exits 1 on any error.
#include <cstdio>

#include "hms/cdf/debate_v2_0.capnp.h"
#include "hms/ffi/client.hpp"

using hms::cdf::Decision;
using hms::cdf::v2_0::DebateService;
using C = DebateService::Client;

namespace {

const char* name(Decision d) {
  switch (d) {
    case Decision::APPROVE:
      return "APPROVE";
    case Decision::DENY:
      return "DENY";
    default:
      return "ESCALATE";
  }
}

template <class R>
bool check(const R& r, const char* what) {
  if (r) return true;
  std::fprintf(stderr, "hms-sys (2.0 caller): %s: %s\n", what, r.status().toString().c_str());
  return false;
}

}  // namespace

int main() {
  auto client = hms::ffi::Client::connect({.name = "hms-sys-2.0"});
  if (!check(client, "connect")) return 1;
  auto cdf = (*client)->bind<DebateService>("hms.cdf.debate", "^2.0");
  if (!check(cdf, "bind")) return 1;
  std::printf("hms-sys (built against 2.0): bound hms.cdf.debate %s\n",
              cdf->service().version.toString().c_str());

  // A Reply reads the channel's ring in place: each is dropped before the Stub's next call.
  std::string debate;
  {
    auto created = cdf->call<&C::createDebateRequest>([](auto p) {
      p.setTopic("Release a psychiatric record to the ER without consent");
      p.setPolicyId("records.release");
    });
    if (!check(created, "createDebate")) return 1;
    debate = created->results().getDebateId();
  }

  struct Pos {
    const char* agent;
    Decision stance;
    const char* claim;
  };
  const Pos positions[] = {
      {"privacy", Decision::DENY, "42 CFR Part 2 records need explicit consent"},
      {"clinical", Decision::APPROVE, "the patient is unconscious; the history changes care"},
      {"compliance", Decision::APPROVE, "the medical-emergency exception applies"},
  };
  for (const auto& p : positions) {
    auto added = cdf->call<&C::addPositionRequest>([&](auto params) {
      params.setDebateId(debate);
      params.setAgent(p.agent);
      params.setStance(p.stance);
      params.setClaim(p.claim);
    });
    if (!check(added, "addPosition")) return 1;
  }
  {
    auto evidence = cdf->call<&C::addEvidenceRequest>([&](auto params) {
      params.setDebateId(debate);
      params.setPositionId(3);
      auto e = params.initEvidence();
      e.setSource("42 CFR 2.51");
      e.setSummary("disclosure to medical personnel in a bona fide medical emergency");
      e.setWeight(0.8);
    });
    if (!check(evidence, "addEvidence")) return 1;
  }
  auto verdict = cdf->call<&C::evaluateDebateRequest>([&](auto params) {
    params.setDebateId(debate);
    params.setMaxRounds(3);
  });
  if (!check(verdict, "evaluateDebate")) return 1;
  auto v = verdict->results().getVerdict();
  std::printf("hms-sys (built against 2.0): debate %s -> %s (confidence %.2f, %u arguments)\n",
              debate.c_str(), name(v.getDecision()), v.getConfidence(), v.getArguments().size());
  return 0;
}
