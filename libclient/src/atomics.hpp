// Atomic access to words in shared memory. The shared structs hold plain integers (so that they
// stay trivially copyable); every access goes through std::atomic_ref with an explicit order.
#pragma once

#include <atomic>
#include <cstdint>

namespace hms::ffi::detail {

static_assert(std::atomic_ref<uint32_t>::is_always_lock_free);
static_assert(std::atomic_ref<uint64_t>::is_always_lock_free);

template <class T>
inline T loadAcquire(T& word) noexcept {
  return std::atomic_ref<T>(word).load(std::memory_order_acquire);
}
template <class T>
inline T loadRelaxed(T& word) noexcept {
  return std::atomic_ref<T>(word).load(std::memory_order_relaxed);
}
template <class T>
inline void storeRelease(T& word, T value) noexcept {
  std::atomic_ref<T>(word).store(value, std::memory_order_release);
}
template <class T>
inline void storeRelaxed(T& word, T value) noexcept {
  std::atomic_ref<T>(word).store(value, std::memory_order_relaxed);
}
template <class T>
inline T exchangeAcqRel(T& word, T value) noexcept {
  return std::atomic_ref<T>(word).exchange(value, std::memory_order_acq_rel);
}
template <class T>
inline void addRelaxed(T& word, T delta) noexcept {
  std::atomic_ref<T>(word).fetch_add(delta, std::memory_order_relaxed);
}
// For a counter with a single writer: no locked read-modify-write needed.
template <class T>
inline void bumpSingleWriter(T& word, T delta) noexcept {
  std::atomic_ref<T> ref(word);
  ref.store(ref.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
}

// A load of a word that is only a hint to look again, and that another thread may be clearing
// with plain stores at that moment (a watcher's stale view of ring space the consumer is zeroing:
// any value read is harmless, the watcher only goes round once more). Not instrumented by TSan,
// which would report the race the design accepts; everything the hint leads to is read properly.
__attribute__((no_sanitize("thread"), noinline)) inline uint32_t loadHint(
    const uint32_t& word) noexcept {
  return __atomic_load_n(&word, __ATOMIC_ACQUIRE);
}

}  // namespace hms::ffi::detail
