// pubsub: one publisher and subscriber processes, one subscriber beside the raw ring (P5), then
// fan-out (P6).
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "patterns.hpp"

namespace hms::ffi::bench_tool {

namespace {

int64_t threadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

using hms::ffi::bench::Sample;

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

std::optional<PubSubResult> ffiPubSub(const Options& o, const std::string& self,
                                      const std::string& socket, const std::string& mode,
                                      unsigned subscribers, uint64_t count, unsigned batch) {
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
    if (batch <= 1) {
      for (uint64_t i = 1; i <= count; ++i) {
        auto s = pub->publish([&](Sample::Builder m) {
          m.setSeq(i);
          std::memset(m.initPayload(64).begin(), int(i & 0xff), 64);
        });
        if (!s) ++failed;
      }
    } else {
      for (uint64_t first = 1; first <= count; first += batch) {
        const size_t n = size_t(std::min<uint64_t>(batch, count - first + 1));
        auto s = pub->publishBatch(n, [&](size_t k, Sample::Builder m) {
          const uint64_t i = first + k;
          m.setSeq(i);
          std::memset(m.initPayload(64).begin(), int(i & 0xff), 64);
        });
        if (!s) ++failed;
      }
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
                          (subscribers == 1 ? "" : "s") + ", " + mode +
                          (batch > 1 ? ", batches of " + std::to_string(batch) : ""),
                      64, count, lastNs - t0);
      r.pubCpuNs = double(cpu1 - cpu0) / double(count);
      r.pubWallNs = double(t1 - t0) / double(count);
      r.subscribers = subscribers;
      r.mode = mode;
      r.batch = batch;
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

}  // namespace hms::ffi::bench_tool
