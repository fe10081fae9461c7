// Token verification (broker/token.hpp): keys and tokens are minted here at run time, with
// OpenSSL and libjwt, so nothing secret or dated is checked in.
#include "token.hpp"

#include "support/tokens.hpp"

#include <gtest/gtest.h>
#include <jwt.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "support/tokens.hpp"

namespace hms::ffi::broker {
namespace {

// 2026-11-30T10:00:00Z: "now" for every test.
constexpr int64_t kNow = 1796032800;

using testing::KeyPair;

KeyPair ecKey(const char* curve = "P-256") {
  KeyPair k = testing::newKeyPair(curve);
  EXPECT_FALSE(k.publicPem.empty());
  return k;
}

KeyPair rsaKey() {
  KeyPair k = testing::newKeyPair("RSA");
  EXPECT_FALSE(k.publicPem.empty());
  return k;
}

// The one issuer key most tests sign with; generated once (EC keygen is cheap, but once is enough).
const KeyPair& authKey() {
  static const KeyPair k = ecKey();
  return k;
}

// A compact JWS of `claimsJson`, signed with `alg` and `key` (a private PEM, or a secret for HS*).
std::string mint(const std::string& claimsJson, jwt_alg_t alg = JWT_ALG_ES256,
                 const std::string& key = authKey().privatePem) {
  std::string out = testing::mintToken(claimsJson, alg, key);
  EXPECT_FALSE(out.empty()) << "could not mint a token of " << claimsJson;
  return out;
}

std::string base64url(const std::string& in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 0x3f];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 0x3f];
  return out;
}

std::vector<std::string> parts(const std::string& token) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t dot = token.find('.', start);
    out.push_back(token.substr(start, dot - start));
    if (dot == std::string::npos) return out;
    start = dot + 1;
  }
}

TokenIssuer authIssuer(const std::string& publicPem = authKey().publicPem) {
  return TokenIssuer{"hms-auth", "ES256", publicPem, "/etc/hms/auth.pub.pem", "hms-ffi"};
}

const std::string kGoodClaims =
    R"({"iss":"hms-auth","sub":"alice","aud":"hms-ffi","exp":1796036400,"nbf":1796029200,)"
    R"("role":"doctor","roles":["doctor","auditor"],"amr":["pwd","mfa"]})";

// The status of verifying `token` against the auth issuer, checking the promises every failure
// keeps: UNAUTHENTICATED, a reason in the house form, never the token's text.
Status refusal(const std::string& token, const std::vector<std::string>& required = {},
               const std::vector<TokenIssuer>& issuers = {authIssuer()}) {
  auto result = verifyToken(token, issuers, required, kNow);
  EXPECT_FALSE(result.ok());
  if (result.ok()) return Status();
  Status s = result.status();
  EXPECT_EQ(s.code(), StatusCode::kUnauthenticated);
  const std::string& m = s.message();
  EXPECT_TRUE(m.rfind("token ", 0) == 0 || m.rfind("this broker", 0) == 0) << m;
  if (!token.empty()) {
    EXPECT_EQ(m.find(token), std::string::npos) << m;
    for (const auto& part : parts(token)) {
      if (part.size() >= 8) {
        EXPECT_EQ(m.find(part), std::string::npos) << m;
      }
    }
  }
  return s;
}

TEST(TokenVerify, AcceptsAGoodTokenWithItsClaims) {
  auto result = verifyToken(mint(kGoodClaims), {authIssuer()}, {"sub", "role"}, kNow);
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_EQ(result->issuer, "hms-auth");
  EXPECT_EQ(result->subject, "alice");
  EXPECT_EQ(result->roles, (std::vector<std::string>{"doctor", "auditor"}));  // deduplicated
  EXPECT_EQ(result->amr, (std::vector<std::string>{"pwd", "mfa"}));
  EXPECT_EQ(result->expiresUnix, 1796036400);
}

TEST(TokenVerify, ReadsRolesFromAnArrayUnderRole) {
  auto result = verifyToken(
      mint(R"({"iss":"hms-auth","sub":"bob","aud":["other","hms-ffi"],"role":["nurse","triage"]})"),
      {authIssuer()}, {"sub", "role"}, kNow);
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_EQ(result->roles, (std::vector<std::string>{"nurse", "triage"}));
  EXPECT_TRUE(result->amr.empty());
  EXPECT_EQ(result->expiresUnix, 0);
}

TEST(TokenVerify, RequiredRoleIsSatisfiedByRoles) {
  auto result = verifyToken(mint(R"({"iss":"hms-auth","aud":"hms-ffi","roles":["admin"]})"),
                            {authIssuer()}, {"role"}, kNow);
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_EQ(result->roles, (std::vector<std::string>{"admin"}));
}

TEST(TokenVerify, ChoosesTheIssuerByIss) {
  const KeyPair other = ecKey();
  TokenIssuer second{"other-idp", "ES256", other.publicPem, "other.pem", ""};
  auto result =
      verifyToken(mint(R"({"iss":"other-idp","sub":"carol"})", JWT_ALG_ES256, other.privatePem),
                  {authIssuer(), second}, {}, kNow);
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_EQ(result->issuer, "other-idp");
  EXPECT_EQ(result->subject, "carol");
}

TEST(TokenVerify, RefusesAnExpiredToken) {
  // Expiring exactly now is expired: exp is the first instant the token is no longer valid.
  Status s = refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","exp":1796032800})"));
  EXPECT_EQ(s.message(), "token expired at 2026-11-30T10:00:00Z");
}

TEST(TokenVerify, RefusesATokenNotYetValid) {
  Status s = refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","nbf":1796032801})"));
  EXPECT_EQ(s.message(), "token is not valid before 2026-11-30T10:00:01Z");
}

TEST(TokenVerify, RefusesAWrongAudience) {
  Status s = refusal(mint(R"({"iss":"hms-auth","aud":"billing"})"));
  EXPECT_EQ(s.message(), "token audience 'billing' is not 'hms-ffi'");
  s = refusal(mint(R"({"iss":"hms-auth","aud":["billing","lab"]})"));
  EXPECT_EQ(s.message(), "token audience 'billing, lab' is not 'hms-ffi'");
}

TEST(TokenVerify, RefusesAMissingAudience) {
  Status s = refusal(mint(R"({"iss":"hms-auth","sub":"alice"})"));
  EXPECT_EQ(s.message(),
            "token has no audience (aud); issuer 'hms-auth' tokens must be for 'hms-ffi'");
}

TEST(TokenVerify, IgnoresAudienceWhenTheIssuerNamesNone) {
  TokenIssuer issuer = authIssuer();
  issuer.audience.clear();
  auto result = verifyToken(mint(R"({"iss":"hms-auth","aud":"whatever"})"), {issuer}, {}, kNow);
  EXPECT_TRUE(result.ok()) << result.status().message();
}

TEST(TokenVerify, RefusesATamperedPayload) {
  const auto p = parts(mint(kGoodClaims));
  ASSERT_EQ(p.size(), 3u);
  std::string claims = kGoodClaims;
  claims.replace(claims.find("\"alice\""), 7, "\"admin\"");
  Status s = refusal(p[0] + "." + base64url(claims) + "." + p[2]);
  EXPECT_EQ(s.message(),
            "token signature does not verify with the key of issuer 'hms-auth' "
            "(/etc/hms/auth.pub.pem)");
}

TEST(TokenVerify, RefusesASignatureOfAnotherKey) {
  Status s = refusal(mint(kGoodClaims, JWT_ALG_ES256, ecKey().privatePem));
  EXPECT_EQ(s.message(),
            "token signature does not verify with the key of issuer 'hms-auth' "
            "(/etc/hms/auth.pub.pem)");
}

TEST(TokenVerify, RefusesAnUnknownIssuer) {
  TokenIssuer second{"lab-idp", "ES256", ecKey().publicPem, "lab.pem", ""};
  Status s = refusal(mint(R"({"iss":"evil","aud":"hms-ffi"})"), {}, {authIssuer(), second});
  EXPECT_EQ(s.message(),
            "token issuer 'evil' is not one this broker trusts (trusted: hms-auth, lab-idp)");
}

TEST(TokenVerify, RefusesATokenWithoutIssuer) {
  Status s = refusal(mint(R"({"sub":"alice","aud":"hms-ffi"})"));
  EXPECT_EQ(s.message(), "token names no issuer (iss)");
}

TEST(TokenVerify, RefusesEveryTokenWhenNoIssuerIsConfigured) {
  Status s = refusal(mint(kGoodClaims), {}, {});
  EXPECT_EQ(s.message(), "this broker accepts no tokens (no token_issuers in its policy)");
}

TEST(TokenVerify, RefusesAnUnsignedToken) {
  const std::string token =
      base64url(R"({"alg":"none","typ":"JWT"})") + "." + base64url(kGoodClaims) + ".";
  Status s = refusal(token);
  EXPECT_EQ(s.message(),
            "token is unsigned (algorithm none); this broker accepts only signed tokens");
}

TEST(TokenVerify, RefusesHs256KeyedWithTheIssuersPublicKey) {
  // The classic algorithm-confusion forgery: anyone holding the public key can make this one.
  const std::string& pub = authKey().publicPem;
  const std::string forged = mint(kGoodClaims, JWT_ALG_HS256, pub);
  Status s = refusal(forged);
  EXPECT_EQ(s.message(),
            "token algorithm HS256 is not ES256, the algorithm pinned for issuer 'hms-auth'");

  // Why the pin is checked before libjwt sees the token: libjwt 1.10 takes the algorithm from
  // the token's header and accepts this forgery when handed the PEM as the key.
  jwt_t* jwt = nullptr;
  const int rc =
      jwt_decode(&jwt, forged.c_str(), reinterpret_cast<const unsigned char*>(pub.data()),
                 static_cast<int>(pub.size()));
  EXPECT_EQ(rc, 0) << "libjwt refuses the forgery by itself now; the comment above is stale";
  jwt_free(jwt);
}

TEST(TokenVerify, RefusesAnHmacSignatureUnderAnEs256Header) {
  // The header relabelled ES256 over an HS256 signature: the pin holds, the signature cannot.
  const auto p = parts(mint(kGoodClaims, JWT_ALG_HS256, authKey().publicPem));
  ASSERT_EQ(p.size(), 3u);
  Status s = refusal(base64url(R"({"alg":"ES256","typ":"JWT"})") + "." + p[1] + "." + p[2]);
  EXPECT_EQ(s.message(), "token signature is not an ES256 signature (64 bytes)");
}

TEST(TokenVerify, RefusesOtherAsymmetricAlgorithms) {
  const KeyPair rsa = rsaKey();
  Status s = refusal(mint(kGoodClaims, JWT_ALG_RS256, rsa.privatePem));
  EXPECT_EQ(s.message(),
            "token algorithm RS256 is not ES256, the algorithm pinned for issuer 'hms-auth'");
}

TEST(TokenVerify, RefusesCriticalHeaderExtensions) {
  const auto p = parts(mint(kGoodClaims));
  ASSERT_EQ(p.size(), 3u);
  Status s =
      refusal(base64url(R"({"alg":"ES256","crit":["b64"],"b64":false})") + "." + p[1] + "." + p[2]);
  EXPECT_EQ(s.message(),
            "token header has critical extensions (crit) this broker does not understand");
}

TEST(TokenVerify, RefusesMalformedTokens) {
  const std::string good = mint(kGoodClaims);
  const auto p = parts(good);
  ASSERT_EQ(p.size(), 3u);
  const std::string notJws = "token is not a compact JWS (three base64url parts)";
  EXPECT_EQ(refusal(p[0] + "." + p[1]).message(), notJws);
  EXPECT_EQ(refusal(good + "." + p[2]).message(), notJws);
  EXPECT_EQ(refusal(p[0] + ".e30*." + p[2]).message(), notJws);           // '*' is not base64url
  EXPECT_EQ(refusal(p[0] + "=." + p[1] + "." + p[2]).message(), notJws);  // no padding in JWS
  EXPECT_EQ(refusal(" " + good).message(), notJws);
  EXPECT_EQ(refusal(good + "\n").message(), notJws);
  EXPECT_EQ(refusal("." + p[1] + "." + p[2]).message(), notJws);
  EXPECT_EQ(refusal("..").message(), notJws);
  EXPECT_EQ(refusal(base64url("not json") + "." + p[1] + "." + p[2]).message(),
            "token header is not a JSON object");
  EXPECT_EQ(refusal(base64url(R"(["ES256"])") + "." + p[1] + "." + p[2]).message(),
            "token header is not a JSON object");
  EXPECT_EQ(
      refusal(base64url(R"({"alg":"ES256","alg":"none"})") + "." + p[1] + "." + p[2]).message(),
      "token header is not a JSON object");  // duplicate names: two readers, two answers
  EXPECT_EQ(refusal(p[0] + "." + base64url("{\"iss\":") + "." + p[2]).message(),
            "token payload is not a JSON object");
  EXPECT_EQ(refusal(base64url(R"({"typ":"JWT"})") + "." + p[1] + "." + p[2]).message(),
            "token header names no algorithm (alg)");
  EXPECT_EQ(refusal(std::string(20000, 'a')).message(), "token is longer than 16384 bytes");
}

TEST(TokenVerify, RefusesAnEmptyToken) {
  EXPECT_EQ(refusal("").message(), "token is empty");
}

TEST(TokenVerify, RefusesATokenLackingRequiredClaims) {
  const std::vector<std::string> required{"sub", "role"};
  EXPECT_EQ(
      refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","role":"doctor"})"), required).message(),
      "token lacks the required claim 'sub'");
  EXPECT_EQ(refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","sub":""})"), required).message(),
            "token lacks the required claim 'sub'");
  EXPECT_EQ(
      refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","sub":"alice"})"), required).message(),
      "token lacks the required claim 'role'");
  EXPECT_EQ(refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","sub":"alice","role":[]})"), required)
                .message(),
            "token lacks the required claim 'role'");
}

TEST(TokenVerify, RefusesClaimsOfTheWrongShape) {
  EXPECT_EQ(refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","role":["doctor",7]})")).message(),
            "token claim 'role' is not a string or an array of strings");
  EXPECT_EQ(refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","roles":"doctor"})")).message(),
            "token claim 'roles' is not an array of strings");
  EXPECT_EQ(refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","amr":"pwd"})")).message(),
            "token claim 'amr' is not an array of strings");
  EXPECT_EQ(refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","sub":42})")).message(),
            "token claim 'sub' is not a string");
  EXPECT_EQ(refusal(mint(R"({"iss":"hms-auth","aud":"hms-ffi","exp":"tomorrow"})")).message(),
            "token claim 'exp' is not a NumericDate");
}

TEST(TokenVerify, RefusesWhenTheConfiguredKeyIsNotP256) {
  TokenIssuer issuer = authIssuer(rsaKey().publicPem);
  Status s = refusal(mint(kGoodClaims), {}, {issuer});
  EXPECT_EQ(s.message(),
            "this broker cannot verify tokens of issuer 'hms-auth' (/etc/hms/auth.pub.pem): the "
            "key is an RSA key; ES256 needs an EC key on P-256 (prime256v1)");
}

TEST(TokenVerify, QuotesOnlyPrintableTextOfTheToken) {
  Status s = refusal(mint(R"({"iss":"evil\nFAKE LOG LINE","aud":"hms-ffi"})"));
  EXPECT_EQ(s.message(),
            "token issuer 'evil?FAKE LOG LINE' is not one this broker trusts (trusted: hms-auth)");
}

TEST(TokenKey, AcceptsAP256PublicKey) {
  EXPECT_TRUE(checkPublicKey(authKey().publicPem, "ES256").isOk());
}

TEST(TokenKey, RefusesAnUnsupportedAlgorithm) {
  Status s = checkPublicKey(authKey().publicPem, "HS256");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "algorithm 'HS256' is not supported (supported: ES256)");
  EXPECT_EQ(checkPublicKey(authKey().publicPem, "EdDSA").code(), StatusCode::kInvalidArgument);
}

TEST(TokenKey, RefusesAnRsaKey) {
  Status s = checkPublicKey(rsaKey().publicPem, "ES256");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "the key is an RSA key; ES256 needs an EC key on P-256 (prime256v1)");
}

TEST(TokenKey, RefusesAP384Key) {
  Status s = checkPublicKey(ecKey("P-384").publicPem, "ES256");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "the key is an EC key on secp384r1; ES256 needs an EC key on P-256 (prime256v1)");
}

TEST(TokenKey, RefusesAPrivateKey) {
  Status s = checkPublicKey(authKey().privatePem, "ES256");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("the key is a private key"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("openssl ec -in k.pem -pubout"), std::string::npos) << s.message();
}

TEST(TokenKey, RefusesGarbage) {
  for (const std::string& pem : {std::string(), std::string("hello"),
                                 std::string("-----BEGIN PUBLIC KEY-----\nAAAA\n"
                                             "-----END PUBLIC KEY-----\n")}) {
    Status s = checkPublicKey(pem, "ES256");
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "the key is not a PEM public key (-----BEGIN PUBLIC KEY-----)");
  }
}

}  // namespace
}  // namespace hms::ffi::broker
