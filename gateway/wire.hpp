// What crosses between gateways (gateway.proto, docs/gateway.md), and the conversions both ends
// share: statuses, Cap'n Proto messages as bytes, schema nodes, the caller and the trace.
#pragma once

#include <capnp/message.h>
#include <capnp/schema-loader.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "gateway.pb.h"
#include "hms/ffi/client.hpp"

namespace hms::ffi::gateway {

// An HMS-FFI status as gRPC's: the code as it is (both use gRPC's numbering), the source and
// details as an ErrorInfo in the trailing metadata `hms-error-bin` of `ctx`.
grpc::Status toGrpc(const Status& status, grpc::ServerContextBase& ctx);
// The reverse, for a status that came back to `ctx`. A status that carries no ErrorInfo (gRPC's
// own: a link that broke, a refused certificate) gets `peer` as its source, so that the caller
// sees which host failed.
Status fromGrpc(const grpc::Status& status, const grpc::ClientContext& ctx,
                const std::string& peer);

// A message as one segment with its root pointer at word 0, what JsonStub's segment level takes
// and gives: the message's own segment when it has one only, else its canonical form. (`words`
// is such a segment already.)
std::string messageBytes(capnp::MessageReader& message);
std::string segmentBytes(kj::ArrayPtr<const capnp::word> words);
// Bytes from the wire as aligned words (a protobuf string has no alignment), or INVALID_ARGUMENT
// when their size is not whole words.
Result<kj::Array<capnp::word>> wordsOf(const std::string& bytes, const char* what);

// The nodes a loader holds, as a flat CodeGeneratorRequest message carrying only `nodes`.
std::string schemaNodesBytes(const capnp::SchemaLoader& loader);
// Loads such bytes into `loader`, INVALID_ARGUMENT if they are not.
Status loadSchemaNodes(const std::string& bytes, capnp::SchemaLoader& loader);

// The caller of a proxied call, for the exporting side (`hms-caller-bin`).
v1::CallerInfo callerInfo(const Caller& caller, const std::string& host);
// The traceparent a proxy passes on: the trace it runs in, with its own span as the parent.
std::string traceparentOf(const CallContext& ctx);

}  // namespace hms::ffi::gateway
