#include "wait.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <ctime>

namespace hms::ffi::detail {

namespace {

void waitOn(uint32_t* word, uint32_t expected, int64_t deadlineNs, int flags) noexcept {
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout.
  timespec ts;
  timespec* tsp = nullptr;
  if (deadlineNs != kNoDeadline) {
    ts.tv_sec = deadlineNs / 1'000'000'000;
    ts.tv_nsec = deadlineNs % 1'000'000'000;
    tsp = &ts;
  }
  syscall(SYS_futex, word, FUTEX_WAIT_BITSET | flags, expected, tsp, nullptr,
          FUTEX_BITSET_MATCH_ANY);
}

}  // namespace

// Not FUTEX_PRIVATE_FLAG: the word is in a MAP_SHARED segment other processes wake.
void futexWait(uint32_t* word, uint32_t expected, int64_t deadlineNs) noexcept {
  waitOn(word, expected, deadlineNs, 0);
}

void futexWakeAll(uint32_t* word) noexcept {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void futexWaitPrivate(uint32_t* word, uint32_t expected, int64_t deadlineNs) noexcept {
  waitOn(word, expected, deadlineNs, FUTEX_PRIVATE_FLAG);
}

void futexWakeAllPrivate(uint32_t* word) noexcept {
  syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace hms::ffi::detail
