// The C ABI (hms/ffi/hms_ffi.h) as a C program uses it: every function against a real broker and
// the C++ test service, both transports, and its misuse (NULL, freed handles, forked children,
// concurrent use). Only the header and libhmsffi.so.1 are used here; no C++ API.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "hms/ffi/hms_ffi.h"
#include "support/process.hpp"
#include "test.capnp.h"  // the raw-level tests build and read messages with Cap'n Proto itself

using hms::ffi::testing::BrokerFixture;
using hms::ffi::testing::startTestService;
using hms::ffi::testing::Subprocess;
using hms::ffi::testing::waitUntil;

namespace {

const std::string kTestSchema = std::string(HMS_FFI_SOURCE_DIR) + "/tests/support/test.capnp";

// Owns an hms_error_t for the test's scope.
struct Err {
  hms_error_t* e = nullptr;
  ~Err() { hms_error_free(&e); }
  hms_error_t** operator&() {
    hms_error_free(&e);
    return &e;
  }
  std::string message() const { return e ? hms_error_message(e) : ""; }
  std::string source() const { return e ? hms_error_source(e) : ""; }
  int code() const { return e ? hms_error_code(e) : 0; }
};

// A malloc'd string from the library, freed at scope end.
struct Str {
  char* s = nullptr;
  size_t len = 0;
  ~Str() { hms_string_free(&s); }
  std::string str() const { return s ? std::string(s, len) : std::string(); }
};

// A segment as a reader (what a raw caller or service does with a reply or params it got).
capnp::SegmentArrayMessageReader readSegment(const void* data, size_t size,
                                             kj::ArrayPtr<const capnp::word>& seg) {
  seg = kj::arrayPtr(static_cast<const capnp::word*>(data), size / sizeof(capnp::word));
  return capnp::SegmentArrayMessageReader(kj::arrayPtr(&seg, 1));
}

class CAbi : public ::testing::TestWithParam<hms_transport_t> {
 protected:
  void SetUp() override {
    service_ = startTestService(broker_.socket(), {});
    ASSERT_TRUE(service_.waitForLine("ready")) << service_.errors();
    client_ = connect();
    ASSERT_NE(client_, nullptr);
  }
  void TearDown() override {
    hms_client_free(&client_);
    service_.stop();
  }

  hms_client_t* connect(const char* name = "c-abi-test") {
    hms_client_options_t o;
    hms_client_options_init(&o);
    o.socket_path = broker_.socket().c_str();
    o.name = name;
    o.transport = GetParam();
    hms_client_t* c = nullptr;
    Err err;
    EXPECT_EQ(hms_client_connect(&o, &c, &err), HMS_OK) << err.message();
    return c;
  }

  hms_stub_t* bind(const char* id = "hms.test") {
    hms_stub_t* stub = nullptr;
    Err err;
    EXPECT_EQ(hms_client_bind(client_, id, "^1", &stub, &err), HMS_OK) << err.message();
    return stub;
  }

  BrokerFixture broker_;
  Subprocess service_;
  hms_client_t* client_ = nullptr;
};

TEST(CAbiVersion, AbiVersionAndStatusNames) {
  EXPECT_EQ(hms_abi_version(), (uint32_t(HMS_ABI_VERSION_MAJOR) << 16) | HMS_ABI_VERSION_MINOR);
  EXPECT_STREQ(hms_status_name(HMS_NOT_FOUND), "NOT_FOUND");
  EXPECT_STREQ(hms_status_name(HMS_UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_STREQ(hms_status_name(99), "UNKNOWN");
  EXPECT_STREQ(hms_status_name(-1), "UNKNOWN");
}

TEST(CAbiMisuse, NullArgumentsAreInvalidArgumentAndFreeingNullIsANoOp) {
  Err err;
  EXPECT_EQ(hms_client_connect(nullptr, nullptr, &err), HMS_INVALID_ARGUMENT);
  EXPECT_NE(err.message().find("NULL"), std::string::npos);
  hms_stub_t* stub = nullptr;
  EXPECT_EQ(hms_client_bind(nullptr, "x", "*", &stub, &err), HMS_INVALID_ARGUMENT);
  EXPECT_EQ(stub, nullptr);
  char* out = nullptr;
  EXPECT_EQ(hms_stub_call_json(nullptr, "m", "{}", SIZE_MAX, nullptr, &out, nullptr, &err),
            HMS_INVALID_ARGUMENT);
  EXPECT_EQ(hms_future_wait(nullptr, 0), HMS_INVALID_ARGUMENT);
  EXPECT_EQ(hms_future_poll(nullptr), 0);
  EXPECT_EQ(hms_future_fd(nullptr), -1);
  EXPECT_EQ(hms_service_fd(nullptr), -1);
  hms_request_t* req = nullptr;
  EXPECT_EQ(hms_request_reply_json(&req, "{}", SIZE_MAX, &err), HMS_INVALID_ARGUMENT);
  EXPECT_EQ(hms_request_reply_json(nullptr, "{}", SIZE_MAX, &err), HMS_INVALID_ARGUMENT);
  // err may be NULL: the code still comes back.
  EXPECT_EQ(hms_client_bind(nullptr, "x", "*", &stub, nullptr), HMS_INVALID_ARGUMENT);
  // Freeing NULL, or a pointer to NULL, does nothing.
  hms_client_t* c = nullptr;
  hms_client_free(&c);
  hms_client_free(nullptr);
  hms_stub_free(&stub);
  hms_future_t* f = nullptr;
  hms_future_free(&f);
  hms_error_t* e = nullptr;
  hms_error_free(&e);
  hms_string_free(&out);
  hms_service_t* s = nullptr;
  hms_service_free(&s);
  hms_request_free(&req);
  EXPECT_EQ(hms_error_code(nullptr), 0);
  EXPECT_STREQ(hms_error_details_json(nullptr), "{}");
}

TEST(CAbiMisuse, ConnectWithoutABrokerIsUnavailableSayingWhere) {
  hms_client_options_t o;
  hms_client_options_init(&o);
  o.socket_path = "/tmp/hms-ffi-no-such-dir/broker.sock";
  o.reconnect = 0;
  hms_client_t* c = nullptr;
  Err err;
  const int rc = hms_client_connect(&o, &c, &err);
  EXPECT_NE(rc, HMS_OK);
  EXPECT_EQ(err.code(), rc);
  EXPECT_EQ(c, nullptr);
  EXPECT_NE(err.message().find("/tmp/hms-ffi-no-such-dir/broker.sock"), std::string::npos)
      << err.message();
}

TEST(CAbiMisuse, BadOptionsAreRefused) {
  hms_client_options_t o;
  hms_client_options_init(&o);
  EXPECT_EQ(o.default_timeout_ms, 30000);
  EXPECT_EQ(o.reconnect, 1);
  o.transport = static_cast<hms_transport_t>(7);
  hms_client_t* c = nullptr;
  Err err;
  EXPECT_EQ(hms_client_connect(&o, &c, &err), HMS_INVALID_ARGUMENT);
  EXPECT_NE(err.message().find("HMS_TRANSPORT_AUTO"), std::string::npos) << err.message();
}

TEST_P(CAbi, CallsWithJsonAndReadsTheContract) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  EXPECT_STREQ(hms_stub_service_id(stub), "hms.test");
  EXPECT_STREQ(hms_stub_service_version(stub), "1.0.0");

  Str out;
  Err err;
  const char* params = R"({"seq": 7, "payload": "aGVsbG8="})";
  ASSERT_EQ(hms_stub_call_json(stub, "echo", params, SIZE_MAX, nullptr, &out.s, &out.len, &err),
            HMS_OK)
      << err.message();
  EXPECT_EQ(out.str(), R"({"seq":"7","payload":"aGVsbG8="})");
  EXPECT_EQ(out.len, strlen(out.s));

  // A length rather than a NUL: only the first `len` bytes count.
  const std::string padded = std::string(R"({"seq": 8})") + "garbage";
  Str out2;
  ASSERT_EQ(hms_stub_call_json(stub, "echo", padded.data(), 10, nullptr, &out2.s, &out2.len, &err),
            HMS_OK)
      << err.message();
  EXPECT_NE(out2.str().find(R"("seq":"8")"), std::string::npos);

  Str contract;
  ASSERT_EQ(
      hms_client_contract_json(client_, "hms.test", "1.0.0", &contract.s, &contract.len, &err),
      HMS_OK)
      << err.message();
  EXPECT_NE(contract.str().find(R"("name":"count","ordinal":5,"stream":true)"), std::string::npos)
      << contract.str();
  hms_stub_free(&stub);
  EXPECT_EQ(stub, nullptr);
}

// This process's supplementary groups as the kernel lists them, comma-separated.
std::string supplementaryGroups() {
  std::vector<gid_t> groups(size_t(getgroups(0, nullptr)));
  groups.resize(size_t(getgroups(int(groups.size()), groups.data())));
  std::string out;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(groups[i]);
  }
  return out;
}

// Tracing across the C ABI (docs/observability.md): a C service whose process records spans
// (HMS_FFI_TRACE_DIR at connect) records its server span as the child of the caller's span and
// hands its handler that span's context to pass on.
TEST_P(CAbi, AServiceRecordingSpans_GivesItsHandlerItsServerSpan) {
  const std::string dir = broker_.dir() + "/traces";
  ::setenv("HMS_FFI_TRACE_DIR", dir.c_str(), 1);
  hms_client_t* server = connect("c-abi-traced");
  ::unsetenv("HMS_FFI_TRACE_DIR");
  ASSERT_NE(server, nullptr);
  hms_service_t* svc = nullptr;
  Err err;
  ASSERT_EQ(hms_client_serve(server, "hms.test.traced", "1.0.0", kTestSchema.c_str(), "TestService",
                             nullptr, &svc, &err),
            HMS_OK)
      << err.message();
  std::string seenTrace;
  std::thread handler([&] {
    hms_request_t* req = nullptr;
    Err e;
    if (hms_service_next(svc, 20'000'000'000, &req, &e) != HMS_OK) return;
    const char* tp = hms_request_traceparent(req);
    seenTrace = tp ? tp : "";
    EXPECT_EQ(hms_request_reply_json(&req, "{}", SIZE_MAX, &e), HMS_OK);
  });
  hms_stub_t* stub = nullptr;
  ASSERT_EQ(hms_client_bind(client_, "hms.test.traced", "*", &stub, &err), HMS_OK);
  hms_call_options_t o;
  hms_call_options_init(&o);
  o.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  Str out;
  ASSERT_EQ(hms_stub_call_json(stub, "echo", "{}", SIZE_MAX, &o, &out.s, &out.len, &err), HMS_OK)
      << err.message();
  handler.join();
  // The same trace, a span of its own, still sampled.
  ASSERT_EQ(seenTrace.size(), 55u) << seenTrace;
  EXPECT_EQ(seenTrace.substr(0, 36), "00-4bf92f3577b34da6a3ce929d0e0e4736-");
  EXPECT_NE(seenTrace.substr(36, 16), "00f067aa0ba902b7");
  EXPECT_EQ(seenTrace.substr(52), "-01");
  hms_stub_free(&stub);
  hms_service_free(&svc);
  hms_client_free(&server);
  // Its span: that id, the caller's span its parent.
  std::string spans;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(e.path());
    spans.append(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_NE(spans.find("\"span_id\":\"" + seenTrace.substr(36, 16) +
                       "\",\"parent_span_id\":\"00f067aa0ba902b7\""),
            std::string::npos)
      << spans;
  EXPECT_NE(spans.find("\"kind\":\"server\""), std::string::npos) << spans;
}

TEST_P(CAbi, ClientAndRequestFactsAndStreamCancel) {
  EXPECT_NE(hms_client_id(client_), 0u);
  EXPECT_EQ(hms_client_uses_shared_memory(client_), GetParam() == HMS_TRANSPORT_SOCKET ? 0 : 1);
  EXPECT_EQ(hms_client_id(nullptr), 0u);

  // A C service sees the caller's name and trace context.
  hms_service_t* svc = nullptr;
  Err err;
  ASSERT_EQ(hms_client_serve(client_, "hms.test.facts", "1.0.0", kTestSchema.c_str(), "TestService",
                             nullptr, &svc, &err),
            HMS_OK)
      << err.message();
  std::string seenName, seenTrace, seenCaller;
  int64_t seenLeft = 0;
  std::thread server([&] {
    hms_request_t* req = nullptr;
    Err e;
    if (hms_service_next(svc, 20'000'000'000, &req, &e) != HMS_OK) return;
    seenName = hms_request_caller_name(req);
    seenCaller = hms_request_caller_json(req);
    seenLeft = hms_request_time_left_ns(req);
    const char* tp = hms_request_traceparent(req);
    seenTrace = tp ? tp : "";
    EXPECT_EQ(hms_request_reply_json(&req, "{}", SIZE_MAX, &e), HMS_OK);
  });
  hms_client_t* caller = connect("c-abi-named-caller");
  hms_stub_t* stub = nullptr;
  ASSERT_EQ(hms_client_bind(caller, "hms.test.facts", "*", &stub, &err), HMS_OK);
  hms_call_options_t o;
  hms_call_options_init(&o);
  o.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  o.timeout_ns = INT64_MAX;  // no bound: the service is told there is none
  Str out;
  ASSERT_EQ(hms_stub_call_json(stub, "echo", "{}", SIZE_MAX, &o, &out.s, &out.len, &err), HMS_OK)
      << err.message();
  server.join();
  EXPECT_EQ(seenLeft, INT64_MAX);
  EXPECT_EQ(seenName, "c-abi-named-caller");
  // The whole caller as JSON (ABI 1.1): this process, no token, no policy so no roles.
  EXPECT_EQ(seenCaller, R"({"uid":)" + std::to_string(getuid()) + R"(,"gid":)" +
                            std::to_string(getgid()) + R"(,"pid":)" + std::to_string(getpid()) +
                            R"(,"groups":[)" + supplementaryGroups() +
                            R"(],"name":"c-abi-named-caller","authenticated":false,)"
                            R"("subject":"","issuer":"","roles":[]})");
  EXPECT_STREQ(hms_request_caller_json(nullptr), "{}");
  EXPECT_EQ(seenTrace, o.traceparent);
  hms_stub_free(&stub);
  hms_client_free(&caller);
  hms_service_free(&svc);

  // A stream cancelled by its caller ends with CANCELLED.
  hms_stub_t* test = bind();
  ASSERT_NE(test, nullptr);
  hms_stream_t* s = nullptr;
  ASSERT_EQ(hms_stub_open_stream_json(test, "count", R"({"from": 0, "n": 100000, "delayUs": 1000})",
                                      SIZE_MAX, nullptr, &s, &err),
            HMS_OK);
  Str first;
  ASSERT_EQ(hms_stream_next_json(s, &first.s, &first.len, &err), HMS_OK);
  ASSERT_NE(first.s, nullptr);
  EXPECT_EQ(hms_stream_cancel(s), HMS_OK);
  int rc = HMS_OK;
  for (int i = 0; i < 100000 && rc == HMS_OK; ++i) {
    Str item;
    rc = hms_stream_next_json(s, &item.s, &item.len, &err);
    if (rc == HMS_OK && item.s == nullptr) break;
  }
  EXPECT_EQ(rc, HMS_CANCELLED);
  hms_stream_free(&s);
  EXPECT_EQ(hms_stream_cancel(nullptr), HMS_INVALID_ARGUMENT);
  hms_stub_free(&test);
}

TEST_P(CAbi, ErrorsCarryCodeMessageSourceAndDetails) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  Str out;
  Err err;
  EXPECT_EQ(hms_stub_call_json(stub, "fail", R"({"code": 5, "message": "no patient p-9"})",
                               SIZE_MAX, nullptr, &out.s, &out.len, &err),
            HMS_NOT_FOUND);
  EXPECT_EQ(out.s, nullptr);
  EXPECT_EQ(err.code(), HMS_NOT_FOUND);
  EXPECT_EQ(err.message(), "no patient p-9");
  EXPECT_EQ(err.source(), "hms.test");
  ASSERT_EQ(hms_error_detail_count(err.e), 1u);
  const char *k = nullptr, *v = nullptr;
  ASSERT_EQ(hms_error_detail(err.e, 0, &k, &v), HMS_OK);
  EXPECT_STREQ(k, "hint");
  EXPECT_STREQ(v, "asked to fail");
  EXPECT_EQ(hms_error_detail(err.e, 1, &k, &v), HMS_OUT_OF_RANGE);
  EXPECT_STREQ(hms_error_details_json(err.e), R"({"hint":"asked to fail"})");

  EXPECT_EQ(hms_stub_call_json(stub, "nope", "{}", SIZE_MAX, nullptr, &out.s, &out.len, &err),
            HMS_UNIMPLEMENTED);
  EXPECT_NE(err.message().find("echo"), std::string::npos) << "names the methods there are";
  EXPECT_EQ(hms_stub_call_json(stub, "echo", R"({"seq": "x"})", SIZE_MAX, nullptr, &out.s, &out.len,
                               &err),
            HMS_INVALID_ARGUMENT);
  EXPECT_NE(err.message().find("seq"), std::string::npos) << err.message();
  EXPECT_EQ(
      hms_stub_call_json(stub, "echo", R"({"seq": 1)", SIZE_MAX, nullptr, &out.s, &out.len, &err),
      HMS_INVALID_ARGUMENT);

  hms_stub_t* none = nullptr;
  EXPECT_EQ(hms_client_bind(client_, "hms.test", "^2", &none, &err), HMS_NOT_FOUND);
  EXPECT_NE(err.message().find("1.0.0"), std::string::npos) << "says what is live";
  hms_stub_free(&stub);
}

TEST_P(CAbi, DeadlinesAndTraceContextGoWithTheCall) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  hms_call_options_t o;
  hms_call_options_init(&o);
  o.timeout_ns = 200'000'000;
  Str out;
  Err err;
  EXPECT_EQ(
      hms_stub_call_json(stub, "sleep", R"({"ms": 1000})", SIZE_MAX, &o, &out.s, &out.len, &err),
      HMS_DEADLINE_EXCEEDED);
  o.timeout_ns = 10'000'000'000;
  o.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  o.pretty = 1;
  ASSERT_EQ(hms_stub_call_json(stub, "sleep", R"({"ms": 0})", SIZE_MAX, &o, &out.s, &out.len, &err),
            HMS_OK)
      << err.message();
  EXPECT_NE(out.str().find("\n  \"timeLeftMs\""), std::string::npos) << out.str();
  o.traceparent = "not-a-traceparent";
  Str out2;
  EXPECT_EQ(
      hms_stub_call_json(stub, "sleep", R"({"ms": 0})", SIZE_MAX, &o, &out2.s, &out2.len, &err),
      HMS_INVALID_ARGUMENT);
  EXPECT_NE(err.message().find("traceparent"), std::string::npos);
  hms_stub_free(&stub);
}

TEST_P(CAbi, AsyncCallsWaitPollSignalAnFdAndCancel) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  Err err;
  hms_future_t* f = nullptr;
  ASSERT_EQ(hms_stub_call_async_json(stub, "sleep", R"({"ms": 300})", SIZE_MAX, nullptr, &f, &err),
            HMS_OK)
      << err.message();
  const int fd = hms_future_fd(f);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(hms_future_poll(f), 0);
  EXPECT_EQ(hms_future_wait(f, 0), HMS_DEADLINE_EXCEEDED);
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 20000), 1) << "the fd becomes readable when the result is there";
  EXPECT_EQ(hms_future_poll(f), 1);
  Str out;
  ASSERT_EQ(hms_future_result_json(f, &out.s, &out.len, &err), HMS_OK) << err.message();
  EXPECT_NE(out.str().find("timeLeftMs"), std::string::npos);
  Str again;
  EXPECT_EQ(hms_future_result_json(f, &again.s, &again.len, &err), HMS_FAILED_PRECONDITION);
  hms_future_free(&f);
  EXPECT_EQ(f, nullptr);

  // Many in flight on one stub, completing in any order.
  std::vector<hms_future_t*> fs(8, nullptr);
  for (size_t i = 0; i < fs.size(); ++i) {
    const std::string params = R"({"seq": )" + std::to_string(i) + "}";
    ASSERT_EQ(
        hms_stub_call_async_json(stub, "echo", params.c_str(), SIZE_MAX, nullptr, &fs[i], &err),
        HMS_OK);
  }
  for (size_t i = 0; i < fs.size(); ++i) {
    Str r;
    ASSERT_EQ(hms_future_result_json(fs[i], &r.s, &r.len, &err), HMS_OK) << err.message();
    EXPECT_NE(r.str().find("\"seq\":\"" + std::to_string(i) + "\""), std::string::npos);
    hms_future_free(&fs[i]);
  }

  // Cancelled: the future completes with CANCELLED well before the service would answer.
  ASSERT_EQ(hms_stub_call_async_json(stub, "sleep", R"({"ms": 2000})", SIZE_MAX, nullptr, &f, &err),
            HMS_OK);
  EXPECT_EQ(hms_future_cancel(f), HMS_OK);
  ASSERT_EQ(hms_future_wait(f, 5'000'000'000), HMS_OK);
  Str c;
  EXPECT_EQ(hms_future_result_json(f, &c.s, &c.len, &err), HMS_CANCELLED);
  hms_future_free(&f);

  // A future freed unread: the call goes on, nothing leaks or crashes when its reply comes.
  ASSERT_EQ(hms_stub_call_async_json(stub, "sleep", R"({"ms": 50})", SIZE_MAX, nullptr, &f, &err),
            HMS_OK);
  (void)hms_future_fd(f);
  hms_future_free(&f);
  Str after;
  EXPECT_EQ(hms_stub_call_json(stub, "echo", R"({"seq": 1})", SIZE_MAX, nullptr, &after.s,
                               &after.len, &err),
            HMS_OK)
      << err.message();

  // Method errors come before anything is sent.
  EXPECT_EQ(hms_stub_call_async_json(stub, "nope", "{}", SIZE_MAX, nullptr, &f, &err),
            HMS_UNIMPLEMENTED);
  EXPECT_EQ(f, nullptr);
  hms_stub_free(&stub);
}

// An async call's deadline completes its future then, also while the service is busy with an
// earlier call (once the completion thread slept past it; on sockets it waited for the reply).
TEST_P(CAbi, AsyncCallsCompleteAtTheirDeadline) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  Err err;
  hms_call_options_t o;
  hms_call_options_init(&o);
  o.timeout_ns = 300'000'000;
  for (int i = 0; i < 2; ++i) {
    hms_future_t* f = nullptr;
    const auto start = std::chrono::steady_clock::now();
    ASSERT_EQ(hms_stub_call_async_json(stub, "sleep", R"({"ms": 3000})", SIZE_MAX, &o, &f, &err),
              HMS_OK);
    ASSERT_EQ(hms_future_wait(f, -1), HMS_OK);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_LT(took, std::chrono::milliseconds(2000)) << "call " << i << " waited for the reply";
    Str out;
    EXPECT_EQ(hms_future_result_json(f, &out.s, &out.len, &err), HMS_DEADLINE_EXCEEDED);
    hms_future_free(&f);
  }
  hms_stub_free(&stub);
}

// INT64_MAX (or any bound beyond ten years) means no bound: it must not overflow into "now".
TEST_P(CAbi, HugeBoundsMeanNoBound) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  Err err;
  hms_call_options_t o;
  hms_call_options_init(&o);
  o.timeout_ns = INT64_MAX;
  Str out;
  ASSERT_EQ(
      hms_stub_call_json(stub, "sleep", R"({"ms": 100})", SIZE_MAX, &o, &out.s, &out.len, &err),
      HMS_OK)
      << err.message();
  hms_future_t* f = nullptr;
  ASSERT_EQ(hms_stub_call_async_json(stub, "sleep", R"({"ms": 100})", SIZE_MAX, &o, &f, &err),
            HMS_OK);
  EXPECT_EQ(hms_future_wait(f, INT64_MAX), HMS_OK);
  EXPECT_EQ(hms_future_poll(f), 1);
  hms_future_free(&f);
  hms_stub_free(&stub);
}

TEST(CAbiBroker, TheSocketAppearsOnlyOnceItAccepts) {
  for (int round = 0; round < 5; ++round) {
    char tmpl[] = "/tmp/hms-ffi-c-abi-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl, sock = dir + "/broker.sock";
    Subprocess broker({hms::ffi::testing::brokerBinary(), "--socket", sock, "--state-dir",
                       ":memory:", "--log-level", "warn"});
    ASSERT_TRUE(waitUntil([&] { return ::access(sock.c_str(), F_OK) == 0; }));
    hms_client_options_t o;
    hms_client_options_init(&o);
    o.socket_path = sock.c_str();
    o.reconnect = 0;
    hms_client_t* c = nullptr;
    Err err;
    EXPECT_EQ(hms_client_connect(&o, &c, &err), HMS_OK)
        << "round " << round << ": " << err.message();
    hms_client_free(&c);
    broker.stop();
    std::filesystem::remove_all(dir);
  }
}

TEST_P(CAbi, OneWayCallsAndServerStreams) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  Err err;
  for (int i = 1; i <= 3; ++i) {
    const std::string p = R"({"seq": )" + std::to_string(i) + "}";
    ASSERT_EQ(hms_stub_call_oneway_json(stub, "note", p.c_str(), SIZE_MAX, nullptr, &err), HMS_OK);
  }
  Str stats;
  ASSERT_EQ(hms_stub_call_json(stub, "stats", "{}", SIZE_MAX, nullptr, &stats.s, &stats.len, &err),
            HMS_OK);
  EXPECT_NE(stats.str().find(R"("notes":["1","2","3"])"), std::string::npos) << stats.str();

  hms_stream_t* s = nullptr;
  ASSERT_EQ(hms_stub_open_stream_json(stub, "count", R"({"from": 10, "n": 5})", SIZE_MAX, nullptr,
                                      &s, &err),
            HMS_OK)
      << err.message();
  std::vector<std::string> items;
  for (;;) {
    Str item;
    ASSERT_EQ(hms_stream_next_json(s, &item.s, &item.len, &err), HMS_OK) << err.message();
    if (item.s == nullptr) break;
    items.push_back(item.str());
  }
  ASSERT_EQ(items.size(), 5u);
  EXPECT_NE(items[0].find(R"("value":"10")"), std::string::npos) << items[0];
  EXPECT_NE(items[4].find(R"("value":"14")"), std::string::npos) << items[4];
  hms_stream_free(&s);

  // A stream that fails ends with its status.
  ASSERT_EQ(hms_stub_open_stream_json(stub, "count", R"({"from": 0, "n": 5, "failAt": 2})",
                                      SIZE_MAX, nullptr, &s, &err),
            HMS_OK);
  int got = 0, rc = HMS_OK;
  for (;;) {
    Str item;
    rc = hms_stream_next_json(s, &item.s, &item.len, &err);
    if (rc != HMS_OK || item.s == nullptr) break;
    ++got;
  }
  EXPECT_EQ(rc, HMS_ABORTED);
  EXPECT_EQ(got, 2);
  hms_stream_free(&s);

  // A stream method called as a call, and a call as a stream, say which to use.
  Str out;
  EXPECT_EQ(hms_stub_call_json(stub, "count", "{}", SIZE_MAX, nullptr, &out.s, &out.len, &err),
            HMS_FAILED_PRECONDITION);
  EXPECT_EQ(hms_stub_open_stream_json(stub, "echo", "{}", SIZE_MAX, nullptr, &s, &err),
            HMS_FAILED_PRECONDITION);
  hms_stub_free(&stub);
}

// A service served from "another language": pull requests on this thread, answer in JSON.
TEST_P(CAbi, ServesByPullAndAnswersWithResultsErrorsAndStreams) {
  hms_service_options_t so;
  hms_service_options_init(&so);
  EXPECT_EQ(so.concurrency, 16u);
  so.stream_methods = "count";
  so.display_name = "C test service";
  hms_service_t* svc = nullptr;
  Err err;
  ASSERT_EQ(hms_client_serve(client_, "hms.test.c", "1.2.0", kTestSchema.c_str(), "TestService",
                             &so, &svc, &err),
            HMS_OK)
      << err.message();

  std::atomic<bool> stop{false};
  std::atomic<int> served{0};
  std::thread server([&] {
    while (!stop) {
      hms_request_t* req = nullptr;
      Err e;
      const int rc = hms_service_next(svc, 100'000'000, &req, &e);
      if (rc == HMS_DEADLINE_EXCEEDED) continue;
      if (rc != HMS_OK) break;
      ++served;
      const std::string m = hms_request_method(req);
      Str params;
      EXPECT_EQ(hms_request_params_json(req, &params.s, &params.len, &e), HMS_OK);
      if (m == "echo") {
        EXPECT_GT(hms_request_caller_pid(req), 0);
        EXPECT_EQ(hms_request_caller_uid(req), uint32_t(getuid()));
        EXPECT_GT(hms_request_time_left_ns(req), 0);
        EXPECT_LT(hms_request_time_left_ns(req), INT64_MAX) << "the caller's default deadline";
        EXPECT_EQ(hms_request_cancelled(req), 0);
        EXPECT_EQ(hms_request_reply_json(&req, params.s, params.len, &e), HMS_OK) << e.message();
        EXPECT_EQ(req, nullptr);
      } else if (m == "whoami") {
        const std::string r = R"({"pid": )" + std::to_string(getpid()) +
                              R"(, "version": "c", "callerPid": )" +
                              std::to_string(hms_request_caller_pid(req)) + "}";
        EXPECT_EQ(hms_request_reply_json(&req, r.c_str(), SIZE_MAX, &e), HMS_OK);
      } else if (m == "fail") {
        EXPECT_EQ(hms_request_reply_error(&req, HMS_PERMISSION_DENIED, "not for you",
                                          R"({"role": "nurse", "needs": "doctor \"\u00e9\""})", &e),
                  HMS_OK)
            << e.message();
      } else if (m == "blob") {
        // Results that do not fit: the service learns why, the caller gets INTERNAL.
        EXPECT_EQ(hms_request_reply_json(&req, R"({"data": 5})", SIZE_MAX, &e),
                  HMS_INVALID_ARGUMENT);
        EXPECT_NE(e.message().find("data"), std::string::npos);
      } else if (m == "count") {
        EXPECT_EQ(hms_request_is_stream(req), 1);
        for (int i = 0; i < 3; ++i) {
          const std::string item = R"({"value": )" + std::to_string(100 + i) + "}";
          EXPECT_EQ(hms_request_stream_json(req, item.c_str(), SIZE_MAX, &e), HMS_OK);
        }
        EXPECT_EQ(hms_request_reply_json(&req, nullptr, 0, &e), HMS_OK);
      } else if (m == "sleep") {
        EXPECT_EQ(hms_request_traceparent(req), nullptr);
        hms_request_free(&req);  // unanswered
      } else {
        EXPECT_EQ(hms_request_reply_error(&req, HMS_UNIMPLEMENTED, "not here", nullptr, &e),
                  HMS_OK);
      }
    }
  });

  hms_client_t* caller = connect("c-abi-caller");
  hms_stub_t* stub = nullptr;
  ASSERT_EQ(hms_client_bind(caller, "hms.test.c", "^1", &stub, &err), HMS_OK) << err.message();
  EXPECT_STREQ(hms_stub_service_version(stub), "1.2.0");
  Str out;
  ASSERT_EQ(hms_stub_call_json(stub, "echo", R"({"seq": 42, "payload": "AAEC"})", SIZE_MAX, nullptr,
                               &out.s, &out.len, &err),
            HMS_OK)
      << err.message();
  EXPECT_EQ(out.str(), R"({"seq":"42","payload":"AAEC"})");
  Str who;
  ASSERT_EQ(hms_stub_call_json(stub, "whoami", "{}", SIZE_MAX, nullptr, &who.s, &who.len, &err),
            HMS_OK);
  EXPECT_NE(who.str().find(R"("version":"c")"), std::string::npos);

  Str none;
  EXPECT_EQ(hms_stub_call_json(stub, "fail", "{}", SIZE_MAX, nullptr, &none.s, &none.len, &err),
            HMS_PERMISSION_DENIED);
  EXPECT_EQ(err.message(), "not for you");
  EXPECT_EQ(err.source(), "hms.test.c");
  EXPECT_STREQ(hms_error_details_json(err.e), R"({"role":"nurse","needs":"doctor \"é\""})");

  EXPECT_EQ(hms_stub_call_json(stub, "blob", "{}", SIZE_MAX, nullptr, &none.s, &none.len, &err),
            HMS_INTERNAL);
  EXPECT_NE(err.message().find("results"), std::string::npos) << err.message();
  EXPECT_EQ(hms_stub_call_json(stub, "sleep", "{}", SIZE_MAX, nullptr, &none.s, &none.len, &err),
            HMS_INTERNAL);
  EXPECT_NE(err.message().find("dropped"), std::string::npos) << err.message();

  hms_stream_t* s = nullptr;
  ASSERT_EQ(hms_stub_open_stream_json(stub, "count", "{}", SIZE_MAX, nullptr, &s, &err), HMS_OK);
  std::vector<std::string> items;
  for (;;) {
    Str item;
    ASSERT_EQ(hms_stream_next_json(s, &item.s, &item.len, &err), HMS_OK) << err.message();
    if (item.s == nullptr) break;
    items.push_back(item.str());
  }
  ASSERT_EQ(items.size(), 3u);
  EXPECT_NE(items[2].find(R"("value":"102")"), std::string::npos);
  hms_stream_free(&s);

  // The registration carries the contract, stream flag included.
  Str contract;
  ASSERT_EQ(
      hms_client_contract_json(caller, "hms.test.c", "1.2.0", &contract.s, &contract.len, &err),
      HMS_OK);
  EXPECT_NE(contract.str().find(R"("name":"count","ordinal":5,"stream":true)"), std::string::npos);
  EXPECT_NE(contract.str().find(R"("displayName":"C test service")"), std::string::npos);

  stop = true;
  server.join();
  EXPECT_GE(served.load(), 6);
  // Stopped: new calls find no provider; next() says the service stopped.
  EXPECT_EQ(hms_service_stop(svc), HMS_OK);
  hms_request_t* req = nullptr;
  EXPECT_EQ(hms_service_next(svc, 0, &req, &err), HMS_UNAVAILABLE);
  hms_service_free(&svc);
  EXPECT_EQ(svc, nullptr);
  hms_stub_free(&stub);
  hms_client_free(&caller);
}

TEST_P(CAbi, ServiceFdSignalsWaitingRequestsAndFreeingReleasesWaitingCallers) {
  hms_service_options_t so;
  hms_service_options_init(&so);
  hms_service_t* svc = nullptr;
  Err err;
  ASSERT_EQ(hms_client_serve(client_, "hms.test.c", "1.0.0", kTestSchema.c_str(), "TestService",
                             &so, &svc, &err),
            HMS_OK)
      << err.message();
  const int fd = hms_service_fd(svc);
  ASSERT_GE(fd, 0);
  pollfd p{fd, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "nothing waits yet";

  hms_client_t* caller = connect("c-abi-caller");
  hms_stub_t* stub = nullptr;
  ASSERT_EQ(hms_client_bind(caller, "hms.test.c", "*", &stub, &err), HMS_OK) << err.message();
  hms_future_t* f = nullptr;
  ASSERT_EQ(hms_stub_call_async_json(stub, "echo", R"({"seq": 1})", SIZE_MAX, nullptr, &f, &err),
            HMS_OK);
  ASSERT_EQ(::poll(&p, 1, 20000), 1) << "readable once a request waits";
  hms_request_t* req = nullptr;
  ASSERT_EQ(hms_service_next(svc, 0, &req, &err), HMS_OK);
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "taken: nothing waits any more";

  // A request taken but not answered when the service stops: its caller hears UNAVAILABLE, and
  // answering it afterwards is refused, not a crash (nor lost without a word).
  EXPECT_EQ(hms_service_stop(svc), HMS_OK);
  hms_service_free(&svc);
  ASSERT_EQ(hms_future_wait(f, 20'000'000'000), HMS_OK);
  Str out;
  EXPECT_EQ(hms_future_result_json(f, &out.s, &out.len, &err), HMS_UNAVAILABLE);
  EXPECT_EQ(hms_request_reply_json(&req, R"({"seq": 1})", SIZE_MAX, &err), HMS_UNAVAILABLE);
  EXPECT_EQ(req, nullptr);
  hms_future_free(&f);
  hms_stub_free(&stub);
  hms_client_free(&caller);
}

TEST_P(CAbi, ServeRefusesBadSchemasAndNamesTheProblem) {
  hms_service_t* svc = nullptr;
  Err err;
  EXPECT_EQ(
      hms_client_serve(client_, "hms.x", "1.0.0", "/nonexistent/x.capnp", "X", nullptr, &svc, &err),
      HMS_NOT_FOUND);
  EXPECT_NE(err.message().find("/nonexistent/x.capnp"), std::string::npos);
  EXPECT_EQ(hms_client_serve(client_, "hms.x", "1.0.0", kTestSchema.c_str(), "NoSuch", nullptr,
                             &svc, &err),
            HMS_NOT_FOUND);
  EXPECT_NE(err.message().find("NoSuch"), std::string::npos);
  EXPECT_EQ(
      hms_client_serve(client_, "hms.x", "1.0.0", kTestSchema.c_str(), "Tick", nullptr, &svc, &err),
      HMS_INVALID_ARGUMENT);
  EXPECT_NE(err.message().find("not an interface"), std::string::npos);
  EXPECT_EQ(hms_client_serve(client_, "hms.x", "one", kTestSchema.c_str(), "TestService", nullptr,
                             &svc, &err),
            HMS_INVALID_ARGUMENT);
  hms_service_options_t so;
  hms_service_options_init(&so);
  so.stream_methods = "echo,nope";
  EXPECT_EQ(hms_client_serve(client_, "hms.x", "1.0.0", kTestSchema.c_str(), "TestService", &so,
                             &svc, &err),
            HMS_INVALID_ARGUMENT);
  EXPECT_NE(err.message().find("nope"), std::string::npos);
  // A schema that does not parse says where.
  const std::string bad = broker_.dir() + "/bad.capnp";
  FILE* fp = std::fopen(bad.c_str(), "w");
  ASSERT_NE(fp, nullptr);
  std::fputs("@0xb1d0c1a5e1a5e1a5;\ninterface Broken { m @0 () -> (x :NoSuchType); }\n", fp);
  std::fclose(fp);
  EXPECT_EQ(hms_client_serve(client_, "hms.x", "1.0.0", bad.c_str(), "Broken", nullptr, &svc, &err),
            HMS_INVALID_ARGUMENT);
  EXPECT_NE(err.message().find("NoSuchType"), std::string::npos) << err.message();
  EXPECT_EQ(svc, nullptr);
}

TEST_P(CAbi, PublishesAndSubscribesWithJson) {
  hms_publisher_t* pub = nullptr;
  Err err;
  ASSERT_EQ(hms_client_advertise_json(client_, "hms.test.ticks", kTestSchema.c_str(), "Tick", 0,
                                      &pub, &err),
            HMS_OK)
      << err.message();
  hms_client_t* reader = connect("c-abi-reader");
  hms_subscription_t* sub = nullptr;
  ASSERT_EQ(hms_client_subscribe_json(reader, "hms.test.ticks", 5000, &sub, &err), HMS_OK)
      << err.message();
  ASSERT_TRUE(waitUntil([&] { return hms_publisher_subscribers(pub) == 1; }));
  for (int i = 1; i <= 3; ++i) {
    const std::string m = R"({"seq": )" + std::to_string(i) + R"(, "payload": "AQI="})";
    ASSERT_EQ(hms_publisher_publish_json(pub, m.c_str(), SIZE_MAX, &err), HMS_OK) << err.message();
  }
  EXPECT_EQ(hms_publisher_publish_json(pub, R"({"nope": 1})", SIZE_MAX, &err),
            HMS_INVALID_ARGUMENT);
  for (int i = 1; i <= 3; ++i) {
    Str msg;
    uint64_t seq = 0;
    ASSERT_EQ(hms_subscription_next_json(sub, 10'000'000'000, &msg.s, &msg.len, &seq, &err), HMS_OK)
        << err.message();
    EXPECT_EQ(msg.str(), R"({"seq":")" + std::to_string(i) + R"(","payload":"AQI="})");
    EXPECT_EQ(seq, uint64_t(i));
  }
  Str none;
  uint64_t seq = 0;
  EXPECT_EQ(hms_subscription_next_json(sub, 50'000'000, &none.s, &none.len, &seq, &err),
            HMS_DEADLINE_EXCEEDED);

  // A second publisher of the same topic is refused; with no schema it takes the known type.
  hms_publisher_t* second = nullptr;
  EXPECT_EQ(hms_client_advertise_json(reader, "hms.test.ticks", nullptr, nullptr, 0, &second, &err),
            HMS_ALREADY_EXISTS);
  EXPECT_EQ(hms_client_advertise_json(reader, "hms.test.ticks", kTestSchema.c_str(), nullptr, 0,
                                      &second, &err),
            HMS_INVALID_ARGUMENT);
  hms_publisher_free(&pub);
  EXPECT_EQ(hms_subscription_next_json(sub, 10'000'000'000, &none.s, &none.len, &seq, &err),
            HMS_UNAVAILABLE);
  hms_subscription_free(&sub);
  hms_client_free(&reader);
}

TEST_P(CAbi, PublishesAndSubscribesRaw) {
  hms_publisher_t* pub = nullptr;
  Err err;
  ASSERT_EQ(hms_client_advertise_json(client_, "hms.test.rawticks", kTestSchema.c_str(), "Tick", 0,
                                      &pub, &err),
            HMS_OK)
      << err.message();
  hms_client_t* reader = connect("c-abi-reader");
  hms_subscription_t* raw = nullptr;
  hms_subscription_t* json = nullptr;
  ASSERT_EQ(hms_client_subscribe_json(reader, "hms.test.rawticks", 5000, &raw, &err), HMS_OK);
  ASSERT_EQ(hms_client_subscribe_json(reader, "hms.test.rawticks", 5000, &json, &err), HMS_OK);
  ASSERT_TRUE(waitUntil([&] { return hms_publisher_subscribers(pub) == 2; }));
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    void* data = nullptr;
    size_t capacity = 0;
    ASSERT_EQ(hms_publisher_loan_raw(pub, &data, &capacity, &err), HMS_OK) << err.message();
    capnp::FlatMessageBuilder mb(
        kj::arrayPtr(static_cast<capnp::word*>(data), capacity / sizeof(capnp::word)));
    auto tick = mb.initRoot<hms::ffi::test::Tick>();
    tick.setSeq(seq * 100);
    tick.setPayload(kj::StringPtr("raw").asBytes());
    ASSERT_EQ(hms_publisher_publish_raw(pub, mb.getSegmentsForOutput()[0].size() * 8, &err), HMS_OK)
        << err.message();
  }
  // A loan given back publishes nothing; sizes that are not whole words are refused.
  void* data = nullptr;
  size_t capacity = 0;
  ASSERT_EQ(hms_publisher_loan_raw(pub, &data, &capacity, &err), HMS_OK);
  hms_publisher_abandon_raw(pub);
  ASSERT_EQ(hms_publisher_loan_raw(pub, &data, &capacity, &err), HMS_OK);
  EXPECT_EQ(hms_publisher_publish_raw(pub, 12, &err), HMS_INVALID_ARGUMENT);
  EXPECT_EQ(hms_publisher_publish_raw(pub, 8, &err), HMS_FAILED_PRECONDITION) << "no loan";

  for (uint64_t seq = 1; seq <= 3; ++seq) {
    const void* msg = nullptr;
    size_t size = 0;
    uint64_t n = 0;
    ASSERT_EQ(hms_subscription_next_raw(raw, 10'000'000'000, &msg, &size, &n, &err), HMS_OK)
        << err.message();
    EXPECT_EQ(n, seq);
    kj::ArrayPtr<const capnp::word> seg;
    auto in = readSegment(msg, size, seg);
    EXPECT_EQ(in.getRoot<hms::ffi::test::Tick>().getSeq(), seq * 100);
    Str j;
    ASSERT_EQ(hms_subscription_next_json(json, 10'000'000'000, &j.s, &j.len, &n, &err), HMS_OK);
    EXPECT_EQ(j.str(), R"({"seq":")" + std::to_string(seq * 100) + R"(","payload":"cmF3"})");
  }
  const void* msg = nullptr;
  size_t size = 0;
  EXPECT_EQ(hms_subscription_next_raw(raw, 50'000'000, &msg, &size, nullptr, &err),
            HMS_DEADLINE_EXCEEDED);
  hms_subscription_free(&raw);
  hms_subscription_free(&json);
  hms_publisher_free(&pub);
  hms_client_free(&reader);
}

TEST_P(CAbi, OneStubFromManyThreadsTakesTurns) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const int seq = t * 1000 + i;
        const std::string p = R"({"seq": )" + std::to_string(seq) + "}";
        Str out;
        Err err;
        if (hms_stub_call_json(stub, "echo", p.c_str(), SIZE_MAX, nullptr, &out.s, &out.len,
                               &err) == HMS_OK &&
            out.str().find("\"seq\":\"" + std::to_string(seq) + "\"") != std::string::npos) {
          ++ok;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 200);
  hms_stub_free(&stub);
}

TEST_P(CAbi, AStubOutlivingItsClientAnswersInsteadOfCrashing) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  hms_client_free(&client_);
  EXPECT_EQ(client_, nullptr);
  Str out;
  Err err;
  const int rc =
      hms_stub_call_json(stub, "echo", R"({"seq": 1})", SIZE_MAX, nullptr, &out.s, &out.len, &err);
  EXPECT_NE(rc, HMS_OK);
  EXPECT_EQ(err.code(), rc);
  hms_stub_free(&stub);
}

TEST_P(CAbi, TheServiceKilledMidCallIsUnavailable) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  hms_future_t* f = nullptr;
  Err err;
  ASSERT_EQ(
      hms_stub_call_async_json(stub, "sleep", R"({"ms": 20000})", SIZE_MAX, nullptr, &f, &err),
      HMS_OK);
  service_.signal(SIGKILL);
  (void)service_.wait();
  ASSERT_EQ(hms_future_wait(f, 20'000'000'000), HMS_OK);
  Str out;
  EXPECT_EQ(hms_future_result_json(f, &out.s, &out.len, &err), HMS_UNAVAILABLE) << err.message();
  hms_future_free(&f);
  hms_stub_free(&stub);
}

TEST_P(CAbi, AForkedChildIsRefusedAndTheParentGoesOn) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // In the child: every call on the parent's handles is FAILED_PRECONDITION; freeing them
    // leaves the parent's rings and broker connection alone.
    char* out = nullptr;
    int bad = 0;
    if (hms_stub_call_json(stub, "echo", "{}", SIZE_MAX, nullptr, &out, nullptr, nullptr) !=
        HMS_FAILED_PRECONDITION) {
      bad |= 1;
    }
    hms_stub_t* s2 = nullptr;
    if (hms_client_bind(client_, "hms.test", "*", &s2, nullptr) != HMS_FAILED_PRECONDITION) {
      bad |= 2;
    }
    hms_stub_free(&stub);
    hms_client_free(&client_);
    _exit(bad);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  Str out;
  Err err;
  EXPECT_EQ(
      hms_stub_call_json(stub, "echo", R"({"seq": 3})", SIZE_MAX, nullptr, &out.s, &out.len, &err),
      HMS_OK)
      << err.message();
  hms_stub_free(&stub);
}

using hms::ffi::test::TestService;

TEST_P(CAbi, RawCallsAreBuiltInTheLoanAndReadInPlace) {
  hms_stub_t* stub = bind();
  ASSERT_NE(stub, nullptr);
  Err err;
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    void* data = nullptr;
    size_t capacity = 0;
    ASSERT_EQ(hms_stub_loan_raw(stub, "echo", nullptr, &data, &capacity, &err), HMS_OK)
        << err.message();
    ASSERT_NE(data, nullptr);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(data) % 8, 0u);
    ASSERT_GE(capacity, 1024u);
    // Built in place: Cap'n Proto's FlatMessageBuilder over the loan, no copy.
    capnp::FlatMessageBuilder mb(
        kj::arrayPtr(static_cast<capnp::word*>(data), capacity / sizeof(capnp::word)));
    auto params = mb.initRoot<TestService::EchoParams>();
    params.setSeq(seq);
    params.setPayload(kj::StringPtr("raw bytes").asBytes());
    const size_t size = mb.getSegmentsForOutput()[0].size() * sizeof(capnp::word);
    hms_reply_t* reply = nullptr;
    ASSERT_EQ(hms_stub_send_raw(stub, size, &reply, &err), HMS_OK) << err.message();
    kj::ArrayPtr<const capnp::word> seg;
    auto reader = readSegment(hms_reply_data(reply), hms_reply_size(reply), seg);
    auto results = reader.getRoot<TestService::EchoResults>();
    EXPECT_EQ(results.getSeq(), seq);
    EXPECT_EQ(kj::str(results.getPayload().asChars()), "raw bytes");
    hms_reply_free(&reply);
    EXPECT_EQ(reply, nullptr);
  }

  // A loan offers the channel's largest message, not only the space kept clean for the small
  // ones sent before: a 256 KiB payload fits (the test service's rings are 1 MiB).
  {
    void* data = nullptr;
    size_t capacity = 0;
    ASSERT_EQ(hms_stub_loan_raw(stub, "echo", nullptr, &data, &capacity, &err), HMS_OK)
        << err.message();
    ASSERT_GE(capacity, size_t(400) << 10);  // the largest message is a little under 512 KiB
    capnp::FlatMessageBuilder mb(
        kj::arrayPtr(static_cast<capnp::word*>(data), capacity / sizeof(capnp::word)));
    auto params = mb.initRoot<TestService::EchoParams>();
    params.setSeq(9);
    auto payload = params.initPayload(256 << 10);
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = uint8_t(i * 13);
    const size_t size = mb.getSegmentsForOutput()[0].size() * sizeof(capnp::word);
    hms_reply_t* reply = nullptr;
    ASSERT_EQ(hms_stub_send_raw(stub, size, &reply, &err), HMS_OK) << err.message();
    kj::ArrayPtr<const capnp::word> seg;
    auto reader = readSegment(hms_reply_data(reply), hms_reply_size(reply), seg);
    auto echoed = reader.getRoot<TestService::EchoResults>().getPayload();
    ASSERT_EQ(echoed.size(), size_t(256 << 10));
    bool same = true;
    for (size_t i = 0; i < echoed.size(); ++i) same = same && echoed[i] == uint8_t(i * 13);
    EXPECT_TRUE(same);
    hms_reply_free(&reply);
  }

  // Sizes that are not whole words, or beyond the loan, are refused and the loan given back.
  void* data = nullptr;
  size_t capacity = 0;
  ASSERT_EQ(hms_stub_loan_raw(stub, "echo", nullptr, &data, &capacity, &err), HMS_OK);
  hms_reply_t* reply = nullptr;
  EXPECT_EQ(hms_stub_send_raw(stub, 12, &reply, &err), HMS_INVALID_ARGUMENT);
  EXPECT_NE(err.message().find("multiple of 8"), std::string::npos);
  ASSERT_EQ(hms_stub_loan_raw(stub, "echo", nullptr, &data, &capacity, &err), HMS_OK);
  EXPECT_EQ(hms_stub_send_raw(stub, capacity + 8, &reply, &err), HMS_INVALID_ARGUMENT);
  EXPECT_EQ(hms_stub_send_raw(stub, 8, &reply, &err), HMS_FAILED_PRECONDITION)
      << "no loan is out any more";
  // A loan abandoned: the stub goes on.
  ASSERT_EQ(hms_stub_loan_raw(stub, "echo", nullptr, &data, &capacity, &err), HMS_OK);
  EXPECT_EQ(hms_stub_loan_raw(stub, "echo", nullptr, &data, &capacity, &err),
            HMS_FAILED_PRECONDITION)
      << "one loan at a time";
  hms_stub_abandon_raw(stub);
  EXPECT_EQ(hms_stub_loan_raw(stub, "nope", nullptr, &data, &capacity, &err), HMS_UNIMPLEMENTED);
  EXPECT_EQ(hms_stub_loan_raw(stub, "count", nullptr, &data, &capacity, &err),
            HMS_FAILED_PRECONDITION);

  // A malformed message (a root pointer far out of the segment) is refused by the service; the
  // channel goes on.
  ASSERT_EQ(hms_stub_loan_raw(stub, "echo", nullptr, &data, &capacity, &err), HMS_OK);
  const uint64_t badPointer = 0x00010000fffffff0ull;  // struct pointer, offset far away
  std::memcpy(data, &badPointer, sizeof badPointer);
  const int rc = hms_stub_send_raw(stub, 8, &reply, &err);
  EXPECT_EQ(rc, HMS_INVALID_ARGUMENT) << err.message();
  EXPECT_EQ(reply, nullptr);
  Str out;
  EXPECT_EQ(
      hms_stub_call_json(stub, "echo", R"({"seq": 9})", SIZE_MAX, nullptr, &out.s, &out.len, &err),
      HMS_OK)
      << err.message();
  hms_stub_free(&stub);
}

TEST_P(CAbi, ServicesReadParamsAndAnswerRaw) {
  hms_service_t* svc = nullptr;
  Err err;
  ASSERT_EQ(hms_client_serve(client_, "hms.test.raw", "1.0.0", kTestSchema.c_str(), "TestService",
                             nullptr, &svc, &err),
            HMS_OK)
      << err.message();
  std::thread server([&] {
    for (int i = 0; i < 2; ++i) {
      hms_request_t* req = nullptr;
      Err e;
      if (hms_service_next(svc, 20'000'000'000, &req, &e) != HMS_OK) return;
      kj::ArrayPtr<const capnp::word> seg;
      auto in = readSegment(hms_request_params_data(req), hms_request_params_size(req), seg);
      auto params = in.getRoot<TestService::EchoParams>();
      void* data = nullptr;
      size_t capacity = 0;
      EXPECT_EQ(hms_request_loan_raw(req, &data, &capacity, &e), HMS_OK) << e.message();
      capnp::FlatMessageBuilder mb(
          kj::arrayPtr(static_cast<capnp::word*>(data), capacity / sizeof(capnp::word)));
      auto results = mb.initRoot<TestService::EchoResults>();
      results.setSeq(params.getSeq() * 10);
      results.setPayload(params.getPayload());
      if (i == 0) {
        EXPECT_EQ(hms_request_reply_raw(&req, mb.getSegmentsForOutput()[0].size() * 8, &e), HMS_OK)
            << e.message();
        EXPECT_EQ(hms_request_params_data(req), nullptr);
      } else {
        // JSON after a raw loan is refused: the caller hears INTERNAL, the service why.
        EXPECT_EQ(hms_request_reply_json(&req, "{}", SIZE_MAX, &e), HMS_FAILED_PRECONDITION);
      }
    }
  });
  hms_client_t* caller = connect("c-abi-caller");
  hms_stub_t* stub = nullptr;
  ASSERT_EQ(hms_client_bind(caller, "hms.test.raw", "*", &stub, &err), HMS_OK) << err.message();
  Str out;
  ASSERT_EQ(hms_stub_call_json(stub, "echo", R"({"seq": 4, "payload": "AQID"})", SIZE_MAX, nullptr,
                               &out.s, &out.len, &err),
            HMS_OK)
      << err.message();
  EXPECT_EQ(out.str(), R"({"seq":"40","payload":"AQID"})");
  Str out2;
  EXPECT_EQ(hms_stub_call_json(stub, "echo", R"({"seq": 5})", SIZE_MAX, nullptr, &out2.s, &out2.len,
                               &err),
            HMS_INTERNAL);
  server.join();
  hms_stub_free(&stub);
  hms_client_free(&caller);
  hms_service_free(&svc);
}

INSTANTIATE_TEST_SUITE_P(Transports, CAbi,
                         ::testing::Values(HMS_TRANSPORT_AUTO, HMS_TRANSPORT_SOCKET),
                         [](const ::testing::TestParamInfo<hms_transport_t>& i) {
                           return i.param == HMS_TRANSPORT_SOCKET ? "socket" : "shm";
                         });

}  // namespace
