// hms-ffi trace without a broker: the spans of one trace read from the JSON-lines files the
// library writes (hms/ffi/tracing.hpp, one file per process), put back together as a tree and
// drawn as a waterfall or written as JSON. The command (trace_command.cpp) picks the directory
// and prints; everything here is pure but for reading the directory, so it is tested alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hms::ffi::cli {

// One finished span, one line of a trace file. Ids are lower-case hex (trace 32 digits, span 16);
// parentSpanId is "" for the root of its trace. A server span's parent is its call's client span.
struct TraceSpan {
  std::string traceId;
  std::string spanId;
  std::string parentSpanId;
  std::string name;  // "service/method"
  std::string kind;  // "client" or "server" (other text is kept as it is)
  int64_t startUnixNs = 0;
  int64_t endUnixNs = 0;          // never before startUnixNs
  std::string statusCode = "OK";  // a gRPC code name
  std::string statusMessage;
  int64_t pid = 0;
  std::string process;
  // The "attributes" object's members in the file's order: name, then the value as JSON text.
  std::vector<std::pair<std::string, std::string>> attributes;
};

// The 32 lower-case hex digits of a trace id given as 32 hex digits (either case) or as a W3C
// traceparent "00-<32 hex>-<16 hex>-<2 hex>"; nothing for anything else, the all-zero id
// (invalid in W3C trace context) included.
std::optional<std::string> normalizeTraceId(std::string_view text);

// One line of a trace file; nothing when it is not a span: not a JSON object, or a required
// member (trace_id, span_id, name, start_unix_ns, end_unix_ns) missing or malformed, or the end
// before the start. Members not known here are ignored; parent_span_id, kind, status_code,
// status_message, pid, process and attributes may be missing. Timestamps are decimal strings
// (numbers are accepted too), as int64 nanoseconds since the Unix epoch.
std::optional<TraceSpan> parseSpanLine(std::string_view line);

// What was read from a trace directory.
struct TraceLoad {
  std::vector<TraceSpan> spans;  // of the trace asked for, in file then line order
  size_t files = 0;              // the *.jsonl files read
  // Per file (those with any), the lines that are not spans; blank lines are not counted.
  std::vector<std::pair<std::string, size_t>> malformed;
  std::vector<std::string> unreadable;  // "PATH: why", for files that could not be read
};

// Reads every regular *.jsonl file directly in `dir` (in name order, not recursing) and keeps
// the spans of `traceId` (as normalizeTraceId returns it). False with `error` set when `dir`
// itself cannot be listed; a file that cannot be read is listed in `unreadable` instead.
bool loadTrace(const std::string& dir, std::string_view traceId, TraceLoad& out,
               std::string& error);

// One span of a trace in the order it is drawn: depth first from the roots, children (and roots)
// by start time, then by end time latest first, then by span id.
struct TraceRow {
  size_t span = 0;    // index into TraceTree::spans
  size_t depth = 0;   // 0 for a root
  bool last = false;  // the last child of its parent (or the last root)
  // For each ancestor below the roots (depth - 1 entries, outermost first): whether it is the
  // last child of its parent, i.e. whether no guide line runs down past it.
  std::vector<bool> ancestorsLast;
  // A root whose parent_span_id is not "": its parent is not among the trace's spans, or (with
  // parentInLoop) the parents form a loop, whose earliest span is then made a root.
  bool parentMissing = false;
  bool parentInLoop = false;
  std::vector<size_t> children;  // indexes into TraceTree::rows, in order
};

struct TraceTree {
  std::string traceId;
  std::vector<TraceSpan> spans;
  std::vector<TraceRow> rows;  // every span once, in drawing order
  std::vector<size_t> roots;   // indexes into rows
  int64_t startUnixNs = 0;     // the earliest start of any span
  int64_t endUnixNs = 0;       // the latest end of any span
  size_t processes = 0;        // distinct (process, pid) pairs
};

// The tree of `spans` (all of trace `traceId`; may be empty) by parent_span_id. A span whose
// parent is not among them is a root. Of spans sharing an id, the first is the one children hang
// from.
TraceTree buildTraceTree(std::string traceId, std::vector<TraceSpan> spans);

// The cells [first, last) that [start, end) covers on a timeline of `width` cells spanning
// [traceStart, traceEnd): at least one cell, never past the end. A trace of no duration fills
// every cell.
std::pair<int, int> barCells(int64_t start, int64_t end, int64_t traceStart, int64_t traceEnd,
                             int width);

struct TraceRenderOptions {
  bool unicode = false;  // box drawing and '█' (a UTF-8 terminal); else ASCII
  int barWidth = 40;
};

// The waterfall, each line ending in '\n':
//   trace <id>: 4 spans, 3.21ms, 3 processes, from 2025-11-30 19:00:00.123456 UTC
// then a line per span: the tree guides and the name, the kind, process[pid], the duration, a
// timeline bar, then the status code when it is not OK (with its message), and
// "(parent <id> not recorded)" for a root whose parent is missing ("(parent <id> is its own
// descendant)" for a loop cut open).
std::string renderTraceWaterfall(const TraceTree& tree, const TraceRenderOptions& options);

// The tree as one JSON object, without a final newline (documented in `hms-ffi trace --help`):
// {trace_id, span_count, duration_ns, processes, spans: [root spans, each {the input's members,
// duration_ns, depth, parent_missing, children: [...]}]}.
std::string renderTraceJson(const TraceTree& tree, bool pretty);

}  // namespace hms::ffi::cli
