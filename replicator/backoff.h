// The agent's wait before reconnecting: exponential, with full jitter in [wait/2, wait], so agents
// cut off together do not return together; it starts over once a session made progress. With
// several stagings it grows once per round over all of them (NextStagingWaitMs between). Seeded:
// tests replay it.
#pragma once

#include <cstdint>
#include <random>

namespace blockrep::agent {

class Backoff {
 public:
  static constexpr uint64_t kFirstMs = 500;
  static constexpr uint64_t kMaxMs = 30000;
  static_assert(kFirstMs >= 2 && kFirstMs <= kMaxMs);

  explicit Backoff(uint64_t seed) : rng_(seed) {}
  // How long to wait now; the next wait doubles, up to kMaxMs.
  uint64_t NextWaitMs() {
    uint64_t wait_ms = wait_ms_ / 2 + rng_() % (wait_ms_ / 2 + 1);
    wait_ms_ = wait_ms_ * 2 < kMaxMs ? wait_ms_ * 2 : kMaxMs;
    return wait_ms;
  }
  void Reset() { wait_ms_ = kFirstMs; }
  // The wait before trying the next of several stagings, while some of them are still untried
  // since the last NextWaitMs: short and jittered, and the exponential wait does not grow.
  static constexpr uint64_t kNextStagingMs = 200;
  uint64_t NextStagingWaitMs() { return kNextStagingMs / 2 + rng_() % (kNextStagingMs / 2 + 1); }

 private:
  std::mt19937_64 rng_;
  uint64_t wait_ms_ = kFirstMs;
};

}  // namespace blockrep::agent
