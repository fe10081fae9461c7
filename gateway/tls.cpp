#include "tls.hpp"

#include <fstream>
#include <sstream>

namespace hms::ffi::gateway {
namespace {

Result<std::string> readPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  std::stringstream text;
  if (in) text << in.rdbuf();
  if (!in || text.str().find("-----BEGIN ") == std::string::npos) {
    return Status(StatusCode::kFailedPrecondition,
                  std::string("cannot read the ") + what + " " + path +
                      " as PEM (ffi.transport.grpc.tls; docs/gateway.md makes one with openssl)");
  }
  return text.str();
}

struct Pems {
  std::string ca, cert, key;
};

Result<Pems> readAll(const GatewayConfig& c) {
  auto ca = readPem(c.caFile, "CA certificate");
  if (!ca.ok()) return ca.status();
  auto cert = readPem(c.certFile, "certificate");
  if (!cert.ok()) return cert.status();
  auto key = readPem(c.keyFile, "private key");
  if (!key.ok()) return key.status();
  return Pems{*ca, *cert, *key};
}

}  // namespace

Result<std::shared_ptr<grpc::ChannelCredentials>> clientCredentials(const GatewayConfig& config) {
  auto pems = readAll(config);
  if (!pems.ok()) return pems.status();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = pems->ca;
  o.pem_private_key = pems->key;
  o.pem_cert_chain = pems->cert;
  return grpc::SslCredentials(o);
}

Result<std::shared_ptr<grpc::ServerCredentials>> serverCredentials(const GatewayConfig& config) {
  auto pems = readAll(config);
  if (!pems.ok()) return pems.status();
  grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  o.pem_root_certs = pems->ca;
  o.pem_key_cert_pairs.push_back({pems->key, pems->cert});
  return grpc::SslServerCredentials(o);
}

}  // namespace hms::ffi::gateway
