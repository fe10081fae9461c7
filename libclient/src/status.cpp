#include "hms/ffi/status.hpp"

#include <array>

namespace hms::ffi {

std::string_view statusCodeName(StatusCode code) noexcept {
  static constexpr std::array<std::string_view, 17> kNames = {"OK",
                                                              "CANCELLED",
                                                              "UNKNOWN",
                                                              "INVALID_ARGUMENT",
                                                              "DEADLINE_EXCEEDED",
                                                              "NOT_FOUND",
                                                              "ALREADY_EXISTS",
                                                              "PERMISSION_DENIED",
                                                              "RESOURCE_EXHAUSTED",
                                                              "FAILED_PRECONDITION",
                                                              "ABORTED",
                                                              "OUT_OF_RANGE",
                                                              "UNIMPLEMENTED",
                                                              "INTERNAL",
                                                              "UNAVAILABLE",
                                                              "DATA_LOSS",
                                                              "UNAUTHENTICATED"};
  const auto i = static_cast<uint32_t>(code);
  return i < kNames.size() ? kNames[i] : std::string_view("UNKNOWN");
}

StatusCode statusCodeFromWire(uint32_t value) noexcept {
  return value <= 16 ? static_cast<StatusCode>(value) : StatusCode::kUnknown;
}

std::string Status::toString() const {
  std::string s(statusCodeName(code()));
  if (!message().empty()) s += ": " + message();
  if (!source().empty()) s += " [source: " + source() + "]";
  for (const auto& [k, v] : details()) s += " [" + k + "=" + v + "]";
  return s;
}

Error::Error(Status status) : std::runtime_error(status.toString()), status_(std::move(status)) {}

}  // namespace hms::ffi
