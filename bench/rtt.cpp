// rtt: 64-byte round trips, HMS-FFI calls beside the raw spin, futex, UDS and ZeroMQ ones.
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <new>

#include "patterns.hpp"

#ifdef HMS_FFI_HAVE_ZMQ
#include <zmq.h>
#endif

namespace hms::ffi::bench_tool {

namespace {

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

}  // namespace

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

Stats rawUds(const Options& o) {
  auto ns = rawUdsNs(o);
  return summarize("raw-uds-seqpacket", ns);
}

#ifdef HMS_FFI_HAVE_ZMQ
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

}  // namespace hms::ffi::bench_tool
