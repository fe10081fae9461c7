// hms-ffid's metrics endpoint: the Prometheus text it renders (exact lines, escaping, promtool's
// verdict) and the HTTP it serves on TCP and Unix sockets.
#include "metrics_endpoint.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace hms::ffi::broker {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- Snapshots ----

void add(LatencyHistogram& h, uint64_t ns, uint64_t times) {
  const uint16_t b = LatencyHistogram::bucketOf(ns);
  bool found = false;
  for (auto& [index, n] : h.buckets) {
    if (index == b) {
      n += times;
      found = true;
    }
  }
  if (!found) {
    h.buckets.emplace_back(b, times);
    std::sort(h.buckets.begin(), h.buckets.end());
  }
  h.count += times;
  h.sumNs += ns * times;
  h.maxNs = std::max(h.maxNs, ns);
}

MethodMetrics method(std::string service, std::string name) {
  MethodMetrics m;
  m.service = std::move(service);
  m.method = std::move(name);
  return m;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

bool hasLine(const std::string& text, const std::string& line) {
  for (const auto& l : lines(text)) {
    if (l == line) return true;
  }
  return false;
}

// Lines starting with `prefix`.
std::vector<std::string> linesStarting(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& l : lines(text)) {
    if (l.starts_with(prefix)) out.push_back(l);
  }
  return out;
}

#define EXPECT_LINE(text, line) \
  EXPECT_TRUE(hasLine(text, line)) << "no line\n  " << (line) << "\nin\n" << (text)

// Several services and methods, every kind of code, empty and full histograms, both sides.
MetricsSnapshot realisticSnapshot() {
  MetricsSnapshot s;
  auto a = method("hms.emr.patient", "getPatient");
  a.calls[0] = 1200;
  a.calls[4] = 3;
  a.calls[14] = 1;
  a.inFlight = 2;
  add(a.callDuration, 8'000, 900);
  add(a.callDuration, 40'000, 300);
  add(a.callDuration, 2'000'000'000, 4);
  a.handled[0] = 1200;
  a.handled[5] = 7;
  add(a.handlerDuration, 3'000, 1207);
  s.methods.push_back(a);

  auto b = method("hms.emr.patient", "listVitals");  // callers only, still running
  b.inFlight = 1;
  s.methods.push_back(b);

  auto c = method("hms.finance.ach", "submit");  // every code once, every bucket
  for (size_t i = 0; i < c.calls.size(); ++i) c.calls[i] = i + 1;
  for (uint16_t i = 0; i < LatencyHistogram::kBuckets; ++i)
    c.callDuration.buckets.emplace_back(i, 1);
  c.callDuration.count = LatencyHistogram::kBuckets;
  c.callDuration.sumNs = 123'456'789'012;
  s.methods.push_back(c);

  auto d = method("hms.finance.ach", "status");  // the service side only
  d.handled[0] = 10;
  d.handled[13] = 1;
  add(d.handlerDuration, 500, 11);
  s.methods.push_back(d);

  s.methods.push_back(method("hms.idle", "noop"));  // nothing at all yet

  s.gauges.clients = 4;
  s.gauges.channels = 6;
  s.gauges.services = 3;
  s.gauges.topics = 2;
  s.gauges.subscriptions = 5;
  s.gauges.registryGeneration = 17;
  s.gauges.connectionsTotal = 9;
  s.gauges.reconnectsTotal = 1;
  s.gauges.metricsSlotsRefused = 0;
  s.gauges.startedUnixMs = 1'717'459'200'250;
  s.takenUnixNs = 1'717'459'300'000'000'000;
  return s;
}

// ---- Rendering ----

TEST(RenderPrometheus, CallsTotal_HasOkAndEveryNonZeroCode_ButNoZeroErrorCodes) {
  MetricsSnapshot s;
  auto m = method("svc.a", "get");
  m.calls[0] = 10;
  m.calls[4] = 2;
  m.calls[16] = 1;
  s.methods.push_back(m);
  auto e = method("svc.a", "failing");  // no OK at all: the OK line still shows, at 0
  e.calls[14] = 5;
  s.methods.push_back(e);

  const std::string text = renderPrometheus(s);
  EXPECT_LINE(text, "# TYPE hms_ffi_calls_total counter");
  EXPECT_LINE(text, "hms_ffi_calls_total{service=\"svc.a\",method=\"get\",code=\"OK\"} 10");
  EXPECT_LINE(text,
              "hms_ffi_calls_total{service=\"svc.a\",method=\"get\",code=\"DEADLINE_EXCEEDED\"} 2");
  EXPECT_LINE(text,
              "hms_ffi_calls_total{service=\"svc.a\",method=\"get\",code=\"UNAUTHENTICATED\"} 1");
  EXPECT_LINE(text, "hms_ffi_calls_total{service=\"svc.a\",method=\"failing\",code=\"OK\"} 0");
  EXPECT_LINE(text,
              "hms_ffi_calls_total{service=\"svc.a\",method=\"failing\",code=\"UNAVAILABLE\"} 5");
  EXPECT_EQ(linesStarting(text, "hms_ffi_calls_total{").size(), 5u) << text;
  // Nothing on the service side: no handled series.
  EXPECT_TRUE(linesStarting(text, "hms_ffi_handled_total").empty()) << text;
}

TEST(RenderPrometheus, InFlight_IsAGaugePerMethod) {
  MetricsSnapshot s;
  auto m = method("svc.a", "get");
  m.inFlight = 3;
  s.methods.push_back(m);
  const std::string text = renderPrometheus(s);
  EXPECT_LINE(text, "# TYPE hms_ffi_calls_in_flight gauge");
  EXPECT_LINE(text, "hms_ffi_calls_in_flight{service=\"svc.a\",method=\"get\"} 3");
  EXPECT_LINE(text, "hms_ffi_calls_total{service=\"svc.a\",method=\"get\",code=\"OK\"} 0");
}

TEST(RenderPrometheus, Histogram_IsCumulativeAtPowerOfTwoEdges_WithInfEqualToCount) {
  MetricsSnapshot s;
  auto m = method("svc.a", "get");
  m.calls[0] = 17;
  add(m.callDuration, 100, 3);                 // below 128 ns
  add(m.callDuration, 1'000, 5);               // below 1024 ns
  add(m.callDuration, 1'000'000, 7);           // below 2^20 ns
  add(m.callDuration, 100'000'000'000ull, 2);  // 100 s: beyond the last edge (2^36 ns)
  s.methods.push_back(m);
  const std::string text = renderPrometheus(s);

  const std::string b = "hms_ffi_call_duration_seconds_bucket{service=\"svc.a\",method=\"get\",le=";
  EXPECT_LINE(text, "# TYPE hms_ffi_call_duration_seconds histogram");
  EXPECT_LINE(text, b + "\"1.28e-07\"} 3");
  EXPECT_LINE(text, b + "\"2.56e-07\"} 3");
  EXPECT_LINE(text, b + "\"5.12e-07\"} 3");
  EXPECT_LINE(text, b + "\"1.024e-06\"} 8");
  EXPECT_LINE(text, b + "\"0.000524288\"} 8");
  EXPECT_LINE(text, b + "\"0.001048576\"} 15");
  EXPECT_LINE(text, b + "\"68.719476736\"} 15");
  EXPECT_LINE(text, b + "\"+Inf\"} 17");
  EXPECT_LINE(text, "hms_ffi_call_duration_seconds_count{service=\"svc.a\",method=\"get\"} 17");
  EXPECT_LINE(text,
              "hms_ffi_call_duration_seconds_sum{service=\"svc.a\",method=\"get\"} 200.0070053");

  // 30 edges (2^7 .. 2^36 ns) and +Inf, in increasing le, counts never decreasing.
  const auto bucketLines = linesStarting(text, b);
  ASSERT_EQ(bucketLines.size(), 31u) << text;
  double lastLe = 0;
  uint64_t lastCount = 0;
  for (size_t i = 0; i < bucketLines.size(); ++i) {
    const std::string& l = bucketLines[i];
    const size_t q1 = b.size() + 1, q2 = l.find('"', q1);
    const std::string le = l.substr(q1, q2 - q1);
    const uint64_t count = std::stoull(l.substr(l.rfind(' ') + 1));
    if (i + 1 < bucketLines.size()) {
      const double v = std::stod(le);
      EXPECT_DOUBLE_EQ(v, double(uint64_t(1) << (7 + i)) / 1e9) << l;
      EXPECT_GT(v, lastLe) << l;
      lastLe = v;
    } else {
      EXPECT_EQ(le, "+Inf");
    }
    EXPECT_GE(count, lastCount) << l;
    lastCount = count;
  }
}

TEST(RenderPrometheus, EmptyHistogram_OfAMethodWithCallsInFlight_IsAllZero) {
  MetricsSnapshot s;
  auto m = method("svc.a", "slow");
  m.inFlight = 1;
  s.methods.push_back(m);
  const std::string text = renderPrometheus(s);
  const std::string b =
      "hms_ffi_call_duration_seconds_bucket{service=\"svc.a\",method=\"slow\",le=";
  const auto bucketLines = linesStarting(text, b);
  ASSERT_EQ(bucketLines.size(), 31u) << text;
  for (const auto& l : bucketLines) EXPECT_TRUE(l.ends_with("} 0")) << l;
  EXPECT_LINE(text, "hms_ffi_call_duration_seconds_sum{service=\"svc.a\",method=\"slow\"} 0");
  EXPECT_LINE(text, "hms_ffi_call_duration_seconds_count{service=\"svc.a\",method=\"slow\"} 0");
}

TEST(RenderPrometheus, ServiceSide_HasHandledAndHandlerDuration) {
  MetricsSnapshot s;
  auto m = method("svc.a", "get");
  m.handled[0] = 4;
  m.handled[3] = 1;
  add(m.handlerDuration, 2'000, 5);  // 2 us: below 2^11 ns
  s.methods.push_back(m);
  const std::string text = renderPrometheus(s);
  EXPECT_LINE(text, "# TYPE hms_ffi_handled_total counter");
  EXPECT_LINE(text, "hms_ffi_handled_total{service=\"svc.a\",method=\"get\",code=\"OK\"} 4");
  EXPECT_LINE(
      text, "hms_ffi_handled_total{service=\"svc.a\",method=\"get\",code=\"INVALID_ARGUMENT\"} 1");
  EXPECT_LINE(text, "# TYPE hms_ffi_handler_duration_seconds histogram");
  const std::string b =
      "hms_ffi_handler_duration_seconds_bucket{service=\"svc.a\",method=\"get\",le=";
  EXPECT_LINE(text, b + "\"1.024e-06\"} 0");
  EXPECT_LINE(text, b + "\"2.048e-06\"} 5");
  EXPECT_LINE(text, b + "\"+Inf\"} 5");
  EXPECT_LINE(text, "hms_ffi_handler_duration_seconds_sum{service=\"svc.a\",method=\"get\"} 1e-05");
  // The caller side saw nothing: no caller series for this method.
  EXPECT_TRUE(linesStarting(text, "hms_ffi_calls_total").empty()) << text;
}

TEST(RenderPrometheus, BrokerGauges_AlwaysAppear) {
  MetricsSnapshot s;
  s.gauges.clients = 3;
  s.gauges.channels = 4;
  s.gauges.services = 2;
  s.gauges.topics = 1;
  s.gauges.subscriptions = 6;
  s.gauges.registryGeneration = 42;
  s.gauges.connectionsTotal = 11;
  s.gauges.reconnectsTotal = 2;
  s.gauges.metricsSlotsRefused = 7;
  s.gauges.startedUnixMs = 1'717'459'200'500;
  const std::string text = renderPrometheus(s);
  EXPECT_LINE(text, "# TYPE hms_ffi_clients gauge");
  EXPECT_LINE(text, "hms_ffi_clients 3");
  EXPECT_LINE(text, "hms_ffi_channels 4");
  EXPECT_LINE(text, "hms_ffi_services 2");
  EXPECT_LINE(text, "hms_ffi_topics 1");
  EXPECT_LINE(text, "hms_ffi_subscriptions 6");
  EXPECT_LINE(text, "hms_ffi_registry_generation 42");
  EXPECT_LINE(text, "# TYPE hms_ffi_connections_total counter");
  EXPECT_LINE(text, "hms_ffi_connections_total 11");
  EXPECT_LINE(text, "hms_ffi_reconnects_total 2");
  EXPECT_LINE(text, "# TYPE hms_ffi_metrics_series_refused_total counter");
  EXPECT_LINE(text, "hms_ffi_metrics_series_refused_total 7");
  EXPECT_LINE(text, "# TYPE hms_ffi_broker_start_time_seconds gauge");
  EXPECT_LINE(text, "hms_ffi_broker_start_time_seconds 1717459200.5");

  const std::string empty = renderPrometheus(MetricsSnapshot{});
  EXPECT_LINE(empty, "hms_ffi_clients 0");
  EXPECT_LINE(empty, "hms_ffi_broker_start_time_seconds 0");
  EXPECT_TRUE(linesStarting(empty, "hms_ffi_call").empty()) << empty;
}

TEST(RenderPrometheus, LabelValues_AreEscaped_AndInvalidUtf8Replaced) {
  MetricsSnapshot s;
  // A quote, a backslash, a newline; then a stray byte, an overlong pair, a truncated
  // sequence, an encoded surrogate, a valid two-byte and a valid four-byte character.
  auto m = method("a\"b\\c\nd", std::string("m\xff"
                                            "x\xc0\xaf"
                                            "y\xe2\x82"
                                            "z\xed\xa0\x80"
                                            "\xc3\xa9\xf0\x9f\x98\x80"));
  m.calls[0] = 1;
  s.methods.push_back(m);
  const std::string text = renderPrometheus(s);
  const std::string r = "\xef\xbf\xbd";  // U+FFFD
  EXPECT_LINE(text, "hms_ffi_calls_total{service=\"a\\\"b\\\\c\\nd\",method=\"m" + r + "x" + r + r +
                        "y" + r + "z" + r + r + r + "\xc3\xa9\xf0\x9f\x98\x80\",code=\"OK\"} 1");
}

// ---- promtool ----

struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "hms-ffi-metrics-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
      return;
    }
    path = tmpl;
  }
  ~TempDir() {
    if (path.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

constexpr const char* kPromtool = "/usr/bin/promtool";

// promtool's output (stdout and stderr) and exit status for `text` on its stdin.
std::pair<std::string, int> promtoolCheck(const std::string& text) {
  TempDir dir;
  const std::string file = dir.path + "/metrics.txt";
  std::ofstream(file, std::ios::binary) << text;
  std::string cmd = kPromtool;
  cmd += " check metrics < '";
  cmd += file;
  cmd += "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {"popen failed", -1};
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

void expectPromtoolAccepts(const std::string& text) {
  ASSERT_EQ(::access(kPromtool, X_OK), 0)
      << kPromtool << " is missing: install the Debian package `prometheus` "
      << "(apt-get install prometheus), which CI installs, to check the exposition format";
  const auto [out, status] = promtoolCheck(text);
  // promtool prints one line per lint problem or parse error; any output is a failure.
  EXPECT_EQ(status, 0) << out << "\n---- checked text ----\n" << text;
  EXPECT_EQ(out, "") << "---- checked text ----\n" << text;
}

TEST(RenderPrometheus, RealisticSnapshot_PassesPromtool) {
  expectPromtoolAccepts(renderPrometheus(realisticSnapshot()));
}

TEST(RenderPrometheus, EmptySnapshot_PassesPromtool) {
  expectPromtoolAccepts(renderPrometheus(MetricsSnapshot{}));
}

TEST(RenderPrometheus, HostileLabels_PassPromtool) {
  MetricsSnapshot s;
  auto m = method("a\"b\\c\nd\xff", "m\xc0\xaf\xe2\x82");
  m.calls[2] = 1;
  add(m.callDuration, 5, 1);
  s.methods.push_back(m);
  expectPromtoolAccepts(renderPrometheus(s));
}

TEST(RenderPrometheus, Promtool_RejectsABadCounterName) {
  // The check itself can fail: promtool must complain about a counter without _total.
  ASSERT_EQ(::access(kPromtool, X_OK), 0)
      << kPromtool << " is missing: install the Debian package `prometheus`";
  const auto [out, status] =
      promtoolCheck("# HELP bad_counter A counter.\n# TYPE bad_counter counter\nbad_counter 1\n");
  EXPECT_NE(out, "");
}

// ---- HTTP ----

struct HttpReply {
  int status = 0;
  std::string head;  // status line and headers
  std::string body;
};

int connectTo(const std::string& address) {
  if (address.starts_with("unix:")) {
    const std::string path = address.substr(5);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, path.data(), path.size());
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&un), sizeof un) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }
  const size_t colon = address.rfind(':');
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(uint16_t(std::stoi(address.substr(colon + 1))));
  if (inet_pton(AF_INET, address.substr(0, colon).c_str(), &in.sin_addr) != 1) return -1;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads until the peer closes or `deadline`; nullopt on timeout.
std::optional<std::string> readAll(int fd, Clock::time_point deadline) {
  std::string out;
  char buf[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, int(left.count())) <= 0) continue;
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r == 0) return out;
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) return out;
      return std::nullopt;
    }
    out.append(buf, size_t(r));
  }
}

// One request on a new connection; nullopt when it could not connect or got no full answer by
// `timeout`.
std::optional<HttpReply> request(const std::string& address, const std::string& raw,
                                 std::chrono::milliseconds timeout = 20s) {
  const auto deadline = Clock::now() + timeout;
  const int fd = connectTo(address);
  if (fd < 0) return std::nullopt;
  if (::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL) != ssize_t(raw.size())) {
    ::close(fd);
    return std::nullopt;
  }
  auto all = readAll(fd, deadline);
  ::close(fd);
  if (!all) return std::nullopt;
  HttpReply reply;
  const size_t end = all->find("\r\n\r\n");
  if (end == std::string::npos) return std::nullopt;
  reply.head = all->substr(0, end + 2);
  reply.body = all->substr(end + 4);
  if (!reply.head.starts_with("HTTP/1.1 ")) return std::nullopt;
  reply.status = std::stoi(reply.head.substr(9, 3));
  return reply;
}

std::optional<HttpReply> get(const std::string& address, const std::string& path,
                             std::chrono::milliseconds timeout = 20s) {
  std::string raw = "GET ";
  raw += path;
  raw += " HTTP/1.1\r\nHost: test\r\nUser-Agent: metrics-endpoint-test\r\n\r\n";
  return request(address, raw, timeout);
}

bool hasHeader(const HttpReply& r, const std::string& header) {
  return r.head.find("\r\n" + header + "\r\n") != std::string::npos;
}

// A snapshot function that counts its calls into the gauges: each scrape sees a new snapshot.
struct CountingSource {
  std::atomic<uint32_t> calls{0};
  std::function<MetricsSnapshot()> fn() {
    return [this] {
      MetricsSnapshot s = realisticSnapshot();
      s.gauges.clients = ++calls;
      return s;
    };
  }
};

std::string expectedBody(uint32_t clients) {
  MetricsSnapshot s = realisticSnapshot();
  s.gauges.clients = clients;
  return renderPrometheus(s);
}

TEST(MetricsEndpoint, Tcp_GetMetrics_ServesTheSnapshot_FreshPerScrape) {
  CountingSource src;
  auto ep = MetricsEndpoint::start("127.0.0.1:0", src.fn());
  ASSERT_TRUE(ep.ok()) << ep.status().toString();
  const std::string address = (*ep)->address();
  ASSERT_TRUE(address.starts_with("127.0.0.1:")) << address;
  EXPECT_NE(address, "127.0.0.1:0");

  auto first = get(address, "/metrics");
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->status, 200) << first->head;
  EXPECT_TRUE(hasHeader(*first, "Content-Type: text/plain; version=0.0.4; charset=utf-8"))
      << first->head;
  EXPECT_TRUE(hasHeader(*first, "Connection: close")) << first->head;
  EXPECT_TRUE(hasHeader(*first, "Content-Length: " + std::to_string(first->body.size())))
      << first->head;
  EXPECT_EQ(first->body, expectedBody(1));

  auto second = get(address, "/metrics?name[]=hms_ffi_clients");
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->status, 200) << second->head;
  EXPECT_EQ(second->body, expectedBody(2));
  EXPECT_LINE(second->body, "hms_ffi_clients 2");
  EXPECT_EQ(src.calls.load(), 2u);
}

TEST(MetricsEndpoint, Localhost_ListensOnLoopback) {
  CountingSource src;
  auto ep = MetricsEndpoint::start("localhost:0", src.fn());
  ASSERT_TRUE(ep.ok()) << ep.status().toString();
  ASSERT_TRUE((*ep)->address().starts_with("127.0.0.1:")) << (*ep)->address();
  auto r = get((*ep)->address(), "/metrics");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
}

TEST(MetricsEndpoint, Root_PointsToMetrics_OtherPathsAre404_OtherMethods405) {
  CountingSource src;
  auto ep = MetricsEndpoint::start("127.0.0.1:0", src.fn());
  ASSERT_TRUE(ep.ok()) << ep.status().toString();
  const std::string address = (*ep)->address();

  auto root = get(address, "/");
  ASSERT_TRUE(root.has_value());
  EXPECT_EQ(root->status, 200);
  EXPECT_NE(root->body.find("/metrics"), std::string::npos) << root->body;

  auto missing = get(address, "/metricsx");
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 404) << missing->head;

  auto post = request(address, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
  ASSERT_TRUE(post.has_value());
  EXPECT_EQ(post->status, 405) << post->head;
  EXPECT_NE(post->head.find("\r\nAllow: GET"), std::string::npos) << post->head;

  auto head = request(address, "HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->status, 200) << head->head;
  EXPECT_EQ(head->body, "");

  auto garbage = request(address, "hello\r\n\r\n");
  ASSERT_TRUE(garbage.has_value());
  EXPECT_EQ(garbage->status, 400) << garbage->head;

  // Only the HEAD of /metrics took a snapshot.
  EXPECT_EQ(src.calls.load(), 1u);
}

TEST(MetricsEndpoint, OversizedRequest_IsRefused) {
  CountingSource src;
  auto ep = MetricsEndpoint::start("127.0.0.1:0", src.fn());
  ASSERT_TRUE(ep.ok()) << ep.status().toString();
  std::string raw = "GET /metrics HTTP/1.1\r\nX-Padding: ";
  raw.append(16 * 1024, 'a');
  raw += "\r\n\r\n";
  auto r = request((*ep)->address(), raw);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 431) << r->head;
  EXPECT_EQ(src.calls.load(), 0u);
}

TEST(MetricsEndpoint, SilentClients_DoNotHoldUpAScrape) {
  CountingSource src;
  auto ep = MetricsEndpoint::start("127.0.0.1:0", src.fn());
  ASSERT_TRUE(ep.ok()) << ep.status().toString();
  const std::string address = (*ep)->address();

  // Eight clients that connect and say nothing: served one after another with a 5 s limit each,
  // they would hold the scrape up for 40 s, twice its deadline.
  std::vector<int> silent;
  for (int i = 0; i < 8; ++i) {
    const int fd = connectTo(address);
    ASSERT_GE(fd, 0);
    silent.push_back(fd);
  }
  auto r = get(address, "/metrics", 20s);
  ASSERT_TRUE(r.has_value()) << "the scrape did not complete within 20 s";
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, expectedBody(1));

  // The silent clients are dropped after the request deadline (5 s), not kept forever.
  for (int fd : silent) {
    auto rest = readAll(fd, Clock::now() + 60s);
    EXPECT_TRUE(rest.has_value()) << "a silent client was not disconnected within 60 s";
    ::close(fd);
  }
}

TEST(MetricsEndpoint, UnixSocket_ServesMetrics_AndIsRemovedAtTheEnd) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string path = dir.path + "/metrics.sock";
  CountingSource src;
  {
    auto ep = MetricsEndpoint::start("unix:" + path, src.fn());
    ASSERT_TRUE(ep.ok()) << ep.status().toString();
    EXPECT_EQ((*ep)->address(), "unix:" + path);
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));

    auto r = get((*ep)->address(), "/metrics");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 200) << r->head;
    EXPECT_EQ(r->body, expectedBody(1));

    // A second endpoint on a socket something accepts on is refused, and leaves it alone.
    auto other = MetricsEndpoint::start("unix:" + path, src.fn());
    ASSERT_FALSE(other.ok());
    EXPECT_EQ(other.status().code(), StatusCode::kAlreadyExists) << other.status().toString();
    EXPECT_NE(other.status().message().find(path), std::string::npos) << other.status().message();
    auto again = get((*ep)->address(), "/metrics");
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->status, 200);
  }
  struct stat st {};
  EXPECT_NE(::lstat(path.c_str(), &st), 0) << path << " is still there";
}

TEST(MetricsEndpoint, UnixSocket_ReplacesAStaleSocketFile_ButNotOtherFiles) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const std::string path = dir.path + "/metrics.sock";
  {
    // What a process that died leaves: a socket file nothing accepts on.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, path.data(), path.size());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&un), sizeof un), 0);
    ::close(fd);
  }
  CountingSource src;
  {
    auto ep = MetricsEndpoint::start("unix:" + path, src.fn());
    ASSERT_TRUE(ep.ok()) << ep.status().toString();
    auto r = get((*ep)->address(), "/metrics");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 200);
  }
  const std::string file = dir.path + "/regular";
  std::ofstream(file) << "keep me";
  auto ep = MetricsEndpoint::start("unix:" + file, src.fn());
  ASSERT_FALSE(ep.ok());
  EXPECT_EQ(ep.status().code(), StatusCode::kAlreadyExists) << ep.status().toString();
  struct stat st {};
  ASSERT_EQ(::lstat(file.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST(MetricsEndpoint, MalformedAddress_IsInvalidArgument_SayingWhatIsExpected) {
  CountingSource src;
  for (const std::string bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000",
                                "127.0.0.1:-1", ":9464", "example.com:9464", "::1:9464",
                                "[::1]9464", "[::1:9464", "[nope]:9464", "unix:", "999.1.1.1:80"}) {
    auto ep = MetricsEndpoint::start(bad, src.fn());
    ASSERT_FALSE(ep.ok()) << "\"" << bad << "\" was accepted";
    EXPECT_EQ(ep.status().code(), StatusCode::kInvalidArgument)
        << bad << ": " << ep.status().toString();
    EXPECT_NE(ep.status().message().find("expected HOST:PORT"), std::string::npos)
        << ep.status().message();
  }
  std::string longPath = "unix:/tmp/";
  longPath.append(200, 'x');
  auto ep = MetricsEndpoint::start(longPath, src.fn());
  ASSERT_FALSE(ep.ok());
  EXPECT_EQ(ep.status().code(), StatusCode::kInvalidArgument) << ep.status().toString();
}

TEST(MetricsEndpoint, PortInUse_IsAnErrorNamingTheAddress) {
  CountingSource src;
  auto first = MetricsEndpoint::start("127.0.0.1:0", src.fn());
  ASSERT_TRUE(first.ok()) << first.status().toString();
  const std::string address = (*first)->address();
  auto second = MetricsEndpoint::start(address, src.fn());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists) << second.status().toString();
  EXPECT_NE(second.status().message().find(address), std::string::npos)
      << second.status().message();
  EXPECT_NE(second.status().message().find(std::strerror(EADDRINUSE)), std::string::npos)
      << second.status().message();
}

TEST(MetricsEndpoint, Ipv6Loopback_ServesMetrics_WhenTheHostHasIpv6) {
  CountingSource src;
  auto ep = MetricsEndpoint::start("[::1]:0", src.fn());
  if (!ep.ok() && ep.status().code() == StatusCode::kUnavailable) {
    GTEST_SKIP() << "no IPv6 loopback here: " << ep.status().toString();
  }
  ASSERT_TRUE(ep.ok()) << ep.status().toString();
  EXPECT_TRUE((*ep)->address().starts_with("[::1]:")) << (*ep)->address();
}

TEST(MetricsEndpoint, ThrowingSnapshot_Answers500_AndKeepsServing) {
  std::atomic<int> calls{0};
  auto ep = MetricsEndpoint::start("127.0.0.1:0", [&calls]() -> MetricsSnapshot {
    if (++calls == 1) throw std::runtime_error("broker is shutting down");
    return MetricsSnapshot{};
  });
  ASSERT_TRUE(ep.ok()) << ep.status().toString();
  auto bad = get((*ep)->address(), "/metrics");
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->status, 500);
  auto good = get((*ep)->address(), "/metrics");
  ASSERT_TRUE(good.has_value());
  EXPECT_EQ(good->status, 200);
}

}  // namespace
}  // namespace hms::ffi::broker
