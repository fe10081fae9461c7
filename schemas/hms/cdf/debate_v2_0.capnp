@0xb7e3d05a9c41f2e8;
# hms.cdf.debate 2.0: the contract as it was before 2.1 (debate.capnp) added mergeDebates and
# exportDebate. A caller built against it (hms-example-cdf_debate_client_v2_0) keeps working
# against a 2.1 provider. Same interface id as debate.capnp: the same contract, an older version.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::cdf::v2_0");
using import "debate_types.capnp".Decision;
using import "debate_types.capnp".Fact;
using import "debate_types.capnp".Argument;
using import "debate_types.capnp".Evidence;
using import "debate_types.capnp".Verdict;

interface DebateService @0xdea582f47a65a75a {
  evaluatePolicy @0 (policyId :Text, facts :List(Fact), maxRounds :UInt32)
      -> (decision :Decision, confidence :Float64, arguments :List(Argument), rounds :UInt32);
  createDebate @1 (topic :Text, policyId :Text) -> (debateId :Text);
  addPosition @2 (debateId :Text, agent :Text, stance :Decision, claim :Text)
      -> (positionId :UInt32);
  addEvidence @3 (debateId :Text, positionId :UInt32, evidence :Evidence)
      -> (evidenceCount :UInt32);
  evaluateDebate @4 (debateId :Text, maxRounds :UInt32) -> (verdict :Verdict);
}
