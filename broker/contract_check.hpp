// Contract checks (docs/contracts.md): whether the schema nodes a registration carries describe
// its interface completely, and whether a new version of a contract is a compatible evolution of
// an earlier one at the same major version. Pure functions: no broker state, no I/O.
#pragma once

#include <capnp/schema.capnp.h>

#include "hms/ffi/control.capnp.h"
#include "hms/ffi/status.hpp"

namespace hms::ffi::broker {

using SchemaNodes = capnp::List<capnp::schema::Node>::Reader;

// OK when `nodes` is a complete contract for `descriptor`: no id appears twice; every type a
// struct or interface node refers to (field and list element types, groups and a group's parent,
// method param/result structs, superclasses) is itself among the nodes and of the kind its use
// needs; every node loads in a fresh capnp::SchemaLoader (which checks each node's layout); the
// node of descriptor.interfaceId is an interface; its own methods are exactly descriptor.methods
// (same ordinals, names, param and result struct ids). Otherwise INVALID_ARGUMENT naming the node
// or method. Annotation and constant nodes (and the file nodes that scope the rest) are not
// required, nor are the types bound to a generic's parameters (brands are tolerated, not walked).
// Checked before the loader sees them, because it trusts them: a struct's discriminantCount is its
// number of union members, and a group is no larger than the struct holding it.
Status validateContract(wire::ServiceDescriptor::Reader descriptor, SchemaNodes nodes);

// The same for a topic's message type: `typeId` is a struct among `nodes`, and every type the
// nodes refer to is there too.
Status validateMessageType(uint64_t typeId, SchemaNodes nodes);

// OK when `newer` is a compatible evolution of `older` (both validated, same service id), by
// Cap'n Proto's rules as the JSON level also needs them, stricter than capnp::SchemaLoader's:
//   - the interface keeps its type id (a typed caller binds by it);
//   - every method of `older` is in `newer` with the same ordinal and name, and its params and
//     results structs are compatible (compared by content: their ids follow the interface's);
//   - in each struct reached (through params, results, fields, list elements and groups, each
//     (old, new) pair once, so a struct holding a list of itself ends), every field of `older`
//     is in `newer` with the same name, ordinal, kind (field or group), union membership
//     (discriminant value), type (by identity: List element types recursively, struct, enum and
//     interface types by id; Text -> Data counts as a change), slot offset and primitive default
//     (pointer defaults are not compared, as Cap'n Proto does not); a union keeps its
//     discriminant offset;
//   - every enumerant of an enum reached is kept at its index with its name.
// New methods, fields, enumerants and types are fine; superclasses are not compared (a service
// is called through its own methods). The first difference found is FAILED_PRECONDITION naming
// it by its path and both versions, e.g. "hms.cdf.debate 1.0.0 -> 1.1.0 is not a compatible
// evolution: method evaluatePolicy: params field facts: element struct
// hms/cdf/debate.capnp:Fact field value: type changed from Text to UInt32; publish it as a new
// major version (2.0.0) or keep the field". INVALID_ARGUMENT when the service ids differ or a
// contract lacks a node it refers to (it was not validated).
Status checkCompatible(wire::Contract::Reader older, wire::Contract::Reader newer);

}  // namespace hms::ffi::broker
