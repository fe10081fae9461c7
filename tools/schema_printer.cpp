#include "schema_printer.hpp"

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>

#include "json_writer.hpp"

namespace hms::ffi::cli {

namespace {

using capnp::schema::Node;
using capnp::schema::Type;

// Where a method's line breaks before its results.
constexpr size_t kLineWidth = 100;

void indent(std::string& out, int depth) {
  out.append(size_t(2 * depth), ' ');
}

// The name of a node inside its file ("Outer.Inner"): its display name after the file's path.
std::string qualifiedName(capnp::Schema s) {
  const auto display = s.getProto().getDisplayName();
  const std::string_view name(display.cStr(), display.size());
  const auto colon = name.find(':');
  if (colon == std::string_view::npos || colon + 1 >= name.size()) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "@0x%016" PRIx64, s.getProto().getId());
    return name.empty() ? buf : std::string(name);
  }
  return std::string(name.substr(colon + 1));
}

std::string shortName(capnp::Schema s) {
  const auto name = s.getShortDisplayName();
  if (name.size() == 0) return qualifiedName(s);
  return name.cStr();
}

template <class List>
auto byCodeOrder(List list) {
  std::vector<decltype(list[0])> out;
  for (auto item : list) out.push_back(item);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.getProto().getCodeOrder() < b.getProto().getCodeOrder();
  });
  return out;
}

template <class T>
std::string floatText(T v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  std::string text(buf, ec == std::errc() ? end : buf);
  // "5" would read as an integer literal; Cap'n Proto accepts it, but "5.0" says what it is.
  if (text.find_first_of(".en") == std::string::npos) text += ".0";
  return text;
}

}  // namespace

SchemaPrinter::SchemaPrinter(capnp::InterfaceSchema root) : root_(root) {
  reach(root);
  assignPaths();
}

bool SchemaPrinter::isImplicitParams(capnp::StructSchema s) {
  // Cap'n Proto gives a method's parameter list a struct of no scope named "method$Params".
  const auto proto = s.getProto();
  const std::string_view name(proto.getDisplayName().cStr(), proto.getDisplayName().size());
  return proto.getScopeId() == 0 && name.find('$') != std::string_view::npos;
}

void SchemaPrinter::reach(capnp::Schema s) {
  const auto proto = s.getProto();
  if (!visited_.insert(proto.getId()).second) return;
  switch (proto.which()) {
    case Node::STRUCT: {
      const auto st = s.asStruct();
      if (!proto.getStruct().getIsGroup() && !isImplicitParams(st)) {
        index_[proto.getId()] = decls_.size();
        decls_.push_back(Decl{s, {}, {}, {}});
      }
      reachFields(st);
      break;
    }
    case Node::ENUM:
      index_[proto.getId()] = decls_.size();
      decls_.push_back(Decl{s, {}, {}, {}});
      break;
    case Node::INTERFACE: {
      index_[proto.getId()] = decls_.size();
      decls_.push_back(Decl{s, {}, {}, {}});
      const auto iface = s.asInterface();
      for (auto super : iface.getSuperclasses()) reach(super);
      for (auto m : byCodeOrder(iface.getMethods())) {
        reach(m.getParamType());
        reach(m.getResultType());
      }
      break;
    }
    default:  // files, constants and annotations are not part of a contract's types
      break;
  }
}

void SchemaPrinter::reachFields(capnp::StructSchema s) {
  for (auto f : byCodeOrder(s.getFields())) {
    if (f.getProto().isGroup()) {
      reach(f.getType().asStruct());
    } else {
      reachType(f.getType());
    }
  }
}

void SchemaPrinter::reachType(capnp::Type t) {
  switch (t.which()) {
    case Type::LIST:
      reachType(t.asList().getElementType());
      break;
    case Type::STRUCT:
      reach(t.asStruct());
      break;
    case Type::ENUM:
      reach(t.asEnum());
      break;
    case Type::INTERFACE:
      reach(t.asInterface());
      break;
    default:
      break;
  }
}

void SchemaPrinter::assignPaths() {
  for (size_t i = 0; i < decls_.size(); ++i) {
    auto parent = index_.find(decls_[i].schema.getProto().getScopeId());
    if (parent != index_.end() && parent->second != i) {
      decls_[i].parent = parent->second;
      decls_[parent->second].children.push_back(i);
    }
  }
  // Top-level names are short unless two would collide; then both keep their qualified name.
  std::map<std::string, int> topNames;
  for (const auto& d : decls_) {
    if (!d.parent) ++topNames[shortName(d.schema)];
  }
  // Parents may come after their children in decls_: resolve each path through its chain.
  for (size_t i = 0; i < decls_.size(); ++i) {
    std::vector<size_t> chain{i};
    while (decls_[chain.back()].parent) chain.push_back(*decls_[chain.back()].parent);
    std::string path;
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      const Decl& d = decls_[*it];
      std::string name = shortName(d.schema);
      if (!d.parent && topNames[name] > 1) name = qualifiedName(d.schema);
      path += (path.empty() ? "" : ".") + name;
    }
    decls_[i].path = std::move(path);
  }
}

std::vector<capnp::Schema> SchemaPrinter::declared() const {
  std::vector<capnp::Schema> out;
  for (const auto& d : decls_) out.push_back(d.schema);
  return out;
}

std::string SchemaPrinter::nameOf(capnp::Schema schema) const {
  auto it = index_.find(schema.getProto().getId());
  return it == index_.end() ? qualifiedName(schema) : decls_[it->second].path;
}

std::string SchemaPrinter::refName(capnp::Schema target, std::string_view scope) const {
  std::string name = nameOf(target);
  // Names resolve from the innermost scope outwards: drop the longest enclosing prefix.
  for (std::string_view s = scope; !s.empty();) {
    if (name.size() > s.size() && name.starts_with(s) && name[s.size()] == '.') {
      return name.substr(s.size() + 1);
    }
    const auto dot = s.rfind('.');
    s = dot == std::string_view::npos ? std::string_view() : s.substr(0, dot);
  }
  return name;
}

std::string SchemaPrinter::typeName(capnp::Type type) const {
  return typeName(type, "");
}

std::string SchemaPrinter::typeName(capnp::Type type, std::string_view scope) const {
  switch (type.which()) {
    case Type::VOID:
      return "Void";
    case Type::BOOL:
      return "Bool";
    case Type::INT8:
      return "Int8";
    case Type::INT16:
      return "Int16";
    case Type::INT32:
      return "Int32";
    case Type::INT64:
      return "Int64";
    case Type::UINT8:
      return "UInt8";
    case Type::UINT16:
      return "UInt16";
    case Type::UINT32:
      return "UInt32";
    case Type::UINT64:
      return "UInt64";
    case Type::FLOAT32:
      return "Float32";
    case Type::FLOAT64:
      return "Float64";
    case Type::TEXT:
      return "Text";
    case Type::DATA:
      return "Data";
    case Type::LIST:
      return "List(" + typeName(type.asList().getElementType(), scope) + ")";
    case Type::ENUM:
      return refName(type.asEnum(), scope);
    case Type::STRUCT:
      return refName(type.asStruct(), scope);
    case Type::INTERFACE:
      return refName(type.asInterface(), scope);
    case Type::ANY_POINTER:
      if (type.getBrandParameter() != nullptr || type.getImplicitParameter() != nullptr) {
        return "AnyPointer";
      }
      switch (type.whichAnyPointerKind()) {
        case Type::AnyPointer::Unconstrained::STRUCT:
          return "AnyStruct";
        case Type::AnyPointer::Unconstrained::LIST:
          return "AnyList";
        case Type::AnyPointer::Unconstrained::CAPABILITY:
          return "Capability";
        default:
          return "AnyPointer";
      }
  }
  return "AnyPointer";
}

std::optional<std::string> SchemaPrinter::defaultValue(capnp::StructSchema::Field field) {
  const auto proto = field.getProto();
  if (!proto.isSlot() || !proto.getSlot().getHadExplicitDefault()) return std::nullopt;
  const auto v = proto.getSlot().getDefaultValue();
  switch (v.which()) {
    case capnp::schema::Value::VOID:
      return "void";
    case capnp::schema::Value::BOOL:
      return v.getBool() ? "true" : "false";
    case capnp::schema::Value::INT8:
      return std::to_string(v.getInt8());
    case capnp::schema::Value::INT16:
      return std::to_string(v.getInt16());
    case capnp::schema::Value::INT32:
      return std::to_string(v.getInt32());
    case capnp::schema::Value::INT64:
      return std::to_string(v.getInt64());
    case capnp::schema::Value::UINT8:
      return std::to_string(v.getUint8());
    case capnp::schema::Value::UINT16:
      return std::to_string(v.getUint16());
    case capnp::schema::Value::UINT32:
      return std::to_string(v.getUint32());
    case capnp::schema::Value::UINT64:
      return std::to_string(v.getUint64());
    case capnp::schema::Value::FLOAT32:
      return floatText(v.getFloat32());
    case capnp::schema::Value::FLOAT64:
      return floatText(v.getFloat64());
    case capnp::schema::Value::TEXT:
      return jsonQuote(v.getText().cStr());
    case capnp::schema::Value::DATA: {
      std::string out = "0x\"";
      char buf[4];
      for (auto byte : v.getData()) {
        std::snprintf(buf, sizeof(buf), "%02x", unsigned(byte));
        out += buf;
      }
      return out + "\"";
    }
    case capnp::schema::Value::ENUM: {
      const auto type = field.getType();
      if (type.isEnum()) {
        auto enumerants = type.asEnum().getEnumerants();
        if (v.getEnum() < enumerants.size()) return enumerants[v.getEnum()].getProto().getName();
      }
      return std::to_string(v.getEnum());
    }
    default:  // list, struct and pointer defaults
      return std::nullopt;
  }
}

std::string SchemaPrinter::paramList(capnp::StructSchema s, std::string_view scope) const {
  std::string out = "(";
  bool first = true;
  for (auto f : byCodeOrder(s.getFields())) {
    out += first ? "" : ", ";
    first = false;
    out += f.getProto().getName().cStr();
    out += " :" + typeName(f.getType(), scope);
    if (auto d = defaultValue(f)) out += " = " + *d;
  }
  return out + ")";
}

void SchemaPrinter::writeField(std::string& out, capnp::StructSchema::Field f, int depth,
                               std::string_view scope) const {
  const auto proto = f.getProto();
  indent(out, depth);
  out += proto.getName().cStr();
  if (proto.isGroup()) {
    const auto group = f.getType().asStruct();
    // A named union is a group with nothing but its union's members.
    const bool isUnion = group.getNonUnionFields().size() == 0 && group.getUnionFields().size() > 0;
    out += isUnion ? " :union {\n" : " :group {\n";
    if (isUnion) {
      for (auto member : byCodeOrder(group.getUnionFields())) {
        writeField(out, member, depth + 1, scope);
      }
    } else {
      writeStructBody(out, group, depth + 1, scope);
    }
    indent(out, depth);
    out += "}\n";
    return;
  }
  out +=
      " @" + std::to_string(proto.getOrdinal().getExplicit()) + " :" + typeName(f.getType(), scope);
  if (auto d = defaultValue(f)) out += " = " + *d;
  out += ";\n";
}

void SchemaPrinter::writeStructBody(std::string& out, capnp::StructSchema s, int depth,
                                    std::string_view scope) const {
  for (auto f : byCodeOrder(s.getNonUnionFields())) writeField(out, f, depth, scope);
  if (s.getUnionFields().size() == 0) return;
  indent(out, depth);
  out += "union {\n";
  for (auto f : byCodeOrder(s.getUnionFields())) writeField(out, f, depth + 1, scope);
  indent(out, depth);
  out += "}\n";
}

void SchemaPrinter::writeDecl(std::string& out, size_t index, int depth,
                              const std::set<uint16_t>& streams) const {
  const Decl& d = decls_[index];
  const auto proto = d.schema.getProto();
  const std::string name = d.parent ? shortName(d.schema) : d.path;
  indent(out, depth);
  switch (proto.which()) {
    case Node::STRUCT:
      out += "struct " + name + " {\n";
      writeStructBody(out, d.schema.asStruct(), depth + 1, d.path);
      break;
    case Node::ENUM:
      out += "enum " + name + " {\n";
      for (auto e : byCodeOrder(d.schema.asEnum().getEnumerants())) {
        indent(out, depth + 1);
        out += std::string(e.getProto().getName().cStr()) + " @" + std::to_string(e.getOrdinal()) +
               ";\n";
      }
      break;
    case Node::INTERFACE: {
      const auto iface = d.schema.asInterface();
      char id[24];
      std::snprintf(id, sizeof(id), "@0x%016" PRIx64, proto.getId());
      out += "interface " + name + " " + id;
      std::string supers;
      for (auto super : iface.getSuperclasses()) {
        supers += (supers.empty() ? "" : ", ") + refName(super, d.path);
      }
      if (!supers.empty()) out += " extends(" + supers + ")";
      out += " {\n";
      for (auto m : byCodeOrder(iface.getMethods())) {
        const auto params = m.getParamType();
        const auto results = m.getResultType();
        std::string head =
            std::string(2 * (depth + 1), ' ') + m.getProto().getName().cStr() + " @" +
            std::to_string(m.getOrdinal()) + " " +
            (isImplicitParams(params) ? paramList(params, d.path) : refName(params, d.path));
        std::string tail =
            "-> " +
            (isImplicitParams(results) ? paramList(results, d.path) : refName(results, d.path)) +
            ";";
        if (index == 0 && streams.count(m.getOrdinal())) tail += "  # stream";
        // Long methods break before the results, as Cap'n Proto sources do.
        if (head.size() + 1 + tail.size() > kLineWidth) {
          out += head + "\n" + std::string(2 * (depth + 3), ' ') + tail + "\n";
        } else {
          out += head + " " + tail + "\n";
        }
      }
      break;
    }
    default:
      break;
  }
  for (size_t child : d.children) {
    out += "\n";
    writeDecl(out, child, depth + 1, streams);
  }
  indent(out, depth);
  out += "}\n";
}

std::string SchemaPrinter::declarations(const std::set<uint16_t>& streams) const {
  std::string out;
  for (size_t i = 0; i < decls_.size(); ++i) {
    if (decls_[i].parent) continue;
    if (!out.empty()) out += "\n";
    writeDecl(out, i, 0, streams);
  }
  return out;
}

}  // namespace hms::ffi::cli
