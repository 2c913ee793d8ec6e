#include "delta.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"
#include "verify.h"

namespace blockrep::recovery {
namespace {

constexpr uint64_t kBlock = kFingerprintBlockBytes;
constexpr size_t kCompareChunkBytes = 4u << 20;
constexpr unsigned kCompareThreads = 2;

// Fingerprints of blocks [first, last) of the target, read in chunks.
Status FingerprintRange(int fd, const std::string& path, uint64_t volume_bytes, uint64_t first, uint64_t last,
                        const BlockFingerprinter& fingerprinter, std::vector<uint64_t>* have) {
  Bytes buf(kCompareChunkBytes);
  for (uint64_t b = first; b < last;) {
    uint64_t offset = b * kBlock;
    size_t len = static_cast<size_t>(std::min<uint64_t>({kCompareChunkBytes, (last - b) * kBlock, volume_bytes - offset}));
    BR_RETURN_IF_ERROR(PreadAll(fd, offset, buf.data(), len).Annotate("read target " + path));
    for (size_t pos = 0; pos < len; pos += kBlock, ++b) {
      size_t n = std::min<size_t>(kBlock, len - pos);
      (*have)[b] = fingerprinter.Block(offset + pos, ByteSpan(buf.data() + pos, n));
    }
  }
  return Status::Ok();
}

}  // namespace

Result<const VolumeSeal*> CheckedDeltaSeal(const std::string& where, const store::PointInfo& point,
                                          const store::PointIndex& idx, uint16_t volume, const SealKeys& seal_keys) {
  if (idx.seals.size() <= volume) return DataLoss(where + ": the point carries no seal, so a delta restore cannot be checked");
  const VolumeSeal& seal = idx.seals[volume];
  if (!seal_keys.Authentic(seal)) return DataLoss(where + ": the point's seal does not verify with this data key");
  if (!store::SealNamesPoint(seal, point) || seal.volume_bytes != idx.volume_sizes[volume])
    return DataLoss(where + ": the point's seal names another time, flags, label or size (manifest tampered?)");
  return &seal;
}

Result<UniqueFd> OpenDeltaTarget(const std::string& target, uint64_t size) {
  struct stat st{};
  if (stat(target.c_str(), &st) != 0)
    return ErrnoStatus("--delta target " + target, errno).Annotate("--delta writes onto an existing copy; without one, restore without --delta");
  bool device = S_ISBLK(st.st_mode);
  if (!device && !S_ISREG(st.st_mode)) return InvalidArgument("target " + target + " is neither a block device nor a regular file");
  UniqueFd fd(open(target.c_str(), O_RDWR | O_CLOEXEC | (device ? O_EXCL : 0)));
  if (!fd.valid()) return ErrnoStatus("open target " + target, errno).Annotate(device ? "is it mounted or in use?" : "");
  if (device) {
    uint64_t dev_size = 0;
    if (ioctl(fd.get(), BLKGETSIZE64, &dev_size) != 0) return ErrnoStatus("size of " + target, errno);
    if (dev_size < size)
      return InvalidArgument("target device " + target + " holds " + std::to_string(dev_size) + " bytes but the volume needs " +
                             std::to_string(size));
  } else if (static_cast<uint64_t>(st.st_size) != size) {
    // An image file takes the volume's size (as a full restore would write it).
    if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return ErrnoStatus("size " + target, errno);
  }
  return fd;
}

void SortInPackOrder(std::vector<const store::IndexEntry*>* entries) {
  std::stable_sort(entries->begin(), entries->end(), [](const store::IndexEntry* a, const store::IndexEntry* b) {
    return a->pack != b->pack ? a->pack < b->pack : a->pack_offset < b->pack_offset;
  });
}

Status ForEachDeltaPiece(PointSource& source, const std::string& where, uint64_t point_id,
                         std::vector<const store::IndexEntry*> pieces, RecordOpener& opener, RestoreSummary* sum,
                         const DeltaPieceFn& fn) {
  SortInPackOrder(&pieces);
  std::vector<const store::IndexEntry*> records;
  std::vector<size_t> group_start;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const store::IndexEntry& e = *pieces[i];
    if (!records.empty() && records.back()->pack == e.pack && records.back()->pack_offset == e.pack_offset &&
        records.back()->checksum == e.checksum)
      continue;
    records.push_back(&e);
    group_start.push_back(i);
  }
  group_start.push_back(pieces.size());
  Bytes plain;
  RecordHeader h;
  return source.ReadRecords(point_id, records, [&](size_t g, const Status& read, ByteSpan stored) -> Status {
    sum->bytes_fetched += stored.size();
    Status st = read;
    if (st.ok()) st = opener.Open(stored, &h, &plain);
    for (size_t i = group_start[g]; i < group_start[g + 1]; ++i) {
      const store::IndexEntry& e = *pieces[i];
      if (st.ok()) {
        std::string misplaced = PlacementProblem(h, e, point_id);
        if (!misplaced.empty()) st = DataLoss("record in pack " + std::to_string(e.pack) + ": " + misplaced);
      }
      if (!st.ok())
        return Status(st.code(), where + " offset " + std::to_string(e.offset) + ": " + st.message() +
                                     " (delta restore stopped; the target holds part of the point: "
                                     "'blockrep-recover verify' lists the damage)");
      BR_RETURN_IF_ERROR(fn(e, ByteSpan(plain.data() + e.offset_in_record, e.length)));
      ++sum->records;
    }
    return Status::Ok();
  });
}

Status RestoreDelta(PointSource& source, const std::string& server_id, const store::PointInfo& point,
                    const store::PointIndex& idx, uint16_t volume, const std::string& target, RecordOpener& opener,
                    const SealKeys& seal_keys, const BlockFingerprinter& fingerprinter, RestoreSummary* sum) {
  const uint64_t size = idx.volume_sizes[volume];
  std::string where = "server '" + server_id + "' volume " + std::to_string(volume) + " point " + std::to_string(point.id);
  // The seal first: without it nothing could prove the result.
  BR_ASSIGN_OR_RETURN(const VolumeSeal* checked, CheckedDeltaSeal(where, point, idx, volume, seal_keys));
  const VolumeSeal& seal = *checked;
  BR_ASSIGN_OR_RETURN(UniqueFd fd, OpenDeltaTarget(target, size));

  // 1. What the point holds, block by block (unauthenticated until the seal check), and what the
  //    target holds, read on both cores.
  std::vector<uint64_t> want;
  BR_RETURN_IF_ERROR(ReadVolumeFingerprints(source, idx, volume, &want));
  const uint64_t blocks = want.size();
  std::vector<uint64_t> have(blocks, 0);
  std::vector<Status> results(kCompareThreads);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kCompareThreads; ++t) {
    uint64_t first = blocks * t / kCompareThreads, last = blocks * (t + 1) / kCompareThreads;
    threads.emplace_back([&, t, first, last] {
      results[t] = FingerprintRange(fd.get(), target, size, first, last, fingerprinter, &have);
    });
  }
  for (auto& th : threads) th.join();
  for (const Status& r : results) BR_RETURN_IF_ERROR(r);
  sum->target_bytes_read += size;

  // 2. Differing blocks: zeros in the point are written as zeros; the rest come from records.
  std::vector<bool> differs(blocks, false);
  uint64_t differing = 0;
  for (uint64_t b = 0; b < blocks; ++b)
    if (have[b] != want[b]) differs[b] = true, ++differing;
  sum->blocks_differing += differing;

  std::vector<const store::IndexEntry*> pieces;  // entries of the volume with a differing block
  std::vector<bool> covered(blocks, false);
  for (const store::IndexEntry& e : idx.entries) {
    if (e.volume != volume) continue;
    uint64_t first = e.offset / kBlock, last = (e.offset + e.length + kBlock - 1) / kBlock;
    bool any = false;
    for (uint64_t b = first; b < last; ++b) {
      covered[b] = true;
      any = any || differs[b];
    }
    if (any) pieces.push_back(&e);
  }
  // Zero blocks of the point that the target has data in.
  static const Bytes zeros(1u << 20, 0);
  for (uint64_t b = 0; b < blocks;) {
    if (!differs[b] || covered[b]) {
      ++b;
      continue;
    }
    uint64_t run = b;
    while (run < blocks && differs[run] && !covered[run] && run - b < zeros.size() / kBlock) ++run;
    uint64_t offset = b * kBlock, len = std::min(run * kBlock, size) - offset;
    BR_RETURN_IF_ERROR(PwriteAll(fd.get(), offset, zeros.data(), len).Annotate(target));
    sum->bytes_written += len;
    for (uint64_t k = b; k < run; ++k) have[k] = 0;
    b = run;
  }

  // 3. Fetch and open the records of the differing blocks, in pack order, each once; write the
  //    runs of differing blocks straight from the plaintext.
  BR_RETURN_IF_ERROR(ForEachDeltaPiece(source, where, point.id, std::move(pieces), opener, sum,
                                       [&](const store::IndexEntry& e, ByteSpan extent) -> Status {
    uint64_t first = e.offset / kBlock, last = (e.offset + e.length + kBlock - 1) / kBlock;
    for (uint64_t b = first; b < last;) {
      if (!differs[b]) {
        ++b;
        continue;
      }
      uint64_t run = b;
      while (run < last && differs[run]) ++run;
      uint64_t from = b * kBlock, to = std::min(run * kBlock, e.offset + e.length);
      BR_RETURN_IF_ERROR(PwriteAll(fd.get(), from, extent.data() + (from - e.offset), to - from).Annotate(target));
      sum->bytes_written += to - from;
      for (uint64_t k = b; k < run; ++k) {
        uint64_t off = k * kBlock;
        have[k] = fingerprinter.Block(off, extent.subspan(off - e.offset, std::min<uint64_t>(kBlock, e.offset + e.length - off)));
      }
      b = run;
    }
    return Status::Ok();
  }));
  if (fsync(fd.get()) != 0) return ErrnoStatus("fsync " + target, errno);

  // 4. The target now, against the agent's seal: `have` holds the fingerprint of every block as
  //    read from the target or as written to it.
  RegionDigests digests(&seal_keys, size);
  for (uint64_t b = 0; b < blocks; ++b) digests.Note(b, have[b]);
  digests.Flush();
  std::vector<uint32_t> bad = MismatchedRegions(seal, digests.regions());
  sum->seal_regions_matched += seal.regions.size() - bad.size();
  if (!bad.empty()) {
    uint64_t start = uint64_t{bad[0]} * seal.region_bytes;
    return DataLoss(where + ": after the delta restore, " + std::to_string(bad.size()) +
                    " region(s) of the target do not match the point's seal, the first at bytes " +
                    std::to_string(start) + ".." + std::to_string(std::min(size, start + seal.region_bytes)) +
                    " (the store's fingerprints or records are not the agent's: store tampered?); the target is not the "
                    "point: run a full restore (without --delta)");
  }
  return Status::Ok();
}

}  // namespace blockrep::recovery
