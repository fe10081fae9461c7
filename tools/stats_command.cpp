// hms-ffi stats: the calls of every service method and the messages of every topic as the
// broker counts them, rated over an interval, once or top-like (--watch). The numbers come from
// stats.cpp; this file takes the snapshots, paces them and prints.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>

#include "command.hpp"
#include "interrupts.hpp"
#include "stats.hpp"

namespace hms::ffi::cli {

namespace {

using Clock = std::chrono::steady_clock;

// How often a wait looks at Ctrl-C: short enough to feel immediate.
constexpr std::chrono::milliseconds kInterruptPoll{100};

// Sleeps until `deadline`; false when Ctrl-C came first.
bool sleepUntil(Clock::time_point deadline) {
  for (;;) {
    if (Interrupts::received() != 0) return false;
    const auto now = Clock::now();
    if (now >= deadline) return true;
    std::this_thread::sleep_for(std::min<Clock::duration>(deadline - now, kInterruptPoll));
  }
}

// The broker's metrics now, or nothing after printing why not.
std::optional<MetricsSnapshot> takeSnapshot(const Command& cmd, const Client& client) {
  auto metrics = client.metrics();
  if (!metrics.ok()) {
    printError(metrics.status());
    if (metrics.status().code() == StatusCode::kUnimplemented) {
      printFailure(cmd, "this hms-ffid serves no metrics: it is older than this tool");
    }
    return std::nullopt;
  }
  return std::move(*metrics);
}

int runStats(const Command& cmd, Invocation& inv) {
  ParsedArgs args;
  if (auto rc = parseCommandLine(cmd, inv,
                                 {{"--interval", true},
                                  {"--watch", false},
                                  {"--count", true},
                                  {"--prefix", true},
                                  {"--json", false},
                                  {"--pretty", false},
                                  {"--compact", false}},
                                 args)) {
    return *rc;
  }
  if (!args.positional.empty()) {
    return usageError(cmd, "takes no arguments (--prefix PREFIX picks services and topics)");
  }
  std::chrono::nanoseconds interval = std::chrono::seconds(1);
  if (const std::string* v = args.value("--interval")) {
    auto d = parseDuration(*v);
    if (!d) return usageError(cmd, "--interval takes a duration above 0 such as 1, 0.5 or 250ms");
    interval = *d;
  }
  uint64_t count = 0;  // 0: until Ctrl-C
  if (const std::string* v = args.value("--count")) {
    auto n = parseCount(*v);
    if (!n || *n == 0) return usageError(cmd, "--count takes a count of at least 1");
    count = *n;
  }
  const bool watch = args.has("--watch") || count != 0;
  const bool json = args.has("--json");
  // Watching, each sample is one line of JSON unless --pretty asks otherwise.
  const bool pretty = watch ? args.has("--pretty") : prettyOutput(args);
  const bool clearScreen = watch && !json && ::isatty(STDOUT_FILENO) == 1;
  const std::string prefix = args.value("--prefix") ? *args.value("--prefix") : "";

  Client* client = inv.client();
  if (client == nullptr) return kExitFailure;
  Interrupts::Scope stopOnInterrupt([] {});  // the waits below poll Interrupts::received()

  auto before = takeSnapshot(cmd, *client);
  if (!before) return kExitFailure;
  auto beforeAt = Clock::now();
  for (uint64_t shown = 0;; ++shown) {
    if (!sleepUntil(beforeAt + interval)) return kExitSignalBase + Interrupts::received();
    auto after = takeSnapshot(cmd, *client);
    if (!after) return kExitFailure;
    const auto afterAt = Clock::now();
    if (const int sig = Interrupts::received(); sig != 0) return kExitSignalBase + sig;

    const double measured = std::chrono::duration<double>(afterAt - beforeAt).count();
    const StatsSample sample =
        statsSample(*before, *after, sampleSeconds(*before, *after, measured), prefix);
    if (json) {
      std::printf("%s\n", renderStatsJson(sample, pretty).c_str());
    } else {
      if (clearScreen) {
        std::fputs("\x1b[H\x1b[2J", stdout);
      } else if (shown > 0) {
        std::fputc('\n', stdout);
      }
      std::fputs(renderStatsTable(sample, prefix).c_str(), stdout);
    }
    if (!flushOutput()) return kExitFailure;
    if (!watch || (count != 0 && shown + 1 == count)) return kExitOk;
    before = std::move(after);
    beforeAt = afterAt;
  }
}

}  // namespace

const Command kStatsCommand{
    "stats", "stats [--interval SECONDS] [--watch] [--count N] [--prefix PREFIX] [--json]",
    "Calls per method and messages per topic as the broker counts them: rates, errors, drops.",
    "Takes the broker's metrics, waits --interval, takes them again and prints a row per\n"
    "service method, busiest first, then a row per topic, busiest first. Rates and latency\n"
    "quantiles cover that interval only; totals are since hms-ffid started (calls and messages\n"
    "of every client, live or gone). A broker restart between the two samples counts from zero\n"
    "again: rates are never negative.\n"
    "\n"
    "The first line has the broker's gauges: connected clients, open channels, live services,\n"
    "topics and subscriptions. Then the methods table, when a method has been called:\n"
    "  SERVICE, METHOD   the method's service id and name\n"
    "  CALLS/S           calls that ended in the interval, per second (any status)\n"
    "  ERRORS/S          of those, the ones that ended other than OK, per second\n"
    "  CALLS, ERRORS     the same since the broker started\n"
    "  P50, P99          the callers' view of the calls that ended in the interval: from\n"
    "                    sending the request to having the reply (queueing and the transport\n"
    "                    included); '-' when no call ended in it\n"
    "  MAX               the longest call since the broker started\n"
    "  IN FLIGHT         calls begun by live callers and not ended yet\n"
    "  HANDLER P50, P99  the service's view: from its handler starting to its answer, over the\n"
    "                    interval; P99 much above HANDLER P99 points at queueing, not the work\n"
    "Then the topics table, when a topic has been used (summed over its publishers and\n"
    "subscribers, live and gone):\n"
    "  TOPIC             the topic id\n"
    "  MSGS/S            messages published in the interval, per second\n"
    "  DELIVERED/S       messages delivered, summed over the subscribers, per second\n"
    "  DROPPED/S         messages subscribers missed (drop_oldest, fell behind), per second\n"
    "  TOTAL, DROPPED    messages published and dropped since the broker started\n"
    "  BYTES/S           payload bytes published per second: 850B/s, 1.2kB/s, 3.4MB/s\n"
    "  LAG MAX           the furthest a subscriber fell behind, as a share of the topic's log\n"
    "                    (100%: the log was full of messages it had not read)\n"
    "Then the rings of the services whose channels have carried enough to be measured (shared\n"
    "memory only), the fullest first:\n"
    "  REQUEST FILL MAX  the fullest a caller's request ring to the service was\n"
    "  REQUEST FULL      times a caller found it full and had to wait (the service falls\n"
    "                    behind its callers)\n"
    "  RESPONSE FILL MAX, RESPONSE FULL  the same of the service's replies (a caller that does\n"
    "                    not read them)\n"
    "Latencies are counted in buckets (four per power of two), so a quantile is the upper bound\n"
    "of its bucket: the true value is at most that and within about 19% below it. Durations read\n"
    "850ns, 12.3us, 4.56ms, 1.20s.\n"
    "\n"
    "options:\n"
    "  --interval D        the interval to rate over: seconds (1, 0.5) or 250ms, 2s, 1m\n"
    "                      (default 1; must be above 0)\n"
    "  --watch             print again every interval, each time over the last interval, until\n"
    "                      Ctrl-C; on a terminal the screen is redrawn, else the tables follow\n"
    "                      one another with a blank line between them\n"
    "  --count N           stop after N samples (implies --watch)\n"
    "  --prefix P          only services and topics whose id starts with P\n"
    "  --json              a JSON object per sample instead of the table (one line each with\n"
    "                      --watch): {taken_unix_ns, interval_seconds, gauges {clients,\n"
    "                      channels, services, topics, subscriptions, registry_generation,\n"
    "                      connections_total, reconnects_total, metrics_series_refused_total},\n"
    "                      methods [{service, method, calls_total, errors_total,\n"
    "                      calls_per_second, errors_per_second, in_flight, p50_ns, p99_ns,\n"
    "                      max_ns, calls_by_code {OK: n, UNAVAILABLE: n, ... (totals, non-zero\n"
    "                      only)}, handled_total, handler_p50_ns, handler_p99_ns}],\n"
    "                      topics [{topic, published_total, delivered_total, dropped_total,\n"
    "                      bytes_total, published_per_second, delivered_per_second,\n"
    "                      dropped_per_second, bytes_per_second}]} in the tables' order (both\n"
    "                      arrays always there, maybe empty); a latency is null when there is\n"
    "                      none to show\n"
    "  --pretty, --compact\n"
    "                      indent the JSON or not (default: indented when stdout is a terminal\n"
    "                      and not watching)\n"
    "\n"
    "No calls or messages yet is not an error: stats says so and exits 0.\n"
    "\n"
    "exit status:\n"
    "  0        printed (--count samples, with --count)\n"
    "  1        the broker could not be reached, or its metrics could not be read (stderr says\n"
    "           'ERROR: CODE_NAME: message')\n"
    "  2        the command line does not parse\n"
    "  130      Ctrl-C\n",
    runStats};

}  // namespace hms::ffi::cli
