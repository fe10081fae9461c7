// The JSON documents hms-ffi writes itself (list, describe and topics with --json, sub --seq):
// a writer that keeps the commas, the escapes and the indentation right. Messages and results
// come as JSON from the library and are spliced in whole with raw().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hms::ffi::cli {

class JsonWriter {
 public:
  // pretty: two spaces per level, one member or element per line.
  explicit JsonWriter(bool pretty) : pretty_(pretty) {}

  JsonWriter& beginObject();
  JsonWriter& endObject();
  JsonWriter& beginArray();
  JsonWriter& endArray();
  // The name of the object member whose value comes next.
  JsonWriter& key(std::string_view name);

  JsonWriter& value(std::string_view text);
  JsonWriter& value(const char* text) { return value(std::string_view(text)); }
  JsonWriter& value(const std::string& text) { return value(std::string_view(text)); }
  JsonWriter& value(bool b);
  JsonWriter& value(int64_t n);
  JsonWriter& value(uint64_t n);
  JsonWriter& value(int n) { return value(int64_t(n)); }
  JsonWriter& value(unsigned n) { return value(uint64_t(n)); }
  JsonWriter& null();
  // A value already encoded as JSON, written as it is.
  JsonWriter& raw(std::string_view json);

  const std::string& str() const noexcept { return out_; }

 private:
  void beforeValue();
  void newline();
  struct Level {
    bool object;
    size_t members = 0;
  };
  bool pretty_;
  bool afterKey_ = false;
  std::vector<Level> levels_;
  std::string out_;
};

// `text` as a JSON string, quotes included.
std::string jsonQuote(std::string_view text);

}  // namespace hms::ffi::cli
