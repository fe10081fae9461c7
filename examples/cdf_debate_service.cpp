// HMS-CDF: serves hms.cdf.debate (DebateService): agents argue a policy over the given facts and
// the weighted majority decides.
#include <cstdio>
#include <map>
#include <string>

#include "common.hpp"
#include "hms/cdf/debate.capnp.h"
#include "hms/ffi/client.hpp"

using hms::cdf::DebateService;
using hms::cdf::Decision;
using hms::ffi::Status;
using hms::ffi::StatusCode;

int main() {
  examples::blockStopSignals();
  auto client = hms::ffi::Client::connect({.name = "hms-cdf"});
  if (!client) {
    std::fprintf(stderr, "hms-cdf: %s\n", client.status().toString().c_str());
    return 1;
  }
  hms::ffi::ServiceDefinition<DebateService> def;
  def.on<&DebateService::Client::evaluatePolicyRequest>(
      [](hms::ffi::CallContext&, DebateService::EvaluatePolicyParams::Reader params,
         DebateService::EvaluatePolicyResults::Builder results) -> Status {
        if (params.getPolicyId().size() == 0) {
          return Status(StatusCode::kInvalidArgument, "policyId is required");
        }
        std::map<std::string, std::string> facts;
        for (auto f : params.getFacts()) facts[f.getKey()] = f.getValue();
        const bool emergency = facts["encounter"] == "emergency";
        const bool consent = facts["consent"] == "yes";
        const bool sensitive = facts["dataClass"] == "sensitive";
        struct Arg {
          const char* agent;
          Decision position;
          const char* why;
          double weight;
        };
        std::vector<Arg> args = {
            {"privacy", consent || !sensitive ? Decision::APPROVE : Decision::DENY,
             consent ? "patient consent on file" : "no consent for sensitive data", 0.4},
            {"clinical", emergency || consent ? Decision::APPROVE : Decision::ESCALATE,
             emergency ? "emergency care needs the record" : "no clinical urgency", 0.35},
            {"compliance", sensitive && !consent && !emergency ? Decision::DENY : Decision::APPROVE,
             "HIPAA minimum-necessary test", 0.25},
        };
        std::map<Decision, double> score;
        for (const auto& a : args) score[a.position] += a.weight;
        Decision best = Decision::ESCALATE;
        double bestScore = -1;
        for (auto [d, s] : score) {
          if (s > bestScore) best = d, bestScore = s;
        }
        results.setDecision(best);
        results.setConfidence(bestScore);
        results.setRounds(std::min<uint32_t>(params.getMaxRounds() ? params.getMaxRounds() : 1, 3));
        auto list = results.initArguments(uint(args.size()));
        for (size_t i = 0; i < args.size(); ++i) {
          list[uint(i)].setAgent(args[i].agent);
          list[uint(i)].setPosition(args[i].position);
          list[uint(i)].setRationale(args[i].why);
          list[uint(i)].setWeight(args[i].weight);
        }
        return Status();
      });
  auto handle = (*client)->serve(
      "hms.cdf.debate", {2, 0, 1}, std::move(def),
      {.displayName = "Policy debate", .description = "Multi-agent policy evaluation (HMS-CDF)"});
  if (!handle) {
    std::fprintf(stderr, "hms-cdf: %s\n", handle.status().toString().c_str());
    return 1;
  }
  std::printf("hms-cdf: serving hms.cdf.debate 2.0.1\n");
  std::fflush(stdout);
  examples::waitForStopSignal();
  return 0;
}
