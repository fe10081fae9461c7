// What every hms-ffi command shares: its entry in the command table, the invocation it runs in
// (arguments, client options, the client once connected) and how it ends (exit statuses, errors).
#pragma once

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "args.hpp"
#include "hms/ffi/client.hpp"

namespace hms::ffi::cli {

// Exit statuses (listed in `hms-ffi --help`).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;       // no broker, nothing found, a listing that failed
inline constexpr int kExitUsage = 2;         // a command line that does not parse
inline constexpr int kExitStatusBase = 64;   // + the gRPC code of the call's, publish's... error
inline constexpr int kExitSignalBase = 128;  // + the signal that interrupted a wait (130: Ctrl-C)

// 64 + the status code, as grpcurl does: NOT_FOUND (5) is 69, INVALID_ARGUMENT (3) is 67.
int exitCodeFor(const Status& status) noexcept;

// The global options and one command's arguments. Connects on the first client() call.
class Invocation {
 public:
  Invocation(ClientOptions options, std::vector<std::string> args)
      : options_(std::move(options)), args_(std::move(args)) {}
  const std::vector<std::string>& args() const noexcept { return args_; }
  // The client; null after printing why it could not connect (exit with kExitFailure).
  Client* client();

 private:
  ClientOptions options_;
  std::vector<std::string> args_;
  std::unique_ptr<Client> client_;
};

struct Command {
  std::string_view name;
  std::string_view synopsis;  // the command line, for the global help and usage errors
  std::string_view summary;   // one line for the global help
  std::string_view help;      // the rest of `hms-ffi NAME --help`
  int (*run)(const Command&, Invocation&);
};

// Each defined in its command's file.
extern const Command kListCommand;
extern const Command kTopicsCommand;
extern const Command kDescribeCommand;
extern const Command kCallCommand;
extern const Command kPubCommand;
extern const Command kSubCommand;
extern const Command kStatsCommand;
extern const Command kTraceCommand;

// Parses the invocation's arguments for `cmd`: nothing when the command should go on with
// `out`, else the exit status to return (the help was printed, or a usage error).
std::optional<int> parseCommandLine(const Command& cmd, const Invocation& inv,
                                    std::initializer_list<OptionSpec> specs, ParsedArgs& out);
void printHelp(const Command& cmd, FILE* to);
// Prints "hms-ffi NAME: what" and the synopsis to stderr; returns kExitUsage.
int usageError(const Command& cmd, std::string_view what);

// "ERROR: NOT_FOUND: message", then the source and the details the status carries, to stderr.
void printError(const Status& status);
// "hms-ffi NAME: message" to stderr.
void printFailure(const Command& cmd, std::string_view message);

// Whether the command's output should be indented: --pretty, --compact, else whether stdout is
// a terminal.
bool prettyOutput(const ParsedArgs& args);

// "SERVICE" or "SERVICE@RANGE": the id and the range ("*" when none is given).
struct ServiceRef {
  std::string id;
  std::string range = "*";
};
ServiceRef splitServiceRef(std::string_view text);

// A schema or type id as Cap'n Proto writes it: "0x9d1c5e4b0a7f3e21".
std::string hexId(uint64_t id);

// Flushes stdout; false when it can no longer be written (a closed pipe).
bool flushOutput();

}  // namespace hms::ffi::cli
