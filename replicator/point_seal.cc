#include "point_seal.h"

#include <algorithm>

#include "blockrep/crypto/fingerprint.h"

namespace blockrep::agent {

Status PointSeal::StartEmpty(const std::vector<uint64_t>& volume_bytes) {
  known_ = false;
  fps_.clear();  // before the new tables are made: never both on disk
  BR_ASSIGN_OR_RETURN(fps_, MakeTables(volume_bytes, spill_dir_));
  volume_bytes_ = volume_bytes;
  digests_.clear();
  region_points_.assign(volume_bytes.size(), {});
  sent_.assign(volume_bytes.size(), {});
  for (size_t v = 0; v < volume_bytes.size(); ++v) {
    digests_.push_back(std::make_unique<RegionDigests>(keys_, volume_bytes[v]));
    region_points_[v].assign(SealRegionCount(volume_bytes[v]), 0);
    sent_[v].assign(SealRegionCount(volume_bytes[v]), false);
  }
  base_point_ = 0;
  known_ = true;
  noted_ = false;
  return Status::Ok();
}

std::string CheckBaseFingerprints(const SealKeys& keys, uint64_t base_point, const std::vector<uint64_t>& volume_bytes,
                                  const std::vector<FingerprintTable>& fps,
                                  const std::vector<std::optional<VolumeSeal>>& seals,
                                  std::vector<std::unique_ptr<RegionDigests>>* digests) {
  if (seals.size() != volume_bytes.size() || fps.size() != volume_bytes.size()) return "volume count differs";
  std::vector<std::unique_ptr<RegionDigests>> sums;
  for (size_t v = 0; v < volume_bytes.size(); ++v) {
    std::string vol = "volume " + std::to_string(v);
    if (!seals[v]) return vol + ": point " + std::to_string(base_point) + " has no seal";
    const VolumeSeal& s = *seals[v];
    if (!keys.Authentic(s)) return vol + ": the seal's MAC does not verify (not sealed with this data key)";
    if (s.point_id != base_point) return vol + ": the seal is point " + std::to_string(s.point_id) + "'s";
    if (s.volume_bytes != volume_bytes[v])
      return vol + ": it was " + std::to_string(s.volume_bytes) + " bytes, now " + std::to_string(volume_bytes[v]);
    auto d = std::make_unique<RegionDigests>(&keys, volume_bytes[v]);
    const FingerprintTable& theirs = fps[v];
    std::vector<uint64_t> chunk(8192);
    for (uint64_t b = theirs.NextData(0); b < theirs.size(); b = theirs.NextData(b)) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), theirs.size() - b));
      theirs.Read(b, chunk.data(), n);
      for (size_t i = 0; i < n; ++i)
        if (chunk[i] != 0) d->Note(b + i, chunk[i]);
      b += n;
    }
    d->Flush();
    std::vector<uint32_t> bad = MismatchedRegions(s, d->regions());
    if (!bad.empty())
      return vol + ": " + std::to_string(bad.size()) + " region(s) of the fingerprints do not add up to the seal, first bytes " +
             std::to_string(uint64_t{bad[0]} * s.region_bytes) + ".." + std::to_string((uint64_t{bad[0]} + 1) * s.region_bytes);
    sums.push_back(std::move(d));
  }
  if (digests != nullptr) *digests = std::move(sums);
  return {};
}

std::string PointSeal::AdoptBase(uint64_t base_point, const std::vector<uint64_t>& volume_bytes,
                                 std::vector<FingerprintTable>* fps,
                                 const std::vector<std::optional<VolumeSeal>>& seals) {
  known_ = false;
  std::vector<std::unique_ptr<RegionDigests>> digests;
  std::string why = CheckBaseFingerprints(*keys_, base_point, volume_bytes, *fps, seals, &digests);
  if (!why.empty()) return why;
  volume_bytes_ = volume_bytes;
  region_points_.clear();
  sent_.clear();
  for (const auto& seal : seals) {
    region_points_.push_back(seal->region_points);
    sent_.emplace_back(seal->regions.size(), false);
  }
  fps_ = std::move(*fps);
  fps->clear();
  digests_ = std::move(digests);
  base_point_ = base_point;
  known_ = true;
  noted_ = false;
  return {};
}

std::vector<FingerprintTable> PointSeal::TakeBase(uint64_t point, const std::vector<uint64_t>& volume_bytes) {
  if (!KnowsBase(point, volume_bytes) || point == 0 || noted_) return {};
  known_ = false;
  digests_.clear();
  std::vector<FingerprintTable> fps = std::move(fps_);
  fps_.clear();
  return fps;
}

bool PointSeal::KnowsBase(uint64_t point, const std::vector<uint64_t>& volume_bytes) const {
  return known_ && base_point_ == point && volume_bytes_ == volume_bytes;
}

void PointSeal::Committed(uint64_t point) {
  base_point_ = point;
  noted_ = false;
  for (size_t v = 0; v < sent_.size(); ++v)
    for (size_t r = 0; r < sent_[v].size(); ++r)
      if (sent_[v][r]) {
        region_points_[v][r] = point;
        sent_[v][r] = false;
      }
}

void PointSeal::Sent(size_t volume, uint64_t offset, uint64_t length) {
  if (!known_ || length == 0) return;
  uint64_t region = digests_[volume]->region_bytes();
  for (uint64_t r = offset / region; r <= (offset + length - 1) / region; ++r) sent_[volume][r] = true;
}

void PointSeal::Note(size_t volume, uint64_t offset, const uint64_t* fps, size_t n) {
  if (!known_) return;
  noted_ = true;
  FingerprintTable& mine = fps_[volume];
  RegionDigests& d = *digests_[volume];
  uint64_t first = offset / kFingerprintBlockBytes;
  for (size_t i = 0; i < n; ++i) {
    uint64_t old = mine[first + i];
    if (old == fps[i]) continue;
    d.Note(first + i, old, /*remove=*/true);
    d.Note(first + i, fps[i]);
    mine.Set(first + i, fps[i]);
  }
}

std::vector<VolumeSeal> PointSeal::Seals(uint64_t point_id, uint64_t time_ns, uint32_t flags, const SealLink& prev,
                                        const std::string& label) {
  std::vector<VolumeSeal> out;
  for (size_t v = 0; v < digests_.size(); ++v) {
    std::vector<uint64_t> points = region_points_[v];
    for (size_t r = 0; r < points.size(); ++r)
      if (sent_[v][r]) points[r] = point_id;
    out.push_back(MakeSeal(*keys_, point_id, time_ns, flags, static_cast<uint16_t>(v),
                           static_cast<uint16_t>(digests_.size()), digests_[v].get(), std::move(points), prev, label));
  }
  return out;
}

}  // namespace blockrep::agent
