// hms-ffi describe: every version of a service the broker knows, live or stored, with its
// interface written as Cap'n Proto declarations (or as JSON).
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <set>

#include "command.hpp"
#include "json_writer.hpp"
#include "schema_printer.hpp"

namespace hms::ffi::cli {

namespace {

// One version of the service: live (in the registry), stored (in the broker's contract store),
// or both.
struct Known {
  Version version;
  std::optional<ServiceInfo> live;
  std::optional<ContractInfo> stored;
};

std::string formatTime(std::chrono::system_clock::time_point t, bool iso) {
  const time_t secs = std::chrono::system_clock::to_time_t(t);
  if (secs <= 0) return iso ? "" : "an unknown time";
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[48];
  std::strftime(buf, sizeof(buf), iso ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S UTC", &utc);
  return buf;
}

std::string versionList(const std::vector<Known>& known) {
  std::string out;
  for (const auto& k : known) {
    out += (out.empty() ? "" : ", ") + k.version.toString() + (k.live ? " (live)" : " (offline)");
  }
  return out;
}

// Every version of `id` the broker knows, highest first.
std::vector<Known> knownVersions(Client& client, const std::string& id, bool& storeReadable) {
  std::vector<Known> known;
  auto find = [&](const Version& v) -> Known& {
    for (auto& k : known) {
      if (k.version == v) return k;
    }
    known.push_back(Known{v, std::nullopt, std::nullopt});
    return known.back();
  };
  if (auto live = client.discover(id); live.ok()) {
    for (auto& s : *live) find(s.version).live = std::move(s);
  } else {
    std::fprintf(stderr, "hms-ffi describe: the registry could not be read (%s)\n",
                 live.status().toString().c_str());
  }
  auto stored = client.contracts(id);
  storeReadable = stored.ok();
  if (stored.ok()) {
    for (auto& c : *stored) {
      if (c.id == id) find(c.version).stored = std::move(c);  // a prefix match is not enough
    }
  } else {
    std::fprintf(stderr,
                 "hms-ffi describe: the broker's stored contracts are unavailable (%s); "
                 "showing live versions only\n",
                 stored.status().toString().c_str());
  }
  std::sort(known.begin(), known.end(),
            [](const Known& a, const Known& b) { return a.version > b.version; });
  return known;
}

std::set<uint16_t> streamOrdinals(const std::vector<MethodInfo>& methods) {
  std::set<uint16_t> out;
  for (const auto& m : methods) {
    if (m.stream) out.insert(m.ordinal);
  }
  return out;
}

const std::vector<MethodInfo>& methodsOf(const Known& k) {
  return k.live ? k.live->methods : k.stored->methods;
}

// "# " before every line of `text`.
void printComment(const std::string& text) {
  size_t at = 0;
  while (at <= text.size()) {
    const size_t nl = std::min(text.find('\n', at), text.size());
    std::printf("# %.*s\n", int(nl - at), text.c_str() + at);
    at = nl + 1;
  }
}

void printText(const std::string& id, const Known& k, const Result<ContractInfo>& contract) {
  if (k.live) {
    const ServiceInfo& s = *k.live;
    std::printf("# %s %s: live, provider %s (pid %d, uid %u)\n", id.c_str(),
                k.version.toString().c_str(), s.providerName.c_str(), int(s.providerPid),
                unsigned(s.providerUid));
  } else {
    std::printf("# %s %s: offline (last seen %s from %s)\n", id.c_str(),
                k.version.toString().c_str(), formatTime(k.stored->lastSeen, false).c_str(),
                k.stored->providerName.c_str());
  }
  const std::string& display = k.live ? k.live->displayName : k.stored->displayName;
  const std::string& about = k.live ? k.live->description : k.stored->description;
  if (!display.empty()) printComment(display);
  if (!about.empty()) printComment(about);
  if (!contract.ok()) {
    printComment("the schema is unavailable: " + contract.status().toString());
    std::string methods;
    for (const auto& m : methodsOf(k)) {
      methods += (methods.empty() ? "" : ", ") + m.name + " @" + std::to_string(m.ordinal) +
                 (m.stream ? " (stream)" : "");
    }
    printComment("methods: " + methods);
    return;
  }
  SchemaPrinter printer(contract->schema);
  std::fputs(printer.declarations(streamOrdinals(contract->methods)).c_str(), stdout);
}

void writeFields(JsonWriter& w, capnp::StructSchema s, const SchemaPrinter& printer) {
  w.beginArray();
  for (auto f : s.getFields()) {
    const auto proto = f.getProto();
    w.beginObject().key("name").value(proto.getName().cStr());
    if (proto.isGroup()) {
      const auto group = f.getType().asStruct();
      const bool isUnion =
          group.getNonUnionFields().size() == 0 && group.getUnionFields().size() > 0;
      w.key("type").value(isUnion ? "union" : "group");
      w.key("fields");
      writeFields(w, group, printer);
    } else {
      w.key("ordinal").value(unsigned(proto.getOrdinal().getExplicit()));
      w.key("type").value(printer.typeName(f.getType()));
      if (auto d = SchemaPrinter::defaultValue(f)) w.key("default").value(*d);
    }
    if (proto.getDiscriminantValue() != 0xffff) w.key("union").value(true);
    w.endObject();
  }
  w.endArray();
}

void writeType(JsonWriter& w, capnp::Schema s, const SchemaPrinter& printer) {
  const auto proto = s.getProto();
  w.beginObject().key("name").value(printer.nameOf(s)).key("id").value(hexId(proto.getId()));
  if (proto.isStruct()) {
    w.key("kind").value("struct").key("fields");
    writeFields(w, s.asStruct(), printer);
  } else if (proto.isEnum()) {
    w.key("kind").value("enum").key("enumerants").beginArray();
    for (auto e : s.asEnum().getEnumerants()) {
      w.beginObject().key("name").value(e.getProto().getName().cStr());
      w.key("ordinal").value(unsigned(e.getOrdinal())).endObject();
    }
    w.endArray();
  } else {
    w.key("kind").value("interface").key("methods").beginArray();
    for (auto m : s.asInterface().getMethods()) {
      w.beginObject().key("name").value(m.getProto().getName().cStr());
      w.key("ordinal").value(unsigned(m.getOrdinal())).endObject();
    }
    w.endArray();
  }
  w.endObject();
}

void writeJson(JsonWriter& w, const std::string& id, const Known& k,
               const Result<ContractInfo>& contract) {
  w.beginObject();
  w.key("id").value(id).key("version").value(k.version.toString()).key("live").value(bool(k.live));
  w.key("provider").beginObject();
  if (k.live) {
    w.key("name").value(k.live->providerName).key("pid").value(int(k.live->providerPid));
    w.key("uid").value(unsigned(k.live->providerUid));
  } else {
    w.key("name").value(k.stored->providerName);
  }
  w.endObject();
  if (k.stored) {
    w.key("firstSeen").value(formatTime(k.stored->firstSeen, true));
    w.key("lastSeen").value(formatTime(k.stored->lastSeen, true));
  }
  w.key("displayName").value(k.live ? k.live->displayName : k.stored->displayName);
  w.key("description").value(k.live ? k.live->description : k.stored->description);
  w.key("interface").value(k.live ? k.live->interfaceName : k.stored->interfaceName);
  w.key("interfaceId").value(hexId(k.live ? k.live->interfaceId : k.stored->interfaceId));
  if (!contract.ok()) {
    w.key("schemaError").value(contract.status().toString());
    w.key("methods").beginArray();
    for (const auto& m : methodsOf(k)) {
      w.beginObject().key("name").value(m.name).key("ordinal").value(unsigned(m.ordinal));
      w.key("stream").value(m.stream).endObject();
    }
    w.endArray().endObject();
    return;
  }
  SchemaPrinter printer(contract->schema);
  const auto streams = streamOrdinals(contract->methods);
  w.key("methods").beginArray();
  for (auto m : contract->schema.getMethods()) {
    w.beginObject().key("name").value(m.getProto().getName().cStr());
    w.key("ordinal").value(unsigned(m.getOrdinal()));
    w.key("stream").value(streams.count(m.getOrdinal()) > 0);
    const auto params = m.getParamType();
    const auto results = m.getResultType();
    if (!SchemaPrinter::isImplicitParams(params)) w.key("paramsType").value(printer.nameOf(params));
    w.key("params");
    writeFields(w, params, printer);
    if (!SchemaPrinter::isImplicitParams(results)) {
      w.key("resultsType").value(printer.nameOf(results));
    }
    w.key("results");
    writeFields(w, results, printer);
    w.endObject();
  }
  w.endArray();
  w.key("types").beginArray();
  for (auto s : printer.declared()) {
    if (s.getProto().getId() != contract->schema.getProto().getId()) writeType(w, s, printer);
  }
  w.endArray();
  w.key("schema").value(printer.declarations(streams));
  w.endObject();
}

int run(const Command& cmd, Invocation& inv) {
  ParsedArgs args;
  if (auto rc = parseCommandLine(
          cmd, inv, {{"--json", false}, {"--pretty", false}, {"--compact", false}}, args)) {
    return *rc;
  }
  if (args.positional.size() != 1) return usageError(cmd, "needs one SERVICE[@RANGE]");
  const ServiceRef ref = splitServiceRef(args.positional[0]);
  auto range = VersionRange::parse(ref.range);
  if (!range.ok()) return usageError(cmd, range.status().message());
  Client* client = inv.client();
  if (client == nullptr) return kExitFailure;

  bool storeReadable = false;
  const std::vector<Known> all = knownVersions(*client, ref.id, storeReadable);
  std::vector<Known> chosen;
  for (const auto& k : all) {
    if (range->contains(k.version)) chosen.push_back(k);
  }
  if (all.empty()) {
    printFailure(cmd, "the broker knows no service '" + ref.id + "' (" +
                          (storeReadable ? "neither live nor stored" : "none live") +
                          "); `hms-ffi list` shows the live ones");
    return kExitFailure;
  }
  if (chosen.empty()) {
    printFailure(cmd, "no version of '" + ref.id + "' in range '" + ref.range +
                          "'; the broker knows " + versionList(all));
    return kExitFailure;
  }

  const bool json = args.has("--json");
  JsonWriter w(json && prettyOutput(args));
  if (json) w.beginArray();
  for (size_t i = 0; i < chosen.size(); ++i) {
    const Known& k = chosen[i];
    const auto contract = client->contract(ref.id, k.version);
    if (json) {
      writeJson(w, ref.id, k, contract);
    } else {
      if (i > 0) std::printf("\n");
      printText(ref.id, k, contract);
    }
  }
  if (json) std::printf("%s\n", w.endArray().str().c_str());
  return flushOutput() ? kExitOk : kExitFailure;
}

}  // namespace

const Command kDescribeCommand{
    "describe", "describe SERVICE[@RANGE] [--json]",
    "Every version of SERVICE the broker knows, live or stored, highest first.",
    "For each version: whether it is live (its provider, pid and uid) or offline (when and from\n"
    "which provider the broker last saw it), its display name and description, and its\n"
    "interface written as Cap'n Proto declarations: the methods, with the parameters and results\n"
    "written inline, stream methods marked '# stream', then every struct, enum and interface they\n"
    "reach. RANGE limits the versions, in the npm/Cargo notation: ^1.0, ~1.2, 1.x, '>=1.0 <2'.\n"
    "\n"
    "options:\n"
    "  --json       a JSON array with an object per version: id, version, live, provider,\n"
    "               firstSeen/lastSeen (stored versions), displayName, description, interface,\n"
    "               interfaceId, methods (name, ordinal, stream, params and results as field\n"
    "               lists: name, ordinal, type), types (the structs, enums and interfaces\n"
    "               reached), schema (the declarations as text)\n"
    "  --pretty, --compact\n"
    "               indent the JSON or not (default: indented when stdout is a terminal)\n"
    "\n"
    "exit status: 0, 1 when the broker knows no such service (or no version in RANGE) or cannot\n"
    "be reached, 2 for a command line that does not parse.\n",
    run};

}  // namespace hms::ffi::cli
