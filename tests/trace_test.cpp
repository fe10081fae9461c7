// hms-ffi trace without a broker: span files crafted in a private directory, read back as one
// trace's tree, drawn and written as JSON (tools/trace.hpp); and the built hms-ffi trace run
// against such a directory for its exit statuses.
#include "trace.hpp"

#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

namespace hms::ffi::cli {
namespace {

constexpr const char* kTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr const char* kOtherTrace = "0af7651916cd43dd8448eb211c80319c";
constexpr int64_t kT0 = 1764529200000000000;  // 2025-11-30 19:00:00 UTC
constexpr int64_t kUs = 1000;

// A directory of its own, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "hms-trace-test-XXXXXX");
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  void write(const std::string& name, const std::vector<std::string>& lines) const {
    std::ofstream out(file(name), std::ios::binary);
    for (const auto& l : lines) out << l << '\n';
  }

 private:
  std::string path_;
};

struct SpanSpec {
  std::string span;
  std::string parent;
  std::string name;
  std::string kind;
  int64_t start;
  int64_t end;
  std::string process;
  int pid;
  std::string code = "OK";
  std::string message = "";
  std::string trace = kTrace;
};

// One line as the library writes it.
std::string line(const SpanSpec& s) {
  const auto slash = s.name.find('/');
  std::string out = "{\"trace_id\":\"";
  out += s.trace;
  out += "\",\"span_id\":\"";
  out += s.span;
  out += "\",\"parent_span_id\":\"";
  out += s.parent;
  out += "\",\"name\":\"";
  out += s.name;
  out += "\",\"kind\":\"";
  out += s.kind;
  out += "\",\"start_unix_ns\":\"";
  out += std::to_string(s.start);
  out += "\",\"end_unix_ns\":\"";
  out += std::to_string(s.end);
  out += "\",\"status_code\":\"";
  out += s.code;
  out += "\",\"status_message\":\"";
  out += s.message;
  out += "\",\"pid\":";
  out += std::to_string(s.pid);
  out += ",\"process\":\"";
  out += s.process;
  out += "\",\"attributes\":{\"rpc.system\":\"hms-ffi\",\"rpc.service\":\"";
  out += s.name.substr(0, slash);
  out += "\",\"rpc.method\":\"";
  out += s.name.substr(slash + 1);
  out += "\"}}";
  return out;
}

// Ids of spans: 16 hex digits from a small number.
std::string spanId(int n) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016x", n);
  return buf;
}

// The three-hop trace: nurse-ui calls patient-svc, whose handler calls records-svc, each span
// in the file of the process that recorded it (children before parents in file order).
void writeThreeHops(const TempDir& dir) {
  dir.write("records-svc-300.jsonl",
            {line({spanId(4), spanId(3), "hms.demo.records/fetch", "server", kT0 + 300 * kUs,
                   kT0 + 600 * kUs, "records-svc", 300})});
  dir.write("patient-svc-200.jsonl",
            {line({spanId(3), spanId(2), "hms.demo.records/fetch", "client", kT0 + 250 * kUs,
                   kT0 + 700 * kUs, "patient-svc", 200}),
             line({spanId(2), spanId(1), "hms.demo.patient/getPatient", "server", kT0 + 100 * kUs,
                   kT0 + 800 * kUs, "patient-svc", 200})});
  dir.write("nurse-ui-100.jsonl", {line({spanId(9), "", "hms.demo.other/x", "client", kT0,
                                         kT0 + 5 * kUs, "nurse-ui", 100, "OK", "", kOtherTrace}),
                                   line({spanId(1), "", "hms.demo.patient/getPatient", "client",
                                         kT0, kT0 + 1000 * kUs, "nurse-ui", 100})});
}

TraceTree loadTree(const TempDir& dir, const std::string& trace = kTrace) {
  TraceLoad load;
  std::string error;
  EXPECT_TRUE(loadTrace(dir.path(), trace, load, error)) << error;
  return buildTraceTree(trace, std::move(load.spans));
}

// A bar of `width` cells with [first, last) filled, as the ASCII drawing makes it.
std::string bar(int first, int last, int width = 40) {
  std::string out;
  for (int k = 0; k < width; ++k) out += k >= first && k < last ? '#' : '.';
  return out;
}

std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST(TraceTree, ThreeHopsAcrossThreeFiles_FormOneChainInOrder) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  writeThreeHops(dir);
  TraceLoad load;
  std::string error;
  ASSERT_TRUE(loadTrace(dir.path(), kTrace, load, error)) << error;
  EXPECT_EQ(load.files, 3u);
  EXPECT_TRUE(load.malformed.empty());
  ASSERT_EQ(load.spans.size(), 4u);  // the other trace's span is not among them

  const TraceTree tree = buildTraceTree(kTrace, std::move(load.spans));
  ASSERT_EQ(tree.rows.size(), 4u);
  ASSERT_EQ(tree.roots.size(), 1u);
  EXPECT_EQ(tree.processes, 3u);
  EXPECT_EQ(tree.startUnixNs, kT0);
  EXPECT_EQ(tree.endUnixNs, kT0 + 1000 * kUs);
  const std::vector<std::pair<std::string, std::string>> expected = {
      {spanId(1), "client"}, {spanId(2), "server"}, {spanId(3), "client"}, {spanId(4), "server"}};
  for (size_t i = 0; i < 4; ++i) {
    const auto& row = tree.rows[i];
    const auto& span = tree.spans[row.span];
    EXPECT_EQ(span.spanId, expected[i].first) << "row " << i;
    EXPECT_EQ(span.kind, expected[i].second) << "row " << i;
    EXPECT_EQ(row.depth, i) << "row " << i;
    EXPECT_TRUE(row.last) << "row " << i;
    EXPECT_FALSE(row.parentMissing) << "row " << i;
    if (i < 3) {
      EXPECT_EQ(row.children, std::vector<size_t>{i + 1}) << "row " << i;
    } else {
      EXPECT_TRUE(row.children.empty());
    }
  }
  const auto& server = tree.spans[tree.rows[3].span];
  EXPECT_EQ(server.process, "records-svc");
  EXPECT_EQ(server.pid, 300);
  EXPECT_EQ(server.startUnixNs, kT0 + 300 * kUs);
  EXPECT_EQ(server.statusCode, "OK");
  ASSERT_EQ(server.attributes.size(), 3u);
  EXPECT_EQ(server.attributes[2].first, "rpc.method");
  EXPECT_EQ(server.attributes[2].second, "\"fetch\"");
}

TEST(TraceTree, Children_AreSortedByStartTime) {
  std::vector<TraceSpan> spans(4);
  const char* ids[] = {"00000000000000a0", "00000000000000a1", "00000000000000a2",
                       "00000000000000a3"};
  const int64_t starts[] = {0, 300, 100, 200};
  for (size_t i = 0; i < 4; ++i) {
    spans[i].traceId = kTrace;
    spans[i].spanId = ids[i];
    spans[i].parentSpanId = i == 0 ? "" : ids[0];
    spans[i].startUnixNs = kT0 + starts[i];
    spans[i].endUnixNs = kT0 + 400;
  }
  const TraceTree tree = buildTraceTree(kTrace, spans);
  ASSERT_EQ(tree.rows.size(), 4u);
  EXPECT_EQ(tree.spans[tree.rows[1].span].spanId, ids[2]);
  EXPECT_EQ(tree.spans[tree.rows[2].span].spanId, ids[3]);
  EXPECT_EQ(tree.spans[tree.rows[3].span].spanId, ids[1]);
  EXPECT_FALSE(tree.rows[1].last);
  EXPECT_FALSE(tree.rows[2].last);
  EXPECT_TRUE(tree.rows[3].last);
  EXPECT_EQ(tree.rows[0].children, (std::vector<size_t>{1, 2, 3}));
}

TEST(TraceTree, SpanWhoseParentIsMissing_IsARootWithANote) {
  TempDir dir;
  writeThreeHops(dir);
  // The records service's span only: its parent, the patient service's client span, is gone.
  std::filesystem::remove(dir.file("patient-svc-200.jsonl"));
  const TraceTree tree = loadTree(dir);
  ASSERT_EQ(tree.rows.size(), 2u);
  ASSERT_EQ(tree.roots.size(), 2u);
  EXPECT_EQ(tree.spans[tree.rows[0].span].spanId, spanId(1));
  EXPECT_FALSE(tree.rows[0].parentMissing);
  EXPECT_EQ(tree.spans[tree.rows[1].span].spanId, spanId(4));
  EXPECT_EQ(tree.rows[1].depth, 0u);
  EXPECT_TRUE(tree.rows[1].parentMissing);
  const std::string out = renderTraceWaterfall(tree, {});
  EXPECT_NE(out.find("(parent " + spanId(3) + " not recorded)"), std::string::npos) << out;
  EXPECT_EQ(out.find("(parent " + spanId(1)), std::string::npos) << out;
}

TEST(TraceTree, ParentsInALoop_AreCutOpenAtTheEarliestSpan) {
  std::vector<TraceSpan> spans(2);
  spans[0].spanId = "00000000000000b0";
  spans[0].parentSpanId = "00000000000000b1";
  spans[0].startUnixNs = kT0 + 10;
  spans[0].endUnixNs = kT0 + 20;
  spans[1].spanId = "00000000000000b1";
  spans[1].parentSpanId = "00000000000000b0";
  spans[1].startUnixNs = kT0;
  spans[1].endUnixNs = kT0 + 30;
  const TraceTree tree = buildTraceTree(kTrace, spans);
  ASSERT_EQ(tree.rows.size(), 2u);
  EXPECT_EQ(tree.spans[tree.rows[0].span].spanId, "00000000000000b1");
  EXPECT_TRUE(tree.rows[0].parentMissing);
  EXPECT_TRUE(tree.rows[0].parentInLoop);
  EXPECT_EQ(tree.rows[1].depth, 1u);
}

TEST(TraceLoad, MalformedLines_AreSkippedAndCountedPerFile) {
  TempDir dir;
  SpanSpec good{spanId(1), "", "s/m", "client", kT0, kT0 + 10, "p", 1};
  SpanSpec badId = good;
  badId.span = "XYZ";
  SpanSpec backwards = good;
  backwards.end = kT0 - 1;
  const std::string full = line(good);
  dir.write("a.jsonl", {full, "{not json", "", "   ", "[1,2,3]", line(badId), line(backwards),
                        full.substr(0, full.size() / 2), full + " trailing"});
  dir.write("b.jsonl", {line({spanId(2), spanId(1), "s/m", "server", kT0 + 2, kT0 + 8, "q", 2})});
  dir.write("c.txt", {"not a span file"});
  std::filesystem::create_directory(dir.file("sub.jsonl"));  // not a file: not read

  TraceLoad load;
  std::string error;
  ASSERT_TRUE(loadTrace(dir.path(), kTrace, load, error)) << error;
  EXPECT_EQ(load.files, 2u);
  EXPECT_EQ(load.spans.size(), 2u);
  ASSERT_EQ(load.malformed.size(), 1u);
  EXPECT_EQ(load.malformed[0].first, dir.file("a.jsonl"));
  EXPECT_EQ(load.malformed[0].second, 6u);
  EXPECT_TRUE(load.unreadable.empty());
}

TEST(TraceLoad, ExtraMembers_AreIgnoredAndOptionalOnesDefault) {
  auto span = parseSpanLine(
      "{\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f067aa0ba902b7\","
      "\"name\":\"a/b\",\"start_unix_ns\":\"1764529200123456789\",\"end_unix_ns\":"
      "\"1764529200123459999\",\"future\":{\"x\":[1,2]}}");
  ASSERT_TRUE(span.has_value());
  EXPECT_EQ(span->startUnixNs, 1764529200123456789);  // exact: not through a double
  EXPECT_EQ(span->endUnixNs, 1764529200123459999);
  EXPECT_EQ(span->parentSpanId, "");
  EXPECT_EQ(span->statusCode, "OK");
  EXPECT_TRUE(span->attributes.empty());
  EXPECT_FALSE(parseSpanLine("{\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"}").has_value());
}

TEST(TraceLoad, MissingDirectory_IsAnError) {
  TraceLoad load;
  std::string error;
  EXPECT_FALSE(loadTrace("/nonexistent/hms-trace-test", kTrace, load, error));
  EXPECT_NE(error.find("/nonexistent/hms-trace-test"), std::string::npos) << error;
}

TEST(TraceBar, SecondHalf_StartsAtTheMiddleColumn) {
  EXPECT_EQ(barCells(kT0 + 500, kT0 + 1000, kT0, kT0 + 1000, 40), std::make_pair(20, 40));
  EXPECT_EQ(barCells(kT0, kT0 + 1000, kT0, kT0 + 1000, 40), std::make_pair(0, 40));
  EXPECT_EQ(barCells(kT0, kT0 + 500, kT0, kT0 + 1000, 40), std::make_pair(0, 20));
  EXPECT_EQ(barCells(kT0 + 100, kT0 + 900, kT0, kT0 + 1000, 40), std::make_pair(4, 36));
}

TEST(TraceBar, ShortSpans_GetOneCell) {
  EXPECT_EQ(barCells(kT0 + 10, kT0 + 11, kT0, kT0 + 1000, 40), std::make_pair(0, 1));
  EXPECT_EQ(barCells(kT0 + 1000, kT0 + 1000, kT0, kT0 + 1000, 40), std::make_pair(39, 40));
  EXPECT_EQ(barCells(kT0 + 501, kT0 + 501, kT0, kT0 + 1000, 40), std::make_pair(20, 21));
  EXPECT_EQ(barCells(kT0, kT0, kT0, kT0, 40), std::make_pair(0, 40));  // a trace of no time
}

TEST(TraceRender, AsciiWaterfall_IsExact) {
  TempDir dir;
  dir.write("ui.jsonl",
            {line({spanId(1), "", "svc.a/m", "client", kT0, kT0 + 1000 * kUs, "nurse-ui", 10}),
             line({spanId(6), spanId(1), "svc.e/q", "client", kT0 + 920 * kUs, kT0 + 980 * kUs,
                   "nurse-ui", 10})});
  dir.write("patient.jsonl", {line({spanId(2), spanId(1), "svc.a/m", "server", kT0 + 100 * kUs,
                                    kT0 + 900 * kUs, "patient", 20}),
                              line({spanId(3), spanId(2), "svc.b/n", "client", kT0 + 500 * kUs,
                                    kT0 + 1000 * kUs, "patient", 20, "NOT_FOUND", "no such row"}),
                              line({spanId(4), spanId(2), "svc.d/p", "client", kT0 + 150 * kUs,
                                    kT0 + 400 * kUs, "patient", 20})});
  dir.write("records.jsonl", {line({spanId(5), "ffffffffffffffff", "svc.c/o", "server",
                                    kT0 + 200 * kUs, kT0 + 300 * kUs, "records", 30})});
  const std::string out = renderTraceWaterfall(loadTree(dir), {});
  const std::vector<std::string> expected = {
      std::string("trace ") + kTrace +
          ": 6 spans, 1.00ms, 3 processes, from 2025-11-30 19:00:00.000000 UTC",
      "svc.a/m        client  nurse-ui[10]  1.00ms  " + bar(0, 40),
      "|- svc.a/m     server  patient[20]    800us  " + bar(4, 36),
      "|  |- svc.d/p  client  patient[20]    250us  " + bar(6, 16),
      "|  `- svc.b/n  client  patient[20]    500us  " + bar(20, 40) + "  NOT_FOUND: no such row",
      "`- svc.e/q     client  nurse-ui[10]  60.0us  " + bar(36, 40),
      "svc.c/o        server  records[30]    100us  " + bar(8, 12) +
          "  (parent ffffffffffffffff not recorded)",
  };
  EXPECT_EQ(linesOf(out), expected) << out;
  EXPECT_EQ(out.back(), '\n');
  // The same line, spelt out.
  EXPECT_EQ(
      linesOf(out)[2],
      "|- svc.a/m     server  patient[20]    800us  ....################################....");
}

TEST(TraceRender, UnicodeWaterfall_UsesBoxDrawing) {
  TempDir dir;
  writeThreeHops(dir);
  TraceRenderOptions options;
  options.unicode = true;
  const auto lines = linesOf(renderTraceWaterfall(loadTree(dir), options));
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[2].rfind("\u2514\u2500 hms.demo.patient/getPatient", 0), 0u) << lines[2];
  EXPECT_EQ(lines[4].rfind("      \u2514\u2500 hms.demo.records/fetch", 0), 0u) << lines[4];
  EXPECT_NE(lines[1].find("\u2588\u2588\u2588"), std::string::npos) << lines[1];
}

// Cap'n Proto's JSON reader over a document.
class Json {
 public:
  explicit Json(const std::string& text) {
    capnp::JsonCodec codec;
    root_ = message_.initRoot<capnp::JsonValue>();
    codec.decodeRaw(kj::arrayPtr(text.data(), text.size()), root_);
  }
  capnp::JsonValue::Reader root() { return root_.asReader(); }
  static capnp::JsonValue::Reader member(capnp::JsonValue::Reader v, const char* name) {
    for (auto f : v.getObject()) {
      if (f.getName() == name) return f.getValue();
    }
    ADD_FAILURE() << "no member '" << name << "'";
    return v;
  }
  static std::string text(capnp::JsonValue::Reader v) {
    return v.isString() ? v.getString().cStr() : std::string("<not a string>");
  }

 private:
  capnp::MallocMessageBuilder message_;
  capnp::JsonValue::Builder root_ = nullptr;
};

TEST(TraceRender, Json_IsTheNestedTree) {
  TempDir dir;
  writeThreeHops(dir);
  for (bool pretty : {false, true}) {
    Json j(renderTraceJson(loadTree(dir), pretty));
    auto root = j.root();
    EXPECT_EQ(Json::text(Json::member(root, "trace_id")), kTrace);
    EXPECT_EQ(Json::member(root, "span_count").getNumber(), 4);
    EXPECT_EQ(Json::member(root, "duration_ns").getNumber(), 1000 * kUs);
    EXPECT_EQ(Json::member(root, "processes").getNumber(), 3);
    auto level = Json::member(root, "spans").getArray();
    for (int depth = 0; depth < 4; ++depth) {
      ASSERT_EQ(level.size(), 1u) << "depth " << depth;
      auto span = level[0];
      EXPECT_EQ(Json::text(Json::member(span, "span_id")), spanId(depth + 1));
      EXPECT_EQ(Json::member(span, "depth").getNumber(), depth);
      EXPECT_FALSE(Json::member(span, "parent_missing").getBoolean());
      EXPECT_EQ(Json::text(Json::member(span, "kind")), depth % 2 == 0 ? "client" : "server");
      EXPECT_EQ(Json::text(Json::member(Json::member(span, "attributes"), "rpc.system")),
                "hms-ffi");
      level = Json::member(span, "children").getArray();
    }
    EXPECT_EQ(level.size(), 0u);
  }
  // Timestamps stay exact strings.
  const std::string compact = renderTraceJson(loadTree(dir), false);
  EXPECT_NE(compact.find("\"start_unix_ns\":\"1764529200000300000\""), std::string::npos);
  EXPECT_NE(compact.find("\"duration_ns\":300000,"), std::string::npos);
}

TEST(TraceId, HexDigitsOrTraceparent_AreAccepted) {
  EXPECT_EQ(normalizeTraceId(kTrace), kTrace);
  EXPECT_EQ(normalizeTraceId("4BF92F3577B34DA6A3CE929D0E0E4736"), kTrace);
  EXPECT_EQ(normalizeTraceId("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), kTrace);
  EXPECT_EQ(normalizeTraceId("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00"), kTrace);
}

TEST(TraceId, Others_AreRefused) {
  for (const char* bad :
       {"", "4bf92f3577b34da6a3ce929d0e0e473", "4bf92f3577b34da6a3ce929d0e0e47366",
        "4bf92f3577b34da6a3ce929d0e0e473g", "00000000000000000000000000000000", "00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"}) {
    EXPECT_FALSE(normalizeTraceId(bad).has_value()) << bad;
  }
}

// The built hms-ffi: its exit status, stdout and stderr.
struct Ran {
  int code = -1;
  std::string out;
  std::string err;
};

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs `hms-ffi args...` with $HMS_FFI_TRACE_DIR set to `traceDir` (unset when empty).
Ran runTool(const std::vector<std::string>& args, const std::string& traceDir = "") {
  TempDir outDir;
  const std::string outPath = outDir.file("out");
  const std::string errPath = outDir.file("err");
  std::vector<std::string> argv{HMS_FFI_TOOL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open(outPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(errPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || err < 0) ::_exit(126);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    if (traceDir.empty()) {
      ::unsetenv("HMS_FFI_TRACE_DIR");
    } else {
      ::setenv("HMS_FFI_TRACE_DIR", traceDir.c_str(), 1);
    }
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  Ran r;
  int status = 0;
  if (pid > 0 && ::waitpid(pid, &status, 0) == pid && WIFEXITED(status)) {
    r.code = WEXITSTATUS(status);
  }
  r.out = readAll(outPath);
  r.err = readAll(errPath);
  return r;
}

TEST(TraceTool, ExitStatuses_AreZeroOneAndTwo) {
  TempDir dir;
  writeThreeHops(dir);
  dir.write("broken.jsonl", {"{not json", "}"});

  Ran found = runTool({"trace", kTrace, "--dir", dir.path()});
  EXPECT_EQ(found.code, 0) << found.err;
  const auto lines = linesOf(found.out);
  ASSERT_EQ(lines.size(), 5u) << found.out;
  EXPECT_EQ(lines[0].rfind(std::string("trace ") + kTrace + ": 4 spans, 1.00ms, 3 processes", 0),
            0u)
      << lines[0];
  EXPECT_EQ(lines[4].rfind("      `- hms.demo.records/fetch", 0), 0u) << lines[4];  // a pipe: ASCII
  EXPECT_NE(
      found.err.find("hms-ffi trace: skipped 2 malformed lines in " + dir.file("broken.jsonl")),
      std::string::npos)
      << found.err;

  // From $HMS_FFI_TRACE_DIR, by traceparent, as JSON.
  Ran json = runTool({"trace", std::string("00-") + kTrace + "-00f067aa0ba902b7-01", "--json"},
                     dir.path());
  EXPECT_EQ(json.code, 0) << json.err;
  EXPECT_EQ(Json::text(Json::member(Json(json.out).root(), "trace_id")), kTrace);

  Ran none = runTool({"trace", "11111111111111111111111111111111", "--dir", dir.path()});
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.err.find("no spans of trace 11111111111111111111111111111111 in " + dir.path()),
            std::string::npos)
      << none.err;
  EXPECT_TRUE(none.out.empty());

  Ran noDir = runTool({"trace", kTrace, "--dir", dir.file("missing")});
  EXPECT_EQ(noDir.code, 1) << noDir.err;

  Ran badId = runTool({"trace", "not-a-trace", "--dir", dir.path()});
  EXPECT_EQ(badId.code, 2);
  EXPECT_NE(badId.err.find("not a trace id"), std::string::npos) << badId.err;

  Ran unset = runTool({"trace", kTrace});
  EXPECT_EQ(unset.code, 2);
  EXPECT_NE(unset.err.find("HMS_FFI_TRACE_DIR"), std::string::npos) << unset.err;

  Ran noArgs = runTool({"trace"}, dir.path());
  EXPECT_EQ(noArgs.code, 2);

  Ran help = runTool({"trace", "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("HMS_FFI_TRACE_SAMPLE"), std::string::npos);
}

}  // namespace
}  // namespace hms::ffi::cli
