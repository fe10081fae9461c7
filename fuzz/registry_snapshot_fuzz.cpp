// libFuzzer target: the registry segment as a client reads it (libclient/src/registry_segment.hpp
// and registry_view.hpp): the broker writes it, every client maps it
// read-only and reads the current snapshot without a round trip. The input is the first 256 bytes
// of the header page, then the bytes of the slots from the start of the second page, in a sealed
// 16 KiB segment. Whatever the bytes, attaching, copying the snapshot and parsing it answer with a
// Status (DATA_LOSS, FAILED_PRECONDITION or UNAVAILABLE when they refuse), and a view they accept
// is sorted as RegistryView promises.
//
//   scripts/fuzz.sh registry-snapshot 600
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fuzz_support.hpp"
#include "os.hpp"
#include "registry_segment.hpp"
#include "registry_view.hpp"

namespace {

using namespace hms::ffi;
using namespace hms::ffi::detail;

constexpr uint64_t kSegment = 4 * kPageBytes;  // the smallest the broker makes
constexpr size_t kHeaderInput = 256;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One segment for every run, sealed as the broker's is; rewritten whole each time.
  static const int segment = [] {
    auto fd = createSegment("hms-ffi-fuzz-registry", kSegment);
    if (!fd.ok()) {
      std::fprintf(stderr, "%s\n", fd.status().toString().c_str());
      std::abort();
    }
    return fd->release();
  }();
  std::vector<uint8_t> bytes(kSegment, 0);
  std::memcpy(bytes.data(), data, std::min(size, kHeaderInput));
  if (size > kHeaderInput) {
    std::memcpy(bytes.data() + kPageBytes, data + kHeaderInput,
                std::min<size_t>(size - kHeaderInput, kSegment - kPageBytes));
  }
  if (::pwrite(segment, bytes.data(), bytes.size(), 0) != ssize_t(bytes.size())) std::abort();

  auto reader = RegistryReader::attach(UniqueFd(::dup(segment)), kSegment);
  if (!reader.ok()) return 0;
  FlatWords words;
  auto generation = reader->copySnapshot(words);
  if (!generation.ok()) {
    const StatusCode c = generation.status().code();
    HMS_FUZZ_CHECK(c == StatusCode::kDataLoss || c == StatusCode::kUnavailable);
    return 0;
  }
  HMS_FUZZ_CHECK(words.size() * 8 <= kSegment);
  auto view = parseRegistryView(words, *generation);
  if (!view.ok()) {
    HMS_FUZZ_CHECK(view.status().code() == StatusCode::kDataLoss &&
                   !view.status().message().empty());
    return 0;
  }
  const auto& services = (*view)->services;
  for (size_t i = 1; i < services.size(); ++i) HMS_FUZZ_CHECK(services[i - 1].id <= services[i].id);
  const auto& topics = (*view)->topics;
  for (size_t i = 1; i < topics.size(); ++i) HMS_FUZZ_CHECK(topics[i - 1].id <= topics[i].id);
  return 0;
}
