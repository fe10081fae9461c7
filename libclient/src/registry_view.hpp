// The registry as a client sees it: a snapshot (wire::RegistrySnapshot) read once per generation,
// from the registry segment or over the control socket.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "codec.hpp"
#include "hms/ffi/client.hpp"
#include "hms/ffi/status.hpp"
#include "hms/ffi/topics.hpp"

namespace hms::ffi::detail {

// A registry snapshot parsed once per generation: services sorted by id, then version descending;
// topics by id.
struct RegistryView {
  uint64_t generation = 0;
  std::vector<ServiceInfo> services;
  std::vector<TopicInfo> topics;
};

// Reads a snapshot copied out of the registry segment (or fetched over the control socket).
// DATA_LOSS naming the problem when it is not a RegistrySnapshot Cap'n Proto can read.
Result<std::shared_ptr<RegistryView>> parseRegistryView(const FlatWords& words,
                                                        uint64_t generation);

}  // namespace hms::ffi::detail
