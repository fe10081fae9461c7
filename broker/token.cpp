#include "token.hpp"

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <strings.h>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace hms::ffi::broker {

namespace {

constexpr char kSupportedAlgorithms[] = "ES256";
// ES256 signatures are R || S, 32 bytes each (RFC 7518 §3.4); libjwt is never handed another size.
constexpr size_t kEs256SignatureBytes = 64;
// A token is a hello field: anything this long is not one, and is not worth decoding.
constexpr size_t kMaxTokenBytes = 16 * 1024;
// Header and claims are flat objects with a few small arrays; deeper nesting is not a token.
constexpr int kMaxJsonDepth = 16;
// Longest excerpt of a token's own text (iss, aud, alg) quoted in a message.
constexpr size_t kMaxQuoted = 64;

Status unauthenticated(std::string message) {
  return Status(StatusCode::kUnauthenticated, std::move(message));
}

// Values taken from an unverified token go into messages and logs: printable ASCII only, and not
// too much of it, so a token cannot forge log lines or flood them.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, kMaxQuoted)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (s.size() > kMaxQuoted) out += "...";
  return out;
}

// "2026-11-30T10:00:00Z"
std::string isoTime(int64_t unix) {
  const auto t = static_cast<time_t>(unix);
  struct tm tm {};
  char buf[64];
  if (::gmtime_r(&t, &tm) == nullptr ||
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return "unix time " + std::to_string(unix);
  }
  return buf;
}

// --- Owners of the C libraries' objects, so every path frees them. ---

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct JwtFree {
  void operator()(jwt_t* j) const { jwt_free(j); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using JwtPtr = std::unique_ptr<jwt_t, JwtFree>;

// --- Strict base64url (RFC 7515 §2: no padding, no whitespace, canonical trailing bits). ---

int base64urlValue(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

std::optional<std::string> base64urlDecode(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = base64urlValue(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xffu);
    }
  }
  // Leftover bits must be zero: one text per byte string, as an encoder writes it.
  if ((acc & ((1u << bits) - 1u)) != 0) return std::nullopt;
  return out;
}

// --- A small strict JSON reader (RFC 8259) for the header and the claims. ---
// libjwt's own parser (jansson) is not reachable from here, and the header must be read before
// anything is verified. Duplicate member names are refused so no two readers of the same bytes
// (this one and libjwt's) can see different values.

struct Json {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  std::string text;                // a string's value, or a number's literal
  std::vector<Json> items;         // an array's elements, an object's member values
  std::vector<std::string> names;  // an object's member names, parallel to items

  const Json* member(std::string_view name) const {
    if (kind != Kind::kObject) return nullptr;
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return &items[i];
    }
    return nullptr;
  }
};

class JsonReader {
 public:
  explicit JsonReader(std::string_view text) : s_(text) {}

  std::optional<Json> document() {
    Json v;
    skipSpace();
    if (!value(v, 0)) return std::nullopt;
    skipSpace();
    if (pos_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  void skipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool value(Json& v, int depth) {
    if (depth > kMaxJsonDepth || pos_ >= s_.size()) return false;
    const char c = s_[pos_];
    if (c == '{') return object(v, depth);
    if (c == '[') return array(v, depth);
    if (c == '"') {
      v.kind = Json::Kind::kString;
      return string(v.text);
    }
    if (c == 't' || c == 'f') {
      v.kind = Json::Kind::kBool;
      v.boolean = c == 't';
      return literal(c == 't' ? "true" : "false");
    }
    if (c == 'n') {
      v.kind = Json::Kind::kNull;
      return literal("null");
    }
    v.kind = Json::Kind::kNumber;
    return number(v.text);
  }

  bool object(Json& v, int depth) {
    v.kind = Json::Kind::kObject;
    ++pos_;  // '{'
    skipSpace();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return true;
    }
    for (;;) {
      skipSpace();
      std::string name;
      if (pos_ >= s_.size() || s_[pos_] != '"' || !string(name)) return false;
      for (const auto& n : v.names) {
        if (n == name) return false;
      }
      skipSpace();
      if (pos_ >= s_.size() || s_[pos_] != ':') return false;
      ++pos_;
      skipSpace();
      Json member;
      if (!value(member, depth + 1)) return false;
      v.names.push_back(std::move(name));
      v.items.push_back(std::move(member));
      skipSpace();
      if (pos_ >= s_.size()) return false;
      if (s_[pos_] == '}') {
        ++pos_;
        return true;
      }
      if (s_[pos_] != ',') return false;
      ++pos_;
    }
  }

  bool array(Json& v, int depth) {
    v.kind = Json::Kind::kArray;
    ++pos_;  // '['
    skipSpace();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return true;
    }
    for (;;) {
      skipSpace();
      Json item;
      if (!value(item, depth + 1)) return false;
      v.items.push_back(std::move(item));
      skipSpace();
      if (pos_ >= s_.size()) return false;
      if (s_[pos_] == ']') {
        ++pos_;
        return true;
      }
      if (s_[pos_] != ',') return false;
      ++pos_;
    }
  }

  bool hex4(uint32_t& out) {
    if (s_.size() - pos_ < 4) return false;
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
      out = (out << 4) | d;
    }
    return true;
  }

  static void appendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  bool string(std::string& out) {
    ++pos_;  // '"'
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) return false;
      switch (s_[pos_++]) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t cp;
          if (!hex4(cp)) return false;
          // A NUL would end the name as C code (libjwt, logs) reads it, so it is refused.
          if (cp == 0) return false;
          if (cp >= 0xdc00 && cp <= 0xdfff) return false;  // a lone low surrogate
          if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t low;
            if (!literal("\\u") || !hex4(low) || low < 0xdc00 || low > 0xdfff) return false;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          appendUtf8(out, cp);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }

  bool number(std::string& out) {
    const size_t start = pos_;
    auto digits = [&] {
      const size_t from = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      return pos_ > from;
    };
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '0') {
      ++pos_;
    } else if (!digits()) {
      return false;
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (!digits()) return false;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (!digits()) return false;
    }
    out.assign(s_.substr(start, pos_ - start));
    return true;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

std::optional<Json> parseObject(const std::string& text) {
  auto v = JsonReader(text).document();
  if (!v || v->kind != Json::Kind::kObject) return std::nullopt;
  return v;
}

// --- Claims ---

// A NumericDate (RFC 7519 §2), rounded the way that refuses rather than accepts: `exp` down,
// `nbf` up. Nullopt when it is not a number in a sane range.
std::optional<int64_t> numericDate(const Json& v, bool roundUp) {
  if (v.kind != Json::Kind::kNumber) return std::nullopt;
  char* end = nullptr;
  const double d = std::strtod(v.text.c_str(), &end);
  // ±2^53: exact in a double, and far beyond any date a token means.
  constexpr double kLimit = 9007199254740992.0;
  if (end == v.text.c_str() || !std::isfinite(d) || d > kLimit || d < -kLimit) {
    return std::nullopt;
  }
  return static_cast<int64_t>(roundUp ? std::ceil(d) : std::floor(d));
}

// Appends the strings of `v` (an array of strings, or one string when `allowString`) to `out`
// without duplicates; false when `v` is of another shape.
bool appendStrings(const Json& v, bool allowString, std::vector<std::string>& out) {
  auto add = [&out](const std::string& s) {
    if (s.empty()) return;
    for (const auto& have : out) {
      if (have == s) return;
    }
    out.push_back(s);
  };
  if (v.kind == Json::Kind::kString && allowString) {
    add(v.text);
    return true;
  }
  if (v.kind != Json::Kind::kArray) return false;
  for (const auto& item : v.items) {
    if (item.kind != Json::Kind::kString) return false;
  }
  for (const auto& item : v.items) add(item.text);
  return true;
}

bool isEmptyClaim(const Json* v) {
  if (v == nullptr) return true;
  switch (v->kind) {
    case Json::Kind::kNull:
      return true;
    case Json::Kind::kString:
      return v->text.empty();
    case Json::Kind::kArray:
    case Json::Kind::kObject:
      return v->items.empty();
    default:
      return false;
  }
}

std::string describeKeyType(const EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
      return "an RSA key";
    case EVP_PKEY_DSA:
      return "a DSA key";
    case EVP_PKEY_ED25519:
      return "an Ed25519 key";
    case EVP_PKEY_ED448:
      return "an Ed448 key";
    case EVP_PKEY_X25519:
      return "an X25519 key";
    case EVP_PKEY_X448:
      return "an X448 key";
    default:
      break;
  }
  const char* name = EVP_PKEY_get0_type_name(key);
  return std::string("a key of type ") + (name ? name : "unknown");
}

Result<TokenClaims> verify(std::string_view token, const std::vector<TokenIssuer>& issuers,
                           const std::vector<std::string>& requiredClaims, int64_t nowUnix) {
  if (issuers.empty()) {
    return unauthenticated("this broker accepts no tokens (no token_issuers in its policy)");
  }
  if (token.empty()) return unauthenticated("token is empty");
  if (token.size() > kMaxTokenBytes) {
    return unauthenticated("token is longer than " + std::to_string(kMaxTokenBytes) + " bytes");
  }

  // Structure first: three base64url parts, nothing else.
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  std::optional<std::string> headerText, payloadText, signature;
  if (dot2 != std::string_view::npos && token.find('.', dot2 + 1) == std::string_view::npos) {
    headerText = base64urlDecode(token.substr(0, dot1));
    payloadText = base64urlDecode(token.substr(dot1 + 1, dot2 - dot1 - 1));
    signature = base64urlDecode(token.substr(dot2 + 1));
  }
  if (!headerText || !payloadText || !signature || headerText->empty() || payloadText->empty()) {
    return unauthenticated("token is not a compact JWS (three base64url parts)");
  }
  const auto header = parseObject(*headerText);
  if (!header) return unauthenticated("token header is not a JSON object");
  const auto claims = parseObject(*payloadText);
  if (!claims) return unauthenticated("token payload is not a JSON object");

  // The header's algorithm, checked against the pin before any key is used: libjwt would
  // otherwise take the algorithm from the token (HS256 keyed with the public key PEM verifies a
  // forgery anyone can make).
  const Json* alg = header->member("alg");
  if (alg == nullptr || alg->kind != Json::Kind::kString) {
    return unauthenticated("token header names no algorithm (alg)");
  }
  if (alg->text == "none" || alg->text.empty()) {
    return unauthenticated(
        "token is unsigned (algorithm none); this broker accepts only signed "
        "tokens");
  }
  // RFC 7515 §4.1.11: extensions a verifier does not understand must not be ignored.
  if (header->member("crit") != nullptr) {
    return unauthenticated(
        "token header has critical extensions (crit) this broker does not "
        "understand");
  }
  if (const Json* typ = header->member("typ")) {
    // libjwt refuses any other type; saying so here keeps its refusal from reading as a bad
    // signature.
    if (typ->kind != Json::Kind::kString || strcasecmp(typ->text.c_str(), "JWT") != 0) {
      return unauthenticated("token type is not JWT");
    }
  }

  const Json* iss = claims->member("iss");
  if (iss == nullptr || iss->kind != Json::Kind::kString || iss->text.empty()) {
    return unauthenticated("token names no issuer (iss)");
  }
  const TokenIssuer* issuer = nullptr;
  for (const auto& candidate : issuers) {
    if (candidate.issuer == iss->text) {
      issuer = &candidate;
      break;
    }
  }
  if (issuer == nullptr) {
    std::string trusted;
    for (const auto& candidate : issuers) {
      trusted += (trusted.empty() ? "" : ", ") + candidate.issuer;
    }
    return unauthenticated("token issuer '" + printable(iss->text) +
                           "' is not one this broker trusts (trusted: " + trusted + ")");
  }
  if (alg->text != issuer->algorithm) {
    return unauthenticated("token algorithm " + printable(alg->text) + " is not " +
                           issuer->algorithm + ", the algorithm pinned for issuer '" +
                           issuer->issuer + "'");
  }
  // The configuration was checked at load; checked again so that a key that is not P-256 (or an
  // algorithm this code does not pin) can never reach libjwt, whoever built `issuers`.
  if (Status key = checkPublicKey(issuer->publicKeyPem, issuer->algorithm); !key.isOk()) {
    return unauthenticated("this broker cannot verify tokens of issuer '" + issuer->issuer + "' (" +
                           issuer->keyFile + "): " + key.message());
  }
  if (signature->size() != kEs256SignatureBytes) {
    return unauthenticated("token signature is not an ES256 signature (" +
                           std::to_string(kEs256SignatureBytes) + " bytes)");
  }

  const std::string tokenText(token);
  const auto& pem = issuer->publicKeyPem;
  jwt_t* raw = nullptr;
  const int rc =
      jwt_decode(&raw, tokenText.c_str(), reinterpret_cast<const unsigned char*>(pem.data()),
                 static_cast<int>(pem.size()));
  JwtPtr jwt(raw);
  ERR_clear_error();  // libjwt leaves OpenSSL's error queue as it finds it failing
  // libjwt's own algorithm must be the pinned one too: the check above read the header with
  // another parser, and the two must agree.
  if (rc != 0 || !jwt || jwt_get_alg(jwt.get()) != JWT_ALG_ES256) {
    return unauthenticated("token signature does not verify with the key of issuer '" +
                           issuer->issuer + "' (" + issuer->keyFile + ")");
  }

  // Verified: the claims read below are from the bytes the signature covers.
  TokenClaims out;
  out.issuer = iss->text;

  if (const Json* exp = claims->member("exp")) {
    const auto t = numericDate(*exp, /*roundUp=*/false);
    if (!t) return unauthenticated("token claim 'exp' is not a NumericDate");
    if (*t <= nowUnix) return unauthenticated("token expired at " + isoTime(*t));
    out.expiresUnix = *t;
  }
  if (const Json* nbf = claims->member("nbf")) {
    const auto t = numericDate(*nbf, /*roundUp=*/true);
    if (!t) return unauthenticated("token claim 'nbf' is not a NumericDate");
    if (*t > nowUnix) return unauthenticated("token is not valid before " + isoTime(*t));
  }

  if (!issuer->audience.empty()) {
    const Json* aud = claims->member("aud");
    if (aud == nullptr) {
      return unauthenticated("token has no audience (aud); issuer '" + issuer->issuer +
                             "' tokens must be for '" + issuer->audience + "'");
    }
    std::vector<std::string> audiences;
    if (!appendStrings(*aud, /*allowString=*/true, audiences)) {
      return unauthenticated("token claim 'aud' is not a string or an array of strings");
    }
    bool found = false;
    std::string named;
    for (const auto& a : audiences) {
      found = found || a == issuer->audience;
      named += (named.empty() ? "" : ", ") + printable(a);
    }
    if (!found) {
      return unauthenticated("token audience '" + named + "' is not '" + issuer->audience + "'");
    }
  }

  if (const Json* sub = claims->member("sub")) {
    if (sub->kind != Json::Kind::kString) {
      return unauthenticated("token claim 'sub' is not a string");
    }
    out.subject = sub->text;
  }
  if (const Json* role = claims->member("role")) {
    if (!appendStrings(*role, /*allowString=*/true, out.roles)) {
      return unauthenticated("token claim 'role' is not a string or an array of strings");
    }
  }
  if (const Json* roles = claims->member("roles")) {
    if (!appendStrings(*roles, /*allowString=*/false, out.roles)) {
      return unauthenticated("token claim 'roles' is not an array of strings");
    }
  }
  if (const Json* amr = claims->member("amr")) {
    if (!appendStrings(*amr, /*allowString=*/false, out.amr)) {
      return unauthenticated("token claim 'amr' is not an array of strings");
    }
  }

  for (const auto& name : requiredClaims) {
    // Roles may come under either name; what counts is that the token grants one.
    const bool present = (name == "role" || name == "roles") ? !out.roles.empty()
                                                             : !isEmptyClaim(claims->member(name));
    if (!present) return unauthenticated("token lacks the required claim '" + name + "'");
  }
  return out;
}

}  // namespace

Status checkPublicKey(const std::string& pem, const std::string& algorithm) {
  if (algorithm != "ES256") {
    return Status(StatusCode::kInvalidArgument,
                  "algorithm '" + printable(algorithm) +
                      "' is not supported (supported: " + kSupportedAlgorithms + ")");
  }
  if (pem.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return Status(StatusCode::kInvalidArgument, "the key is not a PEM public key (far too long)");
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Status(StatusCode::kResourceExhausted, "out of memory reading a public key");
  // No password callback can matter for a public key; an empty one keeps OpenSSL from ever
  // prompting on a terminal.
  PkeyPtr key(PEM_read_bio_PUBKEY(
      bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  ERR_clear_error();
  if (!key) {
    if (pem.find("PRIVATE KEY-----") != std::string::npos) {
      return Status(
          StatusCode::kInvalidArgument,
          "the key is a private key, where the public key is expected; give the public key "
          "(openssl ec -in k.pem -pubout) and keep the private key with the issuer");
    }
    if (pem.find("-----BEGIN CERTIFICATE-----") != std::string::npos) {
      return Status(
          StatusCode::kInvalidArgument,
          "the key is a certificate, not a public key; give its public key (openssl x509 -in "
          "cert.pem -pubkey -noout)");
    }
    return Status(StatusCode::kInvalidArgument,
                  "the key is not a PEM public key (-----BEGIN PUBLIC KEY-----)");
  }
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_EC) {
    return Status(StatusCode::kInvalidArgument,
                  "the key is " + describeKeyType(key.get()) +
                      "; ES256 needs an EC key on P-256 (prime256v1)");
  }
  char group[80] = {};
  size_t groupLen = 0;
  if (EVP_PKEY_get_group_name(key.get(), group, sizeof group, &groupLen) != 1) {
    ERR_clear_error();
    return Status(
        StatusCode::kInvalidArgument,
        "the key is an EC key with explicit curve parameters; ES256 needs the named curve "
        "P-256 (prime256v1)");
  }
  const std::string_view name(group, groupLen);
  if (name != "prime256v1" && name != "P-256" && name != "secp256r1") {
    return Status(StatusCode::kInvalidArgument,
                  "the key is an EC key on " + std::string(name) +
                      "; ES256 needs an EC key on P-256 (prime256v1)");
  }
  return Status();
}

Result<TokenClaims> verifyToken(std::string_view token, const std::vector<TokenIssuer>& issuers,
                                const std::vector<std::string>& requiredClaims, int64_t nowUnix) {
  try {
    return verify(token, issuers, requiredClaims, nowUnix);
  } catch (...) {
    // Only allocation can throw in there; a token that cannot be checked is not accepted.
    return Status(StatusCode::kUnauthenticated, "token could not be verified (out of memory)");
  }
}

}  // namespace hms::ffi::broker
