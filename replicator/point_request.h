// Points on demand (`blockrep-agent point --state-dir DIR [--label TEXT]`): how the command asks a
// running agent for a point and learns when the staging has it.
//
// The command writes <state-dir>/point-request ("request ID", "label TEXT") and sends SIGUSR1;
// the agent takes the file with the signal, ends its current point (the SIGUSR1 path) with the
// label in its seals, and once the staging acknowledges it writes <state-dir>/point-reply
// ("request ID", "point N", "consistent 0|1", "time_ns T", "label TEXT"). The command holds
// <state-dir>/point.lock meanwhile, so two commands never overwrite each other's request. A
// plain SIGUSR1 (no file) takes an unlabelled point, as before.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "blockrep/base/status.h"

namespace blockrep::agent {

struct PointRequest {
  std::string id;     // the command's, echoed in the reply: 16 hex digits
  std::string label;  // empty: none
};

struct PointReply {
  std::string request;
  uint64_t point_id = 0;
  bool consistent = false;
  uint64_t time_ns = 0;
  std::string label;
  std::string error;  // the agent refused the request (then no point fields)
};

// Agent side: the request the command left, removed from the directory; nullopt when there is
// none (a plain SIGUSR1). A malformed file is an error naming it (and is removed too).
Result<std::optional<PointRequest>> TakePointRequest(const std::string& state_dir);
Status WritePointReply(const std::string& state_dir, const PointReply& reply);

// Command side. Waits for the reply to `request` from the agent `pid` until `timeout_ns`;
// fails when the agent exits first or the time is up.
Status SendPointRequest(const std::string& state_dir, const PointRequest& request, pid_t pid);
Result<PointReply> AwaitPointReply(const std::string& state_dir, const std::string& request, pid_t pid,
                                   uint64_t timeout_ns);

}  // namespace blockrep::agent
