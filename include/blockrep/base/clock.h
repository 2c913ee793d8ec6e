// Time, read through one seam. Every deadline, rate, backoff and point time of the agent and the
// staging reads the process clock (MonotonicNs(), NowUtcNs() and SleepNs() in blockrep/base/cli.h
// go through it), and the staging's retention reads the Clock it is handed. The process clock is
// the system's; the deterministic simulation (tests/sim/) replaces it with one that moves only
// when its scheduler says so, and whose SleepNs runs the rest of the simulated world meanwhile.
#pragma once

#include <cstdint>

namespace blockrep {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual uint64_t NowUtcNs() = 0;
  // Monotonic time for deadlines and rates: the system's CLOCK_MONOTONIC unless overridden.
  virtual uint64_t MonotonicNs();
  // Waits `ns` (the system's nanosleep unless overridden; a signal may cut it short).
  virtual void SleepNs(uint64_t ns);
};

class SystemClock final : public Clock {
 public:
  uint64_t NowUtcNs() override;
};

// A clock that moves only when told to.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(uint64_t now_ns) : now_ns_(now_ns) {}
  uint64_t NowUtcNs() override { return now_ns_; }
  void Set(uint64_t now_ns) { now_ns_ = now_ns; }
  void Advance(uint64_t delta_ns) { now_ns_ += delta_ns; }

 private:
  uint64_t now_ns_;
};

// The clock every part of the process reads: a SystemClock unless replaced.
Clock* ProcessClock();
// Replaces the process clock (the simulation does, before any thread starts); null restores the
// system's. `clock` must outlive its use.
void SetProcessClock(Clock* clock);

}  // namespace blockrep
