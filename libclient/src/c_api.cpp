// The C ABI (hms/ffi/hms_ffi.h, docs/c-abi.md): thin wrappers over the C++ client's JSON level.
// Every entry point checks its handles, never lets an exception cross into C, and refuses a
// forked child's use of its parent's handles. Serving is a pull: a library worker thread that
// receives a request hands it to whoever calls hms_service_next and waits for the answer, so the
// caller's language runtime is only ever entered from its own threads.
#include "hms/ffi/hms_ffi.h"

#include <capnp/schema-loader.h>
#include <capnp/schema-parser.h>
#include <kj/filesystem.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "audit.hpp"
#include "hms/ffi/client.hpp"
#include "hms/ffi/json.hpp"
#include "json_codec.hpp"
#include "ring_message.hpp"
#include "schema_nodes.hpp"
#include "tracing_impl.hpp"

using hms::ffi::CallContext;
using hms::ffi::Caller;
using hms::ffi::Client;
using hms::ffi::Result;
using hms::ffi::Status;
using hms::ffi::StatusCode;

struct hms_error {
  int code = 0;
  std::string message;
  std::string source;
  std::vector<std::pair<std::string, std::string>> details;
  std::string detailsJson;
};

namespace {

// ---- forks ------------------------------------------------------------------------------------

// Bumped in every forked child: a handle made under another generation belongs to the parent.
std::atomic<uint64_t> gForkGeneration{0};
std::once_flag gAtForkOnce;

void registerAtFork() {
  std::call_once(gAtForkOnce, [] {
    pthread_atfork(nullptr, nullptr,
                   [] { gForkGeneration.fetch_add(1, std::memory_order_relaxed); });
  });
}

uint64_t forkGeneration() {
  return gForkGeneration.load(std::memory_order_relaxed);
}

// ---- errors and strings -----------------------------------------------------------------------

std::string jsonEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  hms::ffi::detail::appendJsonString(out, s);
  return out;
}

int setError(hms_error_t** err, const Status& s) {
  if (err != nullptr) {
    auto* e = new (std::nothrow) hms_error;
    if (e != nullptr) {
      e->code = int(s.code());
      e->message = s.message();
      e->source = s.source();
      e->details = s.details();
      std::string j = "{";
      for (const auto& [k, v] : e->details) {
        if (j.size() > 1) j += ',';
        j += jsonEscape(k) + ':' + jsonEscape(v);
      }
      e->detailsJson = j + '}';
    }
    *err = e;
  }
  return int(s.code());
}

int setError(hms_error_t** err, StatusCode code, std::string message) {
  return setError(err, Status(code, std::move(message)));
}

int nullArgument(hms_error_t** err, const char* what) {
  return setError(err, StatusCode::kInvalidArgument, std::string(what) + " is NULL");
}

int forked(hms_error_t** err, const char* what) {
  return setError(err, StatusCode::kFailedPrecondition,
                  std::string("this ") + what +
                      " belongs to the process this one was forked from; a forked child must "
                      "connect anew with hms_client_connect");
}

// Runs `f`, turning any exception into a status: nothing may unwind into C.
template <class F>
int guarded(hms_error_t** err, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return setError(err, StatusCode::kResourceExhausted, "out of memory");
  } catch (const kj::Exception& e) {
    return setError(err, StatusCode::kInternal, e.getDescription().cStr());
  } catch (const std::exception& e) {
    return setError(err, StatusCode::kInternal, e.what());
  } catch (...) {
    return setError(err, StatusCode::kInternal, "unknown exception");
  }
}

std::string_view view(const char* p, size_t len) {
  if (p == nullptr) return {};
  return len == SIZE_MAX ? std::string_view(p) : std::string_view(p, len);
}

// A malloc'd NUL-terminated copy (freed by hms_string_free), its length in *len.
int giveString(const std::string& s, char** out, size_t* len, hms_error_t** err) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p == nullptr) return setError(err, StatusCode::kResourceExhausted, "out of memory");
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  *out = p;
  if (len != nullptr) *len = s.size();
  return 0;
}

// Reads a JSON object whose values are strings ({"field":"patientId"}): error details.
Result<Status::Details> parseDetails(std::string_view j) {
  Status::Details out;
  size_t i = 0;
  auto ws = [&] {
    while (i < j.size() && (j[i] == ' ' || j[i] == '\n' || j[i] == '\r' || j[i] == '\t')) ++i;
  };
  auto bad = [&](const char* what) {
    return Status(StatusCode::kInvalidArgument,
                  std::string("details_json: ") + what + " at offset " + std::to_string(i) +
                      " (expected an object of strings, e.g. {\"field\":\"patientId\"})");
  };
  auto str = [&](std::string& s) -> bool {
    if (i >= j.size() || j[i] != '"') return false;
    ++i;
    while (i < j.size() && j[i] != '"') {
      char c = j[i++];
      if (c != '\\') {
        s += c;
        continue;
      }
      if (i >= j.size()) return false;
      c = j[i++];
      switch (c) {
        case '"': case '\\': case '/': s += c; break;
        case 'n': s += '\n'; break;
        case 't': s += '\t'; break;
        case 'r': s += '\r'; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'u': {
          if (i + 4 > j.size()) return false;
          unsigned cp = 0;
          for (int k = 0; k < 4; ++k) {
            const char h = j[i++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= unsigned(h - '0');
            else if (h >= 'a' && h <= 'f') cp |= unsigned(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') cp |= unsigned(h - 'A' + 10);
            else return false;
          }
          // Basic multilingual plane only; a surrogate becomes U+FFFD.
          if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
          if (cp < 0x80) {
            s += char(cp);
          } else if (cp < 0x800) {
            s += char(0xC0 | (cp >> 6));
            s += char(0x80 | (cp & 0x3F));
          } else {
            s += char(0xE0 | (cp >> 12));
            s += char(0x80 | ((cp >> 6) & 0x3F));
            s += char(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: return false;
      }
    }
    if (i >= j.size()) return false;
    ++i;
    return true;
  };
  ws();
  if (i >= j.size() || j[i] != '{') return bad("no object");
  ++i;
  ws();
  if (i < j.size() && j[i] == '}') {
    ++i;
  } else {
    for (;;) {
      std::string k, v;
      ws();
      if (!str(k)) return bad("a key that is not a string");
      ws();
      if (i >= j.size() || j[i] != ':') return bad("no ':'");
      ++i;
      ws();
      if (!str(v)) return bad("a value that is not a string");
      out.emplace_back(std::move(k), std::move(v));
      ws();
      if (i < j.size() && j[i] == ',') {
        ++i;
        continue;
      }
      if (i < j.size() && j[i] == '}') {
        ++i;
        break;
      }
      return bad("no ',' or '}'");
    }
  }
  ws();
  if (i != j.size()) return bad("text after the object");
  return out;
}

// Bounds given in nanoseconds go into now + bound arithmetic: beyond ten years (INT64_MAX
// included) they mean "no bound" and are clamped there, so that nothing overflows.
constexpr int64_t kLongestNs = int64_t(10) * 365 * 24 * 3600 * 1'000'000'000;

int64_t clampNs(int64_t ns) {
  return ns > kLongestNs ? kLongestNs : ns;
}

Result<hms::ffi::JsonCallOptions> callOptions(const hms_call_options_t* o) {
  hms::ffi::JsonCallOptions out;
  if (o == nullptr) return out;
  if (o->timeout_ns < 0) {
    return Status(StatusCode::kInvalidArgument, "timeout_ns is negative");
  }
  out.timeout = std::chrono::nanoseconds(clampNs(o->timeout_ns));
  out.pretty = o->pretty != 0;
  if (o->traceparent != nullptr) {
    auto tc = hms::ffi::TraceContext::parse(o->traceparent);
    if (!tc.ok()) return tc.status();
    out.trace = *tc;
  }
  return out;
}

// ---- schema files -----------------------------------------------------------------------------

// A type of a schema file parsed at run time, loaded into a SchemaLoader of its own (with every
// node it reaches) so that the parser and its files need not stay around.
struct LoadedType {
  std::shared_ptr<const capnp::SchemaLoader> loader;
  capnp::Schema schema;
};

Result<LoadedType> loadSchemaType(const std::string& file, const std::string& typeName,
                                  const char* importPath) {
  std::vector<std::string> dirs;
  std::string path = importPath != nullptr ? importPath : "/usr/include:/usr/local/include";
  for (size_t b = 0; b <= path.size();) {
    size_t e = path.find(':', b);
    if (e == std::string::npos) e = path.size();
    if (e > b) dirs.push_back(path.substr(b, e - b));
    b = e + 1;
  }
  if (::access(file.c_str(), R_OK) != 0) {
    return Status(StatusCode::kNotFound,
                  "schema file '" + file + "' cannot be read: " + std::strerror(errno));
  }
  Result<LoadedType> out = Status(StatusCode::kInternal, "unset");
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 auto fs = kj::newDiskFilesystem();
                 std::vector<kj::Own<const kj::ReadableDirectory>> owned;
                 std::vector<const kj::ReadableDirectory*> imports;
                 for (const auto& d : dirs) {
                   auto p = fs->getCurrentPath().eval(d.c_str());
                   KJ_IF_MAYBE (dir, fs->getRoot().tryOpenSubdir(p)) {
                     imports.push_back(dir->get());
                     owned.push_back(kj::mv(*dir));
                   }
                 }
                 capnp::SchemaParser parser;
                 auto filePath = fs->getCurrentPath().eval(file.c_str());
                 capnp::ParsedSchema parsed = parser.parseFromDirectory(
                     fs->getRoot(), kj::mv(filePath), kj::arrayPtr(imports.data(), imports.size()));
                 // "Outer.Inner" walks nested declarations.
                 capnp::ParsedSchema at = parsed;
                 for (size_t b = 0; b <= typeName.size();) {
                   size_t e2 = typeName.find('.', b);
                   if (e2 == std::string::npos) e2 = typeName.size();
                   const std::string part = typeName.substr(b, e2 - b);
                   KJ_IF_MAYBE (n, at.findNested(part.c_str())) {
                     at = *n;
                   } else {
                     out = Status(StatusCode::kNotFound, "schema file '" + file +
                                                             "' declares no '" + typeName + "'");
                     return;
                   }
                   b = e2 + 1;
                 }
                 auto loader = std::make_shared<capnp::SchemaLoader>();
                 for (auto s : hms::ffi::detail::reachableSchemas(at)) loader->load(s.getProto());
                 out = LoadedType{loader, loader->get(at.getProto().getId())};
               })) {
    return Status(StatusCode::kInvalidArgument,
                  "schema file '" + file + "' does not parse: " + e->getDescription().cStr());
  }
  return out;
}

}  // namespace

// ---- handles ----------------------------------------------------------------------------------

namespace {
struct ServiceState;
}

struct hms_client {
  std::unique_ptr<Client> client;
  uint64_t generation = 0;
  std::mutex servicesMu;
  std::list<std::weak_ptr<ServiceState>> services;  // to let go of before the client goes
};

struct hms_stub {
  std::optional<hms::ffi::JsonStub> stub;
  std::string id, version;
  uint64_t generation = 0;
};

namespace {
struct FutureState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::optional<Result<std::string>> result;
  int fd = -1;
};
}  // namespace

struct hms_future {
  std::shared_ptr<FutureState> state;
  std::optional<hms::ffi::JsonCallHandle> handle;
  bool taken = false;
  uint64_t generation = 0;
};

struct hms_reply {
  std::optional<hms::ffi::RawReply> reply;
  uint64_t generation = 0;
};

struct hms_stream {
  std::optional<hms::ffi::JsonStream> stream;
  uint64_t generation = 0;
};

struct hms_publisher {
  std::optional<hms::ffi::JsonPublisher> publisher;
  uint64_t generation = 0;
};

struct hms_subscription {
  std::optional<hms::ffi::JsonSubscription> subscription;
  uint64_t generation = 0;
};

namespace {

// A request handed to the caller's code. The library's worker thread that received it waits,
// holding the channel, until it is answered (or the service is let go of); the pointers into the
// rings are used only under `mu` while neither has happened.
struct PendingRequest {
  std::mutex mu;
  std::condition_variable cv;
  bool answered = false;
  bool orphaned = false;  // the service was stopped or freed: the worker stopped waiting
  Status status;          // what the handler returns
  CallContext* ctx = nullptr;
  capnp::MessageReader* params = nullptr;
  capnp::MessageBuilder* results = nullptr;
  hms::ffi::detail::StreamSink* sink = nullptr;
  capnp::StructSchema paramsType, resultsType;
  std::shared_ptr<const capnp::SchemaLoader> loader;  // keeps the types
  std::string method;
  bool stream = false;
  int32_t callerPid = 0;
  uint32_t callerUid = 0;
  std::string callerName;
  Caller caller;
  std::string callerJson;  // hms_request_caller_json(), made at its first call
  int64_t deadlineNs = INT64_MAX;
  std::string traceparent;
  bool hasTrace = false;
  bool rawLoaned = false;  // the results are being written raw (hms_request_loan_raw)

  void orphan() {
    std::lock_guard lock(mu);
    orphaned = true;
    cv.notify_all();
  }
};

struct ServiceState {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<PendingRequest>> queue;   // waiting for hms_service_next
  std::list<std::weak_ptr<PendingRequest>> live;       // handed out or queued
  bool stopped = false;
  int fd = -1;  // eventfd (semaphore): readable while requests wait
  std::string serviceId;

  // Stops handing out requests and releases every worker still waiting for an answer.
  void release() {
    std::list<std::weak_ptr<PendingRequest>> all;
    {
      std::lock_guard lock(mu);
      stopped = true;
      queue.clear();
      all.swap(live);
      cv.notify_all();
    }
    for (auto& w : all) {
      if (auto r = w.lock()) r->orphan();
    }
  }

  // Runs on a library worker (or stream) thread: queues the request and waits for its answer.
  Status handle(std::shared_ptr<PendingRequest> req) {
    {
      std::lock_guard lock(mu);
      if (stopped) return Status(StatusCode::kUnavailable, "service " + serviceId + " is stopping");
      queue.push_back(req);
      live.push_back(req);
      for (auto it = live.begin(); it != live.end();) {
        it = it->expired() ? live.erase(it) : std::next(it);
      }
      if (fd >= 0) {
        const uint64_t one = 1;
        (void)!::write(fd, &one, sizeof one);
      }
      cv.notify_one();
    }
    std::unique_lock lock(req->mu);
    req->cv.wait(lock, [&] { return req->answered || req->orphaned; });
    Status out = req->answered ? req->status
                               : Status(StatusCode::kUnavailable,
                                        "service " + serviceId + " stopped before answering");
    req->ctx = nullptr;
    req->params = nullptr;
    req->results = nullptr;
    req->sink = nullptr;
    return out;
  }
};

}  // namespace

struct hms_service {
  std::shared_ptr<ServiceState> state;
  std::optional<hms::ffi::ServiceHandle> handle;
  std::shared_ptr<const capnp::SchemaLoader> loader;
  uint64_t generation = 0;
};

struct hms_request {
  std::shared_ptr<PendingRequest> req;
  uint64_t generation = 0;
};

namespace {

template <class H>
bool foreign(const H* h) {
  return h->generation != forkGeneration();
}

// Frees a handle; in a forked child its C++ object is left alone (its threads and rings are the
// parent's: destroying it could write to them).
template <class H>
void freeHandle(H** h) {
  if (h == nullptr || *h == nullptr) return;
  if (foreign(*h)) {
    *h = nullptr;  // leaked on purpose
    return;
  }
  delete *h;
  *h = nullptr;
}

}  // namespace

extern "C" {

uint32_t hms_abi_version(void) {
  return (uint32_t(HMS_ABI_VERSION_MAJOR) << 16) | HMS_ABI_VERSION_MINOR;
}

const char* hms_status_name(int code) {
  if (code < 0 || code > 16) return "UNKNOWN";
  return hms::ffi::statusCodeName(StatusCode(code)).data();
}

int hms_error_code(const hms_error_t* err) {
  return err != nullptr ? err->code : 0;
}
const char* hms_error_message(const hms_error_t* err) {
  return err != nullptr ? err->message.c_str() : "";
}
const char* hms_error_source(const hms_error_t* err) {
  return err != nullptr ? err->source.c_str() : "";
}
size_t hms_error_detail_count(const hms_error_t* err) {
  return err != nullptr ? err->details.size() : 0;
}
int hms_error_detail(const hms_error_t* err, size_t i, const char** key, const char** value) {
  if (err == nullptr || key == nullptr || value == nullptr) return HMS_INVALID_ARGUMENT;
  if (i >= err->details.size()) return HMS_OUT_OF_RANGE;
  *key = err->details[i].first.c_str();
  *value = err->details[i].second.c_str();
  return 0;
}
const char* hms_error_details_json(const hms_error_t* err) {
  return err != nullptr ? err->detailsJson.c_str() : "{}";
}
void hms_error_free(hms_error_t** err) {
  if (err == nullptr) return;
  delete *err;
  *err = nullptr;
}

void hms_string_free(char** s) {
  if (s == nullptr) return;
  std::free(*s);
  *s = nullptr;
}

// ---- client -----------------------------------------------------------------------------------

void hms_client_options_init(hms_client_options_t* o) {
  if (o == nullptr) return;
  std::memset(o, 0, sizeof *o);
  o->transport = HMS_TRANSPORT_AUTO;
  o->wait_mode = HMS_WAIT_ADAPTIVE;
  o->default_timeout_ms = 30000;
  o->reconnect = 1;
}

int hms_client_connect(const hms_client_options_t* options, hms_client_t** out,
                       hms_error_t** err) {
  if (out == nullptr) return nullArgument(err, "out");
  *out = nullptr;
  registerAtFork();
  return guarded(err, [&] {
    hms_client_options_t o;
    hms_client_options_init(&o);
    if (options != nullptr) o = *options;
    hms::ffi::ClientOptions co;
    if (o.socket_path != nullptr) co.socketPath = o.socket_path;
    if (o.name != nullptr) co.name = o.name;
    // Read as ints: a C caller may store any int there, and a value outside the enumerators
    // must be refused, not loaded as the enum type (undefined in C++).
    int transport = 0, waitMode = 0;
    static_assert(sizeof(o.transport) == sizeof(int) && sizeof(o.wait_mode) == sizeof(int));
    std::memcpy(&transport, &o.transport, sizeof transport);
    std::memcpy(&waitMode, &o.wait_mode, sizeof waitMode);
    switch (transport) {
      case HMS_TRANSPORT_AUTO: co.transport = hms::ffi::Transport::kAuto; break;
      case HMS_TRANSPORT_SHM: co.transport = hms::ffi::Transport::kSharedMemory; break;
      case HMS_TRANSPORT_SOCKET: co.transport = hms::ffi::Transport::kSocket; break;
      default:
        return setError(err, StatusCode::kInvalidArgument,
                        "transport " + std::to_string(transport) + " is not one of "
                        "HMS_TRANSPORT_AUTO, HMS_TRANSPORT_SHM, HMS_TRANSPORT_SOCKET");
    }
    switch (waitMode) {
      case HMS_WAIT_ADAPTIVE: co.waitMode = hms::ffi::WaitMode::kAdaptive; break;
      case HMS_WAIT_SPIN: co.waitMode = hms::ffi::WaitMode::kSpin; break;
      case HMS_WAIT_BLOCKING: co.waitMode = hms::ffi::WaitMode::kBlocking; break;
      default:
        return setError(err, StatusCode::kInvalidArgument,
                        "wait_mode " + std::to_string(waitMode) + " is not one of "
                        "HMS_WAIT_ADAPTIVE, HMS_WAIT_SPIN, HMS_WAIT_BLOCKING");
    }
    if (o.default_timeout_ms <= 0) {
      return setError(err, StatusCode::kInvalidArgument, "default_timeout_ms must be positive");
    }
    co.defaultTimeout = std::chrono::milliseconds(o.default_timeout_ms);
    co.reconnect = o.reconnect != 0;
    auto c = Client::connect(std::move(co));
    if (!c.ok()) return setError(err, c.status());
    auto h = std::make_unique<hms_client>();
    h->client = std::move(*c);
    h->generation = forkGeneration();
    *out = h.release();
    return 0;
  });
}

void hms_client_free(hms_client_t** client) {
  if (client == nullptr || *client == nullptr) return;
  if (!foreign(*client)) {
    // Workers waiting for answers from this process's threads would hold the client's shutdown.
    std::list<std::weak_ptr<ServiceState>> services;
    {
      std::lock_guard lock((*client)->servicesMu);
      services.swap((*client)->services);
    }
    for (auto& w : services) {
      if (auto s = w.lock()) s->release();
    }
  }
  freeHandle(client);
}

uint64_t hms_client_id(const hms_client_t* client) {
  return client != nullptr && !foreign(client) ? client->client->clientId() : 0;
}

int hms_client_uses_shared_memory(const hms_client_t* client) {
  return client != nullptr && !foreign(client) && client->client->usesSharedMemory() ? 1 : 0;
}

int hms_client_contract_json(hms_client_t* client, const char* service_id, const char* version,
                             char** json, size_t* json_len, hms_error_t** err) {
  if (client == nullptr) return nullArgument(err, "client");
  if (service_id == nullptr) return nullArgument(err, "service_id");
  if (version == nullptr) return nullArgument(err, "version");
  if (json == nullptr) return nullArgument(err, "json");
  if (foreign(client)) return forked(err, "client");
  return guarded(err, [&] {
    auto v = hms::ffi::Version::parse(version);
    if (!v.ok()) return setError(err, v.status());
    auto c = client->client->contract(service_id, *v);
    if (!c.ok()) return setError(err, c.status());
    std::string j = "{\"id\":" + jsonEscape(c->id) + ",\"version\":" +
                    jsonEscape(c->version.toString()) + ",\"interface\":" +
                    jsonEscape(c->interfaceName) + ",\"displayName\":" +
                    jsonEscape(c->displayName) + ",\"description\":" +
                    jsonEscape(c->description) + ",\"methods\":[";
    bool first = true;
    for (const auto& m : c->methods) {
      if (!first) j += ',';
      first = false;
      j += "{\"name\":" + jsonEscape(m.name) + ",\"ordinal\":" + std::to_string(m.ordinal) +
           ",\"stream\":" + (m.stream ? "true" : "false") + "}";
    }
    j += "]}";
    return giveString(j, json, json_len, err);
  });
}

// ---- calls ------------------------------------------------------------------------------------

void hms_call_options_init(hms_call_options_t* o) {
  if (o == nullptr) return;
  std::memset(o, 0, sizeof *o);
}

int hms_client_bind(hms_client_t* client, const char* service_id, const char* range,
                    hms_stub_t** out, hms_error_t** err) {
  if (out == nullptr) return nullArgument(err, "out");
  *out = nullptr;
  if (client == nullptr) return nullArgument(err, "client");
  if (service_id == nullptr) return nullArgument(err, "service_id");
  if (foreign(client)) return forked(err, "client");
  return guarded(err, [&] {
    auto stub = client->client->bindJson(service_id, range != nullptr ? range : "*");
    if (!stub.ok()) return setError(err, stub.status());
    auto h = std::make_unique<hms_stub>();
    h->id = stub->contract().id;
    h->version = stub->contract().version.toString();
    h->stub.emplace(std::move(*stub));
    h->generation = client->generation;
    *out = h.release();
    return 0;
  });
}

void hms_stub_free(hms_stub_t** stub) {
  freeHandle(stub);
}

const char* hms_stub_service_id(const hms_stub_t* stub) {
  return stub != nullptr ? stub->id.c_str() : "";
}

const char* hms_stub_service_version(const hms_stub_t* stub) {
  return stub != nullptr ? stub->version.c_str() : "";
}

#define HMS_CHECK_STUB_CALL()                                          \
  if (stub == nullptr) return nullArgument(err, "stub");               \
  if (method == nullptr) return nullArgument(err, "method");           \
  if (params == nullptr) return nullArgument(err, "params");           \
  if (foreign(stub)) return forked(err, "stub");

int hms_stub_call_json(hms_stub_t* stub, const char* method, const char* params,
                       size_t params_len, const hms_call_options_t* options, char** result,
                       size_t* result_len, hms_error_t** err) {
  HMS_CHECK_STUB_CALL()
  if (result == nullptr) return nullArgument(err, "result");
  *result = nullptr;
  return guarded(err, [&] {
    auto o = callOptions(options);
    if (!o.ok()) return setError(err, o.status());
    auto r = stub->stub->call(method, view(params, params_len), *o);
    if (!r.ok()) return setError(err, r.status());
    return giveString(*r, result, result_len, err);
  });
}

int hms_stub_call_oneway_json(hms_stub_t* stub, const char* method, const char* params,
                              size_t params_len, const hms_call_options_t* options,
                              hms_error_t** err) {
  HMS_CHECK_STUB_CALL()
  return guarded(err, [&] {
    auto o = callOptions(options);
    if (!o.ok()) return setError(err, o.status());
    auto s = stub->stub->callOneWay(method, view(params, params_len), *o);
    return s ? 0 : setError(err, s);
  });
}

int hms_stub_call_async_json(hms_stub_t* stub, const char* method, const char* params,
                             size_t params_len, const hms_call_options_t* options,
                             hms_future_t** out, hms_error_t** err) {
  if (out == nullptr) return nullArgument(err, "out");
  *out = nullptr;
  HMS_CHECK_STUB_CALL()
  return guarded(err, [&] {
    auto o = callOptions(options);
    if (!o.ok()) return setError(err, o.status());
    auto h = std::make_unique<hms_future>();
    h->state = std::make_shared<FutureState>();
    h->generation = stub->generation;
    auto handle = stub->stub->callAsync(
        method, view(params, params_len),
        [st = h->state](Result<std::string> r) {
          std::lock_guard lock(st->mu);
          st->result.emplace(std::move(r));
          st->done = true;
          if (st->fd >= 0) {
            const uint64_t one = 1;
            (void)!::write(st->fd, &one, sizeof one);
          }
          st->cv.notify_all();
        },
        *o);
    if (!handle.ok()) return setError(err, handle.status());
    h->handle.emplace(std::move(*handle));
    *out = h.release();
    return 0;
  });
}

int hms_future_poll(const hms_future_t* future) {
  if (future == nullptr) return 0;
  std::lock_guard lock(future->state->mu);
  return future->state->done ? 1 : 0;
}

int hms_future_wait(hms_future_t* future, int64_t timeout_ns) {
  if (future == nullptr) return HMS_INVALID_ARGUMENT;
  if (foreign(future)) return HMS_FAILED_PRECONDITION;
  auto& st = *future->state;
  std::unique_lock lock(st.mu);
  if (timeout_ns < 0) {
    st.cv.wait(lock, [&] { return st.done; });
    return 0;
  }
  return st.cv.wait_for(lock, std::chrono::nanoseconds(clampNs(timeout_ns)),
                        [&] { return st.done; })
             ? 0
             : HMS_DEADLINE_EXCEEDED;
}

int hms_future_fd(hms_future_t* future) {
  if (future == nullptr || foreign(future)) return -1;
  auto& st = *future->state;
  std::lock_guard lock(st.mu);
  if (st.fd < 0) {
    st.fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st.fd >= 0 && st.done) {
      const uint64_t one = 1;
      (void)!::write(st.fd, &one, sizeof one);
    }
  }
  return st.fd;
}

int hms_future_cancel(hms_future_t* future) {
  if (future == nullptr) return HMS_INVALID_ARGUMENT;
  if (foreign(future)) return HMS_FAILED_PRECONDITION;
  if (!future->handle) return 0;
  return int(future->handle->cancel().code());
}

int hms_future_result_json(hms_future_t* future, char** result, size_t* result_len,
                           hms_error_t** err) {
  if (future == nullptr) return nullArgument(err, "future");
  if (result == nullptr) return nullArgument(err, "result");
  *result = nullptr;
  if (foreign(future)) return forked(err, "future");
  if (future->taken) {
    return setError(err, StatusCode::kFailedPrecondition,
                    "hms_future_result_json was called on this future already (once only)");
  }
  (void)hms_future_wait(future, -1);
  return guarded(err, [&] {
    std::optional<Result<std::string>> r;
    {
      std::lock_guard lock(future->state->mu);
      r.swap(future->state->result);
    }
    future->taken = true;
    if (!r->ok()) return setError(err, r->status());
    return giveString(**r, result, result_len, err);
  });
}

void hms_future_free(hms_future_t** future) {
  if (future == nullptr || *future == nullptr) return;
  if (!foreign(*future)) {
    auto& st = *(*future)->state;
    std::lock_guard lock(st.mu);
    if (st.fd >= 0) ::close(st.fd);
    st.fd = -1;
  }
  freeHandle(future);
}

int hms_stub_open_stream_json(hms_stub_t* stub, const char* method, const char* params,
                              size_t params_len, const hms_call_options_t* options,
                              hms_stream_t** out, hms_error_t** err) {
  if (out == nullptr) return nullArgument(err, "out");
  *out = nullptr;
  HMS_CHECK_STUB_CALL()
  return guarded(err, [&] {
    auto o = callOptions(options);
    if (!o.ok()) return setError(err, o.status());
    auto s = stub->stub->openStream(method, view(params, params_len), *o);
    if (!s.ok()) return setError(err, s.status());
    auto h = std::make_unique<hms_stream>();
    h->stream.emplace(std::move(*s));
    h->generation = stub->generation;
    *out = h.release();
    return 0;
  });
}

int hms_stream_next_json(hms_stream_t* stream, char** item, size_t* item_len,
                         hms_error_t** err) {
  if (stream == nullptr) return nullArgument(err, "stream");
  if (item == nullptr) return nullArgument(err, "item");
  *item = nullptr;
  if (item_len != nullptr) *item_len = 0;
  if (foreign(stream)) return forked(err, "stream");
  return guarded(err, [&] {
    if (stream->stream->next()) return giveString(stream->stream->item(), item, item_len, err);
    const Status& s = stream->stream->status();
    return s ? 0 : setError(err, s);
  });
}

int hms_stream_cancel(hms_stream_t* stream) {
  if (stream == nullptr) return HMS_INVALID_ARGUMENT;
  if (foreign(stream)) return HMS_FAILED_PRECONDITION;
  return int(stream->stream->cancel().code());
}

void hms_stream_free(hms_stream_t** stream) {
  freeHandle(stream);
}

// ---- the raw level ----------------------------------------------------------------------------

int hms_stub_loan_raw(hms_stub_t* stub, const char* method, const hms_call_options_t* options,
                      void** data, size_t* capacity, hms_error_t** err) {
  if (stub == nullptr) return nullArgument(err, "stub");
  if (method == nullptr) return nullArgument(err, "method");
  if (data == nullptr) return nullArgument(err, "data");
  if (capacity == nullptr) return nullArgument(err, "capacity");
  *data = nullptr;
  *capacity = 0;
  if (foreign(stub)) return forked(err, "stub");
  return guarded(err, [&] {
    auto o = callOptions(options);
    if (!o.ok()) return setError(err, o.status());
    auto space = stub->stub->loanRaw(method, *o);
    if (!space.ok()) return setError(err, space.status());
    *data = space->begin();
    *capacity = space->size() * sizeof(capnp::word);
    return 0;
  });
}

int hms_stub_send_raw(hms_stub_t* stub, size_t size, hms_reply_t** reply, hms_error_t** err) {
  if (reply == nullptr) return nullArgument(err, "reply");
  *reply = nullptr;
  if (stub == nullptr) return nullArgument(err, "stub");
  if (foreign(stub)) return forked(err, "stub");
  return guarded(err, [&] {
    if (size % sizeof(capnp::word) != 0) {
      stub->stub->abandonRaw();
      return setError(err, StatusCode::kInvalidArgument,
                      "a raw message's size is a multiple of 8 bytes (Cap'n Proto words); " +
                          std::to_string(size) + " is not");
    }
    auto r = stub->stub->sendRaw(size / sizeof(capnp::word));
    if (!r.ok()) return setError(err, r.status());
    auto h = std::make_unique<hms_reply>();
    h->reply.emplace(std::move(*r));
    h->generation = stub->generation;
    *reply = h.release();
    return 0;
  });
}

void hms_stub_abandon_raw(hms_stub_t* stub) {
  if (stub == nullptr || foreign(stub)) return;
  stub->stub->abandonRaw();
}

const void* hms_reply_data(const hms_reply_t* reply) {
  return reply != nullptr ? reply->reply->words().begin() : nullptr;
}

size_t hms_reply_size(const hms_reply_t* reply) {
  return reply != nullptr ? reply->reply->words().size() * sizeof(capnp::word) : 0;
}

void hms_reply_free(hms_reply_t** reply) {
  freeHandle(reply);
}

// ---- serving ----------------------------------------------------------------------------------

void hms_service_options_init(hms_service_options_t* o) {
  if (o == nullptr) return;
  std::memset(o, 0, sizeof *o);
  o->ring_bytes = 1u << 20;
  o->concurrency = 16;
}

int hms_client_serve(hms_client_t* client, const char* service_id, const char* version,
                     const char* schema_file, const char* interface_name,
                     const hms_service_options_t* options, hms_service_t** out,
                     hms_error_t** err) {
  if (out == nullptr) return nullArgument(err, "out");
  *out = nullptr;
  if (client == nullptr) return nullArgument(err, "client");
  if (service_id == nullptr) return nullArgument(err, "service_id");
  if (version == nullptr) return nullArgument(err, "version");
  if (schema_file == nullptr) return nullArgument(err, "schema_file");
  if (interface_name == nullptr) return nullArgument(err, "interface_name");
  if (foreign(client)) return forked(err, "client");
  return guarded(err, [&] {
    hms_service_options_t o;
    hms_service_options_init(&o);
    if (options != nullptr) o = *options;
    if (o.concurrency == 0) {
      return setError(err, StatusCode::kInvalidArgument, "concurrency must be at least 1");
    }
    auto v = hms::ffi::Version::parse(version);
    if (!v.ok()) return setError(err, v.status());
    auto type = loadSchemaType(schema_file, interface_name, o.import_path);
    if (!type.ok()) return setError(err, type.status());
    if (!type->schema.getProto().isInterface()) {
      return setError(err, StatusCode::kInvalidArgument,
                      std::string("'") + interface_name + "' in '" + schema_file +
                          "' is not an interface");
    }
    const capnp::InterfaceSchema iface = type->schema.asInterface();

    std::vector<std::string> streams;
    if (o.stream_methods != nullptr) {
      const std::string all = o.stream_methods;
      for (size_t b = 0; b <= all.size();) {
        size_t e = all.find(',', b);
        if (e == std::string::npos) e = all.size();
        std::string name = all.substr(b, e - b);
        while (!name.empty() && name.front() == ' ') name.erase(0, 1);
        while (!name.empty() && name.back() == ' ') name.pop_back();
        if (!name.empty()) streams.push_back(name);
        b = e + 1;
      }
    }
    for (const auto& name : streams) {
      if (iface.findMethodByName(name.c_str()) == nullptr) {
        return setError(err, StatusCode::kInvalidArgument,
                        "stream_methods names '" + name + "', which " + interface_name +
                            " does not have");
      }
    }

    auto state = std::make_shared<ServiceState>();
    state->serviceId = service_id;
    state->fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
    std::map<uint16_t, hms::ffi::Handler> handlers;
    std::map<uint16_t, hms::ffi::StreamHandler> streamHandlers;
    for (auto m : iface.getMethods()) {
      const std::string name = m.getProto().getName().cStr();
      const bool isStream = std::find(streams.begin(), streams.end(), name) != streams.end();
      auto make = [state, loader = type->loader, name, isStream, p = m.getParamType(),
                   r = m.getResultType()](CallContext& ctx) {
        auto req = std::make_shared<PendingRequest>();
        req->ctx = &ctx;
        req->paramsType = p;
        req->resultsType = r;
        req->loader = loader;
        req->method = name;
        req->stream = isStream;
        req->callerPid = int32_t(ctx.callerPid());
        req->callerUid = uint32_t(ctx.callerUid());
        req->callerName = ctx.callerName();
        req->caller = ctx.caller();
        req->deadlineNs = ctx.deadlineNs();
        // The context a handler passes on: its server span's when one is recorded, else what
        // the caller sent.
        if (const hms::ffi::TraceContext* t =
                hms::ffi::detail::currentTrace() ? hms::ffi::detail::currentTrace()
                : ctx.trace()                    ? &*ctx.trace()
                                                 : nullptr) {
          req->traceparent = t->traceparent();
          req->hasTrace = true;
        }
        return req;
      };
      if (isStream) {
        streamHandlers[m.getOrdinal()] = [state, make](CallContext& ctx,
                                                       capnp::MessageReader& params,
                                                       hms::ffi::detail::StreamSink& sink) {
          auto req = make(ctx);
          req->params = &params;
          req->sink = &sink;
          return state->handle(std::move(req));
        };
      } else {
        handlers[m.getOrdinal()] = [state, make](CallContext& ctx, capnp::MessageReader& params,
                                                 capnp::MessageBuilder& results) {
          auto req = make(ctx);
          req->params = &params;
          req->results = &results;
          return state->handle(std::move(req));
        };
      }
    }
    hms::ffi::ServiceOptions so;
    if (o.display_name != nullptr) so.displayName = o.display_name;
    if (o.description != nullptr) so.description = o.description;
    if (o.ring_bytes != 0) so.ringBytes = o.ring_bytes;
    so.workerThreads = o.concurrency;
    so.streamThreads = o.concurrency;
    auto h = std::make_unique<hms_service>();
    h->state = state;
    h->loader = type->loader;
    h->generation = client->generation;
    auto handle = client->client->serveDynamic(service_id, *v, iface, std::move(handlers),
                                               std::move(streamHandlers), std::move(so));
    if (!handle.ok()) {
      state->release();
      if (state->fd >= 0) ::close(state->fd);
      return setError(err, handle.status());
    }
    h->handle.emplace(std::move(*handle));
    {
      std::lock_guard lock(client->servicesMu);
      client->services.push_back(state);
    }
    *out = h.release();
    return 0;
  });
}

int hms_service_next(hms_service_t* service, int64_t timeout_ns, hms_request_t** out,
                     hms_error_t** err) {
  if (out == nullptr) return nullArgument(err, "out");
  *out = nullptr;
  if (service == nullptr) return nullArgument(err, "service");
  if (foreign(service)) return forked(err, "service");
  return guarded(err, [&] {
    auto& st = *service->state;
    std::unique_lock lock(st.mu);
    auto ready = [&] { return st.stopped || !st.queue.empty(); };
    if (timeout_ns < 0) {
      st.cv.wait(lock, ready);
    } else if (!st.cv.wait_for(lock, std::chrono::nanoseconds(clampNs(timeout_ns)), ready)) {
      return setError(err, StatusCode::kDeadlineExceeded, "no request came in time");
    }
    if (st.queue.empty()) {
      return setError(err, StatusCode::kUnavailable, "service " + st.serviceId + " has stopped");
    }
    auto req = std::move(st.queue.front());
    st.queue.pop_front();
    if (st.fd >= 0) {
      uint64_t v = 0;
      (void)!::read(st.fd, &v, sizeof v);
    }
    lock.unlock();
    auto h = std::make_unique<hms_request>();
    h->req = std::move(req);
    h->generation = service->generation;
    *out = h.release();
    return 0;
  });
}

int hms_service_fd(hms_service_t* service) {
  return service != nullptr && !foreign(service) ? service->state->fd : -1;
}

int hms_service_stop(hms_service_t* service) {
  if (service == nullptr) return HMS_INVALID_ARGUMENT;
  if (foreign(service)) return HMS_FAILED_PRECONDITION;
  // Every request not answered yet is let go of first (its caller hears UNAVAILABLE, answering
  // it afterwards is refused), so that the library's workers are free when the service's
  // channels close.
  service->state->release();
  Status s;
  if (service->handle) s = service->handle->stop();
  return int(s.code());
}

void hms_service_free(hms_service_t** service) {
  if (service == nullptr || *service == nullptr) return;
  if (!foreign(*service)) {
    (*service)->state->release();
    if ((*service)->handle) (void)(*service)->handle->stop();
    (*service)->handle.reset();
    std::lock_guard lock((*service)->state->mu);
    if ((*service)->state->fd >= 0) ::close((*service)->state->fd);
    (*service)->state->fd = -1;
  }
  freeHandle(service);
}

const char* hms_request_method(const hms_request_t* request) {
  return request != nullptr ? request->req->method.c_str() : "";
}

int hms_request_is_stream(const hms_request_t* request) {
  return request != nullptr && request->req->stream ? 1 : 0;
}

int32_t hms_request_caller_pid(const hms_request_t* request) {
  return request != nullptr ? request->req->callerPid : 0;
}

uint32_t hms_request_caller_uid(const hms_request_t* request) {
  return request != nullptr ? request->req->callerUid : 0;
}

const char* hms_request_caller_name(const hms_request_t* request) {
  return request != nullptr ? request->req->callerName.c_str() : "";
}

const char* hms_request_caller_json(const hms_request_t* request) {
  if (request == nullptr) return "{}";
  PendingRequest& r = *request->req;
  if (r.callerJson.empty()) {
    const Caller& c = r.caller;
    std::string& out = r.callerJson;
    out = "{\"uid\":";
    out += std::to_string(c.uid);
    out += ",\"gid\":";
    out += std::to_string(c.gid);
    out += ",\"pid\":";
    out += std::to_string(c.pid);
    out += ",\"groups\":[";
    for (size_t i = 0; i < c.groups.size(); ++i) {
      if (i) out += ',';
      out += std::to_string(c.groups[i]);
    }
    out += "],\"name\":";
    hms::ffi::detail::appendJsonString(out, c.name);
    out += std::string(",\"authenticated\":") + (c.authenticated ? "true" : "false");
    out += ",\"subject\":";
    hms::ffi::detail::appendJsonString(out, c.subject);
    out += ",\"issuer\":";
    hms::ffi::detail::appendJsonString(out, c.issuer);
    out += ",\"roles\":[";
    for (size_t i = 0; i < c.roles.size(); ++i) {
      if (i) out += ",";
      hms::ffi::detail::appendJsonString(out, c.roles[i]);
    }
    out += "]";
    if (!c.host.empty()) {
      out += ",\"host\":";
      hms::ffi::detail::appendJsonString(out, c.host);
    }
    out += "}";
  }
  return r.callerJson.c_str();
}

int64_t hms_request_time_left_ns(const hms_request_t* request) {
  if (request == nullptr) return 0;
  const int64_t d = request->req->deadlineNs;
  if (d == INT64_MAX) return INT64_MAX;
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const int64_t now = int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  if (d <= now) return 0;
  // A caller's "no bound" arrives as the ten-year clamp (see clampNs): report it as none.
  return d - now > kLongestNs - int64_t(24) * 3600 * 1'000'000'000 ? INT64_MAX : d - now;
}

const char* hms_request_traceparent(const hms_request_t* request) {
  return request != nullptr && request->req->hasTrace ? request->req->traceparent.c_str()
                                                      : nullptr;
}

int hms_request_cancelled(const hms_request_t* request) {
  if (request == nullptr) return 1;
  auto& r = *request->req;
  std::lock_guard lock(r.mu);
  if (r.orphaned || r.answered || r.ctx == nullptr) return 1;
  return r.ctx->cancelled() ? 1 : 0;
}

namespace {
// The request's ring pointers may be used: neither answered nor let go of. Under r.mu.
int usable(PendingRequest& r, hms_error_t** err) {
  if (r.answered) {
    return setError(err, StatusCode::kFailedPrecondition, "the request was answered already");
  }
  if (r.orphaned) {
    return setError(err, StatusCode::kUnavailable,
                    "the service stopped; its requests can no longer be answered");
  }
  return 0;
}
}  // namespace

int hms_request_params_json(const hms_request_t* request, char** json, size_t* json_len,
                            hms_error_t** err) {
  if (request == nullptr) return nullArgument(err, "request");
  if (json == nullptr) return nullArgument(err, "json");
  *json = nullptr;
  if (foreign(request)) return forked(err, "request");
  return guarded(err, [&] {
    auto& r = *request->req;
    std::lock_guard lock(r.mu);
    if (int c = usable(r, err)) return c;
    std::string out;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                   out = hms::ffi::detail::structToJson(
                       r.params->getRoot<capnp::DynamicStruct>(r.paramsType));
                 })) {
      return setError(err, StatusCode::kDataLoss,
                      std::string("the request could not be read: ") + e->getDescription().cStr());
    }
    return giveString(out, json, json_len, err);
  });
}

const void* hms_request_params_data(const hms_request_t* request) {
  if (request == nullptr || foreign(request)) return nullptr;
  auto& r = *request->req;
  std::lock_guard lock(r.mu);
  if (r.answered || r.orphaned || r.params == nullptr) return nullptr;
  return r.params->getSegment(0).begin();
}

size_t hms_request_params_size(const hms_request_t* request) {
  if (request == nullptr || foreign(request)) return 0;
  auto& r = *request->req;
  std::lock_guard lock(r.mu);
  if (r.answered || r.orphaned || r.params == nullptr) return 0;
  return r.params->getSegment(0).size() * sizeof(capnp::word);
}

int hms_request_loan_raw(hms_request_t* request, void** data, size_t* capacity,
                         hms_error_t** err) {
  if (request == nullptr) return nullArgument(err, "request");
  if (data == nullptr) return nullArgument(err, "data");
  if (capacity == nullptr) return nullArgument(err, "capacity");
  *data = nullptr;
  *capacity = 0;
  if (foreign(request)) return forked(err, "request");
  return guarded(err, [&] {
    auto& r = *request->req;
    std::lock_guard lock(r.mu);
    if (int c = usable(r, err)) return c;
    if (r.stream) {
      return setError(err, StatusCode::kFailedPrecondition,
                      "method " + r.method + " is a stream; its items are sent as JSON");
    }
    // The dispatcher builds results in a RingMessageBuilder (ring slot or socket scratch).
    auto space = static_cast<hms::ffi::detail::RingMessageBuilder*>(r.results)->loanRaw();
    r.rawLoaned = true;
    *data = space.begin();
    *capacity = space.size() * sizeof(capnp::word);
    return 0;
  });
}

int hms_request_reply_raw(hms_request_t** request, size_t size, hms_error_t** err) {
  if (request == nullptr || *request == nullptr) return nullArgument(err, "request");
  if (foreign(*request)) return forked(err, "request");
  return guarded(err, [&] {
    std::unique_ptr<hms_request> owned(*request);
    *request = nullptr;
    auto& r = *owned->req;
    std::lock_guard lock(r.mu);
    if (int c = usable(r, err)) return c;
    int rc = 0;
    auto* b = static_cast<hms::ffi::detail::RingMessageBuilder*>(r.results);
    Status fits;
    if (!r.rawLoaned) {
      rc = setError(err, StatusCode::kFailedPrecondition,
                    "hms_request_reply_raw without hms_request_loan_raw");
      r.status = Status(StatusCode::kInternal, "the service answered without results");
    } else if (size % sizeof(capnp::word) != 0 ||
               !(fits = b->setRawWords(size / sizeof(capnp::word)))) {
      rc = setError(err, StatusCode::kInvalidArgument,
                    "a raw reply of " + std::to_string(size) + " bytes: " +
                        (fits ? std::string("not a whole number of words") : fits.message()));
      r.status = Status(StatusCode::kInternal, "the service's raw reply was malformed");
    } else {
      r.status = Status();
    }
    r.answered = true;
    r.cv.notify_all();
    return rc;
  });
}

int hms_request_reply_json(hms_request_t** request, const char* results, size_t results_len,
                           hms_error_t** err) {
  if (request == nullptr || *request == nullptr) return nullArgument(err, "request");
  if (foreign(*request)) return forked(err, "request");
  return guarded(err, [&] {
    std::unique_ptr<hms_request> owned(*request);
    *request = nullptr;
    auto& r = *owned->req;
    std::lock_guard lock(r.mu);
    if (int c = usable(r, err)) return c;
    int rc = 0;
    if (r.stream) {
      const auto j = view(results, results_len);
      if (results != nullptr && j.find_first_not_of(" \t\r\n{}") != std::string_view::npos) {
        rc = setError(err, StatusCode::kInvalidArgument,
                      "a stream ends without results: pass NULL (or {}) to end it");
      }
      r.status = Status();
    } else if (r.rawLoaned) {
      rc = setError(err, StatusCode::kFailedPrecondition,
                    "the results were loaned raw (hms_request_loan_raw): answer with "
                    "hms_request_reply_raw");
      r.status = Status(StatusCode::kInternal, "the service answered without results");
    } else if (results == nullptr) {
      rc = nullArgument(err, "results");
      r.status = Status(StatusCode::kInternal, "the service answered without results");
    } else {
      Status st;
      KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                     st = hms::ffi::detail::jsonToStruct(
                         view(results, results_len),
                         r.results->initRoot<capnp::DynamicStruct>(r.resultsType));
                   })) {
        st = Status(StatusCode::kInvalidArgument, e->getDescription().cStr());
      }
      if (!st) {
        rc = setError(err, StatusCode::kInvalidArgument,
                      "the results of " + r.method + " do not fit its results type: " +
                          st.message());
        r.status = Status(StatusCode::kInternal,
                          "the service's results do not fit its results type: " + st.message());
      }
    }
    r.answered = true;
    r.cv.notify_all();
    return rc;
  });
}

int hms_request_reply_error(hms_request_t** request, int code, const char* message,
                            const char* details_json, hms_error_t** err) {
  if (request == nullptr || *request == nullptr) return nullArgument(err, "request");
  if (foreign(*request)) return forked(err, "request");
  return guarded(err, [&] {
    std::unique_ptr<hms_request> owned(*request);
    *request = nullptr;
    auto& r = *owned->req;
    std::lock_guard lock(r.mu);
    if (int c = usable(r, err)) return c;
    int rc = 0;
    if (code <= 0 || code > 16) {
      rc = setError(err, StatusCode::kInvalidArgument,
                    "code " + std::to_string(code) + " is not an error code (1..16)");
      r.status = Status(StatusCode::kUnknown, message != nullptr ? message : "");
    } else {
      Status::Details details;
      if (details_json != nullptr) {
        auto d = parseDetails(details_json);
        if (d.ok()) {
          details = std::move(*d);
        } else {
          rc = setError(err, d.status());
        }
      }
      r.status =
          Status(StatusCode(code), message != nullptr ? message : "", {}, std::move(details));
    }
    r.answered = true;
    r.cv.notify_all();
    return rc;
  });
}

int hms_request_stream_json(hms_request_t* request, const char* item, size_t item_len,
                            hms_error_t** err) {
  if (request == nullptr) return nullArgument(err, "request");
  if (item == nullptr) return nullArgument(err, "item");
  if (foreign(request)) return forked(err, "request");
  return guarded(err, [&] {
    auto& r = *request->req;
    std::lock_guard lock(r.mu);
    if (int c = usable(r, err)) return c;
    if (!r.stream) {
      return setError(err, StatusCode::kFailedPrecondition,
                      "method " + r.method +
                          " is not served as a stream (hms_service_options_t.stream_methods)");
    }
    auto b = r.sink->beginItem();
    if (!b.ok()) return setError(err, b.status());
    Status st;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                   st = hms::ffi::detail::jsonToStruct(
                       view(item, item_len), (*b)->initRoot<capnp::DynamicStruct>(r.resultsType));
                 })) {
      st = Status(StatusCode::kInvalidArgument, e->getDescription().cStr());
    }
    if (!st) {
      r.sink->abortItem();
      return setError(err, StatusCode::kInvalidArgument,
                      "the item does not fit the results type of " + r.method + ": " +
                          st.message());
    }
    auto c = r.sink->commitItem();
    return c ? 0 : setError(err, c);
  });
}

void hms_request_free(hms_request_t** request) {
  if (request == nullptr || *request == nullptr) return;
  if (!foreign(*request)) {
    auto& r = *(*request)->req;
    std::lock_guard lock(r.mu);
    if (!r.answered && !r.orphaned) {
      r.status = Status(StatusCode::kInternal, "the service dropped the request unanswered");
      r.answered = true;
      r.cv.notify_all();
    }
  }
  freeHandle(request);
}

// ---- topics -----------------------------------------------------------------------------------

int hms_client_advertise_json(hms_client_t* client, const char* topic_id,
                              const char* schema_file, const char* type_name, uint32_t slots,
                              hms_publisher_t** out, hms_error_t** err) {
  if (out == nullptr) return nullArgument(err, "out");
  *out = nullptr;
  if (client == nullptr) return nullArgument(err, "client");
  if (topic_id == nullptr) return nullArgument(err, "topic_id");
  if ((schema_file == nullptr) != (type_name == nullptr)) {
    return setError(err, StatusCode::kInvalidArgument,
                    "give both schema_file and type_name, or neither");
  }
  if (foreign(client)) return forked(err, "client");
  return guarded(err, [&] {
    hms::ffi::TopicOptions to;
    if (slots != 0) to.slots = slots;
    std::optional<Result<hms::ffi::JsonPublisher>> p;
    if (schema_file != nullptr) {
      auto type = loadSchemaType(schema_file, type_name, nullptr);
      if (!type.ok()) return setError(err, type.status());
      if (!type->schema.getProto().isStruct()) {
        return setError(err, StatusCode::kInvalidArgument,
                        std::string("'") + type_name + "' in '" + schema_file +
                            "' is not a struct");
      }
      hms::ffi::TopicSchemaInfo info;
      info.loader = type->loader;
      info.schema = type->schema.asStruct();
      p.emplace(client->client->advertiseJson(topic_id, std::move(info), std::move(to)));
    } else {
      p.emplace(client->client->advertiseJson(topic_id, std::move(to)));
    }
    if (!p->ok()) return setError(err, p->status());
    auto h = std::make_unique<hms_publisher>();
    h->publisher.emplace(std::move(**p));
    h->generation = client->generation;
    *out = h.release();
    return 0;
  });
}

int hms_publisher_publish_json(hms_publisher_t* publisher, const char* message,
                               size_t message_len, hms_error_t** err) {
  if (publisher == nullptr) return nullArgument(err, "publisher");
  if (message == nullptr) return nullArgument(err, "message");
  if (foreign(publisher)) return forked(err, "publisher");
  return guarded(err, [&] {
    auto s = publisher->publisher->publish(view(message, message_len));
    return s ? 0 : setError(err, s);
  });
}

int hms_publisher_loan_raw(hms_publisher_t* publisher, void** data, size_t* capacity,
                           hms_error_t** err) {
  if (publisher == nullptr) return nullArgument(err, "publisher");
  if (data == nullptr) return nullArgument(err, "data");
  if (capacity == nullptr) return nullArgument(err, "capacity");
  *data = nullptr;
  *capacity = 0;
  if (foreign(publisher)) return forked(err, "publisher");
  return guarded(err, [&] {
    auto space = publisher->publisher->loanRaw();
    if (!space.ok()) return setError(err, space.status());
    *data = space->begin();
    *capacity = space->size() * sizeof(capnp::word);
    return 0;
  });
}

int hms_publisher_publish_raw(hms_publisher_t* publisher, size_t size, hms_error_t** err) {
  if (publisher == nullptr) return nullArgument(err, "publisher");
  if (foreign(publisher)) return forked(err, "publisher");
  return guarded(err, [&] {
    if (size % sizeof(capnp::word) != 0) {
      publisher->publisher->abandonRaw();
      return setError(err, StatusCode::kInvalidArgument,
                      "a raw message's size is a multiple of 8 bytes (Cap'n Proto words); " +
                          std::to_string(size) + " is not");
    }
    auto s = publisher->publisher->publishRaw(size / sizeof(capnp::word));
    return s ? 0 : setError(err, s);
  });
}

void hms_publisher_abandon_raw(hms_publisher_t* publisher) {
  if (publisher == nullptr || foreign(publisher)) return;
  publisher->publisher->abandonRaw();
}

size_t hms_publisher_subscribers(const hms_publisher_t* publisher) {
  return publisher != nullptr && !foreign(publisher) ? publisher->publisher->subscribers() : 0;
}

void hms_publisher_free(hms_publisher_t** publisher) {
  freeHandle(publisher);
}

int hms_client_subscribe_json(hms_client_t* client, const char* topic_id, int64_t wait_ms,
                              hms_subscription_t** out, hms_error_t** err) {
  if (out == nullptr) return nullArgument(err, "out");
  *out = nullptr;
  if (client == nullptr) return nullArgument(err, "client");
  if (topic_id == nullptr) return nullArgument(err, "topic_id");
  if (foreign(client)) return forked(err, "client");
  return guarded(err, [&] {
    hms::ffi::SubscribeOptions so;
    if (wait_ms > 0) so.waitForPublisher = std::chrono::milliseconds(wait_ms);
    auto s = client->client->subscribeJson(topic_id, so);
    if (!s.ok()) return setError(err, s.status());
    auto h = std::make_unique<hms_subscription>();
    h->subscription.emplace(std::move(*s));
    h->generation = client->generation;
    *out = h.release();
    return 0;
  });
}

int hms_subscription_next_json(hms_subscription_t* subscription, int64_t timeout_ns,
                               char** message, size_t* message_len, uint64_t* sequence,
                               hms_error_t** err) {
  if (subscription == nullptr) return nullArgument(err, "subscription");
  if (message == nullptr) return nullArgument(err, "message");
  *message = nullptr;
  if (foreign(subscription)) return forked(err, "subscription");
  return guarded(err, [&] {
    const auto timeout = std::chrono::nanoseconds(timeout_ns < 0 ? kLongestNs : clampNs(timeout_ns));
    auto s = subscription->subscription->next(timeout);
    if (!s) return setError(err, s);
    if (sequence != nullptr) *sequence = subscription->subscription->sequence();
    return giveString(subscription->subscription->message(), message, message_len, err);
  });
}

int hms_subscription_next_raw(hms_subscription_t* subscription, int64_t timeout_ns,
                              const void** data, size_t* size, uint64_t* sequence,
                              hms_error_t** err) {
  if (subscription == nullptr) return nullArgument(err, "subscription");
  if (data == nullptr) return nullArgument(err, "data");
  if (size == nullptr) return nullArgument(err, "size");
  *data = nullptr;
  *size = 0;
  if (foreign(subscription)) return forked(err, "subscription");
  return guarded(err, [&] {
    const auto timeout =
        std::chrono::nanoseconds(timeout_ns < 0 ? kLongestNs : clampNs(timeout_ns));
    auto s = subscription->subscription->nextRaw(timeout);
    if (!s) return setError(err, s);
    const auto words = subscription->subscription->rawMessage();
    *data = words.begin();
    *size = words.size() * sizeof(capnp::word);
    if (sequence != nullptr) *sequence = subscription->subscription->sequence();
    return 0;
  });
}

void hms_subscription_free(hms_subscription_t** subscription) {
  freeHandle(subscription);
}

}  // extern "C"
