// libFuzzer target: one control datagram, as any client may send it to hms-ffid. Whatever the
// bytes, DecodedMessage::decode() and checkRequest() must answer with a Status: no crash, no
// exception (checkRequest is noexcept, so one that escaped would abort and be reported), no
// sanitizer finding. A request they accept is then read field by field as the handlers read it,
// under the same catch as Broker::onReadable's: a Cap'n Proto reader may still stop a message that
// points at the same data many times (its traversal limit counts every read), and the broker
// drops that client as it drops one whose request fails checkRequest().
//
//   scripts/fuzz.sh control-request 600
#include <kj/exception.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "codec.hpp"
#include "hms/ffi/control.capnp.h"
#include "request_check.hpp"

namespace {

using namespace hms::ffi;

// What the broker's handlers copy out of an accepted request (broker.cpp).
size_t readAsHandlersDo(wire::Request::Reader req) {
  size_t n = 0;
  auto text = [&](capnp::Text::Reader t) { n += std::string(t.cStr()).size(); };
  switch (req.which()) {
    case wire::Request::HELLO:
      text(req.getHello().getClientName());
      text(req.getHello().getNoSharedMemory());
      break;
    case wire::Request::REGISTER: {
      auto d = req.getRegister().getDescriptor();
      text(d.getId());
      n += d.getVersion().getMajor();
      text(d.getInterfaceName());
      for (auto m : d.getMethods()) text(m.getName());
      text(d.getDisplayName());
      text(d.getDescription());
      // The registry keeps a copy of the descriptor.
      capnp::MallocMessageBuilder copy;
      copy.setRoot(d);
      break;
    }
    case wire::Request::ADVERTISE: {
      auto a = req.getAdvertise();
      text(a.getTopicId());
      text(a.getTypeName());
      text(a.getDisplayName());
      text(a.getDescription());
      break;
    }
    case wire::Request::SUBSCRIBE:
      text(req.getSubscribe().getTopicId());
      break;
    default:
      break;
  }
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  auto msg = detail::DecodedMessage::decode(bytes);
  if (!msg.ok()) return 0;
  wire::Request::Reader req;
  try {
    req = (*msg)->root<wire::ClientMessage>().getRequest();
  } catch (const kj::Exception&) {
    return 0;  // the broker refuses it the same way (Broker::handle)
  }
  if (!broker::checkRequest(req)) return 0;
  try {
    (void)readAsHandlersDo(req);
  } catch (const kj::Exception&) {
  }
  return 0;
}
