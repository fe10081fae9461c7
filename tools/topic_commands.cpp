// hms-ffi pub and hms-ffi sub: a topic's messages as JSON, published from the command line or
// printed a line each.
#include <algorithm>
#include <cstdio>
#include <thread>

#include "command.hpp"
#include "hms/ffi/json.hpp"
#include "interrupts.hpp"
#include "json_input.hpp"
#include "json_writer.hpp"

namespace hms::ffi::cli {

namespace {

using Clock = std::chrono::steady_clock;

// How often a wait looks at Ctrl-C: short enough to feel immediate.
constexpr std::chrono::milliseconds kInterruptPoll{100};

// Waits until `want` subscribers are attached, `timeout` passes, or Ctrl-C.
int waitForSubscribers(JsonPublisher& pub, const std::string& topic, uint64_t want,
                       std::optional<std::chrono::nanoseconds> timeout) {
  const auto start = Clock::now();
  while (pub.subscribers() < want) {
    if (const int sig = Interrupts::received(); sig != 0) return kExitSignalBase + sig;
    if (timeout && Clock::now() - start >= *timeout) {
      const Status s(StatusCode::kDeadlineExceeded,
                     "topic " + topic + " has " + std::to_string(pub.subscribers()) +
                         " subscriber(s), not the " + std::to_string(want) +
                         " --wait-subscribers asks for");
      printError(s);
      return exitCodeFor(s);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return kExitOk;
}

// Publishes each non-blank line of `lines`; a failure names the line.
int publishLines(JsonPublisher& pub, LineReader& lines) {
  std::string line;
  for (uint64_t number = 1;; ++number) {
    switch (lines.next(line)) {
      case LineReader::Next::kEnd:
        return kExitOk;
      case LineReader::Next::kInterrupted:
        return kExitSignalBase + Interrupts::received();
      case LineReader::Next::kError:
        std::fprintf(stderr, "hms-ffi pub: %s\n", lines.error().c_str());
        return kExitFailure;
      case LineReader::Next::kLine:
        break;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (const Status s = pub.publish(line); !s.isOk()) {
      printError(Status(s.code(), "line " + std::to_string(number) + ": " + s.message(), s.source(),
                        s.details()));
      return exitCodeFor(s);
    }
  }
}

int runPub(const Command& cmd, Invocation& inv) {
  ParsedArgs args;
  if (auto rc = parseCommandLine(cmd, inv,
                                 {{"-d", true},
                                  {"--data", true},
                                  {"--lines", false},
                                  {"--wait-subscribers", true},
                                  {"--wait-timeout", true},
                                  {"--slots", true},
                                  {"--max-bytes", true}},
                                 args)) {
    return *rc;
  }
  if (args.positional.empty()) return usageError(cmd, "needs a TOPIC");
  if (args.positional.size() > 2) return usageError(cmd, "takes one JSON argument at most");
  if (args.has("-d") && args.has("--data")) return usageError(cmd, "give -d or --data, not both");
  const std::string& topic = args.positional[0];
  const std::string* data = args.value("-d") ? args.value("-d") : args.value("--data");
  const std::string* argument = args.positional.size() == 2 ? &args.positional[1] : nullptr;

  uint64_t wantSubscribers = 0;
  std::optional<std::chrono::nanoseconds> waitTimeout;
  TopicOptions topicOptions;
  if (const std::string* v = args.value("--wait-subscribers")) {
    auto n = parseCount(*v);
    if (!n) return usageError(cmd, "--wait-subscribers takes a count");
    wantSubscribers = *n;
  }
  if (const std::string* v = args.value("--wait-timeout")) {
    waitTimeout = parseDuration(*v);
    if (!waitTimeout) return usageError(cmd, "--wait-timeout takes a duration such as 5s");
  }
  if (const std::string* v = args.value("--slots")) {
    auto n = parseCount(*v);
    if (!n || *n < 2 || (*n & (*n - 1)) != 0 || *n > (1u << 20)) {
      return usageError(cmd, "--slots takes a power of two, at least 2");
    }
    topicOptions.slots = uint32_t(*n);
  }
  if (const std::string* v = args.value("--max-bytes")) {
    auto n = parseCount(*v);
    if (!n || *n == 0 || *n > (1u << 30)) return usageError(cmd, "--max-bytes takes a size");
    topicOptions.maxMessageBytes = uint32_t(*n);
  }

  // The input is read before the topic is taken: a publisher waiting for its own input would
  // hold the topic from others for nothing.
  std::string message;
  std::optional<LineReader> lines;
  if (args.has("--lines")) {
    if (argument != nullptr) return usageError(cmd, "--lines reads stdin or -d, not an argument");
    if (auto error = openLineSource(data, lines)) return usageError(cmd, *error);
  } else {
    std::string error;
    if (!readJsonInput(argument, data, "{}", message, error)) return usageError(cmd, error);
  }

  Client* client = inv.client();
  if (client == nullptr) return kExitFailure;
  auto pub = client->advertiseJson(topic, topicOptions);
  if (!pub.ok()) {
    printError(pub.status());
    return exitCodeFor(pub.status());
  }
  Interrupts::Scope stopOnInterrupt([] {});  // the waits below poll Interrupts::received()
  int rc = waitForSubscribers(*pub, topic, wantSubscribers, waitTimeout);
  if (rc == kExitOk) {
    if (lines) {
      rc = publishLines(*pub, *lines);
    } else if (const Status s = pub->publish(message); !s.isOk()) {
      printError(s);
      rc = exitCodeFor(s);
    }
  }
  // Subscribers read what was published, then see the topic end.
  if (const Status s = pub->close(); !s.isOk() && rc == kExitOk) {
    printError(s);
    rc = exitCodeFor(s);
  }
  return rc;
}

int runSub(const Command& cmd, Invocation& inv) {
  ParsedArgs args;
  if (auto rc = parseCommandLine(cmd, inv,
                                 {{"--count", true},
                                  {"--history", true},
                                  {"--drop-oldest", false},
                                  {"--timeout", true},
                                  {"--wait-publisher", true},
                                  {"--seq", false}},
                                 args)) {
    return *rc;
  }
  if (args.positional.size() != 1) return usageError(cmd, "needs one TOPIC");
  const std::string& topic = args.positional[0];
  uint64_t count = 0;  // 0: no limit
  std::optional<std::chrono::nanoseconds> timeout;
  SubscribeOptions options;
  if (const std::string* v = args.value("--count")) {
    auto n = parseCount(*v);
    if (!n || *n == 0) return usageError(cmd, "--count takes a count of at least 1");
    count = *n;
  }
  if (const std::string* v = args.value("--history")) {
    auto n = parseCount(*v);
    if (!n || *n > UINT32_MAX) return usageError(cmd, "--history takes a count");
    options.history = uint32_t(*n);
  }
  if (const std::string* v = args.value("--timeout")) {
    timeout = parseDuration(*v);
    if (!timeout) return usageError(cmd, "--timeout takes a duration such as 500ms, 2s or 1m");
  }
  if (const std::string* v = args.value("--wait-publisher")) {
    auto d = parseDuration(*v);
    if (!d) return usageError(cmd, "--wait-publisher takes a duration such as 5s");
    options.waitForPublisher = *d;
  }
  if (args.has("--drop-oldest")) options.policy = SlowConsumer::kDropOldest;
  const bool withSequence = args.has("--seq");

  Client* client = inv.client();
  if (client == nullptr) return kExitFailure;
  auto sub = client->subscribeJson(topic, options);
  if (!sub.ok()) {
    printError(sub.status());
    if (sub.status().code() == StatusCode::kNotFound && !args.has("--wait-publisher")) {
      printFailure(cmd, "--wait-publisher D waits for a publisher to come");
    }
    return exitCodeFor(sub.status());
  }
  Interrupts::Scope stopOnInterrupt([] {});  // the loop below polls Interrupts::received()
  uint64_t printed = 0;
  auto lastMessage = Clock::now();
  for (;;) {
    if (const int sig = Interrupts::received(); sig != 0) return kExitSignalBase + sig;
    auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(kInterruptPoll);
    if (timeout) {
      const auto left = *timeout - (Clock::now() - lastMessage);
      wait = std::clamp<std::chrono::nanoseconds>(left, std::chrono::milliseconds(1), wait);
    }
    const Status s = sub->next(wait);
    if (s.code() == StatusCode::kDeadlineExceeded) {
      if (timeout && Clock::now() - lastMessage >= *timeout) {
        const Status late(StatusCode::kDeadlineExceeded,
                          "no message on topic " + topic + " for " + *args.value("--timeout"));
        printError(late);
        return exitCodeFor(late);
      }
      continue;
    }
    if (s.code() == StatusCode::kUnavailable) return kExitOk;  // the publisher left
    if (!s.isOk()) {
      printError(s);
      return exitCodeFor(s);
    }
    lastMessage = Clock::now();
    if (withSequence) {
      JsonWriter w(false);
      w.beginObject().key("seq").value(sub->sequence()).key("missed").value(sub->missed());
      w.key("message").raw(sub->message()).endObject();
      std::printf("%s\n", w.str().c_str());
    } else {
      std::printf("%s\n", sub->message().c_str());
    }
    if (!flushOutput()) return kExitFailure;
    if (count != 0 && ++printed == count) return kExitOk;
  }
}

}  // namespace

const Command kPubCommand{
    "pub", "pub TOPIC [JSON | -d DATA | --lines] [options]",
    "Publishes a JSON message (or, with --lines, one per line of stdin) to TOPIC.",
    "For that time hms-ffi is the topic's one publisher: ALREADY_EXISTS while the topic has a\n"
    "live publisher. The message type is the one the topic's publishers advertised before:\n"
    "NOT_FOUND when no publisher advertised the topic in the broker's life. Subscribers read\n"
    "what was published, then see the topic end when hms-ffi leaves.\n"
    "\n"
    "The message is the JSON argument, or -d: -d '{...}', -d @FILE, -d - (stdin). With neither,\n"
    "it is read from stdin when it is not a terminal, else it is {}.\n"
    "\n"
    "options:\n"
    "  -d, --data DATA          the message: JSON text, @FILE, or - for stdin\n"
    "  --lines                  publish each non-blank line of stdin (or of -d) as it comes,\n"
    "                           until its end or Ctrl-C\n"
    "  --wait-subscribers N     wait until N subscribers are attached before publishing\n"
    "  --wait-timeout D         give up that wait after D (500ms, 2s, 1m; default: no limit)\n"
    "  --slots N                the topic's log size in messages (a power of two; default 256)\n"
    "  --max-bytes N            the largest message (default 4080)\n"
    "\n"
    "exit status:\n"
    "  0        published (every line, with --lines)\n"
    "  1        the broker could not be reached\n"
    "  2        the command line does not parse\n"
    "  64+CODE  advertising or publishing failed with gRPC status CODE; stderr says\n"
    "           'ERROR: CODE_NAME: message'. For example:\n"
    "             67 INVALID_ARGUMENT (JSON that does not fit the type; with --lines, which line)\n"
    "             68 DEADLINE_EXCEEDED (--wait-timeout passed)\n"
    "             69 NOT_FOUND (no publisher ever advertised the topic: its type is unknown)\n"
    "             70 ALREADY_EXISTS (the topic has a live publisher)\n"
    "  130      Ctrl-C\n",
    runPub};

const Command kSubCommand{
    "sub", "sub TOPIC [--count N] [--timeout D] [--seq] [options]",
    "Prints each message of TOPIC as one line of JSON, in publication order.",
    "Stops after --count messages, at Ctrl-C, or when the publisher leaves (after printing\n"
    "everything it published).\n"
    "\n"
    "options:\n"
    "  --count N            stop after N messages\n"
    "  --history N          begin with the last N messages already published\n"
    "  --drop-oldest        never hold the publisher up: messages not read in time are lost\n"
    "                       (--seq shows how many); default: the publisher waits for us\n"
    "  --timeout D          give up after D without a message (500ms, 2s, 1m)\n"
    "  --wait-publisher D   wait up to D for the topic to have a publisher (default: NOT_FOUND\n"
    "                       at once)\n"
    "  --seq                print each message as {\"seq\":N,\"missed\":M,\"message\":{...}}: its\n"
    "                       sequence number and the messages lost just before it\n"
    "\n"
    "exit status:\n"
    "  0        --count messages printed, or the publisher left (after everything it published)\n"
    "  1        the broker could not be reached\n"
    "  2        the command line does not parse\n"
    "  64+CODE  the subscription failed with gRPC status CODE; stderr says\n"
    "           'ERROR: CODE_NAME: message'. For example:\n"
    "             68 DEADLINE_EXCEEDED (--timeout passed without a message)\n"
    "             69 NOT_FOUND (nobody publishes the topic)\n"
    "             73 FAILED_PRECONDITION\n"
    "  130      Ctrl-C\n",
    runSub};

}  // namespace hms::ffi::cli
