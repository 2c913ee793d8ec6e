// Programming errors — a broken invariant, or a library call that cannot fail short of the
// library being broken — stop the process at once, in every build type, with one line on stderr
// naming the file, line, condition and what it means:
//
//   BR_CHECK(cond);              // the condition is the message
//   BR_CHECK_MSG(cond, message); // plus what it means (a std::string or C string)
//   BR_UNREACHABLE(message);     // a branch the invariants rule out
//
// Not for anything a peer, a file or an operator can cause: those get a Status (status.h).
#pragma once

#include <string>

namespace blockrep {

[[noreturn]] void CheckFailed(const char* condition, const std::string& message, const char* file, int line);

}  // namespace blockrep

#define BR_CHECK(cond) ((cond) ? static_cast<void>(0) : ::blockrep::CheckFailed(#cond, std::string(), __FILE__, __LINE__))
#define BR_CHECK_MSG(cond, message) \
  ((cond) ? static_cast<void>(0) : ::blockrep::CheckFailed(#cond, (message), __FILE__, __LINE__))
#define BR_UNREACHABLE(message) ::blockrep::CheckFailed("unreachable", (message), __FILE__, __LINE__)
