#include "interrupts.hpp"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>

namespace hms::ffi::cli {

namespace {

std::atomic<int> gReceived{0};

// Never destroyed: the watcher may still take them while static destructors run at exit.
struct Shared {
  std::mutex mu;                 // guards action; held while it runs
  std::function<void()> action;  // the live Scope's, or empty
};
Shared& shared() {
  static Shared* s = new Shared;
  return *s;
}

sigset_t watchedSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

[[noreturn]] void exitForSignal(int sig) {
  std::fflush(nullptr);
  std::_Exit(128 + sig);
}

void watch(sigset_t set) {
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    // Relaxed: received() is a flag polled by the command; the action, which needs more, runs
    // under the mutex, which the Scope's destructor takes.
    const int earlier = gReceived.exchange(sig, std::memory_order_relaxed);
    Shared& sh = shared();
    std::lock_guard lock(sh.mu);
    if (earlier != 0 || !sh.action) exitForSignal(sig);
    sh.action();
  }
}

}  // namespace

void Interrupts::install() {
  (void)shared();
  sigset_t set = watchedSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // Detached: it waits in sigwait until the process ends.
  std::thread(watch, set).detach();
}

int Interrupts::received() noexcept {
  return gReceived.load(std::memory_order_relaxed);
}

Interrupts::Scope::Scope(std::function<void()> action) {
  Shared& sh = shared();
  std::lock_guard lock(sh.mu);
  sh.action = std::move(action);
}

Interrupts::Scope::~Scope() {
  Shared& sh = shared();
  std::lock_guard lock(sh.mu);
  sh.action = nullptr;
}

}  // namespace hms::ffi::cli
