// What the fuzz targets share: a property check that names its line, and reading a message in
// place as the library reads one it has validated.
#pragma once

#include <capnp/any.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "message_check.hpp"
#include "ring_message.hpp"

// A property broken: says which, for the report libFuzzer writes, and aborts.
#define HMS_FUZZ_CHECK(cond)                                                     \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "property broken at line %d: %s\n", __LINE__, #cond); \
      std::abort();                                                              \
    }                                                                            \
  } while (false)

namespace hms::ffi::fuzz {

// Reads the `count` words at `words` as the library reads a message from a ring, a topic log or
// a socket: validSingleSegmentMessage() first, then in place with ringReaderOptions, handing the
// reader to `visit`. What Cap'n Proto refuses (a type mismatch, its traversal limit) the library
// turns into an error for the call; so does this.
template <class Visit>
void readInPlace(const uint64_t* words, uint32_t count, Visit&& visit) {
  if (!detail::validSingleSegmentMessage(words, count)) return;
  kj::ArrayPtr<const capnp::word> segment[1] = {
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(words), count)};
  capnp::SegmentArrayMessageReader reader(kj::arrayPtr(segment, 1),
                                          detail::ringReaderOptions(count));
  try {
    visit(reader);
  } catch (const kj::Exception&) {
  }
}

// The same, every field reachable.
inline void readInPlace(const uint64_t* words, uint32_t count) {
  readInPlace(words, count,
              [](capnp::MessageReader& r) { (void)r.getRoot<capnp::AnyPointer>().targetSize(); });
}

}  // namespace hms::ffi::fuzz
