#include "support/tokens.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdlib>

namespace hms::ffi::testing {
namespace {

std::string bioText(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

}  // namespace

KeyPair newKeyPair(const char* curve) {
  EVP_PKEY* key = std::string(curve) == "RSA"
                      ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048))
                      : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve);
  KeyPair out;
  BIO* priv = BIO_new(BIO_s_mem());
  BIO* pub = BIO_new(BIO_s_mem());
  if (key && priv && pub &&
      PEM_write_bio_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr) == 1 &&
      PEM_write_bio_PUBKEY(pub, key) == 1) {
    out.privatePem = bioText(priv);
    out.publicPem = bioText(pub);
  }
  BIO_free(priv);
  BIO_free(pub);
  EVP_PKEY_free(key);
  return out;
}

std::string mintToken(const std::string& claimsJson, jwt_alg_t alg, const std::string& key) {
  jwt_t* jwt = nullptr;
  std::string out;
  if (jwt_new(&jwt) == 0 && jwt_add_grants_json(jwt, claimsJson.c_str()) == 0 &&
      jwt_set_alg(jwt, alg, reinterpret_cast<const unsigned char*>(key.data()),
                  static_cast<int>(key.size())) == 0) {
    if (char* s = jwt_encode_str(jwt)) {
      out = s;
      free(s);  // NOLINT: libjwt 1.10 allocates with malloc and has no jwt_free_str
    }
  }
  jwt_free(jwt);
  return out;
}

}  // namespace hms::ffi::testing
