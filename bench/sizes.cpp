// sizes: requests of N bytes built in place, beside a raw in-place round trip (P4).
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <new>

#include "patterns.hpp"

namespace hms::ffi::bench_tool {

namespace {

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

}  // namespace

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

}  // namespace hms::ffi::bench_tool
