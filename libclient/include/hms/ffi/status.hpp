// Status, Result and Error: how every HMS-FFI operation reports failure.
//
// Codes use gRPC's numbering so that users who know gRPC know them. The data-path API returns a
// Result<T> (a value or a non-OK Status) and does not throw; Error is the exception type of the
// convenience layer (Result::valueOrThrow) and what a handler may throw to choose its status code.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace hms::ffi {

enum class StatusCode : uint32_t {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "OK", "DEADLINE_EXCEEDED", ... as gRPC spells them; "CODE_<n>" for a number outside the range.
std::string_view statusCodeName(StatusCode code) noexcept;
// A code read from the wire: values above 16 become kUnknown.
StatusCode statusCodeFromWire(uint32_t value) noexcept;

class Status {
 public:
  using Details = std::vector<std::pair<std::string, std::string>>;

  Status() = default;  // OK
  Status(StatusCode code, std::string message, std::string source = {}, Details details = {})
      : code_(code),
        message_(std::move(message)),
        source_(std::move(source)),
        details_(std::move(details)) {}

  static Status ok() { return Status(); }

  bool isOk() const noexcept { return code_ == StatusCode::kOk; }
  explicit operator bool() const noexcept { return isOk(); }
  StatusCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  // Id of the service that produced the error, or empty when the library itself did.
  const std::string& source() const noexcept { return source_; }
  const Details& details() const noexcept { return details_; }

  Status& withSource(std::string source) & {
    source_ = std::move(source);
    return *this;
  }
  Status& addDetail(std::string key, std::string value) & {
    details_.emplace_back(std::move(key), std::move(value));
    return *this;
  }

  // "DEADLINE_EXCEEDED: call to hms.emr.patient.getPatient ... [source: hms.emr.patient]"
  std::string toString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string source_;
  Details details_;
};

// Thrown by Result::valueOrThrow(); a handler may throw it to answer with a chosen status.
class Error : public std::runtime_error {
 public:
  explicit Error(Status status);
  Error(StatusCode code, std::string message) : Error(Status(code, std::move(message))) {}
  const Status& status() const noexcept { return status_; }

 private:
  Status status_;
};

// A value of type T or the non-OK Status that explains why there is none.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(implicit)
  Result(Status status) : v_(std::in_place_index<1>, std::move(status)) {  // NOLINT(implicit)
    if (std::get<1>(v_).isOk()) {
      std::get<1>(v_) = Status(StatusCode::kInternal, "Result built from an OK status with no value");
    }
  }

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  // The error; an OK status when there is a value.
  Status status() const { return ok() ? Status() : std::get<1>(v_); }

  // Precondition: ok(). Use valueOrThrow() where an exception is wanted instead.
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }

  T& valueOrThrow() & {
    if (!ok()) throw Error(std::get<1>(v_));
    return std::get<0>(v_);
  }
  T valueOrThrow() && {
    if (!ok()) throw Error(std::get<1>(v_));
    return std::get<0>(std::move(v_));
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace hms::ffi
