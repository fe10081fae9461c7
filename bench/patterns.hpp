// The patterns of hms-ffi-bench, one source file each: what each measures and the rows it hands
// to the runner and table printer (hms_ffi_bench.cpp).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bench_common.hpp"

namespace hms::ffi::bench_tool {

// ---- rtt.cpp: 64-byte round trips, HMS-FFI calls beside the raw baselines -----------------------

Stats rawSpin(const Options& o, const char* name);
Stats rawFutex(const Options& o);
Stats rawUds(const Options& o);

#ifdef HMS_FFI_HAVE_ZMQ
// ZeroMQ's ipc:// transport with a PAIR socket on each side, blocking send/recv of 64 bytes: the
// peer our users most often move from. Each process makes its own context after the fork (a
// context does not survive one).
Stats rawZmq(const Options& o, const std::string& dir);
#endif

struct FfiResult {
  Stats stats;          // all samples of the mode
  Stats floor;          // the baseline samples taken between its slices (raw spin, or raw UDS
                        // for socket modes)
  double ratioP50 = 0;  // median over slices of (mode p50 / adjacent baseline p50)
  double ratioP99 = 0;
};

std::optional<FfiResult> ffiCall(const Options& o, const std::string& self,
                                 const std::string& socket, const std::string& mode);

// ---- sizes.cpp: requests of N bytes built in place ----------------------------------------------

struct SizedResult {
  Stats raw, ffi;       // all samples of each
  double ratioP50 = 0;  // median over slices of (hms-ffi p50 / adjacent raw in-place p50)
};

// HMS-FFI calls whose request carries `bytes` built in place, read whole by the service, with a
// small reply; `mode` as given. Measured in kSlices slices, each after a raw in-place slice of
// the same size, so that each ratio compares figures from the same vCPU placement.
std::optional<SizedResult> ffiSink(const Options& o, const std::string& self,
                                   const std::string& socket, const std::string& mode,
                                   size_t bytes);

// ---- throughput.cpp: async calls and streams beside the raw SPSC ring ---------------------------

// The raw SPSC ring baseline: one process writes `count` records of `bytes` into fixed slots of
// a shared-memory ring of `ringBytes` and publishes each with a release store of its head; the
// other reads every byte of each in place and gives its slot back with its tail. Both spin. The
// consumer's clock runs from "go" to the last record, as a stream's caller does.
Rate rawRing(const Options& o, size_t bytes, uint64_t count, size_t ringBytes);

// Asynchronous 64-byte echo calls kept `inFlight` deep on one Stub: each reply is read (its last
// byte checked) as the oldest Future completes, and a new call goes out in its place.
std::optional<Rate> ffiAsync(const std::string& socket, const std::string& mode, unsigned inFlight,
                             uint64_t calls, int64_t durationNs);

// Synchronous 64-byte echo calls back to back on one Stub (calls/s): what P10 compares the
// asynchronous rate with.
std::optional<Rate> ffiSyncRate(const std::string& socket, const std::string& mode, uint64_t calls,
                                int64_t durationNs);

// An asynchronous rate and the synchronous one measured just before it, in the same mode, beside
// the same raw ring (P10).
struct AsyncVsSync {
  std::string mode;
  unsigned inFlight = 0;
  Rate raw, sync, async;
};

// ---- callers.cpp: N caller processes to one service (P16) ---------------------------------------

struct CallersResult {
  std::string mode;
  unsigned callers = 0;
  double callsPerSec = 0;   // all the callers together
  double minPerCaller = 0;  // the slowest caller's rate
  double p50 = 0;           // the median of the callers' p50s, us
  double p99 = 0;           // the worst of the callers' p99s, us
  // N > 1: the mean rate of the one-caller runs just before and after it (0 if none), what it is
  // judged against: the machine's speed drifts 10-40% within minutes, more than P16's margin.
  double baseline = 0;
};

// The child (this binary with --call-load MODE --go-file F): warms up, says "ready", calls from
// when F appears until the time F holds, then prints "done <calls> <ns> <p50> <p99> <failed>".
int callLoad(const std::string& socket, const std::string& mode, const std::string& goFile,
             const Options& o);
// `callers` such children calling the echo service of `mode` (already serving) at once for
// `durationNs`.
std::optional<CallersResult> ffiCallers(const Options& o, const std::string& self,
                                        const std::string& socket, const std::string& dir,
                                        const std::string& mode, unsigned callers,
                                        int64_t durationNs);

// One server stream of `items` items of `bytes` each, built in place by the service and read
// whole, in place, by the caller (sequence numbers checked).
std::optional<Rate> ffiStream(const std::string& socket, const std::string& mode, size_t bytes,
                              uint64_t items);

// ---- setup_idle.cpp: channel open, discovery and idle CPU ---------------------------------------

// Opening a channel (Client::bind: a broker round trip, the segment mapped, the ring attached,
// closed again when the Stub goes) and discovering a service from the registry (Client::discover:
// read from the mapped registry segment on shared memory, a broker round trip on sockets). The
// echo service of `mode` must be up.
std::pair<Stats, Stats> ffiSetup(const Options& o, const std::string& socket,
                                 const std::string& mode);

struct IdleCpu {
  std::string mode;
  double service = 0, caller = 0, broker = 0;  // % of one core
};

// P8: a service and a caller that has called it (synchronously and asynchronously, so that every
// client thread exists) sit idle; once the spin budget is long spent, the CPU each process uses
// over `seconds` of wall time.
std::optional<IdleCpu> ffiIdle(const std::string& socket, const std::string& mode, pid_t service,
                               pid_t broker, double seconds);

// ---- pubsub.cpp: publish/subscribe, one subscriber and fan-out ----------------------------------

// A subscriber process (this binary with --subscribe): subscribes to `topic`, prints "ready",
// reads every byte of each message until the topic ends, checking the sequence, and prints
// "done LAST_NS GOT MISSED BAD" (LAST_NS: CLOCK_MONOTONIC when it saw the end, which the publisher
// signals right after its last message; no clock is read per message).
int subscribeSamples(const std::string& socket, const std::string& mode, const std::string& topic,
                     const std::string& policy, const Options& o);

struct PubSubResult {
  Rate rate;             // messages per second each subscriber received
  double pubCpuNs = 0;   // publisher thread CPU per message
  double pubWallNs = 0;  // publisher wall time per message
  unsigned subscribers = 0;
  std::string mode;
  unsigned batch = 1;  // messages per publishBatch (1: publish())
};

// One publisher (this process) and `subscribers` subscriber processes, block_publisher: `count`
// messages of 64 B built in place (in publishBatch()es of `batch` when above 1), each read whole
// by every subscriber. The rate runs from the
// first publish to the last subscriber's last message.
std::optional<PubSubResult> ffiPubSub(const Options& o, const std::string& self,
                                      const std::string& socket, const std::string& mode,
                                      unsigned subscribers, uint64_t count, unsigned batch = 1);

// ---- json.cpp: the JSON-level call (P12) --------------------------------------------------------

struct JsonResult {
  Stats typed, json;    // all samples of each
  double ratioP50 = 0;  // median over slices of (JSON call p50 / adjacent typed call p50)
  // The C ABI (hms_ffi.h) from C++: its JSON call (P12) and its raw call, each in slices beside
  // the typed call.
  std::optional<Stats> cJson, cRaw;
  double cJsonRatioP50 = 0, cRawRatioP50 = 0;
};

// P12: a JSON-level echo of 64 bytes (JsonStub: the request built from JSON in the ring, the
// reply written out as JSON) in slices, each after a slice of the typed call of the same mode.
std::optional<JsonResult> ffiJson(const Options& o, const std::string& self,
                                  const std::string& socket, const std::string& mode);

// ---- bindings.cpp: each binding's own bench program (P13) ---------------------------------------

// P13: each binding's own bench program (bindings/go/cmd/hms-ffi-bench-go,
// bindings/rust/examples/bench.rs) calls this run's echo service, in slices beside that language's
// own blocking Unix-socket ping-pong with a peer on the service's CPU, and prints one JSON object
// per row. Its raw-level rows are compared with the typed C++ call measured here just before.
struct BindingRow {
  std::string name;
  double p50 = 0, p90 = 0, p99 = 0;
  double ratioToBaseline = 0;  // 0: the row is a baseline
  double callsPerSec = 0;      // a throughput row (an async batch) instead of latencies
  int samples = 0;
};

struct BindingResult {
  std::string mode;
  Stats typed;  // the C++ typed call in the same run
  std::vector<BindingRow> rows;
};

// Each --binding-programs program (by default this build's and tree's) in blocking and adaptive
// mode, beside the C++ typed call.
std::vector<BindingResult> measureBindings(const Options& o, const std::string& self,
                                           const std::string& socket);

// ---- policy.cpp: the typed call under an access policy (P15) ------------------------------------

// P15: the typed call with no policy and under one (best p50 of alternating rounds each).
struct PolicyResult {
  std::string mode;
  Stats open, policy;
};

// P15: the same typed call through a second broker under an access policy (every method of the
// echo service granted to this uid's role, so each call pays the service's grant check), in
// alternating rounds with the first broker's, best p50 of each side.
std::vector<PolicyResult> measurePolicy(const Options& o, const std::string& self,
                                        const std::string& socket, const std::string& dir);

// ---- metrics.cpp: the call metrics off and on (P14) ---------------------------------------------

// P14 for P5: one subscriber's rate, metrics off and on (both processes), best of two rounds.
struct PubSubPair {
  std::string mode;
  double off = 0, on = 0;        // messages per second, best round of each
  double cpuOff = 0, cpuOn = 0;  // the publisher's CPU ns per message, least of each
  int rounds = 0;
};

// P14: the same typed call with the call metrics on (the default) and off, both sides (the
// service inherits $HMS_FFI_METRICS), in alternating rounds, best p50 of each.
struct MetricsResult {
  std::vector<PolicyResult> calls;  // open: metrics off, policy: metrics on
  std::vector<PubSubPair> pubsub;
};

MetricsResult measureMetrics(const Options& o, const std::string& self, const std::string& socket);

// ---- gateway.cpp: a call between hosts through two hms-ffi-gateway processes (issue 22) ---------

struct GatewayResult {
  Stats grpc, gateway;                // all samples of each
  Stats exporterOnly;                 // the same gRPC client straight to gateway B
  double ratioP50 = 0, ratioP99 = 0;  // medians over slices of gateway / raw gRPC
};

// A 64-byte echo through host A's proxy, gateway A, gRPC over loopback mutual TLS, gateway B and
// the blocking echo service on the run's broker (host B), in slices beside a raw gRPC unary
// ping-pong over the same TLS. Needs openssl to make the certificates.
std::optional<GatewayResult> measureGateway(const Options& o, const std::string& self,
                                            const std::string& socket, const std::string& dir);
// The ping-pong's server (this binary with --grpc-ping DIR): prints "port N", serves until SIGTERM.
int serveGrpcPing(const std::string& dir, const Options& o);

}  // namespace hms::ffi::bench_tool
