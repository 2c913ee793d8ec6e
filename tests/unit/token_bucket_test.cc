// TokenBucket (replicator/token_bucket.h): the agent's bandwidth limit, on explicit times.
#include <gtest/gtest.h>

#include "token_bucket.h"

namespace blockrep::agent {
namespace {

constexpr uint64_t kMs = 1000000;

// Unlimited never waits, whatever is reserved.
TEST(TokenBucket, UnlimitedNeverWaits) {
  TokenBucket b;
  b.Reserve(1 << 30);
  EXPECT_EQ(b.WaitNs(1), 0u);
}

// At 1 MB/s a 64 KiB read reserved from an empty bucket waits ~65.5 ms (+1 ms), then may go.
TEST(TokenBucket, ReservationIsPaidOffAtTheRate) {
  TokenBucket b;
  b.SetRate(1000000);
  EXPECT_GT(b.WaitNs(1000 * kMs), 0u) << "a new rate starts empty";
  b.Reserve(65536);
  uint64_t wait = b.WaitNs(1000 * kMs);
  EXPECT_NEAR(static_cast<double>(wait), 65.536 * kMs + 1 * kMs, 0.01 * kMs);
  EXPECT_GT(b.WaitNs(1000 * kMs + 60 * kMs), 0u);
  EXPECT_EQ(b.WaitNs(1000 * kMs + 67 * kMs), 0u);
}

// Idle time builds credit only up to a tenth of a second of the rate (at least 64 KiB).
TEST(TokenBucket, BurstIsBounded) {
  TokenBucket b;
  b.SetRate(10000000);  // 10 MB/s: bursts of 1 MB
  b.WaitNs(1);
  EXPECT_EQ(b.WaitNs(3600000 * kMs), 0u);  // an hour idle
  b.Reserve(999999);
  EXPECT_EQ(b.WaitNs(3600000 * kMs), 0u) << "one byte of the burst left";
  b.Reserve(2);
  EXPECT_GT(b.WaitNs(3600000 * kMs), 0u) << "the hour earned no more than the burst";
}

// Settling refunds what a read did not produce (zeros, compression) and charges what it added.
TEST(TokenBucket, SettleRefundsAndCharges) {
  TokenBucket b;
  b.SetRate(1000000);
  b.WaitNs(1);
  b.Reserve(65536);
  b.Settle(65536, 0);  // nothing produced: back to empty
  EXPECT_EQ(b.WaitNs(1), 1 * kMs);
  b.Reserve(1000);
  b.Settle(1000, 3000);  // 2000 more than reserved: 3000 owed in all
  EXPECT_NEAR(static_cast<double>(b.WaitNs(1)), 3 * kMs + 1 * kMs, 0.01 * kMs);
}

}  // namespace
}  // namespace blockrep::agent
