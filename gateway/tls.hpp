// Mutual TLS between gateways (docs/gateway.md): each gateway has one certificate, signed by a CA
// all of them trust, used as server and as client. A peer that presents no certificate, or one
// the CA did not sign, is refused during the handshake.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "config.hpp"

namespace hms::ffi::gateway {

// As a client of its peers. FAILED_PRECONDITION naming the file that cannot be read.
Result<std::shared_ptr<grpc::ChannelCredentials>> clientCredentials(const GatewayConfig& config);
// As a server: the peer must present a certificate the CA signed.
Result<std::shared_ptr<grpc::ServerCredentials>> serverCredentials(const GatewayConfig& config);

}  // namespace hms::ffi::gateway
