#pragma once

#include <time.h>

#include <cstdint>

namespace hms::ffi::detail {

// CLOCK_MONOTONIC in nanoseconds; answered by the vDSO, no syscall. Deadlines in records use it.
inline int64_t monotonicNs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

inline constexpr int64_t kNoDeadline = INT64_MAX;

}  // namespace hms::ffi::detail
