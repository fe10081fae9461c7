// Test support: issuer keys and JWTs minted at run time (OpenSSL, libjwt), so that nothing
// secret or dated is checked in.
#pragma once

#include <jwt.h>

#include <string>

namespace hms::ffi::testing {

struct KeyPair {
  std::string privatePem;
  std::string publicPem;
};

// A fresh EC key pair on `curve` ("P-256", "P-384"), or RSA with curve "RSA".
KeyPair newKeyPair(const char* curve = "P-256");

// A compact JWS of the claims `claimsJson` (a JSON object), signed with `alg` and `key` (a
// private PEM, or the secret for HS*). Empty if libjwt refuses.
std::string mintToken(const std::string& claimsJson, jwt_alg_t alg, const std::string& key);

}  // namespace hms::ffi::testing
