#include "trace.hpp"

#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <system_error>

#include "json_writer.hpp"
#include "stats.hpp"

namespace hms::ffi::cli {

namespace {

bool isHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

std::string lowerCase(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'F') c = char(c - 'A' + 'a');
  }
  return out;
}

// A span or trace id as the files must hold it: `digits` lower-case hex digits.
bool isId(std::string_view s, size_t digits) {
  return s.size() == digits && isHex(s) && lowerCase(s) == s;
}

// The member `name` of `object` in `out`; false without it.
bool findMember(capnp::JsonValue::Reader object, std::string_view name,
                capnp::JsonValue::Reader& out) {
  for (auto f : object.getObject()) {
    const auto n = f.getName();
    if (std::string_view(n.begin(), n.size()) == name) {
      out = f.getValue();
      return true;
    }
  }
  return false;
}

std::optional<std::string> stringMember(capnp::JsonValue::Reader object, std::string_view name) {
  capnp::JsonValue::Reader v;
  if (!findMember(object, name, v) || !v.isString()) return std::nullopt;
  const auto s = v.getString();
  return std::string(s.begin(), s.size());
}

// A decimal string, or a number that is a whole int64 (a double holds it only up to 2^53).
std::optional<int64_t> int64Member(capnp::JsonValue::Reader object, std::string_view name) {
  capnp::JsonValue::Reader v;
  if (!findMember(object, name, v)) return std::nullopt;
  if (v.isString()) {
    const auto s = v.getString();
    int64_t n = 0;
    const char* end = s.begin() + s.size();
    auto [p, ec] = std::from_chars(s.begin(), end, n);
    if (ec != std::errc() || p != end || s.size() == 0) return std::nullopt;
    return n;
  }
  if (v.isNumber()) {
    const double d = v.getNumber();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e15) return std::nullopt;
    return int64_t(d);
  }
  return std::nullopt;
}

// "2025-11-30 19:00:00.123456 UTC" (microseconds: the files' clocks are not better than that
// across processes).
std::string formatUtc(int64_t unixNs) {
  const int64_t secs = unixNs >= 0 ? unixNs / 1000000000 : (unixNs - 999999999) / 1000000000;
  const int64_t micros = (unixNs - secs * 1000000000) / 1000;
  const std::time_t t = std::time_t(secs);
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr) return "?";
  char buf[64];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%06lld UTC", static_cast<long long>(micros));
  return buf;
}

// Terminal cells of UTF-8 text (one per character; wide characters are rare in span names).
size_t displayWidth(std::string_view s) {
  return size_t(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

void padTo(std::string& out, size_t width, size_t used) {
  if (used < width) out.append(width - used, ' ');
}

uint64_t durationNs(const TraceSpan& s) {
  return uint64_t(s.endUnixNs) - uint64_t(s.startUnixNs);
}

}  // namespace

std::optional<std::string> normalizeTraceId(std::string_view text) {
  std::string_view id = text;
  if (text.size() == 55 && text[2] == '-' && text[35] == '-' && text[52] == '-') {
    // A traceparent: version, trace id, parent span id, flags (version ff is forbidden).
    if (!isHex(text.substr(0, 2)) || lowerCase(text.substr(0, 2)) == "ff" ||
        !isHex(text.substr(36, 16)) || !isHex(text.substr(53, 2))) {
      return std::nullopt;
    }
    id = text.substr(3, 32);
  }
  if (id.size() != 32 || !isHex(id)) return std::nullopt;
  std::string out = lowerCase(id);
  if (out == std::string(32, '0')) return std::nullopt;
  return out;
}

std::optional<TraceSpan> parseSpanLine(std::string_view line) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<capnp::JsonValue>();
  try {
    capnp::JsonCodec codec;
    codec.decodeRaw(kj::arrayPtr(line.data(), line.size()), root);
  } catch (const kj::Exception&) {
    return std::nullopt;
  } catch (const std::exception&) {
    return std::nullopt;
  }
  const auto v = root.asReader();
  if (!v.isObject()) return std::nullopt;

  TraceSpan s;
  auto traceId = stringMember(v, "trace_id");
  auto spanId = stringMember(v, "span_id");
  auto name = stringMember(v, "name");
  auto start = int64Member(v, "start_unix_ns");
  auto end = int64Member(v, "end_unix_ns");
  if (!traceId || !isId(*traceId, 32) || !spanId || !isId(*spanId, 16) || !name || !start || !end ||
      *end < *start) {
    return std::nullopt;
  }
  s.traceId = std::move(*traceId);
  s.spanId = std::move(*spanId);
  s.name = std::move(*name);
  s.startUnixNs = *start;
  s.endUnixNs = *end;
  capnp::JsonValue::Reader member;
  if (findMember(v, "parent_span_id", member) && !member.isNull()) {
    auto parent = stringMember(v, "parent_span_id");
    if (!parent || (!parent->empty() && !isId(*parent, 16))) return std::nullopt;
    s.parentSpanId = std::move(*parent);
  }
  if (auto kind = stringMember(v, "kind")) s.kind = std::move(*kind);
  if (auto code = stringMember(v, "status_code"); code && !code->empty()) {
    s.statusCode = std::move(*code);
  }
  if (auto message = stringMember(v, "status_message")) s.statusMessage = std::move(*message);
  if (auto pid = int64Member(v, "pid")) s.pid = *pid;
  if (auto process = stringMember(v, "process")) s.process = std::move(*process);
  if (findMember(v, "attributes", member) && member.isObject()) {
    capnp::JsonCodec codec;
    for (auto f : member.getObject()) {
      const auto n = f.getName();
      s.attributes.emplace_back(std::string(n.begin(), n.size()),
                                codec.encodeRaw(f.getValue()).cStr());
    }
  }
  return s;
}

bool loadTrace(const std::string& dir, std::string_view traceId, TraceLoad& out,
               std::string& error) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    error = "cannot read the directory ";
    error += dir;
    error += ": ";
    error += ec.message();
    return false;
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const auto& path = it->path();
    std::error_code typeEc;
    if (path.extension() == ".jsonl" && it->is_regular_file(typeEc)) files.push_back(path);
  }
  if (ec) {
    error = "cannot read the directory ";
    error += dir;
    error += ": ";
    error += ec.message();
    return false;
  }
  std::sort(files.begin(), files.end());
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::string why = path.string();
      why += ": cannot be opened";
      out.unreadable.push_back(std::move(why));
      continue;
    }
    ++out.files;
    size_t malformed = 0;
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto span = parseSpanLine(line);
      if (!span) {
        ++malformed;
      } else if (span->traceId == traceId) {
        out.spans.push_back(std::move(*span));
      }
    }
    if (in.bad()) {
      std::string why = path.string();
      why += ": a read failed";
      out.unreadable.push_back(std::move(why));
    }
    if (malformed > 0) out.malformed.emplace_back(path.string(), malformed);
  }
  return true;
}

TraceTree buildTraceTree(std::string traceId, std::vector<TraceSpan> spans) {
  TraceTree tree;
  tree.traceId = std::move(traceId);
  tree.spans = std::move(spans);
  const auto& all = tree.spans;
  const size_t n = all.size();
  if (n == 0) return tree;

  tree.startUnixNs = all[0].startUnixNs;
  tree.endUnixNs = all[0].endUnixNs;
  std::set<std::pair<std::string, int64_t>> processes;
  std::map<std::string_view, size_t> byId;  // the first span of each id
  for (size_t i = 0; i < n; ++i) {
    tree.startUnixNs = std::min(tree.startUnixNs, all[i].startUnixNs);
    tree.endUnixNs = std::max(tree.endUnixNs, all[i].endUnixNs);
    processes.emplace(all[i].process, all[i].pid);
    byId.emplace(all[i].spanId, i);
  }
  tree.processes = processes.size();

  // parent[i]: the span index of i's parent, or n for a root.
  std::vector<size_t> parent(n, n);
  std::vector<std::vector<size_t>> children(n);
  std::vector<size_t> roots;
  for (size_t i = 0; i < n; ++i) {
    const auto p = all[i].parentSpanId.empty() ? byId.end() : byId.find(all[i].parentSpanId);
    if (p == byId.end() || p->second == i) {
      roots.push_back(i);
    } else {
      parent[i] = p->second;
      children[p->second].push_back(i);
    }
  }
  const auto earlier = [&all](size_t a, size_t b) {
    if (all[a].startUnixNs != all[b].startUnixNs) return all[a].startUnixNs < all[b].startUnixNs;
    if (all[a].endUnixNs != all[b].endUnixNs) return all[a].endUnixNs > all[b].endUnixNs;
    if (all[a].spanId != all[b].spanId) return all[a].spanId < all[b].spanId;
    return a < b;
  };
  for (auto& c : children) std::sort(c.begin(), c.end(), earlier);

  std::vector<bool> inLoop(n, false);
  // Depth first, without recursion (a trace may be deep): each entry is a span and where its
  // row goes in its parent's list of children.
  const auto placeTree = [&](size_t root, bool lastRoot) {
    struct Pending {
      size_t span;
      size_t parentRow;  // SIZE_MAX for the root
      size_t depth;
      bool last;
      std::vector<bool> ancestorsLast;
    };
    std::vector<Pending> stack;
    stack.push_back({root, SIZE_MAX, 0, lastRoot, {}});
    while (!stack.empty()) {
      Pending p = std::move(stack.back());
      stack.pop_back();
      const size_t row = tree.rows.size();
      TraceRow r;
      r.span = p.span;
      r.depth = p.depth;
      r.last = p.last;
      r.ancestorsLast = p.ancestorsLast;
      r.parentMissing = p.depth == 0 && !all[p.span].parentSpanId.empty();
      r.parentInLoop = inLoop[p.span];
      tree.rows.push_back(std::move(r));
      if (p.parentRow == SIZE_MAX) {
        tree.roots.push_back(row);
      } else {
        tree.rows[p.parentRow].children.push_back(row);
      }
      std::vector<bool> below = p.ancestorsLast;
      if (p.depth > 0) below.push_back(p.last);
      const auto& c = children[p.span];
      for (size_t k = c.size(); k-- > 0;) {
        stack.push_back({c[k], row, p.depth + 1, k + 1 == c.size(), below});
      }
    }
  };

  // Spans whose parents form a loop are reachable from no root: the earliest of each such group
  // becomes a root as well.
  std::vector<bool> reachable(n, false);
  const auto reach = [&](size_t from) {
    std::vector<size_t> todo{from};
    while (!todo.empty()) {
      const size_t s = todo.back();
      todo.pop_back();
      reachable[s] = true;
      for (size_t c : children[s]) {
        if (!reachable[c]) todo.push_back(c);
      }
    }
  };
  for (size_t i : roots) reach(i);
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), earlier);
  for (size_t i : order) {
    if (reachable[i]) continue;
    auto& siblings = children[parent[i]];
    siblings.erase(std::remove(siblings.begin(), siblings.end(), i), siblings.end());
    parent[i] = n;
    inLoop[i] = true;
    roots.push_back(i);
    reach(i);
  }
  std::sort(roots.begin(), roots.end(), earlier);
  for (size_t k = 0; k < roots.size(); ++k) placeTree(roots[k], k + 1 == roots.size());
  return tree;
}

std::pair<int, int> barCells(int64_t start, int64_t end, int64_t traceStart, int64_t traceEnd,
                             int width) {
  if (width <= 0) return {0, 0};
  const long double total = static_cast<long double>(traceEnd) - traceStart;
  if (total <= 0) return {0, width};
  const auto cell = [&](int64_t t) {
    return static_cast<long double>(static_cast<long double>(t) - traceStart) / total * width;
  };
  int first = int(std::floor(cell(start)));
  int last = int(std::ceil(cell(end)));
  first = std::clamp(first, 0, width - 1);
  last = std::clamp(last, first + 1, width);
  return {first, last};
}

std::string renderTraceWaterfall(const TraceTree& tree, const TraceRenderOptions& options) {
  std::string out = "trace ";
  out += tree.traceId;
  out += ": ";
  out += std::to_string(tree.spans.size());
  out += tree.spans.size() == 1 ? " span, " : " spans, ";
  out += formatDuration(uint64_t(tree.endUnixNs) - uint64_t(tree.startUnixNs));
  out += ", ";
  out += std::to_string(tree.processes);
  out += tree.processes == 1 ? " process" : " processes";
  if (!tree.spans.empty()) {
    out += ", from ";
    out += formatUtc(tree.startUnixNs);
  }
  out += '\n';

  const char* const tee = options.unicode ? "\u251c\u2500 " : "|- ";
  const char* const corner = options.unicode ? "\u2514\u2500 " : "`- ";
  const char* const pipe = options.unicode ? "\u2502  " : "|  ";
  const char* const filled = options.unicode ? "\u2588" : "#";
  const char* const empty = options.unicode ? "\u00b7" : ".";

  struct Cells {
    std::string name, kind, process, duration;
    size_t nameWidth = 0;
  };
  std::vector<Cells> cells;
  cells.reserve(tree.rows.size());
  size_t nameW = 0, kindW = 0, processW = 0, durationW = 0;
  for (const auto& row : tree.rows) {
    const auto& s = tree.spans[row.span];
    Cells c;
    for (bool last : row.ancestorsLast) c.name += last ? "   " : pipe;
    if (row.depth > 0) c.name += row.last ? corner : tee;
    c.name += s.name;
    c.nameWidth = 3 * row.depth + displayWidth(s.name);
    c.kind = s.kind;
    c.process = s.process;
    c.process += '[';
    c.process += std::to_string(s.pid);
    c.process += ']';
    c.duration = formatDuration(durationNs(s));
    nameW = std::max(nameW, c.nameWidth);
    kindW = std::max(kindW, displayWidth(c.kind));
    processW = std::max(processW, displayWidth(c.process));
    durationW = std::max(durationW, c.duration.size());
    cells.push_back(std::move(c));
  }
  for (size_t i = 0; i < tree.rows.size(); ++i) {
    const auto& row = tree.rows[i];
    const auto& s = tree.spans[row.span];
    const auto& c = cells[i];
    std::string line = c.name;
    padTo(line, nameW + 2, c.nameWidth);
    line += c.kind;
    line.append(kindW + 2 - displayWidth(c.kind), ' ');
    line += c.process;
    line.append(processW + 2 - displayWidth(c.process), ' ');
    line.append(durationW - c.duration.size(), ' ');
    line += c.duration;
    line += "  ";
    const auto [first, last] =
        barCells(s.startUnixNs, s.endUnixNs, tree.startUnixNs, tree.endUnixNs, options.barWidth);
    for (int k = 0; k < options.barWidth; ++k) line += k >= first && k < last ? filled : empty;
    if (s.statusCode != "OK") {
      line += "  ";
      line += s.statusCode;
      if (!s.statusMessage.empty()) {
        line += ": ";
        line += s.statusMessage;
      }
    }
    if (row.parentMissing) {
      line += "  (parent ";
      line += s.parentSpanId;
      line += row.parentInLoop ? " is its own descendant)" : " not recorded)";
    }
    out += line;
    out += '\n';
  }
  return out;
}

std::string renderTraceJson(const TraceTree& tree, bool pretty) {
  JsonWriter w(pretty);
  w.beginObject();
  w.key("trace_id").value(tree.traceId);
  w.key("span_count").value(uint64_t(tree.spans.size()));
  w.key("duration_ns").value(uint64_t(tree.endUnixNs) - uint64_t(tree.startUnixNs));
  w.key("processes").value(uint64_t(tree.processes));
  w.key("spans").beginArray();
  // Depth first without recursion: each entry is a row, or SIZE_MAX to close the object (and
  // its children array) of the row opened before.
  std::vector<size_t> stack;
  for (size_t k = tree.roots.size(); k-- > 0;) stack.push_back(tree.roots[k]);
  while (!stack.empty()) {
    const size_t at = stack.back();
    stack.pop_back();
    if (at == SIZE_MAX) {
      w.endArray().endObject();
      continue;
    }
    const auto& row = tree.rows[at];
    const auto& s = tree.spans[row.span];
    w.beginObject();
    w.key("trace_id").value(s.traceId);
    w.key("span_id").value(s.spanId);
    w.key("parent_span_id").value(s.parentSpanId);
    w.key("name").value(s.name);
    w.key("kind").value(s.kind);
    w.key("start_unix_ns").value(std::to_string(s.startUnixNs));
    w.key("end_unix_ns").value(std::to_string(s.endUnixNs));
    w.key("status_code").value(s.statusCode);
    w.key("status_message").value(s.statusMessage);
    w.key("pid").value(s.pid);
    w.key("process").value(s.process);
    w.key("attributes").beginObject();
    for (const auto& [name, json] : s.attributes) w.key(name).raw(json);
    w.endObject();
    w.key("duration_ns").value(durationNs(s));
    w.key("depth").value(uint64_t(row.depth));
    w.key("parent_missing").value(row.parentMissing);
    w.key("children").beginArray();
    stack.push_back(SIZE_MAX);
    for (size_t k = row.children.size(); k-- > 0;) stack.push_back(row.children[k]);
  }
  w.endArray().endObject();
  return w.str();
}

}  // namespace hms::ffi::cli
