// JSON <-> Cap'n Proto over dynamic schemas (docs/contracts.md#json): what `hms-ffi call`, the
// JSON-level calls and the C ABI use. Typed C++ callers never pay for it.
//
// The mapping follows proto3's JSON mapping where Cap'n Proto has the same thing:
//   Bool            true / false
//   Int8..Int32, UInt8..UInt32, Float32/64   JSON numbers (an integral-valued number such as 3.0
//                   is accepted for an integer; out of range is an error)
//   Int64, UInt64   decimal strings on output ("1500"); numbers or decimal strings on input
//   Float NaN/inf   "NaN", "Infinity", "-Infinity" (also accepted on input)
//   Text            strings
//   Data            base64 strings (standard alphabet, padded) on output; padded or unpadded
//                   standard or URL-safe base64 on input
//   enums           the enumerant's name ("approve"); its number is accepted on input
//   structs/groups  objects keyed by field name; on output every field of a struct, the default
//                   value included (a null pointer field is left out); unions: only the active
//                   member; Void as null
//   lists           arrays
// Input is strict: unknown fields, wrong types, two members of one union, out-of-range numbers,
// unknown enumerants and malformed JSON are INVALID_ARGUMENT naming the field path, e.g.
// "facts[2].value: expected a string, got a number". JSON null for any field leaves it unset.
#pragma once

#include <capnp/dynamic.h>

#include <string>
#include <string_view>

#include "hms/ffi/status.hpp"

namespace hms::ffi::detail {

// Fills `out` (freshly initialised) from `json`, which must be one JSON object.
Status jsonToStruct(std::string_view json, capnp::DynamicStruct::Builder out) noexcept;

struct JsonOptions {
  bool pretty = false;  // indented with two spaces, one field per line
};
// The JSON object for `in`. Never fails for a reader that passed the message checks; a corrupt
// message reads as its defaults, as Cap'n Proto readers do.
std::string structToJson(capnp::DynamicStruct::Reader in, JsonOptions options = {});

}  // namespace hms::ffi::detail
