// hms-ffi: the command-line tool. Reads the registry from the broker's registry segment.
//   hms-ffi [--socket PATH] list [PREFIX]     live services, one per line
//   hms-ffi [--socket PATH] describe ID       every live version of ID with its methods
//   hms-ffi [--socket PATH] topics [PREFIX]   live publish/subscribe topics
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

#include "hms/ffi/client.hpp"

namespace {

int usage(FILE* out, int rc) {
  std::fputs(
      "usage: hms-ffi [--socket PATH] <command>\n"
      "\n"
      "  list [PREFIX]    live services (all, or those whose id starts with PREFIX)\n"
      "  describe ID      every live version of service ID, with its methods and provider\n"
      "  topics [PREFIX]  live topics: message type, publisher, subscribers, log size\n"
      "\n"
      "The broker's socket is --socket, else $HMS_FFI_SOCKET, else\n"
      "$XDG_RUNTIME_DIR/hms-ffi/broker.sock (/run/hms-ffi/broker.sock as root).\n",
      out);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  hms::ffi::ClientOptions options;
  options.name = "hms-ffi";
  options.reconnect = false;
  int i = 1;
  if (i + 1 < argc && std::strcmp(argv[i], "--socket") == 0) {
    options.socketPath = argv[i + 1];
    i += 2;
  }
  if (i >= argc) return usage(stderr, 2);
  const std::string cmd = argv[i++];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") return usage(stdout, 0);
  if (cmd != "list" && cmd != "describe" && cmd != "topics") {
    std::fprintf(stderr, "hms-ffi: unknown command '%s'\n", cmd.c_str());
    return usage(stderr, 2);
  }
  if (cmd == "describe" && i >= argc) {
    std::fprintf(stderr, "hms-ffi: describe needs a service id\n");
    return 2;
  }
  auto client = hms::ffi::Client::connect(options);
  if (!client) {
    std::fprintf(stderr, "hms-ffi: %s\n", client.status().toString().c_str());
    return 1;
  }
  if (cmd == "topics") {
    auto topics = (*client)->discoverTopics(i < argc ? argv[i] : "");
    if (!topics) {
      std::fprintf(stderr, "hms-ffi: %s\n", topics.status().toString().c_str());
      return 1;
    }
    std::printf("%-32s %-20s %-8s %-24s %-11s %s\n", "TOPIC", "TYPE", "PID", "PUBLISHER",
                "SUBSCRIBERS", "SLOTS x MAX BYTES");
    for (const auto& t : *topics) {
      std::printf("%-32s %-20s %-8d %-24s %-11u %u x %u\n", t.id.c_str(), t.typeName.c_str(),
                  int(t.publisherPid), t.publisherName.c_str(), t.subscribers, t.slots,
                  t.maxMessageBytes);
    }
    return 0;
  }
  if (cmd == "list") {
    auto services = (*client)->discoverPrefix(i < argc ? argv[i] : "");
    if (!services) {
      std::fprintf(stderr, "hms-ffi: %s\n", services.status().toString().c_str());
      return 1;
    }
    std::printf("%-32s %-10s %-8s %-20s %s\n", "SERVICE", "VERSION", "PID", "PROVIDER", "METHODS");
    for (const auto& s : *services) {
      std::string methods;
      for (const auto& m : s.methods) methods += (methods.empty() ? "" : ",") + m.name;
      std::printf("%-32s %-10s %-8d %-20s %s\n", s.id.c_str(), s.version.toString().c_str(),
                  int(s.providerPid), s.providerName.c_str(), methods.c_str());
    }
    return 0;
  }
  auto services = (*client)->discover(argv[i]);
  if (!services) {
    std::fprintf(stderr, "hms-ffi: %s\n", services.status().toString().c_str());
    return 1;
  }
  if (services->empty()) {
    std::fprintf(stderr, "hms-ffi: no live service '%s'\n", argv[i]);
    return 1;
  }
  for (const auto& s : *services) {
    std::printf("%s %s  (%s)\n", s.id.c_str(), s.version.toString().c_str(), s.displayName.c_str());
    if (!s.description.empty()) std::printf("  %s\n", s.description.c_str());
    std::printf("  interface %s (@0x%016" PRIx64 "), rings of %u bytes\n", s.interfaceName.c_str(),
                s.interfaceId, s.ringBytes);
    std::printf("  provider  %s, pid %d, uid %u, client %" PRIu64 "\n", s.providerName.c_str(),
                int(s.providerPid), unsigned(s.providerUid), s.providerClientId);
    for (const auto& m : s.methods) {
      std::printf("  @%-3u %-24s params @0x%016" PRIx64 " results @0x%016" PRIx64 "\n",
                  unsigned(m.ordinal), m.name.c_str(), m.paramSchemaId, m.resultSchemaId);
    }
  }
  return 0;
}
