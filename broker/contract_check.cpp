// Contract checks (docs/contracts.md). Two passes over what a client sent: our own walk first,
// which gives messages a user can act on and shields capnp::SchemaLoader from shapes it does not
// check itself, then the loader, which validates each node's layout as Cap'n Proto defines it.
#include "contract_check.hpp"

#include <capnp/schema-loader.h>
#include <kj/exception.h>

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace hms::ffi::broker {

namespace {

namespace schema = capnp::schema;
using Node = schema::Node;
using NodeMap = std::unordered_map<uint64_t, Node::Reader>;

constexpr uint16_t kNoDiscriminant = schema::Field::NO_DISCRIMINANT;

std::string hexId(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, id);
  return buf;
}

std::string text(capnp::Text::Reader t) {
  return std::string(t.begin(), t.size());
}

// "hms/cdf/debate.capnp:Fact (0x...)": how every message names a node it has.
std::string nodeName(Node::Reader n) {
  return text(n.getDisplayName()) + " (" + hexId(n.getId()) + ")";
}

const char* kindName(Node::Which kind) {
  switch (kind) {
    case Node::FILE:
      return "a file";
    case Node::STRUCT:
      return "a struct";
    case Node::ENUM:
      return "an enum";
    case Node::INTERFACE:
      return "an interface";
    case Node::CONST:
      return "a constant";
    case Node::ANNOTATION:
      return "an annotation";
  }
  return "a node of unknown kind";
}

const char* kindName(Node::Reader n) {
  return n.isStruct() && n.getStruct().getIsGroup() ? "a group" : kindName(n.which());
}

std::string versionText(wire::Version::Reader v) {
  return std::to_string(v.getMajor()) + "." + std::to_string(v.getMinor()) + "." +
         std::to_string(v.getPatch());
}

// ---- validation -------------------------------------------------------------------------------

// A type a node refers to: node `id` must be among the nodes, of kind `kind`.
struct Reference {
  uint64_t id;
  Node::Which kind;
  std::string where;  // "field facts of <node>": who refers to it
};

// The node a field's type needs, through any depth of List. Primitives, AnyPointer and generic
// parameters need none; neither do the bindings of a generic brand (the brief of
// reachableSchemas: brands are not part of a node, and a binding that matters is reached through
// the generic's own fields).
void addTypeReference(schema::Type::Reader t, std::string where, std::vector<Reference>& out) {
  while (t.isList()) t = t.getList().getElementType();  // iterative: nesting is the sender's
  switch (t.which()) {
    case schema::Type::STRUCT:
      out.push_back({t.getStruct().getTypeId(), Node::STRUCT, std::move(where)});
      break;
    case schema::Type::ENUM:
      out.push_back({t.getEnum().getTypeId(), Node::ENUM, std::move(where)});
      break;
    case schema::Type::INTERFACE:
      out.push_back({t.getInterface().getTypeId(), Node::INTERFACE, std::move(where)});
      break;
    default:
      break;
  }
}

// Every reference the loader would otherwise satisfy with a placeholder. Annotation and constant
// nodes are not walked: they are optional in a contract, and nothing a call encodes uses them.
std::vector<Reference> referencesOf(Node::Reader n) {
  std::vector<Reference> out;
  const std::string of = " of " + nodeName(n);
  if (n.isStruct()) {
    auto s = n.getStruct();
    for (auto f : s.getFields()) {
      if (f.isSlot()) {
        addTypeReference(f.getSlot().getType(), "field " + text(f.getName()) + of, out);
      } else if (f.isGroup()) {
        out.push_back({f.getGroup().getTypeId(), Node::STRUCT, "group " + text(f.getName()) + of});
      }
    }
    if (s.getIsGroup()) out.push_back({n.getScopeId(), Node::STRUCT, "the parent" + of});
  } else if (n.isInterface()) {
    auto iface = n.getInterface();
    for (auto m : iface.getMethods()) {
      const std::string method = "method " + text(m.getName()) + of;
      out.push_back({m.getParamStructType(), Node::STRUCT, "the params of " + method});
      out.push_back({m.getResultStructType(), Node::STRUCT, "the results of " + method});
    }
    for (auto super : iface.getSuperclasses()) {
      out.push_back({super.getId(), Node::INTERFACE, "a superclass" + of});
    }
  }
  return out;
}

// SchemaLoader's validator trusts discriminantCount to size the table it fills with one entry
// per field (up to 0.9.2 at least): a count above the real number of union members makes it write
// past that table. So the count is checked here, before any node reaches the loader.
std::optional<std::string> unionShapeProblem(Node::Reader n) {
  if (!n.isStruct()) return std::nullopt;
  auto s = n.getStruct();
  uint32_t members = 0;
  for (auto f : s.getFields()) members += f.getDiscriminantValue() != kNoDiscriminant;
  if (members == s.getDiscriminantCount()) return std::nullopt;
  return "its discriminantCount is " + std::to_string(s.getDiscriminantCount()) + " but " +
         std::to_string(members) + " of its fields are union members";
}

// Every name the present nodes give their nested nodes, so that a missing node is named too.
std::unordered_map<uint64_t, std::string> nestedNames(SchemaNodes nodes) {
  std::unordered_map<uint64_t, std::string> names;
  for (auto n : nodes) {
    for (auto nested : n.getNestedNodes()) {
      // "file.capnp:Outer.Inner", as Cap'n Proto spells display names.
      const char* sep = n.isFile() ? ":" : ".";
      names.emplace(nested.getId(), text(n.getDisplayName()) + sep + text(nested.getName()));
    }
  }
  return names;
}

// The loader's complaint and where it was (its KJ_CONTEXTs, outermost first: "validating schema
// node; ...; validating struct field; field.getName() = x"), without source locations.
std::string loaderMessage(const kj::Exception& e) {
  std::string out = e.getDescription().cStr();
  const kj::Exception::Context* at = nullptr;
  KJ_IF_MAYBE (c, e.getContext()) {
    at = c;
  }
  const char* sep = " (";
  while (at != nullptr) {
    out += sep;
    out += at->description.cStr();
    sep = "; ";
    const kj::Exception::Context* next = nullptr;
    KJ_IF_MAYBE (n, at->next) {
      next = n->get();
    }
    at = next;
  }
  if (sep[0] == ';') out += ")";
  return out;
}

Status invalid(std::string message) {
  return Status(StatusCode::kInvalidArgument, std::move(message));
}

// What validateContract and validateMessageType share: the nodes, each once, load; every type
// they refer to is among them and of the kind its use needs. `carrier` completes "... must carry
// every type ..." for the missing-node message. Fills `byId` on success.
Status checkNodes(SchemaNodes nodes, const char* carrier, NodeMap& byId) {
  for (auto n : nodes) {
    auto [it, fresh] = byId.emplace(n.getId(), n);
    if (!fresh) {
      return invalid("node " + nodeName(n) +
                     " appears twice among the schema nodes (the other is " +
                     text(it->second.getDisplayName()) + "); send each node once");
    }
  }

  std::unordered_map<uint64_t, std::string> names;  // filled on the first missing node only
  for (auto n : nodes) {
    if (auto problem = unionShapeProblem(n)) {
      return invalid("node " + nodeName(n) + " is malformed: " + *problem);
    }
    for (auto& ref : referencesOf(n)) {
      auto it = byId.find(ref.id);
      if (it == byId.end()) {
        if (names.empty()) names = nestedNames(nodes);
        auto name = names.find(ref.id);
        const std::string missing =
            name == names.end() ? hexId(ref.id) : name->second + " (" + hexId(ref.id) + ")";
        return invalid("node " + missing + ", used by " + ref.where + ", is missing: " + carrier);
      }
      auto target = it->second;
      if (target.which() != ref.kind) {
        return invalid("node " + nodeName(target) + " is " + kindName(target) + ", but " +
                       ref.where + " uses it as " + kindName(ref.kind));
      }
    }
    // The loader would silently grow the parent to the group's size; a sender whose group is
    // larger than the struct holding it has sent a layout no compiler produced.
    if (n.isStruct() && n.getStruct().getIsGroup()) {
      auto group = n.getStruct();
      auto parent = byId.at(n.getScopeId()).getStruct();  // checked above as a reference
      if (group.getDataWordCount() > parent.getDataWordCount() ||
          group.getPointerCount() > parent.getPointerCount()) {
        return invalid("node " + nodeName(n) + " is malformed: the group is larger than " +
                       nodeName(byId.at(n.getScopeId())) + ", the struct that holds it");
      }
    }
  }

  // Every reference resolves to a node loaded here, so once all are loaded no placeholder stands
  // in for a required node (only for the bindings of generic brands, which are tolerated).
  capnp::SchemaLoader loader;
  for (auto n : nodes) {
    try {
      loader.load(n);
    } catch (const kj::Exception& e) {
      return invalid("node " + nodeName(n) + " is malformed: " + loaderMessage(e));
    }
  }
  return Status();
}

constexpr const char* kInterfaceCarrier =
    "the registration must carry every type its interface reaches";
constexpr const char* kMessageCarrier =
    "the advertisement must carry every type its message type reaches";

// ---- compatibility ----------------------------------------------------------------------------

// Why `newer` is not an evolution of `older`, found at `path` ("method m: params field f").
struct Finding {
  bool badInput = false;  // a contract lacks a node it refers to: no verdict is possible
  std::string path;
  std::string what;
  std::string keep;  // completes "publish it as a new major version or ..."
};
using Verdict = std::optional<Finding>;

std::string primitiveName(schema::Type::Which w) {
  switch (w) {
    case schema::Type::VOID:
      return "Void";
    case schema::Type::BOOL:
      return "Bool";
    case schema::Type::INT8:
      return "Int8";
    case schema::Type::INT16:
      return "Int16";
    case schema::Type::INT32:
      return "Int32";
    case schema::Type::INT64:
      return "Int64";
    case schema::Type::UINT8:
      return "UInt8";
    case schema::Type::UINT16:
      return "UInt16";
    case schema::Type::UINT32:
      return "UInt32";
    case schema::Type::UINT64:
      return "UInt64";
    case schema::Type::FLOAT32:
      return "Float32";
    case schema::Type::FLOAT64:
      return "Float64";
    case schema::Type::TEXT:
      return "Text";
    case schema::Type::DATA:
      return "Data";
    case schema::Type::ANY_POINTER:
      return "AnyPointer";
    default:
      return "type #" + std::to_string(unsigned(w));
  }
}

std::string typeName(schema::Type::Reader t, const NodeMap& nodes) {
  auto named = [&](uint64_t id) {
    auto it = nodes.find(id);
    return it == nodes.end() ? hexId(id) : text(it->second.getDisplayName());
  };
  switch (t.which()) {
    case schema::Type::LIST:
      return "List(" + typeName(t.getList().getElementType(), nodes) + ")";
    case schema::Type::STRUCT:
      return named(t.getStruct().getTypeId());
    case schema::Type::ENUM:
      return named(t.getEnum().getTypeId());
    case schema::Type::INTERFACE:
      return named(t.getInterface().getTypeId());
    default:
      return primitiveName(t.which());
  }
}

// The same type by identity: same kind at every List depth, same struct/enum/interface id, same
// generic parameter. Brands are not compared (generics are tolerated, not checked).
bool sameType(schema::Type::Reader a, schema::Type::Reader b) {
  for (;;) {
    if (a.which() != b.which()) return false;
    switch (a.which()) {
      case schema::Type::LIST:
        a = a.getList().getElementType();
        b = b.getList().getElementType();
        continue;
      case schema::Type::STRUCT:
        return a.getStruct().getTypeId() == b.getStruct().getTypeId();
      case schema::Type::ENUM:
        return a.getEnum().getTypeId() == b.getEnum().getTypeId();
      case schema::Type::INTERFACE:
        return a.getInterface().getTypeId() == b.getInterface().getTypeId();
      case schema::Type::ANY_POINTER: {
        auto pa = a.getAnyPointer(), pb = b.getAnyPointer();
        if (pa.which() != pb.which()) return false;
        if (pa.isParameter()) {
          return pa.getParameter().getScopeId() == pb.getParameter().getScopeId() &&
                 pa.getParameter().getParameterIndex() == pb.getParameter().getParameterIndex();
        }
        if (pa.isImplicitMethodParameter()) {
          return pa.getImplicitMethodParameter().getParameterIndex() ==
                 pb.getImplicitMethodParameter().getParameterIndex();
        }
        return pa.isUnconstrained() ? pa.getUnconstrained().which() == pb.getUnconstrained().which()
                                    : true;
      }
      default:
        return true;
    }
  }
}

// A primitive default as the schema language writes it; an enum's by its enumerant's name.
std::string defaultText(schema::Value::Reader v, schema::Type::Reader t, const NodeMap& nodes) {
  char buf[40];
  switch (v.which()) {
    case schema::Value::BOOL:
      return v.getBool() ? "true" : "false";
    case schema::Value::INT8:
      return std::to_string(v.getInt8());
    case schema::Value::INT16:
      return std::to_string(v.getInt16());
    case schema::Value::INT32:
      return std::to_string(v.getInt32());
    case schema::Value::INT64:
      return std::to_string(v.getInt64());
    case schema::Value::UINT8:
      return std::to_string(v.getUint8());
    case schema::Value::UINT16:
      return std::to_string(v.getUint16());
    case schema::Value::UINT32:
      return std::to_string(v.getUint32());
    case schema::Value::UINT64:
      return std::to_string(v.getUint64());
    case schema::Value::FLOAT32:
      std::snprintf(buf, sizeof buf, "%.9g", double(v.getFloat32()));
      return buf;
    case schema::Value::FLOAT64:
      std::snprintf(buf, sizeof buf, "%.17g", v.getFloat64());
      return buf;
    case schema::Value::ENUM: {
      const uint16_t index = v.getEnum();
      if (t.isEnum()) {
        auto it = nodes.find(t.getEnum().getTypeId());
        if (it != nodes.end() && it->second.isEnum() &&
            index < it->second.getEnum().getEnumerants().size()) {
          return text(it->second.getEnum().getEnumerants()[index].getName());
        }
      }
      return "@" + std::to_string(index);
    }
    default:
      return "(a pointer value)";
  }
}

// Whether two primitive defaults are the same bits (floats compare by representation, so that a
// NaN default equals itself and -0.0 differs from 0.0, as they do on the wire).
bool sameDefault(schema::Value::Reader a, schema::Value::Reader b) {
  if (a.which() != b.which()) return false;
  switch (a.which()) {
    case schema::Value::BOOL:
      return a.getBool() == b.getBool();
    case schema::Value::INT8:
      return a.getInt8() == b.getInt8();
    case schema::Value::INT16:
      return a.getInt16() == b.getInt16();
    case schema::Value::INT32:
      return a.getInt32() == b.getInt32();
    case schema::Value::INT64:
      return a.getInt64() == b.getInt64();
    case schema::Value::UINT8:
      return a.getUint8() == b.getUint8();
    case schema::Value::UINT16:
      return a.getUint16() == b.getUint16();
    case schema::Value::UINT32:
      return a.getUint32() == b.getUint32();
    case schema::Value::UINT64:
      return a.getUint64() == b.getUint64();
    case schema::Value::FLOAT32:
      return std::bit_cast<uint32_t>(a.getFloat32()) == std::bit_cast<uint32_t>(b.getFloat32());
    case schema::Value::FLOAT64:
      return std::bit_cast<uint64_t>(a.getFloat64()) == std::bit_cast<uint64_t>(b.getFloat64());
    case schema::Value::ENUM:
      return a.getEnum() == b.getEnum();
    default:
      // Void has one value. Pointer defaults (Text, Data, List, struct, AnyPointer) are skipped,
      // as Cap'n Proto's own compatibility check skips them: a changed one alters what a reader
      // sees for an absent field but not the encoding, and comparing them means comparing
      // arbitrary object graphs.
      return true;
  }
}

std::string ordinalText(schema::Field::Reader f) {
  return f.getOrdinal().isExplicit() ? "@" + std::to_string(f.getOrdinal().getExplicit())
                                     : "(no ordinal)";
}

// Walks `older`'s interface and everything its methods reach, finding the first thing `newer`
// does not keep. Each (old, new) struct or enum pair is compared once: that stops cycles (a
// struct holding a list of itself) and repeats alike.
class Evolution {
 public:
  Evolution(const NodeMap& older, const NodeMap& newer, std::string olderVersion,
            std::string newerVersion)
      : old_(older),
        new_(newer),
        oldVersion_(std::move(olderVersion)),
        newVersion_(std::move(newerVersion)) {}

  Verdict interfaces(uint64_t oldId, uint64_t newId) {
    auto oldNode = node(old_, oldVersion_, oldId, Node::INTERFACE, "");
    if (!oldNode) return missing_;
    auto newNode = node(new_, newVersion_, newId, Node::INTERFACE, "");
    if (!newNode) return missing_;
    // A typed caller binds by interface id (Client::bind refuses another), so a new id, even of
    // an identical interface, breaks every caller built against the old one.
    if (oldId != newId) {
      return Finding{
          false, "",
          "the interface changed from " + nodeName(*oldNode) + " to " + nodeName(*newNode),
          "keep the interface's type id"};
    }
    // Superclasses are not compared: a service is called through its own methods only (they
    // are what its descriptor lists).
    auto oldMethods = oldNode->getInterface().getMethods();
    auto newMethods = newNode->getInterface().getMethods();
    for (unsigned i = 0; i < oldMethods.size(); ++i) {
      auto m = oldMethods[i];
      const std::string name = text(m.getName());
      if (i < newMethods.size() && newMethods[i].getName() == m.getName()) {
        auto n = newMethods[i];
        // Params and results compare by content, not id: the wire and the JSON level see their
        // fields, and an implicit param struct's id follows its method's ordinal anyway.
        if (auto v = structs("method " + name + ": params", m.getParamStructType(),
                             n.getParamStructType())) {
          return v;
        }
        if (auto v = structs("method " + name + ": results", m.getResultStructType(),
                             n.getResultStructType())) {
          return v;
        }
        continue;
      }
      for (unsigned j = 0; j < newMethods.size(); ++j) {
        if (newMethods[j].getName() == m.getName()) {
          return Finding{false, "",
                         "method " + name + " renumbered from @" + std::to_string(i) + " to @" +
                             std::to_string(j),
                         "keep the method's ordinal"};
        }
      }
      if (i < newMethods.size()) {
        return Finding{false, "",
                       "method " + name + " (@" + std::to_string(i) + ") renamed to " +
                           text(newMethods[i].getName()),
                       "keep the method's name"};
      }
      return Finding{false, "", "method " + name + " (@" + std::to_string(i) + ") removed",
                     "keep the method"};
    }
    return std::nullopt;
  }

 private:
  // The node `id` of the given kind, or nullopt with missing_ set (the input was not validated).
  std::optional<Node::Reader> node(const NodeMap& nodes, const std::string& version, uint64_t id,
                                   Node::Which kind, const std::string& path) {
    auto it = nodes.find(id);
    if (it != nodes.end() && it->second.which() == kind) return it->second;
    missing_ = Finding{
        true, path,
        "the " + version + " contract has no node " + hexId(id) + " that is " + kindName(kind) +
            (it == nodes.end() ? "" : " (it is " + std::string(kindName(it->second)) + ")"),
        ""};
    return std::nullopt;
  }

  Verdict structs(const std::string& path, uint64_t oldId, uint64_t newId) {
    if (!visited_.emplace(oldId, newId).second) return std::nullopt;
    auto oldNode = node(old_, oldVersion_, oldId, Node::STRUCT, path);
    if (!oldNode) return missing_;
    auto newNode = node(new_, newVersion_, newId, Node::STRUCT, path);
    if (!newNode) return missing_;
    auto o = oldNode->getStruct();
    auto n = newNode->getStruct();
    if (o.getDiscriminantCount() > 0 && n.getDiscriminantCount() > 0 &&
        o.getDiscriminantOffset() != n.getDiscriminantOffset()) {
      return Finding{false, path,
                     "union discriminant moved from offset " +
                         std::to_string(o.getDiscriminantOffset()) + " to " +
                         std::to_string(n.getDiscriminantOffset()),
                     "keep the union where it was"};
    }
    for (auto f : o.getFields()) {
      if (auto v = field(path, f, n.getFields())) return v;
    }
    return std::nullopt;
  }

  Verdict field(const std::string& path, schema::Field::Reader f,
                capnp::List<schema::Field>::Reader newFields) {
    const std::string name = text(f.getName());
    const std::string here = path + (f.isGroup() ? " group " : " field ") + name;
    std::optional<schema::Field::Reader> match;
    for (auto nf : newFields) {
      if (nf.getName() == f.getName()) match = nf;
    }
    if (!match) {
      if (f.getOrdinal().isExplicit()) {
        for (auto nf : newFields) {
          if (nf.getOrdinal().isExplicit() &&
              nf.getOrdinal().getExplicit() == f.getOrdinal().getExplicit()) {
            return Finding{
                false, path,
                "field " + name + " (" + ordinalText(f) + ") renamed to " + text(nf.getName()),
                "keep the field's name"};
          }
        }
      }
      return Finding{
          false, path,
          (f.isGroup() ? "group " : "field ") + name + " (" + ordinalText(f) + ") removed",
          "keep the field"};
    }
    auto nf = *match;
    if (f.getOrdinal().isExplicit() &&
        (!nf.getOrdinal().isExplicit() ||
         nf.getOrdinal().getExplicit() != f.getOrdinal().getExplicit())) {
      return Finding{false, here, "renumbered from " + ordinalText(f) + " to " + ordinalText(nf),
                     "keep the field's ordinal"};
    }
    if (f.isGroup() != nf.isGroup()) {
      return Finding{
          false, here,
          f.isGroup() ? "changed from a group to a field" : "changed from a field to a group",
          "keep the field"};
    }
    const uint16_t od = f.getDiscriminantValue();
    const uint16_t nd = nf.getDiscriminantValue();
    if (od != nd) {
      std::string what = od == kNoDiscriminant ? "moved into a union"
                         : nd == kNoDiscriminant
                             ? "moved out of its union"
                             : "union discriminant changed from " + std::to_string(od) + " to " +
                                   std::to_string(nd);
      return Finding{false, here, std::move(what), "keep the field where it was"};
    }
    if (f.isGroup()) {
      return structs(here, f.getGroup().getTypeId(), nf.getGroup().getTypeId());
    }
    auto os = f.getSlot();
    auto ns = nf.getSlot();
    if (auto v = types(here, os.getType(), ns.getType())) return v;
    if (os.getOffset() != ns.getOffset()) {
      return Finding{false, here,
                     "slot offset changed from " + std::to_string(os.getOffset()) + " to " +
                         std::to_string(ns.getOffset()),
                     "keep the field where it was"};
    }
    if (!sameDefault(os.getDefaultValue(), ns.getDefaultValue())) {
      return Finding{false, here,
                     "default changed from " +
                         defaultText(os.getDefaultValue(), os.getType(), old_) + " to " +
                         defaultText(ns.getDefaultValue(), ns.getType(), new_),
                     "keep the field's default"};
    }
    return std::nullopt;
  }

  Verdict types(const std::string& path, schema::Type::Reader a, schema::Type::Reader b) {
    if (!sameType(a, b)) {
      return Finding{false, path,
                     "type changed from " + typeName(a, old_) + " to " + typeName(b, new_),
                     "keep the field"};
    }
    // The same type by id: what may still differ is the content of the struct or enum.
    std::string inner = path;
    while (a.isList()) {
      inner += ": element";
      a = a.getList().getElementType();
    }
    const char* sep = inner.size() == path.size() ? ": " : " ";
    if (a.isStruct()) {
      const uint64_t id = a.getStruct().getTypeId();
      return structs(inner + sep + "struct " + typeName(a, old_), id, id);
    }
    if (a.isEnum())
      return enums(inner + sep + "enum " + typeName(a, old_), a.getEnum().getTypeId());
    // Interfaces (capabilities) compare by id only: a channel carries no capabilities.
    return std::nullopt;
  }

  Verdict enums(const std::string& path, uint64_t id) {
    if (!visited_.emplace(id, id).second) return std::nullopt;
    auto oldNode = node(old_, oldVersion_, id, Node::ENUM, path);
    if (!oldNode) return missing_;
    auto newNode = node(new_, newVersion_, id, Node::ENUM, path);
    if (!newNode) return missing_;
    auto o = oldNode->getEnum().getEnumerants();
    auto n = newNode->getEnum().getEnumerants();
    for (unsigned i = 0; i < o.size(); ++i) {
      if (i < n.size() && n[i].getName() == o[i].getName()) continue;
      const std::string name = text(o[i].getName());
      const std::string at = "@" + std::to_string(i);
      for (unsigned j = 0; j < n.size(); ++j) {
        if (n[j].getName() == o[i].getName()) {
          return Finding{
              false, path,
              "enumerant " + name + " renumbered from " + at + " to @" + std::to_string(j),
              "keep the enumerant"};
        }
      }
      if (i < n.size()) {
        return Finding{false, path,
                       "enumerant " + name + " (" + at + ") renamed to " + text(n[i].getName()),
                       "keep the enumerant"};
      }
      return Finding{false, path, "enumerant " + name + " (" + at + ") removed",
                     "keep the enumerant"};
    }
    return std::nullopt;
  }

  const NodeMap& old_;
  const NodeMap& new_;
  const std::string oldVersion_;
  const std::string newVersion_;
  std::set<std::pair<uint64_t, uint64_t>> visited_;  // (old id, new id) already compared
  Finding missing_;                                  // what node() last failed to find
};

NodeMap indexNodes(SchemaNodes nodes) {
  NodeMap byId;
  for (auto n : nodes) byId.emplace(n.getId(), n);
  return byId;
}

}  // namespace

Status validateContract(wire::ServiceDescriptor::Reader descriptor, SchemaNodes nodes) {
  NodeMap byId;
  if (auto st = checkNodes(nodes, kInterfaceCarrier, byId); !st) return st;

  const uint64_t ifaceId = descriptor.getInterfaceId();
  auto it = byId.find(ifaceId);
  if (it == byId.end()) {
    return invalid("the interface " + text(descriptor.getInterfaceName()) + " (" + hexId(ifaceId) +
                   ") is not among the schema nodes; the registration must carry its "
                   "interface's node");
  }
  auto ifaceNode = it->second;
  if (!ifaceNode.isInterface()) {
    return invalid("node " + nodeName(ifaceNode) + ", named as the interface, is " +
                   kindName(ifaceNode) + ", not an interface");
  }
  const std::string ifaceName = nodeName(ifaceNode);

  // The descriptor's methods by ordinal; each is crossed off as the interface's method is found.
  std::unordered_map<uint16_t, wire::MethodInfo::Reader> declared;
  for (auto m : descriptor.getMethods()) {
    auto [dup, fresh] = declared.emplace(m.getOrdinal(), m);
    if (!fresh) {
      return invalid("the descriptor lists ordinal @" + std::to_string(m.getOrdinal()) +
                     " twice (methods " + text(dup->second.getName()) + " and " +
                     text(m.getName()) + ")");
    }
  }
  auto methods = ifaceNode.getInterface().getMethods();
  for (unsigned i = 0; i < methods.size(); ++i) {
    auto m = methods[i];
    const std::string method = "method " + text(m.getName()) + " (@" + std::to_string(i) + ")";
    auto d = i <= UINT16_MAX ? declared.find(uint16_t(i)) : declared.end();
    if (d == declared.end()) {
      return invalid(method + " of " + ifaceName + " is not among the descriptor's methods");
    }
    auto info = d->second;
    if (info.getName() != m.getName()) {
      return invalid(method + " of " + ifaceName + " is called " + text(info.getName()) +
                     " in the descriptor");
    }
    if (info.getParamSchemaId() != m.getParamStructType()) {
      return invalid(method + ": the descriptor names params " + hexId(info.getParamSchemaId()) +
                     ", the interface " + nodeName(byId.at(m.getParamStructType())));
    }
    if (info.getResultSchemaId() != m.getResultStructType()) {
      return invalid(method + ": the descriptor names results " + hexId(info.getResultSchemaId()) +
                     ", the interface " + nodeName(byId.at(m.getResultStructType())));
    }
    declared.erase(d);
  }
  if (!declared.empty()) {
    // The lowest ordinal, so that the message does not depend on hash order.
    auto extra = std::min_element(declared.begin(), declared.end(),
                                  [](auto& a, auto& b) { return a.first < b.first; });
    return invalid("the descriptor's method " + text(extra->second.getName()) + " (@" +
                   std::to_string(extra->first) + ") is not a method of " + ifaceName);
  }
  return Status();
}

Status validateMessageType(uint64_t typeId, SchemaNodes nodes) {
  NodeMap byId;
  if (auto st = checkNodes(nodes, kMessageCarrier, byId); !st) return st;
  auto it = byId.find(typeId);
  if (it == byId.end()) {
    return invalid("the message type " + hexId(typeId) +
                   " is not among the schema nodes; the advertisement must carry its node");
  }
  if (!it->second.isStruct()) {
    return invalid("node " + nodeName(it->second) + ", named as the message type, is " +
                   kindName(it->second) + ", not a struct");
  }
  return Status();
}

Status checkCompatible(wire::Contract::Reader older, wire::Contract::Reader newer) {
  auto od = older.getDescriptor();
  auto nd = newer.getDescriptor();
  const std::string oldVersion = versionText(od.getVersion());
  const std::string newVersion = versionText(nd.getVersion());
  if (od.getId() != nd.getId()) {
    return invalid("contracts of different services cannot be compared: " + text(od.getId()) + " " +
                   oldVersion + " and " + text(nd.getId()) + " " + newVersion);
  }
  const NodeMap oldNodes = indexNodes(older.getNodes());
  const NodeMap newNodes = indexNodes(newer.getNodes());
  Evolution evolution(oldNodes, newNodes, oldVersion, newVersion);
  auto finding = evolution.interfaces(od.getInterfaceId(), nd.getInterfaceId());
  if (!finding) return Status();

  const std::string head = text(od.getId()) + " " + oldVersion + " -> " + newVersion;
  const std::string where =
      finding->path.empty() ? finding->what : finding->path + ": " + finding->what;
  if (finding->badInput) {
    return invalid(head + " cannot be checked: " + where +
                   " (checkCompatible takes validated contracts)");
  }
  const uint32_t major = std::max(od.getVersion().getMajor(), nd.getVersion().getMajor()) + 1;
  return Status(StatusCode::kFailedPrecondition, head + " is not a compatible evolution: " + where +
                                                     "; publish it as a new major version (" +
                                                     std::to_string(major) + ".0.0) or " +
                                                     finding->keep);
}

}  // namespace hms::ffi::broker
