// hms-ffi trace: one trace's spans, read from the span files of every process that took part,
// drawn as a waterfall (or written as JSON). Needs no broker. The reading, the tree and the
// drawing are in trace.cpp; this file picks the directory and the drawing and prints.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "command.hpp"
#include "trace.hpp"

namespace hms::ffi::cli {

namespace {

// Whether the locale's character set is UTF-8: the first of LC_ALL, LC_CTYPE and LANG that is
// set and not empty decides, as setlocale() would.
bool utf8Locale() {
  for (const char* name : {"LC_ALL", "LC_CTYPE", "LANG"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    std::string s(v);
    for (char& c : s) {
      if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
    }
    return s.find("UTF-8") != std::string::npos || s.find("UTF8") != std::string::npos;
  }
  return false;
}

int runTrace(const Command& cmd, Invocation& inv) {
  ParsedArgs args;
  if (auto rc = parseCommandLine(
          cmd, inv, {{"--dir", true}, {"--json", false}, {"--pretty", false}, {"--compact", false}},
          args)) {
    return *rc;
  }
  if (args.positional.size() != 1) return usageError(cmd, "takes one TRACE_ID");
  const auto traceId = normalizeTraceId(args.positional[0]);
  if (!traceId) {
    std::string what = "'";
    what += args.positional[0];
    what +=
        "' is not a trace id: give its 32 hex digits, or a traceparent "
        "00-<32 hex>-<16 hex>-<2 hex>";
    return usageError(cmd, what);
  }
  std::string dir;
  if (const std::string* v = args.value("--dir")) {
    dir = *v;
  } else if (const char* env = std::getenv("HMS_FFI_TRACE_DIR"); env != nullptr && *env != '\0') {
    dir = env;
  }
  if (dir.empty()) {
    return usageError(cmd,
                      "where are the spans? give --dir DIR or set HMS_FFI_TRACE_DIR (the "
                      "directory the traced processes write their spans to)");
  }

  TraceLoad load;
  std::string error;
  if (!loadTrace(dir, *traceId, load, error)) {
    printFailure(cmd, error);
    return kExitFailure;
  }
  for (const auto& why : load.unreadable) printFailure(cmd, why);
  const size_t found = load.spans.size();
  int rc = kExitOk;
  if (found == 0) {
    std::string what = "no spans of trace ";
    what += *traceId;
    what += " in ";
    what += dir;
    if (load.files == 0) what += " (it has no *.jsonl files)";
    printFailure(cmd, what);
    rc = kExitFailure;
  } else {
    const TraceTree tree = buildTraceTree(*traceId, std::move(load.spans));
    if (args.has("--json")) {
      std::printf("%s\n", renderTraceJson(tree, prettyOutput(args)).c_str());
    } else {
      TraceRenderOptions options;
      options.unicode = ::isatty(STDOUT_FILENO) == 1 && utf8Locale();
      std::fputs(renderTraceWaterfall(tree, options).c_str(), stdout);
    }
    if (!flushOutput()) rc = kExitFailure;
  }
  // Last, so that they are not lost above a long waterfall.
  for (const auto& [path, count] : load.malformed) {
    std::string what = "skipped ";
    what += std::to_string(count);
    what += count == 1 ? " malformed line in " : " malformed lines in ";
    what += path;
    printFailure(cmd, what);
  }
  return rc;
}

}  // namespace

const Command kTraceCommand{
    "trace", "trace TRACE_ID [--dir DIR] [--json]",
    "One trace's calls across processes as a tree and a timeline, from the span files.",
    "TRACE_ID is the trace's 32 hex digits, or a whole W3C traceparent\n"
    "(00-<trace id>-<span id>-<flags>) as a log line or an HTTP header shows it.\n"
    "\n"
    "Where spans come from: a process records spans when its ClientOptions::traceDir, or else\n"
    "$HMS_FFI_TRACE_DIR, names a directory; it appends one JSON object a line to\n"
    "DIR/<process name>-<pid>.jsonl. Set it on every process of interest (callers and\n"
    "services): a call's client span is written by the caller, its server span by the service.\n"
    "Only sampled traces are recorded: a call made within a sampled trace (the W3C sampled flag\n"
    "01, which travels with every call) is recorded wherever it goes; a call starting a new trace\n"
    "is sampled with the probability ClientOptions::traceSampleRatio, or else\n"
    "$HMS_FFI_TRACE_SAMPLE (0 to 1). This command reads every *.jsonl file in the directory\n"
    "(not its subdirectories) and needs no broker.\n"
    "\n"
    "The first line: the trace id, its spans, its duration (the earliest start to the latest\n"
    "end), the processes (name and pid) that took part and when it started (UTC). Then a line\n"
    "per span, each under the span it was made in, siblings by start time:\n"
    "  NAME           service/method, indented under its parent\n"
    "  KIND           client: the caller's side of a call, from sending it to having the answer;\n"
    "                 server: the service's side, its handler (a child of the client span)\n"
    "  PROCESS[PID]   the process that recorded the span\n"
    "  DURATION       850ns, 12.3us, 4.56ms, 1.20s\n"
    "  TIMELINE       40 columns from the trace's start to its end; the span's time is drawn\n"
    "                 with '#' (at least one column)\n"
    "  STATUS         the gRPC status code and message, when not OK\n"
    "A span whose parent was not recorded (its process writes no spans, or elsewhere) is drawn\n"
    "as a root with '(parent <span id> not recorded)'. On a UTF-8 terminal the tree and the bars\n"
    "use box-drawing characters; otherwise (a pipe, a file) ASCII.\n"
    "\n"
    "options:\n"
    "  --dir DIR      the span directory (default: $HMS_FFI_TRACE_DIR)\n"
    "  --json         the tree as a JSON object instead: {trace_id, span_count, duration_ns,\n"
    "                 processes, spans: [...]}, spans holding the root spans in the order\n"
    "                 above, each {trace_id, span_id, parent_span_id, name, kind,\n"
    "                 start_unix_ns, end_unix_ns (decimal strings), status_code,\n"
    "                 status_message, pid, process, attributes {...}, duration_ns, depth (0 for\n"
    "                 a root), parent_missing (a root whose parent was not recorded), children\n"
    "                 [spans, the same way]}\n"
    "  --pretty, --compact\n"
    "                 indent the JSON or not (default: indented when stdout is a terminal)\n"
    "\n"
    "Lines that are not spans (a file being written, say) are skipped; stderr says how many,\n"
    "per file, at the end.\n"
    "\n"
    "exit status:\n"
    "  0        printed\n"
    "  1        no span of the trace in the directory, or the directory cannot be read\n"
    "  2        the command line does not parse (a TRACE_ID that is not one, no directory)\n",
    runTrace};

}  // namespace hms::ffi::cli
