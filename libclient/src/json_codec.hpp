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
//
// In detail (decided where the mapping above leaves it open):
//   - Input is RFC 8259 JSON in UTF-8 (a leading byte order mark is ignored); strings are checked
//     for UTF-8 and \u escapes, surrogate pairs included, are decoded. Arrays and objects nested
//     deeper than 64 levels are refused ("malformed JSON: ... at line L, column C").
//   - Numbers convert from their text, not through a double: 9223372036854775807 reaches an Int64
//     exactly. An integer field takes any whole number ("3.0", "1e3", "-0"); a decimal string for
//     Int64/UInt64 is an optional '-' and digits. Integer fields other than 64-bit ones take no
//     strings. A float too small for its type reads as zero; one too large is out of range.
//   - null leaves a field unset, except a Void field, whose one value it is: {"none": null} chooses
//     the union member `none`. A null list element keeps the element's default.
//   - A field name given twice is refused. A Text may not hold \u0000 (C callers would see it cut
//     short). An enum number must be one of the enumerants. Data's base64 may mix the two
//     alphabets; bits below the last whole byte are ignored.
//   - Capability and AnyPointer fields cannot be given (absent or null only) and are left out of
//     the output.
//   - Errors read "<path>: <what>", the path being empty at the top level ("facts[2].value",
//     "address.city", "matrix[1][0]"); types are named by file and name, "hms.emr.patient.Patient"
//     for Patient in hms/emr/patient.capnp. A value the builder refuses (too large for the space
//     the message is built in, say) reads "<path>: Cap'n Proto refused the value: ...".
//   - Output lists fields in ordinal order (@N; a group where its first field falls), as Cap'n
//     Proto's own encoders do. Floats are the shortest text that reads back as the same value
//     ("0.1" for a Float32 0.1). Text bytes that are not UTF-8 are written as U+FFFD. An enumerant
//     unknown to our schema (from a newer one) is written as its number. Pretty output puts each
//     field and each array element on its own line, with no newline at the end.
//   - Output nested deeper than 128 levels is written as null there, so that a builder of any depth
//     cannot exhaust the stack; a message that passed the message checks (pointers at most 64
//     deep) only gets there through groups nested dozens deep.
#pragma once

#include <capnp/dynamic.h>

#include <string>
#include <string_view>

#include "hms/ffi/status.hpp"

namespace hms::ffi::detail {

// Length of the well-formed UTF-8 sequence starting at s[i] (a byte >= 0x80), or 0 when it is
// not one: overlong forms, surrogates and code points above U+10FFFF are not.
size_t utf8SequenceLength(std::string_view s, size_t i);

// Fills `out` (freshly initialised) from `json`, which must be one JSON object. On an error `out`
// holds whatever was converted before it: discard the message (or abort the ring claim).
Status jsonToStruct(std::string_view json, capnp::DynamicStruct::Builder out) noexcept;

// How a configuration file (rather than a message) is read. The defaults are jsonToStruct's above.
struct JsonInputOptions {
  // Member names are snake_case: "allowed_roles" names the field allowedRoles, and the camelCase
  // spelling is then unknown. Messages name fields as the input spells them
  // ("rules[2].allowed_roles"), and list a struct's fields in snake_case.
  bool snakeCaseKeys = false;
  // Non-empty: a JSON array at the top level is read as the value of this field of `out` (a
  // list), as if it were {"<field>": [...]}; paths then start with the field ("rules[2]").
  std::string_view topLevelArrayField;
};
Status jsonToStruct(std::string_view json, capnp::DynamicStruct::Builder out,
                    const JsonInputOptions& options) noexcept;

struct JsonOptions {
  bool pretty = false;  // indented with two spaces, one field per line
};
// The JSON object for `in`. Never fails for a reader that passed the message checks. A reader
// that did not may throw kj::Exception: with exceptions enabled, Cap'n Proto's own bounds checks
// throw ("Message contained out-of-bounds struct pointer") rather than read defaults.
std::string structToJson(capnp::DynamicStruct::Reader in, JsonOptions options = {});

}  // namespace hms::ffi::detail
