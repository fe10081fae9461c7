#include "schema_nodes.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <unordered_set>

namespace hms::ffi::detail {

namespace {

struct Walker {
  std::vector<capnp::Schema> out;
  std::unordered_set<uint64_t> seen;

  void type(capnp::Type t) {
    while (t.isList()) t = t.asList().getElementType();
    if (t.isStruct()) {
      add(t.asStruct());
    } else if (t.isEnum()) {
      add(t.asEnum());
    } else if (t.isInterface()) {
      add(t.asInterface());
    }
  }

  void add(capnp::Schema s) {
    if (!seen.insert(s.getProto().getId()).second) return;
    out.push_back(s);
    auto proto = s.getProto();
    if (proto.isStruct()) {
      for (auto f : s.asStruct().getFields()) type(f.getType());  // a group's type is its node
    } else if (proto.isInterface()) {
      auto iface = s.asInterface();
      for (auto m : iface.getMethods()) {
        add(m.getParamType());
        add(m.getResultType());
      }
      for (auto super : iface.getSuperclasses()) add(super);
    }
  }
};

}  // namespace

std::vector<capnp::Schema> reachableSchemas(capnp::Schema root) {
  Walker w;
  w.add(root);
  return std::move(w.out);
}

void copyNodes(const std::vector<capnp::Schema>& schemas,
               capnp::List<capnp::schema::Node>::Builder out) {
  for (unsigned i = 0; i < schemas.size(); ++i) out.setWithCaveats(i, schemas[i].getProto());
}

FlatWords flatNodes(capnp::Schema root) {
  const auto schemas = reachableSchemas(root);
  capnp::MallocMessageBuilder mb;
  copyNodes(schemas,
            mb.initRoot<capnp::schema::CodeGeneratorRequest>().initNodes(unsigned(schemas.size())));
  return toFlatWords(capnp::messageToFlatArray(mb));
}

}  // namespace hms::ffi::detail
