// libFuzzer target: validSingleSegmentMessage() (libclient/src/message_check.hpp), the check every
// message read from shared memory passes before user code sees it. The input is the segment's
// words. Whatever they are, the check answers in bounded time (libFuzzer's -timeout catches a
// walk that does not), and a message it accepts is one Cap'n Proto reads within bounds: reading
// all of it in place (as a reply is read, with ringReaderOptions) may stop at Cap'n Proto's
// traversal limit, which counts aliased data again, and at nothing else.
//
//   scripts/fuzz.sh message-check 600
#include <capnp/any.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "message_check.hpp"
#include "ring_message.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hms::ffi::detail;
  const uint32_t count = uint32_t(size / 8);
  std::vector<uint64_t> words(count);  // aligned, and exactly the segment: ASan sees an overrun
  if (count != 0) std::memcpy(words.data(), data, size_t(count) * 8);
  if (!validSingleSegmentMessage(words.data(), count)) return 0;

  kj::ArrayPtr<const capnp::word> segment[1] = {
      kj::arrayPtr(reinterpret_cast<const capnp::word*>(words.data()), count)};
  capnp::SegmentArrayMessageReader reader(kj::arrayPtr(segment, 1), ringReaderOptions(count));
  try {
    (void)reader.getRoot<capnp::AnyPointer>().targetSize();
  } catch (const kj::Exception& e) {
    const std::string why = e.getDescription().cStr();
    // Accepted means in bounds, no far or capability pointer, nesting within the limit.
    if (why.find("traversal limit") == std::string::npos) std::abort();
  }
  return 0;
}
