@0xc62a203b2d039e0d;
# hms.cdf.debate 2.1: the collaborative decision framework's policy debate (the seed's HMS-CDF
# DebateService, called by HMS-SYS; §4.1 and §6). 2.1 adds mergeDebates and exportDebate to the
# 2.0 contract (debate_v2_0.capnp) and changes nothing of it: callers built against 2.0 keep
# working, and the broker checks that at registration (docs/contracts.md).
#
# Every version of the interface carries the same explicit id: that is what makes them one
# contract in versions (the implicit params and results structs take their ids from it).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::cdf");
using import "debate_types.capnp".Decision;
using import "debate_types.capnp".Fact;
using import "debate_types.capnp".Argument;
using import "debate_types.capnp".Evidence;
using import "debate_types.capnp".Verdict;
using import "debate_types.capnp".Debate;

interface DebateService @0xdea582f47a65a75a {
  # Agents argue a policy over the given facts; the weighted majority decides (HMS-SYS, §4.1).
  evaluatePolicy @0 (policyId :Text, facts :List(Fact), maxRounds :UInt32)
      -> (decision :Decision, confidence :Float64, arguments :List(Argument), rounds :UInt32);
  createDebate @1 (topic :Text, policyId :Text) -> (debateId :Text);
  addPosition @2 (debateId :Text, agent :Text, stance :Decision, claim :Text)
      -> (positionId :UInt32);
  addEvidence @3 (debateId :Text, positionId :UInt32, evidence :Evidence)
      -> (evidenceCount :UInt32);
  evaluateDebate @4 (debateId :Text, maxRounds :UInt32) -> (verdict :Verdict);
  # New in 2.1.
  mergeDebates @5 (debateIds :List(Text), topic :Text) -> (debateId :Text, positions :UInt32);
  exportDebate @6 (debateId :Text) -> (debate :Debate);
}
