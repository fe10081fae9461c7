#include "codec.hpp"

#include <kj/exception.h>

#include <cstring>

namespace hms::ffi::detail {

Result<std::unique_ptr<DecodedMessage>> DecodedMessage::decode(const std::vector<uint8_t>& bytes) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "control message of " + std::to_string(bytes.size()) +
                      " bytes is not a whole number of Cap'n Proto words");
  }
  auto msg = std::make_unique<DecodedMessage>();
  msg->words_ = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(msg->words_.begin(), bytes.data(), bytes.size());
  try {
    msg->reader_.emplace(msg->words_.asPtr(), controlReaderOptions());
    // Walk the whole message now, so that a malformed one fails here and not halfway through
    // handling it.
    (void)msg->reader_->getRoot<capnp::AnyPointer>().targetSize();
  } catch (const kj::Exception& e) {
    return Status(StatusCode::kInvalidArgument,
                  std::string("malformed control message: ") + e.getDescription().cStr());
  }
  return msg;
}

}  // namespace hms::ffi::detail
