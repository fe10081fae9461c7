#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "audit.hpp"
#include "log.hpp"
#include "os.hpp"
#include "tracing_impl.hpp"

namespace hms::ffi {

namespace {

constexpr char kHex[] = "0123456789abcdef";

template <size_t N>
void appendHex(std::string& out, const std::array<uint8_t, N>& bytes) {
  for (uint8_t b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
}

bool parseHex(std::string_view s, uint8_t* out, size_t n) {
  if (s.size() != n * 2) return false;
  for (size_t i = 0; i < n; ++i) {
    unsigned v = 0;
    for (size_t k = 0; k < 2; ++k) {
      const char h = s[i * 2 + k];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= unsigned(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        v |= unsigned(h - 'a' + 10);
      } else {
        return false;
      }
    }
    out[i] = uint8_t(v);
  }
  return true;
}

template <size_t N>
bool allZero(const std::array<uint8_t, N>& a) {
  for (uint8_t b : a) {
    if (b) return false;
  }
  return true;
}

// The file name's part from the process name: letters, digits, '.', '_' and '-' only.
std::string fileSafe(std::string_view name) {
  std::string out;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    out += ok ? c : '_';
  }
  if (out.empty() || out[0] == '.') out.insert(out.begin(), 'p');
  return out.substr(0, 64);
}

class JsonLinesSink final : public SpanSink {
 public:
  JsonLinesSink(detail::UniqueFd fd, std::string process, std::string path)
      : fd_(std::move(fd)), process_(std::move(process)), path_(std::move(path)) {}

  void record(const Span& span) noexcept override {
    try {
      std::string line = spanJson(span, int(::getpid()), process_);
      line += '\n';
      // One write of the whole line, appended (O_APPEND): lines of several threads do not mix.
      const ssize_t n = ::write(fd_.get(), line.data(), line.size());
      if (n != ssize_t(line.size()) && !warned_.exchange(true)) {
        detail::log().warn("hms-ffi: spans are lost: writing {} failed: {}", path_,
                           n < 0 ? std::strerror(errno) : "short write");
      }
    } catch (const std::exception&) {
    }
  }

 private:
  detail::UniqueFd fd_;
  std::string process_;
  std::string path_;
  std::atomic<bool> warned_{false};
};

}  // namespace

std::string TraceContext::traceparent() const {
  std::string s = "00-";
  appendHex(s, traceId);
  s += '-';
  appendHex(s, spanId);
  s += '-';
  s += kHex[flags >> 4];
  s += kHex[flags & 15];
  return s;
}

Result<TraceContext> TraceContext::parse(std::string_view t) {
  TraceContext tc;
  uint8_t flags = 0;
  if (t.size() != 55 || t.substr(0, 3) != "00-" || t[35] != '-' || t[52] != '-' ||
      !parseHex(t.substr(3, 32), tc.traceId.data(), 16) ||
      !parseHex(t.substr(36, 16), tc.spanId.data(), 8) || !parseHex(t.substr(53, 2), &flags, 1)) {
    std::string m = "traceparent '";
    m += t.substr(0, 80);
    m += "' is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, lower case)";
    return Status(StatusCode::kInvalidArgument, m);
  }
  tc.flags = flags;
  return tc;
}

std::string spanJson(const Span& span, int pid, std::string_view processName) {
  std::string out = "{\"trace_id\":\"";
  appendHex(out, span.context.traceId);
  out += "\",\"span_id\":\"";
  appendHex(out, span.context.spanId);
  out += "\",\"parent_span_id\":\"";
  if (!allZero(span.parentSpanId)) appendHex(out, span.parentSpanId);
  out += "\",\"name\":";
  detail::appendJsonString(out, span.service + "/" + span.method);
  out += ",\"kind\":\"";
  out += span.kind == Span::Kind::kClient ? "client" : "server";
  out += "\",\"start_unix_ns\":\"";
  out += std::to_string(span.startUnixNs);
  out += "\",\"end_unix_ns\":\"";
  out += std::to_string(span.endUnixNs);
  out += "\",\"status_code\":\"";
  out += statusCodeName(span.code);
  out += "\",\"status_message\":";
  detail::appendJsonString(out, span.message);
  out += ",\"pid\":";
  out += std::to_string(pid);
  out += ",\"process\":";
  detail::appendJsonString(out, processName);
  out += ",\"attributes\":{\"rpc.system\":\"hms-ffi\",\"rpc.service\":";
  detail::appendJsonString(out, span.service);
  out += ",\"rpc.method\":";
  detail::appendJsonString(out, span.method);
  out += "}}";
  return out;
}

std::shared_ptr<SpanSink> jsonLinesSpanSink(const std::string& dir,
                                            const std::string& processName) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::string path = dir;
  path += '/';
  path += fileSafe(processName);
  path += '-';
  path += std::to_string(::getpid());
  path += ".jsonl";
  detail::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!fd) {
    detail::log().warn("hms-ffi: no spans are recorded: cannot open {}: {}", path,
                       std::strerror(errno));
    return nullptr;
  }
  return std::make_shared<JsonLinesSink>(std::move(fd), processName, path);
}

namespace detail {

namespace {

thread_local const TraceContext* tCurrent = nullptr;

// Per thread: splitmix64 seeded from the kernel's random bytes.
uint64_t nextRandom() noexcept {
  thread_local uint64_t state = [] {
    uint64_t seed = 0;
    if (::getrandom(&seed, sizeof(seed), 0) != ssize_t(sizeof(seed))) {
      seed = uint64_t(::getpid()) * 0x9e3779b97f4a7c15ull ^ uint64_t(std::time(nullptr));
    }
    return seed;
  }();
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

const TraceContext* currentTrace() noexcept {
  return tCurrent;
}

TraceScope::TraceScope(const std::optional<TraceContext>& t) noexcept
    : previous_(tCurrent), mine_(t) {
  tCurrent = mine_ ? &*mine_ : nullptr;
}

TraceScope::~TraceScope() {
  tCurrent = previous_;
}

std::array<uint8_t, 8> newSpanId() noexcept {
  std::array<uint8_t, 8> id{};
  do {
    const uint64_t r = nextRandom();
    std::memcpy(id.data(), &r, 8);
  } while (allZero(id));  // all zero is "no span" in W3C
  return id;
}

std::array<uint8_t, 16> newTraceId() noexcept {
  std::array<uint8_t, 16> id{};
  do {
    const uint64_t a = nextRandom(), b = nextRandom();
    std::memcpy(id.data(), &a, 8);
    std::memcpy(id.data() + 8, &b, 8);
  } while (allZero(id));
  return id;
}

bool drawSample(double ratio) noexcept {
  if (ratio <= 0) return false;
  if (ratio >= 1) return true;
  return double(nextRandom() >> 11) * 0x1.0p-53 < ratio;
}

int64_t realtimeNs() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace detail
}  // namespace hms::ffi
