@0xc62a203b2d039e0d;
# hms.cdf.debate: the collaborative decision framework's policy debate (the seed's HMS-CDF
# DebateService, called by HMS-SYS). Mirrors the seed's protobuf contract.

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

interface DebateService {
  evaluatePolicy @0 (policyId :Text, facts :List(Fact), maxRounds :UInt32)
      -> (decision :Decision, confidence :Float64, arguments :List(Argument), rounds :UInt32);
}
