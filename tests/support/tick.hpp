// The pub/sub tests' message content: Tick.payload byte i of message `seq` is tickByte(seq, i),
// so a torn, misplaced or altered message shows.
#pragma once

#include <cstddef>
#include <cstdint>

#include "test.capnp.h"

namespace hms::ffi::testing {

inline uint8_t tickByte(uint64_t seq, size_t i) {
  return uint8_t(seq * 31 + i);
}

inline bool tickIntact(test::Tick::Reader t) {
  auto p = t.getPayload();
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] != tickByte(t.getSeq(), i)) return false;
  }
  return true;
}

}  // namespace hms::ffi::testing
