// JSON <-> Cap'n Proto: the mapping json_codec.hpp promises, on the example schemas and on a
// schema parsed here that has every kind of field; every error class with the path it names;
// hostile input (deep, huge, malformed) refused cleanly.
#include "json_codec.hpp"

#include <capnp/message.h>
#include <capnp/schema-parser.h>
#include <gtest/gtest.h>
#include <kj/filesystem.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

#include "hms/cdf/debate.capnp.h"

namespace hms::ffi::detail {
namespace {

// Every kind of field Cap'n Proto has. Ordinals follow the order of declaration, so the canonical
// output (fields in ordinal order) reads in the same order as the schema.
constexpr char kSchemaText[] = R"(@0xd5f0d9a0b3c1e2f7;

enum Color { red @0; green @1; blue @2; }

interface Svc { ping @0 () -> (); }

struct Inner {
  name @0 :Text;
  value @1 :Int32;
  child @2 :Inner;
}

struct Everything {
  flag @0 :Bool;
  i8 @1 :Int8;
  i16 @2 :Int16;
  i32 @3 :Int32;
  i64 @4 :Int64;
  u8 @5 :UInt8;
  u16 @6 :UInt16;
  u32 @7 :UInt32;
  u64 @8 :UInt64;
  f32 @9 :Float32;
  f64 @10 :Float64;
  text @11 :Text;
  data @12 :Data;
  color @13 :Color;
  inner @14 :Inner;
  inners @15 :List(Inner);
  matrix @16 :List(List(Int32));
  colors @17 :List(Color);
  texts @18 :List(Text);
  blobs @19 :List(Data);
  flags @20 :List(Bool);
  bigs @21 :List(Int64);
  nothing @22 :Void;
  defaulted @23 :Int32 = 42;
  union {
    none @24 :Void;
    count @25 :UInt32;
    word @26 :Text;
    shape :group { w @27 :Float64; h @28 :Float64; }
  }
  address :group { city @29 :Text; zip @30 :UInt32; }
  choice :union { a @31 :Int32; b @32 :Text; }
  any @33 :AnyPointer;
  svc @34 :Svc;
  floats @35 :List(Float32);
  voids @36 :List(Void);
}
)";

// The schema above, parsed once for the whole run from an in-memory directory (nothing on disk).
class TestSchemas {
 public:
  static const TestSchemas& get() {
    static const TestSchemas schemas;
    return schemas;
  }
  capnp::StructSchema everything;
  capnp::StructSchema inner;

 private:
  TestSchemas() : dir_(kj::newInMemoryDirectory(kj::nullClock())) {
    auto path = kj::Path::parse("test.capnp");
    dir_->openFile(path, kj::WriteMode::CREATE)->writeAll(kSchemaText);
    auto file = parser_.parseFromDirectory(*dir_, path.clone(), nullptr);
    everything = file.getNested("Everything").asStruct();
    inner = file.getNested("Inner").asStruct();
  }
  kj::Own<kj::Directory> dir_;  // must outlive the parser, so declared first
  capnp::SchemaParser parser_;
};

capnp::StructSchema everything() {
  return TestSchemas::get().everything;
}
capnp::StructSchema innerSchema() {
  return TestSchemas::get().inner;
}

// How messages name a type: "hms/cdf/debate.capnp:Fact" is "hms.cdf.debate.Fact". Taken from the
// schema so that the tests do not depend on which file of the example declares it.
template <class T>
std::string nameOf() {
  const std::string display = capnp::Schema::from<T>().getProto().getDisplayName().cStr();
  const size_t colon = display.find(".capnp:");
  std::string name = display.substr(0, colon) + "." + display.substr(colon + 7);
  for (char& c : name) {
    if (c == '/') c = '.';
  }
  return name;
}

capnp::InterfaceSchema::Method evaluatePolicy() {
  return capnp::Schema::from<hms::cdf::DebateService>().asInterface().getMethodByName(
      "evaluatePolicy");
}

// For EXPECT_PRED2, which prints both strings when it fails.
bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}
bool startsWith(const std::string& text, std::string_view prefix) {
  return text.rfind(prefix, 0) == 0;
}

// A fresh message of `schema` filled from `json`.
struct Filled {
  Filled(capnp::StructSchema schema, std::string_view json)
      : root(message.initRoot<capnp::DynamicStruct>(schema)), status(jsonToStruct(json, root)) {}
  std::string json(JsonOptions options = {}) { return structToJson(root.asReader(), options); }

  capnp::MallocMessageBuilder message;
  capnp::DynamicStruct::Builder root;
  Status status;
};

// JSON -> struct -> JSON, compact; the status message instead when the input is refused.
std::string roundTrip(std::string_view json, capnp::StructSchema schema = everything()) {
  Filled f(schema, json);
  if (!f.status.isOk()) return "refused: " + f.status.message();
  return f.json();
}

// The message of the INVALID_ARGUMENT that `json` must produce.
std::string errorOf(std::string_view json, capnp::StructSchema schema = everything()) {
  Filled f(schema, json);
  EXPECT_EQ(f.status.code(), StatusCode::kInvalidArgument) << json;
  return f.status.message();
}

// What `{}` gives: every non-pointer field with its default, the union's first member, no null
// pointers, no capability or AnyPointer fields.
constexpr std::string_view kDefaults =
    R"({"flag":false,"i8":0,"i16":0,"i32":0,"i64":"0","u8":0,"u16":0,"u32":0,"u64":"0",)"
    R"("f32":0,"f64":0,"color":"red","nothing":null,"defaulted":42,"none":null,)"
    R"("address":{"zip":0},"choice":{"a":0}})";

TEST(JsonCodec, RoundTrip_GivesCanonicalText_ForEveryFieldKind) {
  const std::string canonical =
      R"({"flag":true,"i8":-128,"i16":-32768,"i32":-2147483648,"i64":"-9223372036854775808",)"
      R"("u8":255,"u16":65535,"u32":4294967295,"u64":"18446744073709551615","f32":1.5,)"
      R"("f64":-0.1,"text":"h\u00e9llo \"q\" \\ \n\t\u0001 😀","data":"AAEC/w==","color":"blue",)"
      R"("inner":{"name":"in","value":7,"child":{"value":-1}},)"
      R"("inners":[{"name":"a","value":1},{"value":2}],"matrix":[[1,2],[],[3]],)"
      R"("colors":["red","blue"],"texts":["x",""],"blobs":["","AA=="],"flags":[true,false],)"
      R"("bigs":["1","-1"],"nothing":null,"defaulted":0,"word":"hi",)"
      R"("address":{"city":"Oslo","zip":150},"choice":{"b":"bee"},)"
      R"("floats":[0.1,"NaN","-Infinity"],"voids":[null,null]})";
  // The output spells é as UTF-8 rather than \u00e9, and only control characters as \u00XX.
  std::string expected = canonical;
  expected.replace(expected.find("\\u00e9"), 6, "é");
  EXPECT_EQ(roundTrip(canonical), expected);
  EXPECT_EQ(roundTrip(expected), expected);  // and the output reads back to itself
}

TEST(JsonCodec, EmptyObject_GivesEveryDefault_AndLeavesNullPointersOut) {
  EXPECT_EQ(roundTrip("{}"), kDefaults);
  EXPECT_EQ(roundTrip(" \n\t{ }\r\n"), kDefaults);
}

TEST(JsonCodec, Null_LeavesFieldsAtTheirDefaults) {
  EXPECT_EQ(roundTrip(R"({"i32":null,"i64":null,"text":null,"defaulted":null,"inner":null,)"
                      R"("color":null,"count":null,"address":null,"any":null,"svc":null})"),
            kDefaults);
  // A null element keeps the element's default: an empty Text, a zero, a default struct.
  EXPECT_EQ(roundTrip(R"({"texts":["a",null],"bigs":[null,"5"],"inners":[null,{"value":1}]})"),
            R"({"flag":false,"i8":0,"i16":0,"i32":0,"i64":"0","u8":0,"u16":0,"u32":0,"u64":"0",)"
            R"("f32":0,"f64":0,"color":"red","inners":[{"value":0},{"value":1}],)"
            R"("texts":["a",""],"bigs":["0","5"],"nothing":null,"defaulted":42,"none":null,)"
            R"("address":{"zip":0},"choice":{"a":0}})");
}

TEST(JsonCodec, ExampleSchema_EvaluatePolicy_RoundTripsParamsAndResults) {
  const auto method = evaluatePolicy();
  const std::string params =
      R"({"policyId":"p-17","facts":[{"key":"age","value":"71"},{"key":"ward","value":"B"}],)"
      R"("maxRounds":3})";
  EXPECT_EQ(roundTrip(params, method.getParamType()), params);

  const std::string results =
      R"({"decision":"escalate","confidence":0.75,"arguments":[{"agent":"a1",)"
      R"("position":"deny","rationale":"r","weight":1}],"rounds":2})";
  EXPECT_EQ(roundTrip(results, method.getResultType()), results);

  Filled f(method.getResultType(), results);
  ASSERT_TRUE(f.status.isOk());
  capnp::MallocMessageBuilder typed;
  typed.setRoot(f.root.asReader().as<hms::cdf::DebateService::EvaluatePolicyResults>());
  auto r = typed.getRoot<hms::cdf::DebateService::EvaluatePolicyResults>();
  EXPECT_EQ(r.getDecision(), hms::cdf::Decision::ESCALATE);
  EXPECT_EQ(r.getArguments()[0].getPosition(), hms::cdf::Decision::DENY);
  EXPECT_EQ(r.getConfidence(), 0.75);
}

TEST(JsonCodec, Pretty_IndentsTwoSpaces_OneFieldOrElementPerLine) {
  Filled f(evaluatePolicy().getParamType(),
           R"({"policyId":"p","facts":[{"key":"k","value":"v"}],"maxRounds":0})");
  ASSERT_TRUE(f.status.isOk());
  EXPECT_EQ(f.json({.pretty = true}),
            "{\n"
            "  \"policyId\": \"p\",\n"
            "  \"facts\": [\n"
            "    {\n"
            "      \"key\": \"k\",\n"
            "      \"value\": \"v\"\n"
            "    }\n"
            "  ],\n"
            "  \"maxRounds\": 0\n"
            "}");
  // Empty containers stay on one line, and pretty output reads back to the same message.
  Filled empty(everything(), R"({"matrix":[[]],"inner":{}})");
  ASSERT_TRUE(empty.status.isOk());
  std::string pretty = empty.json({.pretty = true});
  EXPECT_PRED2(contains, pretty, "\"matrix\": [\n    []\n  ]");
  EXPECT_PRED2(contains, pretty, "\"inner\": {\n    \"value\": 0\n  }");
  EXPECT_EQ(roundTrip(pretty), empty.json());
  Filled noFields(evaluatePolicy().getParamType(), R"({"facts":[{}]})");
  ASSERT_TRUE(noFields.status.isOk());
  EXPECT_EQ(noFields.json({.pretty = true}),
            "{\n  \"facts\": [\n    {}\n  ],\n  \"maxRounds\": 0\n}");
}

TEST(JsonCodec, SixtyFourBitIntegers_AreExactAtTheEdges_AsNumbersAndAsStrings) {
  auto i64 = [](std::string_view v) {
    Filled f(everything(), R"({"i64":)" + std::string(v) + "}");
    EXPECT_TRUE(f.status.isOk()) << v << ": " << f.status.message();
    return f.root.get("i64").as<int64_t>();
  };
  auto u64 = [](std::string_view v) {
    Filled f(everything(), R"({"u64":)" + std::string(v) + "}");
    EXPECT_TRUE(f.status.isOk()) << v << ": " << f.status.message();
    return f.root.get("u64").as<uint64_t>();
  };
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr uint64_t kUMax = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(i64("9223372036854775807"), kMax);  // a double would round this to 2^63
  EXPECT_EQ(i64("\"9223372036854775807\""), kMax);
  EXPECT_EQ(i64("-9223372036854775808"), kMin);
  EXPECT_EQ(i64("\"-9223372036854775808\""), kMin);
  EXPECT_EQ(i64("9007199254740993"), 9007199254740993);  // 2^53 + 1
  EXPECT_EQ(u64("18446744073709551615"), kUMax);
  EXPECT_EQ(u64("\"18446744073709551615\""), kUMax);
  EXPECT_EQ(u64("\"007\""), 7u);
  EXPECT_EQ(u64("-0"), 0u);

  EXPECT_EQ(errorOf(R"({"u64":18446744073709551616})"),
            "u64: 18446744073709551616 is out of range for UInt64");
  EXPECT_EQ(errorOf(R"({"u64":"18446744073709551616"})"),
            "u64: 18446744073709551616 is out of range for UInt64");
  EXPECT_EQ(errorOf(R"({"u64":-1})"), "u64: -1 is out of range for UInt64");
  EXPECT_EQ(errorOf(R"({"i64":9223372036854775808})"),
            "i64: 9223372036854775808 is out of range for Int64");
  EXPECT_EQ(errorOf(R"({"i64":"-9223372036854775809"})"),
            "i64: -9223372036854775809 is out of range for Int64");
  EXPECT_EQ(errorOf(R"({"i64":1e30})"), "i64: 1e30 is out of range for Int64");

  // Output: decimal strings, also inside lists.
  Filled f(everything(), R"({"i64":-9223372036854775808,"u64":18446744073709551615,"bigs":[1]})");
  ASSERT_TRUE(f.status.isOk());
  std::string out = f.json();
  EXPECT_PRED2(contains, out, R"("i64":"-9223372036854775808")");
  EXPECT_PRED2(contains, out, R"("u64":"18446744073709551615")");
  EXPECT_PRED2(contains, out, R"("bigs":["1"])");
}

TEST(JsonCodec, SixtyFourBitIntegers_RefuseStringsThatAreNotDecimalIntegers) {
  for (std::string_view bad :
       {R"("")", R"("12x")", R"("1e3")", R"(" 1")", R"("+1")", R"("1.0")", R"("-")", R"("0x10")"}) {
    std::string message = errorOf(R"({"i64":)" + std::string(bad) + "}");
    EXPECT_PRED2(startsWith, message, "i64: expected a decimal integer for Int64, got ");
  }
  EXPECT_EQ(errorOf(R"({"u64":true})"),
            "u64: expected a number or a decimal string for UInt64, got true");
}

TEST(JsonCodec, SmallIntegers_TakeWholeNumbersInAnyNotation_AndRefuseTheRest) {
  Filled f(everything(), R"({"i8":-1.0,"i16":1e2,"i32":12.50e1,"u8":-0,"u16":0.0065535e7})");
  ASSERT_TRUE(f.status.isOk()) << f.status.message();
  EXPECT_EQ(f.root.get("i8").as<int8_t>(), -1);
  EXPECT_EQ(f.root.get("i16").as<int16_t>(), 100);
  EXPECT_EQ(f.root.get("i32").as<int32_t>(), 125);
  EXPECT_EQ(f.root.get("u8").as<uint8_t>(), 0);
  EXPECT_EQ(f.root.get("u16").as<uint16_t>(), 65535);
  EXPECT_EQ(errorOf(R"({"u16":0.0065536e7})"), "u16: 0.0065536e7 is out of range for UInt16");
}

TEST(JsonCodec, SmallIntegers_OutOfRangeOrFractionalOrStrings_NameTheFieldAndType) {
  EXPECT_EQ(errorOf(R"({"u8":300})"), "u8: 300 is out of range for UInt8");
  EXPECT_EQ(errorOf(R"({"u8":256})"), "u8: 256 is out of range for UInt8");
  EXPECT_EQ(errorOf(R"({"i8":-129})"), "i8: -129 is out of range for Int8");
  EXPECT_EQ(errorOf(R"({"i16":32768})"), "i16: 32768 is out of range for Int16");
  EXPECT_EQ(errorOf(R"({"u32":4294967296})"), "u32: 4294967296 is out of range for UInt32");
  EXPECT_EQ(errorOf(R"({"i32":-2147483649})"), "i32: -2147483649 is out of range for Int32");
  EXPECT_EQ(errorOf(R"({"u16":-1})"), "u16: -1 is out of range for UInt16");
  EXPECT_EQ(errorOf(R"({"i32":1.5})"), "i32: expected a whole number for Int32, got 1.5");
  EXPECT_EQ(errorOf(R"({"i32":1e-1})"), "i32: expected a whole number for Int32, got 1e-1");
  EXPECT_EQ(errorOf(R"({"i32":"5"})"), "i32: expected a number for Int32, got a string");
  EXPECT_EQ(errorOf(R"({"u32":[1]})"), "u32: expected a number for UInt32, got an array");
  // Exponents far past any range neither overflow nor take long.
  EXPECT_EQ(errorOf(R"({"i32":1e999999999999})"), "i32: 1e999999999999 is out of range for Int32");
  EXPECT_EQ(roundTrip(R"({"i32":0e999999999999})"), kDefaults);
}

TEST(JsonCodec, Floats_NaNAndInfinity_TravelAsStrings) {
  Filled f(everything(),
           R"({"f32":"NaN","f64":"-Infinity","floats":["Infinity",-0.0,3.4028235e38]})");
  ASSERT_TRUE(f.status.isOk()) << f.status.message();
  EXPECT_TRUE(std::isnan(f.root.get("f32").as<float>()));
  EXPECT_EQ(f.root.get("f64").as<double>(), -std::numeric_limits<double>::infinity());
  std::string out = f.json();
  EXPECT_PRED2(contains, out, R"("f32":"NaN","f64":"-Infinity")");
  EXPECT_PRED2(contains, out, R"("floats":["Infinity",-0,3.4028235e+38])");
  EXPECT_EQ(roundTrip(out), out);

  EXPECT_EQ(errorOf(R"({"f64":"nan"})"),
            R"(f64: expected a number, "NaN", "Infinity" or "-Infinity" for Float64, got "nan")");
  EXPECT_EQ(errorOf(R"({"f64":"1.5"})"),
            R"(f64: expected a number, "NaN", "Infinity" or "-Infinity" for Float64, got "1.5")");
  EXPECT_EQ(errorOf(R"({"f64":true})"), "f64: expected a number for Float64, got true");
  EXPECT_EQ(errorOf(R"({"f64":1e400})"), "f64: 1e400 is out of range for Float64");
  EXPECT_EQ(errorOf(R"({"f32":3.5e38})"), "f32: 3.5e38 is out of range for Float32");
  EXPECT_EQ(errorOf(R"({"floats":[1,1e39]})"), "floats[1]: 1e39 is out of range for Float32");
}

TEST(JsonCodec, Floats_ShortestTextThatReadsBack_AndTinyValuesUnderflowToZero) {
  Filled f(everything(), R"({"f32":0.1,"f64":0.1,"floats":[1e-50,-1e-50,16777217]})");
  ASSERT_TRUE(f.status.isOk()) << f.status.message();
  EXPECT_EQ(f.root.get("f32").as<float>(), 0.1f);
  std::string out = f.json();
  EXPECT_PRED2(contains, out, R"("f32":0.1,"f64":0.1)");
  EXPECT_PRED2(contains, out, R"("floats":[0,-0,16777216])");
  EXPECT_EQ(roundTrip(R"({"f64":1e-400})"), kDefaults);
  EXPECT_PRED2(contains, roundTrip(R"({"f64":5e-324,"f32":1e+20})"), R"("f32":1e+20,"f64":5e-324)");
}

TEST(JsonCodec, Data_AcceptsPaddedUnpaddedStandardAndUrlSafe_WritesPaddedStandard) {
  // 0xfb 0xff 0xbf uses the two characters the alphabets disagree on.
  for (std::string_view in : {"+/+/", "-_-_", "+/+/+w==", "+/+/+w", "-_-_-w", "+\\/+\\/"}) {
    Filled f(everything(), R"({"data":")" + std::string(in) + "\"}");
    ASSERT_TRUE(f.status.isOk()) << in << ": " << f.status.message();
    auto d = f.root.get("data").as<capnp::Data>();
    ASSERT_GE(d.size(), 3u) << in;
    EXPECT_EQ(d[0], 0xfb);
    EXPECT_EQ(d[1], 0xff);
    EXPECT_EQ(d[2], 0xbf);
  }
  EXPECT_PRED2(contains, roundTrip(R"({"data":"-_-_-w"})"), R"("data":"+/+/+w==")");
  EXPECT_PRED2(contains, roundTrip(R"({"data":"aGk"})"), R"("data":"aGk=")");
  EXPECT_PRED2(contains, roundTrip(R"({"data":"aA"})"), R"("data":"aA==")");
  EXPECT_PRED2(contains, roundTrip(R"({"data":""})"), R"("data":"")");

  EXPECT_EQ(errorOf(R"({"data":"ab!d"})"), "data: not base64: '!' at offset 2");
  EXPECT_EQ(errorOf(R"({"data":"ab=d"})"), "data: not base64: '=' at offset 2");
  EXPECT_EQ(errorOf(R"({"data":"aGk =")"
                    "}"),
            "data: not base64: ' ' at offset 3");
  EXPECT_EQ(errorOf(R"({"data":"abcde"})"), "data: not base64: 5 characters cannot be whole bytes");
  EXPECT_EQ(errorOf(R"({"data":"aGk=="})"),
            "data: not base64: '=' padding must make the length a multiple of 4");
  EXPECT_EQ(errorOf(R"({"blobs":["AA==",7]})"), "blobs[1]: expected a base64 string, got a number");
}

TEST(JsonCodec, Enums_ByNameOrNumber_WrittenByName) {
  EXPECT_PRED2(contains, roundTrip(R"({"color":"green"})"), R"("color":"green")");
  EXPECT_PRED2(contains, roundTrip(R"({"color":2})"), R"("color":"blue")");
  EXPECT_PRED2(contains, roundTrip(R"({"colors":[1,"red",2.0]})"),
               R"("colors":["green","red","blue"])");
  // A value our schema has no enumerant for (written by a newer schema) is written as its number.
  capnp::MallocMessageBuilder newer;
  auto root = newer.initRoot<capnp::DynamicStruct>(everything());
  root.set("color", capnp::DynamicEnum(root.get("color").as<capnp::DynamicEnum>().getSchema(), 7));
  EXPECT_PRED2(contains, structToJson(root.asReader()), R"("color":7)");

  const auto results = evaluatePolicy().getResultType();
  const std::string decision = nameOf<hms::cdf::Decision>();  // hms.cdf.<file>.Decision
  EXPECT_PRED2(startsWith, decision, "hms.cdf.");
  EXPECT_EQ(errorOf(R"({"decision":"maybe"})", results),
            "decision: 'maybe' is not an enumerant of " + decision + " (approve, deny, escalate)");
  EXPECT_EQ(
      errorOf(R"({"decision":"Approve"})", results),
      "decision: 'Approve' is not an enumerant of " + decision + " (approve, deny, escalate)");
  EXPECT_EQ(errorOf(R"({"decision":3})", results),
            "decision: 3 is not an enumerant of " + decision + " (approve, deny, escalate)");
  EXPECT_EQ(errorOf(R"({"decision":-1})", results),
            "decision: -1 is not an enumerant of " + decision + " (approve, deny, escalate)");
  EXPECT_EQ(errorOf(R"({"arguments":[{"position":1.5}]})", results),
            "arguments[0].position: 1.5 is not an enumerant of " + decision +
                " (approve, deny, escalate)");
  EXPECT_EQ(errorOf(R"({"decision":true})", results),
            "decision: expected the name of an enumerant of " + decision + ", got true");
  EXPECT_EQ(errorOf(R"({"colors":["red","purple"]})"),
            "colors[1]: 'purple' is not an enumerant of test.Color (red, green, blue)");
}

TEST(JsonCodec, Unions_OutputOnlyTheActiveMember) {
  std::string out = roundTrip(R"({"count":7})");
  EXPECT_PRED2(contains, out, R"("defaulted":42,"count":7,"address")");
  EXPECT_FALSE(contains(out, R"("none")")) << out;
  EXPECT_FALSE(contains(out, R"("word")")) << out;

  out = roundTrip(R"({"shape":{"w":2,"h":0.5},"choice":{"b":"x"}})");
  EXPECT_PRED2(contains, out, R"("shape":{"w":2,"h":0.5})");
  EXPECT_PRED2(contains, out, R"("choice":{"b":"x"})");
  EXPECT_FALSE(contains(out, R"("count")")) << out;
  EXPECT_FALSE(contains(out, R"("a":)")) << out;

  // A Void member is chosen by null, its one value (shown over a struct where another member was
  // active, since `none` is also the default).
  Filled f(everything(), R"({"count":7})");
  ASSERT_TRUE(f.status.isOk());
  EXPECT_EQ(jsonToStruct(R"({"none":null})", f.root).code(), StatusCode::kOk);
  EXPECT_PRED2(contains, f.json(), R"("none":null)");
}

TEST(JsonCodec, Unions_TwoMembersAreRefused_NullOnesDoNotCount) {
  EXPECT_EQ(errorOf(R"({"count":1,"word":"w"})"),
            "fields 'count' and 'word' are members of one union; give at most one");
  EXPECT_EQ(errorOf(R"({"none":null,"shape":{}})"),
            "fields 'none' and 'shape' are members of one union; give at most one");
  EXPECT_EQ(errorOf(R"({"choice":{"a":1,"b":"x"}})"),
            "choice: fields 'a' and 'b' are members of one union; give at most one");
  EXPECT_EQ(errorOf(R"({"inner":{"child":{"value":1}},"choice":{"b":"x","a":1}})"),
            "choice: fields 'b' and 'a' are members of one union; give at most one");
  EXPECT_PRED2(contains, roundTrip(R"({"count":null,"word":"w"})"), R"("word":"w")");
  EXPECT_PRED2(contains, roundTrip(R"({"word":"w","count":null})"), R"("word":"w")");
}

TEST(JsonCodec, NestedListsAndStructs_NameThePathOfAnError) {
  EXPECT_PRED2(
      contains,
      roundTrip(R"({"matrix":[[1],[2,3],[]],"inners":[{"child":{"child":{"name":"z"}}}]})"),
      R"("inners":[{"value":0,"child":{"value":0,"child":{"name":"z","value":0}}}],)"
      R"("matrix":[[1],[2,3],[]])");
  EXPECT_EQ(errorOf(R"({"matrix":[[1],["2"]]})"),
            "matrix[1][0]: expected a number for Int32, got a string");
  EXPECT_EQ(errorOf(R"({"inners":[{},{"child":{"child":{"value":{}}}}]})"),
            "inners[1].child.child.value: expected a number for Int32, got an object");
  EXPECT_EQ(errorOf(R"({"address":{"city":5}})"), "address.city: expected a string, got a number");
  EXPECT_EQ(errorOf(R"({"matrix":[1]})"), "matrix[0]: expected an array, got a number");
  EXPECT_EQ(errorOf(R"({"inners":{}})"), "inners: expected an array, got an object");
  EXPECT_EQ(errorOf(R"({"inner":[]})"), "inner: expected an object, got an array");
  EXPECT_EQ(errorOf(R"({"flags":[true,1]})"), "flags[1]: expected true or false, got a number");
  EXPECT_EQ(errorOf(R"({"nothing":0})"), "nothing: expected null (Void), got a number");
  EXPECT_EQ(errorOf(R"({"voids":[null,false]})"), "voids[1]: expected null (Void), got false");

  const auto params = evaluatePolicy().getParamType();
  EXPECT_EQ(errorOf(R"({"facts":[{},{},{"key":"k","value":5}]})", params),
            "facts[2].value: expected a string, got a number");
}

TEST(JsonCodec, UnknownAndRepeatedFields_AreRefused_NamingTheStruct) {
  const auto params = evaluatePolicy().getParamType();
  EXPECT_EQ(
      errorOf(R"({"facts":[{},{},{"key":"k","foo":1}]})", params),
      "facts[2]: unknown field 'foo' in " + nameOf<hms::cdf::Fact>() + " (fields: key, value)");
  EXPECT_EQ(errorOf(R"({"policy_id":"x"})", params),
            "unknown field 'policy_id' in " + nameOf<hms::cdf::DebateService>() +
                ".evaluatePolicy$Params (fields: policyId, facts, maxRounds)");
  // Unknown even when null; a field of a group is not a field of its parent.
  EXPECT_PRED2(startsWith, errorOf(R"({"foo":null})", params), "unknown field 'foo' in ");
  EXPECT_PRED2(startsWith, errorOf(R"({"city":"x"})"),
               "unknown field 'city' in test.Everything (fields: ");
  EXPECT_EQ(errorOf(R"({"maxRounds":1,"maxRounds":2})", params),
            "field 'maxRounds' is given twice");
  EXPECT_EQ(errorOf(R"({"address":{"zip":1,"zip":null}})"), "address: field 'zip' is given twice");
}

TEST(JsonCodec, TopLevel_MustBeAnObject) {
  EXPECT_EQ(errorOf("[]"), "expected a JSON object at the top level, got an array");
  EXPECT_EQ(errorOf("1"), "expected a JSON object at the top level, got a number");
  EXPECT_EQ(errorOf("\"x\""), "expected a JSON object at the top level, got a string");
  EXPECT_EQ(errorOf("null"), "expected a JSON object at the top level, got null");
}

TEST(JsonCodec, MalformedJson_IsRefused_WithLineAndColumn) {
  EXPECT_EQ(errorOf("{\n  \"i32\": 1,\n}"),
            "malformed JSON: expected a member name in double quotes at line 3, column 1");
  EXPECT_EQ(errorOf(""), "malformed JSON: unexpected end of input at line 1, column 1");
  EXPECT_EQ(errorOf("{} {}"),
            "malformed JSON: unexpected '{' after the JSON value at line 1, "
            "column 4");
  EXPECT_EQ(errorOf(R"({"i32" 1})"), "malformed JSON: expected ':' at line 1, column 8");
  EXPECT_EQ(errorOf(R"({"matrix":[[1] [2]]})"),
            "malformed JSON: expected ',' or ']' at line 1, column 16");
  EXPECT_EQ(errorOf(R"({"text":"abc})"), "malformed JSON: string never ends at line 1, column 9");
  EXPECT_EQ(errorOf(R"({"i32":01})"), "malformed JSON: expected ',' or '}' at line 1, column 9");
  EXPECT_EQ(errorOf(R"({"f64":1.})"),
            "malformed JSON: expected a digit after '.' at line 1, "
            "column 10");
  EXPECT_EQ(errorOf(R"({"f64":+1})"), "malformed JSON: unexpected '+' at line 1, column 8");
  EXPECT_EQ(errorOf(R"({"f64":NaN})"), "malformed JSON: unexpected 'N' at line 1, column 8");
  EXPECT_EQ(errorOf(R"({"flag":tru})"), "malformed JSON: unexpected 't' at line 1, column 9");
  EXPECT_EQ(errorOf(R"({'i32':1})"),
            "malformed JSON: expected a member name in double quotes at line 1, column 2");
  EXPECT_EQ(errorOf(R"({"text":"\x"})"),
            "malformed JSON: invalid escape '\\x' in a string at line 1, column 10");
  EXPECT_EQ(errorOf(R"({"text":"\u12"})"),
            "malformed JSON: \\u must be followed by four hex digits at line 1, column 10");
  EXPECT_EQ(errorOf(R"({"text":"\ud83d"})"),
            "malformed JSON: unpaired UTF-16 surrogate in a \\u escape at line 1, column 10");
  EXPECT_EQ(errorOf(R"({"text":"\ude00\ud83d"})"),
            "malformed JSON: unpaired UTF-16 surrogate in a \\u escape at line 1, column 10");
  EXPECT_EQ(errorOf("{\"text\":\"a\tb\"}"),
            "malformed JSON: control character in a string (write it as \\u00XX) at line 1, "
            "column 11");
  EXPECT_EQ(errorOf("{\"text\":\"\xC3\x28\"}"),
            "malformed JSON: invalid UTF-8 in a string at line 1, column 10");
  EXPECT_EQ(errorOf("{\"text\":\"\xED\xA0\x80\"}"),  // a surrogate, encoded as UTF-8
            "malformed JSON: invalid UTF-8 in a string at line 1, column 10");
  EXPECT_EQ(errorOf(std::string_view("{}\0", 3)),
            "malformed JSON: unexpected byte 0x00 after the JSON value at line 1, column 3");
  // A byte order mark is allowed before the value, and nowhere else.
  EXPECT_EQ(roundTrip("\xEF\xBB\xBF{}"), kDefaults);
}

TEST(JsonCodec, Strings_DecodeEveryEscape_AndCheckUtf8) {
  // "\u004a" is 'J' and "\u00e9" is 'é': Debian's capnp 0.9.2 parser gets both wrong, silently.
  Filled f(everything(),
           R"({"text":"\u004a\u00e9\u20AC\ud83d\ude00\"\\\/\b\f\n\r\t é€😀","texts":["\u0041"]})");
  ASSERT_TRUE(f.status.isOk()) << f.status.message();
  auto text = f.root.get("text").as<capnp::Text>();
  EXPECT_EQ(
      std::string_view(text.begin(), text.size()),
      "J\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"\\/\b\f\n\r\t \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
  EXPECT_PRED2(contains, f.json(), R"("text":"Jé€😀\"\\/\b\f\n\r\t é€😀")");
  EXPECT_PRED2(contains, f.json(), R"("texts":["A"])");
  // Escaped field names are names like any other.
  EXPECT_PRED2(contains, roundTrip(R"({"\u0069\u0033\u0032":5})"), R"("i32":5)");

  EXPECT_EQ(errorOf(R"({"texts":["ok","a\u0000b"]})"),
            "texts[1]: text cannot hold \\u0000; binary content belongs in a Data field");
}

TEST(JsonCodec, Output_WritesBytesThatAreNotUtf8AsReplacementCharacters) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<capnp::DynamicStruct>(everything());
  root.set("text", capnp::Text::Reader("a\xFF"
                                       "b\xC3"));
  std::string out = structToJson(root.asReader());
  EXPECT_PRED2(contains, out,
               "\"text\":\"a\xEF\xBF\xBD"
               "b\xEF\xBF\xBD\"");
  EXPECT_FALSE(startsWith(roundTrip(out), "refused")) << out;  // still valid JSON
}

TEST(JsonCodec, CapabilityAndAnyPointerFields_AreLeftOut_AndCannotBeGiven) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<capnp::DynamicStruct>(everything());
  root.get("any").as<capnp::AnyPointer>().setAs<capnp::Text>("hidden");
  EXPECT_EQ(structToJson(root.asReader()), kDefaults);
  EXPECT_EQ(errorOf(R"({"any":"x"})"),
            "any: an AnyPointer cannot be given in JSON; leave it out or give null");
  EXPECT_EQ(errorOf(R"({"svc":{}})"),
            "svc: a capability cannot be given in JSON; leave it out or give null");
}

TEST(JsonCodec, DeepNesting_IsRefusedCleanly_AtSixtyFourLevels) {
  // Far past any stack: refused at level 65 without descending further.
  EXPECT_EQ(errorOf(std::string(1'000'000, '[')),
            "malformed JSON: arrays and objects nested deeper than 64 levels at line 1, column 65");
  EXPECT_EQ(errorOf("{\"matrix\":" + std::string(100'000, '[')),
            "malformed JSON: arrays and objects nested deeper than 64 levels at line 1, column 74");

  // Inner.child chained: the top object and 63 children are 64 levels, and are accepted.
  auto chain = [](int levels) {
    std::string json;
    for (int i = 1; i < levels; ++i) json += R"({"child":)";
    json += "{}";
    json.append(static_cast<size_t>(levels - 1), '}');
    return json;
  };
  Filled ok(innerSchema(), chain(64));
  EXPECT_TRUE(ok.status.isOk()) << ok.status.message();
  EXPECT_EQ(roundTrip(ok.json(), innerSchema()), ok.json());
  EXPECT_PRED2(startsWith, errorOf(chain(65), innerSchema()),
               "malformed JSON: arrays and objects nested deeper than 64 levels");
}

TEST(JsonCodec, Output_StopsDescendingAt128Levels_ForADeepBuilder) {
  capnp::MallocMessageBuilder message;
  auto node = message.initRoot<capnp::DynamicStruct>(innerSchema());
  auto root = node;
  for (int i = 0; i < 1000; ++i) node = node.init("child").as<capnp::DynamicStruct>();
  std::string out = structToJson(root.asReader());
  size_t objects = 0;
  for (char c : out) objects += c == '{';
  EXPECT_EQ(objects, 129u);  // the root and 128 levels below it
  EXPECT_PRED2(contains, out, R"("child":null}})");
}

// A conversion that went quadratic would not finish within the test's ctest timeout (300 s);
// how fast it is belongs to the bench, not to a wall-clock bound here (a loaded sanitizer run
// once took 20 s).
TEST(JsonCodec, HugeInput_IsConvertedWhole) {
  // An 8 MiB text, and 200k structs in a list.
  std::string big(8u << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 997) big[i] = 'y';
  std::string json = R"({"text":")" + big + R"(","inners":[)";
  for (int i = 0; i < 200'000; ++i) {
    if (i != 0) json += ',';
    json +=
        R"({"name":"n)" + std::to_string(i) + R"(","value":)" + std::to_string(i - 100'000) + "}";
  }
  json += "]}";
  Filled f(everything(), json);
  ASSERT_TRUE(f.status.isOk()) << f.status.message();
  auto text = f.root.get("text").as<capnp::Text>();
  EXPECT_EQ(std::string_view(text.begin(), text.size()), big);
  auto inners = f.root.get("inners").as<capnp::DynamicList>();
  ASSERT_EQ(inners.size(), 200'000u);
  EXPECT_EQ(inners[199'999].as<capnp::DynamicStruct>().get("value").as<int32_t>(), 99'999);
  std::string out = f.json();
  EXPECT_EQ(out.size(),
            json.size() + kDefaults.size() - 1);  // the input's fields among the defaults
  EXPECT_EQ(roundTrip(out), out);
}

TEST(JsonCodec, BuilderExceptions_BecomeInvalidArgument_NamingThePath) {
  // A builder with no room to grow, as a message built in a ring is.
  kj::Array<capnp::word> space = kj::heapArray<capnp::word>(64);
  std::memset(space.begin(), 0, space.size() * sizeof(capnp::word));
  capnp::FlatMessageBuilder message(space);
  auto root = message.initRoot<capnp::DynamicStruct>(everything());
  Status s =
      jsonToStruct(R"({"i32":1,"inner":{"name":")" + std::string(10'000, 'n') + "\"}}", root);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_PRED2(startsWith, s.message(), "inner.name: Cap'n Proto refused the value: ");
}

}  // namespace
}  // namespace hms::ffi::detail
