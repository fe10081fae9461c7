#include "command.hpp"

#include <unistd.h>

#include <cinttypes>
#include <cstdio>

namespace hms::ffi::cli {

int exitCodeFor(const Status& status) noexcept {
  return status.isOk() ? kExitOk : kExitStatusBase + int(status.code());
}

Client* Invocation::client() {
  if (client_) return client_.get();
  auto c = Client::connect(options_);
  if (!c.ok()) {
    std::fprintf(stderr, "hms-ffi: %s\n", c.status().toString().c_str());
    return nullptr;
  }
  client_ = std::move(*c);
  return client_.get();
}

void printHelp(const Command& cmd, FILE* to) {
  std::fprintf(to, "usage: hms-ffi [--socket PATH] %.*s\n\n%.*s\n\n%.*s", int(cmd.synopsis.size()),
               cmd.synopsis.data(), int(cmd.summary.size()), cmd.summary.data(),
               int(cmd.help.size()), cmd.help.data());
}

int usageError(const Command& cmd, std::string_view what) {
  std::fprintf(stderr, "hms-ffi %.*s: %.*s\nusage: hms-ffi [--socket PATH] %.*s\n",
               int(cmd.name.size()), cmd.name.data(), int(what.size()), what.data(),
               int(cmd.synopsis.size()), cmd.synopsis.data());
  std::fprintf(stderr, "Try 'hms-ffi %.*s --help'.\n", int(cmd.name.size()), cmd.name.data());
  return kExitUsage;
}

std::optional<int> parseCommandLine(const Command& cmd, const Invocation& inv,
                                    std::initializer_list<OptionSpec> specs, ParsedArgs& out) {
  if (auto error = parseArgs(inv.args(), specs, out)) return usageError(cmd, *error);
  if (out.has("--help") || out.has("-h")) {
    printHelp(cmd, stdout);
    return kExitOk;
  }
  return std::nullopt;
}

void printError(const Status& status) {
  const auto name = statusCodeName(status.code());
  std::fprintf(stderr, "ERROR: %.*s: %s\n", int(name.size()), name.data(),
               status.message().c_str());
  if (!status.source().empty()) std::fprintf(stderr, "  source: %s\n", status.source().c_str());
  for (const auto& [key, value] : status.details()) {
    std::fprintf(stderr, "  %s: %s\n", key.c_str(), value.c_str());
  }
}

void printFailure(const Command& cmd, std::string_view message) {
  std::fprintf(stderr, "hms-ffi %.*s: %.*s\n", int(cmd.name.size()), cmd.name.data(),
               int(message.size()), message.data());
}

bool prettyOutput(const ParsedArgs& args) {
  if (args.has("--pretty")) return true;
  if (args.has("--compact")) return false;
  return ::isatty(STDOUT_FILENO) == 1;
}

ServiceRef splitServiceRef(std::string_view text) {
  ServiceRef ref;
  const auto at = text.find('@');
  ref.id = std::string(text.substr(0, at));
  if (at != std::string_view::npos) ref.range = std::string(text.substr(at + 1));
  return ref;
}

std::string hexId(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%016" PRIx64, id);
  return buf;
}

bool flushOutput() {
  return std::fflush(stdout) == 0 && !std::ferror(stdout);
}

}  // namespace hms::ffi::cli
