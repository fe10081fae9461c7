// json: the JSON-level call, from C++ and through the C ABI, beside the typed call (P12).
#include "hms/ffi/json.hpp"

#include <cstdio>
#include <cstring>
#include <string_view>

#include "hms/ffi/hms_ffi.h"
#include "patterns.hpp"

namespace hms::ffi::bench_tool {

namespace {

std::string base64(const uint8_t* p, size_t n) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t v = uint32_t(p[i]) << 16 | (i + 1 < n ? uint32_t(p[i + 1]) << 8 : 0) |
                       (i + 2 < n ? p[i + 2] : 0);
    out += k[v >> 18 & 63];
    out += k[v >> 12 & 63];
    out += i + 1 < n ? k[v >> 6 & 63] : '=';
    out += i + 2 < n ? k[v & 63] : '=';
  }
  return out;
}

}  // namespace

std::optional<JsonResult> ffiJson(const Options& o, const std::string& self,
                                  const std::string& socket, const std::string& mode) {
  EchoServer server(o, self, socket, mode);
  if (!server.up()) return std::nullopt;
  EchoCaller caller(socket, mode);
  if (!caller.stub) return std::nullopt;
  auto json = caller.client->bindJson("hms.bench.echo." + mode);
  if (!json) {
    std::fprintf(stderr, "hms-ffi-bench: %s\n", json.status().toString().c_str());
    ++gChecksFailed;
    return std::nullopt;
  }
  // The requests (and so the replies: an echo) a user would write, one per payload byte value.
  std::vector<std::string> requests;
  for (int v = 0; v < 256; ++v) {
    uint8_t payload[64];
    std::memset(payload, v, sizeof(payload));
    requests.push_back("{\"payload\":\"" + base64(payload, sizeof(payload)) + "\"}");
  }
  bool failed = false;
  uint64_t sink = 0;
  auto typed = [&](const Options& so) {
    return timeLoop(so, [&](int i) {
      auto reply = caller.stub->call<&Echo::Client::echoRequest>([&](auto p) {
        auto d = p.initPayload(64);
        std::memset(d.begin(), i & 0xff, 64);
      });
      if (!reply) {
        failed = true;
        return;
      }
      sink += reply->results().getPayload()[63];
    });
  };
  Sliced r = slicedAgainst(o, 1000, typed, [&](int i) {
    const std::string& req = requests[size_t(i & 0xff)];
    auto reply = json->call("echo", req);
    if (!reply || *reply != req) failed = true;
  });
  if (failed) {
    std::fprintf(stderr, "hms-ffi-bench: some %s JSON or typed calls failed or came back wrong\n",
                 mode.c_str());
    ++gChecksFailed;
    return std::nullopt;
  }
  JsonResult out;
  out.typed = summarize("hms-ffi typed call, " + mode, r.baseline);
  out.json = summarize("C++ JsonStub call, " + mode, r.measured);
  out.ratioP50 = r.ratioP50;

  // The same through the C ABI, as any other language's binding makes it.
  hms_client_options_t co;
  hms_client_options_init(&co);
  co.socket_path = socket.c_str();
  co.name = "bench-c-abi-caller";
  co.wait_mode = mode == "spin"       ? HMS_WAIT_SPIN
                 : mode == "blocking" ? HMS_WAIT_BLOCKING
                                      : HMS_WAIT_ADAPTIVE;
  hms_client_t* c = nullptr;
  hms_stub_t* cstub = nullptr;
  hms_error_t* err = nullptr;
  if (hms_client_connect(&co, &c, &err) != HMS_OK ||
      hms_client_bind(c, ("hms.bench.echo." + mode).c_str(), "*", &cstub, &err) != HMS_OK) {
    std::fprintf(stderr, "hms-ffi-bench: C ABI: %s\n", hms_error_message(err));
    hms_error_free(&err);
    hms_client_free(&c);
    ++gChecksFailed;
    return out;
  }
  Sliced cj = slicedAgainst(o, 1000, typed, [&](int i) {
    const std::string& req = requests[size_t(i & 0xff)];
    char* reply = nullptr;
    size_t len = 0;
    if (hms_stub_call_json(cstub, "echo", req.data(), req.size(), nullptr, &reply, &len, nullptr) !=
            HMS_OK ||
        std::string_view(reply, len) != req) {
      failed = true;
    }
    hms_string_free(&reply);
  });
  Sliced cr = slicedAgainst(o, 1000, typed, [&](int i) {
    void* data = nullptr;
    size_t capacity = 0;
    if (hms_stub_loan_raw(cstub, "echo", nullptr, &data, &capacity, nullptr) != HMS_OK) {
      failed = true;
      return;
    }
    capnp::FlatMessageBuilder mb(
        kj::arrayPtr(static_cast<capnp::word*>(data), capacity / sizeof(capnp::word)));
    auto d = mb.initRoot<Echo::EchoParams>().initPayload(64);
    std::memset(d.begin(), i & 0xff, 64);
    hms_reply_t* reply = nullptr;
    if (hms_stub_send_raw(cstub, mb.getSegmentsForOutput()[0].size() * sizeof(capnp::word), &reply,
                          nullptr) != HMS_OK) {
      failed = true;
      return;
    }
    kj::ArrayPtr<const capnp::word> seg(static_cast<const capnp::word*>(hms_reply_data(reply)),
                                        hms_reply_size(reply) / sizeof(capnp::word));
    capnp::SegmentArrayMessageReader rd(kj::arrayPtr(&seg, 1));
    sink += rd.getRoot<Echo::EchoResults>().getPayload()[63];
    hms_reply_free(&reply);
  });
  hms_stub_free(&cstub);
  hms_client_free(&c);
  if (failed) {
    std::fprintf(stderr, "hms-ffi-bench: some %s C ABI calls failed or came back wrong\n",
                 mode.c_str());
    ++gChecksFailed;
    return out;
  }
  if (sink == 42) std::fprintf(stderr, " ");
  out.cJson = summarize("C ABI JSON call, " + mode, cj.measured);
  out.cJsonRatioP50 = cj.ratioP50;
  out.cRaw = summarize("C ABI raw call, " + mode, cr.measured);
  out.cRawRatioP50 = cr.ratioP50;
  return out;
}

}  // namespace hms::ffi::bench_tool
