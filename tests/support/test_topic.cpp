// hms-ffi-test-topic: one side of a topic, in a process of its own, for the publish/subscribe
// tests.
//
//   publish SOCKET TOPIC --count N [--slots S] [--bytes B] [--wait-subscribers K]
//       advertises TOPIC (Tick messages), prints "advertised", waits for K subscribers, publishes
//       N messages, prints "published N" and then stays until killed (SIGTERM: closes first).
//   subscribe SOCKET TOPIC [--drop] [--history H] [--stall-after K] [--scribble]
//       subscribes, prints "subscribed", reads until the topic ends, checking every message
//       (content, order, gaps), and prints "got R missed M last L end CODE"; exit 0 when every
//       check held, 3 when one failed. --stall-after: stops reading after K messages (prints
//       "stalled") and sleeps until killed. --scribble: writes into the first message it reads
//       (prints "scribbled" if the write did not kill it).
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "hms/ffi/client.hpp"
#include "test.capnp.h"
#include "tick.hpp"

using hms::ffi::test::Tick;
using hms::ffi::testing::tickByte;
using hms::ffi::testing::tickIntact;

namespace {

std::atomic<bool> gStop{false};

uint64_t argValue(int argc, char** argv, const char* name, uint64_t fallback) {
  for (int i = 0; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::stoull(argv[i + 1]);
  }
  return fallback;
}
bool hasFlag(int argc, char** argv, const char* name) {
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return true;
  }
  return false;
}

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

int publish(hms::ffi::Client& client, const char* topic, int argc, char** argv) {
  hms::ffi::TopicOptions o;
  o.slots = uint32_t(argValue(argc, argv, "--slots", 64));
  const uint64_t count = argValue(argc, argv, "--count", 1000);
  const uint64_t bytes = argValue(argc, argv, "--bytes", 64);
  auto pub = client.advertise<Tick>(topic, o);
  if (!pub) {
    say("advertise failed: " + pub.status().toString());
    return 1;
  }
  say("advertised");
  const uint64_t want = argValue(argc, argv, "--wait-subscribers", 0);
  while (pub->subscribers() < want && !gStop) usleep(1000);
  for (uint64_t n = 1; n <= count && !gStop; ++n) {
    auto s = pub->publish([&](Tick::Builder t) {
      t.setSeq(n);
      auto p = t.initPayload(uint(bytes));
      for (size_t i = 0; i < bytes; ++i) p[i] = tickByte(n, i);
    });
    if (!s) {
      say("publish failed: " + s.toString());
      return 1;
    }
  }
  say("published " + std::to_string(pub->published()));
  while (!gStop) pause();
  (void)pub->close();
  return 0;
}

int subscribe(hms::ffi::Client& client, const char* topic, int argc, char** argv) {
  hms::ffi::SubscribeOptions o;
  o.policy = hasFlag(argc, argv, "--drop") ? hms::ffi::SlowConsumer::kDropOldest
                                           : hms::ffi::SlowConsumer::kBlockPublisher;
  o.history = uint32_t(argValue(argc, argv, "--history", 0));
  const uint64_t stallAfter = argValue(argc, argv, "--stall-after", 0);
  const bool scribble = hasFlag(argc, argv, "--scribble");
  auto sub = client.subscribe<Tick>(topic, o);
  if (!sub) {
    say("subscribe failed: " + sub.status().toString());
    return 1;
  }
  say("subscribed");
  uint64_t got = 0, last = 0, missed = 0;
  bool ok = true;
  hms::ffi::Status end;
  for (;;) {
    end = sub->next(std::chrono::milliseconds(200));
    if (end.code() == hms::ffi::StatusCode::kDeadlineExceeded && !gStop) continue;
    if (!end) break;
    auto t = sub->message();
    // In order, each message once, and every gap reported (nothing under block_publisher).
    if (t.getSeq() != sub->sequence() || !tickIntact(t)) ok = false;
    if (last != 0 && sub->sequence() != last + 1 + sub->missed()) ok = false;
    if (o.policy == hms::ffi::SlowConsumer::kBlockPublisher && sub->missed() != 0) ok = false;
    last = sub->sequence();
    missed += sub->missed();
    ++got;
    if (scribble && got == 1) {
      auto p = t.getPayload();
      auto* page = reinterpret_cast<uint8_t*>(uintptr_t(p.begin()) & ~uintptr_t(4095));
      if (sub->sharedMemory() && ::mprotect(page, 4096, PROT_READ | PROT_WRITE) == 0) {
        say("mprotect allowed a write mapping");
      } else if (sub->sharedMemory()) {
        say("mprotect refused: " + std::string(std::strerror(errno)));
      }
      const_cast<uint8_t*>(p.begin())[0] ^= 0xff;  // the log is read-only: SIGSEGV here (shm)
      say("scribbled");
    }
    if (stallAfter != 0 && got == stallAfter) {
      say("stalled");
      while (!gStop) pause();
      return 0;
    }
  }
  if (missed != sub->dropped()) ok = false;
  say("got " + std::to_string(got) + " missed " + std::to_string(missed) + " last " +
      std::to_string(last) + " end " + std::to_string(int(end.code())));
  return ok ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return 2;
  struct sigaction sa {};
  sa.sa_handler = [](int) { gStop = true; };
  ::sigaction(SIGTERM, &sa, nullptr);
  hms::ffi::ClientOptions co;
  co.socketPath = argv[2];
  co.name = std::string("test-topic-") + argv[1];
  auto client = hms::ffi::Client::connect(co);
  if (!client) {
    say("connect failed: " + client.status().toString());
    return 1;
  }
  if (std::strcmp(argv[1], "publish") == 0) return publish(**client, argv[3], argc, argv);
  if (std::strcmp(argv[1], "subscribe") == 0) return subscribe(**client, argv[3], argc, argv);
  return 2;
}
