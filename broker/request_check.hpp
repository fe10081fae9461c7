// What a client sends is untrusted: every text, list and struct pointer of a control request is
// read once here, before any handler uses it, so that a malformed one is refused as a whole.
#pragma once

#include "hms/ffi/control.capnp.h"
#include "hms/ffi/status.hpp"

namespace hms::ffi::broker {

// OK when every field of `req` that a handler reads, or that the broker copies into the registry,
// can be read: texts are NUL-terminated, lists and structs are of the kind the schema says.
// INVALID_ARGUMENT naming what is wrong otherwise. Never throws.
//
// A Cap'n Proto reader checks a text's NUL and a pointer's kind only when the field is read, and
// reports a violation by throwing; DecodedMessage::decode() has already walked the message's
// pointers, but that walk does not look inside texts. A fuzzer can call this directly.
Status checkRequest(wire::Request::Reader req) noexcept;

}  // namespace hms::ffi::broker
