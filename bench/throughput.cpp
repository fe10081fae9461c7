// async and stream: throughput of asynchronous calls and server streams, each beside the raw
// SPSC ring moving records of the same size.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <new>

#include "patterns.hpp"

namespace hms::ffi::bench_tool {

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

std::optional<Rate> ffiSyncRate(const std::string& socket, const std::string& mode, uint64_t calls,
                                int64_t durationNs) {
  EchoCaller caller(socket, mode);
  if (!caller.stub) return std::nullopt;
  auto& stub = *caller.stub;
  uint64_t failed = 0, done = 0;
  auto once = [&] {
    auto reply = stub.call<&Echo::Client::echoRequest>(
        [&](auto p) { std::memset(p.initPayload(64).begin(), int(done & 0xff), 64); });
    if (!reply || reply->results().getPayload()[63] != uint8_t(done & 0xff)) ++failed;
    ++done;
  };
  for (uint64_t i = 0; i < std::min<uint64_t>(calls / 10, 20'000); ++i) once();  // warm-up
  const uint64_t warm = done;
  const int64_t t0 = nowNs();
  const int64_t until = durationNs > 0 ? t0 + durationNs : INT64_MAX;
  while (done - warm < calls && ((done & 1023) != 0 || nowNs() < until)) once();
  const int64_t ns = nowNs() - t0;
  if (failed) {
    std::fprintf(stderr, "hms-ffi-bench: %llu synchronous calls failed\n",
                 (unsigned long long)failed);
    ++gChecksFailed;
  }
  return rateOf("sync 64 B, one at a time, " + mode, 64, done - warm, ns);
}

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

}  // namespace hms::ffi::bench_tool
