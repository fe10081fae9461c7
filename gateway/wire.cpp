#include "wire.hpp"

#include <capnp/any.h>
#include <capnp/schema.capnp.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstdio>
#include <cstring>

namespace hms::ffi::gateway {

grpc::Status toGrpc(const Status& status, grpc::ServerContextBase& ctx) {
  if (status.isOk()) return grpc::Status::OK;
  v1::ErrorInfo info;
  info.set_source(status.source());
  for (const auto& [k, v] : status.details()) {
    auto* d = info.add_details();
    d->set_key(k);
    d->set_value(v);
  }
  ctx.AddTrailingMetadata("hms-error-bin", info.SerializeAsString());
  return grpc::Status(grpc::StatusCode(uint32_t(status.code())), status.message());
}

Status fromGrpc(const grpc::Status& status, const grpc::ClientContext& ctx,
                const std::string& peer) {
  if (status.ok()) return Status();
  const StatusCode code = statusCodeFromWire(uint32_t(status.error_code()));
  const auto& trailers = ctx.GetServerTrailingMetadata();
  if (auto it = trailers.find("hms-error-bin"); it != trailers.end()) {
    v1::ErrorInfo info;
    if (info.ParseFromArray(it->second.data(), int(it->second.size()))) {
      Status::Details details;
      for (const auto& d : info.details()) details.emplace_back(d.key(), d.value());
      return Status(code, status.error_message(), info.source(), std::move(details));
    }
  }
  // gRPC's own error: the link, the certificate, the deadline on the way.
  return Status(code, "gateway of " + peer + ": " + status.error_message(), "gateway:" + peer);
}

std::string segmentBytes(kj::ArrayPtr<const capnp::word> words) {
  return std::string(reinterpret_cast<const char*>(words.begin()),
                     words.size() * sizeof(capnp::word));
}

std::string messageBytes(capnp::MessageReader& message) {
  // A message read in place from a ring or a socket buffer is one segment, root pointer at word
  // 0, already what the other end reads: one copy, into the string. Others are canonicalized.
  if (message.getSegment(1) == nullptr) return segmentBytes(message.getSegment(0));
  return segmentBytes(message.getRoot<capnp::AnyStruct>().canonicalize());
}

Result<kj::Array<capnp::word>> wordsOf(const std::string& bytes, const char* what) {
  if (bytes.size() % sizeof(capnp::word) != 0 || bytes.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  std::string(what) + " is not a Cap'n Proto message (" +
                      std::to_string(bytes.size()) + " bytes, not a whole number of words)");
  }
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  return words;
}

std::string schemaNodesBytes(const capnp::SchemaLoader& loader) {
  auto all = loader.getAllLoaded();
  capnp::MallocMessageBuilder msg;
  auto nodes = msg.initRoot<capnp::schema::CodeGeneratorRequest>().initNodes(all.size());
  for (size_t i = 0; i < all.size(); ++i) nodes.setWithCaveats(i, all[i].getProto());
  auto flat = capnp::messageToFlatArray(msg);
  return std::string(reinterpret_cast<const char*>(flat.begin()),
                     flat.size() * sizeof(capnp::word));
}

Status loadSchemaNodes(const std::string& bytes, capnp::SchemaLoader& loader) {
  auto words = wordsOf(bytes, "schema_nodes");
  if (!words.ok()) return words.status();
  Status st;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 capnp::FlatArrayMessageReader reader(*words);
                 for (auto node :
                      reader.getRoot<capnp::schema::CodeGeneratorRequest>().getNodes()) {
                   loader.load(node);
                 }
               })) {
    st = Status(StatusCode::kInvalidArgument,
                std::string("the peer's schema nodes do not load: ") + e->getDescription().cStr());
  }
  return st;
}

v1::CallerInfo callerInfo(const Caller& caller, const std::string& host) {
  v1::CallerInfo info;
  info.set_host(host);
  info.set_name(caller.name);
  info.set_uid(caller.uid);
  info.set_pid(caller.pid);
  info.set_authenticated(caller.authenticated);
  info.set_subject(caller.subject);
  info.set_issuer(caller.issuer);
  for (const auto& r : caller.roles) info.add_roles(r);
  return info;
}

std::string traceparentOf(const CallContext& ctx) {
  const LogFields f = ctx.logFields();
  if (f.traceId.size() != 32 || f.spanId.size() != 16) return {};
  char flags[3];
  std::snprintf(flags, sizeof flags, "%02x", ctx.trace() ? ctx.trace()->flags : 0);
  return "00-" + f.traceId + "-" + f.spanId + "-" + flags;
}

}  // namespace hms::ffi::gateway
