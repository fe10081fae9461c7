// Contract checks (docs/contracts.md): whether the schema nodes a registration carries describe
// its interface completely, and whether a new version of a contract is a compatible evolution of
// an earlier one at the same major version. Pure functions: no broker state, no I/O.
#pragma once

#include <capnp/schema.capnp.h>

#include "hms/ffi/control.capnp.h"
#include "hms/ffi/status.hpp"

namespace hms::ffi::broker {

using SchemaNodes = capnp::List<capnp::schema::Node>::Reader;

// OK when `nodes` is a complete contract for `descriptor`: every node loads in a
// capnp::SchemaLoader; no id appears twice; every type a node refers to (field and list element
// types, method param/result structs, superclasses, groups) is itself among the nodes; the node
// of descriptor.interfaceId is an interface; its methods are exactly descriptor.methods (same
// ordinals, names, param and result struct ids). Otherwise INVALID_ARGUMENT naming what is wrong.
// Annotation nodes (and the file nodes that scope the rest) are not required.
Status validateContract(wire::ServiceDescriptor::Reader descriptor, SchemaNodes nodes);

// The same for a topic's message type: `typeId` is a struct among `nodes`, and every type the
// nodes refer to is there too.
Status validateMessageType(uint64_t typeId, SchemaNodes nodes);

// OK when `newer` is a compatible evolution of `older` (both validated, same service id), by
// Cap'n Proto's rules as the JSON level also needs them: every method of `older` is in `newer`
// with the same ordinal and name, and its params and results structs are compatible; in each
// struct reached, every field of `older` is in `newer` with the same name, ordinal, type (and
// slot offset), union membership and default value; every enumerant of an enum is kept with its
// name. New methods, fields and enumerants are fine. Otherwise FAILED_PRECONDITION naming the
// method or field by its path (e.g. "method evaluatePolicy: params field facts: element field
// value: type changed from Text to UInt32") and both versions ("1.0.0 -> 1.1.0").
Status checkCompatible(wire::Contract::Reader older, wire::Contract::Reader newer);

}  // namespace hms::ffi::broker
