// policy: the typed call through a second broker under an access policy (P15).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "patterns.hpp"

namespace hms::ffi::bench_tool {

std::vector<PolicyResult> measurePolicy(const Options& o, const std::string& self,
                                        const std::string& socket, const std::string& dir) {
  std::vector<PolicyResult> policyRows;
  const std::string policyDir = dir + "/policy";
  std::filesystem::create_directories(policyDir);
  const std::string uid = std::to_string(::getuid());
  {
    std::FILE* f = std::fopen((policyDir + "/policy.json").c_str(), "w");
    std::string providers, sep;
    for (const char* m : {"spin", "adaptive", "blocking", "socket-blocking"}) {
      providers += sep + R"({"service": "hms.bench.echo.)" + m + R"(", "uids": [)" + uid + "]}";
      sep = ",";
    }
    std::string rules;
    sep.clear();
    for (const char* m : {"spin", "adaptive", "blocking", "socket-blocking"}) {
      rules += sep + R"({"service": "hms.bench.echo.)" + m +
               R"(", "method": "*", "allowed_roles": ["bench"], "audit_level": "none"})";
      sep = ",";
    }
    const std::string text = R"({"role_assignments": [{"role": "bench", "uids": [)" + uid +
                             R"(]}], "providers": [)" + providers + R"(], "rules": [)" + rules +
                             "]}";
    if (f) {
      std::fputs(text.c_str(), f);
      std::fclose(f);
    }
  }
  const std::string policySocket = policyDir + "/broker.sock";
  const pid_t policyBroker =
      spawn({findBroker(self, o.brokerPath), "--socket", policySocket, "--log-level", "warn",
             "--state-dir", ":memory:", "--policy", policyDir + "/policy.json", "--audit-log",
             policyDir + "/audit.jsonl"});
  for (int i = 0; i < 2000 && !std::filesystem::exists(policySocket); ++i) usleep(1000);
  for (const char* mode : {"spin", "adaptive"}) {
    PolicyResult pr;
    pr.mode = mode;
    for (int round = 0; round < 2; ++round) {
      auto open = ffiCall(o, self, socket, mode);
      auto guarded = ffiCall(o, self, policySocket, mode);
      if (!open || !guarded) continue;
      if (pr.open.p50 == 0 || open->stats.p50 < pr.open.p50) pr.open = open->stats;
      if (pr.policy.p50 == 0 || guarded->stats.p50 < pr.policy.p50) pr.policy = guarded->stats;
    }
    if (pr.open.p50 > 0 && pr.policy.p50 > 0) {
      pr.policy.name = "hms-ffi call under a policy, " + pr.mode;
      policyRows.push_back(pr);
    }
  }
  kill(policyBroker, SIGTERM);
  waitpid(policyBroker, nullptr, 0);
  return policyRows;
}

}  // namespace hms::ffi::bench_tool
