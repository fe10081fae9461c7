// checkRequest(): what hms-ffid checks of a control request before its handlers read it.
#include "request_check.hpp"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include "hms/ffi/control.capnp.h"

namespace hms::ffi::broker {
namespace {

// Found by fuzz/control_request_fuzz.cpp (27b5416): a register whose methods list holds about
// 500 000 structs passed the check's read, and the handler's reads of it then ran into the
// traversal limit. No interface has more methods than 16-bit ordinals can number.
TEST(RequestCheck, RefusesARegisterWithMoreMethodsThanOrdinalsCanNumber) {
  for (const uint32_t n : {1u << 16, (1u << 16) + 1}) {
    capnp::MallocMessageBuilder mb;
    auto req = mb.initRoot<wire::Request>();
    auto d = req.initRegister().initDescriptor();
    d.setId("hms.test.many");
    d.initMethods(n);
    const Status s = checkRequest(req.asReader());
    if (n == 1u << 16) {
      EXPECT_TRUE(s.isOk()) << s.toString();
    } else {
      EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(s.message().find("more methods than 16-bit ordinals can number"), std::string::npos)
          << s.toString();
    }
  }
}

}  // namespace
}  // namespace hms::ffi::broker
