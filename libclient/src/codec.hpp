// Control messages: one flat Cap'n Proto message per datagram, decoded with strict limits.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <memory>
#include <optional>
#include <vector>

#include "hms/ffi/status.hpp"

namespace hms::ffi::detail {

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
