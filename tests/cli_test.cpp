// hms-ffi, the command-line tool, as users run it: the real binary against a real hms-ffid and
// the test service (or test topic publisher) on a private socket, over shared memory and over
// sockets. Also the Cap'n Proto declarations `describe` writes, on a schema richer than the
// test service's (unions, groups, enums, nested and explicit parameter structs).
#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <capnp/schema-parser.h>
#include <gtest/gtest.h>
#include <kj/filesystem.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "hms/ffi/client.hpp"
#include "schema_printer.hpp"
#include "support/process.hpp"

namespace hms::ffi {
namespace {

using testing::BrokerFixture;
using testing::startTestService;
using testing::Subprocess;
using testing::waitUntil;

const char* transportName(Transport t) {
  return t == Transport::kSocket ? "socket" : "shm";
}

std::string toolBinary() {
  return HMS_FFI_TOOL_BINARY;
}

// The exit status of a finished child, or -1 when it did not exit by itself.
int exitCode(int waitStatus) {
  return waitStatus != -1 && WIFEXITED(waitStatus) ? WEXITSTATUS(waitStatus) : -1;
}

// What a finished hms-ffi printed and how it exited.
struct Ran {
  int code = -1;
  std::string out;
  std::string err;
};

// Reads a child's stdout to its end (so that it never blocks on a full pipe), then its exit.
Ran finish(Subprocess& p, std::chrono::seconds timeout = std::chrono::seconds(60)) {
  (void)p.waitForLine("\x01never printed\x01", timeout);
  Ran r;
  r.code = exitCode(p.wait(timeout));
  r.out = p.output();
  r.err = p.errors();
  return r;
}

std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t nl = text.find('\n', at);
    out.push_back(text.substr(at, nl - at));
    if (nl == std::string::npos) break;
    at = nl + 1;
  }
  return out;
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

// Polls `cond`, which runs a process or two, every 50 ms until it holds or 20 s pass.
bool eventually(const std::function<bool()>& cond) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

// A JSON document parsed by Cap'n Proto's JSON codec (which throws on malformed text).
class Json {
 public:
  explicit Json(const std::string& text) {
    capnp::JsonCodec codec;
    root_ = message_.initRoot<capnp::JsonValue>();
    codec.decodeRaw(kj::arrayPtr(text.data(), text.size()), root_);
  }
  capnp::JsonValue::Reader root() { return root_.asReader(); }

  // The member `name` of object `v` (the test fails without it).
  static capnp::JsonValue::Reader member(capnp::JsonValue::Reader v, const char* name) {
    EXPECT_TRUE(v.isObject()) << "not an object where '" << name << "' was looked for";
    if (v.isObject()) {
      for (auto f : v.getObject()) {
        if (f.getName() == name) return f.getValue();
      }
    }
    ADD_FAILURE() << "no member '" << name << "'";
    static capnp::MallocMessageBuilder empty;
    return empty.initRoot<capnp::JsonValue>().asReader();
  }
  static std::string text(capnp::JsonValue::Reader v) {
    return v.isString() ? v.getString().cStr() : std::string("<not a string>");
  }

 private:
  capnp::MallocMessageBuilder message_;
  capnp::JsonValue::Builder root_ = nullptr;
};

// A private broker forced to the parameter's transport; every client (the tool, the service,
// the test's own) uses it too, through $HMS_FFI_TRANSPORT.
class Cli : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override { ::setenv("HMS_FFI_TRANSPORT", transportName(GetParam()), 1); }
  void TearDown() override { ::unsetenv("HMS_FFI_TRANSPORT"); }

  // hms-ffi --socket <broker> args..., started (read it with finish()).
  Subprocess start(std::vector<std::string> args) {
    args.insert(args.begin(), {toolBinary(), "--socket", broker.socket()});
    return Subprocess(args);
  }
  Ran run(std::vector<std::string> args) {
    auto p = start(std::move(args));
    return finish(p);
  }
  Subprocess service(std::vector<std::string> args = {}) {
    return startTestService(broker.socket(), args);
  }
  std::unique_ptr<Client> connect() {
    ClientOptions o;
    o.socketPath = broker.socket();
    return Client::connect(o).valueOrThrow();
  }
  // Makes the broker learn topic `id`'s message type (Tick): a publisher advertises it, then
  // leaves, so that the tool can become its publisher.
  void teachTopicType(const std::string& id) {
    Subprocess pub({testing::testTopicBinary(), "publish", broker.socket(), id, "--count", "0"});
    ASSERT_TRUE(pub.waitForLine("published")) << pub.output() << pub.errors();
    pub.stop();
    auto client = connect();
    ASSERT_TRUE(waitUntil([&] { return client->discoverTopics(id)->empty(); }));
  }

  BrokerFixture broker{{"--transport", transportName(GetParam())}};
};

// ---- call ---------------------------------------------------------------------------------------

TEST_P(Cli, Call_EchoesJson_InAndOut) {
  auto svc = service();
  auto r = run({"call", "hms.test", "echo", R"({"seq": "42", "payload": "aGk="})", "--compact"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"seq\":\"42\",\"payload\":\"aGk=\"}\n");

  auto pretty = run({"call", "hms.test@^1.0", "echo", "-d", R"({"seq": 7})", "--pretty"});
  ASSERT_EQ(pretty.code, 0) << pretty.err;
  EXPECT_TRUE(contains(pretty.out, "\n  \"seq\": \"7\"")) << pretty.out;
}

TEST_P(Cli, Call_ParamsFromAFile) {
  auto svc = service();
  const std::string file = broker.dir() + "/params.json";
  std::ofstream(file) << R"({"seq": "9", "payload": "AQI="})";
  auto r = run({"call", "hms.test", "echo", "-d", "@" + file, "--compact"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"seq\":\"9\",\"payload\":\"AQI=\"}\n");
}

TEST_P(Cli, Call_JsonThatDoesNotFit_Exits67_NamingTheField) {
  auto svc = service();
  auto wrongType = run({"call", "hms.test", "echo", R"({"seq": true})"});
  EXPECT_EQ(wrongType.code, 64 + 3) << wrongType.err;
  EXPECT_TRUE(contains(wrongType.err, "ERROR: INVALID_ARGUMENT: seq:")) << wrongType.err;
  EXPECT_TRUE(wrongType.out.empty()) << wrongType.out;

  auto unknownField = run({"call", "hms.test", "echo", R"({"seq": "1", "paylod": ""})"});
  EXPECT_EQ(unknownField.code, 64 + 3) << unknownField.err;
  EXPECT_TRUE(contains(unknownField.err, "paylod")) << unknownField.err;

  auto malformed = run({"call", "hms.test", "echo", R"({"seq": )"});
  EXPECT_EQ(malformed.code, 64 + 3) << malformed.err;
  EXPECT_TRUE(contains(malformed.err, "INVALID_ARGUMENT")) << malformed.err;
}

TEST_P(Cli, Call_UnknownMethod_Exits76_ListingTheMethods) {
  auto svc = service();
  auto r = run({"call", "hms.test", "nosuch", "{}"});
  EXPECT_EQ(r.code, 64 + 12) << r.err;
  EXPECT_TRUE(contains(r.err, "ERROR: UNIMPLEMENTED:")) << r.err;
  EXPECT_TRUE(contains(r.err, "echo")) << r.err;
}

TEST_P(Cli, Call_ServiceError_ExitsWith64PlusItsCode_WithMessageSourceAndDetails) {
  auto svc = service();
  auto r = run({"call", "hms.test", "fail", R"({"code": 7, "message": "not for you"})"});
  EXPECT_EQ(r.code, 64 + 7) << r.err;
  EXPECT_TRUE(contains(r.err, "ERROR: PERMISSION_DENIED: not for you")) << r.err;
  EXPECT_TRUE(contains(r.err, "source: hms.test")) << r.err;
  EXPECT_TRUE(contains(r.err, "hint: asked to fail")) << r.err;

  auto missing = run({"call", "hms.nothing", "echo", "{}"});
  EXPECT_EQ(missing.code, 64 + 5) << missing.err;
  EXPECT_TRUE(contains(missing.err, "ERROR: NOT_FOUND:")) << missing.err;

  auto noVersion = run({"call", "hms.test@^2.0", "echo", "{}"});
  EXPECT_EQ(noVersion.code, 64 + 5) << noVersion.err;
}

TEST_P(Cli, Call_StreamMethod_PrintsOneJsonLinePerItem) {
  auto svc = service();
  auto r = run({"call", "hms.test", "count", R"({"from": "10", "n": "5"})"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto lines = linesOf(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;
  for (size_t i = 0; i < lines.size(); ++i) {
    Json item(lines[i]);
    EXPECT_EQ(Json::text(Json::member(item.root(), "value")), std::to_string(10 + i));
  }
}

TEST_P(Cli, Call_StreamEndedByTheServiceWithAnError_PrintsTheItemsThenExitsWithItsCode) {
  auto svc = service();
  auto r = run({"call", "hms.test", "count", R"({"n": "10", "failAt": "3"})"});
  EXPECT_EQ(r.code, 64 + 10) << r.err;  // ABORTED
  EXPECT_EQ(linesOf(r.out).size(), 3u) << r.out;
  EXPECT_TRUE(contains(r.err, "ERROR: ABORTED: asked to fail at 3")) << r.err;
}

TEST_P(Cli, Call_CtrlC_CancelsTheStream_AndTheServiceSeesIt) {
  auto svc = service();
  auto stream = start({"call", "hms.test", "count", R"({"n": "1000000000", "delayUs": 1000})"});
  ASSERT_TRUE(stream.waitForLine("value")) << stream.errors();
  stream.signal(SIGINT);
  EXPECT_EQ(exitCode(stream.wait()), 130) << stream.errors();
  // The handler learns of the cancellation when its next write fails.
  EXPECT_TRUE(eventually([&] {
    auto stats = run({"call", "hms.test", "stats", "{}"});
    return stats.code == 0 &&
           Json::text(Json::member(Json(stats.out).root(), "streamsCancelled")) == "1";
  }));
}

TEST_P(Cli, Call_OneWay_ExitsZeroOnceSent) {
  auto svc = service();
  auto r = run({"call", "hms.test", "note", R"({"seq": "77"})", "--oneway"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  // The tool exits right after sending: the service still runs what was acknowledged.
  EXPECT_TRUE(eventually([&] {
    auto stats = run({"call", "hms.test", "stats", "{}"});
    return stats.code == 0 && contains(stats.out, "\"77\"");
  }));
}

TEST_P(Cli, Call_Timeout_IsDeadlineExceeded_Exit68) {
  auto svc = service();
  auto r = run({"call", "hms.test", "sleep", R"({"ms": 3000})", "--timeout", "100ms"});
  EXPECT_EQ(r.code, 64 + 4) << r.err;
  EXPECT_TRUE(contains(r.err, "ERROR: DEADLINE_EXCEEDED:")) << r.err;
}

// ---- describe and list --------------------------------------------------------------------------

TEST_P(Cli, Describe_PrintsTheInterfaceAsCapnProtoDeclarations) {
  auto svc = service({"--version", "1.2.0"});
  auto r = run({"describe", "hms.test"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(
      r.out, "# hms.test 1.2.0: live, provider test-service (pid " + std::to_string(svc.pid())))
      << r.out;
  EXPECT_TRUE(contains(r.out, "interface TestService @0x")) << r.out;
  EXPECT_TRUE(contains(r.out,
                       "\n  echo @0 (seq :UInt64, payload :Data) -> (seq :UInt64, "
                       "payload :Data);\n"))
      << r.out;
  // A method too long for a line breaks before its results.
  EXPECT_TRUE(contains(r.out, "\n  stats @7 ()\n      -> (notes :List(UInt64), streamsCancelled "))
      << r.out;
  EXPECT_TRUE(contains(r.out, "-> (value :UInt64, payload :Data);  # stream\n")) << r.out;
}

TEST_P(Cli, Describe_Json_ParsesWithMethodsAndTheirFields) {
  auto svc = service({"--version", "1.2.0"});
  auto r = run({"describe", "hms.test", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  Json j(r.out);
  ASSERT_TRUE(j.root().isArray()) << r.out;
  ASSERT_EQ(j.root().getArray().size(), 1u) << r.out;
  auto v = j.root().getArray()[0];
  EXPECT_EQ(Json::text(Json::member(v, "version")), "1.2.0");
  EXPECT_TRUE(Json::member(v, "live").getBoolean());
  EXPECT_EQ(Json::member(Json::member(v, "provider"), "pid").getNumber(), double(svc.pid()));
  bool sawCount = false;
  for (auto m : Json::member(v, "methods").getArray()) {
    if (Json::text(Json::member(m, "name")) != "count") continue;
    sawCount = true;
    EXPECT_TRUE(Json::member(m, "stream").getBoolean());
    auto params = Json::member(m, "params").getArray();
    ASSERT_EQ(params.size(), 5u);
    EXPECT_EQ(Json::text(Json::member(params[0], "name")), "from");
    EXPECT_EQ(Json::text(Json::member(params[0], "type")), "UInt64");
  }
  EXPECT_TRUE(sawCount) << r.out;
}

TEST_P(Cli, Describe_AfterTheProviderStopped_ShowsItOffline) {
  { auto svc = service({"--version", "1.0.0"}); }  // stopped
  auto client = connect();
  ASSERT_TRUE(waitUntil([&] { return client->discover("hms.test")->empty(); }));
  auto r = run({"describe", "hms.test"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "# hms.test 1.0.0: offline (last seen ")) << r.out;
  EXPECT_TRUE(contains(r.out, "from test-service)")) << r.out;
  EXPECT_TRUE(contains(r.out, "  echo @0 (seq :UInt64, payload :Data)")) << r.out;

  auto json = run({"describe", "hms.test", "--json"});
  ASSERT_EQ(json.code, 0) << json.err;
  Json j(json.out);
  EXPECT_FALSE(Json::member(j.root().getArray()[0], "live").getBoolean());

  // A range the stored version is outside of finds nothing, and says what there is.
  auto outside = run({"describe", "hms.test@^2"});
  EXPECT_EQ(outside.code, 1);
  EXPECT_TRUE(contains(outside.err, "1.0.0 (offline)")) << outside.err;
}

TEST_P(Cli, Describe_LiveAndStoredVersions_HighestFirst_FilteredByRange) {
  { auto old = service({"--version", "1.0.0"}); }
  auto client = connect();
  ASSERT_TRUE(waitUntil([&] { return client->discover("hms.test")->empty(); }));
  auto svc = service({"--version", "1.1.0", "--version", "2.0.0"});
  auto all = run({"describe", "hms.test"});
  ASSERT_EQ(all.code, 0) << all.err;
  const auto v2 = all.out.find("# hms.test 2.0.0: live");
  const auto v11 = all.out.find("# hms.test 1.1.0: live");
  const auto v10 = all.out.find("# hms.test 1.0.0: offline");
  ASSERT_NE(v2, std::string::npos) << all.out;
  ASSERT_NE(v11, std::string::npos) << all.out;
  ASSERT_NE(v10, std::string::npos) << all.out;
  EXPECT_LT(v2, v11);
  EXPECT_LT(v11, v10);

  auto ones = run({"describe", "hms.test@^1.0"});
  ASSERT_EQ(ones.code, 0) << ones.err;
  EXPECT_FALSE(contains(ones.out, "2.0.0")) << ones.out;
  EXPECT_TRUE(contains(ones.out, "1.1.0")) << ones.out;
  EXPECT_TRUE(contains(ones.out, "1.0.0")) << ones.out;
}

TEST_P(Cli, Describe_UnknownService_Exits1) {
  auto r = run({"describe", "hms.nothing"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "hms.nothing")) << r.err;
}

TEST_P(Cli, List_Json_NamesEachServiceItsMethodsAndProvider) {
  auto svc = service({"--version", "2.5.0"});
  auto r = run({"list", "hms.", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  Json j(r.out);
  ASSERT_EQ(j.root().getArray().size(), 1u) << r.out;
  auto s = j.root().getArray()[0];
  EXPECT_EQ(Json::text(Json::member(s, "id")), "hms.test");
  EXPECT_EQ(Json::text(Json::member(s, "version")), "2.5.0");
  EXPECT_EQ(Json::text(Json::member(s, "interface")), "TestService");
  auto provider = Json::member(s, "provider");
  EXPECT_EQ(Json::member(provider, "pid").getNumber(), double(svc.pid()));
  EXPECT_EQ(Json::text(Json::member(provider, "name")), "test-service");
  auto methods = Json::member(s, "methods").getArray();
  ASSERT_EQ(methods.size(), 8u);
  EXPECT_EQ(Json::text(Json::member(methods[5], "name")), "count");
  EXPECT_TRUE(Json::member(methods[5], "stream").getBoolean());

  auto none = run({"list", "nothing.", "--json"});
  ASSERT_EQ(none.code, 0) << none.err;
  EXPECT_EQ(none.out, "[]\n");
}

// ---- pub and sub --------------------------------------------------------------------------------

TEST_P(Cli, PubSub_JsonRoundTrip_ThroughTheTool) {
  ASSERT_NO_FATAL_FAILURE(teachTopicType("cli.ticks"));
  auto sub = start({"sub", "cli.ticks", "--wait-publisher", "60s", "--seq"});
  auto pub = run({"pub", "cli.ticks", R"({"seq": "7", "payload": "AQID"})", "--wait-subscribers",
                  "1", "--wait-timeout", "60s"});
  ASSERT_EQ(pub.code, 0) << pub.err;
  // The publisher left after publishing: the subscriber prints the message, then ends with 0.
  auto got = finish(sub);
  EXPECT_EQ(got.code, 0) << got.err;
  EXPECT_EQ(got.out, "{\"seq\":1,\"missed\":0,\"message\":{\"seq\":\"7\",\"payload\":\"AQID\"}}\n");
}

TEST_P(Cli, Pub_Lines_PublishesEachLine_AndSubCountStops) {
  ASSERT_NO_FATAL_FAILURE(teachTopicType("cli.lines"));
  const std::string file = broker.dir() + "/lines.json";
  std::ofstream(file) << "{\"seq\": \"1\"}\n\n{\"seq\": \"2\"}\n{\"seq\": \"3\"}\n";
  auto sub = start({"sub", "cli.lines", "--wait-publisher", "60s", "--count", "2"});
  auto all = start({"sub", "cli.lines", "--wait-publisher", "60s"});
  auto pub = run({"pub", "cli.lines", "--lines", "-d", "@" + file, "--wait-subscribers", "2",
                  "--wait-timeout", "60s"});
  ASSERT_EQ(pub.code, 0) << pub.err;
  auto two = finish(sub);
  EXPECT_EQ(two.code, 0) << two.err;
  EXPECT_EQ(two.out, "{\"seq\":\"1\"}\n{\"seq\":\"2\"}\n");
  auto three = finish(all);
  EXPECT_EQ(three.code, 0) << three.err;
  EXPECT_EQ(linesOf(three.out).size(), 3u) << three.out;
}

TEST_P(Cli, Pub_BadLine_Exits67_NamingTheLine) {
  ASSERT_NO_FATAL_FAILURE(teachTopicType("cli.bad"));
  const std::string file = broker.dir() + "/bad.json";
  std::ofstream(file) << "{\"seq\": \"1\"}\n{\"sequence\": 2}\n";
  auto r = run({"pub", "cli.bad", "--lines", "-d", "@" + file});
  EXPECT_EQ(r.code, 64 + 3) << r.err;
  EXPECT_TRUE(contains(r.err, "ERROR: INVALID_ARGUMENT: line 2:")) << r.err;
  EXPECT_TRUE(contains(r.err, "sequence")) << r.err;
}

TEST_P(Cli, Pub_WhileATopicHasAPublisher_IsAlreadyExists_Exit70) {
  Subprocess owner(
      {testing::testTopicBinary(), "publish", broker.socket(), "cli.owned", "--count", "0"});
  ASSERT_TRUE(owner.waitForLine("published")) << owner.output() << owner.errors();
  auto r = run({"pub", "cli.owned", R"({"seq": "1"})"});
  EXPECT_EQ(r.code, 64 + 6) << r.err;
  EXPECT_TRUE(contains(r.err, "ERROR: ALREADY_EXISTS:")) << r.err;
}

TEST_P(Cli, Pub_TopicNeverAdvertised_IsNotFound_Exit69) {
  auto r = run({"pub", "cli.unknown", "{}"});
  EXPECT_EQ(r.code, 64 + 5) << r.err;
  EXPECT_TRUE(contains(r.err, "ERROR: NOT_FOUND:")) << r.err;
}

TEST_P(Cli, Sub_NoMessageWithinTimeout_Exits68) {
  // A publisher that publishes nothing and stays: no message can come.
  Subprocess quiet(
      {testing::testTopicBinary(), "publish", broker.socket(), "cli.quiet", "--count", "0"});
  ASSERT_TRUE(quiet.waitForLine("published")) << quiet.output() << quiet.errors();
  auto r = run({"sub", "cli.quiet", "--timeout", "200ms"});
  EXPECT_EQ(r.code, 64 + 4) << r.err;
  EXPECT_TRUE(contains(r.err, "ERROR: DEADLINE_EXCEEDED:")) << r.err;
}

TEST_P(Cli, Sub_CtrlC_StopsIt) {
  Subprocess quiet(
      {testing::testTopicBinary(), "publish", broker.socket(), "cli.idle", "--count", "0"});
  ASSERT_TRUE(quiet.waitForLine("published")) << quiet.output() << quiet.errors();
  auto sub = start({"sub", "cli.idle"});
  auto client = connect();
  // Attached once the registry counts it.
  ASSERT_TRUE(waitUntil([&] {
    auto t = client->discoverTopics("cli.idle");
    return t.ok() && !t->empty() && (*t)[0].subscribers == 1;
  }));
  sub.signal(SIGINT);
  EXPECT_EQ(exitCode(sub.wait()), 130) << sub.errors();
}

INSTANTIATE_TEST_SUITE_P(Transports, Cli,
                         ::testing::Values(Transport::kSharedMemory, Transport::kSocket),
                         [](const auto& info) { return std::string(transportName(info.param)); });

// ---- stats --------------------------------------------------------------------------------------

TEST_P(Cli, Stats_ShowsTheCallsMade_PerMethod) {
  auto svc = service();
  for (int i = 0; i < 3; ++i) {
    auto c = run({"call", "hms.test", "echo", R"({"seq": 1})", "--compact"});
    ASSERT_EQ(c.code, 0) << c.err;
  }
  // The service counts a call as it answers: wait until the broker has all 3 of both sides.
  auto client = connect();
  ASSERT_TRUE(waitUntil([&] {
    auto m = client->metrics();
    if (!m.ok()) return false;
    for (const auto& mm : m->methods) {
      if (mm.method == "echo") return mm.handled[0] == 3;
    }
    return false;
  }));
  auto r = run({"stats", "--json", "--compact", "--interval", "0.2"});
  ASSERT_EQ(r.code, 0) << r.err;
  Json j(r.out);
  auto methods = Json::member(j.root(), "methods");
  ASSERT_TRUE(methods.isArray()) << r.out;
  bool seen = false;
  for (auto m : methods.getArray()) {
    if (Json::text(Json::member(m, "method")) != "echo") continue;
    seen = true;
    EXPECT_EQ(Json::text(Json::member(m, "service")), "hms.test");
    EXPECT_EQ(Json::member(m, "calls_total").getNumber(), 3) << r.out;
    EXPECT_EQ(Json::member(m, "errors_total").getNumber(), 0) << r.out;
    EXPECT_EQ(Json::member(m, "handled_total").getNumber(), 3) << r.out;
    EXPECT_GT(Json::member(m, "max_ns").getNumber(), 0) << r.out;
  }
  EXPECT_TRUE(seen) << r.out;

  auto table = run({"stats", "--interval", "0.2"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_TRUE(contains(table.out, "hms.test")) << table.out;
  EXPECT_TRUE(contains(table.out, "echo")) << table.out;
}

// ---- no broker needed
// -----------------------------------------------------------------------------

Ran runAlone(std::vector<std::string> args) {
  args.insert(args.begin(), toolBinary());
  Subprocess p(args);
  return finish(p);
}

TEST(CliUsage, Help_ListsEveryCommandAndTheExitStatuses) {
  auto r = runAlone({"--help"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* cmd : {"list", "describe", "call", "topics", "pub", "sub"}) {
    EXPECT_TRUE(contains(r.out, std::string("\n  ") + cmd + " ")) << cmd << "\n" << r.out;
  }
  EXPECT_TRUE(contains(r.out, "64+CODE")) << r.out;

  auto call = runAlone({"call", "--help"});
  ASSERT_EQ(call.code, 0) << call.err;
  EXPECT_TRUE(contains(call.out, "--timeout")) << call.out;
  EXPECT_TRUE(contains(call.out, "76 UNIMPLEMENTED")) << call.out;
}

TEST(CliUsage, BadCommandLines_Exit2) {
  EXPECT_EQ(runAlone({"call"}).code, 2);
  EXPECT_EQ(runAlone({"call", "hms.test"}).code, 2);
  EXPECT_EQ(runAlone({"call", "hms.test", "echo", "--timeout", "soon"}).code, 2);
  EXPECT_EQ(runAlone({"call", "hms.test", "echo", "{}", "-d", "{}"}).code, 2);
  EXPECT_EQ(runAlone({"sub", "t", "--count", "many"}).code, 2);
  EXPECT_EQ(runAlone({"describe", "hms.test@^^1"}).code, 2);
  EXPECT_EQ(runAlone({"frobnicate"}).code, 2);
  auto r = runAlone({"list", "--bogus"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.err, "--bogus")) << r.err;
}

TEST(CliUsage, NoBroker_Exits1_SayingWhy) {
  auto r =
      runAlone({"--socket", "/nonexistent/hms-ffi/broker.sock", "call", "hms.test", "echo", "{}"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "/nonexistent/hms-ffi/broker.sock")) << r.err;
}

// ---- the declarations describe writes -----------------------------------------------------------

constexpr char kDebateSchema[] = R"(@0xd2a1c4e5f6a7b8c9;
interface DebateService @0x9d1c5e4b0a7f3e21 {
  evaluatePolicy @0 (policyId :Text, facts :List(Fact), maxRounds :UInt32 = 3)
      -> (decision :Decision, rounds :List(Round));
  watch @1 WatchRequest -> Event;
  subscribe @2 (watcher :Watcher) -> ();
  struct Fact {
    key @0 :Text;
    value @1 :Text;
  }
}
struct WatchRequest {
  policyId @0 :Text;
}
struct Event {
  at @0 :UInt64;
  union {
    started @1 :Void;
    decided @2 :Decision;
  }
  detail :group {
    note @3 :Text = "none";
    weight @4 :Float64 = 0.5;
  }
  outcome :union {
    ok @5 :Bool;
    error @6 :Text;
  }
}
enum Decision {
  approve @0;
  reject @1;
  defer @2;
}
struct Round {
  n @0 :UInt32;
  facts @1 :List(DebateService.Fact);
  kind @2 :Kind;
  enum Kind {
    opening @0;
    closing @1;
  }
}
interface Watcher @0xb3c4d5e6f7a8b9c1 {
  onEvent @0 (event :Event) -> ();
}
)";

// Parses `text` as a Cap'n Proto file and returns its interface `name`; `parser` keeps it.
capnp::InterfaceSchema parseInterface(capnp::SchemaParser& parser, const std::string& text,
                                      const char* name) {
  auto dir = kj::newInMemoryDirectory(kj::nullClock());
  dir->openFile(kj::Path("debate.capnp"), kj::WriteMode::CREATE)
      ->writeAll(kj::StringPtr(text.c_str()));
  return parser.parseFromDirectory(*dir, kj::Path("debate.capnp"), nullptr)
      .getNested(name)
      .asInterface();
}

constexpr char kDebateDeclarations[] = R"(interface DebateService @0x9d1c5e4b0a7f3e21 {
  evaluatePolicy @0 (policyId :Text, facts :List(Fact), maxRounds :UInt32 = 3)
      -> (decision :Decision, rounds :List(Round));
  watch @1 WatchRequest -> Event;  # stream
  subscribe @2 (watcher :Watcher) -> ();

  struct Fact {
    key @0 :Text;
    value @1 :Text;
  }
}

enum Decision {
  approve @0;
  reject @1;
  defer @2;
}

struct Round {
  n @0 :UInt32;
  facts @1 :List(DebateService.Fact);
  kind @2 :Kind;

  enum Kind {
    opening @0;
    closing @1;
  }
}

struct WatchRequest {
  policyId @0 :Text;
}

struct Event {
  at @0 :UInt64;
  detail :group {
    note @3 :Text = "none";
    weight @4 :Float64 = 0.5;
  }
  outcome :union {
    ok @5 :Bool;
    error @6 :Text;
  }
  union {
    started @1 :Void;
    decided @2 :Decision;
  }
}

interface Watcher @0xb3c4d5e6f7a8b9c1 {
  onEvent @0 (event :Event) -> ();
}
)";

TEST(CliSchemaPrinter, WritesMethodsInlineAndEveryTypeReached) {
  capnp::SchemaParser parser;
  const auto iface = parseInterface(parser, kDebateSchema, "DebateService");
  cli::SchemaPrinter printer(iface);
  EXPECT_EQ(printer.declarations({1}), kDebateDeclarations);
  EXPECT_EQ(printer.typeName(iface.getMethods()[0].getParamType().getFields()[1].getType()),
            "List(DebateService.Fact)");
}

TEST(CliSchemaPrinter, ItsDeclarationsParseBackToTheSameDeclarations) {
  capnp::SchemaParser first, second;
  const std::string printed =
      cli::SchemaPrinter(parseInterface(first, kDebateSchema, "DebateService")).declarations();
  const auto again = parseInterface(second, "@0xe3b2d5f6a7b8c9d1;\n" + printed, "DebateService");
  EXPECT_EQ(cli::SchemaPrinter(again).declarations(), printed);
}

}  // namespace
}  // namespace hms::ffi
