// The importing half of a gateway (docs/gateway.md): one link per configured peer. A link watches
// the peer's exports over gRPC with mutual TLS and keeps one local proxy service per export,
// registered in the local broker under the same id, version and schema, by a client named
// "hms-ffi-gateway:<peer host>" (so the registry shows where it runs). A proxy's handlers forward
// each call or stream to the peer. When the link breaks the proxies go (callers get UNAVAILABLE
// from calls in flight, NOT_FOUND from new binds) and the link reconnects with back-off.
#pragma once

#include <capnp/schema-loader.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "config.hpp"
#include "gateway.grpc.pb.h"
#include "hms/ffi/client.hpp"
#include "hms/ffi/json.hpp"

namespace hms::ffi::gateway {

class PeerLink {
 public:
  PeerLink(const GatewayConfig& config, PeerConfig peer,
           std::shared_ptr<grpc::ChannelCredentials> credentials);
  ~PeerLink();  // ends the link and removes its proxies
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;

 private:
  struct Proxy {
    std::shared_ptr<capnp::SchemaLoader> loader;  // the schema the handle serves
    ServiceHandle handle;
  };
  // A peer's topic published here: `relay` subscribes at the peer and publishes each message.
  struct Topic {
    std::unique_ptr<JsonPublisher> publisher;  // used by `relay` only, closed after it ends
    std::shared_ptr<grpc::ClientContext> subscription;
    std::thread relay;
  };
  void run();
  // Connects the local client if needed; false (logged) when the broker cannot be reached.
  bool connectLocal();
  // Makes the proxies match `exports`.
  void reconcile(const v1::Exports& exports);
  Result<Proxy> makeProxy(const v1::ExportedService& service);
  Result<std::unique_ptr<Topic>> importTopic(const v1::ExportedTopic& topic);
  void relay(Topic& topic, const std::string& id);
  void withdrawTopic(Topic& topic);
  void dropAll(const std::string& why);
  bool sleepFor(std::chrono::milliseconds d);  // false when stopping

  const GatewayConfig& config_;
  const PeerConfig peer_;
  std::shared_ptr<v1::Gateway::Stub> stub_;      // Watch and Subscribe
  std::shared_ptr<v1::Gateway::Stub> callStub_;  // Call and OpenStream
  std::unique_ptr<Client> client_;        // the local broker, as "hms-ffi-gateway:<peer>"
  std::map<std::string, Proxy> proxies_;  // "id@version" -> proxy; the run thread's own
  std::map<std::string, std::unique_ptr<Topic>> topics_;  // by topic id; the run thread's own

  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  grpc::ClientContext* watch_ = nullptr;  // the open watch, cancelled by the destructor
  // What the proxies' handlers have in flight on the link, cancelled when the proxies go.
  std::shared_ptr<struct InFlight> inFlight_;
  std::thread thread_;
};

}  // namespace hms::ffi::gateway
