// Tracing (docs/observability.md): W3C trace context carried in every record header, spans of
// calls as their callers and services saw them, and where spans go.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "hms/ffi/status.hpp"

namespace hms::ffi {

// W3C trace context carried in the record header.
struct TraceContext {
  std::array<uint8_t, 16> traceId{};
  std::array<uint8_t, 8> spanId{};
  uint8_t flags = 0;  // bit 0: sampled (spans of the trace are recorded)

  bool sampled() const noexcept { return (flags & 1) != 0; }
  // "00-<32 hex>-<16 hex>-<2 hex>".
  std::string traceparent() const;
  // A traceparent (lower-case hex, version 00); INVALID_ARGUMENT otherwise.
  static Result<TraceContext> parse(std::string_view traceparent);
};

// A call as one side saw it. A client span's parent is the span the call was made in (the
// caller's own, or the handler's the call was made from); a server span's parent is its call's
// client span.
struct Span {
  enum class Kind { kClient, kServer };
  TraceContext context;                   // the trace, this span's id, the flags
  std::array<uint8_t, 8> parentSpanId{};  // all zero: the root of its trace
  Kind kind = Kind::kClient;
  std::string service;
  std::string method;
  int64_t startUnixNs = 0;
  int64_t endUnixNs = 0;
  StatusCode code = StatusCode::kOk;
  std::string message;  // the error's, if any
};

// Where a client's finished spans go (ClientOptions::spanSink). Called on the thread that ended
// the span, once per span of a sampled trace; must not block for long.
class SpanSink {
 public:
  virtual ~SpanSink() = default;
  virtual void record(const Span& span) noexcept = 0;
};

// The built-in sink: one JSON object a line, appended to DIR/<process name>-<pid>.jsonl (the
// directory is made if missing), read by `hms-ffi trace`. Null, after a warning, if the file
// cannot be opened.
std::shared_ptr<SpanSink> jsonLinesSpanSink(const std::string& dir, const std::string& processName);

// One span as the JSON sink writes it (no newline).
std::string spanJson(const Span& span, int pid, std::string_view processName);

}  // namespace hms::ffi
