// The exporting half of a gateway (docs/gateway.md): serves gateway.proto's Gateway service to
// peer gateways, for the local services that the config's `export` rules name. Calls arrive as
// Cap'n Proto bytes and go into the local service's channel through the raw level of JsonStub;
// no schema is compiled in.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"
#include "gateway.grpc.pb.h"
#include "hms/ffi/json.hpp"

namespace hms::ffi::gateway {

// Call is served with gRPC's callback API: no thread waits for the local service's answer, and a
// cancel by the peer reaches the local call. The streams keep a thread each (they wait for the
// peer to take each item: back-pressure).
class Exporter final : public v1::Gateway::WithCallbackMethod_Call<v1::Gateway::Service> {
 public:
  // `client` is connected to the local broker and outlives the Exporter.
  Exporter(Client& client, const GatewayConfig& config);
  ~Exporter() override;
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // Ends the open watches (their peers see the link end) and the refresher; before the server's
  // Shutdown, which waits for them.
  void stop();

  grpc::Status Watch(grpc::ServerContext* ctx, const v1::WatchRequest* request,
                     grpc::ServerWriter<v1::Exports>* writer) override;
  grpc::ServerUnaryReactor* Call(grpc::CallbackServerContext* ctx, const v1::CallRequest* request,
                                 v1::CallReply* reply) override;
  grpc::Status OpenStream(grpc::ServerContext* ctx, const v1::CallRequest* request,
                          grpc::ServerWriter<v1::StreamItem>* writer) override;
  grpc::Status Subscribe(grpc::ServerContext* ctx, const v1::SubscribeRequest* request,
                         grpc::ServerWriter<v1::TopicMessage>* writer) override;

 private:
  class CallReactor;
  struct Exported {
    std::map<uint32_t, std::pair<std::string, bool>> methods;  // ordinal -> name, stream
  };
  // Reads the registry and the contracts of what the rules name; false if nothing changed.
  bool refresh();
  void refreshLoop();
  // Cancels the streams whose peer cancelled them (or every one).
  void reapStreams(bool all);
  // The name of the method a request names: UNAVAILABLE when its service is not exported now,
  // UNIMPLEMENTED when the method is not of the kind asked (a call, or a stream if `stream`).
  Result<std::string> methodOf(const v1::CallRequest& request, bool stream) const;
  // A stub bound to exactly id@version: one from the pool, else a new one.
  Result<std::unique_ptr<JsonStub>> takeStub(const std::string& id, const std::string& version,
                                             const Caller& caller);
  void giveBack(const std::string& id, const std::string& version, const Caller& caller,
                std::unique_ptr<JsonStub> stub);
  // The caller of an incoming call: as its host described it (hms-caller-bin), from the host
  // the peer's certificate names.
  Caller callerOf(const grpc::ServerContextBase& ctx) const;
  // What Call and OpenStream need of a request: its method (a call, or a stream), options, params,
  // caller, and a stub bound for that caller.
  struct Incoming {
    std::string method;
    CallOptions options;
    kj::Array<capnp::word> params;
    Caller caller;
    std::unique_ptr<JsonStub> stub;
  };
  Result<Incoming> incoming(const grpc::ServerContextBase& ctx, const v1::CallRequest& request,
                            bool stream);
  // Deadline and trace of an incoming call, as CallOptions; DEADLINE_EXCEEDED if already past.
  Result<CallOptions> callOptions(const grpc::ServerContextBase& ctx) const;

  Client& client_;
  const GatewayConfig& config_;

  mutable std::mutex mu_;
  std::condition_variable changed_;
  bool stopping_ = false;
  uint64_t generation_ = 0;  // bumped by each change of exports_
  v1::Exports exports_;
  std::map<std::string, Exported> byKey_;            // "id@version"
  std::map<std::string, v1::ExportedTopic> topics_;  // by topic id
  // ServiceInfo::key or TopicInfo::key -> schema_nodes (a registration never changes)
  std::map<uint64_t, std::string> nodesByRegistration_;
  // Idle stubs by "id@version", then by caller (each remote caller has channels of its own).
  std::map<std::string, std::map<std::string, std::vector<std::unique_ptr<JsonStub>>>> stubs_;
  size_t pooled_ = 0;
  std::thread refresher_;

  std::mutex streamsMu_;                                 // never held with mu_
  std::map<JsonStream*, grpc::ServerContext*> streams_;  // the OpenStream handlers' streams
};

}  // namespace hms::ffi::gateway
