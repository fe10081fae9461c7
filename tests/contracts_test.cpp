// Contracts end to end (docs/contracts.md): a real hms-ffid with its contract store, services in
// processes of their own, JSON calls, streams and topics, over shared memory and over sockets.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "codec.hpp"
#include "hms/ffi/client.hpp"
#include "hms/ffi/control.capnp.h"
#include "hms/ffi/json.hpp"
#include "os.hpp"
#include "support/process.hpp"
#include "test.capnp.h"

namespace hms::ffi {
namespace {

using testing::BrokerFixture;
using testing::startTestService;
using testing::Subprocess;
using testing::waitUntil;

class Contracts : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { ::setenv("HMS_FFI_TRANSPORT", GetParam(), 1); }
  void TearDown() override { ::unsetenv("HMS_FFI_TRANSPORT"); }
  std::unique_ptr<Client> connect() {
    ClientOptions o;
    o.socketPath = broker.socket();
    auto c = Client::connect(o);
    EXPECT_TRUE(c.ok()) << c.status().toString();
    return std::move(c).valueOrThrow();
  }
  // Waits until `id` at `version` is live in the registry.
  bool live(Client& c, const std::string& id, const std::string& version) {
    return waitUntil([&] {
      auto all = c.discover(id);
      if (!all.ok()) return false;
      for (const auto& s : *all) {
        if (s.version.toString() == version) return true;
      }
      return false;
    });
  }
  BrokerFixture broker;
};

INSTANTIATE_TEST_SUITE_P(Transports, Contracts, ::testing::Values("shm", "socket"));

// What a registration carries is what getSchema gives back: the interface with every method,
// loaded into a schema a caller without generated code can use.
TEST_P(Contracts, Registration_CarriesItsSchema_GetSchemaReturnsIt) {
  auto svc = startTestService(broker.socket(), {"--version", "1.2.0"});
  auto c = connect();
  ASSERT_TRUE(live(*c, "hms.test", "1.2.0"));
  auto contract = c->contract("hms.test", Version{1, 2, 0});
  ASSERT_TRUE(contract.ok()) << contract.status().toString();
  EXPECT_EQ(contract->interfaceId, capnp::typeId<test::TestService>());
  auto expected = capnp::Schema::from<test::TestService>().getMethods();
  ASSERT_EQ(contract->schema.getMethods().size(), expected.size());
  auto echo = contract->schema.getMethodByName("echo");
  EXPECT_EQ(echo.getParamType().getProto().getId(), capnp::typeId<test::TestService::EchoParams>());
  EXPECT_TRUE(echo.getParamType().getFieldByName("payload").getType().isData());
  bool countIsStream = false;
  for (const auto& m : contract->methods) {
    if (m.name == "count") countIsStream = m.stream;
  }
  EXPECT_TRUE(countIsStream) << "the registration says which methods are streams";
  EXPECT_FALSE(contract->providerName.empty());

  auto missing = c->contract("hms.test", Version{9, 0, 0});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("1.2.0"), std::string::npos)
      << "NOT_FOUND names the versions the broker knows: " << missing.status().message();
}

// The store outlives the provider and the broker: after a kill -9 and a restart, the contract of
// a service nobody provides any more is still there, schema included.
TEST_P(Contracts, Contract_SurvivesBrokerRestart_AfterItsProviderLeft) {
  std::chrono::system_clock::time_point stopping;
  {
    auto svc = startTestService(broker.socket(), {"--version", "1.0.0", "--version", "1.1.0"});
    auto c = connect();
    ASSERT_TRUE(live(*c, "hms.test", "1.1.0"));
    stopping = std::chrono::system_clock::now() - std::chrono::milliseconds(1);
    svc.stop();
    ASSERT_TRUE(waitUntil([&] { return c->discover("hms.test")->empty(); }));
  }
  broker.kill9();
  broker.start();
  auto c = connect();
  auto known = c->contracts("hms.");
  ASSERT_TRUE(known.ok()) << known.status().toString();
  std::vector<std::string> versions;
  for (const auto& k : *known) versions.push_back(k.id + " " + k.version.toString());
  EXPECT_EQ(versions, (std::vector<std::string>{"hms.test 1.0.0", "hms.test 1.1.0"}));
  EXPECT_TRUE(c->discover("hms.test")->empty()) << "nothing is live";
  auto contract = c->contract("hms.test", Version{1, 1, 0});
  ASSERT_TRUE(contract.ok()) << contract.status().toString();
  EXPECT_EQ(contract->schema.getMethods().size(),
            capnp::Schema::from<test::TestService>().getMethods().size());
  EXPECT_LE(contract->firstSeen, contract->lastSeen);
  EXPECT_GE(contract->lastSeen, stopping) << "last seen: when its provider left";
}

// A different interface registered under a known id and major is not a compatible evolution of
// the contract the store remembers (OtherService lacks every TestService method), even with the
// first provider gone and the broker restarted; a new major may change anything.
TEST_P(Contracts, IncompatibleRegistration_IsRefused_AgainstTheStoredHistory) {
  {
    auto svc = startTestService(broker.socket(), {"--version", "1.0.0"});
    auto c = connect();
    ASSERT_TRUE(live(*c, "hms.test", "1.0.0"));
  }
  broker.kill9();
  broker.start();
  auto c = connect();
  ServiceDefinition<test::OtherService> other;
  other.on<&test::OtherService::Client::pingRequest>(
      [](CallContext&, auto, auto) { return Status(); });
  auto refused = c->serve("hms.test", Version{1, 1, 0}, other);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("1.0.0"), std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("1.1.0"), std::string::npos)
      << refused.status().message();
  EXPECT_TRUE(c->discover("hms.test")->empty()) << "a refused registration is not live";
  // The same version again with another contract: the reason says to give it a new version.
  auto same = c->serve("hms.test", Version{1, 0, 0}, other);
  ASSERT_FALSE(same.ok());
  EXPECT_EQ(same.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(same.status().message().find("registered before with another contract"),
            std::string::npos)
      << same.status().message();

  auto major = c->serve("hms.test", Version{2, 0, 0}, other);
  ASSERT_TRUE(major.ok()) << major.status().toString();
}

// kill -9 of the broker while a provider registers one version after another: whatever the
// restarted broker remembers is whole (each contract loads, with every method).
TEST_P(Contracts, BrokerKilledDuringRegistrations_StoreHoldsOnlyWholeContracts) {
  std::vector<std::string> args;
  for (int i = 0; i < 150; ++i) {
    args.push_back("--version");
    args.push_back("1.0." + std::to_string(i));
  }
  {
    std::vector<std::string> argv = {testing::testServiceBinary(), "--socket", broker.socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    Subprocess svc(argv);
    auto c = connect();
    // Kill once registrations are under way (some stored, most still to come).
    ASSERT_TRUE(waitUntil([&] {
      auto all = c->discover("hms.test");
      return all.ok() && all->size() >= 5;
    }));
    broker.kill9();
    svc.signal(SIGKILL);  // before it can register again with the next broker
    ASSERT_NE(svc.wait(), -1);
    broker.start();
  }
  auto c = connect();
  auto known = c->contracts("hms.test");
  ASSERT_TRUE(known.ok()) << known.status().toString();
  EXPECT_GE(known->size(), 5u);
  const size_t methods = capnp::Schema::from<test::TestService>().getMethods().size();
  for (const auto& k : *known) {
    auto contract = c->contract(k.id, k.version);
    ASSERT_TRUE(contract.ok()) << k.version.toString() << ": " << contract.status().toString();
    EXPECT_EQ(contract->schema.getMethods().size(), methods) << k.version.toString();
  }
}

// A store the broker cannot use stops it at start, naming the file and what to do; it does not
// run without the history it would check registrations against.
TEST(ContractStoreAtStart, CorruptDatabase_StopsTheBroker_NamingTheFileAndWhatToDo) {
  char tmpl[] = "/tmp/hms-ffi-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  std::filesystem::create_directories(dir + "/state");
  {
    std::ofstream garbage(dir + "/state/contracts.db");
    for (int i = 0; i < 512; ++i) garbage << "this is not a database ";
  }
  Subprocess broker(
      {testing::brokerBinary(), "--socket", dir + "/broker.sock", "--state-dir", dir + "/state"});
  const int status = broker.wait();
  const std::string errors = broker.errors();
  std::filesystem::remove_all(dir);
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << errors;
  EXPECT_NE(errors.find(dir + "/state/contracts.db"), std::string::npos) << errors;
  EXPECT_NE(errors.find(":memory:"), std::string::npos) << "says what to do: " << errors;
}

// ---- JSON calls --------------------------------------------------------------------------------

class JsonCalls : public Contracts {
 protected:
  void SetUp() override {
    Contracts::SetUp();
    svc = startTestService(broker.socket(), {"--version", "1.0.0"});
    client = connect();
    ASSERT_TRUE(live(*client, "hms.test", "1.0.0"));
    auto s = client->bindJson("hms.test", "^1.0");
    ASSERT_TRUE(s.ok()) << s.status().toString();
    stub.emplace(std::move(*s));
  }
  Subprocess svc;
  std::unique_ptr<Client> client;
  std::optional<JsonStub> stub;
};

INSTANTIATE_TEST_SUITE_P(Transports, JsonCalls, ::testing::Values("shm", "socket"));

TEST_P(JsonCalls, Call_TakesJsonAndGivesJson) {
  // 64-bit integers come back as strings (proto3's mapping); Data as base64.
  auto r = stub->call("echo", R"({"seq": 42, "payload": "aGVsbG8="})");
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(*r, R"({"seq":"42","payload":"aGVsbG8="})");
  auto who = stub->call("whoami", "{}");
  ASSERT_TRUE(who.ok()) << who.status().toString();
  EXPECT_NE(who->find(R"("version":"1.0.0")"), std::string::npos) << *who;
}

TEST_P(JsonCalls, CallJson_BindsCallsAndCloses_InOneStep) {
  auto r = client->callJson("hms.test", "^1.0", "echo", R"({"seq": 3})");
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_NE(r->find(R"("seq":"3")"), std::string::npos) << *r;
  auto none = client->callJson("hms.nothing", "*", "echo", "{}");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

TEST_P(JsonCalls, BadJson_IsInvalidArgumentNamingTheField_AndNothingIsSent) {
  auto wrongType = stub->call("echo", R"({"seq": "forty-two"})");
  ASSERT_FALSE(wrongType.ok());
  EXPECT_EQ(wrongType.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrongType.status().message().find("seq"), std::string::npos)
      << wrongType.status().message();
  auto unknown = stub->call("echo", R"({"seq": 1, "sequence": 2})");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("sequence"), std::string::npos)
      << unknown.status().message();
  auto syntax = stub->call("echo", R"({"seq": )");
  ASSERT_FALSE(syntax.ok());
  EXPECT_EQ(syntax.status().code(), StatusCode::kInvalidArgument);
  auto range = stub->call("sleep", R"({"ms": 4294967296})");
  ASSERT_FALSE(range.ok());
  EXPECT_EQ(range.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(range.status().message().find("ms"), std::string::npos) << range.status().message();
  // The channel is still good: the refused calls left nothing half-built in the ring.
  auto r = stub->call("echo", R"({"seq": 7})");
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_NE(r->find(R"("seq":"7")"), std::string::npos) << *r;
}

TEST_P(JsonCalls, UnknownMethod_IsUnimplemented_AndServiceErrorsKeepTheirCode) {
  auto unknown = stub->call("nope", "{}");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(unknown.status().message().find("echo"), std::string::npos)
      << "the error lists the methods there are: " << unknown.status().message();
  auto failed = stub->call("fail", R"({"code": 5, "message": "no such patient"})");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kNotFound);
  EXPECT_NE(failed.status().message().find("no such patient"), std::string::npos);
  auto streamAsCall = stub->call("count", R"({"n": 3})");
  ASSERT_FALSE(streamAsCall.ok());
  EXPECT_EQ(streamAsCall.status().code(), StatusCode::kFailedPrecondition);
}

TEST_P(JsonCalls, Stream_GivesOneJsonItemPerItem) {
  auto s = stub->openStream("count", R"({"from": 10, "n": 5})");
  ASSERT_TRUE(s.ok()) << s.status().toString();
  std::vector<std::string> items;
  while (s->next()) items.push_back(s->item());
  EXPECT_TRUE(s->status().ok()) << s->status().toString();
  ASSERT_EQ(items.size(), 5u);
  EXPECT_NE(items[0].find(R"("value":"10")"), std::string::npos) << items[0];
  EXPECT_NE(items[4].find(R"("value":"14")"), std::string::npos) << items[4];
}

TEST_P(JsonCalls, OneWayCalls_RunInOrder) {
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(stub->callOneWay("note", "{\"seq\": " + std::to_string(i) + "}"));
  }
  // A call after them on the same channel runs after them.
  auto stats = stub->call("stats", "{}");
  ASSERT_TRUE(stats.ok()) << stats.status().toString();
  EXPECT_NE(stats->find(R"("notes":["1","2","3"])"), std::string::npos) << *stats;
}

// The segment level (what a gateway forwards): Cap'n Proto bytes in and out, waited for or not,
// and a cancel of the one not waited for reaches the service's handler.
TEST_P(Contracts, SegmentCalls_CarryCapnpBytesBothWays_AndACancelReachesTheService) {
  auto svc = startTestService(broker.socket(), {"--workers", "2"});
  auto c = connect();
  ASSERT_TRUE(live(*c, "hms.test", "1.0.0"));
  auto stub = c->bindJson("hms.test", "^1.0");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  // A segment as a peer sends it: root pointer at word 0, no segment table.
  capnp::MallocMessageBuilder echo;
  {
    auto p = echo.initRoot<test::TestService::EchoParams>();
    p.setSeq(77);
    const char payload[] = "in and out";
    p.setPayload(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(payload), 10));
  }
  const auto echoWords = echo.getSegmentsForOutput()[0];
  auto seqOf = [](kj::ArrayPtr<const capnp::word> reply) {
    kj::ArrayPtr<const capnp::word> segments[1] = {reply};
    capnp::SegmentArrayMessageReader r(kj::arrayPtr(segments, 1));
    auto results = r.getRoot<test::TestService::EchoResults>();
    EXPECT_EQ(results.getPayload().size(), 10u);
    return results.getSeq();
  };
  {
    auto waited = stub->callSegment("echo", echoWords);
    ASSERT_TRUE(waited.ok()) << waited.status().toString();
    EXPECT_EQ(seqOf(waited->words()), 77u);
  }
  std::promise<Result<uint64_t>> echoed;
  auto handle = stub->callSegmentAsync("echo", echoWords, [&](Result<RawReply> r) {
    if (!r.ok()) {
      echoed.set_value(r.status());
    } else {
      echoed.set_value(seqOf(r->words()));
    }
  });
  ASSERT_TRUE(handle.ok()) << handle.status().toString();
  auto echoedResult = echoed.get_future();
  ASSERT_EQ(echoedResult.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  auto seq = echoedResult.get();
  ASSERT_TRUE(seq.ok()) << seq.status().toString();
  EXPECT_EQ(*seq, 77u);

  // Refused before anything is sent: no callback runs.
  bool called = false;
  auto noCallback = [&](Result<RawReply>) { called = true; };
  EXPECT_EQ(stub->callSegmentAsync("count", echoWords, noCallback).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(stub->callSegmentAsync("nope", echoWords, noCallback).status().code(),
            StatusCode::kUnimplemented);
  const uint64_t garbage[2] = {~uint64_t(0), ~uint64_t(0)};
  EXPECT_EQ(
      stub->callSegmentAsync("echo", kj::arrayPtr(reinterpret_cast<const capnp::word*>(garbage), 2),
                             noCallback)
          .status()
          .code(),
      StatusCode::kInvalidArgument);
  EXPECT_FALSE(called);

  // A long call cancelled while its handler runs: the callback says CANCELLED, and the handler
  // was told (the service counts the cancels its handlers saw).
  capnp::MallocMessageBuilder sleep;
  sleep.initRoot<test::TestService::SleepParams>().setMs(60'000);
  std::promise<Status> slept;
  auto sleeping = stub->callSegmentAsync("sleep", sleep.getSegmentsForOutput()[0],
                                         [&](Result<RawReply> r) { slept.set_value(r.status()); });
  ASSERT_TRUE(sleeping.ok()) << sleeping.status().toString();
  ASSERT_TRUE(svc.waitForLine("sleeping 60000")) << svc.output();
  EXPECT_TRUE(sleeping->cancel().isOk());
  auto sleptResult = slept.get_future();
  ASSERT_EQ(sleptResult.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(sleptResult.get().code(), StatusCode::kCancelled);
  EXPECT_TRUE(waitUntil([&] {
    // On a channel of its own: the service answers one channel's calls in order.
    auto stats = c->callJson("hms.test", "^1.0", "stats", "{}");
    return stats.ok() && stats->find(R"("cancelCallbacks":"1")") != std::string::npos;
  })) << "the handler on the service was not told of the cancel";
  svc.signal(SIGKILL);  // its handler would sleep on for a minute
}

// ---- JSON topics -------------------------------------------------------------------------------

TEST_P(Contracts, JsonSubscriber_ReadsATypedPublisher_AndJsonPublisherTakesOverTheTopic) {
  auto c = connect();
  auto typed = c->advertise<test::Tick>("hms.test.ticks");
  ASSERT_TRUE(typed.ok()) << typed.status().toString();
  auto sub = c->subscribeJson("hms.test.ticks");
  ASSERT_TRUE(sub.ok()) << sub.status().toString();
  ASSERT_TRUE(typed->publish([](test::Tick::Builder t) { t.setSeq(5); }));
  ASSERT_TRUE(sub->next(std::chrono::seconds(20)));
  EXPECT_EQ(sub->message(), R"({"seq":"5"})");
  ASSERT_TRUE(typed->close());
  ASSERT_TRUE(sub->close());

  // The typed publisher is gone; the broker still knows the topic's type.
  auto json = c->advertiseJson("hms.test.ticks");
  ASSERT_TRUE(json.ok()) << json.status().toString();
  auto typedSub = c->subscribe<test::Tick>("hms.test.ticks");
  ASSERT_TRUE(typedSub.ok()) << typedSub.status().toString();
  ASSERT_TRUE(json->publish(R"({"seq": "77", "payload": "AQID"})"));
  ASSERT_TRUE(typedSub->next(std::chrono::seconds(20)));
  EXPECT_EQ(typedSub->message().getSeq(), 77u);
  EXPECT_EQ(typedSub->message().getPayload().size(), 3u);
  auto bad = json->publish(R"({"seq": true})");
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument) << bad.toString();

  auto never = c->advertiseJson("hms.test.never");
  ASSERT_FALSE(never.ok());
  EXPECT_EQ(never.status().code(), StatusCode::kNotFound);
}

// ---- What the broker checks ---------------------------------------------------------------------

// A registration sent by hand over the control socket, as a client of another build (or a hostile
// one) might: without schema nodes, or with nodes that miss a type the interface reaches.
class RawRegistration : public ::testing::Test {
 protected:
  void SetUp() override {
    sock.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, broker.socket().c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    auto hello = roundTrip([](wire::Request::Builder r) {
      auto h = r.initHello();
      h.setProtocolVersion(wire::PROTOCOL_VERSION);
      h.setClientName("raw");
      h.setNoSharedMemory("a test client without shared memory");
    });
    ASSERT_EQ(hello.first, 0u) << hello.second;
  }
  // Sends one request; the reply's status code and message.
  template <class F>
  std::pair<uint32_t, std::string> roundTrip(F fill) {
    capnp::MallocMessageBuilder mb;
    auto req = mb.initRoot<wire::ClientMessage>().initRequest();
    req.setId(++nextId);
    fill(req);
    auto flat = detail::encodeMessage(mb);
    EXPECT_TRUE(detail::sendDatagram(sock.get(), flat.begin(), flat.size() * 8));
    for (;;) {
      auto d = detail::receiveDatagram(sock.get());
      if (!d.ok() || d->bytes.empty()) return {~0u, "connection closed"};
      auto msg = detail::DecodedMessage::decode(d->bytes);
      if (!msg.ok()) return {~0u, "undecodable reply"};
      auto m = (*msg)->root<wire::BrokerMessage>();
      if (!m.isReply()) continue;  // an event
      return {m.getReply().getStatus().getCode(), m.getReply().getStatus().getMessage().cStr()};
    }
  }
  // A registration of hms.raw 1.0.0 implementing TestService with `nodes` (all by default).
  void fillRegistration(wire::Request::Builder r, std::vector<capnp::Schema> nodes) {
    auto reg = r.initRegister();
    auto d = reg.initDescriptor();
    d.setId("hms.raw");
    d.initVersion().setMajor(1);
    auto iface = capnp::Schema::from<test::TestService>();
    d.setInterfaceId(iface.getProto().getId());
    d.setInterfaceName("TestService");
    d.setRingBytes(65536);
    auto methods = iface.asInterface().getMethods();
    auto out = d.initMethods(methods.size());
    for (unsigned i = 0; i < methods.size(); ++i) {
      out[i].setName(methods[i].getProto().getName());
      out[i].setOrdinal(uint16_t(methods[i].getOrdinal()));
      out[i].setParamSchemaId(methods[i].getParamType().getProto().getId());
      out[i].setResultSchemaId(methods[i].getResultType().getProto().getId());
    }
    auto list = reg.initSchemaNodes(unsigned(nodes.size()));
    for (unsigned i = 0; i < nodes.size(); ++i) list.setWithCaveats(i, nodes[i].getProto());
  }
  std::vector<capnp::Schema> allNodes() {
    auto iface = capnp::Schema::from<test::TestService>().asInterface();
    std::vector<capnp::Schema> out{iface};
    for (auto m : iface.getMethods()) {
      out.push_back(m.getParamType());
      out.push_back(m.getResultType());
    }
    return out;
  }
  BrokerFixture broker;
  detail::UniqueFd sock;
  uint64_t nextId = 0;
};

TEST_F(RawRegistration, WithoutSchemaNodes_IsInvalidArgument) {
  auto r = roundTrip([&](wire::Request::Builder req) { fillRegistration(req, {}); });
  EXPECT_EQ(r.first, uint32_t(StatusCode::kInvalidArgument)) << r.second;
  EXPECT_NE(r.second.find("schema nodes"), std::string::npos) << r.second;
}

TEST_F(RawRegistration, MissingAMethodsParamsNode_IsInvalidArgumentNamingIt) {
  auto nodes = allNodes();
  const auto echoParams = capnp::Schema::from<test::TestService::EchoParams>();
  std::erase_if(nodes, [&](capnp::Schema s) { return s == echoParams; });
  auto r = roundTrip([&](wire::Request::Builder req) { fillRegistration(req, nodes); });
  EXPECT_EQ(r.first, uint32_t(StatusCode::kInvalidArgument)) << r.second;
  EXPECT_NE(r.second.find("echo"), std::string::npos) << r.second;
}

TEST_F(RawRegistration, CompleteNodes_AreAccepted_AndTheBrokerServesThemBack) {
  auto r = roundTrip([&](wire::Request::Builder req) { fillRegistration(req, allNodes()); });
  ASSERT_EQ(r.first, 0u) << r.second;
  auto get = roundTrip([](wire::Request::Builder req) {
    auto g = req.initGetSchema();
    g.setServiceId("hms.raw");
    g.initVersion().setMajor(1);
  });
  EXPECT_EQ(get.first, 0u) << get.second;
}

}  // namespace
}  // namespace hms::ffi
