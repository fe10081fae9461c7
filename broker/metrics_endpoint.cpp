#include "metrics_endpoint.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <exception>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace hms::ffi::broker {
namespace {

// ---- Rendering ----

constexpr uint32_t kCodes = 17;

// Histogram edges: the bucket upper bounds that are powers of two, 2^7 ns .. 2^36 ns. Bucket
// 4k + 3 ends (exclusively) at 2^(k + 2) ns (metrics_layout.hpp); bucket 143 takes the rest.
constexpr uint32_t kFirstEdgeBucket = 23;  // ends at 2^7 ns
constexpr uint32_t kLastEdgeBucket = 139;  // ends at 2^36 ns
static_assert(kFirstEdgeBucket % 4 == 3 && kLastEdgeBucket % 4 == 3);
static_assert(LatencyHistogram::kBuckets == 144);

void appendUnsigned(std::string& out, uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void appendSigned(std::string& out, int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// The shortest text that reads back as the same double ("1.28e-07", "68.719476736").
void appendDouble(std::string& out, double v) {
  char buf[40];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// Appends `v` as UTF-8 with every ill-formed subsequence replaced by U+FFFD (one per maximal
// subpart, as Unicode recommends), escaped for a label value: \\, \" and \n.
void appendLabelValue(std::string& out, std::string_view v) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  const size_t n = v.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '"') {
        out += "\\\"";
      } else if (c == '\n') {
        out += "\\n";
      } else {
        out += char(c);
      }
      ++i;
      continue;
    }
    // The sequence length and the range of the second byte that keeps it well-formed (no
    // overlongs, no surrogates, nothing above U+10FFFF).
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    size_t j = 1;
    for (; j < len && i + j < n; ++j) {
      const unsigned char b = p[i + j];
      if (j == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
    }
    if (j == len) {
      out.append(v.data() + i, len);
    } else {
      out += kReplacement;  // the lead byte and the continuation bytes that fit it
    }
    i += j;
  }
}

void appendHeader(std::string& out, std::string_view name, std::string_view type,
                  std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// `name{service="...",method="..."` without the closing brace, so callers can add labels.
void appendSeriesStart(std::string& out, std::string_view name, const MethodMetrics& m) {
  out += name;
  out += "{service=\"";
  appendLabelValue(out, m.service);
  out += "\",method=\"";
  appendLabelValue(out, m.method);
  out += '"';
}

bool callerSideSeen(const MethodMetrics& m) {
  return m.callsTotal() != 0 || m.inFlight != 0 || m.callDuration.count != 0 ||
         !m.callDuration.buckets.empty();
}

bool serviceSideSeen(const MethodMetrics& m) {
  for (auto c : m.handled) {
    if (c) return true;
  }
  return m.handlerDuration.count != 0 || !m.handlerDuration.buckets.empty();
}

// A method with no numbers on either side still gets its caller-side series, so that every
// method in the snapshot shows up.
bool showCallerSide(const MethodMetrics& m) {
  return callerSideSeen(m) || !serviceSideSeen(m);
}

void appendCodes(std::string& out, std::string_view name, const MethodMetrics& m,
                 const std::array<uint64_t, kCodes>& byCode) {
  for (uint32_t code = 0; code < kCodes; ++code) {
    if (code != 0 && byCode[code] == 0) continue;  // OK always, other codes once they happen
    appendSeriesStart(out, name, m);
    out += ",code=\"";
    out += statusCodeName(StatusCode(code));
    out += "\"} ";
    appendUnsigned(out, byCode[code]);
    out += '\n';
  }
}

void appendHistogram(std::string& out, std::string_view name, const MethodMetrics& m,
                     const LatencyHistogram& h) {
  // The buckets come from client-written memory: an index out of range counts in the last
  // bucket, and the total is never less than what the buckets hold, so that the series stays a
  // valid histogram (monotone, +Inf == _count).
  std::array<uint64_t, LatencyHistogram::kBuckets> dense{};
  uint64_t inBuckets = 0;
  for (const auto& [index, n] : h.buckets) {
    dense[std::min<size_t>(index, dense.size() - 1)] += n;
    inBuckets += n;
  }
  const uint64_t total = std::max(h.count, inBuckets);

  const std::string bucketName = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  uint32_t next = 0;
  for (uint32_t edge = kFirstEdgeBucket; edge <= kLastEdgeBucket; edge += 4) {
    for (; next <= edge; ++next) cumulative += dense[next];
    appendSeriesStart(out, bucketName, m);
    out += ",le=\"";
    appendDouble(out, double(LatencyHistogram::bucketUpperNs(uint16_t(edge))) / 1e9);
    out += "\"} ";
    appendUnsigned(out, cumulative);
    out += '\n';
  }
  appendSeriesStart(out, bucketName, m);
  out += ",le=\"+Inf\"} ";
  appendUnsigned(out, total);
  out += '\n';

  appendSeriesStart(out, std::string(name) + "_sum", m);
  out += "} ";
  appendDouble(out, double(h.sumNs) / 1e9);
  out += '\n';
  appendSeriesStart(out, std::string(name) + "_count", m);
  out += "} ";
  appendUnsigned(out, total);
  out += '\n';
}

void appendGauge(std::string& out, std::string_view name, std::string_view type,
                 std::string_view help, uint64_t value) {
  appendHeader(out, name, type, help);
  out += name;
  out += ' ';
  appendUnsigned(out, value);
  out += '\n';
}

// ---- Serving ----

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxRequestBytes = 8 * 1024;
constexpr size_t kMaxConnections = 32;  // beyond, new connections wait in the listen backlog
constexpr auto kRequestTimeout = std::chrono::seconds(5);    // accept to end of request headers
constexpr auto kResponseTimeout = std::chrono::seconds(10);  // for the client to take the answer

struct Connection {
  int fd = -1;
  Clock::time_point deadline;
  std::string in;
  std::string out;  // the whole response once the request is read
  size_t sent = 0;
  bool responding = false;
};

std::string errnoText(int err) {
  return std::system_category().message(err);
}

Status listenError(const std::string& listen, const char* what, int err) {
  StatusCode code = StatusCode::kUnavailable;
  if (err == EADDRINUSE) code = StatusCode::kAlreadyExists;
  if (err == EACCES || err == EPERM) code = StatusCode::kPermissionDenied;
  std::string msg = "metrics endpoint: cannot listen on ";
  msg += listen;
  msg += ": ";
  msg += what;
  msg += ": ";
  msg += errnoText(err);
  if (err == EADDRINUSE) msg += "; choose another address or stop what listens there";
  return Status(code, std::move(msg));
}

Status malformed(const std::string& listen, std::string_view why) {
  std::string msg = "metrics endpoint address \"";
  msg += listen;
  msg += "\": ";
  msg += why;
  msg +=
      "; expected HOST:PORT (HOST an IPv4 address or localhost, e.g. 127.0.0.1:9464), "
      "[IPv6]:PORT (e.g. [::1]:9464) or unix:PATH";
  return Status(StatusCode::kInvalidArgument, std::move(msg));
}

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

std::string reasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    default:
      return "Internal Server Error";
  }
}

std::string response(int status, std::string_view contentType, const std::string& body,
                     bool withBody, std::string_view extraHeaders = {}) {
  std::string out = "HTTP/1.1 ";
  appendUnsigned(out, uint64_t(status));
  out += ' ';
  out += reasonPhrase(status);
  out += "\r\nContent-Type: ";
  out += contentType;
  out += "\r\nContent-Length: ";
  appendUnsigned(out, body.size());
  out += "\r\nConnection: close\r\n";
  out += extraHeaders;
  out += "\r\n";
  if (withBody) out += body;
  return out;
}

constexpr std::string_view kPlain = "text/plain; charset=utf-8";
constexpr std::string_view kExposition = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

std::string renderPrometheus(const MetricsSnapshot& s) {
  std::string out;
  out.reserve(1024 + s.methods.size() * 6 * 1024);

  bool any = false;
  for (const auto& m : s.methods) any = any || showCallerSide(m);
  if (any) {
    appendHeader(out, "hms_ffi_calls_total", "counter",
                 "Calls ended, as their callers saw them, by status code.");
    for (const auto& m : s.methods) {
      if (showCallerSide(m)) appendCodes(out, "hms_ffi_calls_total", m, m.calls);
    }
    appendHeader(out, "hms_ffi_calls_in_flight", "gauge",
                 "Calls begun by live callers and not ended yet.");
    for (const auto& m : s.methods) {
      if (!showCallerSide(m)) continue;
      appendSeriesStart(out, "hms_ffi_calls_in_flight", m);
      out += "} ";
      appendUnsigned(out, m.inFlight);
      out += '\n';
    }
    appendHeader(out, "hms_ffi_call_duration_seconds", "histogram",
                 "Call latency as callers saw it, from call to answer.");
    for (const auto& m : s.methods) {
      if (showCallerSide(m)) {
        appendHistogram(out, "hms_ffi_call_duration_seconds", m, m.callDuration);
      }
    }
  }

  any = false;
  for (const auto& m : s.methods) any = any || serviceSideSeen(m);
  if (any) {
    appendHeader(out, "hms_ffi_handled_total", "counter",
                 "Calls the service ran, by the status code it answered.");
    for (const auto& m : s.methods) {
      if (serviceSideSeen(m)) appendCodes(out, "hms_ffi_handled_total", m, m.handled);
    }
    appendHeader(out, "hms_ffi_handler_duration_seconds", "histogram",
                 "Handler time, from handler start to answer.");
    for (const auto& m : s.methods) {
      if (serviceSideSeen(m)) {
        appendHistogram(out, "hms_ffi_handler_duration_seconds", m, m.handlerDuration);
      }
    }
  }

  if (!s.topics.empty()) {
    struct Family {
      const char* name;
      const char* help;
      uint64_t TopicMetrics::*field;
    };
    static constexpr Family kTopicFamilies[] = {
        {"hms_ffi_topic_messages_total", "Messages published to the topic.",
         &TopicMetrics::published},
        {"hms_ffi_topic_bytes_total", "Payload bytes published to the topic.",
         &TopicMetrics::publishedBytes},
        {"hms_ffi_topic_delivered_total",
         "Messages delivered to the topic's subscribers (one per subscriber).",
         &TopicMetrics::delivered},
        {"hms_ffi_topic_dropped_total",
         "Messages the topic's subscribers missed (they fell behind a drop_oldest log).",
         &TopicMetrics::dropped},
    };
    for (const auto& f : kTopicFamilies) {
      appendHeader(out, f.name, "counter", f.help);
      for (const auto& t : s.topics) {
        out += f.name;
        out += "{topic=\"";
        appendLabelValue(out, t.topic);
        out += "\"} ";
        appendUnsigned(out, t.*(f.field));
        out += '\n';
      }
    }
    appendHeader(out, "hms_ffi_topic_lag_high_water_ratio", "gauge",
                 "The furthest a subscriber fell behind the topic's publisher, as a fraction of "
                 "the log (1: the log was full of messages it had not read).");
    for (const auto& t : s.topics) {
      out += "hms_ffi_topic_lag_high_water_ratio{topic=\"";
      appendLabelValue(out, t.topic);
      out += "\"} ";
      appendDouble(out, t.lagHighWater);
      out += '\n';
    }
  }

  if (!s.rings.empty()) {
    struct RingFamily {
      const char* name;
      const char* type;
      const char* help;
      double RingMetrics::*ratio;
      uint64_t RingMetrics::*count;
    };
    static constexpr RingFamily kRingFamilies[] = {
        {"hms_ffi_request_ring_high_water_ratio", "gauge",
         "The fullest a caller's request ring to the service was, 0 to 1.",
         &RingMetrics::requestHighWater, nullptr},
        {"hms_ffi_request_ring_full_total", "counter",
         "Times a caller found its request ring to the service full (and waited or gave up).",
         nullptr, &RingMetrics::requestFull},
        {"hms_ffi_response_ring_high_water_ratio", "gauge",
         "The fullest one of the service's response rings was, 0 to 1.",
         &RingMetrics::responseHighWater, nullptr},
        {"hms_ffi_response_ring_full_total", "counter",
         "Times the service found a response ring full (its caller was not reading).", nullptr,
         &RingMetrics::responseFull},
    };
    for (const auto& f : kRingFamilies) {
      appendHeader(out, f.name, f.type, f.help);
      for (const auto& r : s.rings) {
        out += f.name;
        out += "{service=\"";
        appendLabelValue(out, r.service);
        out += "\"} ";
        if (f.ratio) {
          appendDouble(out, r.*(f.ratio));
        } else {
          appendUnsigned(out, r.*(f.count));
        }
        out += '\n';
      }
    }
  }

  const BrokerGauges& g = s.gauges;
  appendGauge(out, "hms_ffi_clients", "gauge", "Clients connected to the broker.", g.clients);
  appendGauge(out, "hms_ffi_channels", "gauge", "Channels the broker has set up between clients.",
              g.channels);
  appendGauge(out, "hms_ffi_services", "gauge", "Services registered.", g.services);
  appendGauge(out, "hms_ffi_topics", "gauge", "Topics registered.", g.topics);
  appendGauge(out, "hms_ffi_subscriptions", "gauge", "Topic subscriptions.", g.subscriptions);
  appendGauge(out, "hms_ffi_registry_generation", "gauge",
              "Generation of the service registry; changes whenever the registry does.",
              g.registryGeneration);
  appendGauge(out, "hms_ffi_connections_total", "counter",
              "Client connections accepted since the broker started.", g.connectionsTotal);
  appendGauge(out, "hms_ffi_reconnects_total", "counter",
              "Client reconnections since the broker started.", g.reconnectsTotal);
  appendGauge(out, "hms_ffi_metrics_series_refused_total", "counter",
              "Metrics series clients could not record because their metrics segment was full.",
              g.metricsSlotsRefused);
  appendHeader(out, "hms_ffi_broker_start_time_seconds", "gauge",
               "When the broker started, in seconds since the Unix epoch.");
  out += "hms_ffi_broker_start_time_seconds ";
  if (g.startedUnixMs % 1000 == 0) {
    appendSigned(out, g.startedUnixMs / 1000);
  } else {
    appendDouble(out, double(g.startedUnixMs) / 1e3);
  }
  out += '\n';
  return out;
}

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::start(
    const std::string& listen, std::function<MetricsSnapshot()> snapshot) {
  if (!snapshot) {
    return Status(StatusCode::kInvalidArgument, "metrics endpoint: no snapshot function given");
  }

  sockaddr_storage addr{};
  socklen_t addrLen = 0;
  int family = AF_UNSPEC;
  std::string unixPath;
  if (listen.starts_with("unix:")) {
    unixPath = listen.substr(5);
    auto* un = reinterpret_cast<sockaddr_un*>(&addr);
    if (unixPath.empty()) return malformed(listen, "the socket path is empty");
    if (unixPath.size() >= sizeof(un->sun_path)) {
      std::string why = "the socket path is longer than ";
      appendUnsigned(why, sizeof(un->sun_path) - 1);
      why += " bytes";
      return malformed(listen, why);
    }
    if (unixPath.find('\0') != std::string::npos) {
      return malformed(listen, "the socket path holds a NUL byte");
    }
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, unixPath.data(), unixPath.size());
    addrLen = socklen_t(offsetof(sockaddr_un, sun_path) + unixPath.size() + 1);
    family = AF_UNIX;
  } else {
    std::string host, port;
    if (listen.starts_with("[")) {
      const size_t close = listen.find("]:");
      if (close == std::string::npos) return malformed(listen, "no \"]:PORT\" after the IPv6 host");
      host = listen.substr(1, close - 1);
      port = listen.substr(close + 2);
    } else {
      const size_t colon = listen.rfind(':');
      if (colon == std::string::npos) return malformed(listen, "no port");
      host = listen.substr(0, colon);
      port = listen.substr(colon + 1);
      if (host.empty()) return malformed(listen, "no host (0.0.0.0 listens on every interface)");
      if (host == "localhost") host = "127.0.0.1";
    }
    unsigned portNumber = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), portNumber);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() ||
        portNumber > 65535) {
      return malformed(listen, "the port is not a number from 0 to 65535");
    }
    if (listen.starts_with("[")) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
      if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) != 1) {
        return malformed(listen, "the host is not an IPv6 address");
      }
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(uint16_t(portNumber));
      addrLen = sizeof(sockaddr_in6);
      family = AF_INET6;
    } else {
      auto* in4 = reinterpret_cast<sockaddr_in*>(&addr);
      if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) != 1) {
        return malformed(listen, "the host is not an IPv4 address or localhost");
      }
      in4->sin_family = AF_INET;
      in4->sin_port = htons(uint16_t(portNumber));
      addrLen = sizeof(sockaddr_in);
      family = AF_INET;
    }
  }

  Fd sock(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (sock.fd < 0) return listenError(listen, "socket", errno);
  if (family == AF_UNIX) {
    // A socket file nothing accepts on is what a broker that died leaves behind: replace it.
    // Anything else at the path stays.
    struct stat st {};
    if (::lstat(unixPath.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        std::string msg = "metrics endpoint: cannot listen on ";
        msg += listen;
        msg += ": the path exists and is not a socket; remove it or choose another path";
        return Status(StatusCode::kAlreadyExists, std::move(msg));
      }
      Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (probe.fd < 0) return listenError(listen, "socket", errno);
      if (::connect(probe.fd, reinterpret_cast<const sockaddr*>(&addr), addrLen) == 0) {
        std::string msg = "metrics endpoint: cannot listen on ";
        msg += listen;
        msg += ": something already accepts connections on it; stop it or choose another path";
        return Status(StatusCode::kAlreadyExists, std::move(msg));
      }
      const int err = errno;
      if (err != ECONNREFUSED) return listenError(listen, "probing the existing socket", err);
      if (::unlink(unixPath.c_str()) != 0 && errno != ENOENT) {
        return listenError(listen, "removing the stale socket", errno);
      }
    }
  } else {
    const int one = 1;
    (void)::setsockopt(sock.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
      (void)::setsockopt(sock.fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (::bind(sock.fd, reinterpret_cast<const sockaddr*>(&addr), addrLen) != 0) {
    return listenError(listen, "bind", errno);
  }
  struct stat bound {};
  if (family == AF_UNIX && ::lstat(unixPath.c_str(), &bound) != 0) {
    const int err = errno;
    ::unlink(unixPath.c_str());
    return listenError(listen, "stat of the new socket", err);
  }
  if (::listen(sock.fd, 64) != 0) {
    const int err = errno;
    if (family == AF_UNIX) ::unlink(unixPath.c_str());
    return listenError(listen, "listen", err);
  }

  std::string address;
  if (family == AF_UNIX) {
    address = listen;
  } else {
    sockaddr_storage got{};
    socklen_t gotLen = sizeof got;
    if (::getsockname(sock.fd, reinterpret_cast<sockaddr*>(&got), &gotLen) != 0) {
      return listenError(listen, "getsockname", errno);
    }
    char text[INET6_ADDRSTRLEN] = {};
    uint16_t port = 0;
    if (family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&got);
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
      port = ntohs(in6->sin6_port);
      address = "[";
      address += text;
      address += "]:";
    } else {
      const auto* in4 = reinterpret_cast<const sockaddr_in*>(&got);
      inet_ntop(AF_INET, &in4->sin_addr, text, sizeof text);
      port = ntohs(in4->sin_port);
      address = text;
      address += ':';
    }
    appendUnsigned(address, port);
  }

  Fd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (stop.fd < 0) {
    const int err = errno;
    if (family == AF_UNIX) ::unlink(unixPath.c_str());
    return listenError(listen, "eventfd", err);
  }

  std::unique_ptr<MetricsEndpoint> ep(
      new MetricsEndpoint(sock.release(), stop.release(), std::move(address), std::move(snapshot)));
  if (family == AF_UNIX) {
    ep->unixPath_ = unixPath;
    ep->unixDev_ = bound.st_dev;
    ep->unixIno_ = bound.st_ino;
  }
  try {
    ep->thread_ = std::thread([e = ep.get()] { e->run(); });
  } catch (const std::system_error& e) {
    std::string msg = "metrics endpoint on ";
    msg += listen;
    msg += ": cannot start its thread: ";
    msg += e.what();
    return Status(StatusCode::kResourceExhausted, std::move(msg));  // ~MetricsEndpoint cleans up
  }
  return ep;
}

MetricsEndpoint::MetricsEndpoint(int listenFd, int stopFd, std::string address,
                                 std::function<MetricsSnapshot()> snapshot)
    : listenFd_(listenFd),
      stopFd_(stopFd),
      address_(std::move(address)),
      snapshot_(std::move(snapshot)) {}

MetricsEndpoint::~MetricsEndpoint() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    // An eventfd write of 1 fails only when the counter would overflow: it is then readable.
    (void)::write(stopFd_, &one, sizeof one);
    thread_.join();
  }
  ::close(listenFd_);
  ::close(stopFd_);
  if (!unixPath_.empty()) {
    // Only our own socket file: another broker may have replaced it since (a stale-looking one).
    struct stat st {};
    if (::lstat(unixPath_.c_str(), &st) == 0 && st.st_dev == unixDev_ && st.st_ino == unixIno_) {
      ::unlink(unixPath_.c_str());
    }
  }
}

void MetricsEndpoint::run() noexcept {
  std::vector<Connection> conns;
  std::vector<pollfd> fds;
  Clock::time_point acceptPausedUntil{};

  // Builds the answer to a complete request head.
  const auto answer = [this](std::string_view head) -> std::string {
    const size_t lineEnd = head.find_first_of("\r\n");
    const std::string_view line = head.substr(0, lineEnd);
    const size_t sp1 = line.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || !line.substr(sp2 + 1).starts_with("HTTP/")) {
      return response(400, kPlain, "Bad request: expected \"GET /metrics HTTP/1.1\".\n", true);
    }
    const std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    target = target.substr(0, target.find_first_of("?#"));
    const bool isHead = method == "HEAD";
    if (method != "GET" && !isHead) {
      return response(405, kPlain, "Method not allowed: use GET.\n", true, "Allow: GET, HEAD\r\n");
    }
    if (target == "/metrics") {
      std::string body;
      try {
        body = renderPrometheus(snapshot_());
      } catch (const std::exception& e) {
        spdlog::warn("metrics endpoint {}: taking a metrics snapshot failed: {}", address_,
                     e.what());
        return response(500, kPlain, "Taking a metrics snapshot failed; see the broker's log.\n",
                        !isHead);
      }
      return response(200, kExposition, body, !isHead);
    }
    if (target == "/") {
      return response(200, kPlain, "hms-ffid: metrics are at /metrics\n", !isHead);
    }
    return response(404, kPlain, "Not found: metrics are at /metrics\n", !isHead);
  };

  for (;;) {
    const Clock::time_point now = Clock::now();
    // Connections past their deadline are dropped: a client that says nothing, or that does not
    // read its answer, gives up its slot.
    std::erase_if(conns, [&](Connection& c) {
      if (now < c.deadline) return false;
      ::close(c.fd);
      return true;
    });

    fds.clear();
    fds.push_back({stopFd_, POLLIN, 0});
    const bool accepting = conns.size() < kMaxConnections && now >= acceptPausedUntil;
    fds.push_back({accepting ? listenFd_ : -1, POLLIN, 0});
    Clock::time_point wake = Clock::time_point::max();
    if (!accepting && conns.size() < kMaxConnections) wake = acceptPausedUntil;
    for (const auto& c : conns) {
      fds.push_back({c.fd, short(c.responding ? POLLOUT : POLLIN), 0});
      wake = std::min(wake, c.deadline);
    }
    int timeoutMs = -1;
    if (wake != Clock::time_point::max()) {
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(wake - now).count();
      timeoutMs = int(std::clamp<int64_t>(ms, 0, 60'000));
    }
    if (::poll(fds.data(), fds.size(), timeoutMs) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("metrics endpoint {}: poll failed: {}; it stops serving", address_,
                    errnoText(errno));
      break;
    }
    if (fds[0].revents) break;  // the destructor asks us to stop

    // Serve the connections already open before taking new ones (fds[i + 2] is conns[i]).
    for (size_t i = 0; i < conns.size(); ++i) {
      Connection& c = conns[i];
      const short rev = fds[i + 2].revents;
      if (!rev) continue;
      bool done = false;
      if (!c.responding) {
        char buf[2048];
        const ssize_t r = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          done = true;  // gone before asking anything
        } else if (r > 0) {
          c.in.append(buf, size_t(r));
          size_t headEnd = c.in.find("\r\n\r\n");
          if (headEnd == std::string::npos) headEnd = c.in.find("\n\n");
          if (headEnd != std::string::npos && headEnd <= kMaxRequestBytes) {
            c.out = answer(std::string_view(c.in).substr(0, headEnd));
            c.responding = true;
          } else if (c.in.size() > kMaxRequestBytes) {
            c.out = response(431, kPlain, "Request too large: at most 8 KiB of headers.\n", true);
            c.responding = true;
          }
          if (c.responding) {
            c.in.clear();
            c.in.shrink_to_fit();
            c.deadline = Clock::now() + kResponseTimeout;
          }
        }
      } else if (rev & (POLLERR | POLLHUP | POLLNVAL)) {
        done = true;
      }
      if (c.responding && !done) {
        while (c.sent < c.out.size()) {
          const ssize_t w = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent,
                                   MSG_NOSIGNAL | MSG_DONTWAIT);
          if (w > 0) {
            c.sent += size_t(w);
          } else if (w < 0 && errno == EINTR) {
            continue;
          } else {
            if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) done = true;
            break;
          }
        }
        if (c.sent == c.out.size()) {
          ::shutdown(c.fd, SHUT_WR);
          done = true;
        }
      }
      if (done) {
        ::close(c.fd);
        c.fd = -1;
      }
    }
    std::erase_if(conns, [](const Connection& c) { return c.fd < 0; });

    if (fds[1].revents) {
      while (conns.size() < kMaxConnections) {
        const int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
          Connection c;
          c.fd = fd;
          c.deadline = Clock::now() + kRequestTimeout;
          conns.push_back(std::move(c));
          continue;
        }
        const int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK) break;
        if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
        // Out of descriptors or memory: the backlog keeps the clients; try again shortly rather
        // than spin on a listening socket that stays readable.
        spdlog::warn("metrics endpoint {}: accept failed: {}; retrying in a second", address_,
                     errnoText(err));
        acceptPausedUntil = Clock::now() + std::chrono::seconds(1);
        break;
      }
    }
  }
  for (const auto& c : conns) ::close(c.fd);
}

}  // namespace hms::ffi::broker
