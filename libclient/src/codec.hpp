// Control messages: one flat Cap'n Proto message per datagram, decoded with strict limits.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "hms/ffi/status.hpp"

namespace hms::ffi::detail {

// A flat message kept in a std::vector holds 64-bit integers, not capnp::word: Cap'n Proto deletes
// word's copy constructor when built with clang (GCC keeps it), and a vector needs one to grow.
using FlatWords = std::vector<uint64_t>;

inline kj::ArrayPtr<const capnp::word> asWords(const FlatWords& w) noexcept {
  return kj::arrayPtr(reinterpret_cast<const capnp::word*>(w.data()), w.size());
}

inline FlatWords toFlatWords(kj::ArrayPtr<const capnp::word> a) {
  FlatWords out(a.size());
  if (a.size() != 0) std::memcpy(out.data(), a.begin(), a.size() * sizeof(capnp::word));
  return out;
}

inline capnp::ReaderOptions controlReaderOptions() {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = 1 << 20;
  o.nestingLimit = 32;
  return o;
}

// The flat bytes of a message (segment table included) to send as one datagram.
inline kj::Array<capnp::word> encodeMessage(capnp::MessageBuilder& builder) {
  return capnp::messageToFlatArray(builder);
}

// A decoded datagram. Holds its own aligned copy of the bytes.
class DecodedMessage {
 public:
  // INVALID_ARGUMENT for anything that is not one well-formed message.
  static Result<std::unique_ptr<DecodedMessage>> decode(const std::vector<uint8_t>& bytes);

  template <class T>
  typename T::Reader root() {
    return reader_->getRoot<T>();
  }

 private:
  kj::Array<capnp::word> words_;
  std::optional<capnp::FlatArrayMessageReader> reader_;
};

}  // namespace hms::ffi::detail
