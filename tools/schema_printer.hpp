// An interface's schema, loaded at run time from the nodes its provider registered, written back
// as Cap'n Proto declarations: what `hms-ffi describe` shows.
//
//     interface DebateService @0x9d1c5e4b0a7f3e21 {
//       evaluatePolicy @0 (policyId :Text, facts :List(Fact)) -> (decision :Decision);
//       watch @1 (policyId :Text) -> (event :Event);  # stream
//     }
//
//     struct Fact {
//       key @0 :Text;
//       value @1 :Text;
//     }
//
// A method's implicit parameter and result structs are written inline, as in the source; every
// other struct, enum and interface the root reaches is declared once, inside the declaration of
// its parent when that is declared too (as a struct declared inside the interface is), else at
// top level. Names are written as they resolve from where they are used. What a loaded schema
// does not keep (comments, annotations, `using`, constants, generic parameters' names) is not
// written; a generic parameter is written AnyPointer.
#pragma once

#include <capnp/schema.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace hms::ffi::cli {

class SchemaPrinter {
 public:
  // Walks what `root` reaches. The schemas must outlive the printer (their loader does).
  explicit SchemaPrinter(capnp::InterfaceSchema root);

  // The declarations, the root interface first. Methods whose ordinal is in `streams` are
  // marked "# stream".
  std::string declarations(const std::set<uint16_t>& streams = {}) const;

  // The type as written at top level: "UInt32", "List(Fact)", "DebateService.Decision".
  std::string typeName(capnp::Type type) const;
  // Every struct, enum and interface declared (not the implicit ones), the root first.
  std::vector<capnp::Schema> declared() const;
  // The name a declared schema has at top level ("Fact", "DebateService.Decision").
  std::string nameOf(capnp::Schema schema) const;

  // Whether `s` is the implicit parameter or result struct of a method (written inline).
  static bool isImplicitParams(capnp::StructSchema s);
  // A field's explicit default value as Cap'n Proto writes it ("5", "\"none\"", "approve"), or
  // nothing when it has none or it is a list or struct default (not written).
  static std::optional<std::string> defaultValue(capnp::StructSchema::Field field);

 private:
  struct Decl {
    capnp::Schema schema;
    std::string path;              // the name at top level: "Outer.Inner"
    std::optional<size_t> parent;  // index of the declaration it is written inside
    std::vector<size_t> children;
  };

  void reach(capnp::Schema s);
  void reachFields(capnp::StructSchema s);
  void reachType(capnp::Type t);
  void assignPaths();

  // The name of `type` as written inside the declaration whose path is `scope`.
  std::string typeName(capnp::Type type, std::string_view scope) const;
  std::string refName(capnp::Schema target, std::string_view scope) const;

  void writeDecl(std::string& out, size_t index, int depth,
                 const std::set<uint16_t>& streams) const;
  void writeStructBody(std::string& out, capnp::StructSchema s, int depth,
                       std::string_view scope) const;
  void writeField(std::string& out, capnp::StructSchema::Field f, int depth,
                  std::string_view scope) const;
  std::string paramList(capnp::StructSchema s, std::string_view scope) const;

  capnp::InterfaceSchema root_;
  std::vector<Decl> decls_;
  std::map<uint64_t, size_t> index_;  // declared node id -> decls_ index
  std::set<uint64_t> visited_;        // every node walked, implicit ones and groups included
};

}  // namespace hms::ffi::cli
