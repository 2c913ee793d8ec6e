// AgentStatus (replicator/agent_status.h): lag, the RPO forecast and status.json, on explicit times.
#include <gtest/gtest.h>

#include "agent_status.h"

namespace blockrep::agent {
namespace {

constexpr uint64_t kS = 1000000000;

// A batch's lag is the age of its oldest write (the previous take) when the ACK passes its last
// record; a batch not wholly queued, or not wholly acknowledged, gives no sample yet.
TEST(AgentStatus, LagIsMeasuredFromThePreviousTakeToTheAck) {
  AgentStatus st;
  st.Restart(1 * kS);
  st.NoteTake(2 * kS, 4096);     // writes since 1 s
  st.NoteAcked(100, 2 * kS + kS / 10);
  AgentStatus::Fields f;
  std::string j = st.Json(f, 2 * kS + kS / 2, "T");
  EXPECT_NE(j.find("\"lag_ms\": 1500"), std::string::npos) << j;  // still open: 1.5 s old
  EXPECT_NE(j.find("\"lag_ms_p50\": 0"), std::string::npos) << "not queued yet, so no sample";
  st.BatchQueued(10);
  st.NoteAcked(9, 3 * kS);
  EXPECT_NE(st.Json(f, 3 * kS, "T").find("\"lag_ms_p50\": 0"), std::string::npos);
  st.NoteAcked(10, 3 * kS);
  j = st.Json(f, 3 * kS, "T");
  EXPECT_NE(j.find("\"lag_ms_p50\": 2000"), std::string::npos) << j;
  EXPECT_NE(j.find("\"lag_ms\": 0"), std::string::npos) << j;
}

AgentStatus::Counters At(uint64_t written, uint64_t acked, uint64_t backlog) {
  AgentStatus::Counters c;
  c.written_bytes_total = written;
  c.acked_bytes_total = acked;
  c.backlog_bytes = backlog;
  return c;
}

// Writes outrunning shipping with a backlog over 4 MiB warn once, with the time until the lag
// passes the RPO target: lag grows by 1 - ship/write a second, so from lag L the target T is
// reached in (T - L) * write / (write - ship) s. Caught up, it says so once.
TEST(AgentStatus, ForecastWarnsOnceAndClears) {
  AgentStatus st;
  EXPECT_FALSE(st.UpdateRates(1 * kS, At(0, 0, 0), 30 * kS, true));
  // 12 MB/s written, 4 MB/s acknowledged, for two seconds; the open batch is 1 s old.
  st.Restart(2 * kS);
  st.NoteTake(2 * kS + kS / 2, 1);
  EXPECT_FALSE(st.UpdateRates(2 * kS, At(12000000, 4000000, 3000000), 30 * kS, true)) << "backlog under 4 MiB";
  auto warn = st.UpdateRates(3 * kS, At(24000000, 8000000, 16000000), 30 * kS, true);
  ASSERT_TRUE(warn && !warn->empty());
  EXPECT_NE(warn->find("writes (12 MB/s) outrun shipping (4 MB/s)"), std::string::npos) << *warn;
  // (30 - 1) * 12 / 8 = 43.5 s
  EXPECT_NE(warn->find("RPO target of 30 s in about 43 s"), std::string::npos) << *warn;
  EXPECT_TRUE(st.behind());
  EXPECT_FALSE(st.UpdateRates(4 * kS, At(36000000, 12000000, 24000000), 30 * kS, true)) << "warned once";
  int cleared = 0;  // shipping 200 MB/s, nothing written, the batch acknowledged: caught up, said once
  st.BatchQueued(1);
  st.NoteAcked(1, 5 * kS);
  for (uint64_t t = 5; t < 20; ++t) {
    auto r = st.UpdateRates(t * kS, At(36000000, 12000000 + 200000000 * (t - 4), 0), 30 * kS, true);
    if (r) {
      EXPECT_TRUE(r->empty()) << *r;
      ++cleared;
    }
  }
  EXPECT_EQ(cleared, 1);
  EXPECT_FALSE(st.behind());
}

// A lag past the target is BACKLOG even when the rates do not show writes outrunning shipping
// (they have stopped, but the backlog is still being shipped).
TEST(AgentStatus, LagPastTheTargetIsBehind) {
  AgentStatus st;
  st.Restart(0);
  st.NoteTake(1 * kS, 4096);
  EXPECT_FALSE(st.UpdateRates(10 * kS, At(0, 0, 100 << 20), 20 * kS, true));
  auto r = st.UpdateRates(21 * kS, At(0, 0, 100 << 20), 20 * kS, true);
  ASSERT_TRUE(r && !r->empty());
  EXPECT_NE(r->find("lag 21 s is past the RPO target of 20 s"), std::string::npos) << *r;
}

// Rates are measured once a second over the last 2 s: a status written in between (a forced
// one) moves no rate, however little time has passed.
TEST(AgentStatus, RatesAreSampledOnceASecond) {
  AgentStatus st;
  for (uint64_t t = 1; t <= 5; ++t) (void)st.UpdateRates(t * kS, At(t * 12000000, 0, 0), 30 * kS, false);
  EXPECT_EQ(st.write_bytes_per_s(), 12000000u);
  (void)st.UpdateRates(5 * kS + 1000, At(5 * 12000000 + (1 << 30), 0, 0), 30 * kS, false);
  EXPECT_EQ(st.write_bytes_per_s(), 12000000u) << "a sample 1 us later must not count";
  (void)st.UpdateRates(6 * kS, At(6 * 12000000, 0, 0), 30 * kS, false);
  EXPECT_EQ(st.write_bytes_per_s(), 12000000u);
}

// status.json is due 4 times a second, or at once when forced.
TEST(AgentStatus, DueFourTimesASecond) {
  AgentStatus st;
  (void)st.UpdateRates(10 * kS, At(0, 0, 0), 30 * kS, false);
  EXPECT_FALSE(st.Due(10 * kS + kS / 10, false));
  EXPECT_TRUE(st.Due(10 * kS + kS / 10, true));
  EXPECT_TRUE(st.Due(10 * kS + kS / 4, false));
}

}  // namespace
}  // namespace blockrep::agent
