@0x8f1c0a5e7b3d2a10;
# The types of hms.cdf.debate (the seed's HMS-CDF DebateService, §4.1 and §6), shared by every
# version of its interface: debate.capnp (the current contract) and debate_v2_0.capnp (the one
# callers built before 2.1 use).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::cdf");

enum Decision {
  approve @0;
  deny @1;
  escalate @2;
}

struct Fact {
  key @0 :Text;
  value @1 :Text;
}

struct Argument {
  agent @0 :Text;
  position @1 :Decision;
  rationale @2 :Text;
  weight @3 :Float64;
}

struct Evidence {
  source @0 :Text;             # where it comes from, e.g. "45 CFR 164.512(j)"
  summary @1 :Text;
  weight @2 :Float64;          # 0..1: how much it strengthens its position
}

struct Position {
  id @0 :UInt32;
  agent @1 :Text;
  stance @2 :Decision;
  claim @3 :Text;
  evidence @4 :List(Evidence);
}

struct Verdict {
  decision @0 :Decision;
  confidence @1 :Float64;      # the winning stance's share of the total weight
  arguments @2 :List(Argument);
  rounds @3 :UInt32;
}

struct Debate {
  id @0 :Text;
  topic @1 :Text;
  policyId @2 :Text;
  positions @3 :List(Position);
  mergedFrom @4 :List(Text);   # the debates mergeDebates made this one of
}
