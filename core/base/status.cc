#include "blockrep/base/status.h"

#include <cstdio>
#include <cstdlib>

#include <cerrno>
#include <cstring>

#include "blockrep/base/check.h"

namespace blockrep {

void CheckFailed(const char* condition, const std::string& message, const char* file, int line) {
  std::fprintf(stderr, "blockrep: internal error at %s:%d: check failed: %s%s%s\n", file, line, condition,
               message.empty() ? "" : ": ", message.c_str());
  std::fflush(stderr);
  std::abort();
}

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kNotFound: return "not found";
    case Code::kPermissionDenied: return "permission denied";
    case Code::kUnauthenticated: return "unauthenticated";
    case Code::kUnavailable: return "unavailable";
    case Code::kNoSpace: return "no space";
    case Code::kDataLoss: return "data loss";
    case Code::kProtocol: return "protocol error";
    case Code::kIoError: return "I/O error";
    case Code::kInternal: return "internal error";
    case Code::kConflict: return "conflict";
  }
  return "unknown";
}

bool Retryable(Code code) {
  switch (code) {
    case Code::kUnavailable:
    case Code::kNoSpace:
    case Code::kProtocol:  // a damaged or cut connection: a new one may carry the data intact
    case Code::kIoError:
    case Code::kNotFound:
      return true;
    case Code::kOk:
    case Code::kInvalidArgument:
    case Code::kPermissionDenied:
    case Code::kUnauthenticated:
    case Code::kDataLoss:
    case Code::kInternal:
    case Code::kConflict:  // someone else wrote first: the caller must look again, not repeat
      return false;
  }
  return false;
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return message_;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, std::string(context) + ": " + message_);
}

Status InvalidArgument(std::string m) { return Status(Code::kInvalidArgument, std::move(m)); }
Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
Status PermissionDenied(std::string m) { return Status(Code::kPermissionDenied, std::move(m)); }
Status Unauthenticated(std::string m) { return Status(Code::kUnauthenticated, std::move(m)); }
Status Unavailable(std::string m) { return Status(Code::kUnavailable, std::move(m)); }
Status NoSpace(std::string m) { return Status(Code::kNoSpace, std::move(m)); }
Status DataLoss(std::string m) { return Status(Code::kDataLoss, std::move(m)); }
Status ProtocolError(std::string m) { return Status(Code::kProtocol, std::move(m)); }
Status IoError(std::string m) { return Status(Code::kIoError, std::move(m)); }
Status Internal(std::string m) { return Status(Code::kInternal, std::move(m)); }
Status Conflict(std::string m) { return Status(Code::kConflict, std::move(m)); }

Status ErrnoStatus(std::string_view what, int err) {
  std::string m = std::string(what) + ": " + std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT: return NoSpace(std::move(m));
    case ENOENT: return NotFound(std::move(m));
    case EACCES:
    case EPERM: return PermissionDenied(std::move(m));
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EAGAIN: return Unavailable(std::move(m));
    default: return IoError(std::move(m));
  }
}

}  // namespace blockrep
