// Tokens (docs/security.md#tokens): a JWT (RFC 7519) a client presents at hello, verified here
// against the issuer public keys of the broker's security configuration. Only asymmetric
// signatures (ES256: ECDSA P-256 with SHA-256), the algorithm pinned per issuer key: `none`, HS*
// and a token whose header names another algorithm than its issuer's key are refused, whatever
// the signature. A token adds claims (sub, roles, amr) to a connection; it never replaces the uid
// the kernel reported.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hms/ffi/status.hpp"

namespace hms::ffi::broker {

struct TokenIssuer {
  std::string issuer;     // the `iss` a token of this key must carry
  std::string algorithm;  // "ES256" (the only one today)
  std::string publicKeyPem;
  std::string keyFile;    // where the PEM came from, for messages
  std::string audience;   // non-empty: `aud` must be it (or an array holding it)
};

struct TokenClaims {
  std::string issuer;
  std::string subject;             // sub
  std::vector<std::string> roles;  // `role` (a string or an array of strings) and `roles`
  std::vector<std::string> amr;    // authentication methods, e.g. "pwd", "mfa"
  int64_t expiresUnix = 0;         // exp, 0: none
};

// OK when `pem` is a public key `algorithm` can verify with (ES256: an EC key on P-256);
// otherwise INVALID_ARGUMENT saying what it is instead. For configuration loading.
Status checkPublicKey(const std::string& pem, const std::string& algorithm);

// Verifies `token` (compact JWS) against `issuers`: the issuer is chosen by the token's `iss`;
// its algorithm must be the header's `alg`; the signature must verify with its key; `exp` and
// `nbf` are checked against `nowUnix` (no leeway: one host, one clock); `aud` when the issuer
// names an audience; every claim in `requiredClaims` must be present and non-empty. Any failure is
// UNAUTHENTICATED with the reason ("token expired at 2026-11-30T10:00:00Z", "token algorithm HS256
// is not ES256, the algorithm pinned for issuer 'hms-auth'", ...); the token itself is never
// quoted in a message.
Result<TokenClaims> verifyToken(std::string_view token, const std::vector<TokenIssuer>& issuers,
                                const std::vector<std::string>& requiredClaims, int64_t nowUnix);

}  // namespace hms::ffi::broker
