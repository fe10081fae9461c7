// setup and idle: channel open and discovery times (P9), the CPU of idle processes (P8).
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "patterns.hpp"

namespace hms::ffi::bench_tool {

namespace {

// CPU time a process has used, all its threads together (from /proc/<pid>/task/*/schedstat,
// nanosecond resolution).
int64_t cpuNs(pid_t pid) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    if (FILE* f = std::fopen((task.path() / "schedstat").c_str(), "r")) {
      long long ns = 0;
      if (std::fscanf(f, "%lld", &ns) == 1) total += ns;
      std::fclose(f);
    }
  }
  return total;
}

}  // namespace

std::pair<Stats, Stats> ffiSetup(const Options& o, const std::string& socket,
                                 const std::string& mode) {
  EchoCaller caller(socket, mode);
  const std::string id = "hms.bench.echo." + mode;
  std::vector<int64_t> open, discover;
  if (caller.stub) {
    const int opens = std::clamp(o.iterations / 100, 200, 2000);
    for (int i = 0; i < opens + opens / 10; ++i) {
      const int64_t t0 = nowNs();
      auto stub = caller.client->bind<Echo>(id);
      const int64_t t1 = nowNs();
      if (!stub) {
        std::fprintf(stderr, "hms-ffi-bench: %s\n", stub.status().toString().c_str());
        break;
      }
      if (i >= opens / 10) open.push_back(t1 - t0);
    }
    const int finds = std::clamp(o.iterations / 10, 1000, 100'000);
    size_t found = 0;
    for (int i = 0; i < finds + finds / 10; ++i) {
      const int64_t t0 = nowNs();
      auto list = caller.client->discover(id);
      const int64_t t1 = nowNs();
      found += list ? list->size() : 0;
      if (i >= finds / 10) discover.push_back(t1 - t0);
    }
    if (found == 0) {
      std::fprintf(stderr, "hms-ffi-bench: discover found nothing\n");
      ++gChecksFailed;
    }
  }
  if (open.empty()) open.push_back(0);
  if (discover.empty()) discover.push_back(0);
  return {summarize("channel open (bind), " + mode, open),
          summarize("discover, " + mode, discover)};
}

std::optional<IdleCpu> ffiIdle(const std::string& socket, const std::string& mode, pid_t service,
                               pid_t broker, double seconds) {
  EchoCaller caller(socket, mode);
  if (!caller.stub) return std::nullopt;
  hms::ffi::Status calls;  // the first failure of the two calls, OK if none
  if (auto sync = caller.stub->call<&Echo::Client::echoRequest>([](auto p) { p.initPayload(64); });
      !sync) {
    calls = sync.status();
  }  // the Reply goes: the channel is free for the next call
  if (auto async =
          caller.stub->callAsync<&Echo::Client::echoRequest>([](auto p) { p.initPayload(64); })
              .get();
      !async && calls) {
    calls = async.status();
  }
  if (!calls) {
    std::fprintf(stderr, "hms-ffi-bench: idle: %s\n", calls.toString().c_str());
    ++gChecksFailed;
    return std::nullopt;
  }
  usleep(200'000);  // far past the 50 us spin budget
  const pid_t self = getpid();
  const int64_t s0 = cpuNs(service), c0 = cpuNs(self), b0 = cpuNs(broker), t0 = nowNs();
  usleep(useconds_t(seconds * 1e6));
  const double wall = double(nowNs() - t0);
  IdleCpu r;
  r.mode = mode;
  r.service = 100.0 * double(cpuNs(service) - s0) / wall;
  r.caller = 100.0 * double(cpuNs(self) - c0) / wall;
  r.broker = 100.0 * double(cpuNs(broker) - b0) / wall;
  return r;
}

}  // namespace hms::ffi::bench_tool
