// A hostile staging host rewrites the store: it may edit indexes and packs and fix every checksum
// it knows of (it has no data key). Restores and `verify` catch each edit and name the server,
// volume, point and offset it hit. (Record-level: forged ciphertext, a record moved to another
// offset, a record of a later point spliced into an earlier one. Point-level, caught by the
// agent's seal: a record dropped from a point, an extent rolled back to an older record, the seal
// stripped, the point's time edited. The AAD binding of the server-id is covered by
// record_test.cc.)
#include <functional>

#include "chain_fixture.h"
#include "verify.h"

namespace blockrep {
namespace {

using namespace blockrep::chain_fixture;

class TamperTest : public ChainTest {
 protected:
  // Replaces point `id`'s index with `edit` applied and commits it in the manifest, checksums
  // and all, as a staging host with write access to the store could.
  void ForgeIndex(Chain& chain, uint64_t id, const std::function<void(store::PointIndex&)>& edit) {
    std::string manifest_path = chain.store().dir() + "/MANIFEST";
    store::Manifest m = Must(store::Manifest::Decode(Must(ReadFileBytes(manifest_path, store::kMaxManifestBytes))));
    bool found = false;
    for (store::PointInfo& p : m.points) {
      if (p.id != id) continue;
      store::PointIndex idx = Must(chain.store().LoadIndex(p));
      edit(idx);
      Bytes enc = idx.Encode();
      p.index_checksum = Checksum64(enc);
      ASSERT_TRUE(WriteFileAtomic(chain.store().IndexPath(p), enc).ok());
      found = true;
    }
    ASSERT_TRUE(found) << "no point " << id;
    ASSERT_TRUE(WriteFileAtomic(manifest_path, m.Encode()).ok());
  }

  Status RestorePoint(Chain& chain, uint64_t id) { return recovery::Restore(chain.RestoreRequestFor(id)).status(); }

  std::vector<recovery::Damage> VerifyDamage(const std::string& key_file) {
    recovery::VerifyRequest rq{root_, kServer, key_file, {}, {}};
    auto reports = Must(recovery::Verify(rq));
    EXPECT_EQ(reports.size(), 1u);
    return reports.empty() ? std::vector<recovery::Damage>() : reports[0].damage;
  }

  static std::string Where(uint64_t point, uint64_t offset) {
    return "server 'db1' volume 0 point " + std::to_string(point) + " offset " + std::to_string(offset) + ":";
  }
};

// Ciphertext altered and its checksum fixed in the index: the AEAD tag still catches it; verify
// without the key cannot tell (that is what the key is for), with the key it names the extent.
TEST_F(TamperTest, ForgedCiphertextWithFixedChecksum) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  store::IndexEntry victim = Must(chain.store().LoadIndex(chain.store().manifest().points[0])).entries.at(3);
  std::string pack = chain.store().PackPath(victim.pack);
  UniqueFd fd(open(pack.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  Bytes record(victim.record_bytes);
  ASSERT_TRUE(PreadAll(fd.get(), victim.pack_offset, record.data(), record.size()).ok());
  record[kRecordHeaderSize + 100] ^= 0x20;
  ASSERT_EQ(pwrite(fd.get(), record.data(), record.size(), static_cast<off_t>(victim.pack_offset)),
            static_cast<ssize_t>(record.size()));
  ForgeIndex(chain, 1, [&](store::PointIndex& idx) { idx.entries.at(3).checksum = Checksum64(record); });

  Status st = RestorePoint(chain, 1);
  EXPECT_EQ(st.code(), Code::kUnauthenticated);
  EXPECT_NE(st.message().find(Where(1, victim.offset)), std::string::npos) << st.message();
  EXPECT_TRUE(VerifyDamage("").empty());
  auto damage = VerifyDamage(chain.key_file());
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_EQ(damage[0].offset, victim.offset);
  EXPECT_EQ(damage[0].points, std::vector<uint64_t>{1});
  EXPECT_NE(damage[0].problem.find("authentication"), std::string::npos) << damage[0].problem;
}

// Two records swapped between offsets: each is authentic, but its header says where it belongs.
TEST_F(TamperTest, RecordsMovedToOtherOffsets) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  uint64_t a = 0, b = 0;
  ForgeIndex(chain, 1, [&](store::PointIndex& idx) {
    store::IndexEntry& x = idx.entries.at(2);
    store::IndexEntry& y = idx.entries.at(5);
    ASSERT_EQ(x.length, y.length);
    a = x.offset;
    b = y.offset;
    std::swap(x.pack_offset, y.pack_offset);
    std::swap(x.record_bytes, y.record_bytes);
    std::swap(x.checksum, y.checksum);
  });
  Status st = RestorePoint(chain, 1);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find(Where(1, a)), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("belongs at offset " + std::to_string(b)), std::string::npos) << st.message();
  for (const std::string& key : {std::string(), chain.key_file()}) {
    auto damage = VerifyDamage(key);
    ASSERT_EQ(damage.size(), 2u) << "key: " << key;
    EXPECT_EQ(damage[0].offset, a);
    EXPECT_EQ(damage[1].offset, b);
    EXPECT_NE(damage[0].problem.find("moved"), std::string::npos) << damage[0].problem;
  }
}

// The record point 2 wrote for an extent, spliced into point 1's index at the same offset:
// restoring point 1 would show data from the future. The record's header names its point.
TEST_F(TamperTest, RecordOfALaterPointSplicedIn) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  const uint64_t offset = 4 * kExtentBytes;
  chain.AddPoint(2 * kMinuteNs, true, {{offset, kExtentBytes, false}});
  store::PointIndex later = Must(chain.store().LoadIndex(chain.store().manifest().points[1]));
  store::IndexEntry newer;
  for (const auto& e : later.entries)
    if (e.offset == offset) newer = e;
  ASSERT_EQ(newer.length, kExtentBytes);
  ForgeIndex(chain, 1, [&](store::PointIndex& idx) {
    for (auto& e : idx.entries)
      if (e.offset == offset) e = newer;
  });
  Status st = RestorePoint(chain, 1);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find(Where(1, offset)), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("later point 2"), std::string::npos) << st.message();
  auto damage = VerifyDamage("");
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_EQ(damage[0].points, std::vector<uint64_t>{1});
  EXPECT_EQ(chain.RestoreHash(2), chain.expected_hash(2));  // the honest point is untouched
}

// A pack deleted from under the store: verify names every extent the points lose, with the pack.
TEST_F(TamperTest, MissingPackIsNamed) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  chain.AddPoint(2 * kMinuteNs, true, {{4 * kExtentBytes, kExtentBytes, false}});
  ASSERT_EQ(unlink(chain.store().PackPath(2).c_str()), 0);
  auto damage = VerifyDamage("");
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_EQ(damage[0].offset, 4 * kExtentBytes);
  EXPECT_EQ(damage[0].points, std::vector<uint64_t>{2});
  EXPECT_NE(damage[0].problem.find("00000002.pack"), std::string::npos) << damage[0].problem;
  EXPECT_EQ(RestorePoint(chain, 2).code(), Code::kNotFound);
  EXPECT_EQ(chain.RestoreHash(1), chain.expected_hash(1));
  recovery::RestoreRequest rq = chain.RestoreRequestFor(2);
  rq.allow_damaged = true;
  auto sum = recovery::Restore(rq);
  ASSERT_TRUE(sum.ok()) << sum.status().message();
  ASSERT_EQ(sum->damaged.size(), 1u);
  EXPECT_EQ(sum->damaged[0].offset, 4 * kExtentBytes);
}

// A flipped bit in a stored record, checksums left alone: verify without the key finds it, names
// every point that uses the record, and restore --allow-damaged writes everything else.
TEST_F(TamperTest, AllowDamagedRestoresAroundABadRecord) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  chain.AddPoint(2 * kMinuteNs, true, {{0, kExtentBytes, false}});
  store::IndexEntry victim = Must(chain.store().LoadIndex(chain.store().manifest().points[0])).entries.at(7);
  UniqueFd fd(open(chain.store().PackPath(victim.pack).c_str(), O_RDWR | O_CLOEXEC));
  uint8_t byte = 0;
  ASSERT_TRUE(PreadAll(fd.get(), victim.pack_offset + kRecordHeaderSize + 5, &byte, 1).ok());
  byte ^= 1;
  ASSERT_EQ(pwrite(fd.get(), &byte, 1, static_cast<off_t>(victim.pack_offset + kRecordHeaderSize + 5)), 1);
  auto damage = VerifyDamage("");
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_EQ(damage[0].points, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(recovery::DescribeDamage(kServer, damage[0]).rfind("server 'db1' volume 0 points 1-2 offset " +
                                                                  std::to_string(victim.offset) + " length 65536: ", 0),
            0u);
  recovery::RestoreRequest rq = chain.RestoreRequestFor(2);
  EXPECT_EQ(recovery::Restore(rq).status().code(), Code::kDataLoss);
  rq.allow_damaged = true;
  auto sum = Must(recovery::Restore(rq));
  ASSERT_EQ(sum.damaged.size(), 1u);
  EXPECT_EQ(sum.damaged[0].offset, victim.offset);
  Bytes image = Must(ReadFileBytes(rq.output_dir + "/vol-0.img", kVolumeBytes + 1));
  ASSERT_EQ(image.size(), kVolumeBytes);
  for (uint64_t i = 0; i < kVolumeBytes; ++i) {
    bool damaged = i >= victim.offset && i < victim.offset + victim.length;
    ASSERT_EQ(image[i], damaged ? 0 : chain.image()[i]) << "byte " << i;
  }
}

// A record dropped from a point's index: every remaining record is authentic, and the restore
// would show zeros there. The seal does not add up in that region, which the restore names.
TEST_F(TamperTest, DroppedRecordIsCaughtBySeal) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  const uint64_t offset = (1u << 20) + 3 * kExtentBytes;  // in the second 1 MiB region
  ForgeIndex(chain, 1, [&](store::PointIndex& idx) {
    std::erase_if(idx.entries, [&](const store::IndexEntry& e) { return e.offset == offset; });
  });
  Status st = RestorePoint(chain, 1);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("server 'db1' volume 0 point 1 bytes 1048576..2097152: the data does not match the "
                              "point's seal"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("dropped or rolled back"), std::string::npos) << st.message();
  EXPECT_NE(access((root_ + "/out/vol-0.img").c_str(), F_OK), 0);  // no image that looks finished
  auto damage = VerifyDamage(chain.key_file());
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_EQ(damage[0].offset, 1u << 20);
  EXPECT_EQ(damage[0].length, 1u << 20);
  EXPECT_EQ(damage[0].points, std::vector<uint64_t>{1});
  EXPECT_TRUE(VerifyDamage("").empty());  // without the key a dropped record is invisible
}

// Point 2 rewrote an extent; its index is edited to name point 1's (authentic, older) record
// there instead: a rollback. The restore names the region and the stale record's point.
TEST_F(TamperTest, RolledBackExtentIsCaughtBySeal) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  const uint64_t offset = 5 * kExtentBytes;
  chain.AddPoint(2 * kMinuteNs, true, {{offset, kExtentBytes, false}});
  store::IndexEntry older;
  for (const auto& e : Must(chain.store().LoadIndex(chain.store().manifest().points[0])).entries)
    if (e.offset == offset) older = e;
  ASSERT_EQ(older.length, kExtentBytes);
  ForgeIndex(chain, 2, [&](store::PointIndex& idx) {
    for (auto& e : idx.entries)
      if (e.offset == offset) e = older;
  });
  Status st = RestorePoint(chain, 2);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("volume 0 point 2 bytes 0..1048576: the data does not match"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("the agent sent a record of point 2 there, but the newest of the 16 records the index "
                              "names there is from point 1"), std::string::npos) << st.message();
  auto damage = VerifyDamage(chain.key_file());
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_EQ(damage[0].offset, 0u);
  EXPECT_EQ(damage[0].points, std::vector<uint64_t>{2});
  EXPECT_EQ(chain.RestoreHash(1), chain.expected_hash(1));  // point 1 is what it was
  recovery::RestoreRequest rq = chain.RestoreRequestFor(2);
  rq.allow_damaged = true;
  auto sum = Must(recovery::Restore(rq));
  ASSERT_EQ(sum.damaged.size(), 1u);
  EXPECT_EQ(sum.damaged[0].offset, 0u);
  EXPECT_EQ(sum.damaged[0].length, 1u << 20);
}

// The seal itself removed from a point: restore refuses (nothing proves the index complete),
// and verify reports it even without the key.
TEST_F(TamperTest, StrippedSealIsRefused) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  ForgeIndex(chain, 1, [](store::PointIndex& idx) { idx.seals.clear(); });
  Status st = RestorePoint(chain, 1);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("carries no seal"), std::string::npos) << st.message();
  auto damage = VerifyDamage("");
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_NE(damage[0].problem.find("no seal"), std::string::npos);
}

// A point's time changed in the manifest (restore by time would pick the wrong point): the seal
// binds the time the agent took it.
TEST_F(TamperTest, EditedPointTimeIsCaught) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  std::string manifest_path = chain.store().dir() + "/MANIFEST";
  store::Manifest m = Must(store::Manifest::Decode(Must(ReadFileBytes(manifest_path, store::kMaxManifestBytes))));
  m.points[0].time_ns += kHourNs;
  ASSERT_TRUE(WriteFileAtomic(manifest_path, m.Encode()).ok());
  Status st = RestorePoint(chain, 1);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("but the agent sealed time"), std::string::npos) << st.message();
  EXPECT_EQ(VerifyDamage(chain.key_file()).size(), 1u);
}

// An index entry whose pack offset is near 2^64 (its end wrapped around, and a restore died of
// SIGSEGV) or whose record claims 4 GiB: refused in one clear error before any pack is read, by
// restore and by verify.
TEST_F(TamperTest, ImpossibleRecordPlaceIsRefused) {
  int n = 0;
  for (auto edit : {std::function<void(store::IndexEntry&)>([](store::IndexEntry& e) { e.pack_offset = ~0ull - 0xffff; }),
                    std::function<void(store::IndexEntry&)>([](store::IndexEntry& e) { e.record_bytes = 0xfffffff0u; })}) {
    std::string root = root_ + "/" + std::to_string(++n);
    Chain chain(root);
    chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
    ForgeIndex(chain, 1, [&](store::PointIndex& idx) { edit(idx.entries.at(2)); });
    Status st = RestorePoint(chain, 1);
    EXPECT_EQ(st.code(), Code::kDataLoss);
    EXPECT_NE(st.message().find("names an impossible record"), std::string::npos) << st.message();
    EXPECT_EQ(st.message().find('\n'), std::string::npos) << st.message();
    recovery::VerifyRequest rq{root, kServer, chain.key_file(), {}, {}};
    auto reports = recovery::Verify(rq);
    ASSERT_TRUE(reports.ok()) << reports.status().message();
    ASSERT_EQ(reports->size(), 1u);
    EXPECT_FALSE((*reports)[0].clean());
    EXPECT_NE((*reports)[0].unreadable.find("names an impossible record"), std::string::npos) << (*reports)[0].unreadable;
  }
}

// An entry reaching past its record's 1 MiB of plaintext cannot be real either.
TEST_F(TamperTest, EntryPastItsRecordIsRefused) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  ForgeIndex(chain, 1, [](store::PointIndex& idx) { idx.entries.at(1).offset_in_record = kMaxRecordPlainBytes; });
  Status st = RestorePoint(chain, 1);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("reaches past its record's plaintext"), std::string::npos) << st.message();
}

// A symbolic link planted at the restore's temporary name (vol-0.img.partial -> victim) used to
// make the restore overwrite the victim. Now the link is removed, not followed: the victim keeps
// its bytes and the image is restored.
TEST_F(TamperTest, PlantedPartialLinkIsNotFollowed) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  std::string victim = root_ + "/victim", out = root_ + "/out";
  const std::string kVictim = "precious bytes";
  ASSERT_TRUE(WriteFileAtomic(victim, ByteSpan(reinterpret_cast<const uint8_t*>(kVictim.data()), kVictim.size())).ok());
  ASSERT_EQ(mkdir(out.c_str(), 0700), 0);
  ASSERT_EQ(symlink(victim.c_str(), (out + "/vol-0.img.partial").c_str()), 0);
  EXPECT_EQ(chain.RestoreHash(1), chain.expected_hash(1));
  Bytes after = Must(ReadFileBytes(victim, 1024));
  EXPECT_EQ(std::string(after.begin(), after.end()), kVictim);
}

// A link planted at the image's final name in --output (vol-0.img -> a device or a file) is
// refused in one line; nothing is written through it.
TEST_F(TamperTest, PlantedImageLinkIsRefused) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  std::string out = root_ + "/out";
  ASSERT_EQ(mkdir(out.c_str(), 0700), 0);
  ASSERT_EQ(symlink("/dev/null", (out + "/vol-0.img").c_str()), 0);
  Status st = RestorePoint(chain, 1);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("is not a regular file (a symbolic link or a device)"), std::string::npos) << st.message();
  struct stat lst{};
  ASSERT_EQ(lstat((out + "/vol-0.img").c_str(), &lst), 0);
  EXPECT_TRUE(S_ISLNK(lst.st_mode));
}

}  // namespace
}  // namespace blockrep
