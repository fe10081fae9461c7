#include "request_check.hpp"

#include <kj/debug.h>
#include <kj/exception.h>

#include <exception>
#include <string>

namespace hms::ffi::broker {

namespace {

// Reading a text is what checks it; the value is not needed.
void touch(capnp::Text::Reader) {}

// Method ordinals are 16 bits: no interface has more methods than this.
constexpr uint32_t kMaxMethods = 1u << 16;
// A contract that fits a control message has far fewer nodes than this.
constexpr uint32_t kMaxSchemaNodes = 1u << 16;

void checkDescriptor(wire::ServiceDescriptor::Reader d) {
  touch(d.getId());
  (void)d.getVersion().getMajor();
  touch(d.getInterfaceName());
  auto methods = d.getMethods();
  // A list of empty structs takes no room in the message, so its length is bounded by nothing
  // else; readers count each element against their traversal limit on every read.
  KJ_REQUIRE(methods.size() <= kMaxMethods, "more methods than 16-bit ordinals can number");
  for (auto m : methods) touch(m.getName());
  touch(d.getDisplayName());
  touch(d.getDescription());
}

void check(wire::Request::Reader req) {
  switch (req.which()) {
    case wire::Request::HELLO: {
      auto h = req.getHello();
      touch(h.getClientName());
      touch(h.getNoSharedMemory());
      break;
    }
    case wire::Request::REGISTER:
      checkDescriptor(req.getRegister().getDescriptor());
      // The nodes themselves are checked by the contract checks (capnp::SchemaLoader, inside a
      // catch); only their number is bounded here, for the same reason as the methods'.
      KJ_REQUIRE(req.getRegister().getSchemaNodes().size() <= kMaxSchemaNodes,
                 "more schema nodes than any contract needs");
      break;
    case wire::Request::OPEN_CHANNEL:
      (void)req.getOpenChannel().getServiceKey();
      break;
    case wire::Request::ATTACH_CHANNEL:
      (void)req.getAttachChannel().getChannelId();
      break;
    case wire::Request::GET_REGISTRY:
      (void)req.getGetRegistry().getOffset();
      break;
    case wire::Request::ADVERTISE: {
      auto a = req.getAdvertise();
      touch(a.getTopicId());
      touch(a.getTypeName());
      touch(a.getDisplayName());
      touch(a.getDescription());
      KJ_REQUIRE(a.getSchemaNodes().size() <= kMaxSchemaNodes,
                 "more schema nodes than any message type needs");
      break;
    }
    case wire::Request::GET_SCHEMA:
      touch(req.getGetSchema().getServiceId());
      (void)req.getGetSchema().getVersion().getMajor();
      break;
    case wire::Request::LIST_CONTRACTS:
      touch(req.getListContracts().getPrefix());
      break;
    case wire::Request::GET_TOPIC_SCHEMA:
      touch(req.getGetTopicSchema());
      break;
    case wire::Request::GET_METRICS:
      (void)req.getGetMetrics().getOffset();
      touch(req.getGetMetrics().getAfter().getName());
      touch(req.getGetMetrics().getAfter().getMethod());
      break;
    case wire::Request::SUBSCRIBE:
      touch(req.getSubscribe().getTopicId());
      break;
    case wire::Request::UNREGISTER:
    case wire::Request::CLOSE_CHANNEL:
    case wire::Request::UNADVERTISE:
    case wire::Request::UNSUBSCRIBE:
      break;  // plain numbers
  }
}

}  // namespace

Status checkRequest(wire::Request::Reader req) noexcept {
  try {
    check(req);
    return Status();
  } catch (const kj::Exception& e) {
    return Status(StatusCode::kInvalidArgument,
                  std::string("malformed control request: ") + e.getDescription().cStr());
  } catch (const std::exception& e) {
    return Status(StatusCode::kInvalidArgument,
                  std::string("malformed control request: ") + e.what());
  }
}

}  // namespace hms::ffi::broker
