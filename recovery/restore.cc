#include "restore.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>

#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"
#include "blockrep/base/progress.h"
#include "blockrep/crypto/keyfile.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/crypto/seal.h"
#include "delta.h"
#include "extent_writer.h"
#include "tracked_delta.h"
#include "descent.h"

namespace blockrep::recovery {
namespace {

// Zeroes [offset, offset+len) of a block device: the device may hold anything there.
Status ZeroDeviceRange(int fd, uint64_t offset, uint64_t len, const std::string& path) {
  if (len == 0) return Status::Ok();
  uint64_t range[2] = {offset, len};
  if (ioctl(fd, BLKZEROOUT, range) == 0) return Status::Ok();
  static const Bytes zeros(1u << 20, 0);
  for (uint64_t done = 0; done < len;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), len - done));
    BR_RETURN_IF_ERROR(PwriteAll(fd, offset + done, zeros.data(), n).Annotate(path));
    done += n;
  }
  return Status::Ok();
}

struct Target {
  std::string final_path;
  std::string write_path;  // a temporary name for image files, renamed on success
  UniqueFd fd;
  bool block_device = false;
};

Result<Target> OpenTarget(const std::string& path, uint64_t size, bool image_in_output_dir) {
  Target t;
  t.final_path = path;
  struct stat st{};
  // --target names a device or file the operator chose (a /dev/disk/by-id link is fine); an image
  // in --output is always a file of ours, so a link found there is not followed.
  bool exists = (image_in_output_dir ? lstat(path.c_str(), &st) : stat(path.c_str(), &st)) == 0;
  if (exists && image_in_output_dir && !S_ISREG(st.st_mode))
    return InvalidArgument(path + " exists and is not a regular file (a symbolic link or a device): remove it or "
                           "choose another --output; restore writes images there, never through links");
  if (exists && S_ISBLK(st.st_mode)) {
    t.block_device = true;
    t.write_path = path;
    t.fd = UniqueFd(open(path.c_str(), O_WRONLY | O_CLOEXEC | O_EXCL));
    if (!t.fd.valid())
      return ErrnoStatus("open target device " + path, errno).Annotate("is it mounted or in use?");
    uint64_t dev_size = 0;
    if (ioctl(t.fd.get(), BLKGETSIZE64, &dev_size) != 0) return ErrnoStatus("size of " + path, errno);
    if (dev_size < size)
      return InvalidArgument("target device " + path + " holds " + std::to_string(dev_size) +
                             " bytes but the volume needs " + std::to_string(size));
    return t;
  }
  if (exists && !S_ISREG(st.st_mode))
    return InvalidArgument("target " + path + " is neither a block device nor a regular file");
  t.write_path = path + ".partial";
  // Whatever is at the .partial name (a crashed restore's leftover, or a symlink someone planted
  // to make us overwrite its target) is removed, never followed: unlink removes a link itself,
  // and the new file is created exclusively, without following a link planted in between.
  if (unlink(t.write_path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove " + t.write_path, errno);
  t.fd = UniqueFd(open(t.write_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!t.fd.valid())
    return ErrnoStatus("create " + t.write_path, errno)
        .Annotate("another restore may be writing there; check the directory and run again");
  // A fresh file of the volume's size: unwritten ranges are holes that read as zeros.
  if (ftruncate(t.fd.get(), static_cast<off_t>(size)) != 0)
    return ErrnoStatus("size " + t.write_path, errno);
  return t;
}

// What the restore needs to check a volume against its seal.
struct SealCheck {
  const SealKeys* keys;
  const BlockFingerprinter* fingerprinter;
};

// Compares what was written of volume `vol` with the agent's seal of it. A region that does not
// add up means the index lacks a record the agent sent, or names an older one in its place.
Status CheckSeal(const std::string& server_id, const store::PointInfo& point, const store::PointIndex& idx,
                 uint16_t vol, const RegionDigests& computed, const std::vector<std::pair<store::IndexEntry, uint64_t>>& used,
                 const SealCheck& check, bool allow_damaged, RestoreSummary* sum) {
  std::string where = "server '" + server_id + "' volume " + std::to_string(vol) + " point " + std::to_string(point.id);
  const char* advice = " (restore refused: the image is not the point; 'blockrep-recover verify --key' checks every "
                       "point; --allow-damaged restores anyway and lists the region)";
  auto refuse = [&](uint64_t offset, uint64_t length, const std::string& problem) -> Status {
    if (!allow_damaged) return DataLoss(where + " bytes " + std::to_string(offset) + ".." + std::to_string(offset + length) +
                                        ": " + problem + advice);
    sum->damaged.push_back(Damage{vol, offset, length, {point.id}, problem});
    return Status::Ok();
  };
  uint64_t size = idx.volume_sizes[vol];
  if (idx.seals.empty())
    return refuse(0, size, "the point carries no seal from the agent, so nothing proves its index complete "
                           "(the staging dropped it, or the store predates seals)");
  const VolumeSeal& seal = idx.seals[vol];
  if (!check.keys->Authentic(seal))
    return refuse(0, size, "the point's seal does not verify with this data key (forged or damaged seal)");
  if (!store::SealNamesPoint(seal, point))
    return refuse(0, size, "the manifest says time " + FormatUtc(point.time_ns) + " flags " + std::to_string(point.flags) +
                               " label '" + point.label + "' but the agent sealed time " + FormatUtc(seal.time_ns) +
                               " flags " + std::to_string(seal.flags) + " label '" + seal.label + "' (manifest tampered?)");
  std::vector<uint32_t> mismatched = MismatchedRegions(seal, computed.regions());
  sum->seal_regions_matched += seal.regions.size() - mismatched.size();
  for (uint32_t region : mismatched) {
    uint64_t start = uint64_t{region} * seal.region_bytes;
    uint64_t end = start + std::min(size - start, seal.region_bytes);
    // A damaged record already listed there explains the mismatch (it was left as zeros).
    bool explained = std::any_of(sum->damaged.begin(), sum->damaged.end(), [&](const Damage& d) {
      return d.volume == vol && d.offset < end && d.offset + d.length > start;
    });
    if (explained) continue;
    uint64_t newest = 0, count = 0;
    for (const auto& [e, record_point] : used) {
      if (e.volume != vol || e.offset + e.length <= start || e.offset >= end) continue;
      newest = std::max(newest, record_point);
      ++count;
    }
    uint64_t sealed = region < seal.region_points.size() ? seal.region_points[region] : 0;
    std::string which = sealed > newest
                            ? "the agent sent a record of point " + std::to_string(sealed) + " there, but the newest of the " +
                                  std::to_string(count) + " records the index names there is from point " + std::to_string(newest)
                            : std::to_string(count) + " records used there, the newest from point " + std::to_string(newest);
    BR_RETURN_IF_ERROR(refuse(start, end - start,
                              "the data does not match the point's seal: the store lacks a record the agent sent "
                              "there, or holds an older one in its place (dropped or rolled back: store tampered?); " +
                                  which));
  }
  return Status::Ok();
}

Status RestoreVolume(PointSource& source, const std::string& server_id, const store::PointInfo& point,
                     const store::PointIndex& idx, uint16_t vol, Target& t, RecordOpener& opener,
                     const SealCheck& check, bool allow_damaged, RestoreSummary* sum, ProgressBar* progress,
                     uint64_t* done, uint64_t total) {
  uint64_t point_id = point.id;
  // Extents in the order their records sit in the packs, not in volume order: a long chain of
  // small writes scatters a point's records over every pack, and an overwrite in the middle of
  // an older record splits its extent into pieces with newer records in between. In volume order
  // each piece decoded its whole record again and the reads jumped between packs (P7: the
  // newest point of a 1000-point chain took 3.3x a 1-point one); in pack order every record is
  // read once, sequentially, and decoded once for all its pieces.
  std::vector<const store::IndexEntry*> order;
  uint64_t cursor = 0;  // a device may hold anything outside the extents: zero those ranges first
  for (const store::IndexEntry& e : idx.entries) {
    if (e.volume != vol) continue;
    order.push_back(&e);
    if (t.block_device) BR_RETURN_IF_ERROR(ZeroDeviceRange(t.fd.get(), cursor, e.offset - cursor, t.final_path));
    cursor = e.offset + e.length;
  }
  if (t.block_device)
    BR_RETURN_IF_ERROR(ZeroDeviceRange(t.fd.get(), cursor, idx.volume_sizes[vol] - cursor, t.final_path));
  std::stable_sort(order.begin(), order.end(), [](const store::IndexEntry* a, const store::IndexEntry* b) {
    return a->pack != b->pack ? a->pack < b->pack : a->pack_offset < b->pack_offset;
  });
  // Pieces of one record (an older record split by newer ones) are read and decoded once.
  std::vector<const store::IndexEntry*> records;
  std::vector<size_t> group_start;  // index into `order` of each record's first piece
  for (size_t i = 0; i < order.size(); ++i) {
    const store::IndexEntry& e = *order[i];
    bool same = !records.empty() && records.back()->pack == e.pack && records.back()->pack_offset == e.pack_offset &&
                records.back()->record_bytes == e.record_bytes && records.back()->checksum == e.checksum;
    if (same) continue;
    records.push_back(&e);
    group_start.push_back(i);
  }
  group_start.push_back(order.size());

  RecordHeader h;
  RegionDigests digests(check.keys, idx.volume_sizes[vol]);
  ExtentWriter writer(t.fd.get(), t.write_path, *check.fingerprinter, &digests);
  std::vector<std::pair<store::IndexEntry, uint64_t>> used;  // entries written, with their record's point
  Status refusal;
  uint64_t refusal_offset = 0;
  BR_RETURN_IF_ERROR(source.ReadRecords(point_id, records, [&](size_t g, const Status& read, ByteSpan stored) -> Status {
    Status opened = read;
    sum->bytes_fetched += stored.size();
    std::span<uint8_t> room = writer.NextBuffer();
    if (opened.ok()) opened = opener.OpenInto(stored, &h, room);
    for (size_t i = group_start[g]; i < group_start[g + 1]; ++i) {
      const store::IndexEntry& e = *order[i];
      std::string where = "server '" + server_id + "' volume " + std::to_string(vol) + " point " +
                          std::to_string(point_id) + " offset " + std::to_string(e.offset);
      Status st = opened;
      if (st.ok()) {
        std::string misplaced = PlacementProblem(h, e, point_id);
        if (misplaced.empty() && e.offset % kFingerprintBlockBytes != 0)
          misplaced = "the extent does not start on a 4 KiB block";
        if (!misplaced.empty())
          st = DataLoss("record in pack " + std::to_string(e.pack) + " at offset " + std::to_string(e.pack_offset) +
                        ": " + misplaced);
      }
      if (!st.ok()) {
        if (!allow_damaged) {
          // Refused either way; the refusal names the first damaged extent in volume order, as
          // verify lists them, so look at the rest before returning.
          if (refusal.ok() || e.offset < refusal_offset) {
            refusal = Status(st.code(), where + ": " + st.message() +
                                            " (restore refused: 'blockrep-recover verify' lists every damaged extent; "
                                            "--allow-damaged restores the rest, leaving zeros there)");
            refusal_offset = e.offset;
          }
          continue;
        }
        sum->damaged.push_back(Damage{vol, e.offset, e.length, {point_id}, st.message()});
        progress->Update(*done += e.length, total);
        continue;  // left as a hole (image) or zeroed above (device)
      }
      if (!refusal.ok()) continue;  // the image is thrown away: don't write
      writer.AddPiece(e.offset, e.offset_in_record, e.length);  // written and noted in `digests` there
      used.emplace_back(e, h.point_id);
      sum->bytes_written += e.length;
      ++sum->records;
      progress->Update(*done += e.length, total);
    }
    return writer.EndRecord();
  }));
  BR_RETURN_IF_ERROR(writer.Finish());
  if (!refusal.ok()) return refusal;
  // Damage is reported in volume order, whatever order the records were read in.
  std::stable_sort(sum->damaged.begin(), sum->damaged.end(),
                   [](const Damage& a, const Damage& b) { return a.volume != b.volume ? a.volume < b.volume : a.offset < b.offset; });
  digests.Flush();
  BR_RETURN_IF_ERROR(CheckSeal(server_id, point, idx, vol, digests, used, check, allow_damaged, sum));
  if (fsync(t.fd.get()) != 0) return ErrnoStatus("fsync " + t.write_path, errno);
  if (t.write_path != t.final_path && rename(t.write_path.c_str(), t.final_path.c_str()) != 0)
    return ErrnoStatus("rename " + t.write_path, errno);
  return Status::Ok();
}

}  // namespace

Result<store::PointInfo> ResolvePoint(const store::Manifest& m, const std::string& spec) {
  if (m.points.empty()) return NotFound("server '" + m.server_id + "' has no recovery points yet");
  if (spec == "latest") return m.points.back();
  bool numeric = !spec.empty() && spec.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) {
    uint64_t id = std::strtoull(spec.c_str(), nullptr, 10);
    for (const auto& p : m.points)
      if (p.id == id) return p;
    return NotFound("server '" + m.server_id + "' has no recovery point " + spec +
                    " (blockrep-recover list shows the retained points)");
  }
  if (!spec.empty() && std::isalpha(static_cast<unsigned char>(spec[0]))) {
    // A label (blockrep-agent point --label): the newest point carrying it. The restore then
    // refuses the point unless its seal carries the same label (SealNamesPoint).
    BR_RETURN_IF_ERROR(CheckPointLabel(spec));
    for (auto it = m.points.rbegin(); it != m.points.rend(); ++it)
      if (it->label == spec) return *it;
    return NotFound("server '" + m.server_id + "' has no retained point labelled '" + spec +
                    "' (blockrep-recover list shows the labels; --keep-labelled on the staging says how long they are kept)");
  }
  BR_ASSIGN_OR_RETURN(uint64_t t, ParseUtc(spec));
  const store::PointInfo* best = nullptr;
  for (const auto& p : m.points)
    if (p.time_ns <= t) best = &p;
  if (best == nullptr)
    return NotFound("server '" + m.server_id + "' has no recovery point at or before " + spec +
                    " (oldest is " + FormatUtc(m.points.front().time_ns) + ")");
  return *best;
}

Status CheckKeyFile(const store::Manifest& m, const KeyChain& keys, const std::string& key_file,
                    const std::string& server_id) {
  if (m.key_id == 0 || keys.Holds(m.key_id)) return Status::Ok();
  return PermissionDenied("key file " + key_file + " does not hold the data key of server '" + server_id +
                          "' (use the data-" + server_id + ".key its agent replicates with)");
}

Status CheckChainHead(const store::Manifest& m, uint64_t expect_point) {
  uint64_t head = m.last_point_id();
  if (expect_point == 0 || head >= expect_point) return Status::Ok();
  return DataLoss("server '" + m.server_id + "': the chain ends at " +
                  (head == 0 ? std::string("no point") : "point " + std::to_string(head) + " (" +
                                                             FormatUtc(m.points.back().time_ns) + ")") +
                  ", older than point " + std::to_string(expect_point) +
                  " (--expect-point): the store was rolled back or replaced; nothing was restored");
}

Result<store::PointIndex> LoadAndPin(const std::string& store_dir, const std::string& server_id, store::PointInfo& point,
                                     store::PackReader* packs, bool allow_damaged, Env* env) {
  constexpr int kAttempts = 5;
  Status last;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    BR_ASSIGN_OR_RETURN(auto st, store::ServerStore::Open(store_dir, server_id, false, env));
    const store::PointInfo* now = nullptr;
    for (const auto& p : st->manifest().points)
      if (p.id == point.id) now = &p;
    if (now == nullptr)
      return NotFound("server '" + server_id + "' point " + std::to_string(point.id) +
                      " expired while the restore started (retention on the staging); pick another point");
    point = *now;
    auto idx = st->LoadIndex(point);
    *packs = store::PackReader(st->dir(), env);
    Result<bool> pinned = idx.ok() ? packs->OpenAll(*idx) : Result<bool>(idx.status());
    if (pinned.ok() && !*pinned) return idx;  // too many packs to hold open: opened one by one
    auto again = store::ServerStore::Open(store_dir, server_id, false, env);
    bool unchanged = again.ok() && std::any_of(again.value()->manifest().points.begin(),
                                               again.value()->manifest().points.end(), [&](const store::PointInfo& p) {
                                                 return p.id == point.id && p.index_checksum == point.index_checksum;
                                               });
    if (pinned.ok() && unchanged) return idx;
    last = pinned.ok() ? Unavailable("the staging rewrote the point's index meanwhile") : pinned.status();
    if (unchanged && allow_damaged) return idx;  // a missing pack: its extents are listed as damaged
    if (unchanged) return last;  // nothing moved: the store is damaged, not busy
  }
  return last.Annotate("point " + std::to_string(point.id) + " kept changing under the restore (" +
                       std::to_string(kAttempts) + " attempts)");
}

SourceSpec RestoreRequest::Source() const {
  SourceSpec spec{store_dir, staging, tls, server_id, key_file, s3};
  if (!staging.empty()) FillTlsDefaults(&spec);
  return spec;
}

Result<RestoreSummary> Restore(const RestoreRequest& req) {
  uint64_t start = MonotonicNs();
  BR_ASSIGN_OR_RETURN(auto keys, KeyChain::Load(req.key_file, req.server_id));
  BR_ASSIGN_OR_RETURN(auto source, OpenSource(req.Source(), keys->keys()));
  BR_ASSIGN_OR_RETURN(store::Manifest m, source->LoadManifest());
  BR_RETURN_IF_ERROR(CheckKeyFile(m, *keys, req.key_file, req.server_id));
  BR_RETURN_IF_ERROR(CheckDescent(m, req.expect_point, *keys, [&](const store::PointInfo& p) -> Result<VolumeSeal> {
    store::PointInfo point = p;
    BR_ASSIGN_OR_RETURN(store::PointIndex idx, source->OpenPoint(point, false));
    if (idx.seals.empty()) return DataLoss("point " + std::to_string(p.id) + " has no seal");
    return idx.seals.front();
  }));
  RestoreSummary sum;
  BR_ASSIGN_OR_RETURN(sum.point, ResolvePoint(m, req.point_spec));
  BR_ASSIGN_OR_RETURN(store::PointIndex idx, source->OpenPoint(sum.point, req.allow_damaged));

  std::map<uint16_t, std::string> targets = req.targets;
  if (!req.output_dir.empty()) {
    BR_RETURN_IF_ERROR(MakeDirs(req.output_dir, 0700));
    for (uint16_t v = 0; v < idx.volume_sizes.size(); ++v)
      targets[v] = req.output_dir + "/vol-" + std::to_string(v) + ".img";
  }
  if (targets.empty()) return InvalidArgument("nothing to restore to: give --output DIR or --target INDEX=PATH");
  for (const auto& [vol, path] : targets)
    if (vol >= idx.volume_sizes.size())
      return InvalidArgument("--target " + std::to_string(vol) + "=" + path + ": point " +
                             std::to_string(sum.point.id) + " has only " +
                             std::to_string(idx.volume_sizes.size()) + " volume(s)");

  const KeyChain::Derived& point_key = keys->ForIndex(idx);  // the key this point is sealed under
  RecordOpener opener(keys->keys(), req.server_id);
  const SealKeys* seal_keys = point_key.seal_keys.get();
  const BlockFingerprinter& fingerprinter = point_key.fingerprinter;
  SealCheck check{seal_keys, &fingerprinter};
  if (req.delta) {
    TrackedBases tracked;
    if (!req.agent_state_dir.empty()) {
      BR_ASSIGN_OR_RETURN(tracked, LoadTrackedBases(*source, m, req.server_id, req.agent_state_dir, targets, *keys, idx));
      sum.untracked_why = tracked.why_not;
      if (tracked.why_not.empty()) sum.tracked_base_point = tracked.point.id;
    }
    for (const auto& [vol, path] : targets) {
      bool done = false;
      if (sum.tracked_base_point != 0) {
        BR_ASSIGN_OR_RETURN(done, RestoreTrackedDelta(*source, req.server_id, sum.point, idx, vol, path, tracked, opener,
                                                      *seal_keys, fingerprinter, &sum));
        sum.tracked_volumes += done ? 1 : 0;
      }
      if (!done)
        BR_RETURN_IF_ERROR(RestoreDelta(*source, req.server_id, sum.point, idx, vol, path, opener, *seal_keys,
                                        fingerprinter, &sum));
      sum.written[vol] = path;
    }
    sum.seconds = static_cast<double>(MonotonicNs() - start) / 1e9;
    return sum;
  }
  uint64_t total = 0;
  for (const auto& e : idx.entries)
    if (targets.count(e.volume)) total += e.length;
  ProgressBar progress("restoring", ProgressBar::StderrIsTerminal());
  uint64_t done = 0;
  for (const auto& [vol, path] : targets) {
    BR_ASSIGN_OR_RETURN(Target t, OpenTarget(path, idx.volume_sizes[vol], !req.output_dir.empty()));
    Status st = RestoreVolume(*source, req.server_id, sum.point, idx, vol, t, opener, check,
                              req.allow_damaged, &sum, &progress, &done, total);
    if (!st.ok()) {
      // Never leave a half-written image under a name that looks finished.
      if (t.write_path != t.final_path) unlink(t.write_path.c_str());
      return st;
    }
    sum.written[vol] = t.final_path;
  }
  progress.Finish();
  sum.seconds = static_cast<double>(MonotonicNs() - start) / 1e9;
  return sum;
}

}  // namespace blockrep::recovery
