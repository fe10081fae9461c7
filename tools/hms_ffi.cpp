// hms-ffi: the command-line tool, as grpcurl is to gRPC and busctl to D-Bus. The global options
// and the command table; each command lives in a file of its own:
//   list, topics       registry_commands.cpp
//   describe           describe.cpp (with schema_printer.cpp)
//   call               call.cpp
//   pub, sub           topic_commands.cpp
//   stats              stats_command.cpp (with stats.cpp)
//   trace              trace_command.cpp (with trace.cpp)
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "command.hpp"
#include "interrupts.hpp"

namespace {

using hms::ffi::cli::Command;

const Command* const kCommands[] = {
    &hms::ffi::cli::kListCommand,   &hms::ffi::cli::kDescribeCommand, &hms::ffi::cli::kCallCommand,
    &hms::ffi::cli::kTopicsCommand, &hms::ffi::cli::kPubCommand,      &hms::ffi::cli::kSubCommand,
    &hms::ffi::cli::kStatsCommand,  &hms::ffi::cli::kTraceCommand,
};

const Command* findCommand(std::string_view name) {
  for (const Command* c : kCommands) {
    if (c->name == name) return c;
  }
  return nullptr;
}

int usage(FILE* out, int rc) {
  std::fputs(
      "usage: hms-ffi [--socket PATH] [--transport auto|shm|socket] <command> [args]\n"
      "\n"
      "Commands:\n",
      out);
  for (const Command* c : kCommands) {
    const std::string_view firstLine = c->summary.substr(0, c->summary.find('\n'));
    std::fprintf(out, "  %.*s\n      %.*s\n", int(c->synopsis.size()), c->synopsis.data(),
                 int(firstLine.size()), firstLine.data());
  }
  std::fputs(
      "\n"
      "'hms-ffi COMMAND --help' (or 'hms-ffi help COMMAND') explains a command and its options.\n"
      "\n"
      "Examples:\n"
      "  hms-ffi list\n"
      "  hms-ffi describe hms.emr.patient@^1.0\n"
      "  hms-ffi call hms.emr.patient getPatient '{\"patientId\": \"p-1001\"}'\n"
      "  hms-ffi sub hms.emr.vitals --count 10\n"
      "  echo '{\"heartRate\": 72}' | hms-ffi pub hms.emr.vitals --wait-subscribers 1\n"
      "\n"
      "Global options:\n"
      "  --socket PATH     the broker's socket; else $HMS_FFI_SOCKET, else\n"
      "                    $XDG_RUNTIME_DIR/hms-ffi/broker.sock (/run/hms-ffi/broker.sock as "
      "root)\n"
      "  --transport T     how this tool's channels carry messages: auto (default; defers to\n"
      "                    $HMS_FFI_TRANSPORT), shm or socket\n"
      "\n"
      "A broker with an access policy (docs/security.md) decides what this tool may do from its\n"
      "user and groups, and from the token in $HMS_FFI_TOKEN or the file $HMS_FFI_TOKEN_FILE.\n"
      "\n"
      "Exit status:\n"
      "  0        success\n"
      "  1        the broker could not be reached or read (or refused this tool's token:\n"
      "           UNAUTHENTICATED); describe: no such service\n"
      "  2        a command line that does not parse\n"
      "  64+CODE  call, pub and sub: the operation failed with gRPC status CODE, printed to\n"
      "           stderr as 'ERROR: CODE_NAME: message' (as grpcurl does): 65 CANCELLED,\n"
      "           67 INVALID_ARGUMENT, 68 DEADLINE_EXCEEDED, 69 NOT_FOUND, 70 ALREADY_EXISTS,\n"
      "           73 FAILED_PRECONDITION, 76 UNIMPLEMENTED, 77 INTERNAL, 78 UNAVAILABLE, ...\n"
      "  130      interrupted by Ctrl-C (a stream, sub, or pub waiting)\n",
      out);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hms::ffi::cli;
  // Before any thread starts: every thread then has SIGINT and SIGTERM blocked (interrupts.hpp).
  Interrupts::install();

  hms::ffi::ClientOptions options;
  options.name = "hms-ffi";
  options.reconnect = false;
  int i = 1;
  // Global options come before the command.
  for (; i < argc && argv[i][0] == '-'; ++i) {
    const std::string a = argv[i];
    std::string value;
    std::string name = a;
    if (const auto eq = a.find('='); eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
    } else if ((a == "--socket" || a == "--transport") && i + 1 < argc) {
      value = argv[++i];
    } else if (a == "--socket" || a == "--transport") {
      std::fprintf(stderr, "hms-ffi: option '%s' needs a value\n", a.c_str());
      return kExitUsage;
    }
    if (name == "--help" || name == "-h") return usage(stdout, kExitOk);
    if (name == "--socket") {
      options.socketPath = value;
    } else if (name == "--transport") {
      if (value == "auto") {
        options.transport = hms::ffi::Transport::kAuto;
      } else if (value == "shm") {
        options.transport = hms::ffi::Transport::kSharedMemory;
      } else if (value == "socket") {
        options.transport = hms::ffi::Transport::kSocket;
      } else {
        std::fprintf(stderr, "hms-ffi: --transport is auto, shm or socket, not '%s'\n",
                     value.c_str());
        return kExitUsage;
      }
    } else {
      std::fprintf(stderr, "hms-ffi: unknown option '%s'\n", a.c_str());
      return usage(stderr, kExitUsage);
    }
  }
  if (i >= argc) return usage(stderr, kExitUsage);
  std::string name = argv[i++];
  if (name == "help") {
    if (i >= argc) return usage(stdout, kExitOk);
    name = argv[i++];
    const Command* cmd = findCommand(name);
    if (cmd == nullptr) {
      std::fprintf(stderr, "hms-ffi: unknown command '%s'\n", name.c_str());
      return usage(stderr, kExitUsage);
    }
    printHelp(*cmd, stdout);
    return kExitOk;
  }
  const Command* cmd = findCommand(name);
  if (cmd == nullptr) {
    std::fprintf(stderr, "hms-ffi: unknown command '%s'\n", name.c_str());
    return usage(stderr, kExitUsage);
  }
  Invocation inv(std::move(options), std::vector<std::string>(argv + i, argv + argc));
  return cmd->run(*cmd, inv);
}
