// callers: N caller processes calling one service at once (P16): the aggregate rate and the
// latency of each N.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "patterns.hpp"

namespace hms::ffi::bench_tool {

int callLoad(const std::string& socket, const std::string& mode, const std::string& goFile,
             const Options& o) {
  pinCaller(o);
  EchoCaller caller(socket, mode);
  if (!caller.stub) return 1;
  auto& stub = *caller.stub;
  uint64_t failed = 0, done = 0;
  auto once = [&] {
    auto reply = stub.call<&Echo::Client::echoRequest>(
        [&](auto p) { std::memset(p.initPayload(64).begin(), int(done & 0xff), 64); });
    if (!reply || reply->results().getPayload()[63] != uint8_t(done & 0xff)) ++failed;
    ++done;
  };
  for (int i = 0; i < 2'000; ++i) once();  // warm-up
  std::printf("ready\n");
  std::fflush(stdout);
  // The go file holds when every caller stops (CLOCK_MONOTONIC ns): they start as it appears.
  int64_t endNs = 0;
  const int64_t giveUp = nowNs() + 60'000'000'000;
  while (endNs == 0 && nowNs() < giveUp) {
    std::ifstream in(goFile);
    if (!(in >> endNs)) {
      endNs = 0;
      usleep(200);
    }
  }
  if (endNs == 0) return 1;
  std::vector<int64_t> samples;
  samples.reserve(4'000'000);
  const int64_t t0 = nowNs();
  int64_t t = t0;
  while (t < endNs) {
    once();
    const int64_t t1 = nowNs();
    if (samples.size() < samples.capacity()) samples.push_back(t1 - t);
    t = t1;
  }
  const Stats s = summarize("", samples);
  std::printf("done %llu %lld %.3f %.3f %llu\n", (unsigned long long)(done - 2'000),
              (long long)(t - t0), s.p50, s.p99, (unsigned long long)failed);
  std::fflush(stdout);
  return failed ? 3 : 0;
}

std::optional<CallersResult> ffiCallers(const Options& o, const std::string& self,
                                        const std::string& socket, const std::string& dir,
                                        const std::string& mode, unsigned callers,
                                        int64_t durationNs) {
  struct Child {
    pid_t pid;
    int fd;
  };
  const std::string goFile = dir + "/go-" + std::to_string(callers);
  std::vector<Child> children;
  for (unsigned i = 0; i < callers; ++i) {
    int pipeFd[2];
    if (pipe(pipeFd) != 0) break;
    const pid_t pid = spawn({self, "--call-load", mode, "--go-file", goFile, "--socket", socket,
                             o.pin ? "--pin" : "--no-pin", "--cpus",
                             std::to_string(o.callerCpu) + "," + std::to_string(o.peerCpu)},
                            pipeFd[1]);
    close(pipeFd[1]);
    children.push_back({pid, pipeFd[0]});
  }
  bool up = children.size() == callers;
  for (auto& c : children) up &= c.pid > 0 && waitForLine(c.fd, "ready", 30'000);
  std::optional<CallersResult> result;
  if (up) {
    {
      const std::string tmp = goFile + ".tmp";
      std::ofstream(tmp) << (nowNs() + durationNs) << "\n";
      std::filesystem::rename(tmp, goFile);  // whole, at once
    }
    CallersResult r;
    r.mode = mode;
    r.callers = callers;
    uint64_t failed = 0;
    std::vector<double> p50s;
    for (auto& c : children) {
      const std::string line =
          readLineStarting(c.fd, "done ", int(durationNs / 1'000'000) + 60'000);
      unsigned long long calls = 0, bad = 0;
      long long ns = 0;
      double p50 = 0, p99 = 0;
      if (std::sscanf(line.c_str(), "done %llu %lld %lf %lf %llu", &calls, &ns, &p50, &p99, &bad) !=
              5 ||
          bad != 0 || ns <= 0) {
        ++failed;
        continue;
      }
      const double rate = double(calls) * 1e9 / double(ns);
      r.callsPerSec += rate;
      r.minPerCaller = p50s.empty() ? rate : std::min(r.minPerCaller, rate);
      r.p99 = std::max(r.p99, p99);
      p50s.push_back(p50);
    }
    if (failed) {
      ++gChecksFailed;
      std::fprintf(stderr, "hms-ffi-bench: %u callers, %s: %llu of them failed calls\n", callers,
                   mode.c_str(), (unsigned long long)failed);
    } else {
      std::sort(p50s.begin(), p50s.end());
      r.p50 = p50s[p50s.size() / 2];
      result = r;
    }
  } else {
    ++gChecksFailed;
    std::fprintf(stderr, "hms-ffi-bench: %u callers, %s: not all of them started\n", callers,
                 mode.c_str());
  }
  for (auto& c : children) {
    if (c.pid > 0) {
      kill(c.pid, SIGTERM);
      waitpid(c.pid, nullptr, 0);
    }
    close(c.fd);
  }
  std::filesystem::remove(goFile);
  return result;
}

}  // namespace hms::ffi::bench_tool
