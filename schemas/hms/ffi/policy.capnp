@0x9fa7c14334348920;
# The access policy file (broker/policy.hpp, docs/security.md#policy) as the broker reads it: JSON
# with snake_case keys, converted by the strict JSON codec into these structs, then checked and
# compiled by broker/policy.cpp. Never sent on the wire. Values whose absence means something
# (audit_level: "standard") are Text, so that policy.cpp can tell absent from given and name the
# allowed values in its message.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ffi::wire");

struct PolicyFile {
  permissionPolicy @0 :Text;              # absent or "strict"
  requiredClaims @1 :List(Text);          # sub, role, amr, aud, exp
  tokenIssuers @2 :List(PolicyTokenIssuer);
  roleAssignments @3 :List(PolicyRoleAssignment);
  providers @4 :List(PolicyProvider);
  topics @5 :List(PolicyTopic);
  rules @6 :List(PolicyRule);
  remoteCallers @7 :List(PolicyRemoteCallers);
}

# Callers of other hosts, whose calls a gateway of this host brings in (docs/gateway.md): the
# gateways that may open channels for them, the hosts they may come from, and the roles they may
# bring from their home host (the rest of their roles do not count here).
struct PolicyRemoteCallers {
  gateways @0 :PolicyPrincipals;
  hosts @1 :List(Text);                   # "*": any host
  roles @2 :List(Text);                   # "*": every role of the caller's home host
}

struct PolicyTokenIssuer {
  issuer @0 :Text;
  algorithm @1 :Text;                     # absent: "ES256"
  publicKeyFile @2 :Text;                 # relative: to the policy file's directory
  audience @3 :Text;
}

# Who: a caller matching any entry matches.
struct PolicyPrincipals {
  users @0 :List(Text);
  uids @1 :List(UInt32);
  groups @2 :List(Text);
  gids @3 :List(UInt32);
  roles @4 :List(Text);
}

struct PolicyRoleAssignment {
  role @0 :Text;
  users @1 :List(Text);
  uids @2 :List(UInt32);
  groups @3 :List(Text);
  gids @4 :List(UInt32);
  tokenRoles @5 :List(Text);
}

struct PolicyProvider {
  service @0 :Text;
  users @1 :List(Text);
  uids @2 :List(UInt32);
  groups @3 :List(Text);
  gids @4 :List(UInt32);
  roles @5 :List(Text);
}

struct PolicyTopic {
  topic @0 :Text;
  publish @1 :PolicyPrincipals;
  subscribe @2 :PolicyPrincipals;
}

# The seed's §7.2 rule.
struct PolicyRule {
  service @0 :Text;
  method @1 :Text;                        # "*": every method
  allowedRoles @2 :List(Text);
  deniedRoles @3 :List(Text);
  requiresMfa @4 :Bool;
  auditLevel @5 :Text;                    # none, standard (absent), detailed
}
