#include "message_check.hpp"

namespace hms::ffi::detail {

namespace {

constexpr int kMaxDepth = 64;

struct Walk {
  const uint64_t* words;
  int64_t count;
  // Work left: one for each pointer followed and each pointer slot looked at. A message
  // without aliasing costs at most twice its words; one whose pointers alias each other stops
  // here after a bounded walk instead of making it quadratic.
  int64_t budget;

  bool charge(int64_t n) noexcept {
    budget -= n;
    return budget >= 0;
  }

  // `at` is the index of the pointer word; depth counts the structs and lists above it.
  bool pointer(int64_t at, int depth) noexcept {
    const uint64_t p = words[at];
    if (p == 0) return true;
    if (!charge(1) || depth > kMaxDepth) return false;
    const uint32_t kind = uint32_t(p & 3);
    const int64_t target = at + 1 + (int64_t(int32_t(uint32_t(p))) >> 2);
    const uint32_t hi = uint32_t(p >> 32);
    if (kind == 0) {  // struct
      const int64_t data = hi & 0xffff, ptrs = hi >> 16;
      return structAt(target, data, ptrs, depth);
    }
    if (kind == 1) {  // list
      const uint32_t sizeTag = hi & 7;
      const int64_t n = hi >> 3;
      if (target < 0) return false;
      switch (sizeTag) {
        case 0:
          return target <= count;  // void
        case 1:
          return target + (n + 63) / 64 <= count;  // bits
        case 2:
          return target + (n + 7) / 8 <= count;  // bytes
        case 3:
          return target + (n * 2 + 7) / 8 <= count;
        case 4:
          return target + (n * 4 + 7) / 8 <= count;
        case 5:
          return target + n <= count;  // 8-byte values
        case 6: {                      // pointers
          if (target + n > count || !charge(n)) return false;
          for (int64_t i = 0; i < n; ++i) {
            if (!pointer(target + i, depth + 1)) return false;
          }
          return true;
        }
        default: {  // composite: n is the word count after the tag
          if (target + 1 + n > count) return false;
          const uint64_t tag = words[target];
          if ((tag & 3) != 0) return false;
          const int64_t elements = int64_t(int32_t(uint32_t(tag))) >> 2;
          const uint32_t thi = uint32_t(tag >> 32);
          const int64_t data = thi & 0xffff, ptrs = thi >> 16;
          if (elements < 0 || elements * (data + ptrs) > n) return false;
          // Elements without pointers hold nothing to follow: a list of zero-sized structs may
          // claim 2^29 of them in one word, and is not walked element by element.
          if (ptrs == 0) return true;
          for (int64_t e = 0; e < elements; ++e) {
            if (!structAt(target + 1 + e * (data + ptrs), data, ptrs, depth)) return false;
          }
          return true;
        }
      }
    }
    return false;  // far pointer or capability: never in an HMS-FFI record
  }

  bool structAt(int64_t target, int64_t data, int64_t ptrs, int depth) noexcept {
    if (target < 0 || target + data + ptrs > count || !charge(ptrs)) return false;
    for (int64_t i = 0; i < ptrs; ++i) {
      if (!pointer(target + data + i, depth + 1)) return false;
    }
    return true;
  }
};

}  // namespace

bool validSingleSegmentMessage(const uint64_t* words, uint32_t count) noexcept {
  if (count == 0) return false;  // a message has at least its root pointer
  Walk w{words, int64_t(count), 8 * int64_t(count) + 64};
  return w.pointer(0, 0);
}

}  // namespace hms::ffi::detail
