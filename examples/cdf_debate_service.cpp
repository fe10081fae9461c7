// HMS-CDF: serves hms.cdf.debate 2.1 (DebateService, schemas/hms/cdf/debate.capnp): agents argue
// a policy over the given facts and the weighted majority decides (evaluatePolicy, the seed's
// §4.1), and debates built step by step (createDebate, addPosition, addEvidence, evaluateDebate;
// mergeDebates and exportDebate are new in 2.1, the seed's §6). Callers built against 2.0 keep
// working against it.
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common.hpp"
#include "hms/cdf/debate.capnp.h"
#include "hms/ffi/client.hpp"

using hms::cdf::DebateService;
using hms::cdf::Decision;
using hms::ffi::Status;
using hms::ffi::StatusCode;

namespace {

struct EvidenceRec {
  std::string source, summary;
  double weight = 0;
};
struct PositionRec {
  uint32_t id = 0;
  std::string agent, claim;
  Decision stance = Decision::ESCALATE;
  std::vector<EvidenceRec> evidence;
};
struct DebateRec {
  std::string topic, policyId;
  std::vector<PositionRec> positions;
  std::vector<std::string> mergedFrom;
};

// The debates of this process. Handlers run on the service's dispatcher and stream threads.
class Debates {
 public:
  std::string create(std::string topic, std::string policyId) {
    std::lock_guard lock(mu_);
    const std::string id = "d-" + std::to_string(++next_);
    debates_[id] = DebateRec{std::move(topic), std::move(policyId), {}, {}};
    return id;
  }
  // Runs fn(DebateRec&) on debate `id` under the lock; NOT_FOUND when there is none.
  template <class F>
  Status with(const std::string& id, F fn) {
    std::lock_guard lock(mu_);
    auto it = debates_.find(id);
    if (it == debates_.end()) {
      return Status(StatusCode::kNotFound, "no debate '" + id + "'; create it first");
    }
    return fn(it->second);
  }
  Status merge(const std::vector<std::string>& ids, std::string topic, std::string& outId,
               uint32_t& positions) {
    std::lock_guard lock(mu_);
    DebateRec merged{std::move(topic), {}, {}, ids};
    for (const auto& id : ids) {
      auto it = debates_.find(id);
      if (it == debates_.end()) return Status(StatusCode::kNotFound, "no debate '" + id + "'");
      if (merged.policyId.empty()) merged.policyId = it->second.policyId;
      for (auto p : it->second.positions) {
        p.id = uint32_t(merged.positions.size() + 1);
        merged.positions.push_back(std::move(p));
      }
    }
    outId = "d-" + std::to_string(++next_);
    positions = uint32_t(merged.positions.size());
    debates_[outId] = std::move(merged);
    return Status();
  }

 private:
  std::mutex mu_;
  uint64_t next_ = 0;
  std::map<std::string, DebateRec> debates_;
};

// Weighs each position (its agent's base weight plus its evidence) and picks the heaviest stance.
void judge(const DebateRec& d, uint32_t maxRounds, hms::cdf::Verdict::Builder v) {
  std::map<Decision, double> score;
  double total = 0;
  auto args = v.initArguments(uint(d.positions.size()));
  for (size_t i = 0; i < d.positions.size(); ++i) {
    const auto& p = d.positions[i];
    double w = 1.0;
    for (const auto& e : p.evidence) w += e.weight;
    score[p.stance] += w;
    total += w;
    args[uint(i)].setAgent(p.agent);
    args[uint(i)].setPosition(p.stance);
    args[uint(i)].setRationale(p.claim);
    args[uint(i)].setWeight(w);
  }
  Decision best = Decision::ESCALATE;
  double bestScore = 0;
  for (auto [stance, s] : score) {
    if (s > bestScore) best = stance, bestScore = s;
  }
  v.setDecision(best);
  v.setConfidence(total > 0 ? bestScore / total : 0);
  v.setRounds(std::min<uint32_t>(maxRounds ? maxRounds : 1, 3));
}

Status evaluatePolicy(DebateService::EvaluatePolicyParams::Reader params,
                      DebateService::EvaluatePolicyResults::Builder results) {
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
}

}  // namespace

int main() {
  examples::blockStopSignals();
  auto client = hms::ffi::Client::connect({.name = "hms-cdf"});
  if (!client) {
    std::fprintf(stderr, "hms-cdf: %s\n", client.status().toString().c_str());
    return 1;
  }
  Debates debates;
  using C = DebateService::Client;
  hms::ffi::ServiceDefinition<DebateService> def;
  def.on<&C::evaluatePolicyRequest>(
      [](hms::ffi::CallContext&, auto params, auto results) -> Status {
        return evaluatePolicy(params, results);
      });
  def.on<&C::createDebateRequest>([&](hms::ffi::CallContext&, auto params, auto results) {
    if (params.getTopic().size() == 0) {
      return Status(StatusCode::kInvalidArgument, "a debate needs a topic");
    }
    results.setDebateId(debates.create(params.getTopic(), params.getPolicyId()));
    return Status();
  });
  def.on<&C::addPositionRequest>([&](hms::ffi::CallContext&, auto params, auto results) {
    return debates.with(params.getDebateId(), [&](DebateRec& d) {
      PositionRec p;
      p.id = uint32_t(d.positions.size() + 1);
      p.agent = params.getAgent();
      p.stance = params.getStance();
      p.claim = params.getClaim();
      results.setPositionId(p.id);
      d.positions.push_back(std::move(p));
      return Status();
    });
  });
  def.on<&C::addEvidenceRequest>([&](hms::ffi::CallContext&, auto params, auto results) {
    return debates.with(params.getDebateId(), [&](DebateRec& d) {
      const uint32_t id = params.getPositionId();
      if (id == 0 || id > d.positions.size()) {
        return Status(StatusCode::kNotFound, "debate " + std::string(params.getDebateId().cStr()) +
                                                 " has no position " + std::to_string(id));
      }
      auto e = params.getEvidence();
      if (e.getWeight() < 0 || e.getWeight() > 1) {
        return Status(StatusCode::kInvalidArgument, "evidence weight must be from 0 to 1");
      }
      auto& p = d.positions[id - 1];
      p.evidence.push_back({e.getSource(), e.getSummary(), e.getWeight()});
      results.setEvidenceCount(uint32_t(p.evidence.size()));
      return Status();
    });
  });
  def.on<&C::evaluateDebateRequest>([&](hms::ffi::CallContext&, auto params, auto results) {
    return debates.with(params.getDebateId(), [&](DebateRec& d) {
      if (d.positions.empty()) {
        return Status(StatusCode::kFailedPrecondition, "the debate has no positions yet");
      }
      judge(d, params.getMaxRounds(), results.initVerdict());
      return Status();
    });
  });
  def.on<&C::mergeDebatesRequest>([&](hms::ffi::CallContext&, auto params, auto results) {
    std::vector<std::string> ids;
    for (auto id : params.getDebateIds()) ids.emplace_back(id);
    if (ids.size() < 2) return Status(StatusCode::kInvalidArgument, "merge at least two debates");
    std::string id;
    uint32_t positions = 0;
    if (auto s = debates.merge(ids, params.getTopic(), id, positions); !s) return s;
    results.setDebateId(id);
    results.setPositions(positions);
    return Status();
  });
  def.on<&C::exportDebateRequest>([&](hms::ffi::CallContext&, auto params, auto results) {
    return debates.with(params.getDebateId(), [&](DebateRec& d) {
      auto out = results.initDebate();
      out.setId(params.getDebateId());
      out.setTopic(d.topic);
      out.setPolicyId(d.policyId);
      auto ps = out.initPositions(uint(d.positions.size()));
      for (size_t i = 0; i < d.positions.size(); ++i) {
        const auto& p = d.positions[i];
        ps[uint(i)].setId(p.id);
        ps[uint(i)].setAgent(p.agent);
        ps[uint(i)].setStance(p.stance);
        ps[uint(i)].setClaim(p.claim);
        auto es = ps[uint(i)].initEvidence(uint(p.evidence.size()));
        for (size_t j = 0; j < p.evidence.size(); ++j) {
          es[uint(j)].setSource(p.evidence[j].source);
          es[uint(j)].setSummary(p.evidence[j].summary);
          es[uint(j)].setWeight(p.evidence[j].weight);
        }
      }
      auto from = out.initMergedFrom(uint(d.mergedFrom.size()));
      for (size_t i = 0; i < d.mergedFrom.size(); ++i) from.set(uint(i), d.mergedFrom[i]);
      return Status();
    });
  });
  auto handle = (*client)->serve(
      "hms.cdf.debate", {2, 1, 0}, std::move(def),
      {.displayName = "Policy debate", .description = "Multi-agent policy evaluation (HMS-CDF)"});
  if (!handle) {
    std::fprintf(stderr, "hms-cdf: %s\n", handle.status().toString().c_str());
    return 1;
  }
  std::printf("hms-cdf: serving hms.cdf.debate 2.1.0\n");
  std::fflush(stdout);
  examples::waitForStopSignal();
  return 0;
}
