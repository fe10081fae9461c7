// hms-ffi list and hms-ffi topics: what the registry holds now, as a table or as JSON.
#include <cstdio>

#include "command.hpp"
#include "json_writer.hpp"

namespace hms::ffi::cli {

namespace {

const std::initializer_list<OptionSpec> kListingOptions = {
    {"--json", false}, {"--pretty", false}, {"--compact", false}};

int runList(const Command& cmd, Invocation& inv) {
  ParsedArgs args;
  if (auto rc = parseCommandLine(cmd, inv, kListingOptions, args)) return *rc;
  if (args.positional.size() > 1) return usageError(cmd, "takes at most one PREFIX");
  Client* client = inv.client();
  if (client == nullptr) return kExitFailure;
  auto services = client->discoverPrefix(args.positional.empty() ? "" : args.positional[0]);
  if (!services.ok()) {
    printFailure(cmd, services.status().toString());
    return kExitFailure;
  }
  if (args.has("--json")) {
    JsonWriter w(prettyOutput(args));
    w.beginArray();
    for (const auto& s : *services) {
      w.beginObject();
      w.key("id").value(s.id).key("version").value(s.version.toString());
      w.key("interface").value(s.interfaceName).key("interfaceId").value(hexId(s.interfaceId));
      w.key("displayName").value(s.displayName);
      w.key("methods").beginArray();
      for (const auto& m : s.methods) {
        w.beginObject().key("name").value(m.name).key("ordinal").value(unsigned(m.ordinal));
        w.key("stream").value(m.stream).endObject();
      }
      w.endArray();
      w.key("provider").beginObject().key("name").value(s.providerName);
      w.key("pid").value(int(s.providerPid)).key("uid").value(unsigned(s.providerUid));
      w.endObject().endObject();
    }
    std::printf("%s\n", w.endArray().str().c_str());
    return flushOutput() ? kExitOk : kExitFailure;
  }
  std::printf("%-32s %-10s %-8s %-20s %s\n", "SERVICE", "VERSION", "PID", "PROVIDER", "METHODS");
  for (const auto& s : *services) {
    std::string methods;
    for (const auto& m : s.methods) methods += (methods.empty() ? "" : ",") + m.name;
    std::printf("%-32s %-10s %-8d %-20s %s\n", s.id.c_str(), s.version.toString().c_str(),
                int(s.providerPid), s.providerName.c_str(), methods.c_str());
  }
  return flushOutput() ? kExitOk : kExitFailure;
}

int runTopics(const Command& cmd, Invocation& inv) {
  ParsedArgs args;
  if (auto rc = parseCommandLine(cmd, inv, kListingOptions, args)) return *rc;
  if (args.positional.size() > 1) return usageError(cmd, "takes at most one PREFIX");
  Client* client = inv.client();
  if (client == nullptr) return kExitFailure;
  auto topics = client->discoverTopics(args.positional.empty() ? "" : args.positional[0]);
  if (!topics.ok()) {
    printFailure(cmd, topics.status().toString());
    return kExitFailure;
  }
  if (args.has("--json")) {
    JsonWriter w(prettyOutput(args));
    w.beginArray();
    for (const auto& t : *topics) {
      w.beginObject();
      w.key("id").value(t.id).key("type").value(t.typeName).key("typeId").value(hexId(t.typeId));
      w.key("displayName").value(t.displayName).key("description").value(t.description);
      w.key("publisher").beginObject().key("name").value(t.publisherName);
      w.key("pid").value(int(t.publisherPid)).key("uid").value(unsigned(t.publisherUid));
      w.endObject();
      w.key("subscribers").value(t.subscribers).key("slots").value(t.slots);
      w.key("maxMessageBytes").value(t.maxMessageBytes);
      w.endObject();
    }
    std::printf("%s\n", w.endArray().str().c_str());
    return flushOutput() ? kExitOk : kExitFailure;
  }
  std::printf("%-32s %-20s %-8s %-24s %-11s %s\n", "TOPIC", "TYPE", "PID", "PUBLISHER",
              "SUBSCRIBERS", "SLOTS x MAX BYTES");
  for (const auto& t : *topics) {
    std::printf("%-32s %-20s %-8d %-24s %-11u %u x %u\n", t.id.c_str(), t.typeName.c_str(),
                int(t.publisherPid), t.publisherName.c_str(), t.subscribers, t.slots,
                t.maxMessageBytes);
  }
  return flushOutput() ? kExitOk : kExitFailure;
}

}  // namespace

const Command kListCommand{
    "list", "list [PREFIX] [--json]",
    "Live services (all, or those whose id starts with PREFIX): id, version, provider, methods.",
    "With --json, each service is an object: id, version, interface, interfaceId, displayName,\n"
    "methods [{name, ordinal, stream}], provider {name, pid, uid}.\n\n"
    "options:\n"
    "  --json       a JSON array instead of the table\n"
    "  --pretty, --compact\n"
    "               indent the JSON or not (default: indented when stdout is a terminal)\n"
    "\n"
    "exit status: 0, 1 when the broker cannot be reached or read, 2 for a command line that\n"
    "does not parse.\n",
    runList};

const Command kTopicsCommand{
    "topics", "topics [PREFIX] [--json]",
    "Live publish/subscribe topics: message type, publisher, subscribers, log size.",
    "With --json, each topic is an object: id, type, typeId, displayName, description,\n"
    "publisher {name, pid, uid}, subscribers, slots, maxMessageBytes.\n\n"
    "options:\n"
    "  --json       a JSON array instead of the table\n"
    "  --pretty, --compact\n"
    "               indent the JSON or not (default: indented when stdout is a terminal)\n"
    "\n"
    "exit status: 0, 1 when the broker cannot be reached or read, 2 for a command line that\n"
    "does not parse.\n",
    runTopics};

}  // namespace hms::ffi::cli
