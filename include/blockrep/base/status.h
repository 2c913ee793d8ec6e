// Status and Result<T>: every fallible call returns one, and callers must look at it.
//
// Codes separate what a caller can retry (kUnavailable, kNoSpace) from what means stored data is
// damaged (kDataLoss) and from operator mistakes (kInvalidArgument, kPermissionDenied). Ignoring an
// error is explicit and greppable: `status.IgnoreError()`.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "blockrep/base/check.h"

namespace blockrep {

enum class Code {
  kOk = 0,
  kInvalidArgument,   // bad flag, bad file content supplied by the operator
  kNotFound,
  kPermissionDenied,  // includes unsafe key-file modes and refused identities
  kUnauthenticated,   // TLS or AEAD authentication failed
  kUnavailable,       // retryable: peer gone, connection refused, try again later
  kNoSpace,           // retryable once space returns
  kDataLoss,          // stored or received data is damaged; never retry blindly
  kProtocol,          // the peer broke the wire protocol
  kIoError,
  kInternal,
  kConflict,          // a conditional write lost: another writer changed the object first
};

const char* CodeName(Code code);

// Whether an operation that failed with `code` may succeed if tried again unchanged (the peer
// comes back, space returns, a damaged connection is replaced). False for what needs an operator
// or means something is broken: bad input, refused identities, failed authentication, damaged
// data, programming errors. The one place that says so: callers do not keep their own lists.
bool Retryable(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

  // Returns a copy with `context` prepended ("context: message").
  Status Annotate(std::string_view context) const;

  // The one sanctioned way to drop an error on the floor.
  void IgnoreError() const {}

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

Status InvalidArgument(std::string message);
Status NotFound(std::string message);
Status PermissionDenied(std::string message);
Status Unauthenticated(std::string message);
Status Unavailable(std::string message);
Status NoSpace(std::string message);
Status DataLoss(std::string message);
Status ProtocolError(std::string message);
Status IoError(std::string message);
Status Internal(std::string message);
Status Conflict(std::string message);
// errno-based error: "what: strerror(err)", with ENOSPC mapped to kNoSpace and
// ECONNREFUSED/ECONNRESET/EPIPE/ETIMEDOUT to kUnavailable.
Status ErrnoStatus(std::string_view what, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  // An error. An OK status without a value is a programming error.
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    BR_CHECK_MSG(!status_.ok(), "Result built from an OK status without a value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  // The value; asking for it when there is none (an error) is a programming error.
  T& value() & { return Checked(); }
  const T& value() const& { return Checked(); }
  T&& value() && { return std::move(Checked()); }
  T* operator->() { return &Checked(); }
  const T* operator->() const { return &Checked(); }
  T& operator*() & { return Checked(); }
  const T& operator*() const& { return Checked(); }

 private:
  T& Checked() {
    BR_CHECK_MSG(value_.has_value(), "value() of a failed Result: " + status_.ToString());
    return *value_;
  }
  const T& Checked() const {
    BR_CHECK_MSG(value_.has_value(), "value() of a failed Result: " + status_.ToString());
    return *value_;
  }

 public:

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace blockrep

#define BR_CONCAT_INNER(a, b) a##b
#define BR_CONCAT(a, b) BR_CONCAT_INNER(a, b)

#define BR_RETURN_IF_ERROR(expr)                   \
  do {                                             \
    ::blockrep::Status br_status_ = (expr);        \
    if (!br_status_.ok()) return br_status_;       \
  } while (0)

#define BR_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)   \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#define BR_ASSIGN_OR_RETURN(lhs, expr) \
  BR_ASSIGN_OR_RETURN_IMPL(BR_CONCAT(br_result_, __LINE__), lhs, expr)
