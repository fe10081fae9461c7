// hms-ffi-bench: round-trip latency of HMS-FFI calls beside raw baselines measured in the same run.
//
// Every figure is a round trip between two processes. The baselines are as small as they can be:
//   raw-spin   one 64-byte cache line in shared memory; each side spins on a sequence word in it
//              and writes 56 payload bytes back (the hardware floor)
//   raw-futex  the same line; each side sleeps in FUTEX_WAIT until the other wakes it
//   raw-uds    a SOCK_SEQPACKET socketpair, blocking send/recv of 64 bytes
// HMS-FFI: a typed call with a 64-byte Data payload each way, built and read in place, through the
// public API, with caller and service in the same wait mode. The raw-spin floor is probed at the
// start and the end of the run; a warning says when the two differ by more than 30% (the host
// moved the vCPUs and ratios across that boundary mean little).
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hms/ffi/bench.capnp.h"
#include "hms/ffi/client.hpp"
#include "hms/ffi/hms_ffi.h"
#include "hms/ffi/json.hpp"

#ifdef HMS_FFI_HAVE_ZMQ
#include <zmq.h>
#endif

extern char** environ;

namespace {

using hms::ffi::bench::Echo;

int64_t nowNs() {
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
  std::vector<std::string> patterns = {"rtt",   "sizes", "async",  "stream",
                                       "setup", "idle",  "pubsub", "json"};
  std::vector<std::string> throughputModes = {"adaptive", "socket-blocking"};
  std::vector<unsigned> inFlight = {1, 16, 256};
  std::vector<size_t> streamSizes = {64, 65536};
  uint64_t streamItems = 0;  // --stream-items: items per stream (0: 1 GiB worth, 2 000 to 1 M)
  std::vector<unsigned> fanout = {1, 2, 4, 8};                  // pub/sub subscribers (P6)
  std::vector<std::string> pubsubModes = {"spin", "adaptive"};  // one subscriber (P5)
  std::string brokerPath;
  // --binding-programs: each language's bench program (the `bindings` pattern, P13).
  std::vector<std::string> bindingPrograms;

  bool runs(const char* pattern) const {
    return std::find(patterns.begin(), patterns.end(), pattern) != patterns.end();
  }
};

// Checks of what was delivered (every reply, item and message accounted for) that failed in
// this run: reported on stderr where they happen, and in the exit status (3).
int gChecksFailed = 0;

int checksExitStatus() {
  if (gChecksFailed == 0) return 0;
  std::fprintf(stderr,
               "hms-ffi-bench: %d check%s of what was delivered failed (see above); the rows "
               "concerned are left out\n",
               gChecksFailed, gChecksFailed == 1 ? "" : "s");
  return 3;
}

void pinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    std::fprintf(stderr, "hms-ffi-bench: cannot pin to CPU %d: %s\n", cpu, std::strerror(errno));
  }
}
// The measuring side (and the threads it starts after), and the other process.
void pinCaller(const Options& o) {
  if (o.pin) pinTo(o.callerCpu);
}
void pinPeer(const Options& o) {
  if (o.pin) pinTo(o.peerCpu);
}

struct Stats {
  std::string name;
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;  // microseconds
  int samples = 0;
};

Stats summarize(std::string name, std::vector<int64_t>& ns) {
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    return double(ns[std::min(ns.size() - 1, size_t(q * double(ns.size())))]) / 1000.0;
  };
  Stats s;
  s.name = std::move(name);
  s.p50 = at(0.50);
  s.p90 = at(0.90);
  s.p99 = at(0.99);
  s.p999 = at(0.999);
  s.max = double(ns.back()) / 1000.0;
  s.samples = int(ns.size());
  return s;
}

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
uint64_t sumWords(const uint8_t* p, size_t bytes) {
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

long futex(std::atomic<uint32_t>* w, int op, uint32_t v) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), op, v, nullptr, nullptr, 0);
}

std::vector<int64_t> rawSpinNs(const Options& o) {
  auto* line = static_cast<Line*>(
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (line) Line{};
  const pid_t child = fork();
  if (child == 0) {
    pinPeer(o);
    for (int i = 0;; ++i) {
      const uint32_t want = uint32_t(2 * i + 1);
      while (line->seq.load(std::memory_order_acquire) != want) {
        if (line->stop.load(std::memory_order_acquire)) _exit(0);
        pause();
      }
      uint8_t sum = 0;
      for (uint8_t b : line->payload) sum = uint8_t(sum + b);
      line->payload[0] = sum;
      line->seq.store(want + 1, std::memory_order_release);
    }
    _exit(0);
  }
  pinCaller(o);
  auto ns = timeLoop(o, [&](int i) {
    std::memset(line->payload, i & 0xff, sizeof(line->payload));
    line->seq.store(uint32_t(2 * i + 1), std::memory_order_release);
    while (line->seq.load(std::memory_order_acquire) != uint32_t(2 * i + 2)) pause();
  });
  line->stop.store(1, std::memory_order_release);
  waitpid(child, nullptr, 0);
  munmap(line, 4096);
  return ns;
}
Stats rawSpin(const Options& o, const char* name) {
  auto ns = rawSpinNs(o);
  return summarize(name, ns);
}

Stats rawFutex(const Options& o) {
  auto* line = static_cast<Line*>(
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (line) Line{};
  const pid_t child = fork();
  if (child == 0) {
    pinPeer(o);
    for (int i = 0;; ++i) {
      const uint32_t want = uint32_t(2 * i + 1);
      uint32_t v;
      while ((v = line->seq.load(std::memory_order_acquire)) != want) {
        if (line->stop.load(std::memory_order_acquire)) _exit(0);
        futex(&line->seq, FUTEX_WAIT, v);
      }
      line->payload[0] = uint8_t(line->payload[1] + 1);
      line->seq.store(want + 1, std::memory_order_release);
      futex(&line->seq, FUTEX_WAKE, 1);
    }
    _exit(0);
  }
  pinCaller(o);
  auto ns = timeLoop(o, [&](int i) {
    std::memset(line->payload, i & 0xff, sizeof(line->payload));
    line->seq.store(uint32_t(2 * i + 1), std::memory_order_release);
    futex(&line->seq, FUTEX_WAKE, 1);
    uint32_t v;
    while ((v = line->seq.load(std::memory_order_acquire)) != uint32_t(2 * i + 2)) {
      futex(&line->seq, FUTEX_WAIT, v);
    }
  });
  line->stop.store(1, std::memory_order_release);
  line->seq.fetch_add(2, std::memory_order_release);
  futex(&line->seq, FUTEX_WAKE, 1);
  waitpid(child, nullptr, 0);
  munmap(line, 4096);
  return summarize("raw-futex", ns);
}

std::vector<int64_t> rawUdsNs(const Options& o) {
  int sv[2];
  socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv);
  const pid_t child = fork();
  if (child == 0) {
    close(sv[0]);
    pinPeer(o);
    char buf[64];
    for (;;) {
      if (recv(sv[1], buf, sizeof(buf), 0) != 64) _exit(0);  // 0: the parent closed its end
      buf[0] = char(buf[1] + 1);
      send(sv[1], buf, sizeof(buf), 0);
    }
    _exit(0);
  }
  close(sv[1]);
  pinCaller(o);
  char buf[64];
  auto ns = timeLoop(o, [&](int i) {
    std::memset(buf, i & 0xff, sizeof(buf));
    send(sv[0], buf, sizeof(buf), 0);
    recv(sv[0], buf, sizeof(buf), 0);
  });
  close(sv[0]);  // the peer's recv returns 0 and it stops
  waitpid(child, nullptr, 0);
  return ns;
}
Stats rawUds(const Options& o) {
  auto ns = rawUdsNs(o);
  return summarize("raw-uds-seqpacket", ns);
}

#ifdef HMS_FFI_HAVE_ZMQ
// ZeroMQ's ipc:// transport with a PAIR socket on each side, blocking send/recv of 64 bytes: the
// peer our users most often move from. Each process makes its own context after the fork (a
// context does not survive one).
Stats rawZmq(const Options& o, const std::string& dir) {
  const std::string endpoint = "ipc://" + dir + "/zmq-pair";
  const pid_t child = fork();
  if (child == 0) {
    pinPeer(o);
    void* ctx = zmq_ctx_new();
    void* s = zmq_socket(ctx, ZMQ_PAIR);
    zmq_connect(s, endpoint.c_str());  // retried by ZeroMQ until the parent has bound
    char buf[64];
    for (;;) {
      if (zmq_recv(s, buf, sizeof(buf), 0) != 64) break;  // one byte: the parent is done
      buf[0] = char(buf[1] + 1);
      zmq_send(s, buf, sizeof(buf), 0);
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    _exit(0);
  }
  pinCaller(o);
  void* ctx = zmq_ctx_new();
  void* s = zmq_socket(ctx, ZMQ_PAIR);
  zmq_bind(s, endpoint.c_str());
  char buf[64];
  auto ns = timeLoop(o, [&](int i) {
    std::memset(buf, i & 0xff, sizeof(buf));
    zmq_send(s, buf, sizeof(buf), 0);
    zmq_recv(s, buf, sizeof(buf), 0);
  });
  zmq_send(s, "x", 1, 0);  // tells the peer to stop
  waitpid(child, nullptr, 0);
  zmq_close(s);
  zmq_ctx_term(ctx);
  return summarize("zeromq-ipc-pair", ns);
}
#endif

// ---- HMS-FFI -------------------------------------------------------------------------------

// A mode is a wait mode ("spin", "adaptive", "blocking") over shared memory, or the same with a
// "socket-" prefix over the Unix-socket transport (both ends forced to it).
bool isSocketMode(const std::string& m) {
  return m.rfind("socket-", 0) == 0;
}

hms::ffi::WaitMode parseMode(const std::string& mode) {
  const std::string m = isSocketMode(mode) ? mode.substr(7) : mode;
  return m == "spin"       ? hms::ffi::WaitMode::kSpin
         : m == "blocking" ? hms::ffi::WaitMode::kBlocking
                           : hms::ffi::WaitMode::kAdaptive;
}

hms::ffi::Transport transportOf(const std::string& mode) {
  return isSocketMode(mode) ? hms::ffi::Transport::kSocket : hms::ffi::Transport::kSharedMemory;
}

// The service side, run in a child process started by the bench itself.
int serveEcho(const std::string& socket, const std::string& mode, const Options& bench) {
  pinPeer(bench);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  hms::ffi::ClientOptions o;
  o.socketPath = socket;
  o.name = "bench-echo-" + mode;
  o.waitMode = parseMode(mode);
  o.transport = transportOf(mode);
  auto client = hms::ffi::Client::connect(o);
  if (!client) {
    std::fprintf(stderr, "bench service: %s\n", client.status().toString().c_str());
    return 1;
  }
  hms::ffi::ServiceDefinition<Echo> def;
  def.on<&Echo::Client::echoRequest>(
      [](hms::ffi::CallContext&, Echo::EchoParams::Reader p, Echo::EchoResults::Builder r) {
        r.setPayload(p.getPayload());
        return hms::ffi::Status();
      });
  def.on<&Echo::Client::sinkRequest>(
      [](hms::ffi::CallContext&, Echo::SinkParams::Reader p, Echo::SinkResults::Builder r) {
        // Reads every byte, as the raw in-place baseline does.
        auto d = p.getPayload();
        r.setSize(d.size() + (sumWords(d.begin(), d.size()) == 1 ? 1 : 0));
        return hms::ffi::Status();
      });
  def.onStream<&Echo::Client::itemsRequest>([](hms::ffi::CallContext&, Echo::ItemsParams::Reader p,
                                               hms::ffi::StreamWriter<Echo::ItemsResults>& out) {
    // Each item built in place by the service, as the raw ring's producer writes its records.
    const uint32_t bytes = p.getItemBytes();
    for (uint64_t i = 0; i < p.getCount(); ++i) {
      auto s = out.write([&](Echo::ItemsResults::Builder item) {
        item.setSeq(i);
        std::memset(item.initPayload(bytes).begin(), int(i & 0xff), bytes);
      });
      if (!s) return s;
    }
    return hms::ffi::Status();
  });
  auto h = (*client)->serve("hms.bench.echo." + mode, {1, 0, 0}, std::move(def),
                            {.ringBytes = 4u << 20});
  if (!h) {
    std::fprintf(stderr, "bench service: %s\n", h.status().toString().c_str());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  int sig;
  sigwait(&set, &sig);
  return 0;
}

pid_t spawn(const std::vector<std::string>& argv, int stdoutFd = -1) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (stdoutFd >= 0) posix_spawn_file_actions_adddup2(&fa, stdoutFd, 1);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

bool waitForLine(int fd, const char* needle, int timeoutMs) {
  std::string got;
  const int64_t deadline = nowNs() + int64_t(timeoutMs) * 1'000'000;
  while (got.find(needle) == std::string::npos) {
    const int left = int((deadline - nowNs()) / 1'000'000);
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    char buf[256];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return false;
    got.append(buf, size_t(n));
  }
  return true;
}

// The echo service of one mode in a child process (this binary with --serve), stopped at the end.
class EchoServer {
 public:
  EchoServer(const Options& o, const std::string& self, const std::string& socket,
             const std::string& mode) {
    int pipeFd[2];
    if (pipe(pipeFd) != 0) return;
    pid_ = spawn({self, "--serve", mode, "--socket", socket, o.pin ? "--pin" : "--no-pin", "--cpus",
                  std::to_string(o.callerCpu) + "," + std::to_string(o.peerCpu)},
                 pipeFd[1]);
    close(pipeFd[1]);
    up_ = pid_ > 0 && waitForLine(pipeFd[0], "ready", 20'000);
    close(pipeFd[0]);
    if (!up_)
      std::fprintf(stderr, "hms-ffi-bench: the %s echo service did not start\n", mode.c_str());
    if (!up_) ++gChecksFailed;
  }
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;
  ~EchoServer() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
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
                                                              const char* name) {
  hms::ffi::ClientOptions co;
  co.socketPath = socket;
  co.name = name;
  co.waitMode = parseMode(mode);
  co.transport = transportOf(mode);
  return hms::ffi::Client::connect(co);
}

struct EchoCaller {
  EchoCaller(const std::string& socket, const std::string& mode) {
    auto c = connectAs(socket, mode, "bench-caller");
    if (!c) {
      std::fprintf(stderr, "hms-ffi-bench: %s\n", c.status().toString().c_str());
      ++gChecksFailed;
      return;
    }
    client = std::move(*c);
    auto s = client->bind<Echo>("hms.bench.echo." + mode);
    if (!s) {
      std::fprintf(stderr, "hms-ffi-bench: %s\n", s.status().toString().c_str());
      ++gChecksFailed;
      return;
    }
    stub.emplace(std::move(*s));
  }
  std::unique_ptr<hms::ffi::Client> client;
  std::optional<hms::ffi::Stub<Echo>> stub;
};

struct FfiResult {
  Stats stats;          // all samples of the mode
  Stats floor;          // the baseline samples taken between its slices (raw spin, or raw UDS
                        // for socket modes)
  double ratioP50 = 0;  // median over slices of (mode p50 / adjacent baseline p50)
  double ratioP99 = 0;
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

// P15: the typed call with no policy and under one (best p50 of alternating rounds each).
struct PolicyResult {
  std::string mode;
  Stats open, policy;
};

std::optional<FfiResult> ffiCall(const Options& o, const std::string& self,
                                 const std::string& socket, const std::string& mode) {
  EchoServer server(o, self, socket, mode);
  if (!server.up()) return std::nullopt;
  std::optional<FfiResult> result;
  {
    EchoCaller caller(socket, mode);
    auto& stub = caller.stub;
    if (stub) {
      uint64_t sink = 0;
      bool failed = false;
      // The baseline of the same transport: the spin floor, or a raw UDS ping-pong.
      Sliced r = slicedAgainst(
          o, 1000,
          [&](const Options& so) { return isSocketMode(mode) ? rawUdsNs(so) : rawSpinNs(so); },
          [&](int i) {
            auto call = stub->newCall<&Echo::Client::echoRequest>();
            if (!call) {
              failed = true;
              return;
            }
            auto d = call->params().initPayload(64);
            std::memset(d.begin(), i & 0xff, 64);
            auto reply = std::move(*call).send();
            if (!reply) {
              failed = true;
              return;
            }
            sink += reply->results().getPayload()[63];
          });
      if (failed) {
        std::fprintf(stderr, "hms-ffi-bench: some %s calls failed\n", mode.c_str());
        ++gChecksFailed;
      }
      FfiResult fr;
      fr.stats = summarize("hms-ffi call, " + mode, r.measured);
      fr.ratioP50 = r.ratioP50;
      fr.ratioP99 = r.ratioP99;
      fr.floor.p50 = r.baselineP50;
      result = fr;
      if (sink == 42) std::fprintf(stderr, " ");
    }
  }
  return result;
}

struct JsonResult {
  Stats typed, json;    // all samples of each
  double ratioP50 = 0;  // median over slices of (JSON call p50 / adjacent typed call p50)
  // The C ABI (hms_ffi.h) from C++: its JSON call (P12) and its raw call, each in slices beside
  // the typed call.
  std::optional<Stats> cJson, cRaw;
  double cJsonRatioP50 = 0, cRawRatioP50 = 0;
};

std::string base64(const uint8_t* p, size_t n) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v = uint32_t(p[i]) << 16 | (i + 1 < n ? uint32_t(p[i + 1]) << 8 : 0) |
                       (i + 2 < n ? p[i + 2] : 0);
    out += k[v >> 18 & 63];
    out += k[v >> 12 & 63];
    out += i + 1 < n ? k[v >> 6 & 63] : '=';
    out += i + 2 < n ? k[v & 63] : '=';
  }
  return out;
}

// P12: a JSON-level echo of 64 bytes (JsonStub: the request built from JSON in the ring, the
// reply written out as JSON) in slices, each after a slice of the typed call of the same mode.
std::optional<JsonResult> ffiJson(const Options& o, const std::string& self,
                                  const std::string& socket, const std::string& mode) {
  EchoServer server(o, self, socket, mode);
  if (!server.up()) return std::nullopt;
  EchoCaller caller(socket, mode);
  if (!caller.stub) return std::nullopt;
  auto json = caller.client->bindJson("hms.bench.echo." + mode);
  if (!json) {
    std::fprintf(stderr, "hms-ffi-bench: %s\n", json.status().toString().c_str());
    ++gChecksFailed;
    return std::nullopt;
  }
  // The requests (and so the replies: an echo) a user would write, one per payload byte value.
  std::vector<std::string> requests;
  for (int v = 0; v < 256; ++v) {
    uint8_t payload[64];
    std::memset(payload, v, sizeof(payload));
    requests.push_back("{\"payload\":\"" + base64(payload, sizeof(payload)) + "\"}");
  }
  bool failed = false;
  uint64_t sink = 0;
  auto typed = [&](const Options& so) {
    return timeLoop(so, [&](int i) {
      auto reply = caller.stub->call<&Echo::Client::echoRequest>([&](auto p) {
        auto d = p.initPayload(64);
        std::memset(d.begin(), i & 0xff, 64);
      });
      if (!reply) {
        failed = true;
        return;
      }
      sink += reply->results().getPayload()[63];
    });
  };
  Sliced r = slicedAgainst(o, 1000, typed, [&](int i) {
    const std::string& req = requests[size_t(i & 0xff)];
    auto reply = json->call("echo", req);
    if (!reply || *reply != req) failed = true;
  });
  if (failed) {
    std::fprintf(stderr, "hms-ffi-bench: some %s JSON or typed calls failed or came back wrong\n",
                 mode.c_str());
    ++gChecksFailed;
    return std::nullopt;
  }
  JsonResult out;
  out.typed = summarize("hms-ffi typed call, " + mode, r.baseline);
  out.json = summarize("C++ JsonStub call, " + mode, r.measured);
  out.ratioP50 = r.ratioP50;

  // The same through the C ABI, as any other language's binding makes it.
  hms_client_options_t co;
  hms_client_options_init(&co);
  co.socket_path = socket.c_str();
  co.name = "bench-c-abi-caller";
  co.wait_mode = mode == "spin"       ? HMS_WAIT_SPIN
                 : mode == "blocking" ? HMS_WAIT_BLOCKING
                                      : HMS_WAIT_ADAPTIVE;
  hms_client_t* c = nullptr;
  hms_stub_t* cstub = nullptr;
  hms_error_t* err = nullptr;
  if (hms_client_connect(&co, &c, &err) != HMS_OK ||
      hms_client_bind(c, ("hms.bench.echo." + mode).c_str(), "*", &cstub, &err) != HMS_OK) {
    std::fprintf(stderr, "hms-ffi-bench: C ABI: %s\n", hms_error_message(err));
    hms_error_free(&err);
    hms_client_free(&c);
    ++gChecksFailed;
    return out;
  }
  Sliced cj = slicedAgainst(o, 1000, typed, [&](int i) {
    const std::string& req = requests[size_t(i & 0xff)];
    char* reply = nullptr;
    size_t len = 0;
    if (hms_stub_call_json(cstub, "echo", req.data(), req.size(), nullptr, &reply, &len,
                           nullptr) != HMS_OK ||
        std::string_view(reply, len) != req) {
      failed = true;
    }
    hms_string_free(&reply);
  });
  Sliced cr = slicedAgainst(o, 1000, typed, [&](int i) {
    void* data = nullptr;
    size_t capacity = 0;
    if (hms_stub_loan_raw(cstub, "echo", nullptr, &data, &capacity, nullptr) != HMS_OK) {
      failed = true;
      return;
    }
    capnp::FlatMessageBuilder mb(
        kj::arrayPtr(static_cast<capnp::word*>(data), capacity / sizeof(capnp::word)));
    auto d = mb.initRoot<Echo::EchoParams>().initPayload(64);
    std::memset(d.begin(), i & 0xff, 64);
    hms_reply_t* reply = nullptr;
    if (hms_stub_send_raw(cstub, mb.getSegmentsForOutput()[0].size() * sizeof(capnp::word),
                          &reply, nullptr) != HMS_OK) {
      failed = true;
      return;
    }
    kj::ArrayPtr<const capnp::word> seg(static_cast<const capnp::word*>(hms_reply_data(reply)),
                                        hms_reply_size(reply) / sizeof(capnp::word));
    capnp::SegmentArrayMessageReader rd(kj::arrayPtr(&seg, 1));
    sink += rd.getRoot<Echo::EchoResults>().getPayload()[63];
    hms_reply_free(&reply);
  });
  hms_stub_free(&cstub);
  hms_client_free(&c);
  if (failed) {
    std::fprintf(stderr, "hms-ffi-bench: some %s C ABI calls failed or came back wrong\n",
                 mode.c_str());
    ++gChecksFailed;
    return out;
  }
  if (sink == 42) std::fprintf(stderr, " ");
  out.cJson = summarize("C ABI JSON call, " + mode, cj.measured);
  out.cJsonRatioP50 = cj.ratioP50;
  out.cRaw = summarize("C ABI raw call, " + mode, cr.measured);
  out.cRawRatioP50 = cr.ratioP50;
  return out;
}

// P13: each binding's own bench program (bindings/go/cmd/hms-ffi-bench-go,
// bindings/rust/examples/bench.rs) calls this run's echo service, in slices beside that language's
// own blocking Unix-socket ping-pong with a peer on the service's CPU, and prints one JSON object
// per row. Its raw-level rows are compared with the typed C++ call measured here just before.
struct BindingRow {
  std::string name;
  double p50 = 0, p90 = 0, p99 = 0;
  double ratioToBaseline = 0;  // 0: the row is a baseline
  double callsPerSec = 0;      // a throughput row (an async batch) instead of latencies
  int samples = 0;
};

struct BindingResult {
  std::string mode;
  Stats typed;  // the C++ typed call in the same run
  std::vector<BindingRow> rows;
};

// The number after "key": in one line of JSON (the programs' own output; flat objects).
double jsonNumber(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\":");
  return at == std::string::npos ? 0 : std::atof(line.c_str() + at + key.size() + 3);
}

std::string jsonString(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\":\"");
  if (at == std::string::npos) return "";
  const auto from = at + key.size() + 4;
  return line.substr(from, line.find('"', from) - from);
}

std::optional<BindingResult> bindingBench(const Options& o, const std::string& self,
                                          const std::string& socket, const std::string& mode) {
  EchoServer server(o, self, socket, mode);
  if (!server.up()) return std::nullopt;
  BindingResult out;
  out.mode = mode;
  {
    EchoCaller caller(socket, mode);
    if (!caller.stub) return std::nullopt;
    Options so = o;
    so.iterations = std::max(2000, o.iterations / 10);
    bool failed = false;
    auto ns = timeLoop(so, [&](int i) {
      auto reply = caller.stub->call<&Echo::Client::echoRequest>([&](auto p) {
        auto d = p.initPayload(64);
        std::memset(d.begin(), i & 0xff, 64);
      });
      if (!reply) failed = true;
    });
    if (failed) {
      ++gChecksFailed;
      return std::nullopt;
    }
    out.typed = summarize("C++ typed call, " + mode, ns);
  }
  for (const auto& program : o.bindingPrograms) {
    const std::string cmd = program + " --socket " + socket + " --service hms.bench.echo." + mode +
                            " --wait " + mode + " --iterations " +
                            std::to_string(std::max(2000, o.iterations / 10)) + " --peer-cpu " +
                            (o.pin ? std::to_string(o.peerCpu) : std::string("-1"));
    FILE* f = ::popen(cmd.c_str(), "r");
    if (f == nullptr) {
      std::fprintf(stderr, "hms-ffi-bench: cannot run %s\n", program.c_str());
      ++gChecksFailed;
      continue;
    }
    char buf[1024];
    int rows = 0;
    while (std::fgets(buf, sizeof buf, f) != nullptr) {
      const std::string line = buf;
      BindingRow r;
      r.name = jsonString(line, "name");
      if (r.name.empty()) continue;
      r.p50 = jsonNumber(line, "p50_us");
      r.p90 = jsonNumber(line, "p90_us");
      r.p99 = jsonNumber(line, "p99_us");
      r.ratioToBaseline = jsonNumber(line, "ratio_p50_to_baseline");
      r.samples = int(jsonNumber(line, "samples"));
      r.callsPerSec = jsonNumber(line, "calls_per_sec");
      out.rows.push_back(r);
      ++rows;
    }
    const int status = ::pclose(f);
    if (status != 0 || rows == 0) {
      std::fprintf(stderr, "hms-ffi-bench: %s failed (status %d, %d rows)\n", program.c_str(),
                   status, rows);
      ++gChecksFailed;
    }
  }
  return out;
}

// Raw in-place round trip of `bytes`: the caller writes the payload into shared memory and flips
// a sequence word; the other process reads every byte (sums it) and answers with 64 bytes. The
// floor for a large request built in place (P4).
std::vector<int64_t> rawInPlace(const Options& o, size_t bytes) {
  const size_t total = 4096 + bytes;
  auto* mem = static_cast<uint8_t*>(
      mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  auto* line = new (mem) Line{};
  uint8_t* payload = mem + 4096;
  const pid_t child = fork();
  if (child == 0) {
    pinPeer(o);
    for (int i = 0;; ++i) {
      const uint32_t want = uint32_t(2 * i + 1);
      while (line->seq.load(std::memory_order_acquire) != want) {
        if (line->stop.load(std::memory_order_acquire)) _exit(0);
        pause();
      }
      const uint64_t sum = sumWords(payload, bytes);
      std::memcpy(line->payload, &sum, 8);
      line->seq.store(want + 1, std::memory_order_release);
    }
    _exit(0);
  }
  pinCaller(o);
  auto ns = timeLoop(o, [&](int i) {
    std::memset(payload, i & 0xff, bytes);
    line->seq.store(uint32_t(2 * i + 1), std::memory_order_release);
    while (line->seq.load(std::memory_order_acquire) != uint32_t(2 * i + 2)) pause();
  });
  line->stop.store(1, std::memory_order_release);
  waitpid(child, nullptr, 0);
  munmap(mem, total);
  return ns;
}

struct SizedResult {
  Stats raw, ffi;       // all samples of each
  double ratioP50 = 0;  // median over slices of (hms-ffi p50 / adjacent raw in-place p50)
};

// HMS-FFI calls whose request carries `bytes` built in place, read whole by the service, with a
// small reply; `mode` as given. Measured in kSlices slices, each after a raw in-place slice of
// the same size, so that each ratio compares figures from the same vCPU placement.
std::optional<SizedResult> ffiSink(const Options& o, const std::string& self,
                                   const std::string& socket, const std::string& mode,
                                   size_t bytes) {
  EchoServer server(o, self, socket, mode);
  if (!server.up()) return std::nullopt;
  pinCaller(o);
  EchoCaller caller(socket, mode);
  if (!caller.stub) return std::nullopt;
  auto& stub = *caller.stub;
  uint64_t sink = 0;
  bool failed = false;
  Sliced r = slicedAgainst(
      o, 250, [&](const Options& so) { return rawInPlace(so, bytes); },
      [&](int i) {
        auto call = stub.newCall<&Echo::Client::sinkRequest>();
        if (!call) {
          failed = true;
          return;
        }
        auto d = call->params().initPayload(uint(bytes));
        std::memset(d.begin(), i & 0xff, bytes);
        auto reply = std::move(*call).send();
        if (!reply) {
          failed = true;
          return;
        }
        sink += reply->results().getSize();
      });
  if (failed) {
    std::fprintf(stderr, "hms-ffi-bench: some %zu-byte calls failed\n", bytes);
    ++gChecksFailed;
  }
  if (sink == 42) std::fprintf(stderr, " ");
  return SizedResult{summarize("raw in-place " + std::to_string(bytes) + " B", r.baseline),
                     summarize("hms-ffi " + std::to_string(bytes) + " B, " + mode, r.measured),
                     r.ratioP50};
}

// Opening a channel (Client::bind: a broker round trip, the segment mapped, the ring attached,
// closed again when the Stub goes) and discovering a service from the registry (Client::discover:
// read from the mapped registry segment on shared memory, a broker round trip on sockets). The
// echo service of `mode` must be up.
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

struct IdleCpu {
  std::string mode;
  double service = 0, caller = 0, broker = 0;  // % of one core
};

// P8: a service and a caller that has called it (synchronously and asynchronously, so that every
// client thread exists) sit idle; once the spin budget is long spent, the CPU each process uses
// over `seconds` of wall time.
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

// ---- throughput ----------------------------------------------------------------------------

struct Rate {
  std::string name;
  size_t bytes = 0;        // per message or item
  double msgsPerSec = 0;   // messages, calls or items per second
  double bytesPerSec = 0;  // payload bytes per second
};

Rate rateOf(std::string name, size_t bytes, uint64_t count, int64_t ns) {
  const double secs = double(ns) / 1e9;
  return {std::move(name), bytes, double(count) / secs, double(count) * double(bytes) / secs};
}

// The raw SPSC ring baseline: one process writes `count` records of `bytes` into fixed slots of
// a shared-memory ring of `ringBytes` and publishes each with a release store of its head; the
// other reads every byte of each in place and gives its slot back with its tail. Both spin. The
// consumer's clock runs from "go" to the last record, as a stream's caller does.
Rate rawRing(const Options& o, size_t bytes, uint64_t count, size_t ringBytes) {
  struct alignas(64) Side {
    std::atomic<uint64_t> value;
  };
  struct Header {
    Side go, head, tail;
  };
  const size_t slot = (8 + bytes + 63) / 64 * 64;
  const uint64_t slots = std::max<uint64_t>(2, ringBytes / slot);
  const size_t total = sizeof(Header) + slots * slot;
  auto* mem = static_cast<uint8_t*>(
      mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  auto* h = new (mem) Header{};
  uint8_t* data = mem + sizeof(Header);
  const pid_t child = fork();
  if (child == 0) {  // the producer
    pinPeer(o);
    while (h->go.value.load(std::memory_order_acquire) == 0) pause();
    uint64_t tail = 0;
    for (uint64_t i = 0; i < count; ++i) {
      while (i - tail >= slots) {
        tail = h->tail.value.load(std::memory_order_acquire);  // pairs with the consumer's release
        if (i - tail >= slots) pause();
      }
      uint8_t* rec = data + (i % slots) * slot;
      const uint64_t len = bytes;
      std::memcpy(rec, &len, 8);
      std::memset(rec + 8, int(i & 0xff), bytes);
      h->head.value.store(i + 1, std::memory_order_release);  // pairs with the consumer's acquire
    }
    _exit(0);
  }
  pinCaller(o);
  uint64_t sink = 0, head = 0;
  const int64_t t0 = nowNs();
  h->go.value.store(1, std::memory_order_release);
  for (uint64_t i = 0; i < count; ++i) {
    while (head <= i) {
      head = h->head.value.load(std::memory_order_acquire);  // pairs with the producer's release
      if (head <= i) pause();
    }
    const uint8_t* rec = data + (i % slots) * slot;
    uint64_t len;
    std::memcpy(&len, rec, 8);
    sink += sumWords(rec + 8, len);
    h->tail.value.store(i + 1, std::memory_order_release);  // pairs with the producer's acquire
  }
  const int64_t ns = nowNs() - t0;
  waitpid(child, nullptr, 0);
  munmap(mem, total);
  if (sink == 42) std::fprintf(stderr, " ");
  return rateOf("raw SPSC ring, " + std::to_string(bytes) + " B", bytes, count, ns);
}

// Asynchronous 64-byte echo calls kept `inFlight` deep on one Stub: each reply is read (its last
// byte checked) as the oldest Future completes, and a new call goes out in its place.
std::optional<Rate> ffiAsync(const std::string& socket, const std::string& mode, unsigned inFlight,
                             uint64_t calls, int64_t durationNs) {
  EchoCaller caller(socket, mode);
  if (!caller.stub) return std::nullopt;
  auto& stub = *caller.stub;
  std::deque<hms::ffi::Future<Echo::EchoResults>> window;
  uint64_t failed = 0, sent = 0, done = 0;
  auto complete = [&] {
    auto reply = window.front().get();
    window.pop_front();
    if (!reply || reply->results().getPayload()[63] != uint8_t(done & 0xff)) ++failed;
    ++done;
  };
  auto send = [&] {
    window.push_back(stub.callAsync<&Echo::Client::echoRequest>(
        [&](auto p) { std::memset(p.initPayload(64).begin(), int(sent & 0xff), 64); }));
    ++sent;
  };
  for (uint64_t i = 0; i < std::min<uint64_t>(calls / 10, 20'000); ++i) {  // warm-up
    send();
    if (window.size() >= inFlight) complete();
  }
  while (!window.empty()) complete();
  const uint64_t warm = sent;
  const int64_t t0 = nowNs();
  const int64_t until = durationNs > 0 ? t0 + durationNs : INT64_MAX;
  while (sent - warm < calls && ((sent & 1023) != 0 || nowNs() < until)) {
    send();
    if (window.size() >= inFlight) complete();
  }
  while (!window.empty()) complete();
  const int64_t ns = nowNs() - t0;
  if (failed) {
    std::fprintf(stderr, "hms-ffi-bench: %llu async calls failed\n", (unsigned long long)failed);
    ++gChecksFailed;
  }
  return rateOf("async 64 B, " + std::to_string(inFlight) + " in flight, " + mode, 64, sent - warm,
                ns);
}

// One server stream of `items` items of `bytes` each, built in place by the service and read
// whole, in place, by the caller (sequence numbers checked).
std::optional<Rate> ffiStream(const std::string& socket, const std::string& mode, size_t bytes,
                              uint64_t items) {
  EchoCaller caller(socket, mode);
  if (!caller.stub) return std::nullopt;
  uint64_t n = 0, sink = 0;
  bool outOfOrder = false;
  const int64_t t0 = nowNs();
  auto stream = caller.stub->openStream<&Echo::Client::itemsRequest>(
      [&](auto p) {
        p.setCount(items);
        p.setItemBytes(uint32_t(bytes));
      },
      {.timeout = std::chrono::minutes(10)});
  while (stream.next()) {
    auto item = stream.item();
    outOfOrder |= item.getSeq() != n;
    auto d = item.getPayload();
    sink += sumWords(d.begin(), d.size());
    ++n;
  }
  const int64_t ns = nowNs() - t0;
  if (!stream.status() || n != items || outOfOrder) {
    ++gChecksFailed;
    std::fprintf(stderr, "hms-ffi-bench: stream of %zu-byte items: %llu of %llu in order, %s\n",
                 bytes, (unsigned long long)n, (unsigned long long)items,
                 stream.status().toString().c_str());
    return std::nullopt;
  }
  if (sink == 42) std::fprintf(stderr, " ");
  return rateOf("stream " + std::to_string(bytes) + " B items, " + mode, bytes, items, ns);
}

// ---- publish/subscribe -------------------------------------------------------------------

using hms::ffi::bench::Sample;

// A subscriber process (this binary with --subscribe): subscribes to `topic`, prints "ready",
// reads every byte of each message until the topic ends, checking the sequence, and prints
// "done LAST_NS GOT MISSED BAD" (LAST_NS: CLOCK_MONOTONIC when it saw the end, which the publisher
// signals right after its last message; no clock is read per message).
int subscribeSamples(const std::string& socket, const std::string& mode, const std::string& topic,
                     const std::string& policy, const Options& o) {
  if (o.pin) pinPeer(o);
  auto client = connectAs(socket, mode, "bench-subscriber");
  if (!client) {
    std::fprintf(stderr, "bench subscriber: %s\n", client.status().toString().c_str());
    return 1;
  }
  hms::ffi::SubscribeOptions so;
  so.policy = policy == "drop" ? hms::ffi::SlowConsumer::kDropOldest
                               : hms::ffi::SlowConsumer::kBlockPublisher;
  auto sub = (*client)->subscribe<Sample>(topic, so);
  if (!sub) {
    std::fprintf(stderr, "bench subscriber: %s\n", sub.status().toString().c_str());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  uint64_t got = 0, bad = 0, sink = 0, last = 0;
  int64_t lastNs = 0;
  hms::ffi::Status s;
  while ((s = sub->next(std::chrono::minutes(2)))) {
    auto m = sub->message();
    auto d = m.getPayload();
    sink += sumWords(d.begin(), d.size());
    if (m.getSeq() != last + 1 + sub->missed()) ++bad;
    last = m.getSeq();
    ++got;
  }
  // The publisher closes the topic right after its last message: the end is seen at once.
  lastNs = nowNs();
  if (s.code() != hms::ffi::StatusCode::kUnavailable) {
    std::fprintf(stderr, "bench subscriber: %s\n", s.toString().c_str());
  }
  std::printf("done %lld %llu %llu %llu\n", (long long)lastNs, (unsigned long long)got,
              (unsigned long long)sub->dropped(), (unsigned long long)(bad + (sink == 42)));
  std::fflush(stdout);
  return 0;
}

// Reads the line starting with `prefix` from `fd`; empty on timeout or EOF.
std::string readLineStarting(int fd, const char* prefix, int timeoutMs) {
  std::string got;
  const int64_t deadline = nowNs() + int64_t(timeoutMs) * 1'000'000;
  for (;;) {
    size_t at = got.find(prefix);
    if (at != std::string::npos) {
      const size_t end = got.find('\n', at);
      if (end != std::string::npos) return got.substr(at, end - at);
    }
    const int left = int((deadline - nowNs()) / 1'000'000);
    if (left <= 0) return "";
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    char buf[256];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return "";
    got.append(buf, size_t(n));
  }
}

struct PubSubResult {
  Rate rate;             // messages per second each subscriber received
  double pubCpuNs = 0;   // publisher thread CPU per message
  double pubWallNs = 0;  // publisher wall time per message
  unsigned subscribers = 0;
  std::string mode;
};

int64_t threadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// One publisher (this process) and `subscribers` subscriber processes, block_publisher: `count`
// messages of 64 B built in place, each read whole by every subscriber. The rate runs from the
// first publish to the last subscriber's last message.
std::optional<PubSubResult> ffiPubSub(const Options& o, const std::string& self,
                                      const std::string& socket, const std::string& mode,
                                      unsigned subscribers, uint64_t count) {
  static int topicNo = 0;
  const std::string topic = "hms.bench.samples." + std::to_string(++topicNo);
  const bool pin = o.pin && subscribers == 1;
  auto client = connectAs(socket, mode, "bench-publisher");
  if (!client) return std::nullopt;
  hms::ffi::TopicOptions to;
  to.slots = 4096;
  to.maxMessageBytes = 112;
  to.publishTimeout = std::chrono::minutes(2);
  auto pub = (*client)->advertise<Sample>(topic, to);
  if (!pub) {
    std::fprintf(stderr, "hms-ffi-bench: %s\n", pub.status().toString().c_str());
    ++gChecksFailed;
    return std::nullopt;
  }
  struct Child {
    pid_t pid;
    int fd;
  };
  std::vector<Child> children;
  for (unsigned i = 0; i < subscribers; ++i) {
    int pipeFd[2];
    if (pipe(pipeFd) != 0) break;
    const pid_t pid = spawn({self, "--subscribe", topic, "--serve", mode, "--socket", socket,
                             pin ? "--pin" : "--no-pin", "--cpus",
                             std::to_string(o.callerCpu) + "," + std::to_string(o.peerCpu)},
                            pipeFd[1]);
    close(pipeFd[1]);
    children.push_back({pid, pipeFd[0]});
  }
  bool up = true;
  for (auto& c : children) up &= c.pid > 0 && waitForLine(c.fd, "ready", 20'000);
  const int64_t attachBy = nowNs() + 20'000'000'000;
  while (up && pub->subscribers() < subscribers && nowNs() < attachBy) usleep(1000);
  up &= pub->subscribers() == subscribers;
  if (pin) pinCaller(o);
  std::optional<PubSubResult> result;
  if (!up) {
    ++gChecksFailed;
    std::fprintf(stderr, "hms-ffi-bench: pub/sub %s x%u: the subscribers did not attach\n",
                 mode.c_str(), subscribers);
  } else {
    const int64_t cpu0 = threadCpuNs();
    const int64_t t0 = nowNs();
    uint64_t failed = 0;
    for (uint64_t i = 1; i <= count; ++i) {
      auto s = pub->publish([&](Sample::Builder m) {
        m.setSeq(i);
        std::memset(m.initPayload(64).begin(), int(i & 0xff), 64);
      });
      if (!s) ++failed;
    }
    const int64_t t1 = nowNs();
    const int64_t cpu1 = threadCpuNs();
    (void)pub->close();
    int64_t lastNs = 0;
    uint64_t worst = count;
    for (auto& c : children) {
      const std::string line = readLineStarting(c.fd, "done ", 120'000);
      long long ns = 0;
      unsigned long long got = 0, missed = 0, bad = 0;
      if (std::sscanf(line.c_str(), "done %lld %llu %llu %llu", &ns, &got, &missed, &bad) != 4 ||
          bad != 0 || missed != 0) {
        ++failed;
      }
      lastNs = std::max<int64_t>(lastNs, ns);
      worst = std::min<uint64_t>(worst, got);
    }
    if (failed || worst != count) {
      ++gChecksFailed;
      std::fprintf(stderr,
                   "hms-ffi-bench: pub/sub %s x%u: %llu failures, the slowest subscriber got %llu "
                   "of %llu\n",
                   mode.c_str(), subscribers, (unsigned long long)failed, (unsigned long long)worst,
                   (unsigned long long)count);
    } else {
      PubSubResult r;
      r.rate = rateOf("pub/sub 64 B, " + std::to_string(subscribers) + " subscriber" +
                          (subscribers == 1 ? "" : "s") + ", " + mode,
                      64, count, lastNs - t0);
      r.pubCpuNs = double(cpu1 - cpu0) / double(count);
      r.pubWallNs = double(t1 - t0) / double(count);
      r.subscribers = subscribers;
      r.mode = mode;
      result = r;
    }
  }
  for (auto& c : children) {
    if (c.pid > 0) {
      kill(c.pid, SIGTERM);
      waitpid(c.pid, nullptr, 0);
    }
    close(c.fd);
  }
  if (pin) {  // back to the caller CPU set for what follows
    pinCaller(o);
  }
  return result;
}

// "a,b,c" -> {"a", "b", "c"}; "" -> {}.
std::vector<std::string> splitList(const std::string& list) {
  std::vector<std::string> out;
  for (size_t p = 0; p < list.size();) {
    size_t c = list.find(',', p);
    if (c == std::string::npos) c = list.size();
    out.push_back(list.substr(p, c - p));
    p = c + 1;
  }
  return out;
}

std::string findBroker(const std::string& self, const std::string& given) {
  if (!given.empty()) return given;
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(self).parent_path();
  for (const fs::path& p :
       {dir / "../broker/hms-ffid", dir / "hms-ffid", fs::path(HMS_FFI_BROKER_BINARY)}) {
    if (fs::exists(p)) return fs::canonical(p).string();
  }
  return "hms-ffid";
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string serveMode, socket, subscribeTopic;
  bool iterationsGiven = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--serve")
      serveMode = next();
    else if (a == "--subscribe")
      subscribeTopic = next();
    else if (a == "--socket")
      socket = next();
    else if (a == "--iterations") {
      o.iterations = std::max(1000, std::atoi(next().c_str()));
      iterationsGiven = true;
    } else if (a == "--duration") {
      const double secs = std::atof(next().c_str());
      if (!(secs > 0) || secs > 3600) {
        std::fprintf(stderr, "hms-ffi-bench: --duration takes seconds, above 0 and up to 3600\n");
        return 2;
      }
      o.durationNs = int64_t(secs * 1e9);
    } else if (a == "--warmup")
      o.warmup = std::max(0, std::atoi(next().c_str()));
    else if (a == "--no-pin")
      o.pin = false;
    else if (a == "--pin")
      o.pin = true;
    else if (a == "--cpus") {
      const auto cpus = splitList(next());
      const long n = long(std::thread::hardware_concurrency());
      char* e1 = nullptr;
      char* e2 = nullptr;
      const long c0 = cpus.size() == 2 ? std::strtol(cpus[0].c_str(), &e1, 10) : -1;
      const long c1 = cpus.size() == 2 ? std::strtol(cpus[1].c_str(), &e2, 10) : -1;
      if (cpus.size() != 2 || *e1 || *e2 || c0 < 0 || c1 < 0 || c0 >= n || c1 >= n) {
        std::fprintf(stderr, "hms-ffi-bench: --cpus takes two CPU numbers below %ld, as 0,1\n", n);
        return 2;
      }
      o.callerCpu = int(c0);
      o.peerCpu = int(c1);
    } else if (a == "--json")
      o.json = true;
    else if (a == "--broker")
      o.brokerPath = next();
    else if (a == "--modes") {
      o.modes = splitList(next());
    } else if (a == "--sizes" || a == "--stream-sizes" || a == "--in-flight") {
      // Byte counts up to 64 MiB, or call counts; 0 (or nothing) drops the part.
      const bool calls = a == "--in-flight";
      std::vector<size_t> values;
      for (const auto& v : splitList(next())) {
        char* end = nullptr;
        const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || n > (calls ? 65536ull : 64ull << 20)) {
          std::fprintf(stderr, "hms-ffi-bench: %s takes %s, not '%s'\n", a.c_str(),
                       calls ? "call counts up to 65536" : "byte counts up to 64 MiB", v.c_str());
          return 2;
        }
        if (n > 0) values.push_back(size_t(n));
      }
      if (a == "--sizes") o.sizes = values;
      if (a == "--stream-sizes") o.streamSizes = values;
      if (calls) o.inFlight.assign(values.begin(), values.end());
    } else if (a == "--patterns") {
      o.patterns = splitList(next());
      for (const auto& pat : o.patterns) {
        if (pat != "rtt" && pat != "sizes" && pat != "async" && pat != "stream" && pat != "setup" &&
            pat != "pubsub" && pat != "idle" && pat != "json" && pat != "bindings" &&
            pat != "policy" && pat != "metrics") {
          std::fprintf(
              stderr,
              "hms-ffi-bench: --patterns takes rtt,sizes,async,stream,setup,idle,pubsub,json,"
              "bindings,policy,metrics, not "
              "'%s'\n",
              pat.c_str());
          return 2;
        }
      }
    } else if (a == "--binding-programs") {
      o.bindingPrograms = splitList(next());
    } else if (a == "--throughput-modes") {
      o.throughputModes = splitList(next());
    } else if (a == "--stream-items") {
      o.streamItems = std::strtoull(next().c_str(), nullptr, 10);
    } else if (a == "--pubsub-modes") {
      o.pubsubModes = splitList(next());
    } else if (a == "--fanout") {
      o.fanout.clear();
      for (const auto& v : splitList(next())) {
        const int n = std::atoi(v.c_str());
        if (n < 1 || n > 64) {
          std::fprintf(stderr, "hms-ffi-bench: --fanout takes subscriber counts 1 to 64\n");
          return 2;
        }
        o.fanout.push_back(unsigned(n));
      }
    } else if (a == "--help" || a == "-h") {
      std::puts(
          "usage: hms-ffi-bench [--patterns rtt,sizes,async,stream,setup,idle,pubsub,json]\n"
          "                     [--iterations N] [--duration SECONDS] [--warmup N]\n"
          "                     [--modes spin,adaptive,blocking,socket-blocking,...]\n"
          "                     [--sizes 64,1024,65536,1048576 (0: none)]\n"
          "                     [--throughput-modes adaptive,socket-blocking] [--in-flight "
          "1,16,256]\n"
          "                     [--stream-sizes 64,65536] [--stream-items N] [--cpus 0,1 | "
          "--no-pin]\n"
          "                     [--json]\n"
          "                     [--pubsub-modes spin,adaptive] [--fanout 1,2,4,8] [--broker PATH]\n"
          "                     [--binding-programs PATH,PATH]\n"
          "rtt:    64-byte round trips between two processes: HMS-FFI calls per wait mode\n"
          "        (--modes) beside raw shared-memory spin and futex ping-pongs, a raw UDS\n"
          "        seqpacket ping-pong and, when built with libzmq, ZeroMQ ipc:// PAIR, all\n"
          "        measured in the same run. A socket-<wait> mode runs both ends on the "
          "Unix-socket\n"
          "        transport and is compared with raw UDS slices taken between its own.\n"
          "sizes:  requests of --sizes bytes built in place, beside a raw in-place round trip.\n"
          "async:  64-byte asynchronous calls, --in-flight deep, --iterations of them (calls/s).\n"
          "stream: one server stream per --stream-sizes item size (items/s, GB/s).\n"
          "        async and stream run per --throughput-modes, beside a raw SPSC ring between\n"
          "        two processes moving records of the same size one way.\n"
          "setup:  channel open (bind) and discovery times, per --throughput-modes.\n"
          "idle:   CPU used by an idle service, caller and broker over 2 s, per\n"
          "        --throughput-modes.\n"
          "pubsub: one publisher, block_publisher subscriber processes reading every byte of\n"
          "        64-byte messages: one subscriber per --pubsub-modes beside the raw SPSC ring\n"
          "        (P5), then --fanout subscriber counts in adaptive mode, with the publisher's\n"
          "        CPU per message (P6).\n"
          "json:   a JSON-level 64-byte echo (JsonStub) in adaptive mode, in slices beside the\n"
          "        typed call of the same mode (P12).\n"
          "bindings (not run by default): each --binding-programs program (default: Go, Rust,\n"
          "        Python, Ruby and PHP ones of this build and tree) calls the echo service in\n"
          "        blocking and adaptive mode beside its language's own blocking UDS ping-pong\n"
          "        (P13).\n"
          "policy (not run by default): the typed call, spin and adaptive, through a second\n"
          "        broker under an access policy (every method granted, audit none) beside the\n"
          "        same call with no policy, alternating rounds, best p50 of each (P15).\n"
          "metrics (not run by default): the typed call, spin and adaptive, with the call\n"
          "        metrics on (the default) and off ($HMS_FFI_METRICS=off in the caller and the\n"
          "        service), alternating rounds, best p50 of each; and one subscriber's pub/sub\n"
          "        rate the same way, best of each (P14).\n"
          "The measuring process on the first --cpus CPU, the other on the second (0,1), unless\n"
          "--no-pin. --iterations (200000) is the samples per round-trip row and the async calls "
          "per\n"
          "depth; --duration stops each of those at that many seconds instead (streams keep their\n"
          "counts; --stream-items sets them). Starts its own hms-ffid on a private socket.\n"
          "Every reply, stream item and message is checked (order, content, count); a failed\n"
          "check is reported on stderr, its row is left out and the exit status is 3.");
      return 0;
    } else {
      std::fprintf(stderr, "hms-ffi-bench: unknown option '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  // With a duration and no count, the duration decides (within a generous cap on samples).
  if (o.durationNs > 0 && !iterationsGiven) o.iterations = 5'000'000;
  if (!subscribeTopic.empty())
    return subscribeSamples(socket, serveMode, subscribeTopic, "block", o);
  if (!serveMode.empty()) return serveEcho(socket, serveMode, o);
  if (std::thread::hardware_concurrency() < 2) o.pin = false;

  const std::string self = std::filesystem::canonical("/proc/self/exe").string();
  char tmpl[] = "/tmp/hms-ffi-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  const std::string dir = tmpl;
  socket = dir + "/broker.sock";
  const pid_t broker = spawn({findBroker(self, o.brokerPath), "--socket", socket, "--log-level",
                              "warn", "--state-dir", ":memory:"});
  for (int i = 0; i < 2000 && !std::filesystem::exists(socket); ++i) usleep(1000);

  const Stats floorStart = rawSpin(o, "raw-spin (floor, start)");
  std::optional<Stats> futexBase, udsBase, zmqBase;
  std::vector<FfiResult> ffi;
  if (o.runs("rtt")) {
    futexBase = rawFutex(o);
    udsBase = rawUds(o);
#ifdef HMS_FFI_HAVE_ZMQ
    Options zo = o;  // ~100 us a round trip: fewer samples
    zo.iterations = std::min(o.iterations, o.durationNs > 0 ? o.iterations : 20'000);
    zo.warmup = std::min(o.warmup, 2'000);
    zmqBase = rawZmq(zo, dir);
#endif
    for (const auto& m : o.modes) {
      if (auto r = ffiCall(o, self, socket, m)) ffi.push_back(*r);
    }
  }
  // Payload sizes: requests of N bytes built in place, read whole by the service, small reply;
  // adaptive (the default mode), each beside a raw in-place round trip of the same size.
  std::vector<SizedResult> sized;
  for (size_t bytes : o.runs("sizes") ? o.sizes : std::vector<size_t>{}) {
    Options so = o;
    so.iterations = int(
        std::clamp<size_t>(size_t(200) * 1000 * 1000 / (bytes + 1000), 2000, size_t(o.iterations)));
    so.warmup = std::max(200, so.iterations / 10);
    if (auto r = ffiSink(so, self, socket, "adaptive", bytes)) sized.push_back(*r);
  }
  // Throughput, one way or with many calls in flight, each beside the raw SPSC ring moving
  // records of the same size (measured just before the figures it is compared with).
  std::vector<std::pair<Rate, Rate>> rates;    // (raw ring, hms-ffi)
  constexpr size_t kRingBytes = 4u << 20;      // the echo service's rings
  std::vector<std::pair<Stats, Stats>> setup;  // (open, discover) per mode
  std::vector<IdleCpu> idle;
  for (const auto& mode : o.throughputModes) {
    if (!(o.runs("async") && !o.inFlight.empty()) &&
        !(o.runs("stream") && !o.streamSizes.empty()) && !o.runs("setup") && !o.runs("idle"))
      continue;
    EchoServer server(o, self, socket, mode);
    if (!server.up()) continue;
    pinCaller(o);  // the caller and its completion thread
    if (o.runs("setup")) setup.push_back(ffiSetup(o, socket, mode));
    if (o.runs("idle")) {
      if (auto r = ffiIdle(socket, mode, server.pid(), broker, 2.0)) idle.push_back(*r);
    }
    if (o.runs("async") && !o.inFlight.empty()) {
      const uint64_t calls = uint64_t(o.iterations);
      const Rate raw = rawRing(o, 64, std::min<uint64_t>(calls, 1'000'000), kRingBytes);
      for (unsigned n : o.inFlight) {
        if (auto r = ffiAsync(socket, mode, n, calls, o.durationNs)) rates.emplace_back(raw, *r);
      }
    }
    for (size_t bytes : o.runs("stream") ? o.streamSizes : std::vector<size_t>{}) {
      const uint64_t items = o.streamItems != 0
                                 ? o.streamItems
                                 : std::clamp<uint64_t>((1ull << 30) / bytes, 2'000, 1'000'000);
      const Rate raw = rawRing(o, bytes, items, kRingBytes);
      if (auto r = ffiStream(socket, mode, bytes, items)) rates.emplace_back(raw, *r);
    }
  }
  // Publish/subscribe: one subscriber per mode beside the raw ring (P5); then fan-out (P6).
  std::vector<std::pair<Rate, PubSubResult>> pubsubOne;  // (raw ring, hms-ffi)
  std::vector<PubSubResult> fanout;
  if (o.runs("pubsub")) {
    const uint64_t count = std::clamp<uint64_t>(uint64_t(o.iterations) * 5, 5'000, 5'000'000);
    for (const auto& mode : o.pubsubModes) {
      const Rate raw = rawRing(o, 64, count, 4u << 20);
      if (auto r = ffiPubSub(o, self, socket, mode, 1, count)) pubsubOne.emplace_back(raw, *r);
    }
    for (unsigned n : o.fanout) {
      if (auto r = ffiPubSub(o, self, socket, "adaptive", n, count / 4)) fanout.push_back(*r);
    }
  }
  std::optional<JsonResult> jsonCall;
  if (o.runs("json")) jsonCall = ffiJson(o, self, socket, "adaptive");
  // P15: the same typed call through a second broker under an access policy (every method of the
  // echo service granted to this uid's role, so each call pays the service's grant check), in
  // alternating rounds with the first broker's, best p50 of each side.
  std::vector<PolicyResult> policyRows;
  if (o.runs("policy")) {
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
  }
  // P14: the same typed call with the call metrics on (the default) and off, both sides (the
  // service inherits $HMS_FFI_METRICS), in alternating rounds, best p50 of each.
  std::vector<PolicyResult> metricsRows;
  // P14 for P5: one subscriber's rate, metrics off and on (both processes), best of two rounds.
  struct PubSubPair {
    std::string mode;
    double off = 0, on = 0;  // messages per second
  };
  std::vector<PubSubPair> metricsPubSub;
  if (o.runs("metrics")) {
    const uint64_t count = std::clamp<uint64_t>(uint64_t(o.iterations) * 5, 5'000, 5'000'000);
    for (const char* mode : {"spin", "adaptive"}) {
      PubSubPair pp;
      pp.mode = mode;
      for (int round = 0; round < 2; ++round) {
        ::setenv("HMS_FFI_METRICS", "off", 1);
        auto off = ffiPubSub(o, self, socket, mode, 1, count);
        ::unsetenv("HMS_FFI_METRICS");
        auto on = ffiPubSub(o, self, socket, mode, 1, count);
        if (!off || !on) continue;
        pp.off = std::max(pp.off, off->rate.msgsPerSec);
        pp.on = std::max(pp.on, on->rate.msgsPerSec);
      }
      if (pp.off > 0 && pp.on > 0) metricsPubSub.push_back(pp);
    }
    for (const char* mode : {"spin", "adaptive"}) {
      PolicyResult pr;
      pr.mode = mode;
      for (int round = 0; round < 2; ++round) {
        ::setenv("HMS_FFI_METRICS", "off", 1);
        auto off = ffiCall(o, self, socket, mode);
        ::unsetenv("HMS_FFI_METRICS");
        auto on = ffiCall(o, self, socket, mode);
        if (!off || !on) continue;
        if (pr.open.p50 == 0 || off->stats.p50 < pr.open.p50) pr.open = off->stats;
        if (pr.policy.p50 == 0 || on->stats.p50 < pr.policy.p50) pr.policy = on->stats;
      }
      if (pr.open.p50 > 0 && pr.policy.p50 > 0) {
        pr.open.name = "hms-ffi call, metrics off, " + pr.mode;
        pr.policy.name = "hms-ffi call, metrics on, " + pr.mode;
        metricsRows.push_back(pr);
      }
    }
  }
  std::vector<BindingResult> bindings;
  if (o.runs("bindings")) {
    Options bo = o;
    if (bo.bindingPrograms.empty()) {
      // This build's: bench/../bindings/go and bench/../cargo-target (bindings/build-programs.sh).
      namespace fs = std::filesystem;
      const fs::path build = fs::path(self).parent_path().parent_path();
      const fs::path src = HMS_FFI_SOURCE_DIR;
      for (const fs::path& p :
           {build / "bindings/go/hms-ffi-bench-go", build / "cargo-target/release/examples/bench",
            src / "bindings/python/bench/hms_ffi_bench_py.py",
            src / "bindings/ruby/bench/hms_ffi_bench_rb.rb",
            src / "bindings/php/bench/hms_ffi_bench_php"}) {
        if (fs::exists(p)) {
          bo.bindingPrograms.push_back(p.string());
        } else {
          std::fprintf(stderr, "hms-ffi-bench: %s is not built (bindings/build-programs.sh)\n",
                       p.c_str());
        }
      }
    }
    for (const char* mode : {"blocking", "adaptive"}) {
      if (auto r = bindingBench(bo, self, socket, mode)) bindings.push_back(std::move(*r));
    }
  }
  const Stats floorEnd = rawSpin(o, "raw-spin (floor, end)");
  kill(broker, SIGTERM);
  waitpid(broker, nullptr, 0);
  std::filesystem::remove_all(dir);

  const double drift = std::abs(floorEnd.p50 - floorStart.p50) / floorStart.p50;
  auto find = [&](const std::string& mode) -> const FfiResult* {
    for (const auto& r : ffi) {
      if (r.stats.name == "hms-ffi call, " + mode) return &r;
    }
    return nullptr;
  };
  const FfiResult* spin = find("spin");
  const FfiResult* adaptive = find("adaptive");
  const FfiResult* blocking = find("blocking");
  const FfiResult* socketBlocking = find("socket-blocking");

  auto jsonRow = [](const Stats& s, const char* extra) {
    std::printf(
        "{\"name\":\"%s\",\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,"
        "\"p999_us\":%.3f,\"max_us\":%.3f%s}",
        s.name.c_str(), s.p50, s.p90, s.p99, s.p999, s.max, extra);
  };
  if (o.json) {
    std::printf("{\"iterations\":%d,\"pinned\":%s,\"floor_drift\":%.3f,\"results\":[", o.iterations,
                o.pin ? "true" : "false", drift);
    jsonRow(floorStart, "");
    for (const auto* b : {&futexBase, &udsBase, &zmqBase}) {
      if (!*b) continue;
      std::printf(",");
      jsonRow(**b, "");
    }
    for (const auto& r : ffi) {
      char extra[160];
      std::snprintf(extra, sizeof(extra),
                    ",\"adjacent_baseline_p50_us\":%.3f,\"ratio_p50_to_baseline\":%.3f,"
                    "\"ratio_p99_to_baseline\":%.3f",
                    r.floor.p50, r.ratioP50, r.ratioP99);
      std::printf(",");
      jsonRow(r.stats, extra);
    }
    for (const auto& r : sized) {
      std::printf(",");
      jsonRow(r.raw, "");
      char extra[64];
      std::snprintf(extra, sizeof(extra), ",\"ratio_p50_to_raw_in_place\":%.3f", r.ratioP50);
      std::printf(",");
      jsonRow(r.ffi, extra);
    }
    auto rateRow = [](const Rate& r, double ratio) {
      std::printf(",{\"name\":\"%s\",\"bytes\":%zu,\"msgs_per_s\":%.0f,\"gb_per_s\":%.3f%s",
                  r.name.c_str(), r.bytes, r.msgsPerSec, r.bytesPerSec / 1e9, ratio > 0 ? "" : "}");
      if (ratio > 0) std::printf(",\"ratio_to_raw_ring\":%.3f}", ratio);
    };
    for (const auto& [raw, f] : rates) {
      rateRow(raw, 0);
      rateRow(f, f.msgsPerSec / raw.msgsPerSec);
    }
    for (const auto& [raw, f] : pubsubOne) {
      rateRow(raw, 0);
      rateRow(f.rate, f.rate.msgsPerSec / raw.msgsPerSec);
    }
    for (const auto& f : fanout) {
      std::printf(
          ",{\"name\":\"%s\",\"subscribers\":%u,\"msgs_per_s\":%.0f,"
          "\"publisher_cpu_ns_per_msg\":%.1f,\"publisher_wall_ns_per_msg\":%.1f}",
          f.rate.name.c_str(), f.subscribers, f.rate.msgsPerSec, f.pubCpuNs, f.pubWallNs);
    }
    for (const auto& r : idle) {
      std::printf(
          ",{\"name\":\"idle cpu, %s\",\"service_pct\":%.3f,\"caller_pct\":%.3f,"
          "\"broker_pct\":%.3f}",
          r.mode.c_str(), r.service, r.caller, r.broker);
    }
    for (const auto& [openTime, discoverTime] : setup) {
      std::printf(",");
      jsonRow(openTime, "");
      std::printf(",");
      jsonRow(discoverTime, "");
    }
    if (jsonCall) {
      std::printf(",");
      jsonRow(jsonCall->typed, "");
      char extra[64];
      std::snprintf(extra, sizeof(extra), ",\"ratio_p50_to_typed\":%.3f", jsonCall->ratioP50);
      std::printf(",");
      jsonRow(jsonCall->json, extra);
      if (jsonCall->cJson) {
        std::snprintf(extra, sizeof(extra), ",\"ratio_p50_to_typed\":%.3f",
                      jsonCall->cJsonRatioP50);
        std::printf(",");
        jsonRow(*jsonCall->cJson, extra);
        std::snprintf(extra, sizeof(extra), ",\"ratio_p50_to_typed\":%.3f",
                      jsonCall->cRawRatioP50);
        std::printf(",");
        jsonRow(*jsonCall->cRaw, extra);
      }
    }
    for (const auto& b : bindings) {
      std::printf(",");
      jsonRow(b.typed, "");
      for (const auto& r : b.rows) {
        std::printf(",{\"name\":\"%s\",\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f%s",
                    r.name.c_str(), r.p50, r.p90, r.p99, r.ratioToBaseline > 0 ? "" : "}");
        if (r.ratioToBaseline > 0) {
          std::printf(",\"ratio_p50_to_baseline\":%.3f}", r.ratioToBaseline);
        }
      }
    }
    for (const auto& r : policyRows) {
      char extra[96];
      std::snprintf(extra, sizeof(extra), ",\"ratio_p50_to_no_policy\":%.3f",
                    r.policy.p50 / r.open.p50);
      std::printf(",");
      jsonRow(r.policy, extra);
    }
    for (const auto& r : metricsRows) {
      char extra[96];
      std::snprintf(extra, sizeof(extra), ",\"ratio_p50_to_metrics_off\":%.3f",
                    r.policy.p50 / r.open.p50);
      std::printf(",");
      jsonRow(r.open, "");
      std::printf(",");
      jsonRow(r.policy, extra);
    }
    std::printf(",");
    jsonRow(floorEnd, "");
    std::printf("]}\n");
    return checksExitStatus();
  }

  const std::string perRow = o.durationNs > 0
                                 ? std::to_string(o.durationNs / 1e9).substr(0, 4) +
                                       " s (at most " + std::to_string(o.iterations) + " samples)"
                                 : std::to_string(o.iterations) + " samples";
  const std::string pinned = o.pin ? ", pinned to CPUs " + std::to_string(o.callerCpu) + " and " +
                                         std::to_string(o.peerCpu)
                                   : "";
  std::printf("hms-ffi-bench: 64-byte round trips between two processes, %s each%s\n\n",
              perRow.c_str(), pinned.c_str());
  std::printf("%-38s %9s %9s %9s %9s %9s\n", "round trip (us)", "p50", "p90", "p99", "p99.9",
              "max");
  auto row = [](const Stats& s) {
    std::printf("%-38s %9.2f %9.2f %9.2f %9.2f %9.2f\n", s.name.c_str(), s.p50, s.p90, s.p99,
                s.p999, s.max);
  };
  row(floorStart);
  if (futexBase) row(*futexBase);
  if (udsBase) row(*udsBase);
  if (zmqBase) row(*zmqBase);
  for (const auto& r : ffi) row(r.stats);
  row(floorEnd);
  if (!ffi.empty()) {
    std::printf(
        "\nratios to the baseline measured between the slices of each mode (median of %d "
        "slices; raw-spin floor for shared memory, raw UDS seqpacket for socket modes; the "
        "baseline next to it in brackets):\n",
        kSlices);
    for (const auto& r : ffi) {
      std::printf("  %-30s p50 %5.2fx  p99 %5.2fx  (baseline p50 %.2f us)\n", r.stats.name.c_str(),
                  r.ratioP50, r.ratioP99, r.floor.p50);
    }
  }
  if (zmqBase) {
    for (const auto& r : ffi) {
      std::printf("  %-30s %.1fx faster than ZeroMQ ipc:// PAIR at p50\n", r.stats.name.c_str(),
                  zmqBase->p50 / r.stats.p50);
    }
  }
  if (drift > 0.30) {
    std::printf(
        "\nnote: the raw floor moved %.0f%% between the start and the end of the run (the host "
        "placed the vCPUs differently); the ratios above compare slices taken side by side, "
        "absolute figures across the change do not compare.\n",
        drift * 100);
  }
  if (!sized.empty()) {
    std::printf(
        "\nrequest of N bytes built in place and read whole by the other side, small reply "
        "(us):\n");
    for (const auto& r : sized) {
      row(r.raw);
      row(r.ffi);
      std::printf("  %-24s p50 %5.2fx the raw in-place round trip (median of %d slices)\n", "",
                  r.ratioP50, kSlices);
    }
  }
  if (!rates.empty()) {
    std::printf(
        "\nthroughput, each beside the raw SPSC ring moving records of its size one way:\n");
    std::printf("%-44s %12s %9s %9s\n", "", "msgs/s", "GB/s", "vs ring");
    const Rate* lastRaw = nullptr;
    for (const auto& [raw, f] : rates) {
      if (lastRaw == nullptr || lastRaw->name != raw.name ||
          lastRaw->msgsPerSec != raw.msgsPerSec) {
        std::printf("%-44s %12.0f %9.2f\n", raw.name.c_str(), raw.msgsPerSec,
                    raw.bytesPerSec / 1e9);
      }
      lastRaw = &raw;
      std::printf("%-44s %12.0f %9.2f %8.2fx\n", f.name.c_str(), f.msgsPerSec, f.bytesPerSec / 1e9,
                  f.msgsPerSec / raw.msgsPerSec);
    }
  }
  if (!pubsubOne.empty() || !fanout.empty()) {
    std::printf(
        "\npublish/subscribe, 64 B messages built in place, block_publisher, every byte read by "
        "each subscriber:\n");
    std::printf("%-44s %12s %9s %9s %14s\n", "", "msgs/s", "GB/s", "vs ring", "pub CPU ns/msg");
    for (const auto& [raw, f] : pubsubOne) {
      std::printf("%-44s %12.0f %9.2f\n", raw.name.c_str(), raw.msgsPerSec, raw.bytesPerSec / 1e9);
      std::printf("%-44s %12.0f %9.2f %8.2fx %14.1f\n", f.rate.name.c_str(), f.rate.msgsPerSec,
                  f.rate.bytesPerSec / 1e9, f.rate.msgsPerSec / raw.msgsPerSec, f.pubCpuNs);
    }
    for (const auto& f : fanout) {
      std::printf("%-44s %12.0f %9.2f %9s %14.1f\n", f.rate.name.c_str(), f.rate.msgsPerSec,
                  f.rate.bytesPerSec / 1e9, "", f.pubCpuNs);
    }
  }
  if (!setup.empty()) {
    std::printf("\nsetup (us):\n");
    for (const auto& [openTime, discoverTime] : setup) {
      row(openTime);
      row(discoverTime);
    }
  }
  if (!idle.empty()) {
    std::printf("\nidle, %% of one core over 2 s (the caller has made one call of each kind):\n");
    for (const auto& r : idle) {
      std::printf("  %-20s service %.3f%%  caller %.3f%%  broker %.3f%%\n", r.mode.c_str(),
                  r.service, r.caller, r.broker);
    }
  }
  if (jsonCall) {
    std::printf(
        "\nJSON-level call (JsonStub: JSON in and out, built and read in the rings) beside "
        "the typed call, 64-byte echo (us):\n");
    row(jsonCall->typed);
    row(jsonCall->json);
    if (jsonCall->cJson) {
      row(*jsonCall->cJson);
      row(*jsonCall->cRaw);
    }
  }
  if (!policyRows.empty()) {
    std::printf(
        "\naccess policy: the typed call with no policy and under one (every method granted to "
        "this uid's role, audit none; best p50 of two alternating rounds each, us):\n");
    for (const auto& r : policyRows) {
      Stats open = r.open;
      open.name = "hms-ffi call, no policy, " + r.mode;
      row(open);
      row(r.policy);
    }
  }
  if (!metricsRows.empty()) {
    std::printf(
        "\ncall metrics: the typed call with them off and on (best p50 of two alternating rounds "
        "each, us):\n");
    for (const auto& r : metricsRows) {
      row(r.open);
      row(r.policy);
    }
    for (const auto& pp : metricsPubSub) {
      std::printf("%-38s %9.0f msgs/s\n", ("pub/sub, metrics off, " + pp.mode).c_str(), pp.off);
      std::printf("%-38s %9.0f msgs/s\n", ("pub/sub, metrics on, " + pp.mode).c_str(), pp.on);
    }
  }
  for (const auto& b : bindings) {
    std::printf("\nbindings, 64-byte echo, %s (us; each language beside its own blocking UDS "
                "ping-pong):\n",
                b.mode.c_str());
    row(b.typed);
    for (const auto& r : b.rows) {
      if (r.callsPerSec > 0) {
        std::printf("%-38s %9.0f calls/s\n", r.name.c_str(), r.callsPerSec);
      } else {
        std::printf("%-38s %9.2f %9.2f %9.2f\n", r.name.c_str(), r.p50, r.p90, r.p99);
      }
    }
  }
  std::printf("\ntargets (../shared/design/PERFORMANCE.md):\n");
  auto verdict = [](bool met) { return met ? "met" : "MISSED"; };
  if (spin) {
    std::printf(
        "  P1 spin p50 %.2fx floor (<= 2.5x): %s; p99 %.2fx (<= 3x): %s; %.1fx faster than "
        "UDS blocking (>= 20x): %s\n",
        spin->ratioP50, verdict(spin->ratioP50 <= 2.5), spin->ratioP99,
        verdict(spin->ratioP99 <= 3), udsBase->p50 / spin->stats.p50,
        verdict(udsBase->p50 >= 20 * spin->stats.p50));
  }
  if (adaptive && spin) {
    const double r = adaptive->ratioP50 / spin->ratioP50;
    std::printf("  P2 adaptive p50 %.2fx spin (<= 1.3x): %s\n", r, verdict(r <= 1.3));
  }
  if (blocking) {
    const double r = blocking->stats.p50 / futexBase->p50;
    std::printf("  P3 blocking p50 %.2fx raw futex (<= 1.2x): %s\n", r, verdict(r <= 1.2));
  }
  if (socketBlocking) {
    std::printf("  P7 socket transport, blocking, p50 %.2fx raw UDS seqpacket (<= 1.3x): %s\n",
                socketBlocking->ratioP50, verdict(socketBlocking->ratioP50 <= 1.3));
  }
  for (const auto& r : idle) {
    const double worst = std::max({r.service, r.caller, r.broker});
    std::printf("  P8 idle, %s: the busiest process %.3f%% of a core (< 1%%): %s\n", r.mode.c_str(),
                worst, verdict(worst < 1.0));
  }
  for (const auto& [openTime, discoverTime] : setup) {
    if (openTime.name.find("socket") != std::string::npos) continue;  // P9 is the shm path
    std::printf(
        "  P9 channel open p50 %.1f us (<= 200 us): %s; discovery p50 %.3f us (<= 1 us): %s\n",
        openTime.p50, verdict(openTime.p50 <= 200), discoverTime.p50,
        verdict(discoverTime.p50 <= 1));
  }
  for (const auto& [raw, f] : pubsubOne) {
    if (f.mode.rfind("socket", 0) == 0) continue;  // P5 is the shared-memory path
    const double r = f.rate.msgsPerSec / raw.msgsPerSec;
    std::printf("  P5 pub/sub one way, %s: %.2fx the raw SPSC ring (>= 0.7x): %s\n", f.mode.c_str(),
                r, verdict(r >= 0.7));
  }
  const PubSubResult* one = nullptr;
  for (const auto& f : fanout) {
    if (f.subscribers == 1) one = &f;
  }
  for (const auto& f : fanout) {
    if (!one || f.subscribers == 1) continue;
    const double r = f.pubCpuNs / one->pubCpuNs;
    std::printf("  P6 fan-out to %u: publisher CPU per message %.2fx that with 1 (<= 1.5x)%s\n",
                f.subscribers, r, f.subscribers == 8 ? (r <= 1.5 ? ": met" : ": MISSED") : "");
  }
  for (const auto& s : sized) {
    if (s.ffi.name.rfind("hms-ffi 1048576 B", 0) == 0) {
      const double r = s.ratioP50;
      std::printf("  P4 1 MiB request p50 %.2fx raw in-place (<= 1.3x): %s\n", r,
                  verdict(r <= 1.3));
    }
  }
  if (jsonCall && jsonCall->cJson) {
    std::printf("  P12 JSON-level call through the C ABI p50 %.2fx the typed call (<= 5x): %s "
                "(the C++ JsonStub: %.2fx; the C ABI's raw call: %.2fx)\n",
                jsonCall->cJsonRatioP50, verdict(jsonCall->cJsonRatioP50 <= 5),
                jsonCall->ratioP50, jsonCall->cRawRatioP50);
  }
  for (const auto& r : policyRows) {
    const double x = r.policy.p50 / r.open.p50;
    std::printf("  P15 %s call under a policy p50 %.3f us vs %.3f us without: %.3fx (<= 1.05x): %s\n",
                r.mode.c_str(), r.policy.p50, r.open.p50, x, verdict(x <= 1.05));
  }
  for (const auto& pp : metricsPubSub) {
    const double x = pp.on / pp.off;
    std::printf("  P14 %s pub/sub with metrics %.0f msgs/s vs %.0f without: %.3fx (>= 1/1.10 = "
                "0.909x): %s\n",
                pp.mode.c_str(), pp.on, pp.off, x, verdict(x >= 1 / 1.10));
  }
  for (const auto& r : metricsRows) {
    const double x = r.policy.p50 / r.open.p50;
    std::printf("  P14 %s call with metrics p50 %.3f us vs %.3f us without: %.3fx (<= 1.10x): %s\n",
                r.mode.c_str(), r.policy.p50, r.open.p50, x, verdict(x <= 1.10));
  }
  for (const auto& b : bindings) {
    for (const auto& r : b.rows) {
      if (r.ratioToBaseline > 0 && r.name.find("JSON") != std::string::npos) {
        std::printf("  P13 %s p50 %.2fx its language's UDS ping-pong (<= 0.5x): %s\n",
                    r.name.c_str(), r.ratioToBaseline, verdict(r.ratioToBaseline <= 0.5));
      }
      if (r.name.find("raw") != std::string::npos && b.typed.p50 > 0) {
        const double x = r.p50 / b.typed.p50;
        std::printf("  P13 %s p50 %.2fx the C++ typed call (<= 1.5x): %s\n", r.name.c_str(), x,
                    verdict(x <= 1.5));
      }
    }
  }
  return checksExitStatus();
}
