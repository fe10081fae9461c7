// hms-ffi call: one call of a service's method with JSON in and out, without generated code
// (the schema comes from the broker), as grpcurl does for gRPC.
#include <cstdio>

#include "command.hpp"
#include "hms/ffi/json.hpp"
#include "interrupts.hpp"
#include "json_input.hpp"

namespace hms::ffi::cli {

namespace {

// A stream without --timeout runs until it ends or Ctrl-C: its deadline is years away.
constexpr std::chrono::nanoseconds kStreamWithoutDeadline = std::chrono::hours(24 * 365 * 10);

const MethodInfo* findMethod(const ContractInfo& contract, std::string_view name) {
  for (const auto& m : contract.methods) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

int runStream(JsonStub& stub, const std::string& method, const std::string& params,
              const JsonCallOptions& options) {
  auto stream = stub.openStream(method, params, options);
  if (!stream.ok()) {
    printError(stream.status());
    return exitCodeFor(stream.status());
  }
  bool outputClosed = false;
  {
    // Ctrl-C cancels the stream: next() then returns false with CANCELLED.
    Interrupts::Scope cancelOnInterrupt([&] { (void)stream->cancel(); });
    while (stream->next()) {
      std::printf("%s\n", stream->item().c_str());
      if (!flushOutput()) {
        outputClosed = true;  // e.g. `| head -3`: stop reading, the destructor cancels
        break;
      }
    }
  }
  if (outputClosed) return kExitFailure;
  if (const int sig = Interrupts::received(); sig != 0) return kExitSignalBase + sig;
  if (!stream->status().isOk()) {
    printError(stream->status());
    return exitCodeFor(stream->status());
  }
  return kExitOk;
}

int run(const Command& cmd, Invocation& inv) {
  ParsedArgs args;
  if (auto rc = parseCommandLine(cmd, inv,
                                 {{"-d", true},
                                  {"--data", true},
                                  {"--timeout", true},
                                  {"--oneway", false},
                                  {"--pretty", false},
                                  {"--compact", false}},
                                 args)) {
    return *rc;
  }
  if (args.positional.size() < 2) return usageError(cmd, "needs SERVICE[@RANGE] and METHOD");
  if (args.positional.size() > 3) return usageError(cmd, "takes one JSON argument at most");
  if (args.has("-d") && args.has("--data")) return usageError(cmd, "give -d or --data, not both");
  const ServiceRef ref = splitServiceRef(args.positional[0]);
  const std::string& method = args.positional[1];
  if (auto range = VersionRange::parse(ref.range); !range.ok()) {
    return usageError(cmd, range.status().message());
  }
  JsonCallOptions options;
  options.pretty = prettyOutput(args);
  std::optional<std::chrono::nanoseconds> timeout;
  if (const std::string* t = args.value("--timeout")) {
    timeout = parseDuration(*t);
    if (!timeout) return usageError(cmd, "--timeout takes a duration such as 500ms, 2s or 1m");
  }

  std::string params, error;
  const std::string* data = args.value("-d") ? args.value("-d") : args.value("--data");
  const std::string* argument = args.positional.size() == 3 ? &args.positional[2] : nullptr;
  if (!readJsonInput(argument, data, "{}", params, error)) return usageError(cmd, error);

  Client* client = inv.client();
  if (client == nullptr) return kExitFailure;
  auto stub = client->bindJson(ref.id, ref.range);
  if (!stub.ok()) {
    printError(stub.status());
    return exitCodeFor(stub.status());
  }
  const MethodInfo* info = findMethod(stub->contract(), method);
  if (info != nullptr && info->stream) {
    if (args.has("--oneway")) return usageError(cmd, "--oneway does not apply to a stream method");
    // A stream item per line whatever the terminal: a reader of the output reads lines.
    options.pretty = args.has("--pretty");
    options.timeout = timeout.value_or(kStreamWithoutDeadline);
    return runStream(*stub, method, params, options);
  }
  if (timeout) options.timeout = *timeout;
  if (args.has("--oneway")) {
    const Status s = stub->callOneWay(method, params, options);
    if (!s.isOk()) printError(s);
    return exitCodeFor(s);
  }
  auto result = stub->call(method, params, options);
  if (!result.ok()) {
    printError(result.status());
    return exitCodeFor(result.status());
  }
  std::printf("%s\n", result->c_str());
  return flushOutput() ? kExitOk : kExitFailure;
}

}  // namespace

const Command kCallCommand{
    "call", "call SERVICE[@RANGE] METHOD [JSON | -d DATA] [options]",
    "Calls METHOD of SERVICE (its highest live version in RANGE) with JSON; prints the results.",
    "No generated code is needed: the schema comes from the broker.\n"
    "\n"
    "The params are the JSON argument, or -d: -d '{...}', -d @FILE, -d - (stdin). With neither,\n"
    "they are read from stdin when it is not a terminal, else they are {}. The JSON mapping is\n"
    "proto3's: 64-bit integers as strings, Data as base64, enums by name, unions by their one\n"
    "member; unknown fields and wrong types are refused, naming the field path.\n"
    "\n"
    "A stream method prints one compact JSON line per item until the service ends the stream;\n"
    "Ctrl-C cancels it (the service sees the cancellation).\n"
    "\n"
    "RANGE is in the npm/Cargo notation: ^1.0, ~1.2, 1.x, '>=1.0 <2'; default any version.\n"
    "\n"
    "options:\n"
    "  -d, --data DATA    the params: JSON text, @FILE, or - for stdin\n"
    "  --timeout D        the call's deadline: 500ms, 2s, 1m, ... (default 30s; a stream has\n"
    "                     none unless given)\n"
    "  --oneway           send the call without waiting for a reply; exit 0 once it is in the\n"
    "                     channel (delivery is not confirmed: its result and errors are not\n"
    "                     reported back)\n"
    "  --pretty           indent the results (default when stdout is a terminal)\n"
    "  --compact          one line of JSON (default when stdout is not a terminal)\n"
    "\n"
    "exit status:\n"
    "  0        the call succeeded (or the stream ended normally)\n"
    "  1        the broker could not be reached\n"
    "  2        the command line does not parse\n"
    "  64+CODE  the call failed with gRPC status CODE; stderr says\n"
    "           'ERROR: CODE_NAME: message', then its source and details. For example:\n"
    "             65 CANCELLED            67 INVALID_ARGUMENT (JSON that does not fit)\n"
    "             68 DEADLINE_EXCEEDED    69 NOT_FOUND (no such service or version)\n"
    "             73 FAILED_PRECONDITION  76 UNIMPLEMENTED (no such method)\n"
    "             78 UNAVAILABLE (the provider went away)\n"
    "  130      Ctrl-C cancelled a stream\n",
    run};

}  // namespace hms::ffi::cli
