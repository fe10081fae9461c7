// Validation of a single-segment Cap'n Proto message read from shared memory, before any user
// code reads it.
//
// Every pointer reachable from the root must land inside the segment; far pointers and capability
// pointers are refused (HMS-FFI records always hold one segment and no capabilities); nesting is
// limited, and so is the walk's work: the pointers followed and the pointer slots looked at, at
// most 8 per word of the message (one whose pointers alias each other cannot make this walk do
// unbounded work; a reader's own work is bounded by Cap'n Proto's traversal limit). This turns
// corruption into an early, clear error; it is not what keeps readers memory-safe: Cap'n Proto
// bounds-checks every access on its own.
#pragma once

#include <cstdint>

namespace hms::ffi::detail {

bool validSingleSegmentMessage(const uint64_t* words, uint32_t count) noexcept;

}  // namespace hms::ffi::detail
