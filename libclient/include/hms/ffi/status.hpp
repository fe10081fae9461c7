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

// OK is the common case on the data path, so an OK Status is one null pointer: free to create,
// move and destroy. The code, message, source and details of an error live behind it.
class Status {
 public:
  using Details = std::vector<std::pair<std::string, std::string>>;

  Status() = default;  // OK
  // A status with code kOk is OK whatever else is given.
  Status(StatusCode code, std::string message, std::string source = {}, Details details = {})
      : rep_(code == StatusCode::kOk
                 ? nullptr
                 : new Rep{code, std::move(message), std::move(source), std::move(details)}) {}
  Status(const Status& o) : rep_(o.rep_ ? new Rep(*o.rep_) : nullptr) {}
  Status(Status&& o) noexcept : rep_(std::exchange(o.rep_, nullptr)) {}
  Status& operator=(const Status& o) {
    if (this != &o) *this = Status(o);
    return *this;
  }
  Status& operator=(Status&& o) noexcept {
    std::swap(rep_, o.rep_);
    return *this;
  }
  ~Status() { delete rep_; }

  static Status ok() { return Status(); }

  bool isOk() const noexcept { return rep_ == nullptr; }
  explicit operator bool() const noexcept { return isOk(); }
  StatusCode code() const noexcept { return rep_ ? rep_->code : StatusCode::kOk; }
  const std::string& message() const noexcept { return rep_ ? rep_->message : empty(); }
  // Id of the service that produced the error, or empty when the library itself did.
  const std::string& source() const noexcept { return rep_ ? rep_->source : empty(); }
  const Details& details() const noexcept {
    static const Details kNone;
    return rep_ ? rep_->details : kNone;
  }

  // Both do nothing on an OK status.
  Status& withSource(std::string source) & {
    if (rep_) rep_->source = std::move(source);
    return *this;
  }
  Status& addDetail(std::string key, std::string value) & {
    if (rep_) rep_->details.emplace_back(std::move(key), std::move(value));
    return *this;
  }

  // "DEADLINE_EXCEEDED: call to hms.emr.patient.getPatient ... [source: hms.emr.patient]"
  std::string toString() const;

 private:
  struct Rep {
    StatusCode code;
    std::string message;
    std::string source;
    Details details;
  };
  static const std::string& empty() noexcept {
    static const std::string kEmpty;
    return kEmpty;
  }
  Rep* rep_ = nullptr;  // owned; null when OK
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
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}        // NOLINT(implicit)
  Result(Status status) : v_(std::in_place_index<1>, std::move(status)) {  // NOLINT(implicit)
    if (std::get<1>(v_).isOk()) {
      std::get<1>(v_) =
          Status(StatusCode::kInternal, "Result built from an OK status with no value");
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
