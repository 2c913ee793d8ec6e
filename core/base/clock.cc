#include "blockrep/base/clock.h"

#include <time.h>

#include <atomic>

namespace blockrep {
namespace {

uint64_t Read(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

SystemClock g_system_clock;
std::atomic<Clock*> g_process_clock{&g_system_clock};

}  // namespace

uint64_t Clock::MonotonicNs() { return Read(CLOCK_MONOTONIC); }

void Clock::SleepNs(uint64_t ns) {
  timespec ts{static_cast<time_t>(ns / 1000000000ull), static_cast<long>(ns % 1000000000ull)};
  nanosleep(&ts, nullptr);  // EINTR: a signal cuts the wait short, which the callers want
}

uint64_t SystemClock::NowUtcNs() { return Read(CLOCK_REALTIME); }

Clock* ProcessClock() { return g_process_clock.load(std::memory_order_acquire); }

void SetProcessClock(Clock* clock) {
  g_process_clock.store(clock != nullptr ? clock : &g_system_clock, std::memory_order_release);
}

}  // namespace blockrep
