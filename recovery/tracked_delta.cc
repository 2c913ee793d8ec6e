#include "tracked_delta.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <thread>
#include <tuple>

#include "blockrep/base/check.h"
#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"
#include "blockrep/tracking/acked_point.h"
#include "blockrep/tracking/tracker.h"
#include "delta.h"

namespace blockrep::recovery {
namespace {

constexpr uint64_t kBlock = kFingerprintBlockBytes;
constexpr size_t kReadChunkBytes = 4u << 20;
// Scattered reads are bound by the disk's latency, not the CPU: several in flight at once.
constexpr unsigned kReadThreads = 4;
constexpr uint64_t kAdviseAheadBytes = 32u << 20;
// Past this share of the volume, reading the blocks one run at a time is no cheaper than reading
// the whole target (and the per-block tables would cost more than the whole-target delta's).
constexpr uint64_t kTrackedShareMaxDivisor = 4;

// A running agent on the state directory would take bits from the tracker and write the device's
// chain meanwhile: a failback onto its volumes must wait for it to stop.
Status CheckAgentStopped(const std::string& state_dir) {
  auto pid_text = ReadSmallFile(state_dir + "/agent.pid", 64);
  if (!pid_text.ok()) return Status::Ok();
  pid_t pid = static_cast<pid_t>(std::strtol(pid_text->c_str(), nullptr, 10));
  if (pid <= 0 || kill(pid, 0) != 0) return Status::Ok();
  auto comm = ReadSmallFile("/proc/" + std::to_string(pid) + "/comm", 64);
  if (!comm.ok() || comm->rfind("blockrep-agent", 0) != 0) return Status::Ok();
  return Unavailable("the agent (pid " + std::to_string(pid) + ") still runs with --state-dir " + state_dir +
                            ": stop it (SIGTERM) before failing back onto its volumes");
}

// The content an entry gives a volume offset x is its record's plaintext at x - (offset -
// offset_in_record): two entries of the same stored record (by checksum: compaction moves records,
// it does not change them) with the same such base give the same bytes wherever both cover.
using RecordBase = std::tuple<uint64_t, uint32_t, uint64_t>;
RecordBase BaseOf(const store::IndexEntry& e) { return {e.checksum, e.record_bytes, e.offset - e.offset_in_record}; }
struct Covered {
  RecordBase base;
  uint64_t start, end;  // [start, end) of the volume
  bool operator<(const Covered& o) const { return std::tie(base, start) < std::tie(o.base, o.start); }
};
using Coverage = std::vector<Covered>;  // sorted

Coverage CoverageOf(const store::PointIndex& idx, uint16_t volume) {
  Coverage c;
  for (const store::IndexEntry& e : idx.entries)
    if (e.volume == volume) c.push_back({BaseOf(e), e.offset, e.offset + e.length});
  std::sort(c.begin(), c.end());
  return c;
}

void MarkBlocks(uint64_t offset, uint64_t length, std::vector<bool>* set) {
  for (uint64_t b = offset / kBlock; b < (offset + length + kBlock - 1) / kBlock && b < set->size(); ++b) (*set)[b] = true;
}

// Fingerprints of the target's blocks `blocks` (sorted), [first, last) of them, read run by run.
// The runs ahead (up to kAdviseAheadBytes) are announced to the kernel (POSIX_FADV_WILLNEED), so
// that scattered reads overlap instead of each waiting for the disk in turn.
Status FingerprintBlocks(int fd, const std::string& path, uint64_t size, const std::vector<uint64_t>& blocks,
                         size_t first, size_t last, const BlockFingerprinter& fingerprinter, std::vector<uint64_t>* fps) {
  auto run_end = [&](size_t i) {
    size_t j = i + 1;
    while (j < last && blocks[j] == blocks[j - 1] + 1 && (j - i) * kBlock < kReadChunkBytes) ++j;
    return j;
  };
  Bytes buf(kReadChunkBytes);
  size_t advised = first;  // runs before this one were announced
  for (size_t i = first; i < last;) {
    while (advised < last && (advised - i) * kBlock < kAdviseAheadBytes) {
      size_t j = run_end(advised);
      uint64_t offset = blocks[advised] * kBlock;
      // Advice only: a kernel that ignores it reads as before.
      (void)posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(std::min<uint64_t>((j - advised) * kBlock, size - offset)),
                          POSIX_FADV_WILLNEED);
      advised = j;
    }
    size_t j = run_end(i);
    uint64_t offset = blocks[i] * kBlock;
    size_t len = static_cast<size_t>(std::min<uint64_t>((j - i) * kBlock, size - offset));
    BR_RETURN_IF_ERROR(PreadAll(fd, offset, buf.data(), len).Annotate("read target " + path));
    for (size_t k = i; k < j; ++k) {
      size_t pos = (k - i) * kBlock;
      (*fps)[k] = fingerprinter.Block(offset + pos, ByteSpan(buf.data() + pos, std::min<size_t>(kBlock, len - pos)));
    }
    i = j;
  }
  return Status::Ok();
}

}  // namespace

Result<TrackedBases> LoadTrackedBases(PointSource& source, const store::Manifest& manifest, const std::string& server_id,
                                      const std::string& state_dir, const std::map<uint16_t, std::string>& targets,
                                      const KeyChain& keys, const store::PointIndex& point_index) {
  if (!PathExists(state_dir))
    return InvalidArgument("--agent-state " + state_dir + ": no such directory (the original agent's --state-dir)");
  BR_RETURN_IF_ERROR(CheckAgentStopped(state_dir));
  BR_ASSIGN_OR_RETURN(AckedPoint acked, ReadAckedPoint(state_dir, server_id));
  TrackedBases out;
  if (acked.id == 0) {
    out.why_not = state_dir + " names no point of server '" + server_id + "' acknowledged to its agent";
    return out;
  }
  auto tracker = EbpfTracker::OpenPinned(server_id);
  if (!tracker.ok()) {
    out.why_not = tracker.status().message();
    return out;
  }
  uint64_t synced = (*tracker)->synced_point();
  if (synced != acked.id) {
    out.why_not = "the pinned tracker is synced to point " + std::to_string(synced) + ", the agent's last acknowledged point is " +
                  std::to_string(acked.id) + " (it was stopped during a full read or a rescan)";
    return out;
  }
  // Writes issued and not yet reported complete count as written.
  (*tracker)->MarkPendingWrites(true);
  auto found = std::find_if(manifest.points.begin(), manifest.points.end(),
                            [&](const store::PointInfo& p) { return p.id == acked.id; });
  if (found == manifest.points.end()) {
    out.why_not = "point " + std::to_string(acked.id) + ", the last one this host's agent saw acknowledged, has expired from the chain";
    return out;
  }
  out.point = *found;
  BR_ASSIGN_OR_RETURN(out.index, source.OpenPoint(out.point, false));
  if (out.index.seals.size() != out.index.volume_sizes.size()) {
    out.why_not = "point " + std::to_string(acked.id) + " carries no seals";
    return out;
  }
  if (keys.ForIndex(out.index).key.key_id != keys.ForIndex(point_index).key.key_id) {
    out.why_not = "point " + std::to_string(acked.id) + " is sealed under another data key than the point restored";
    return out;
  }
  static const std::array<uint8_t, kSealMacBytes> kNoMac{};
  if (acked.seal_mac != kNoMac && out.index.seals[0].mac != acked.seal_mac) {
    out.why_not = "ALARM: the chain's point " + std::to_string(acked.id) +
                  " is not the one acknowledged to this host's agent (its seal MAC differs: the chain forked or was replaced)";
    return out;
  }
  for (const auto& [vol, path] : targets) {
    auto dev = DescribeBlockDevice(path);
    if (!dev.ok()) {
      out.why_not = "target " + path + ": " + dev.status().message();
      return out;
    }
    int k = (*tracker)->IndexOf(*dev);
    if (k < 0) {
      out.why_not = "target " + path + " is not a volume this host's tracker of '" + server_id + "' follows";
      return out;
    }
    if (static_cast<uint16_t>(k) != vol) {
      out.why_not = "target " + path + " is the agent's volume " + std::to_string(k) + ", not volume " + std::to_string(vol);
      return out;
    }
    if ((*tracker)->overflowed(static_cast<size_t>(k))) {
      out.why_not = "a write on " + path + " was too large to track, or the kernel skipped the tracker";
      return out;
    }
    if (vol >= out.index.volume_sizes.size() || out.index.volume_sizes[vol] != point_index.volume_sizes[vol]) {
      out.why_not = "volume " + std::to_string(vol) + " changed size since point " + std::to_string(acked.id);
      return out;
    }
    out.written[vol] = (*tracker)->ChangedSinceSynced(static_cast<size_t>(k));
  }
  return out;
}

Result<bool> RestoreTrackedDelta(PointSource& source, const std::string& server_id, const store::PointInfo& point,
                                 const store::PointIndex& idx, uint16_t volume, const std::string& target,
                                 const TrackedBases& base, RecordOpener& opener, const SealKeys& seal_keys,
                                 const BlockFingerprinter& fingerprinter, RestoreSummary* sum) {
  const uint64_t size = idx.volume_sizes[volume];
  const uint64_t blocks = (size + kBlock - 1) / kBlock;
  std::string where = "server '" + server_id + "' volume " + std::to_string(volume) + " point " + std::to_string(point.id);
  BR_ASSIGN_OR_RETURN(const VolumeSeal* seal, CheckedDeltaSeal(where, point, idx, volume, seal_keys));
  std::string base_where = "server '" + server_id + "' volume " + std::to_string(volume) + " point " + std::to_string(base.point.id);
  BR_ASSIGN_OR_RETURN(const VolumeSeal* base_seal, CheckedDeltaSeal(base_where, base.point, base.index, volume, seal_keys));
  BR_CHECK(base_seal->region_bytes == seal->region_bytes && base_seal->regions.size() == seal->regions.size());
  const uint64_t region_blocks = seal->region_bytes / kBlock;

  // 1. Blocks that can differ: extents whose record differs between B and P (the index is a hint,
  //    checked by the digests below), and blocks written here since B (the tracker). A region with
  //    a block written here is read whole: its content is not B's.
  std::vector<bool> compare(blocks, false);
  const Coverage base_cover = CoverageOf(base.index, volume), point_cover = CoverageOf(idx, volume);
  // The parts of each entry of `idx` that `other` does not give the same bytes.
  auto mark_uncovered = [&](const store::PointIndex& from, const Coverage& other) {
    for (const store::IndexEntry& e : from.entries) {
      if (e.volume != volume) continue;
      uint64_t at = e.offset, end = e.offset + e.length;
      const RecordBase base = BaseOf(e);
      for (auto it = std::lower_bound(other.begin(), other.end(), Covered{base, 0, 0}); it != other.end() && it->base == base;
           ++it) {
        if (it->end <= at) continue;
        if (it->start >= end) break;
        if (it->start > at) MarkBlocks(at, it->start - at, &compare);
        at = std::max(at, it->end);
      }
      if (at < end) MarkBlocks(at, end - at, &compare);
    }
  };
  mark_uncovered(idx, base_cover);
  mark_uncovered(base.index, point_cover);
  std::vector<bool> whole_region(seal->regions.size(), false);
  auto written = base.written.find(volume);
  if (written != base.written.end())
    for (const Extent& x : written->second) {
      MarkBlocks(x.offset, x.length, &compare);
      for (uint64_t r = x.offset / seal->region_bytes; r <= (x.offset + x.length - 1) / seal->region_bytes && r < whole_region.size(); ++r)
        whole_region[r] = true;
    }
  std::vector<uint64_t> read_blocks;  // sorted
  for (uint64_t b = 0; b < blocks; ++b)
    if (compare[b] || whole_region[b / region_blocks]) read_blocks.push_back(b);
  if (read_blocks.size() > blocks / kTrackedShareMaxDivisor) return false;

  // 2. The point's content of the compared blocks: records for those its entries cover, zeros
  //    for the rest. The records are announced to the store now, so that they are read while the
  //    target is.
  std::vector<const store::IndexEntry*> pieces;
  std::vector<bool> covered(blocks, false);
  for (const store::IndexEntry& e : idx.entries) {
    if (e.volume != volume) continue;
    bool any = false;
    for (uint64_t b = e.offset / kBlock; b < (e.offset + e.length + kBlock - 1) / kBlock; ++b) {
      covered[b] = true;
      any = any || compare[b];
    }
    if (any) pieces.push_back(&e);
  }
  SortInPackOrder(&pieces);
  source.AdviseRecords(point.id, pieces);

  BR_ASSIGN_OR_RETURN(UniqueFd fd, OpenDeltaTarget(target, size));
  // 3. What the target holds there now, read by kReadThreads threads; then each compared block whose
  //    fingerprint differs from the point's is written.
  std::vector<uint64_t> before(read_blocks.size(), 0);
  std::vector<Status> results(kReadThreads);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kReadThreads; ++t) {
    size_t first = read_blocks.size() * t / kReadThreads, last = read_blocks.size() * (t + 1) / kReadThreads;
    threads.emplace_back([&, t, first, last] {
      results[t] = FingerprintBlocks(fd.get(), target, size, read_blocks, first, last, fingerprinter, &before);
    });
  }
  for (auto& th : threads) th.join();
  for (const Status& r : results) BR_RETURN_IF_ERROR(r);
  for (uint64_t b : read_blocks) sum->target_bytes_read += std::min(kBlock, size - b * kBlock);
  std::vector<uint64_t> after = before;
  auto slot = [&](uint64_t b) { return static_cast<size_t>(std::lower_bound(read_blocks.begin(), read_blocks.end(), b) - read_blocks.begin()); };

  auto write_runs = [&](uint64_t first, uint64_t last, const uint8_t* data, uint64_t data_offset) -> Status {
    // Blocks [first, last) of the point whose content is at `data` (volume offset `data_offset`;
    // null: zeros): each compared block whose fingerprint differs from the target's is written,
    // a run of them in one call.
    static const Bytes zeros(kBlock, 0);
    uint64_t run_from = 0, run_to = 0;  // bytes of the pending run
    auto flush = [&]() -> Status {
      if (run_to == run_from) return Status::Ok();
      const uint8_t* from = data ? data + (run_from - data_offset) : zeros.data();
      BR_RETURN_IF_ERROR(PwriteAll(fd.get(), run_from, from, run_to - run_from).Annotate(target));
      sum->bytes_written += run_to - run_from;
      run_from = run_to;
      return Status::Ok();
    };
    for (uint64_t b = first; b < last; ++b) {
      if (!compare[b]) continue;
      size_t i = slot(b);
      uint64_t off = b * kBlock, n = std::min(kBlock, size - off);
      ByteSpan bytes = data ? ByteSpan(data + (off - data_offset), n) : ByteSpan(zeros.data(), n);
      after[i] = data ? fingerprinter.Block(off, bytes) : 0;
      if (after[i] == before[i]) continue;
      ++sum->blocks_differing;
      // Zeros are written a block at a time (one block of them at hand); data in runs.
      if (run_to != off || !data) BR_RETURN_IF_ERROR(flush());
      if (run_to != off) run_from = off;
      run_to = off + n;
    }
    return flush();
  };
  for (uint64_t b = 0; b < blocks; ++b)
    if (compare[b] && !covered[b]) BR_RETURN_IF_ERROR(write_runs(b, b + 1, nullptr, 0));
  BR_RETURN_IF_ERROR(ForEachDeltaPiece(source, where, point.id, std::move(pieces), opener, sum,
                                       [&](const store::IndexEntry& e, ByteSpan extent) -> Status {
    return write_runs(e.offset / kBlock, (e.offset + e.length + kBlock - 1) / kBlock, extent.data(), e.offset);
  }));
  if (fsync(fd.get()) != 0) return ErrnoStatus("fsync " + target, errno);

  // 4. The target's digests now: B's sealed ones adjusted by the blocks compared, or recomputed for
  //    regions read whole; each must be P's.
  RegionDigests digests(&seal_keys, size);
  *digests.mutable_regions() = base_seal->regions;
  for (size_t r = 0; r < whole_region.size(); ++r)
    if (whole_region[r]) (*digests.mutable_regions())[r] = Digest128{};
  for (size_t i = 0; i < read_blocks.size(); ++i) {
    uint64_t b = read_blocks[i];
    if (whole_region[b / region_blocks]) {
      digests.Note(b, after[i]);
    } else if (before[i] != after[i]) {
      digests.Note(b, before[i], true);
      digests.Note(b, after[i]);
    }
  }
  digests.Flush();
  std::vector<uint32_t> bad = MismatchedRegions(*seal, digests.regions());
  if (!bad.empty()) {
    uint64_t start = uint64_t{bad[0]} * seal->region_bytes;
    Log("blockrep-recover", "warning: " + where + ": after the tracked delta " + std::to_string(bad.size()) +
                                " region(s) do not add up to the point's seal, the first at bytes " + std::to_string(start) +
                                ".." + std::to_string(std::min(size, start + seal->region_bytes)) +
                                " (the chain's indexes hid a change: they are not the agent's); comparing the whole "
                                "target instead");
    return false;
  }
  sum->seal_regions_matched += seal->regions.size();
  return true;
}

}  // namespace blockrep::recovery
