// The library's side of tracing: the trace a handler runs in (so that the calls it makes inherit
// it), span ids, and recording spans.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "hms/ffi/tracing.hpp"

namespace hms::ffi::detail {

// The trace context calls made on this thread carry when their CallOptions give none: the one
// of the handler running on this thread, if any. Null outside handlers.
const TraceContext* currentTrace() noexcept;

// Sets the current trace for a scope (a handler's run); restores the one before.
class TraceScope {
 public:
  explicit TraceScope(const std::optional<TraceContext>& t) noexcept;
  ~TraceScope();
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  const TraceContext* previous_;
  std::optional<TraceContext> mine_;
};

std::array<uint8_t, 8> newSpanId() noexcept;
std::array<uint8_t, 16> newTraceId() noexcept;
// Whether a call with no trace starts a sampled one, at `ratio` (0 to 1).
bool drawSample(double ratio) noexcept;
int64_t realtimeNs() noexcept;

}  // namespace hms::ffi::detail
