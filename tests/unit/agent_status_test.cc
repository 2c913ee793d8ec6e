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

// Writes outrunning shipping with a backlog over 4 MiB warn once (naming the RPO target), and
// say so once when shipping catches up.
TEST(AgentStatus, ForecastWarnsOnceAndClears) {
  AgentStatus st;
  EXPECT_FALSE(st.UpdateRates(1 * kS, 0, 0, 30 * kS, true));
  st.NoteTake(2 * kS, 100 << 20);  // 100 MiB dirty in a second
  auto warn = st.UpdateRates(2 * kS, 10 << 20, 90 << 20, 30 * kS, true);
  ASSERT_TRUE(warn && !warn->empty());
  EXPECT_NE(warn->find("outrun shipping"), std::string::npos) << *warn;
  EXPECT_NE(warn->find("RPO target of 30 s"), std::string::npos) << *warn;
  st.NoteTake(3 * kS, 1 << 20);
  EXPECT_FALSE(st.UpdateRates(3 * kS, 20 << 20, 80 << 20, 30 * kS, true)) << "warned once";
  int cleared = 0;  // shipping 200 MiB/s, nothing written: caught up, said once
  for (uint64_t t = 4; t < 20; ++t) {
    auto r = st.UpdateRates(t * kS, (20ull + 200 * (t - 3)) << 20, 0, 30 * kS, true);
    if (r) {
      EXPECT_TRUE(r->empty()) << *r;
      ++cleared;
    }
  }
  EXPECT_EQ(cleared, 1);
}

// status.json is due 4 times a second, or at once when forced.
TEST(AgentStatus, DueFourTimesASecond) {
  AgentStatus st;
  st.UpdateRates(10 * kS, 0, 0, 30 * kS, false);
  EXPECT_FALSE(st.Due(10 * kS + kS / 10, false));
  EXPECT_TRUE(st.Due(10 * kS + kS / 10, true));
  EXPECT_TRUE(st.Due(10 * kS + kS / 4, false));
}

}  // namespace
}  // namespace blockrep::agent
