// ChainMemory (replicator/chain_memory.h): what the agent remembers of its chain, and the alarms,
// point ids and seal links that follow from it.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>

#include "blockrep/base/fs.h"
#include "chain_memory.h"

namespace blockrep::agent {
namespace {

wire::HelloOk Head(uint64_t id, uint64_t time_ns) {
  wire::HelloOk h;
  h.last_point_id = id;
  h.last_time_ns = time_ns;
  return h;
}

// Nothing known: no alarm, ids follow the chain, links name its head.
TEST(ChainMemory, FreshAgentFollowsTheChain) {
  ChainMemory c;
  EXPECT_EQ(c.Check(Head(5, 500)), "");
  EXPECT_EQ(c.NextPointId(5), 6u);
  EXPECT_EQ(c.LinkFor(5).point_id, 5u);
  EXPECT_FALSE(c.LinkFor(5).KnowsMac());
}

// A chain behind the acknowledged point is a rollback; the same id at another time a fork. Either
// alarm sticks, makes the next point a rescan, and ids go on past what was acknowledged.
TEST(ChainMemory, RollbackAndForkAreAlarms) {
  ChainMemory c;
  AckedPoint p{3, 300, {}};
  p.seal_mac.fill(0xab);
  ASSERT_TRUE(c.Acked(p, "", "web1").ok());
  EXPECT_EQ(c.Check(Head(3, 300)), "");
  EXPECT_FALSE(c.rescan_due());
  std::string behind = c.Check(Head(1, 100));
  EXPECT_NE(behind.find("chain ends at point 1"), std::string::npos) << behind;
  EXPECT_NE(behind.find("rolled back"), std::string::npos) << behind;
  EXPECT_TRUE(c.rescan_due());
  EXPECT_EQ(c.NextPointId(1), 4u) << "an acknowledged id is never reused";
  SealLink link = c.LinkFor(1);
  EXPECT_EQ(link.point_id, 3u) << "the link names the lost point this agent saw";
  EXPECT_EQ(link.mac, p.seal_mac);
  ASSERT_TRUE(c.Acked({4, 400, {}}, "", "web1").ok());
  EXPECT_FALSE(c.rescan_due());
  EXPECT_EQ(c.alarm(), behind) << "sticky for the process";
  std::string fork = c.Check(Head(4, 999));
  EXPECT_NE(fork.find("forked"), std::string::npos) << fork;
}

// A pinned tracker knows only an id: no time to tell a fork by, no MAC to link with.
TEST(ChainMemory, TrackerRaisesTheIdOnly) {
  ChainMemory c;
  ASSERT_TRUE(c.Acked({3, 300, {}}, "", "web1").ok());
  c.RaiseTo(2);
  EXPECT_EQ(c.known().id, 3u);
  c.RaiseTo(7);
  EXPECT_EQ(c.known().id, 7u);
  EXPECT_EQ(c.known().time_ns, 0u);
  EXPECT_EQ(c.Check(Head(7, 12345)), "") << "no time known: no fork to tell";
  EXPECT_NE(c.Check(Head(6, 1)), "");
}

// last-point round-trips; another server's file is ignored; a damaged one is an error.
TEST(ChainMemory, StateFileRoundTrip) {
  char tmpl[] = "/tmp/blockrep-chainmem.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  AckedPoint p{9, 900, {}};
  p.seal_mac[31] = 0x42;
  ChainMemory a;
  ASSERT_TRUE(a.Acked(p, dir, "web1").ok());
  ChainMemory b;
  ASSERT_TRUE(b.Load(dir, "web1").ok());
  EXPECT_EQ(b.known().id, 9u);
  EXPECT_EQ(b.known().time_ns, 900u);
  EXPECT_EQ(b.known().seal_mac, p.seal_mac);
  ChainMemory other;
  ASSERT_TRUE(other.Load(dir, "db1").ok());
  EXPECT_EQ(other.known().id, 0u);
  std::string text = "server-id web1\nlast-acked-point 9x\n";
  ASSERT_TRUE(WriteFileAtomic(dir + "/last-point", ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size())).ok());
  ChainMemory damaged;
  Status st = damaged.Load(dir, "web1");
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("is not a number"), std::string::npos) << st.message();
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace blockrep::agent
