// The agent's bandwidth limit (--bandwidth-limit, <state-dir>/bandwidth-limit on SIGHUP): a token
// bucket on the wire bytes the agent produces. A read reserves its size before it starts (so a
// bucket in credit lets one read through, not a burst of every read slot) and is settled at what
// it really produced once sealed. The bucket holds at most a tenth of a second of the rate (at
// least 64 KiB), so bursts stay short. Times are passed in: the class has no clock of its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace blockrep::agent {

// <state_dir>/bandwidth-limit (a rate like --bandwidth-limit's), read on SIGHUP: the new rate, or
// nullopt when there is no such file or it is wrong (then one warning line says why).
std::optional<uint64_t> ReadRateFile(const std::string& state_dir);

class TokenBucket {
 public:
  // 0: unlimited. A new rate starts from an empty bucket.
  void SetRate(uint64_t bytes_per_second);
  uint64_t rate() const { return rate_bps_; }
  // Nanoseconds from `now_ns` until another byte may be produced; 0: now (or no limit).
  uint64_t WaitNs(uint64_t now_ns);
  // A read of `bytes` starts: reserved against the bucket.
  void Reserve(uint64_t bytes);
  // The read reserved `reserved` and produced `produced` wire bytes: the difference is refunded
  // (or charged, when sealing made it larger).
  void Settle(uint64_t reserved, uint64_t produced);

 private:
  uint64_t rate_bps_ = 0;
  double tokens_ = 0;  // bytes that may be produced now; negative while paying off a burst
  uint64_t tokens_at_ns_ = 0;
};

}  // namespace blockrep::agent
