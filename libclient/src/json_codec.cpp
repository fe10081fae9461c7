// JSON <-> Cap'n Proto over dynamic schemas. See json_codec.hpp for the mapping.
//
// Input goes through a parser of our own rather than capnp::JsonCodec::decodeRaw: Debian's 0.9.2
// decodes "\u00e9" as "I" and "\u004a" as "@" without an error (its hex digits a-f are off by
// ten and it drops everything above U+007F), and it turns every number into a double, so
// 9223372036854775807 could not reach an Int64 intact. Ours is strict RFC 8259 (UTF-8 checked,
// surrogate pairs joined, nesting capped), keeps each number's text so integers convert exactly,
// and produces a flat pre-order node array that the schema-directed walk then reads.
#include "json_codec.hpp"

#include <capnp/schema.h>
#include <kj/exception.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

namespace hms::ffi::detail {

// json_codec.hpp
size_t utf8SequenceLength(std::string_view s, size_t i) {
  auto at = [&](size_t k) -> unsigned {
    return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u;
  };
  auto cont = [](unsigned b, unsigned lo = 0x80, unsigned hi = 0xBF) { return b >= lo && b <= hi; };
  unsigned b0 = at(0);
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(at(1)) ? 2 : 0;
  if (b0 == 0xE0) return cont(at(1), 0xA0) && cont(at(2)) ? 3 : 0;
  if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
    return cont(at(1)) && cont(at(2)) ? 3 : 0;
  }
  if (b0 == 0xED) return cont(at(1), 0x80, 0x9F) && cont(at(2)) ? 3 : 0;
  if (b0 == 0xF0) return cont(at(1), 0x90) && cont(at(2)) && cont(at(3)) ? 4 : 0;
  if (b0 >= 0xF1 && b0 <= 0xF3) return cont(at(1)) && cont(at(2)) && cont(at(3)) ? 4 : 0;
  if (b0 == 0xF4) return cont(at(1), 0x80, 0x8F) && cont(at(2)) && cont(at(3)) ? 4 : 0;
  return 0;
}

namespace {

// Arrays and objects nested deeper than this are refused, so that neither the parser nor the
// walk can run out of stack on hostile input. Cap'n Proto's own JSON codec uses the same default.
constexpr uint32_t kMaxInputDepth = 64;
// Output stops descending here (see the header), to bound the stack for a builder of any depth. A
// message that passed the message checks has pointers at most 64 deep; only groups nested dozens
// deep inside it could reach this.
constexpr int kMaxOutputDepth = 128;

// ---------------------------------------------------------------------------------------------
// JSON text -> nodes

enum class JsonKind : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

// One JSON value. Nodes are stored in pre-order: a container's children follow it, and `end`
// skips its whole subtree. An object's children alternate: name (kString), value, name, value.
// Offsets rather than a string_view keep a node at 20 bytes (the input is at most 4 GiB).
struct JsonNode {
  JsonKind kind;
  bool flag;        // kBool: the value; kString: the text holds escapes to decode
  uint32_t count;   // kArray: elements; kObject: members
  uint32_t end;     // index one past this node's subtree
  uint32_t offset;  // kNumber: the lexeme; kString: the raw text between the quotes
  uint32_t length;
};

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Four hex digits at `p` (which has at least 4 bytes), or -1.
int32_t hex4(const char* p) {
  int32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    int h = hexValue(p[i]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A character as an error message shows it.
std::string showChar(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7F) return std::string("'") + c + "'";
  static const char kHex[] = "0123456789abcdef";
  return std::string("byte 0x") + kHex[u >> 4] + kHex[u & 0xF];
}

class JsonParser {
 public:
  JsonParser(std::string_view text, std::vector<JsonNode>& nodes) : text_(text), nodes_(nodes) {}

  // False with error() set when the text is not one well-formed JSON value.
  bool parse() {
    // RFC 8259 lets a parser ignore a byte order mark; Windows tools still write one.
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
    skipWhitespace();
    if (!value(0)) return false;
    skipWhitespace();
    if (pos_ != text_.size()) {
      return fail("unexpected " + showChar(text_[pos_]) + " after the JSON value");
    }
    return true;
  }

  const std::string& error() const { return error_; }

 private:
  bool value(uint32_t depth) {
    if (pos_ >= text_.size()) return fail("unexpected end of input");
    char c = text_[pos_];
    switch (c) {
      case '{':
      case '[':
        return container(depth, c == '{');
      case '"':
        return string();
      case 't':
        return literal("true", JsonKind::kBool, true);
      case 'f':
        return literal("false", JsonKind::kBool, false);
      case 'n':
        return literal("null", JsonKind::kNull, false);
      default:
        if (c == '-' || isDigit(c)) return number();
        return fail("unexpected " + showChar(c));
    }
  }

  bool container(uint32_t depth, bool isObject) {
    if (depth + 1 > kMaxInputDepth) {
      return fail("arrays and objects nested deeper than " + std::to_string(kMaxInputDepth) +
                  " levels");
    }
    const char close = isObject ? '}' : ']';
    size_t self = nodes_.size();
    nodes_.push_back({isObject ? JsonKind::kObject : JsonKind::kArray, false, 0, 0, 0, 0});
    ++pos_;
    skipWhitespace();
    uint32_t count = 0;
    if (pos_ < text_.size() && text_[pos_] == close) {
      ++pos_;
    } else {
      for (;;) {
        if (isObject) {
          if (pos_ >= text_.size() || text_[pos_] != '"') {
            return pos_ >= text_.size() ? fail("unexpected end of input")
                                        : fail("expected a member name in double quotes");
          }
          if (!string()) return false;
          skipWhitespace();
          if (pos_ >= text_.size() || text_[pos_] != ':') return fail("expected ':'");
          ++pos_;
          skipWhitespace();
        }
        if (!value(depth + 1)) return false;
        ++count;
        skipWhitespace();
        if (pos_ >= text_.size()) return fail("unexpected end of input");
        if (text_[pos_] == close) {
          ++pos_;
          break;
        }
        if (text_[pos_] != ',') {
          return fail(std::string("expected ',' or '") + close + "'");
        }
        ++pos_;
        skipWhitespace();
      }
    }
    nodes_[self].count = count;
    nodes_[self].end = static_cast<uint32_t>(nodes_.size());
    return true;
  }

  bool string() {
    const size_t open = pos_;
    ++pos_;
    const size_t start = pos_;
    bool escaped = false;
    for (;;) {
      if (pos_ >= text_.size()) {
        pos_ = open;
        return fail("string never ends");
      }
      auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') break;
      if (c == '\\') {
        escaped = true;
        if (!escape()) return false;
      } else if (c < 0x20) {
        return fail("control character in a string (write it as \\u00XX)");
      } else if (c < 0x80) {
        ++pos_;
      } else {
        size_t n = utf8SequenceLength(text_, pos_);
        if (n == 0) return fail("invalid UTF-8 in a string");
        pos_ += n;
      }
    }
    push(JsonKind::kString, escaped, start, pos_ - start);
    ++pos_;
    return true;
  }

  // At a backslash: checks the escape and steps over it (both halves of a surrogate pair).
  bool escape() {
    if (pos_ + 1 >= text_.size()) return fail("string never ends");
    char e = text_[pos_ + 1];
    if (e != 'u') {
      if (std::strchr("\"\\/bfnrt", e) == nullptr || e == '\0') {
        return fail("invalid escape '\\" + std::string(1, e) + "' in a string");
      }
      pos_ += 2;
      return true;
    }
    int32_t cp = pos_ + 6 <= text_.size() ? hex4(text_.data() + pos_ + 2) : -1;
    if (cp < 0) return fail("\\u must be followed by four hex digits");
    if (cp >= 0xDC00 && cp <= 0xDFFF) return fail("unpaired UTF-16 surrogate in a \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      bool paired = pos_ + 12 <= text_.size() && text_[pos_ + 6] == '\\' && text_[pos_ + 7] == 'u';
      int32_t low = paired ? hex4(text_.data() + pos_ + 8) : -1;
      if (low < 0xDC00 || low > 0xDFFF) {
        return fail("unpaired UTF-16 surrogate in a \\u escape");
      }
      pos_ += 12;
      return true;
    }
    pos_ += 6;
    return true;
  }

  bool number() {
    const size_t start = pos_;
    if (text_[pos_] == '-') ++pos_;
    if (pos_ >= text_.size() || !isDigit(text_[pos_])) return fail("expected a digit");
    if (text_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < text_.size() && isDigit(text_[pos_])) ++pos_;
    }
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      if (pos_ >= text_.size() || !isDigit(text_[pos_])) return fail("expected a digit after '.'");
      while (pos_ < text_.size() && isDigit(text_[pos_])) ++pos_;
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      if (pos_ >= text_.size() || !isDigit(text_[pos_])) {
        return fail("expected a digit in the exponent");
      }
      while (pos_ < text_.size() && isDigit(text_[pos_])) ++pos_;
    }
    push(JsonKind::kNumber, false, start, pos_ - start);
    return true;
  }

  bool literal(std::string_view word, JsonKind kind, bool flag) {
    if (text_.substr(pos_, word.size()) != word) return fail("unexpected " + showChar(text_[pos_]));
    pos_ += word.size();
    push(kind, flag, 0, 0);
    return true;
  }

  // A leaf: its subtree is itself.
  void push(JsonKind kind, bool flag, size_t offset, size_t length) {
    nodes_.push_back({kind, flag, 0, static_cast<uint32_t>(nodes_.size() + 1),
                      static_cast<uint32_t>(offset), static_cast<uint32_t>(length)});
  }

  void skipWhitespace() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
      ++pos_;
    }
  }

  // Records `what` at the current position (line and column counted from 1, in bytes).
  bool fail(const std::string& what) {
    size_t line = 1;
    size_t lineStart = 0;
    for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        lineStart = i + 1;
      }
    }
    error_ = what + " at line " + std::to_string(line) + ", column " +
             std::to_string(pos_ - lineStart + 1);
    return false;
  }

  std::string_view text_;
  std::vector<JsonNode>& nodes_;
  size_t pos_ = 0;
  std::string error_;
};

// The text of a number or string node: its lexeme, or the raw characters between the quotes.
std::string_view rawText(std::string_view json, const JsonNode& node) {
  return json.substr(node.offset, node.length);
}

// The characters of a string node with its escapes decoded; a view of the input when it has none,
// else of `scratch`. The parser has already checked every escape.
std::string_view decodeString(std::string_view json, const JsonNode& node, std::string& scratch) {
  const std::string_view raw = rawText(json, node);
  if (!node.flag) return raw;
  scratch.clear();
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c != '\\') {
      scratch += c;
      continue;
    }
    char e = raw[++i];
    switch (e) {
      case 'b':
        scratch += '\b';
        break;
      case 'f':
        scratch += '\f';
        break;
      case 'n':
        scratch += '\n';
        break;
      case 'r':
        scratch += '\r';
        break;
      case 't':
        scratch += '\t';
        break;
      case 'u': {
        auto cp = static_cast<uint32_t>(hex4(raw.data() + i + 1));
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          auto low = static_cast<uint32_t>(hex4(raw.data() + i + 3));
          i += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        appendUtf8(scratch, cp);
        break;
      }
      default:  // '"', '\\', '/'
        scratch += e;
        break;
    }
  }
  return scratch;
}

// ---------------------------------------------------------------------------------------------
// Numbers

// A JSON number lexeme taken apart: [-] intDigits [. fracDigits] [e exponent].
struct NumberParts {
  bool negative = false;
  std::string_view intDigits;
  std::string_view fracDigits;
  int64_t exponent = 0;  // saturated far beyond any value that could fit
};

NumberParts splitNumber(std::string_view lexeme) {
  NumberParts p;
  size_t i = 0;
  if (i < lexeme.size() && lexeme[i] == '-') {
    p.negative = true;
    ++i;
  }
  size_t s = i;
  while (i < lexeme.size() && isDigit(lexeme[i])) ++i;
  p.intDigits = lexeme.substr(s, i - s);
  if (i < lexeme.size() && lexeme[i] == '.') {
    s = ++i;
    while (i < lexeme.size() && isDigit(lexeme[i])) ++i;
    p.fracDigits = lexeme.substr(s, i - s);
  }
  if (i < lexeme.size() && (lexeme[i] == 'e' || lexeme[i] == 'E')) {
    ++i;
    bool negExp = false;
    if (i < lexeme.size() && (lexeme[i] == '+' || lexeme[i] == '-')) negExp = lexeme[i++] == '-';
    int64_t e = 0;
    for (; i < lexeme.size(); ++i) e = std::min<int64_t>(e * 10 + (lexeme[i] - '0'), 1'000'000'000);
    p.exponent = negExp ? -e : e;
  }
  return p;
}

enum class IntegerParse { kOk, kNotInteger, kOutOfRange };

// The exact value of a JSON number lexeme as sign and magnitude, when it is a whole number that
// fits 64 bits: "3.0", "1e3" and "-0" are whole numbers; "1.5" is not.
IntegerParse parseInteger(std::string_view lexeme, bool& negative, uint64_t& magnitude) {
  NumberParts p = splitNumber(lexeme);
  negative = p.negative;
  magnitude = 0;
  // The digits of intDigits then fracDigits, as one sequence D; the value is D * 10^scale.
  const size_t total = p.intDigits.size() + p.fracDigits.size();
  auto digit = [&](size_t k) {
    return k < p.intDigits.size() ? p.intDigits[k] : p.fracDigits[k - p.intDigits.size()];
  };
  size_t first = 0;
  while (first < total && digit(first) == '0') ++first;
  size_t last = total;  // one past the last non-zero digit
  while (last > first && digit(last - 1) == '0') --last;
  if (first == last) return IntegerParse::kOk;  // zero
  int64_t scale =
      p.exponent - static_cast<int64_t>(p.fracDigits.size()) + static_cast<int64_t>(total - last);
  if (scale < 0) return IntegerParse::kNotInteger;
  if (static_cast<int64_t>(last - first) + scale > 20) return IntegerParse::kOutOfRange;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  auto push = [&](unsigned d) {
    if (magnitude > (kMax - d) / 10) return false;
    magnitude = magnitude * 10 + d;
    return true;
  };
  for (size_t k = first; k < last; ++k) {
    if (!push(static_cast<unsigned>(digit(k) - '0'))) return IntegerParse::kOutOfRange;
  }
  for (int64_t k = 0; k < scale; ++k) {
    if (!push(0)) return IntegerParse::kOutOfRange;
  }
  return IntegerParse::kOk;
}

// True when a lexeme that from_chars called out of range is below the type's range, not above:
// such a number underflows to zero (as IEEE arithmetic and JavaScript do) rather than fail.
bool isTiny(std::string_view lexeme) {
  NumberParts p = splitNumber(lexeme);
  // The power of ten of the first significant digit; zero itself is never out of range.
  int64_t power = p.exponent;
  size_t lead = 0;
  while (lead < p.intDigits.size() && p.intDigits[lead] == '0') ++lead;
  if (lead < p.intDigits.size()) {
    power += static_cast<int64_t>(p.intDigits.size() - lead) - 1;
  } else {
    size_t j = 0;
    while (j < p.fracDigits.size() && p.fracDigits[j] == '0') ++j;
    power -= static_cast<int64_t>(j) + 1;
  }
  return power < 0;
}

template <class Float>
bool parseFloat(std::string_view lexeme, Float& out) {
  auto r = std::from_chars(lexeme.data(), lexeme.data() + lexeme.size(), out);
  if (r.ec == std::errc::result_out_of_range && isTiny(lexeme)) {
    out = lexeme[0] == '-' ? -Float(0) : Float(0);
    return true;
  }
  return r.ec == std::errc() && r.ptr == lexeme.data() + lexeme.size();
}

// ---------------------------------------------------------------------------------------------
// Base64

int base64Sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

// The decoded size of standard or URL-safe base64, padded or not; false with `error` set when the
// text is not base64. Bits below the last whole byte are ignored, as most decoders do.
bool base64DecodedSize(std::string_view in, size_t& size, std::string& error) {
  size_t pad = 0;
  while (pad < 2 && pad < in.size() && in[in.size() - 1 - pad] == '=') ++pad;
  const size_t body = in.size() - pad;
  for (size_t i = 0; i < body; ++i) {
    if (base64Sextet(in[i]) < 0) {
      error = "not base64: " + showChar(in[i]) + " at offset " + std::to_string(i);
      return false;
    }
  }
  if (body % 4 == 1) {
    error = "not base64: " + std::to_string(in.size()) + " characters cannot be whole bytes";
    return false;
  }
  if (pad != 0 && in.size() % 4 != 0) {
    error = "not base64: '=' padding must make the length a multiple of 4";
    return false;
  }
  size = body / 4 * 3 + (body % 4 == 0 ? 0 : body % 4 - 1);
  return true;
}

// Decodes text that base64DecodedSize() accepted into `out`, which holds exactly that size.
void base64Decode(std::string_view in, uint8_t* out) {
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    acc = (acc << 6) | static_cast<uint32_t>(base64Sextet(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      *out++ = static_cast<uint8_t>(acc >> bits);
    }
  }
}

void base64Encode(const uint8_t* data, size_t size, std::string& out) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i = 0;
  for (; i + 3 <= size; i += 3) {
    uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8) | data[i + 2];
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (size - i == 1) {
    uint32_t v = uint32_t{data[i]} << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (size - i == 2) {
    uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
}

// ---------------------------------------------------------------------------------------------
// Names in messages

// "hms/cdf/debate.capnp:Fact" -> "hms.cdf.debate.Fact".
std::string typeName(capnp::Schema schema) {
  auto display = schema.getProto().getDisplayName();
  std::string name(display.cStr(), display.size());
  size_t colon = name.find(':');
  if (colon == std::string::npos) return name;
  std::string file = name.substr(0, colon);
  if (file.size() > 6 && file.compare(file.size() - 6, 6, ".capnp") == 0) {
    file.resize(file.size() - 6);
  }
  while (!file.empty() && file[0] == '/') file.erase(0, 1);
  for (char& c : file) {
    if (c == '/') c = '.';
  }
  return file + "." + name.substr(colon + 1);
}

const char* primitiveName(capnp::schema::Type::Which which) {
  using W = capnp::schema::Type;
  switch (which) {
    case W::INT8:
      return "Int8";
    case W::INT16:
      return "Int16";
    case W::INT32:
      return "Int32";
    case W::INT64:
      return "Int64";
    case W::UINT8:
      return "UInt8";
    case W::UINT16:
      return "UInt16";
    case W::UINT32:
      return "UInt32";
    case W::UINT64:
      return "UInt64";
    case W::FLOAT32:
      return "Float32";
    case W::FLOAT64:
      return "Float64";
    default:
      return "?";
  }
}

// At most this many names are listed in a message; the rest become "...".
constexpr size_t kMaxListedNames = 16;

// "allowedRoles" -> "allowed_roles": how a snake_case file spells a field.
std::string snakeCase(std::string_view camel) {
  std::string out;
  for (char c : camel) {
    if (c >= 'A' && c <= 'Z') {
      out += '_';
      out += static_cast<char>(c - 'A' + 'a');
    } else {
      out += c;
    }
  }
  return out;
}

// "allowed_roles" -> "allowedRoles"; false when `snake` is no snake_case spelling of any name: it
// has an upper-case letter (the camelCase spelling is not accepted too, so that one file does not
// mix both), or an '_' that is not followed by a lower-case letter.
bool camelCase(std::string_view snake, std::string& out) {
  out.clear();
  for (size_t i = 0; i < snake.size(); ++i) {
    char c = snake[i];
    if (c >= 'A' && c <= 'Z') return false;
    if (c == '_') {
      if (i + 1 >= snake.size() || snake[i + 1] < 'a' || snake[i + 1] > 'z') return false;
      out += static_cast<char>(snake[++i] - 'a' + 'A');
    } else {
      out += c;
    }
  }
  return true;
}

// The members' names, comma-separated, at most kMaxListedNames of them; snake_case spelled when
// the input is (JsonInputOptions::snakeCaseKeys).
template <class Members>
std::string listNames(Members members, bool snake = false) {
  std::string out;
  size_t n = 0;
  for (auto m : members) {
    if (n == kMaxListedNames) {
      out += ", ...";
      break;
    }
    if (n++ != 0) out += ", ";
    auto name = m.getProto().getName();
    const std::string_view text(name.cStr(), name.size());
    out += snake ? snakeCase(text) : std::string(text);
  }
  return out;
}

// A value as a message quotes it, cut short when long.
std::string excerpt(std::string_view s) {
  constexpr size_t kMax = 40;
  if (s.size() <= kMax) return std::string(s);
  return std::string(s.substr(0, kMax)) + "...";
}

std::string describe(const JsonNode& n) {
  switch (n.kind) {
    case JsonKind::kNull:
      return "null";
    case JsonKind::kBool:
      return n.flag ? "true" : "false";
    case JsonKind::kNumber:
      return "a number";
    case JsonKind::kString:
      return "a string";
    case JsonKind::kArray:
      return "an array";
    case JsonKind::kObject:
      return "an object";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Field facts

// What the walks need of one field. Cap'n Proto reads a field's type and proto out of the schema
// node on every call, which was most of the time of a small conversion, so each struct type's
// fields are read once per call.
struct FieldFacts {
  capnp::StructSchema::Field field;
  capnp::Type type;
  std::string_view name;  // in the schema node, which outlives the call
  bool inUnion;
  bool isPointer;  // left out of the output when null
  bool hidden;     // a capability or AnyPointer: never in the output
};

class FieldTable {
 public:
  // Indexed by Field::getIndex(). The reference stays valid for the table's life.
  const std::vector<FieldFacts>& of(capnp::StructSchema schema) {
    if (last_ != nullptr && lastSchema_ == schema) return *last_;
    auto [it, added] = table_.try_emplace(schema);
    if (added) {
      for (auto field : schema.getFields()) {
        const auto proto = field.getProto();
        const capnp::Type type = field.getType();
        const auto name = proto.getName();
        it->second.push_back({field, type, std::string_view(name.cStr(), name.size()),
                              proto.getDiscriminantValue() != capnp::schema::Field::NO_DISCRIMINANT,
                              type.isText() || type.isData() || type.isList() ||
                                  (type.isStruct() && !proto.isGroup()),
                              type.isInterface() || type.isAnyPointer()});
      }
    }
    lastSchema_ = schema;
    last_ = &it->second;
    return *last_;
  }

 private:
  struct Hash {
    size_t operator()(const capnp::StructSchema& s) const { return s.hashCode(); }
  };
  std::unordered_map<capnp::StructSchema, std::vector<FieldFacts>, Hash> table_;
  capnp::StructSchema lastSchema_;
  const std::vector<FieldFacts>* last_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Nodes -> DynamicStruct::Builder

// Where one value goes: a field of a struct or an element of a list.
struct Slot {
  capnp::DynamicStruct::Builder parent;
  capnp::StructSchema::Field field;
  capnp::DynamicList::Builder list;
  uint32_t index = 0;
  bool isField = true;

  static Slot of(capnp::DynamicStruct::Builder s, capnp::StructSchema::Field f) {
    Slot slot;
    slot.parent = s;
    slot.field = f;
    return slot;
  }
  static Slot of(capnp::DynamicList::Builder l, uint32_t i) {
    Slot slot;
    slot.list = l;
    slot.index = i;
    slot.isField = false;
    return slot;
  }
  void set(const capnp::DynamicValue::Reader& v) {
    if (isField) {
      parent.set(field, v);
    } else {
      list.set(index, v);
    }
  }
  capnp::DynamicValue::Builder init(uint32_t size) {
    return isField ? parent.init(field, size) : list.init(index, size);
  }
  capnp::DynamicStruct::Builder initStruct() {
    return isField ? parent.init(field).as<capnp::DynamicStruct>()
                   : list[index].as<capnp::DynamicStruct>();
  }
};

class JsonToCapnp {
 public:
  JsonToCapnp(std::string_view json, const std::vector<JsonNode>& nodes,
              const JsonInputOptions& options = {})
      : json_(json), nodes_(nodes), options_(options) {}

  // `asField`: the top-level node is the value of that field of `out` (topLevelArrayField).
  Status run(capnp::DynamicStruct::Builder out,
             const capnp::StructSchema::Field* asField = nullptr) {
    try {
      if (asField != nullptr) {
        pushField(options_.topLevelArrayField);
        if (!value(0, asField->getType(), Slot::of(out, *asField))) {
          return Status(StatusCode::kInvalidArgument, error_);
        }
        return Status();
      }
      if (!structValue(0, out)) return Status(StatusCode::kInvalidArgument, error_);
      return Status();
    } catch (const kj::Exception& e) {
      // The builder refused a value: a list or text longer than Cap'n Proto allows, or a message
      // larger than the space it is being built in.
      auto d = e.getDescription();
      return Status(StatusCode::kInvalidArgument,
                    where() + "Cap'n Proto refused the value: " + std::string(d.cStr(), d.size()));
    }
  }

 private:
  bool structValue(uint32_t n, capnp::DynamicStruct::Builder out) {
    const JsonNode& obj = nodes_[n];
    if (obj.kind != JsonKind::kObject) return fail("expected an object, got " + describe(obj));
    const capnp::StructSchema schema = out.getSchema();
    const std::vector<FieldFacts>& fields = fieldTable_.of(schema);
    // Fields already given, to refuse a name given twice.
    std::vector<bool> seen(fields.size());
    const FieldFacts* unionMember = nullptr;
    std::string unionMemberName;  // as the input spells it
    uint32_t k = n + 1;
    for (uint32_t m = 0; m < obj.count; ++m) {
      const uint32_t keyNode = k;
      const uint32_t valueNode = nodes_[keyNode].end;
      k = nodes_[valueNode].end;
      // A copy, NUL-terminated for kj::StringPtr.
      keyScratch_.assign(decodeString(json_, nodes_[keyNode], valueScratch_));
      const std::string& name = keyScratch_;
      uint32_t index = 0;
      // The name looked up: the key itself, or its camelCase form for a snake_case input.
      const std::string* lookup = &name;
      bool spellable = true;
      if (options_.snakeCaseKeys) {
        spellable = camelCase(name, camelScratch_);
        lookup = &camelScratch_;
      }
      kj::Maybe<capnp::StructSchema::Field> found;
      if (spellable) found = schema.findFieldByName(kj::StringPtr(lookup->c_str(), lookup->size()));
      KJ_IF_MAYBE (field, found) {
        index = field->getIndex();
      } else {
        return fail("unknown field '" + excerpt(name) + "' in " + typeName(schema) + " (fields: " +
                    listNames(schema.getFields(), options_.snakeCaseKeys) +
                    ")");
      }
      const FieldFacts& facts = fields[index];
      if (seen[index]) return fail("field '" + excerpt(name) + "' is given twice");
      seen[index] = true;
      // null leaves a field unset, but null is Void's one value, and setting a Void member of a
      // union is how that member is chosen.
      if (nodes_[valueNode].kind == JsonKind::kNull && !facts.type.isVoid()) continue;
      if (facts.inUnion) {
        if (unionMember != nullptr) {
          return fail("fields '" +
                      (options_.snakeCaseKeys ? unionMemberName : std::string(unionMember->name)) +
                      "' and '" + name + "' are members of one union; give at most one");
        }
        unionMember = &facts;
        if (options_.snakeCaseKeys) unionMemberName = name;
      }
      // The path names the field as the input does; `name` is overwritten by nested members.
      const size_t mark = pushField(options_.snakeCaseKeys ? std::string_view(name) : facts.name);
      if (!value(valueNode, facts.type, Slot::of(out, facts.field))) return false;
      path_.resize(mark);
    }
    return true;
  }

  bool value(uint32_t n, capnp::Type type, Slot slot) {
    using W = capnp::schema::Type;
    const JsonNode& v = nodes_[n];
    switch (type.which()) {
      case W::VOID:
        if (v.kind != JsonKind::kNull) return fail("expected null (Void), got " + describe(v));
        slot.set(capnp::VOID);
        return true;
      case W::BOOL:
        if (v.kind != JsonKind::kBool) return fail("expected true or false, got " + describe(v));
        slot.set(v.flag);
        return true;
      case W::INT8:
        return integer<int8_t>(v, type.which(), false, slot);
      case W::INT16:
        return integer<int16_t>(v, type.which(), false, slot);
      case W::INT32:
        return integer<int32_t>(v, type.which(), false, slot);
      case W::INT64:
        return integer<int64_t>(v, type.which(), true, slot);
      case W::UINT8:
        return integer<uint8_t>(v, type.which(), false, slot);
      case W::UINT16:
        return integer<uint16_t>(v, type.which(), false, slot);
      case W::UINT32:
        return integer<uint32_t>(v, type.which(), false, slot);
      case W::UINT64:
        return integer<uint64_t>(v, type.which(), true, slot);
      case W::FLOAT32:
        return floating<float>(v, type.which(), slot);
      case W::FLOAT64:
        return floating<double>(v, type.which(), slot);
      case W::TEXT:
        return text(v, slot);
      case W::DATA:
        return data(v, slot);
      case W::LIST:
        return list(n, type.asList(), slot);
      case W::ENUM:
        return enumerant(v, type.asEnum(), slot);
      case W::STRUCT: {
        if (v.kind != JsonKind::kObject) return fail("expected an object, got " + describe(v));
        return structValue(n, slot.initStruct());
      }
      case W::INTERFACE:
        return fail("a capability cannot be given in JSON; leave it out or give null");
      case W::ANY_POINTER:
        return fail("an AnyPointer cannot be given in JSON; leave it out or give null");
    }
    return fail("unsupported type");
  }

  template <class Int>
  bool integer(const JsonNode& v, capnp::schema::Type::Which which, bool wide, Slot slot) {
    const char* label = primitiveName(which);
    std::string_view digits;
    if (v.kind == JsonKind::kNumber) {
      digits = rawText(json_, v);
    } else if (wide && v.kind == JsonKind::kString) {
      // A decimal string, as 64-bit integers are written (a JSON number is a double to most
      // readers): an optional '-' and digits, nothing else.
      std::string_view s = decodeString(json_, v, valueScratch_);
      size_t i = !s.empty() && s[0] == '-' ? 1 : 0;
      bool ok = i < s.size();
      for (; ok && i < s.size(); ++i) ok = isDigit(s[i]);
      if (!ok) {
        return fail("expected a decimal integer for " + std::string(label) + ", got \"" +
                    excerpt(s) + "\"");
      }
      digits = s;
    } else {
      return fail(std::string(wide ? "expected a number or a decimal string for "
                                   : "expected a number for ") +
                  label + ", got " + describe(v));
    }
    bool negative = false;
    uint64_t magnitude = 0;
    IntegerParse r = parseInteger(digits, negative, magnitude);
    if (r == IntegerParse::kNotInteger) {
      return fail("expected a whole number for " + std::string(label) + ", got " + excerpt(digits));
    }
    using Limits = std::numeric_limits<Int>;
    bool fits = r == IntegerParse::kOk;
    if (fits && negative) {
      fits = magnitude == 0 ||
             (Limits::is_signed && magnitude <= static_cast<uint64_t>(Limits::max()) + 1);
    } else if (fits) {
      fits = magnitude <= static_cast<uint64_t>(Limits::max());
    }
    if (!fits) return fail(excerpt(digits) + " is out of range for " + label);
    Int value;
    if (negative && magnitude != 0) {
      // -magnitude without overflow, also for the minimum.
      value = static_cast<Int>(-static_cast<int64_t>(magnitude - 1) - 1);
    } else {
      value = static_cast<Int>(magnitude);
    }
    slot.set(value);
    return true;
  }

  template <class Float>
  bool floating(const JsonNode& v, capnp::schema::Type::Which which, Slot slot) {
    const char* label = primitiveName(which);
    Float value;
    if (v.kind == JsonKind::kNumber) {
      if (!parseFloat(rawText(json_, v), value)) {
        return fail(excerpt(rawText(json_, v)) + " is out of range for " + label);
      }
    } else if (v.kind == JsonKind::kString) {
      std::string_view s = decodeString(json_, v, valueScratch_);
      if (s == "NaN") {
        value = std::numeric_limits<Float>::quiet_NaN();
      } else if (s == "Infinity") {
        value = std::numeric_limits<Float>::infinity();
      } else if (s == "-Infinity") {
        value = -std::numeric_limits<Float>::infinity();
      } else {
        return fail("expected a number, \"NaN\", \"Infinity\" or \"-Infinity\" for " +
                    std::string(label) + ", got \"" + excerpt(s) + "\"");
      }
    } else {
      return fail("expected a number for " + std::string(label) + ", got " + describe(v));
    }
    slot.set(value);
    return true;
  }

  bool text(const JsonNode& v, Slot slot) {
    if (v.kind != JsonKind::kString) return fail("expected a string, got " + describe(v));
    std::string_view s = decodeString(json_, v, valueScratch_);
    // Text reaches C and other languages as a NUL-terminated string, where an embedded NUL would
    // silently cut it short.
    if (v.flag && s.find('\0') != std::string_view::npos) {
      return fail("text cannot hold \\u0000; binary content belongs in a Data field");
    }
    auto t = slot.init(static_cast<uint32_t>(checkedSize(s.size()))).as<capnp::Text>();
    if (!s.empty()) std::memcpy(t.begin(), s.data(), s.size());
    return true;
  }

  bool data(const JsonNode& v, Slot slot) {
    if (v.kind != JsonKind::kString) return fail("expected a base64 string, got " + describe(v));
    // Escapes are decoded first: some encoders write '/' as "\/".
    std::string_view s = decodeString(json_, v, valueScratch_);
    size_t size = 0;
    std::string error;
    if (!base64DecodedSize(s, size, error)) return fail(error);
    auto d = slot.init(static_cast<uint32_t>(checkedSize(size))).as<capnp::Data>();
    base64Decode(s, d.begin());
    return true;
  }

  bool list(uint32_t n, capnp::ListSchema schema, Slot slot) {
    const JsonNode& v = nodes_[n];
    if (v.kind != JsonKind::kArray) return fail("expected an array, got " + describe(v));
    auto out = slot.init(v.count).as<capnp::DynamicList>();
    const capnp::Type element = schema.getElementType();
    uint32_t e = n + 1;
    for (uint32_t i = 0; i < v.count; ++i, e = nodes_[e].end) {
      if (nodes_[e].kind == JsonKind::kNull) continue;  // the element keeps its default
      const size_t mark = path_.size();
      path_ += '[';
      path_ += std::to_string(i);
      path_ += ']';
      if (!value(e, element, Slot::of(out, i))) return false;
      path_.resize(mark);
    }
    return true;
  }

  bool enumerant(const JsonNode& v, capnp::EnumSchema schema, Slot slot) {
    const auto enumerants = schema.getEnumerants();
    auto notOne = [&](const std::string& given) {
      return fail(given + " is not an enumerant of " + typeName(schema) + " (" +
                  listNames(enumerants) + ")");
    };
    if (v.kind == JsonKind::kString) {
      std::string name(decodeString(json_, v, valueScratch_));
      KJ_IF_MAYBE (found, schema.findEnumerantByName(kj::StringPtr(name.c_str(), name.size()))) {
        slot.set(capnp::DynamicEnum(*found));
        return true;
      }
      return notOne("'" + excerpt(name) + "'");
    }
    if (v.kind == JsonKind::kNumber) {
      bool negative = false;
      uint64_t magnitude = 0;
      if (parseInteger(rawText(json_, v), negative, magnitude) != IntegerParse::kOk ||
          (negative && magnitude != 0) || magnitude >= enumerants.size()) {
        return notOne(excerpt(rawText(json_, v)));
      }
      slot.set(capnp::DynamicEnum(schema, static_cast<uint16_t>(magnitude)));
      return true;
    }
    return fail("expected the name of an enumerant of " + typeName(schema) + ", got " +
                describe(v));
  }

  // Sizes past uint32 are refused here; Cap'n Proto refuses smaller ones it cannot hold.
  static size_t checkedSize(size_t size) {
    KJ_REQUIRE(size <= std::numeric_limits<uint32_t>::max(), "value too large", size);
    return size;
  }

  size_t pushField(std::string_view name) {
    const size_t mark = path_.size();
    if (!path_.empty()) path_ += '.';
    path_ += name;
    return mark;
  }

  std::string where() const { return path_.empty() ? std::string() : path_ + ": "; }

  bool fail(const std::string& what) {
    error_ = where() + what;
    return false;
  }

  const std::string_view json_;
  const std::vector<JsonNode>& nodes_;
  const JsonInputOptions options_;
  FieldTable fieldTable_;
  std::string path_;  // e.g. "facts[2].value"; empty at the top level
  std::string error_;
  std::string keyScratch_;
  std::string valueScratch_;
  std::string camelScratch_;
};

// ---------------------------------------------------------------------------------------------
// DynamicStruct::Reader -> JSON text

class JsonWriter {
 public:
  JsonWriter(std::string& out, bool pretty) : out_(out), pretty_(pretty) {}

  void structValue(capnp::DynamicStruct::Reader s, int depth) {
    if (depth > kMaxOutputDepth) {
      out_ += "null";
      return;
    }
    out_ += '{';
    bool first = true;
    const std::vector<FieldFacts>& fields = fieldTable_.of(s.getSchema());
    // The index of the active union member; past every field when there is no union.
    uint32_t active = static_cast<uint32_t>(fields.size());
    KJ_IF_MAYBE (member, s.which()) {
      active = member->getIndex();
    }
    for (const FieldFacts& f : fields) {
      if (f.inUnion && f.field.getIndex() != active) continue;
      if (f.hidden || (f.isPointer && !s.has(f.field))) continue;
      separator(first, depth + 1);
      string(f.name);
      out_ += pretty_ ? ": " : ":";
      value(s.get(f.field), f.type, depth + 1);
    }
    if (!first) newline(depth);
    out_ += '}';
  }

 private:
  void value(capnp::DynamicValue::Reader v, capnp::Type type, int depth) {
    using W = capnp::schema::Type;
    switch (type.which()) {
      case W::VOID:
        out_ += "null";
        return;
      case W::BOOL:
        out_ += v.as<bool>() ? "true" : "false";
        return;
      case W::INT8:
      case W::INT16:
      case W::INT32:
        number(v.as<int64_t>());
        return;
      case W::UINT8:
      case W::UINT16:
      case W::UINT32:
        number(v.as<uint64_t>());
        return;
      case W::INT64:
        out_ += '"';
        number(v.as<int64_t>());
        out_ += '"';
        return;
      case W::UINT64:
        out_ += '"';
        number(v.as<uint64_t>());
        out_ += '"';
        return;
      case W::FLOAT32:
        floating(v.as<float>());
        return;
      case W::FLOAT64:
        floating(v.as<double>());
        return;
      case W::TEXT: {
        auto t = v.as<capnp::Text>();
        string(std::string_view(t.begin(), t.size()));
        return;
      }
      case W::DATA: {
        auto d = v.as<capnp::Data>();
        out_ += '"';
        base64Encode(d.begin(), d.size(), out_);
        out_ += '"';
        return;
      }
      case W::LIST:
        list(v.as<capnp::DynamicList>(), type.asList().getElementType(), depth);
        return;
      case W::ENUM: {
        auto e = v.as<capnp::DynamicEnum>();
        KJ_IF_MAYBE (enumerant, e.getEnumerant()) {
          auto name = enumerant->getProto().getName();
          string(std::string_view(name.cStr(), name.size()));
        } else {
          number(uint64_t{e.getRaw()});  // from a newer schema than ours
        }
        return;
      }
      case W::STRUCT:
        structValue(v.as<capnp::DynamicStruct>(), depth);
        return;
      case W::INTERFACE:
      case W::ANY_POINTER:
        out_ += "null";  // only as a list element; fields of these types are left out
        return;
    }
    out_ += "null";
  }

  void list(capnp::DynamicList::Reader l, capnp::Type element, int depth) {
    if (depth > kMaxOutputDepth) {
      out_ += "null";
      return;
    }
    out_ += '[';
    bool first = true;
    for (uint32_t i = 0; i < l.size(); ++i) {
      separator(first, depth + 1);
      value(l[i], element, depth + 1);
    }
    if (!first) newline(depth);
    out_ += ']';
  }

  template <class Int>
  void number(Int v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out_.append(buf, r.ptr);
  }

  template <class Float>
  void floating(Float v) {
    if (std::isnan(v)) {
      out_ += "\"NaN\"";
    } else if (std::isinf(v)) {
      out_ += v > 0 ? "\"Infinity\"" : "\"-Infinity\"";
    } else {
      // The shortest text that reads back as the same Float32 or Float64.
      char buf[64];
      auto r = std::to_chars(buf, buf + sizeof buf, v);
      out_.append(buf, r.ptr);
    }
  }

  // A JSON string. Bytes that are not UTF-8 become U+FFFD so that the output is always valid JSON.
  void string(std::string_view s) {
    static const char kHex[] = "0123456789abcdef";
    out_ += '"';
    size_t i = 0;
    while (i < s.size()) {
      auto c = static_cast<unsigned char>(s[i]);
      if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
        size_t run = i + 1;
        while (run < s.size()) {
          auto d = static_cast<unsigned char>(s[run]);
          if (d < 0x20 || d >= 0x80 || d == '"' || d == '\\') break;
          ++run;
        }
        out_.append(s.data() + i, run - i);
        i = run;
        continue;
      }
      if (c >= 0x80) {
        size_t n = utf8SequenceLength(s, i);
        if (n == 0) {
          out_ += "\xEF\xBF\xBD";
          ++i;
        } else {
          out_.append(s.data() + i, n);
          i += n;
        }
        continue;
      }
      switch (c) {
        case '"':
          out_ += "\\\"";
          break;
        case '\\':
          out_ += "\\\\";
          break;
        case '\b':
          out_ += "\\b";
          break;
        case '\f':
          out_ += "\\f";
          break;
        case '\n':
          out_ += "\\n";
          break;
        case '\r':
          out_ += "\\r";
          break;
        case '\t':
          out_ += "\\t";
          break;
        default:
          out_ += "\\u00";
          out_ += kHex[c >> 4];
          out_ += kHex[c & 0xF];
          break;
      }
      ++i;
    }
    out_ += '"';
  }

  void separator(bool& first, int depth) {
    if (!first) out_ += ',';
    first = false;
    newline(depth);
  }

  void newline(int depth) {
    if (!pretty_) return;
    out_ += '\n';
    out_.append(static_cast<size_t>(depth) * 2, ' ');
  }

  std::string& out_;
  const bool pretty_;
  FieldTable fieldTable_;
};

}  // namespace

Status jsonToStruct(std::string_view json, capnp::DynamicStruct::Builder out) noexcept {
  return jsonToStruct(json, out, JsonInputOptions{});
}

Status jsonToStruct(std::string_view json, capnp::DynamicStruct::Builder out,
                    const JsonInputOptions& options) noexcept {
  try {
    if (json.size() > std::numeric_limits<uint32_t>::max()) {
      return Status(StatusCode::kInvalidArgument,
                    "JSON text of " + std::to_string(json.size()) + " bytes is over 4 GiB");
    }
    std::vector<JsonNode> nodes;
    nodes.reserve(json.size() / 16 + 1);
    JsonParser parser(json, nodes);
    if (!parser.parse()) {
      return Status(StatusCode::kInvalidArgument, "malformed JSON: " + parser.error());
    }
    if (nodes[0].kind == JsonKind::kArray && !options.topLevelArrayField.empty()) {
      const std::string name(options.topLevelArrayField);
      kj::Maybe<capnp::StructSchema::Field> found =
          out.getSchema().findFieldByName(kj::StringPtr(name.c_str(), name.size()));
      KJ_IF_MAYBE (field, found) {
        return JsonToCapnp(json, nodes, options).run(out, field);
      }
      return Status(
          StatusCode::kInvalidArgument,
          "cannot convert the JSON: " + typeName(out.getSchema()) + " has no field '" + name + "'");
    }
    if (nodes[0].kind != JsonKind::kObject) {
      return Status(StatusCode::kInvalidArgument,
                    std::string(options.topLevelArrayField.empty()
                                    ? "expected a JSON object at the top level, got "
                                    : "expected a JSON object or array at the top level, got ") +
                        describe(nodes[0]));
    }
    return JsonToCapnp(json, nodes, options).run(out);
  } catch (const kj::Exception& e) {
    auto d = e.getDescription();
    return Status(StatusCode::kInvalidArgument,
                  "cannot convert the JSON: " + std::string(d.cStr(), d.size()));
  } catch (const std::exception& e) {
    return Status(StatusCode::kInvalidArgument,
                  std::string("cannot convert the JSON: ") + e.what());
  } catch (...) {
    return Status(StatusCode::kInvalidArgument, "cannot convert the JSON: unknown exception");
  }
}

std::string structToJson(capnp::DynamicStruct::Reader in, JsonOptions options) {
  std::string out;
  JsonWriter(out, options.pretty).structValue(in, 0);
  return out;
}

}  // namespace hms::ffi::detail
