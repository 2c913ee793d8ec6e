// A TCP connection to a staging, as the agent and the recovery tool open one: connect bounded by
// a 10 s send timeout, Nagle off (frames are small and latency matters: ACKs, PINGs).
#pragma once

#include <string>

#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"
#include "blockrep/base/status.h"

namespace blockrep {

// `name`: the staging as the operator gave it (--staging), for the error line.
Result<UniqueFd> ConnectToStaging(const HostPort& staging, const std::string& name);

}  // namespace blockrep
