// Recovery-point chains on a real store: retention with an injected clock, expiry, compaction, and
// restores through the recovery library. Points are sealed with a real data key and appended to
// packs the way the staging appends them (records, each followed by its fingerprints), then
// committed with the store's own CommitPoint; retention runs through EnforceRetention, the
// function the staging calls after each point.
#include "blockrep/store/retention.h"
#include "chain_fixture.h"

namespace blockrep {
namespace {

using namespace blockrep::chain_fixture;

// Monday 2026-01-05 00:00:00 UTC.
constexpr uint64_t kT0 = 1767571200ull * kSecondNs;

store::PointInfo At(uint64_t time_ns, bool consistent, std::string label = {}) {
  store::PointInfo p;
  p.time_ns = time_ns;
  p.flags = (consistent ? store::kPointConsistent : 0) | (label.empty() ? 0 : store::kPointLabelled);
  p.label = std::move(label);
  return p;
}

// The policy grammar: tiers, all, none; mistakes name the fix.
TEST(RetentionPolicyTest, Parses) {
  auto p = RetentionPolicy::Parse(kDefaultRetention, 3);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->tiers.size(), 3u);
  EXPECT_EQ(p->tiers[0].every_ns, 10 * kMinuteNs);
  EXPECT_EQ(p->tiers[2].keep_ns, 7 * kDayNs);
  EXPECT_EQ(p->ToString(), "10m:1h,1h:1d,1d:7d + keep-last 3 + labelled points 14d");
  EXPECT_TRUE(RetentionPolicy::Parse("all", 0)->keep_all);
  EXPECT_TRUE(RetentionPolicy::Parse("none", 0)->tiers.empty());
  for (const char* bad : {"10m", "10m:1h,", "1h:10m", "x:1h", "10m:1y"}) {
    auto r = RetentionPolicy::Parse(bad, 0);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("--retention"), std::string::npos) << r.status().message();
  }
}

// Each tier keeps the newest consistent point of each slot, the newest point of the slot when
// none is consistent; the newest point of the chain always stays.
TEST(RetentionPolicyTest, NewestConsistentPerSlot) {
  std::vector<store::PointInfo> pts = {At(kT0 + 1 * kMinuteNs, true), At(kT0 + 5 * kMinuteNs, false),
                                       At(kT0 + 61 * kMinuteNs, false), At(kT0 + 62 * kMinuteNs, false),
                                       At(kT0 + 90 * kMinuteNs, true), At(kT0 + 91 * kMinuteNs, false)};
  for (size_t i = 0; i < pts.size(); ++i) pts[i].id = i + 1;
  RetentionPolicy hourly = Must(RetentionPolicy::Parse("1h:1d", 0));
  // Hour 0: point 1 (consistent) beats the newer 2. Hour 1: 5 is the newest consistent; 6 stays
  // as the newest of the chain.
  EXPECT_EQ(PointsToExpire(pts, hourly, kT0 + 2 * kHourNs), (std::vector<uint64_t>{2, 3, 4}));
  // Past the tier's reach only the newest point is left.
  EXPECT_EQ(PointsToExpire(pts, hourly, kT0 + 3 * kDayNs), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  RetentionPolicy keep2 = Must(RetentionPolicy::Parse("none", 2));
  EXPECT_EQ(PointsToExpire(pts, keep2, kT0), (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_TRUE(PointsToExpire(pts, Must(RetentionPolicy::Parse("all", 0)), kT0 + 100 * kDayNs).empty());
}

// --min-retention: no point younger than it expires, whatever the tiers, keep-last or the points'
// consistent flags say; once older, the tiers decide again.
// Labelled points are kept for the longest tier plus --keep-labelled, the newest 256 of them;
// "forever" has no age limit; 0 keeps them as long as the longest tier.
TEST(RetentionPolicyTest, LabelledPointsAreKeptBeyondTheTiers) {
  RetentionPolicy none = Must(RetentionPolicy::Parse("none", 0));
  std::vector<store::PointInfo> pts = {At(kT0, false, "a"), At(kT0 + kMinuteNs, false), At(kT0 + 2 * kMinuteNs, true)};
  for (size_t i = 0; i < pts.size(); ++i) pts[i].id = i + 1;
  EXPECT_EQ(PointsToExpire(pts, none, kT0 + 7 * kDayNs - 1), (std::vector<uint64_t>{2}));
  EXPECT_EQ(PointsToExpire(pts, none, kT0 + 7 * kDayNs), (std::vector<uint64_t>{1, 2}));
  none.keep_labelled_ns = RetentionPolicy::kKeepForever;
  EXPECT_EQ(none.ToString(), "none + labelled points forever");
  EXPECT_EQ(PointsToExpire(pts, none, kT0 + 3650 * kDayNs), (std::vector<uint64_t>{2}));
  none.keep_labelled_ns = 0;
  EXPECT_EQ(PointsToExpire(pts, none, kT0 + kMinuteNs * 3), (std::vector<uint64_t>{1, 2}));
  // The newest 256 labelled points are kept; the 257th from the end goes though it is young.
  std::vector<store::PointInfo> many;
  for (uint64_t i = 1; i <= 300; ++i) {
    many.push_back(At(kT0 + i * kSecondNs, true, "l" + std::to_string(i)));
    many.back().id = i;
  }
  RetentionPolicy def = Must(RetentionPolicy::Parse("none", 0));
  std::vector<uint64_t> gone = PointsToExpire(many, def, kT0 + kHourNs);
  ASSERT_EQ(gone.size(), 300u - RetentionPolicy::kLabelledPointsKept);
  EXPECT_EQ(gone.back(), 300u - RetentionPolicy::kLabelledPointsKept);
}

TEST(RetentionPolicyTest, MinRetentionKeepsEveryYoungPoint) {
  std::vector<store::PointInfo> pts = {At(kT0 + 1 * kMinuteNs, false), At(kT0 + 2 * kMinuteNs, false),
                                       At(kT0 + 3 * kMinuteNs, true), At(kT0 + 4 * kMinuteNs, true)};
  for (size_t i = 0; i < pts.size(); ++i) pts[i].id = i + 1;
  RetentionPolicy none = Must(RetentionPolicy::Parse("none", 0));
  none.min_retention_ns = kDayNs;
  EXPECT_EQ(none.ToString(), "none + min-retention 1d + labelled points 7d");
  EXPECT_TRUE(PointsToExpire(pts, none, kT0 + 23 * kHourNs).empty());
  // Point 1 is a day old at kT0 + 1 day + 1 minute; 2 and 3 are not yet.
  EXPECT_EQ(PointsToExpire(pts, none, kT0 + kDayNs + kMinuteNs), (std::vector<uint64_t>{1}));
  RetentionPolicy hourly = Must(RetentionPolicy::Parse("1h:1d", 0));
  hourly.min_retention_ns = kDayNs;
  EXPECT_TRUE(PointsToExpire(pts, hourly, kT0 + 2 * kHourNs).empty());
  hourly.min_retention_ns = 0;
  EXPECT_EQ(PointsToExpire(pts, hourly, kT0 + 2 * kHourNs), (std::vector<uint64_t>{1, 2, 3}));
}

// Nine simulated days of a point every 10 minutes under the default policy: the retained set is
// exactly what the policy says, compaction reclaims the space only expired points used, and every
// retained point restores to the image the test recorded for it.
TEST_F(ChainTest, NineDaysOfDefaultRetention) {
  Chain chain(root_);
  RetentionPolicy policy = Must(RetentionPolicy::Parse(kDefaultRetention, 0));
  ManualClock clock(kT0);
  uint64_t waiting = 0;
  int compactions = 0;
  const uint64_t kPoints = 9 * 144;
  for (uint64_t k = 0; k < kPoints; ++k) {
    uint64_t t = kT0 + k * 10 * kMinuteNs;
    // The :50 points are not consistent (say, a freeze refused), so hourly and daily tiers
    // prefer the :40 ones.
    bool consistent = (t / (10 * kMinuteNs)) % 6 != 5;
    chain.AddPoint(t, consistent, chain.RandomWrites());
    if (HasFatalFailure()) return;
    clock.Set(t + kSecondNs);  // retention runs right after the commit, as in the staging
    RetentionRun run = EnforceRetention(chain.store(), policy, clock.NowUtcNs(), {}, false, &waiting);
    ASSERT_TRUE(run.status.ok()) << run.status.message();
    compactions += run.compacted;
  }
  // Now: day 8 (Tuesday 2026-01-13) 23:50:01. The policy keeps:
  //   10m:1h  the six points younger than 1 h: day 8 23:00, 23:10, 23:20, 23:30, 23:40, 23:50;
  //   1h:24h  per hour of day 8 the newest consistent point: hh:40 for hh = 00..23;
  //   1d:7d   per day younger than 7 d (days 2..8) the newest consistent point: 23:40.
  std::set<uint64_t> want_times;
  for (uint64_t m : {0, 10, 20, 30, 40, 50}) want_times.insert(kT0 + 8 * kDayNs + 23 * kHourNs + m * kMinuteNs);
  for (uint64_t h = 0; h < 24; ++h) want_times.insert(kT0 + 8 * kDayNs + h * kHourNs + 40 * kMinuteNs);
  for (uint64_t d = 2; d <= 8; ++d) want_times.insert(kT0 + d * kDayNs + 23 * kHourNs + 40 * kMinuteNs);
  std::set<uint64_t> got_times;
  for (const store::PointInfo& p : chain.store().manifest().points) got_times.insert(p.time_ns);
  EXPECT_EQ(want_times.size(), 35u);
  EXPECT_EQ(got_times, want_times);
  EXPECT_GT(compactions, 10);

  // Space: what only expired points used must (mostly) be gone once compaction has finished, as
  // it does at every staging start.
  RetentionRun final_run = EnforceRetention(chain.store(), policy, clock.NowUtcNs(), {}, true, &waiting);
  ASSERT_TRUE(final_run.status.ok()) << final_run.status.message();
  uint64_t written = chain.pack_bytes_written();
  uint64_t live = chain.LiveRecordBytes();
  uint64_t on_disk = chain.PackBytesOnDisk();
  uint64_t only_expired = written - live;
  uint64_t shrink = written - on_disk;
  std::printf("packs written %llu bytes, live %llu, only expired points used %llu; on disk now %llu: "
              "shrank by %.1f %% of what only expired points used (%d compactions during the run)\n",
              static_cast<unsigned long long>(written), static_cast<unsigned long long>(live),
              static_cast<unsigned long long>(only_expired), static_cast<unsigned long long>(on_disk),
              100.0 * static_cast<double>(shrink) / static_cast<double>(only_expired), compactions);
  EXPECT_GE(static_cast<double>(shrink), 0.8 * static_cast<double>(only_expired));

  for (const store::PointInfo& p : chain.store().manifest().points)
    EXPECT_EQ(chain.RestoreHash(p.id), chain.expected_hash(p.id)) << "point " << p.id;
}

// A point an operator labelled ("before-upgrade", SIGUSR1 between two interval points) outlives
// the tiers: after nine simulated days of a point every 10 minutes under the default policy it is
// still retained, and restores by its label to what it held; it goes once it is older than the
// longest tier plus --keep-labelled (7 d + 7 d). Unlabelled, the same point goes within the hour.
TEST_F(ChainTest, LabelledPointOutlivesTheTiers) {
  Chain chain(root_);
  RetentionPolicy policy = Must(RetentionPolicy::Parse(kDefaultRetention, 0));
  ASSERT_EQ(policy.LabelledKeepNs(), 14 * kDayNs);
  ManualClock clock(kT0);
  uint64_t waiting = 0, labelled_id = 0, unlabelled_id = 0;
  auto run_until = [&](uint64_t end_ns, uint64_t every_ns, uint64_t* t) {
    for (; *t < end_ns; *t += every_ns) {
      chain.AddPoint(*t, true, chain.RandomWrites());
      if (*t == kT0 + 10 * kHourNs + 30 * kMinuteNs) {
        // Points on demand between the :30 and :40 interval points: the tiers keep :40 for their
        // slots, so neither of these is any tier's choice.
        chain.AddPoint(*t + 3 * kMinuteNs, true, chain.RandomWrites(), "before-upgrade");
        labelled_id = chain.store().manifest().last_point_id();
        chain.AddPoint(*t + 4 * kMinuteNs, true, chain.RandomWrites());
        unlabelled_id = chain.store().manifest().last_point_id();
      }
      if (testing::Test::HasFatalFailure()) return;
      clock.Set(*t + 5 * kMinuteNs);
      RetentionRun run = EnforceRetention(chain.store(), policy, clock.NowUtcNs(), {}, false, &waiting);
      ASSERT_TRUE(run.status.ok()) << run.status.message();
    }
  };
  auto retained = [&](uint64_t id) {
    for (const store::PointInfo& p : chain.store().manifest().points)
      if (p.id == id) return true;
    return false;
  };
  uint64_t t = kT0;
  run_until(kT0 + 9 * kDayNs, 10 * kMinuteNs, &t);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_NE(labelled_id, 0u);
  EXPECT_TRUE(retained(labelled_id)) << "the labelled point did not survive nine days";
  EXPECT_FALSE(retained(unlabelled_id));
  EXPECT_EQ(chain.RestoreHash(labelled_id, "before-upgrade"), chain.expected_hash(labelled_id));
  // Hourly from here (the tiers' outcome is the same; the test is faster) to past 14 days.
  run_until(kT0 + 14 * kDayNs + 10 * kHourNs, kHourNs, &t);
  EXPECT_TRUE(retained(labelled_id)) << "expired before 14 days";
  run_until(kT0 + 14 * kDayNs + 12 * kHourNs, kHourNs, &t);
  EXPECT_FALSE(retained(labelled_id)) << "kept past 7 d + --keep-labelled 7 d";
}

// A manifest that puts a label on another point than the agent sealed it on is refused at
// restore: the label is under the seal's MAC, so a restore by label cannot be steered.
TEST_F(ChainTest, RelabelledManifestIsRefused) {
  Chain chain(root_);
  chain.AddPoint(kT0, true, {{0, kVolumeBytes, false}}, "good");
  chain.AddPoint(kT0 + kMinuteNs, true, chain.RandomWrites());
  ASSERT_FALSE(HasFatalFailure());
  store::Manifest m = chain.store().manifest();
  std::swap(m.points[0].label, m.points[1].label);
  std::swap(m.points[0].flags, m.points[1].flags);
  ASSERT_TRUE(WriteFileAtomic(chain.store().dir() + "/MANIFEST", m.Encode()).ok());
  recovery::RestoreRequest rq = chain.RestoreRequestFor(0);
  rq.point_spec = "good";
  auto sum = recovery::Restore(rq);
  ASSERT_FALSE(sum.ok());
  EXPECT_EQ(sum.status().code(), Code::kDataLoss);
  EXPECT_NE(sum.status().message().find("label 'good' but the agent sealed"), std::string::npos) << sum.status().message();
}

// Expiring the middle point of three leaves both neighbours restoring identical, and compaction
// then drops the records only the middle one used.
TEST_F(ChainTest, ExpireMiddleOfThree) {
  Chain chain(root_);
  chain.AddPoint(kT0, true, {{0, kVolumeBytes, false}});
  chain.AddPoint(kT0 + kMinuteNs, true, {{0, 65536, false}, {1 << 20, 32768, false}});
  chain.AddPoint(kT0 + 2 * kMinuteNs, true, {{0, 65536, false}, {512 << 10, 4096, true}});
  ASSERT_FALSE(HasFatalFailure());
  uint64_t before = chain.PackBytesOnDisk();
  ASSERT_TRUE(chain.store().ExpirePoints({2}).ok());
  EXPECT_EQ(chain.store().manifest().points.size(), 2u);
  EXPECT_FALSE(chain.store().ExpirePoints({3}).ok()) << "the newest point must never expire";
  store::ServerStore::CompactionOptions all;
  all.garbage_share_min = 0.0;
  auto stats = chain.store().Compact(all);
  ASSERT_TRUE(stats.ok()) << stats.status().message();
  // Point 2's pack held a 64 KiB record point 3 overwrote (garbage now: point 1 has its own
  // record there) and a 32 KiB one point 3 still uses; point 3's pack holds a zero record that
  // nothing indexes. Those two packs are rewritten; point 1's has no garbage and stays.
  EXPECT_EQ(stats->packs_rewritten, 2u);
  EXPECT_FALSE(PathExists(chain.store().PackPath(2)));
  EXPECT_TRUE(PathExists(chain.store().PackPath(1)));
  EXPECT_LT(chain.PackBytesOnDisk(), before - 65536);
  for (uint64_t id : {1, 3}) EXPECT_EQ(chain.RestoreHash(id), chain.expected_hash(id)) << "point " << id;
  EXPECT_NE(chain.RestoreHash(1), chain.RestoreHash(3));
}

// Short sessions leave a small pack each; asked to merge them (a server at its pack quota), once
// there are eight or more unpinned, compaction copies them into one though none holds garbage,
// and every point still restores identical. Not asked, it leaves them.
TEST_F(ChainTest, SmallPacksAreMerged) {
  Chain chain(root_);
  for (int i = 0; i < 10; ++i) chain.AddPoint(kT0 + static_cast<uint64_t>(i) * kMinuteNs, true, {{static_cast<uint64_t>(i) * 65536, 4096, false}});
  ASSERT_FALSE(HasFatalFailure());
  store::ServerStore::CompactionOptions options;  // defaults: nothing is garbage here
  options.pinned_packs = {10};                     // a live session's pack stays where it is
  // Point 1's pack is mostly unindexed zero records (garbage): the first pass takes that one.
  ASSERT_TRUE(chain.store().Compact(options).ok());
  auto untouched = chain.store().Compact(options);
  ASSERT_TRUE(untouched.ok());
  EXPECT_EQ(untouched->packs_rewritten + untouched->packs_deleted, 0u);
  size_t before = Must(ListDir(chain.store().dir() + "/packs")).size();
  EXPECT_EQ(before, 10u);
  options.merge_small_packs = true;
  auto stats = chain.store().Compact(options);
  ASSERT_TRUE(stats.ok()) << stats.status().message();
  EXPECT_EQ(stats->packs_rewritten, 9u);
  EXPECT_EQ(Must(ListDir(chain.store().dir() + "/packs")).size(), 2u);  // the merged one and the pinned one
  EXPECT_TRUE(PathExists(chain.store().PackPath(10)));
  for (const store::PointInfo& p : chain.store().manifest().points)
    EXPECT_EQ(chain.RestoreHash(p.id), chain.expected_hash(p.id)) << "point " << p.id;
  // Two packs now: a second pass finds too few small ones and changes nothing.
  auto again = chain.store().Compact(options);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->packs_rewritten + again->packs_deleted, 0u);
}

// A reader that opened every pack of a point before a compaction deleted some of them reads the
// whole point afterwards, every record authentic (what a restore racing the staging relies on).
TEST_F(ChainTest, OpenPacksOutliveCompaction) {
  Chain chain(root_);
  chain.AddPoint(kT0, true, {{0, kVolumeBytes, false}});
  chain.AddPoint(kT0 + kMinuteNs, true, {{0, 65536, false}, {1 << 20, 32768, false}});
  chain.AddPoint(kT0 + 2 * kMinuteNs, true, {{0, 65536, false}});
  ASSERT_FALSE(HasFatalFailure());
  store::PointIndex idx = Must(chain.store().LoadIndex(chain.store().manifest().points.back()));
  store::PackReader reader(chain.store().dir());
  ASSERT_TRUE(Must(reader.OpenAll(idx)));
  ASSERT_TRUE(chain.store().ExpirePoints({2}).ok());
  store::ServerStore::CompactionOptions all;
  all.garbage_share_min = 0.0;
  auto stats = chain.store().Compact(all);
  ASSERT_TRUE(stats.ok()) << stats.status().message();
  ASSERT_FALSE(PathExists(chain.store().PackPath(2))) << "the test needs a pack deleted under the reader";
  RecordOpener opener(Must(LoadDataKey(chain.key_file())), kServer);
  Bytes stored, plain;
  for (const store::IndexEntry& e : idx.entries) {
    ASSERT_TRUE(reader.Read(e, &stored).ok()) << "pack " << e.pack;
    RecordHeader h;
    ASSERT_TRUE(opener.Open(stored, &h, &plain).ok()) << "pack " << e.pack;
  }
  EXPECT_EQ(chain.RestoreHash(3), chain.expected_hash(3));
}

// Compaction copies records byte for byte: a record that fails its checksum stops it before
// anything changes (the damage stays where it is, reported, never copied on as good).
TEST_F(ChainTest, CompactionStopsAtDamage) {
  Chain chain(root_);
  chain.AddPoint(kT0, true, {{0, kVolumeBytes, false}});
  chain.AddPoint(kT0 + kMinuteNs, true, {{0, 65536, false}, {1 << 20, 32768, false}});
  chain.AddPoint(kT0 + 2 * kMinuteNs, true, {{0, 65536, false}});
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(chain.store().ExpirePoints({2}).ok());
  // Pack 2 now holds garbage (its first record) and a live one, the 32 KiB at 1 MiB that point 3
  // still uses: damage a byte of that one.
  const uint64_t live_record_at = store::kPackHeaderSize + 65536 + kRecordHeaderSize + kTagSize + 16 * 8;
  std::string pack2 = chain.store().PackPath(2);
  UniqueFd fd(open(pack2.c_str(), O_RDWR));
  ASSERT_TRUE(fd.valid());
  uint8_t b = 0;
  ASSERT_EQ(pread(fd.get(), &b, 1, live_record_at + 1000), 1);
  b ^= 1;
  ASSERT_EQ(pwrite(fd.get(), &b, 1, live_record_at + 1000), 1);
  store::Manifest before = chain.store().manifest();
  store::ServerStore::CompactionOptions all;
  all.garbage_share_min = 0.0;
  auto stats = chain.store().Compact(all);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), Code::kDataLoss) << stats.status().message();
  EXPECT_NE(stats.status().message().find("nothing changed"), std::string::npos) << stats.status().message();
  EXPECT_EQ(chain.store().manifest().Encode(), before.Encode());
  auto restored = recovery::Restore(chain.RestoreRequestFor(3));
  ASSERT_FALSE(restored.ok());
  EXPECT_NE(restored.status().message().find("fails its checksum"), std::string::npos) << restored.status().message();
}

}  // namespace
}  // namespace blockrep
