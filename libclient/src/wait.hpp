// Waiting for a condition another process makes true, by the client's WaitMode:
//   spin      poll with PAUSE until the deadline; never sleeps (burns the core)
//   adaptive  poll for the spin budget, then sleep on a futex
//   blocking  sleep on the futex at once
// The sleep protocol pairs with wakeIfSleeping(): the sleeper stores 1 into the wake word, issues
// a full fence and re-checks the condition; the waker publishes, issues a full fence and reads the
// wake word. One of the two always sees the other (Dekker), so no wake-up is lost, and the waker
// makes the FUTEX_WAKE syscall only when a sleeper announced itself.
#pragma once

#include <atomic>
#include <cstdint>

#include "atomics.hpp"
#include "clock.hpp"
#include "shm_layout.hpp"

namespace hms::ffi::detail {

enum class WaitKind : uint8_t { kSpin, kAdaptive, kBlocking };

struct WaitPolicy {
  WaitKind kind = WaitKind::kAdaptive;
  int64_t spinNs = 50'000;
};

// FUTEX_WAIT on a shared (not process-private) word until woken, the value differs from
// `expected`, or the absolute CLOCK_MONOTONIC deadline passes. Spurious returns are possible.
void futexWait(uint32_t* word, uint32_t expected, int64_t deadlineNs) noexcept;
// FUTEX_WAKE of every sleeper on a shared word.
void futexWakeAll(uint32_t* word) noexcept;
// The same two on a word no other process maps (FUTEX_PRIVATE_FLAG: the kernel keys it by
// address alone, which is cheaper).
void futexWaitPrivate(uint32_t* word, uint32_t expected, int64_t deadlineNs) noexcept;
void futexWakeAllPrivate(uint32_t* word) noexcept;

inline void cpuRelax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Called by a producer after it published (committed a record, advanced an index, changed a state).
// Returns whether a sleeper had announced itself (and was woken).
inline bool wakeIfSleeping(WakeWord& w) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the fence in waitFor()
  if (loadRelaxed(w.sleeping) != 0 && exchangeAcqRel(w.sleeping, 0u) != 0) {
    addRelaxed(w.wakes, uint64_t{1});
    futexWakeAll(&w.sleeping);
    return true;
  }
  return false;
}

// The same for two words, with one fence: a reply wakes both a synchronous caller waiting on its
// channel and the caller's completion thread, whichever sleeps.
inline void wakeEitherIfSleeping(WakeWord& a, WakeWord* b) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (WakeWord* w : {&a, b}) {
    if (w && loadRelaxed(w->sleeping) != 0 && exchangeAcqRel(w->sleeping, 0u) != 0) {
      addRelaxed(w->wakes, uint64_t{1});
      futexWakeAll(&w->sleeping);
    }
  }
}

// Unconditional wake, for the broker and for shutdown: the condition changed in a way a sleeper
// must see even if it announced nothing yet.
inline void wakeAlways(WakeWord& w) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  storeRelease(w.sleeping, 0u);
  futexWakeAll(&w.sleeping);
}

// Waits until ready() is true or deadlineNs passes. Returns ready()'s last answer.
template <class Ready>
bool waitFor(WakeWord& w, const WaitPolicy& policy, int64_t deadlineNs, Ready&& ready) noexcept {
  if (ready()) return true;
  if (policy.kind != WaitKind::kBlocking) {
    const int64_t spinUntil =
        policy.kind == WaitKind::kSpin ? deadlineNs : monotonicNs() + policy.spinNs;
    for (uint32_t i = 1;; ++i) {
      cpuRelax();
      if (ready()) return true;
      if ((i & 127) == 0) {
        const int64_t now = monotonicNs();
        if (now >= deadlineNs) return ready();
        if (now >= spinUntil) break;
      }
    }
  }
  for (;;) {
    storeRelaxed(w.sleeping, 1u);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with wakeIfSleeping()
    if (ready()) {
      storeRelaxed(w.sleeping, 0u);
      return true;
    }
    if (monotonicNs() >= deadlineNs) {
      storeRelaxed(w.sleeping, 0u);
      return false;
    }
    futexWait(&w.sleeping, 1u, deadlineNs);
  }
}

}  // namespace hms::ffi::detail
