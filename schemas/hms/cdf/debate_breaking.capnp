@0xe41a6c2f0b8d7359;
# A provider's mistake, for the demo and the tests: hms.cdf.debate "2.2" that retypes a field
# callers send (addEvidence's positionId, UInt32 -> Text) and drops exportDebate. At the same
# major version as 2.0 and 2.1 the broker refuses it (FAILED_PRECONDITION naming both).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::cdf::breaking");
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
  addEvidence @3 (debateId :Text, positionId :Text, evidence :Evidence)
      -> (evidenceCount :UInt32);
  evaluateDebate @4 (debateId :Text, maxRounds :UInt32) -> (verdict :Verdict);
  mergeDebates @5 (debateIds :List(Text), topic :Text) -> (debateId :Text, positions :UInt32);
}
