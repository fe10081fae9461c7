// libFuzzer target: a JSON document as `hms-ffi call`, the JSON-level calls and the C ABI hand it
// to the codec (libclient/src/json_codec.hpp), read into a schema with every kind of field (the
// one tests/json_codec_test.cpp uses, plus camelCase names for the snake_case option). Whatever
// the bytes, jsonToStruct() must answer OK or INVALID_ARGUMENT with a message (it is noexcept: an
// exception that escaped would abort and be reported), and its own catch-alls must not be what
// stops the input (those mean an exception escaped the converter's checks). A document it
// accepts must round-trip: structToJson() of the result, compact or pretty, read again into a
// fresh message (built as in a ring record: a small first segment, then heap segments) gives
// back the same canonical text. The same holds with the configuration-file options
// (snakeCaseKeys, topLevelArrayField), whose output reads back with the default ones.
//
//   scripts/fuzz.sh json-codec 600
#include <capnp/message.h>
#include <capnp/schema-parser.h>
#include <kj/filesystem.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "json_codec.hpp"
#include "ring_message.hpp"

namespace {

using namespace hms::ffi;
using namespace hms::ffi::detail;

// tests/json_codec_test.cpp's schema, with two camelCase fields at the end.
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
  allowedRoles @37 :List(Text);
  maxCount :group { perClient @38 :UInt16; totalBytes @39 :UInt64; }
}
)";

// The schema above, parsed once from an in-memory directory.
class Schemas {
 public:
  static const Schemas& get() {
    static const Schemas schemas;
    return schemas;
  }
  capnp::StructSchema everything;

 private:
  Schemas() : dir_(kj::newInMemoryDirectory(kj::nullClock())) {
    auto path = kj::Path::parse("fuzz.capnp");
    dir_->openFile(path, kj::WriteMode::CREATE)->writeAll(kSchemaText);
    everything =
        parser_.parseFromDirectory(*dir_, path.clone(), nullptr).getNested("Everything").asStruct();
  }
  kj::Own<kj::Directory> dir_;  // must outlive the parser, so declared first
  capnp::SchemaParser parser_;
};

bool startsWith(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// A refusal must be INVALID_ARGUMENT with a message, and come from the converter's own checks
// (or the builder's refusal it reports), not from jsonToStruct's last-resort catches.
void checkRefusal(const Status& s) {
  if (s.code() != StatusCode::kInvalidArgument || s.message().empty()) std::abort();
  if (startsWith(s.message(), "cannot convert the JSON: ") &&
      s.message().find(" has no field '") == std::string::npos) {
    std::abort();
  }
}

// `canonical` (compact structToJson output) read again, with the default options, into a message
// built as a ring record is (a small zeroed first segment, then heap segments): it must be
// accepted and give back exactly the same text.
void mustReadBack(capnp::StructSchema schema, const std::string& json,
                  const std::string& canonical) {
  capnp::word space[24] = {};
  RingMessageBuilder message(kj::arrayPtr(space, sizeof space / sizeof space[0]));
  auto root = message.initRoot<capnp::DynamicStruct>(schema);
  if (!jsonToStruct(json, root).isOk()) std::abort();
  if (structToJson(root.asReader()) != canonical) std::abort();
}

// Reads `json` with `options`; when accepted, its output (compact and pretty) must read back.
void roundTrip(capnp::StructSchema schema, std::string_view json, const JsonInputOptions& options) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<capnp::DynamicStruct>(schema);
  const Status s = jsonToStruct(json, root, options);
  if (!s.isOk()) {
    checkRefusal(s);
    return;
  }
  const std::string compact = structToJson(root.asReader());
  if (compact.empty() || compact.front() != '{' || compact.back() != '}') std::abort();
  mustReadBack(schema, compact, compact);
  JsonOptions pretty;
  pretty.pretty = true;
  mustReadBack(schema, structToJson(root.asReader(), pretty), compact);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const capnp::StructSchema schema = Schemas::get().everything;
  const std::string_view json(reinterpret_cast<const char*>(data), size);

  roundTrip(schema, json, JsonInputOptions{});

  JsonInputOptions snake;
  snake.snakeCaseKeys = true;
  roundTrip(schema, json, snake);

  // A top-level array (after any byte order mark and white space) as the list field `inners`.
  std::string_view rest = json;
  if (startsWith(std::string(rest.substr(0, 3)), "\xEF\xBB\xBF")) rest.remove_prefix(3);
  const size_t first = rest.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && rest[first] == '[') {
    JsonInputOptions array;
    array.topLevelArrayField = "inners";
    roundTrip(schema, json, array);
    array.snakeCaseKeys = true;
    roundTrip(schema, json, array);
  }
  return 0;
}
