// libFuzzer target: a token as any client may present it at hello (broker/token.hpp), verified
// against two issuers with one fixed ES256 key (its public half below; the private half signed
// the seed tokens in fuzz/corpus/token and was then thrown away). Whatever the bytes,
// verifyToken() must answer with a Result: no crash, no escaped exception, no sanitizer finding.
//   - A refusal is UNAUTHENTICATED, its message starts "token " or "this broker", is printable
//     ASCII only (a token must not forge log lines), and never quotes the token.
//   - OK only for what the key signed: the token's signed part (header.payload) must be one of
//     the seeds' (the fuzzer cannot forge ES256), and the claims the broker relies on hold: a
//     trusted issuer, a non-empty subject (required here), an expiry after "now" if any.
// The input's first line is the token; what follows it, if anything, is a PEM for
// checkPublicKey() (as the configuration loader hands it an issuer's key file): OK, or
// INVALID_ARGUMENT / RESOURCE_EXHAUSTED with a message. A key it accepts is then used as an
// issuer key for the same token, under the same rule for OK.
//
//   scripts/fuzz.sh token 600
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "token.hpp"

namespace {

using namespace hms::ffi;
using namespace hms::ffi::broker;

// 2026-11-30T10:00:00Z, as in tests/token_test.cpp; the valid seeds expire in 2100.
constexpr int64_t kNow = 1796032800;

// P-256 (prime256v1).
constexpr char kPublicKeyPem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE0jrRKH1T4wpRThZnbTD2QX+GjgaA\n"
    "CaGyjxYxPVYiriecVIRJEoC57l+yWyvC/c8p6G+1c8dRwB+0MogRqpsKWQ==\n"
    "-----END PUBLIC KEY-----\n";

// The seeds that verify (valid, valid-aud-array-nbf, valid-no-audience-issuer), whole.
constexpr const char* kSignedTokens[] = {
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJobXMtYXV0aCIsInN1YiI6ImRyLWhvdXNlIiwiYXVkI"
    "joiaG1zLWZmaSIsInJvbGUiOlsiZG9jdG9yIiwicGh5c2ljaWFuIl0sImFtciI6WyJwd2QiLCJtZmEiXSwiaWF0Ijo"
    "xNzk2MDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.1Z95vPwN7zxgWLb4fxO4n6v5eZTSlx3p9iSGkiW4DmSSZOC1GXF7"
    "q4OW9y6yYwwAvy4XBHlq0wFDNnhdvWEFUA",
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJobXMtYXV0aCIsInN1YiI6Im51cnNlLTEiLCJhdWQiOlsib3RoZXIiLCJob"
    "XMtZmZpIl0sInJvbGVzIjpbIm51cnNlIl0sIm5iZiI6MTc5NjAwMDAwMC41LCJleHAiOjQxMDI0NDQ4MDAuOX0.buL"
    "MZ4ijVYwqbw1HMRXBe0aqWrFGPDBWNStDy_qSv2MSrvi_zgkSf9DO0-ShIKtI3wcsTfH8C1NjEiabz2z5Cg",
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJobXMtbG9jYWwiLCJzdWIiOiJzdmMtbGFiIiwicm9sZ"
    "SI6ImxhYiJ9.SyXgZXLUIBCfcWa-HRQsRFrHfHMQpXAWuoPiO9Js9wEpGrdWBHBYVwvCJQpJlgUJlwYbgpn5kxFlt6"
    "3p91MqBg",
};

std::vector<TokenIssuer> fixedIssuers() {
  return {TokenIssuer{"hms-auth", "ES256", kPublicKeyPem, "fuzz.pem", "hms-ffi"},
          TokenIssuer{"hms-local", "ES256", kPublicKeyPem, "fuzz.pem", ""}};
}

// header.payload: what the signature covers.
std::string_view signedPart(std::string_view token) {
  const size_t dot = token.rfind('.');
  return dot == std::string_view::npos ? token : token.substr(0, dot);
}

bool signedByUs(std::string_view token) {
  for (const char* t : kSignedTokens) {
    if (signedPart(token) == signedPart(t)) return true;
  }
  return false;
}

void verify(std::string_view token, const std::vector<TokenIssuer>& issuers) {
  static const std::vector<std::string> kRequired = {"sub"};
  auto result = verifyToken(token, issuers, kRequired, kNow);
  if (result.ok()) {
    if (!signedByUs(token)) std::abort();
    const TokenClaims& claims = *result;
    bool trusted = false;
    for (const auto& issuer : issuers) trusted = trusted || claims.issuer == issuer.issuer;
    if (!trusted || claims.subject.empty()) std::abort();
    if (claims.expiresUnix != 0 && claims.expiresUnix <= kNow) std::abort();
    return;
  }
  const Status& s = result.status();
  if (s.code() != StatusCode::kUnauthenticated) std::abort();
  const std::string& m = s.message();
  if (m.rfind("token ", 0) != 0 && m.rfind("this broker", 0) != 0) std::abort();
  for (char c : m) {
    if (c < 0x20 || c > 0x7e) std::abort();
  }
  // Only a token with its two dots is long enough not to match fixed text by chance: every
  // value quoted from it is decoded from a part, so shorter than the token.
  const size_t dot1 = token.find('.');
  if (token.size() >= 16 && dot1 != std::string_view::npos &&
      token.find('.', dot1 + 1) != std::string_view::npos && m.find(token) != std::string::npos) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<TokenIssuer> issuers = fixedIssuers();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  const std::string_view token = input.substr(0, newline);
  verify(token, issuers);
  if (newline == std::string_view::npos) return 0;

  const std::string pem(input.substr(newline + 1));
  const Status key = checkPublicKey(pem, "ES256");
  if (!key.isOk()) {
    if (key.code() != StatusCode::kInvalidArgument &&
        key.code() != StatusCode::kResourceExhausted) {
      std::abort();
    }
    if (key.message().empty()) std::abort();
    return 0;
  }
  verify(token, {TokenIssuer{"hms-auth", "ES256", pem, "fuzzed.pem", "hms-ffi"}});
  return 0;
}
