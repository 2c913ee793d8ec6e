// Compaction (docs/FORMAT.md, "Expiry and compaction"): reclaims the space of records that no
// retained point uses by copying the live ones out of mostly-garbage packs. Records are copied
// byte for byte — the staging has no key and needs none.
//
// Crash safety, step by step:
//   1. the new pack is written and fsync'd (an orphan until step 3: nothing names it);
//   2. each index naming a compacted pack is written anew under its new checksum's name
//      (orphans until step 3);
//   3. one manifest commit switches every rewritten point to its new index;
//   4. the old indexes and packs are deleted (garbage from step 3 on; a crash before this step
//      leaves them for the next run: orphan indexes at startup, dead packs at the next compaction).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <set>

#include "blockrep/base/checksum.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/store/store.h"

namespace blockrep::store {
namespace {

struct PackUse {
  uint64_t file_bytes = 0;
  // Live records and the fingerprints after them. Fingerprints are counted for the plaintext the
  // index entries reach into, exact unless every entry was trimmed off a record's end.
  uint64_t live_bytes = 0;
  std::map<uint64_t, const IndexEntry*> live_records;  // pack_offset -> one entry naming it
};

struct Location {
  uint32_t pack = 0;
  uint64_t pack_offset = 0;
};

}  // namespace

Result<ServerStore::CompactionStats> ServerStore::Compact(const CompactionOptions& options) {
  CompactionStats stats;
  // 1. What is live: every record some retained point's index names. Indexes are read one at a
  // time; only one entry per live record is kept.
  std::map<uint32_t, PackUse> packs;
  {
    auto names = env_->ListDir(dir_ + "/packs");
    if (!names.ok()) return names.status();
    for (const std::string& n : *names) {
      if (n.size() != 13 || n.compare(8, 5, ".pack") != 0) continue;
      uint32_t id = static_cast<uint32_t>(std::strtoul(n.c_str(), nullptr, 10));
      BR_ASSIGN_OR_RETURN(packs[id].file_bytes, env_->FileSize(PackPath(id)));
    }
  }
  // (pack, pack_offset) -> one entry naming the record, and how far into its plaintext any reaches
  std::map<std::pair<uint32_t, uint64_t>, std::pair<IndexEntry, uint64_t>> live;
  for (const PointInfo& p : manifest_.points) {
    BR_ASSIGN_OR_RETURN(PointIndex idx, LoadIndex(p));
    for (const IndexEntry& e : idx.entries) {
      if (packs.count(e.pack) == 0)
        return DataLoss("point " + std::to_string(p.id) + " names pack " + std::to_string(e.pack) +
                        ", which is missing (store damaged; nothing was compacted)");
      auto [it, fresh] = live.try_emplace({e.pack, e.pack_offset}, e, 0);
      it->second.second = std::max<uint64_t>(it->second.second, uint64_t{e.offset_in_record} + e.length);
    }
  }
  for (const auto& [where, rec] : live) {
    PackUse& u = packs[where.first];
    u.live_bytes += rec.first.record_bytes + FingerprintCount(static_cast<uint32_t>(rec.second)) * kFingerprintBytes;
    u.live_records.emplace(where.second, &rec.first);
  }

  // 2. Which packs: mostly garbage, or (with merge_small_packs) small ones to merge, not pinned,
  // until the copy budget is spent.
  std::set<uint32_t> pinned(options.pinned_packs.begin(), options.pinned_packs.end());
  size_t small_packs = 0;
  for (const auto& [id, u] : packs)
    if (pinned.count(id) == 0 && u.file_bytes < kSmallPackBytes) ++small_packs;
  const bool merge_small = options.merge_small_packs && small_packs >= kSmallPacksToMerge;
  std::vector<uint32_t> victims;
  uint64_t copy_budget = 0;
  for (const auto& [id, u] : packs) {
    if (pinned.count(id) != 0) continue;
    uint64_t garbage = u.file_bytes > kPackHeaderSize + u.live_bytes ? u.file_bytes - kPackHeaderSize - u.live_bytes : 0;
    bool worth = u.live_bytes == 0 || (garbage > 0 && static_cast<double>(garbage) >=
                                                          options.garbage_share_min * static_cast<double>(u.file_bytes));
    if (!worth && !(merge_small && u.file_bytes < kSmallPackBytes)) continue;
    if (u.live_bytes > 0 && copy_budget + u.live_bytes > options.copy_bytes_max && copy_budget > 0) {
      stats.more = true;
      continue;
    }
    copy_budget += u.live_bytes;
    victims.push_back(id);
  }
  if (victims.empty()) return stats;

  // 3. Copy the live records (and the fingerprints stored after each) into one new pack.
  std::map<std::pair<uint32_t, uint64_t>, Location> moved;
  // Until the manifest commit begins, no index the manifest names refers to the new pack: a
  // failure before it (a full disk, most likely) removes the pack again rather than leaving its
  // partial copy to take the space the next attempt needs.
  struct RemoveUnlessKept {
    Env* env;
    std::string path;
    ~RemoveUnlessKept() {
      // Best effort: an orphan pack left behind is garbage the next compaction deletes.
      if (!path.empty()) env->Remove(path).IgnoreError();
    }
  } new_pack{env_, ""};
  if (copy_budget > 0) {
    uint32_t new_id = 0;
    BR_ASSIGN_OR_RETURN(std::unique_ptr<File> out, CreatePack(&new_id));
    new_pack.path = PackPath(new_id);
    uint64_t out_end = kPackHeaderSize;
    Bytes buf;
    PackReader reader(dir_, env_);
    for (uint32_t id : victims) {
      for (const auto& [offset, e] : packs[id].live_records) {
        Status read = reader.Read(*e, &buf);  // checks the record's checksum
        if (!read.ok()) return read.Annotate("compaction stopped, nothing changed");
        auto hdr = RecordHeader::Decode(buf);
        if (!hdr.ok() || hdr->total_size() != e->record_bytes)
          return DataLoss("pack " + std::to_string(id) + " offset " + std::to_string(offset) +
                          ": record header does not match the index (compaction stopped, nothing changed)");
        size_t fp_bytes = hdr->zero() ? 0 : FingerprintCount(hdr->plain_len) * kFingerprintBytes;
        size_t rec = buf.size();
        buf.resize(rec + fp_bytes);
        BR_ASSIGN_OR_RETURN(File* in, reader.Pack(id));
        BR_RETURN_IF_ERROR(in->ReadExact(offset + rec, buf.data() + rec, fp_bytes)
                               .Annotate("fingerprints in pack " + std::to_string(id)));
        BR_RETURN_IF_ERROR(out->WriteAt(out_end, buf).Annotate(PackPath(new_id)));
        moved[{id, offset}] = Location{new_id, out_end};
        out_end += buf.size();
        stats.bytes_copied += buf.size();
        ++stats.records_copied;
      }
    }
    BR_RETURN_IF_ERROR(out->Sync());
  }

  // 4. New indexes for every point that names a compacted pack, then one manifest commit.
  std::set<uint32_t> victim_set(victims.begin(), victims.end());
  Manifest next = manifest_;
  std::vector<std::string> old_indexes;
  for (PointInfo& p : next.points) {
    BR_ASSIGN_OR_RETURN(PointIndex idx, LoadIndex(p));
    bool changed = false;
    for (IndexEntry& e : idx.entries) {
      if (victim_set.count(e.pack) == 0) continue;
      auto it = moved.find({e.pack, e.pack_offset});
      if (it == moved.end()) return Internal("compaction lost track of a live record (nothing changed)");
      e.pack = it->second.pack;
      e.pack_offset = it->second.pack_offset;
      changed = true;
    }
    if (!changed) continue;
    Bytes enc = idx.Encode();
    old_indexes.push_back(IndexPath(p));
    p.index_checksum = Checksum64(enc);
    BR_RETURN_IF_ERROR(env_->WriteFileAtomic(IndexPath(p), enc));
    ++stats.indexes_rewritten;
  }
  new_pack.path.clear();  // from here the manifest may name it, even if the commit fails half-way
  if (stats.indexes_rewritten > 0) BR_RETURN_IF_ERROR(CommitManifest(std::move(next)));

  // 5. Garbage from here on.
  for (const std::string& path : old_indexes) {
    Status st = env_->Remove(path);
    if (!st.ok() && st.code() != Code::kNotFound) return st.Annotate("remove replaced index");
  }
  uint64_t deleted_bytes = 0;
  for (uint32_t id : victims) {
    Status st = env_->Remove(PackPath(id));
    if (!st.ok() && st.code() != Code::kNotFound) return st.Annotate("remove compacted pack");
    deleted_bytes += packs[id].file_bytes;
    if (packs[id].live_bytes > 0) ++stats.packs_rewritten;
    else ++stats.packs_deleted;
  }
  BR_RETURN_IF_ERROR(env_->SyncDir(dir_ + "/packs"));
  BR_RETURN_IF_ERROR(env_->SyncDir(dir_ + "/index"));
  uint64_t added = stats.bytes_copied > 0 ? stats.bytes_copied + kPackHeaderSize : 0;
  stats.bytes_reclaimed = deleted_bytes > added ? deleted_bytes - added : 0;
  return stats;
}

}  // namespace blockrep::store
