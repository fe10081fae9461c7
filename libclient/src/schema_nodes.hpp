// The schema nodes of a contract (docs/contracts.md): what a registration or an advertisement
// carries so that the broker can check it and anyone can call it without generated code.
#pragma once

#include <capnp/common.h>
#include <capnp/schema.capnp.h>
#include <capnp/schema.h>

#include <vector>

#include "codec.hpp"

namespace hms::ffi::detail {

// `root` and every struct, group, enum and interface it reaches (field and list element types,
// method params and results, superclasses), each once, `root` first. Generic parameters are not
// followed (their brands are not part of a node).
std::vector<capnp::Schema> reachableSchemas(capnp::Schema root);

// Copies the nodes of `schemas` into `out` (sized by the caller to schemas.size()).
void copyNodes(const std::vector<capnp::Schema>& schemas,
               capnp::List<capnp::schema::Node>::Builder out);

// The nodes of reachableSchemas(root) as one flat message (segment table included) whose root is
// a CodeGeneratorRequest carrying only `nodes`: what a client keeps to send with every
// registration or advertisement, also after a broker restart.
FlatWords flatNodes(capnp::Schema root);

}  // namespace hms::ffi::detail
