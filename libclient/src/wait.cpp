#include "wait.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <ctime>

namespace hms::ffi::detail {

void futexWait(uint32_t* word, uint32_t expected, int64_t deadlineNs) noexcept {
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. Not FUTEX_PRIVATE_FLAG: the word
  // is in a MAP_SHARED segment other processes wake.
  timespec ts;
  timespec* tsp = nullptr;
  if (deadlineNs != kNoDeadline) {
    ts.tv_sec = deadlineNs / 1'000'000'000;
    ts.tv_nsec = deadlineNs % 1'000'000'000;
    tsp = &ts;
  }
  syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, tsp, nullptr, FUTEX_BITSET_MATCH_ANY);
}

void futexWakeAll(uint32_t* word) noexcept {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace hms::ffi::detail
