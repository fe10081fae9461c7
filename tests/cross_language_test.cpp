// Across languages: the Go and Rust test services (bindings/go/cmd/hms-test-service,
// bindings/rust/examples/test_service.rs, serving tests/support/test.capnp's TestService through
// the C ABI) called from C++ with the typed API, over both transports: calls, streams, errors with
// their source and details, and the service killed -9 mid-call. (Go calling Rust and Rust calling
// Go are in those bindings' own tests.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "hms/ffi/client.hpp"
#include "support/process.hpp"
#include "test.capnp.h"

using hms::ffi::Client;
using hms::ffi::ClientOptions;
using hms::ffi::StatusCode;
using hms::ffi::Transport;
using hms::ffi::test::TestService;
using hms::ffi::testing::BrokerFixture;
using hms::ffi::testing::Subprocess;

namespace {

struct Lang {
  const char* name;     // in the test's name
  const char* binary;   // the test service
  const char* id;       // the id it serves
  Transport transport;  // of the C++ caller
};

// The test's parameter as ctest lists it.
void PrintTo(const Lang& l, std::ostream* os) {
  *os << l.name;
}

class CrossLanguage : public ::testing::TestWithParam<Lang> {
 protected:
  void SetUp() override {
    service_ = Subprocess({GetParam().binary, "--socket", broker_.socket(), "--id", GetParam().id});
    ASSERT_TRUE(service_.waitForLine("ready")) << GetParam().binary << ": " << service_.errors();
    ClientOptions o;
    o.socketPath = broker_.socket();
    o.name = "cross-language-caller";
    o.transport = GetParam().transport;
    auto c = Client::connect(o);
    ASSERT_TRUE(c.ok()) << c.status().toString();
    client_ = std::move(*c);
  }
  void TearDown() override {
    client_.reset();
    service_.stop();
  }

  BrokerFixture broker_;
  Subprocess service_;
  std::unique_ptr<Client> client_;
};

TEST_P(CrossLanguage, TypedCallsFromCppReachTheService) {
  auto stub = client_->bind<TestService>(GetParam().id, "^1");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  for (uint64_t seq = 1; seq <= 20; ++seq) {
    auto reply = stub->call<&TestService::Client::echoRequest>([&](auto p) {
      p.setSeq(seq);
      auto d = p.initPayload(100);
      for (size_t i = 0; i < d.size(); ++i) d[i] = uint8_t(seq + i);
    });
    ASSERT_TRUE(reply.ok()) << reply.status().toString();
    ASSERT_EQ(reply->results().getSeq(), seq);
    auto d = reply->results().getPayload();
    ASSERT_EQ(d.size(), 100u);
    for (size_t i = 0; i < d.size(); ++i) ASSERT_EQ(d[i], uint8_t(seq + i));
  }
  auto who = stub->call<&TestService::Client::whoamiRequest>([](auto) {});
  ASSERT_TRUE(who.ok()) << who.status().toString();
  EXPECT_EQ(pid_t(who->results().getPid()), service_.pid());
  EXPECT_EQ(pid_t(who->results().getCallerPid()), getpid());
}

TEST_P(CrossLanguage, ErrorsKeepCodeSourceAndDetails) {
  auto stub = client_->bind<TestService>(GetParam().id, "^1");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  auto reply = stub->call<&TestService::Client::failRequest>([](auto p) {
    p.setCode(5);
    p.setMessage("no patient p-9");
  });
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(reply.status().message(), "no patient p-9");
  EXPECT_EQ(reply.status().source(), GetParam().id);
  ASSERT_EQ(reply.status().details().size(), 1u);
  EXPECT_EQ(reply.status().details()[0].first, "hint");
  EXPECT_EQ(reply.status().details()[0].second, "asked to fail");
}

TEST_P(CrossLanguage, StreamsFromTheService) {
  auto stub = client_->bind<TestService>(GetParam().id, "^1");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  auto stream = stub->openStream<&TestService::Client::countRequest>([](auto p) {
    p.setFrom(100);
    p.setN(50);
    p.setPayloadBytes(16);
  });
  uint64_t expect = 100;
  while (stream.next()) ASSERT_EQ(stream.item().getValue(), expect++);
  EXPECT_TRUE(stream.status().isOk()) << stream.status().toString();
  EXPECT_EQ(expect, 150u);
}

TEST_P(CrossLanguage, AServiceKilledMidCallIsUnavailable) {
  auto stub = client_->bind<TestService>(GetParam().id, "^1");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  auto future = stub->callAsync<&TestService::Client::sleepRequest>([](auto p) { p.setMs(30000); });
  ASSERT_TRUE(service_.waitForLine("sleeping")) << "the call reached the service";
  service_.signal(SIGKILL);
  auto reply = future.get();
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status().toString();
}

// The seed's §4.1 as the demo runs it: HMS-SYS in Go calls HMS-CDF in Rust (hms.cdf.debate
// evaluatePolicy), and handles NOT_FOUND, INVALID_ARGUMENT and INTERNAL with their source and
// details; both processes on shared memory, then both on sockets.
TEST(Scenario41, GoHmsSysCallsRustHmsCdf) {
  for (const char* transport : {"auto", "socket"}) {
    SCOPED_TRACE(transport);
    BrokerFixture broker;
    const std::vector<std::string> env = {std::string("HMS_FFI_TRANSPORT=") + transport};
    Subprocess cdf({HMS_FFI_RUST_HMS_CDF, "--socket", broker.socket(), "--schema",
                    std::string(HMS_FFI_SOURCE_DIR) + "/schemas/hms/cdf/debate.capnp"},
                   env);
    ASSERT_TRUE(cdf.waitForLine("hms-cdf [rust]: ready")) << cdf.errors();
    Subprocess sys({HMS_FFI_GO_HMS_SYS, "--socket", broker.socket()}, env);
    ASSERT_TRUE(sys.waitForLine("hms-sys [go]: all calls went as expected", std::chrono::seconds(60)))
        << sys.output() << sys.errors();
    EXPECT_EQ(sys.wait(), 0) << sys.output();
    const std::string& out = sys.output();
    EXPECT_NE(out.find("-> APPROVE"), std::string::npos) << out;
    EXPECT_NE(out.find("-> DENY"), std::string::npos) << out;
    EXPECT_NE(out.find("NOT_FOUND from hms.cdf.debate"), std::string::npos) << out;
    EXPECT_NE(out.find("INVALID_ARGUMENT from hms.cdf.debate"), std::string::npos) << out;
    EXPECT_NE(out.find("INTERNAL from hms.cdf.debate"), std::string::npos) << out;
    EXPECT_TRUE(cdf.waitForLine("hms-cdf [rust]: evaluatePolicy crash -> INTERNAL"))
        << cdf.output();
    cdf.stop();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Services, CrossLanguage,
    ::testing::Values(
        Lang{"go_shm", HMS_FFI_GO_TEST_SERVICE, "hms.test.go", Transport::kAuto},
        Lang{"go_socket", HMS_FFI_GO_TEST_SERVICE, "hms.test.go", Transport::kSocket},
        Lang{"rust_shm", HMS_FFI_RUST_TEST_SERVICE, "hms.test.rust", Transport::kAuto},
        Lang{"rust_socket", HMS_FFI_RUST_TEST_SERVICE, "hms.test.rust", Transport::kSocket}),
    [](const ::testing::TestParamInfo<Lang>& i) { return std::string(i.param.name); });

}  // namespace
