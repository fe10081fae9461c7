#include "bench_common.hpp"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>

extern char** environ;

namespace hms::ffi::bench_tool {

int gChecksFailed = 0;

namespace {

void pinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    std::fprintf(stderr, "hms-ffi-bench: cannot pin to CPU %d: %s\n", cpu, std::strerror(errno));
  }
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

}  // namespace

void pinCaller(const Options& o) {
  if (o.pin) pinTo(o.callerCpu);
}
void pinPeer(const Options& o) {
  if (o.pin) pinTo(o.peerCpu);
}

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

bool isSocketMode(const std::string& m) {
  return m.rfind("socket-", 0) == 0;
}

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

pid_t spawn(const std::vector<std::string>& argv, int stdoutFd) {
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

EchoServer::EchoServer(const Options& o, const std::string& self, const std::string& socket,
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

EchoServer::~EchoServer() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
}

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

EchoCaller::EchoCaller(const std::string& socket, const std::string& mode) {
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

Rate rateOf(std::string name, size_t bytes, uint64_t count, int64_t ns) {
  const double secs = double(ns) / 1e9;
  return {std::move(name), bytes, double(count) / secs, double(count) * double(bytes) / secs};
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

}  // namespace hms::ffi::bench_tool
