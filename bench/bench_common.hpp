// The pieces every pattern of hms-ffi-bench uses: its options, the timing loop and the slices,
// CPU pinning, the child processes and the echo service they run, the checks' count.
#pragma once

#include <sys/types.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hms/ffi/bench.capnp.h"
#include "hms/ffi/client.hpp"

namespace hms::ffi::bench_tool {

using hms::ffi::bench::Echo;

inline int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct Options {
  int iterations = 200'000;
  int64_t durationNs = 0;  // --duration: a time limit on each measured loop (0: by count)
  int warmup = 20'000;
  bool pin = true;
  int callerCpu = 0, peerCpu = 1;  // --cpus
  bool json = false;
  std::vector<std::string> modes = {"spin", "adaptive", "blocking", "socket-blocking"};
  std::vector<size_t> sizes = {64, 1024, 65536, 1 << 20};
  std::vector<std::string> patterns = {"rtt",  "sizes",  "async", "stream", "setup",
                                       "idle", "pubsub", "json",  "callers"};
  std::vector<std::string> throughputModes = {"adaptive", "socket-blocking"};
  std::vector<unsigned> inFlight = {1, 16, 256};
  std::vector<size_t> streamSizes = {64, 65536};
  uint64_t streamItems = 0;  // --stream-items: items per stream (0: 1 GiB worth, 2 000 to 1 M)
  std::vector<unsigned> fanout = {1, 2, 4, 8};                  // pub/sub subscribers (P6)
  std::vector<std::string> pubsubModes = {"spin", "adaptive"};  // one subscriber (P5)
  unsigned publishBatch = 32;  // the P5 rows again with Publisher::publishBatch (1: not)
  std::vector<unsigned> callers = {1, 2, 4, 8};  // caller processes (P16)
  std::string brokerPath;
  // --binding-programs: each language's bench program (the `bindings` pattern, P13).
  std::vector<std::string> bindingPrograms;

  bool runs(const char* pattern) const {
    return std::find(patterns.begin(), patterns.end(), pattern) != patterns.end();
  }
};

// Checks of what was delivered (every reply, item and message accounted for) that failed in
// this run: reported on stderr where they happen, and in the exit status (3).
extern int gChecksFailed;

// The measuring side (and the threads it starts after), and the other process.
void pinCaller(const Options& o);
void pinPeer(const Options& o);

struct Stats {
  std::string name;
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;  // microseconds
  int samples = 0;
};

Stats summarize(std::string name, std::vector<int64_t>& ns);

template <class RoundTrip>
std::vector<int64_t> timeLoop(const Options& o, RoundTrip&& rt) {
  for (int i = 0; i < o.warmup; ++i) rt(i);
  std::vector<int64_t> ns(size_t(o.iterations));
  const int64_t until = o.durationNs > 0 ? nowNs() + o.durationNs : INT64_MAX;
  int i = 0;
  for (; i < o.iterations; ++i) {
    const int64_t t0 = nowNs();
    rt(o.warmup + i);
    const int64_t t1 = nowNs();
    ns[size_t(i)] = t1 - t0;
    if (t1 >= until && i >= 100) {
      ++i;
      break;
    }
  }
  ns.resize(size_t(i));
  return ns;
}

// Reads every byte of [p, p + bytes) (as 8-byte words), as a receiver that uses its data would.
inline uint64_t sumWords(const uint8_t* p, size_t bytes) {
  uint64_t sum = 0;
  for (size_t k = 0; k < bytes / 8; ++k) {
    uint64_t w;
    std::memcpy(&w, p + k * 8, 8);
    sum += w;
  }
  return sum;
}

// ---- raw baselines -------------------------------------------------------------------------

struct alignas(64) Line {
  std::atomic<uint32_t> seq;
  std::atomic<uint32_t> stop;  // set by the measuring side when it is done
  uint8_t payload[56];
};

inline void pause() {
  __builtin_ia32_pause();
}

// ---- HMS-FFI -------------------------------------------------------------------------------

// A mode is a wait mode ("spin", "adaptive", "blocking") over shared memory, or the same with a
// "socket-" prefix over the Unix-socket transport (both ends forced to it).
bool isSocketMode(const std::string& m);

// The service side, run in a child process started by the bench itself.
int serveEcho(const std::string& socket, const std::string& mode, const Options& bench);

pid_t spawn(const std::vector<std::string>& argv, int stdoutFd = -1);

bool waitForLine(int fd, const char* needle, int timeoutMs);
// Reads the line starting with `prefix` from `fd`; empty on timeout or EOF.
std::string readLineStarting(int fd, const char* prefix, int timeoutMs);

// The echo service of one mode in a child process (this binary with --serve), stopped at the end.
class EchoServer {
 public:
  EchoServer(const Options& o, const std::string& self, const std::string& socket,
             const std::string& mode);
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;
  ~EchoServer();
  bool up() const { return up_; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  bool up_ = false;
};

// A caller bound to the echo service of `mode`; `stub` is empty (and the reason printed) when
// either step failed.
// A bench client of `mode` (wait mode and transport).
hms::ffi::Result<std::unique_ptr<hms::ffi::Client>> connectAs(const std::string& socket,
                                                              const std::string& mode,
                                                              const char* name);

struct EchoCaller {
  EchoCaller(const std::string& socket, const std::string& mode);
  std::unique_ptr<hms::ffi::Client> client;
  std::optional<hms::ffi::Stub<Echo>> stub;
};

// HMS-FFI figures are measured in kSlices slices, each just after a slice of their baseline of
// the same size, so that every ratio compares figures taken in the same vCPU placement (the host
// moves the vCPUs, sometimes in the middle of a run).
constexpr int kSlices = 8;

struct Sliced {
  std::vector<int64_t> baseline, measured;  // all samples of each
  double ratioP50 = 0, ratioP99 = 0;        // medians over slices of measured / baseline
  double baselineP50 = 0;                   // median of the baseline slices' p50, us
};

// `baseline(options)` runs one baseline slice and returns its samples; `roundTrip(i)` is one
// measured round trip. The first measured slice has the full warm-up, the rest a short one.
template <class Baseline, class RoundTrip>
Sliced slicedAgainst(const Options& o, int minPerSlice, Baseline&& baseline,
                     RoundTrip&& roundTrip) {
  Options slice = o;
  slice.iterations = std::max(minPerSlice, o.iterations / kSlices);
  slice.durationNs = o.durationNs / kSlices;
  Options shortWarmup = slice;
  shortWarmup.warmup = std::min(o.warmup, std::max(200, slice.iterations / 10));
  Sliced out;
  std::vector<double> r50, r99, base50;
  for (int k = 0; k < kSlices; ++k) {
    auto b = baseline(shortWarmup);
    pinCaller(o);
    auto m = timeLoop(k == 0 ? slice : shortWarmup, roundTrip);
    out.baseline.insert(out.baseline.end(), b.begin(), b.end());
    out.measured.insert(out.measured.end(), m.begin(), m.end());
    const Stats bs = summarize("", b), ms = summarize("", m);
    r50.push_back(ms.p50 / bs.p50);
    r99.push_back(ms.p99 / bs.p99);
    base50.push_back(bs.p50);
  }
  auto median = [](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  out.ratioP50 = median(r50);
  out.ratioP99 = median(r99);
  out.baselineP50 = median(base50);
  return out;
}

// ---- throughput ----------------------------------------------------------------------------

struct Rate {
  std::string name;
  size_t bytes = 0;        // per message or item
  double msgsPerSec = 0;   // messages, calls or items per second
  double bytesPerSec = 0;  // payload bytes per second
};

Rate rateOf(std::string name, size_t bytes, uint64_t count, int64_t ns);

std::string findBroker(const std::string& self, const std::string& given);

}  // namespace hms::ffi::bench_tool
