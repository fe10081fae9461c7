// The registry segment: the broker publishes wire::RegistrySnapshot messages; clients map the
// segment read-only and read the current one without a round trip (layout: shm_layout.hpp).
#pragma once

#include <capnp/message.h>

#include <cstdint>
#include <vector>

#include "hms/ffi/status.hpp"
#include "os.hpp"
#include "shm_layout.hpp"

namespace hms::ffi::detail {

class RegistryWriter {
 public:
  static Result<RegistryWriter> create(uint64_t segmentBytes, uint32_t brokerPid);

  // Publishes a snapshot into the slot readers are not using. RESOURCE_EXHAUSTED if it does not
  // fit (the registry segment size is the broker's --registry-bytes).
  Status publish(capnp::MessageBuilder& snapshot);

  int fd() const noexcept { return fd_.get(); }
  uint64_t segmentBytes() const noexcept { return mapping_.size(); }
  uint64_t generation() const noexcept { return generation_; }

 private:
  UniqueFd fd_;
  Mapping mapping_;
  uint64_t generation_ = 0;
};

class RegistryReader {
 public:
  // Maps the segment read-only and checks its header.
  static Result<RegistryReader> attach(UniqueFd fd, uint64_t segmentBytes);

  // Generation last published; one acquire load.
  uint64_t generation() const noexcept;

  // Copies the current snapshot's words into `out` (a stable copy, consistent by the slot's
  // seqlock) and returns its generation. DATA_LOSS if the segment holds nonsense.
  Result<uint64_t> copySnapshot(std::vector<uint64_t>& out) const;

 private:
  UniqueFd fd_;
  Mapping mapping_;
};

}  // namespace hms::ffi::detail
