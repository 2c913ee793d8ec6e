// DecidePoint (replicator/point_plan.h): what the next recovery point reads, from the facts alone.
#include <gtest/gtest.h>

#include "point_plan.h"

namespace blockrep::agent {
namespace {

// A tracker in step with a chain at point 7: the common case, an incremental point.
PlanFacts InStep() {
  PlanFacts f;
  f.last_point = 7;
  f.has_tracker = true;
  f.tracker_synced_point = 7;
  return f;
}

// A tracker synced to the chain's last point ships what it tracked.
TEST(PointPlanTest, TrackerInStepIsIncremental) {
  PointPlan p = DecidePoint(InStep());
  EXPECT_EQ(p.mode, PointMode::kIncremental);
  EXPECT_EQ(p.reason, "changes tracked by eBPF since point 7");
}

// The staging kept an interrupted point on the chain's last one: it is continued.
TEST(PointPlanTest, PendingPointOnTheLastIsResumed) {
  PlanFacts f = InStep();
  f.pending_point = 8;
  f.pending_base_point = 7;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kResume);
  f.pending_base_point = 6;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kIncremental) << "a pending point on another base is not resumed";
  f.pending_base_point = 7;
  f.overflowed_volume = "/dev/loop0";
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kRescan) << "tracking had a gap: neither resume nor incremental";
  f.overflowed_volume.clear();
  f.rescan_due = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kRescan) << "an alarm never resumes";
}

// The staging kept an interrupted full point and the agent's checkpoint matches it: it goes on
// from there when the tracker began that point (or there is none), never on a tracker that missed
// writes since (a new pin) or had a gap, and never after an alarm.
TEST(PointPlanTest, InterruptedFullPointResumesFromTheCheckpoint) {
  PlanFacts f;
  f.pending_point = 1;
  f.pending_base_point = 0;
  f.whole_checkpoint = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kResumeFull) << "no tracker: scanning points are never consistent";
  f.has_tracker = true;
  f.tracker_resumed = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kFull) << "a tracker that did not begin the point missed writes";
  f.tracker_sent_pending = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kResumeFull);
  f.overflowed_volume = "/dev/loop0";
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kFull) << "tracking had a gap";
  f.overflowed_volume.clear();
  f.whole_checkpoint = false;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kFull) << "no checkpoint: read everything";
  f.whole_checkpoint = true;
  f.rescan_due = true;
  EXPECT_NE(DecidePoint(f).mode, PointMode::kResumeFull) << "an alarm never resumes";
  f.rescan_due = false;
  f.pending_point = 2;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kFull) << "a kept point that does not follow the chain";
}

// The staging kept an interrupted rescan on the chain's last point, and the agent's checkpoint
// matches it: it goes on from there under the same conditions as a full point, never on another
// base, after a key rotation or an alarm.
TEST(PointPlanTest, InterruptedRescanResumesFromTheCheckpoint) {
  PlanFacts f;
  f.last_point = 4;
  f.pending_point = 5;
  f.pending_base_point = 4;
  f.whole_checkpoint = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kResumeRescan) << "no tracker: every point is a rescan";
  f.has_tracker = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kRescan) << "a tracker that did not begin the rescan missed writes";
  f.tracker_sent_pending = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kResumeRescan);
  f.overflowed_volume = "/dev/loop0";
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kRescan) << "tracking had a gap";
  f.overflowed_volume.clear();
  f.whole_checkpoint = false;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kRescan) << "no checkpoint: read everything again";
  f.whole_checkpoint = true;
  f.pending_base_point = 3;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kRescan) << "a kept point on another base";
  f.pending_base_point = 4;
  f.key_rotated = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kFull) << "after a key rotation, a full point";
  f.key_rotated = false;
  f.rescan_due = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kRescan) << "an alarm never resumes";
}

// No tracker: the first point is full, later ones rescan against the chain.
TEST(PointPlanTest, NoTrackerFullThenRescan) {
  PlanFacts f;
  PointPlan p = DecidePoint(f);
  EXPECT_EQ(p.mode, PointMode::kFull);
  EXPECT_EQ(p.reason, "no change tracker");
  f.last_point = 3;
  p = DecidePoint(f);
  EXPECT_EQ(p.mode, PointMode::kRescan);
  EXPECT_EQ(p.reason, "rescan against point 3 (no change tracker)");
}

// After a key rotation every block differs under the new key: a full point, never a rescan.
TEST(PointPlanTest, KeyRotationIsFull) {
  PlanFacts f = InStep();
  f.key_rotated = true;
  f.chain_key_hex = "00000000000000aa";
  f.our_key_hex = "00000000000000bb";
  PointPlan p = DecidePoint(f);
  EXPECT_EQ(p.mode, PointMode::kFull);
  EXPECT_NE(p.reason.find("sealed under key 00000000000000aa, this point under key 00000000000000bb"), std::string::npos);
}

// A chain that moved on without this tracker (another agent of the server-id) is rescanned.
TEST(PointPlanTest, ChainMovedOnIsRescanned) {
  PlanFacts f = InStep();
  f.last_point = 9;
  PointPlan p = DecidePoint(f);
  EXPECT_EQ(p.mode, PointMode::kRescan);
  EXPECT_NE(p.reason.find("moved on from point 7 to 9"), std::string::npos);
  f.last_point = 8;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kRescan) << "point 8 was not begun by this tracker";
  f.tracker_sent_last_point = true;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kIncremental) << "this tracker began point 8 (acked while we were away)";
}

// The chain's last point is the one this tracker sent last (its acknowledgement came after the
// process died): the tracker adopts it, so its blocks are not read again; in step, nothing to adopt.
TEST(PointPlanTest, PointAckedWhileAwayIsAdopted) {
  PlanFacts f = InStep();
  EXPECT_FALSE(DecidePoint(f).adopt_last_point);
  f.last_point = 8;
  f.tracker_sent_last_point = true;
  PointPlan p = DecidePoint(f);
  EXPECT_EQ(p.mode, PointMode::kIncremental);
  EXPECT_TRUE(p.adopt_last_point);
  EXPECT_EQ(p.reason, "changes tracked by eBPF since point 8 (its acknowledgement came after the last process ended)");
  f.overflowed_volume = "/dev/loop0";
  EXPECT_FALSE(DecidePoint(f).adopt_last_point) << "a gap in tracking: a rescan adopts nothing";
}

// A chain behind the tracker, or a tracker synced to nothing, never gives an incremental point.
TEST(PointPlanTest, ChainBehindOrTrackerUnsynced) {
  PlanFacts f = InStep();
  f.last_point = 5;
  PointPlan p = DecidePoint(f);
  EXPECT_EQ(p.mode, PointMode::kRescan);
  EXPECT_NE(p.reason.find("is behind the tracker (point 7)"), std::string::npos);
  f = InStep();
  f.tracker_synced_point = 0;
  f.tracker_resumed = true;
  p = DecidePoint(f);
  EXPECT_EQ(p.mode, PointMode::kRescan);
  EXPECT_NE(p.reason.find("no point synced since tracking began"), std::string::npos);
  f.last_point = 0;
  EXPECT_EQ(DecidePoint(f).mode, PointMode::kFull) << "an empty chain has nothing to rescan against";
}

}  // namespace
}  // namespace blockrep::agent
