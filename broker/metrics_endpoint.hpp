// hms-ffid's metrics endpoint (docs/observability.md): a MetricsSnapshot served over HTTP in the
// Prometheus text exposition format 0.0.4, for Prometheus, the OpenTelemetry collector's
// prometheus receiver or curl.
//
// One background thread serves every connection (poll() over the listening socket, a stop
// eventfd and the open connections), so a client that connects and says nothing holds one
// connection slot until its request deadline, never the next scrape. Each scrape calls the
// snapshot function once, on that thread.
//
// What it answers: GET (or HEAD) /metrics[?...] -> 200 with the metrics; GET / -> 200 with a
// pointer to /metrics; other paths -> 404; other methods -> 405. One request per connection
// (Connection: close).
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "hms/ffi/metrics.hpp"
#include "hms/ffi/status.hpp"

namespace hms::ffi::broker {

// The snapshot in the Prometheus text exposition format 0.0.4: hms_ffi_calls_total,
// hms_ffi_calls_in_flight, hms_ffi_call_duration_seconds, hms_ffi_handled_total,
// hms_ffi_handler_duration_seconds per service and method, and the broker's gauges (always
// present). Label values are escaped and bytes that are not UTF-8 become U+FFFD: names come from
// memory clients write.
std::string renderPrometheus(const MetricsSnapshot& s);

class MetricsEndpoint {
 public:
  // Listens on `listen` and serves what `snapshot` returns; `snapshot` is called on the endpoint's
  // thread, once per scrape, and must be safe to call from there.
  //
  // `listen` is "HOST:PORT" (HOST an IPv4 literal or "localhost"), "[IPv6]:PORT" or "unix:PATH";
  // port 0 picks a free port (see address()). A Unix socket file left at PATH by a process that
  // is gone is replaced; one something still accepts on is not (ALREADY_EXISTS).
  // INVALID_ARGUMENT for an address in none of these forms; ALREADY_EXISTS (address in use),
  // PERMISSION_DENIED or UNAVAILABLE when it cannot listen, naming the address and the reason.
  static Result<std::unique_ptr<MetricsEndpoint>> start(const std::string& listen,
                                                        std::function<MetricsSnapshot()> snapshot);

  // Stops the thread (a scrape in progress is cut off), closes every socket and removes the Unix
  // socket file this endpoint made, if it is still there.
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // What it listens on, with the port it got: "127.0.0.1:45678", "[::1]:9464", "unix:/run/x.sock".
  const std::string& address() const { return address_; }

 private:
  MetricsEndpoint(int listenFd, int stopFd, std::string address,
                  std::function<MetricsSnapshot()> snapshot);
  void run() noexcept;

  const int listenFd_;  // owned, non-blocking
  const int stopFd_;    // owned eventfd; written once by the destructor
  const std::string address_;
  std::function<MetricsSnapshot()> snapshot_;  // called only on thread_
  // The socket file this endpoint bound (empty for TCP), and its identity: the destructor
  // removes it only if it is still that file.
  std::string unixPath_;
  dev_t unixDev_ = 0;
  ino_t unixIno_ = 0;
  std::thread thread_;  // started last by start(), joined by the destructor
};

}  // namespace hms::ffi::broker
