// libFuzzer target: a policy file (broker/policy.hpp), as an operator or a tool may write it.
// Whatever the bytes, Policy::parse() must answer OK or INVALID_ARGUMENT: no crash, no exception,
// no sanitizer finding. A policy it accepts is then asked the questions the broker asks. Key files
// resolve under a directory that does not exist, so that the input alone decides the outcome.
//
//   scripts/fuzz.sh policy 600
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "policy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hms::ffi;
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  auto policy = broker::Policy::parse(json, "fuzz.json", "/nonexistent");
  if (!policy.ok()) {
    if (policy.status().code() != StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  const broker::Policy& p = **policy;
  broker::Identity who;
  who.uid = 1001;
  who.gid = 2001;
  who.pid = 42;
  who.groups = {0, 100};
  who.name = "fuzz";
  who.hasToken = true;
  who.token.roles = {"doctor", "physician"};
  who.token.amr = {"pwd", "mfa"};
  const auto roles = p.rolesOf(who);
  (void)p.decide(who, roles, "hms.emr.patient", "getPatient");
  (void)p.decide(who, roles, "hms.emr.patient", "*");
  (void)p.mayProvide(who, "hms.emr.patient");
  (void)p.mayPublish(who, "hms.emr.vitals");
  (void)p.maySubscribe(who, "hms.emr.vitals");
  return 0;
}
