// The broker's contract checks (broker/contract_check.hpp): validateContract and
// validateMessageType on the nodes of a generated interface, altered one way at a time, and
// checkCompatible on versions of a schema written here as text, each parsed on its own. The
// versions share their type ids (each type declares it), as real versions of one schema do.
#include "contract_check.hpp"

#include <capnp/message.h>
#include <capnp/schema-parser.h>
#include <gtest/gtest.h>
#include <kj/filesystem.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "hms/cdf/debate.capnp.h"
#include "schema_nodes.hpp"

namespace hms::ffi::broker {
namespace {

using capnp::schema::Node;

// The display name of a generated type ("hms/cdf/<file>.capnp:Fact"), as messages name it.
template <class T>
std::string name() {
  return capnp::Schema::from<T>().getProto().getDisplayName().cStr();
}

std::string hex(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(id));
  return buf;
}

// ---- building contracts -----------------------------------------------------------------------

// A contract for `iface` with the nodes of `schemas` (iface's reachable ones unless given), its
// descriptor's methods described as libhmsffi describes them.
void buildContract(capnp::InterfaceSchema iface, const std::vector<capnp::Schema>& schemas,
                   wire::Contract::Builder out, std::string_view serviceId = "hms.cdf.debate",
                   uint32_t major = 1, uint32_t minor = 0) {
  auto d = out.initDescriptor();
  d.setId(std::string(serviceId));
  d.getVersion().setMajor(major);
  d.getVersion().setMinor(minor);
  d.setInterfaceId(iface.getProto().getId());
  d.setInterfaceName(iface.getShortDisplayName());
  auto methods = iface.getMethods();
  auto infos = d.initMethods(methods.size());
  for (unsigned i = 0; i < methods.size(); ++i) {
    infos[i].setName(methods[i].getProto().getName());
    infos[i].setOrdinal(methods[i].getOrdinal());
    infos[i].setParamSchemaId(methods[i].getParamType().getProto().getId());
    infos[i].setResultSchemaId(methods[i].getResultType().getProto().getId());
  }
  detail::copyNodes(schemas, out.initNodes(unsigned(schemas.size())));
}

// The contract of the generated hms.cdf.debate interface, for tests to alter.
struct GeneratedContract {
  capnp::MallocMessageBuilder message;
  wire::Contract::Builder contract = message.initRoot<wire::Contract>();

  explicit GeneratedContract(std::vector<capnp::Schema> schemas = reachable()) {
    buildContract(capnp::Schema::from<hms::cdf::DebateService>(), schemas, contract);
  }
  static std::vector<capnp::Schema> reachable() {
    return detail::reachableSchemas(capnp::Schema::from<hms::cdf::DebateService>());
  }
  Node::Builder node(uint64_t id) {
    for (auto n : contract.getNodes()) {
      if (n.getId() == id) return n;
    }
    ADD_FAILURE() << "no node " << id;
    return contract.getNodes()[0];
  }
  Status validate() { return validateContract(contract.getDescriptor(), contract.getNodes()); }
};

// Version 1.0.0 of a debate service, every kind of member the compatibility rules look at: an
// enum, a struct reached through a list, a struct holding a list of itself, defaults, a group.
constexpr std::string_view kDebateV1 = R"(@0xd0a1b2c3d4e5f600;

enum Decision @0xd0a1b2c3d4e5f601 {
  approve @0;
  deny @1;
  escalate @2;
}

struct Fact @0xd0a1b2c3d4e5f602 {
  key @0 :Text;
  value @1 :Text;
}

struct Tree @0xd0a1b2c3d4e5f603 {
  label @0 :Text;
  children @1 :List(Tree);
}

struct Info @0xd0a1b2c3d4e5f604 {
  weight @0 :Float64 = 1.5;
  limit @1 :UInt32 = 5;
  note @2 :Text;
  extra @3 :UInt16;
  addr :group {
    city @4 :Text;
    zip @5 :UInt32;
  }
}

struct Other @0xd0a1b2c3d4e5f605 {
  key @0 :Text;
  value @1 :Text;
}

interface DebateService @0xd0a1b2c3d4e5f6f0 {
  evaluatePolicy @0 (policyId :Text, facts :List(Fact), maxRounds :UInt32 = 3, info :Info,
                     tree :Tree) -> (decision :Decision, confidence :Float64);
  describe @1 () -> (text :Text);
}
)";

// kDebateV1 with `from` replaced by `to` (which must be there: a typo fails the test).
std::string edit(std::string_view from, std::string_view to, std::string text = {}) {
  if (text.empty()) text = std::string(kDebateV1);
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "the schema has no '" << from << "'";
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// One version of the service parsed from text, its contract in a message of its own. Each parse
// has its own SchemaParser: the versions share type ids, which one parser would refuse.
class TextContract {
 public:
  // `adjust` may change the nodes the contract carries (the interface's reachable ones; `file`
  // is the file's node, not among them).
  using Adjust = std::function<void(std::vector<capnp::Schema>& nodes, capnp::Schema file)>;

  TextContract(std::string_view schemaText, uint32_t major, uint32_t minor,
               std::string_view serviceId = "hms.cdf.debate", Adjust adjust = nullptr) {
    capnp::SchemaParser parser;
    auto dir = kj::newInMemoryDirectory(kj::nullClock());
    auto path = kj::Path::parse("hms/cdf/debate.capnp");
    const std::string content(schemaText);
    dir->openFile(path, kj::WriteMode::CREATE | kj::WriteMode::CREATE_PARENT)
        ->writeAll(kj::StringPtr(content.c_str()));
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                   auto file = parser.parseFromDirectory(*dir, path.clone(), nullptr);
                   auto iface = file.getNested("DebateService").asInterface();
                   auto nodes = detail::reachableSchemas(iface);
                   if (adjust) adjust(nodes, file);
                   buildContract(iface, nodes, message_.initRoot<wire::Contract>(), serviceId,
                                 major, minor);
                 })) {
      ADD_FAILURE() << "the test schema does not parse: " << e->getDescription().cStr();
      message_.initRoot<wire::Contract>();
    }
  }
  wire::Contract::Reader get() { return message_.getRoot<wire::Contract>().asReader(); }

 private:
  capnp::MallocMessageBuilder message_;
};

// checkCompatible(1.0.0 of kDebateV1, 1.1.0 of `newer`).
Status evolve(std::string_view newer) {
  TextContract v1(kDebateV1, 1, 0);
  TextContract v2(newer, 1, 1);
  EXPECT_TRUE(validateContract(v2.get().getDescriptor(), v2.get().getNodes()).isOk());
  return checkCompatible(v1.get(), v2.get());
}

constexpr std::string_view kHead = "hms.cdf.debate 1.0.0 -> 1.1.0 is not a compatible evolution: ";

// Expects FAILED_PRECONDITION whose message is kHead, then `where`, then the advice.
void expectIncompatible(const Status& st, const std::string& where) {
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.message();
  EXPECT_EQ(st.message().rfind(std::string(kHead) + where, 0), 0u) << st.message();
  EXPECT_NE(st.message().find("; publish it as a new major version (2.0.0) or keep the "),
            std::string::npos)
      << st.message();
}

void expectInvalid(const Status& st, std::string_view part) {
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.message();
  EXPECT_NE(st.message().find(part), std::string::npos)
      << "'" << part << "' not in: " << st.message();
}

// ---- validateContract -------------------------------------------------------------------------

TEST(ContractValidation, ValidateContract_AcceptsGeneratedInterface_WithEveryReachableNode) {
  GeneratedContract c;
  EXPECT_TRUE(c.validate().isOk()) << c.validate().message();
}

TEST(ContractValidation, ValidateContract_AcceptsAParsedSchema_WithGroupsCyclesAndDefaults) {
  TextContract v1(kDebateV1, 1, 0);
  EXPECT_TRUE(validateContract(v1.get().getDescriptor(), v1.get().getNodes()).isOk());
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenANodeIsMissing) {
  auto schemas = GeneratedContract::reachable();
  const auto factId = capnp::typeId<hms::cdf::Fact>();
  std::erase_if(schemas, [&](capnp::Schema s) { return s.getProto().getId() == factId; });
  GeneratedContract c(schemas);
  auto st = c.validate();
  expectInvalid(st, "node " + hex(factId) + ", used by field facts of ");
  expectInvalid(st, "is missing: the registration must carry every type its interface reaches");
}

TEST(ContractValidation, ValidateContract_NamesTheMissingNode_WhenItsScopeNamesIt) {
  // The file node is optional, but when it is there it names the types it declares.
  const uint64_t factId = 0xd0a1b2c3d4e5f602;
  TextContract v1(kDebateV1, 1, 0, "hms.cdf.debate",
                  [&](std::vector<capnp::Schema>& nodes, capnp::Schema file) {
                    std::erase_if(nodes,
                                  [&](capnp::Schema s) { return s.getProto().getId() == factId; });
                    nodes.push_back(file);
                  });
  expectInvalid(validateContract(v1.get().getDescriptor(), v1.get().getNodes()),
                "node hms/cdf/debate.capnp:Fact (" + hex(factId) + "), used by field facts of ");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenANodeAppearsTwice) {
  auto schemas = GeneratedContract::reachable();
  schemas.push_back(capnp::Schema::from<hms::cdf::Argument>());
  GeneratedContract c(schemas);
  expectInvalid(c.validate(), name<hms::cdf::Argument>() + " (0x");
  expectInvalid(c.validate(), "appears twice");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenAMethodOrdinalDiffers) {
  GeneratedContract c;
  // An ordinal no method of the interface has, so that no other one is listed twice.
  const auto count = capnp::Schema::from<hms::cdf::DebateService>().getMethods().size();
  c.contract.getDescriptor().getMethods()[0].setOrdinal(uint16_t(count));
  expectInvalid(c.validate(), "method evaluatePolicy (@0) of " + name<hms::cdf::DebateService>());
  expectInvalid(c.validate(), "is not among the descriptor's methods");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenAMethodNameDiffers) {
  GeneratedContract c;
  c.contract.getDescriptor().getMethods()[0].setName("evaluate");
  expectInvalid(c.validate(), "method evaluatePolicy (@0) of ");
  expectInvalid(c.validate(), "is called evaluate in the descriptor");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenAParamIdDiffers) {
  GeneratedContract c;
  c.contract.getDescriptor().getMethods()[0].setParamSchemaId(capnp::typeId<hms::cdf::Fact>());
  expectInvalid(c.validate(), "method evaluatePolicy (@0): the descriptor names params 0x");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenAResultIdDiffers) {
  GeneratedContract c;
  c.contract.getDescriptor().getMethods()[0].setResultSchemaId(1);
  expectInvalid(c.validate(), "method evaluatePolicy (@0): the descriptor names results 0x");
}

TEST(ContractValidation,
     ValidateContract_ReturnsInvalidArgument_WhenTheDescriptorHasAnExtraMethod) {
  GeneratedContract c;
  const auto iface = capnp::Schema::from<hms::cdf::DebateService>();
  const unsigned count = iface.getMethods().size();
  GeneratedContract longer;
  auto methods = c.contract.getDescriptor().initMethods(count + 1);
  for (unsigned i = 0; i < count; ++i) {
    methods.setWithCaveats(i, longer.contract.getDescriptor().getMethods()[i]);
  }
  methods[count].setName("summarize");
  methods[count].setOrdinal(uint16_t(count));
  expectInvalid(c.validate(), "the descriptor's method summarize (@" + std::to_string(count) +
                                  ") is not a method of " + name<hms::cdf::DebateService>());
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenAnOrdinalIsListedTwice) {
  GeneratedContract c;
  auto d = c.contract.getDescriptor();
  auto methods = d.initMethods(2);
  for (auto m : methods) {
    m.setName("evaluatePolicy");
    m.setOrdinal(0);
  }
  expectInvalid(c.validate(), "the descriptor lists ordinal @0 twice");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenTheInterfaceIsAStruct) {
  GeneratedContract c;
  c.contract.getDescriptor().setInterfaceId(capnp::typeId<hms::cdf::Fact>());
  expectInvalid(c.validate(), "node " + name<hms::cdf::Fact>() + " (0x");
  expectInvalid(c.validate(), "named as the interface, is a struct, not an interface");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenTheInterfaceIsNotThere) {
  GeneratedContract c;
  c.contract.getDescriptor().setInterfaceId(0x1234);
  expectInvalid(c.validate(), "the interface DebateService (0x0000000000001234) is not among");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenAFieldOffsetIsOutOfBounds) {
  GeneratedContract c;
  auto fact = c.node(capnp::typeId<hms::cdf::Fact>());
  fact.getStruct().getFields()[0].getSlot().setOffset(1000);
  expectInvalid(c.validate(), "node " + name<hms::cdf::Fact>() + " (0x");
  expectInvalid(c.validate(), "is malformed: ");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenADefaultDoesNotMatchItsType) {
  GeneratedContract c;
  auto argument = c.node(capnp::typeId<hms::cdf::Argument>());
  argument.getStruct().getFields()[3].getSlot().getDefaultValue().setText("heavy");  // weight
  expectInvalid(c.validate(), "node " + name<hms::cdf::Argument>() + " (0x");
  expectInvalid(c.validate(), "is malformed: ");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenTwoFieldsShareAName) {
  GeneratedContract c;
  c.node(capnp::typeId<hms::cdf::Fact>()).getStruct().getFields()[1].setName("key");
  expectInvalid(c.validate(), "node " + name<hms::cdf::Fact>() + " (0x");
  expectInvalid(c.validate(), "is malformed: ");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenTheUnionCountIsWrong) {
  // More union members claimed than there are: SchemaLoader would write past its own table.
  GeneratedContract c;
  c.node(capnp::typeId<hms::cdf::Argument>()).getStruct().setDiscriminantCount(3);
  expectInvalid(c.validate(),
                "is malformed: its discriminantCount is 3 but 0 of its fields are union members");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenATypeIsUsedAsTheWrongKind) {
  GeneratedContract c;
  auto argument = c.node(capnp::typeId<hms::cdf::Argument>());
  auto position = argument.getStruct().getFields()[1];
  ASSERT_EQ(std::string(position.getName().cStr()), "position");
  position.getSlot().getType().initStruct().setTypeId(capnp::typeId<hms::cdf::Decision>());
  expectInvalid(c.validate(), "node " + name<hms::cdf::Decision>() + " (0x");
  expectInvalid(c.validate(), "is an enum, but field position of " + name<hms::cdf::Argument>());
  expectInvalid(c.validate(), "uses it as a struct");
}

TEST(ContractValidation, ValidateContract_ReturnsInvalidArgument_WhenAGroupOutgrowsItsParent) {
  TextContract v1(kDebateV1, 1, 0);
  capnp::MallocMessageBuilder mb;
  mb.setRoot(v1.get());
  auto contract = mb.getRoot<wire::Contract>();
  bool found = false;
  for (auto n : contract.getNodes()) {
    if (n.isStruct() && n.getStruct().getIsGroup()) {
      n.getStruct().setDataWordCount(40);
      found = true;
    }
  }
  ASSERT_TRUE(found);
  expectInvalid(validateContract(contract.getDescriptor(), contract.getNodes()),
                "the group is larger than hms/cdf/debate.capnp:Info (0x");
}

// ---- validateMessageType ----------------------------------------------------------------------

struct MessageNodes {
  capnp::MallocMessageBuilder message;
  capnp::List<Node>::Builder nodes;
  explicit MessageNodes(const std::vector<capnp::Schema>& schemas)
      : nodes(message.initRoot<wire::TopicSchema>().initNodes(unsigned(schemas.size()))) {
    detail::copyNodes(schemas, nodes);
  }
};

TEST(ContractValidation, ValidateMessageType_AcceptsAStruct_WithEveryReachableNode) {
  MessageNodes m(detail::reachableSchemas(capnp::Schema::from<hms::cdf::Argument>()));
  EXPECT_TRUE(validateMessageType(capnp::typeId<hms::cdf::Argument>(), m.nodes).isOk());
}

TEST(ContractValidation, ValidateMessageType_ReturnsInvalidArgument_WhenANodeIsMissing) {
  MessageNodes m({capnp::Schema::from<hms::cdf::Argument>()});
  auto st = validateMessageType(capnp::typeId<hms::cdf::Argument>(), m.nodes);
  expectInvalid(st, ", used by field position of " + name<hms::cdf::Argument>() + " (0x");
  expectInvalid(st, "is missing: the advertisement must carry every type its message type reaches");
}

TEST(ContractValidation, ValidateMessageType_ReturnsInvalidArgument_WhenTheTypeIsAnEnum) {
  MessageNodes m(detail::reachableSchemas(capnp::Schema::from<hms::cdf::Argument>()));
  expectInvalid(validateMessageType(capnp::typeId<hms::cdf::Decision>(), m.nodes),
                "named as the message type, is an enum, not a struct");
}

TEST(ContractValidation, ValidateMessageType_ReturnsInvalidArgument_WhenTheTypeIsNotThere) {
  MessageNodes m(detail::reachableSchemas(capnp::Schema::from<hms::cdf::Argument>()));
  expectInvalid(validateMessageType(capnp::typeId<hms::cdf::Fact>(), m.nodes),
                "is not among the schema nodes");
}

TEST(ContractValidation, ValidateMessageType_ReturnsInvalidArgument_WhenANodeIsMalformed) {
  MessageNodes m(detail::reachableSchemas(capnp::Schema::from<hms::cdf::Argument>()));
  m.nodes[0].getStruct().getFields()[3].getSlot().setOffset(7);  // weight :Float64
  expectInvalid(validateMessageType(capnp::typeId<hms::cdf::Argument>(), m.nodes),
                "node " + name<hms::cdf::Argument>() + " (0x");
}

// ---- checkCompatible --------------------------------------------------------------------------

TEST(ContractCompatibility, CheckCompatible_AcceptsTheSameContract) {
  TextContract a(kDebateV1, 1, 0);
  TextContract b(kDebateV1, 1, 1);
  EXPECT_TRUE(checkCompatible(a.get(), b.get()).isOk())
      << checkCompatible(a.get(), b.get()).message();
  EXPECT_TRUE(checkCompatible(b.get(), a.get()).isOk());
}

TEST(ContractCompatibility, CheckCompatible_AcceptsAddedMethodFieldAndEnumerant) {
  std::string v2 = edit("  describe @1 () -> (text :Text);\n",
                        "  describe @1 () -> (text :Text);\n"
                        "  summarize @2 (facts :List(Fact)) -> (summary :Text);\n");
  v2 = edit("  value @1 :Text;\n}", "  value @1 :Text;\n  source @2 :Source;\n}", v2);
  v2 = edit("struct Tree", "struct Source @0xd0a1b2c3d4e5f606 {\n  uri @0 :Text;\n}\n\nstruct Tree",
            v2);
  v2 = edit("  escalate @2;\n", "  escalate @2;\n  abstain @3;\n", v2);
  v2 = edit("tree :Tree)", "tree :Tree, strict :Bool)", v2);
  EXPECT_TRUE(evolve(v2).isOk()) << evolve(v2).message();
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAFieldIsRetyped) {
  auto st =
      evolve(edit("  value @1 :Text;\n}\n\nstruct Tree", "  value @1 :UInt32;\n}\n\nstruct Tree"));
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(),
            "hms.cdf.debate 1.0.0 -> 1.1.0 is not a compatible evolution: method evaluatePolicy: "
            "params field facts: element struct hms/cdf/debate.capnp:Fact field value: type "
            "changed from Text to UInt32; publish it as a new major version (2.0.0) or keep the "
            "field");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAMethodIsRemoved) {
  expectIncompatible(evolve(edit("  describe @1 () -> (text :Text);\n", "")),
                     "method describe (@1) removed");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenMethodsAreRenumbered) {
  auto v2 = edit("evaluatePolicy @0", "evaluatePolicy @1");
  v2 = edit("describe @1", "describe @0", v2);
  expectIncompatible(evolve(v2), "method evaluatePolicy renumbered from @0 to @1");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAMethodIsRenamed) {
  expectIncompatible(evolve(edit("describe @1", "explain @1")),
                     "method describe (@1) renamed to explain");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAFieldIsRemoved) {
  expectIncompatible(
      evolve(edit("  key @0 :Text;\n  value @1 :Text;\n}\n\nstruct Tree",
                  "  key @0 :Text;\n}\n\nstruct Tree")),
      "method evaluatePolicy: params field facts: element struct hms/cdf/debate.capnp:Fact: field "
      "value (@1) removed");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAParamIsRenamed) {
  expectIncompatible(evolve(edit("maxRounds :UInt32", "rounds :UInt32")),
                     "method evaluatePolicy: params: field maxRounds (@2) renamed to rounds");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAFieldIsRenumbered) {
  expectIncompatible(evolve(edit("  key @0 :Text;\n  value @1 :Text;\n}\n\nstruct Tree",
                                 "  key @1 :Text;\n  value @0 :Text;\n}\n\nstruct Tree")),
                     "method evaluatePolicy: params field facts: element struct "
                     "hms/cdf/debate.capnp:Fact field key: renumbered from @0 to @1");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAStructTypeIdChanges) {
  expectIncompatible(evolve(edit("facts :List(Fact)", "facts :List(Other)")),
                     "method evaluatePolicy: params field facts: type changed from "
                     "List(hms/cdf/debate.capnp:Fact) to List(hms/cdf/debate.capnp:Other)");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAnEnumerantIsRemoved) {
  expectIncompatible(evolve(edit("  escalate @2;\n", "")),
                     "method evaluatePolicy: results field decision: enum "
                     "hms/cdf/debate.capnp:Decision: enumerant escalate (@2) removed");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAnEnumerantIsRenamed) {
  expectIncompatible(evolve(edit("deny @1", "refuse @1")),
                     "method evaluatePolicy: results field decision: enum "
                     "hms/cdf/debate.capnp:Decision: enumerant deny (@1) renamed to refuse");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAFieldMovesIntoAUnion) {
  expectIncompatible(
      evolve(edit("  extra @3 :UInt16;\n",
                  "  union {\n    extra @3 :UInt16;\n    other @6 :Text;\n  }\n")),
      "method evaluatePolicy: params field info: struct hms/cdf/debate.capnp:Info field extra: "
      "moved into a union");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenADefaultChanges) {
  expectIncompatible(evolve(edit("limit @1 :UInt32 = 5", "limit @1 :UInt32 = 7")),
                     "method evaluatePolicy: params field info: struct hms/cdf/debate.capnp:Info "
                     "field limit: default changed from 5 to 7");
  expectIncompatible(evolve(edit("maxRounds :UInt32 = 3", "maxRounds :UInt32 = 4")),
                     "method evaluatePolicy: params field maxRounds: default changed from 3 to 4");
  expectIncompatible(evolve(edit("weight @0 :Float64 = 1.5", "weight @0 :Float64 = 2.5")),
                     "method evaluatePolicy: params field info: struct hms/cdf/debate.capnp:Info "
                     "field weight: default changed from 1.5 to 2.5");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAGroupFieldIsRetyped) {
  expectIncompatible(evolve(edit("zip @5 :UInt32", "zip @5 :UInt64")),
                     "method evaluatePolicy: params field info: struct hms/cdf/debate.capnp:Info "
                     "group addr field zip: type changed from UInt32 to UInt64");
}

TEST(ContractCompatibility, CheckCompatible_FindsAChange_InsideAStructThatHoldsItself) {
  expectIncompatible(evolve(edit("label @0 :Text", "label @0 :Data")),
                     "method evaluatePolicy: params field tree: struct hms/cdf/debate.capnp:Tree "
                     "field label: type changed from Text to Data");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenAResultIsRetyped) {
  expectIncompatible(evolve(edit("confidence :Float64", "confidence :Float32")),
                     "method evaluatePolicy: results field confidence: type changed from Float64 "
                     "to Float32");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsFailedPrecondition_WhenTheInterfaceIdChanges) {
  expectIncompatible(evolve(edit("@0xd0a1b2c3d4e5f6f0", "@0xd0a1b2c3d4e5f6f1")),
                     "the interface changed from hms/cdf/debate.capnp:DebateService "
                     "(0xd0a1b2c3d4e5f6f0) to hms/cdf/debate.capnp:DebateService "
                     "(0xd0a1b2c3d4e5f6f1)");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsInvalidArgument_ForDifferentServices) {
  TextContract a(kDebateV1, 1, 0);
  TextContract b(kDebateV1, 1, 1, "hms.cdf.other");
  expectInvalid(checkCompatible(a.get(), b.get()), "contracts of different services");
}

TEST(ContractCompatibility, CheckCompatible_ReturnsInvalidArgument_WhenAContractLacksANode) {
  TextContract a(kDebateV1, 1, 0);
  TextContract b(kDebateV1, 1, 1);
  capnp::MallocMessageBuilder mb;
  mb.setRoot(b.get());
  auto contract = mb.getRoot<wire::Contract>();
  contract.initNodes(0);
  expectInvalid(checkCompatible(a.get(), contract.asReader()),
                "hms.cdf.debate 1.0.0 -> 1.1.0 cannot be checked: the 1.1.0 contract has no node");
}

}  // namespace
}  // namespace hms::ffi::broker
