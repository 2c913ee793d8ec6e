// What the agent knows of the point it is sending, for its seal (blockrep/crypto/seal.h): the keyed
// fingerprint of every 4 KiB block the point will hold, and the region digests they add up to.
//
// Invariant: `fps_` is the state of committed point `base_point()` with every block read since
// overwritten by its latest read, and the digests are the sum over `fps_`. The staging's point
// being sent holds exactly that state once every read is in it (records win in read order), so
// its seal is the digests at END_POINT. The fingerprints take 8 bytes per 4 KiB block protected,
// in memory or, for large volumes, in a file (fingerprint_table.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blockrep/crypto/seal.h"
#include "blockrep/base/status.h"
#include "fingerprint_table.h"

namespace blockrep::agent {

// Whether `fps`, per volume the fingerprints of point `base_point`, add up to the region digests
// of that point's `seals` (MAC'd with our data key): empty if they do, else why not. With
// `digests`, the digests they add up to are left there.
std::string CheckBaseFingerprints(const SealKeys& keys, uint64_t base_point, const std::vector<uint64_t>& volume_bytes,
                                  const std::vector<FingerprintTable>& fps,
                                  const std::vector<std::optional<VolumeSeal>>& seals,
                                  std::vector<std::unique_ptr<RegionDigests>>* digests = nullptr);

class PointSeal {
 public:
  // `spill_dir`: where the fingerprints of large volumes live (fingerprint_table.h).
  PointSeal(const SealKeys* keys, std::string spill_dir = {}) : keys_(keys), spill_dir_(std::move(spill_dir)) {}

  // The state of an empty chain (a full point, or a rescan that reads every block): all zero.
  [[nodiscard]] Status StartEmpty(const std::vector<uint64_t>& volume_bytes);
  // Takes the staging's fingerprints of its last point `base_point` if they add up to the
  // region digests of the base's seals (MAC'd by us), and keeps them as the base. On mismatch,
  // returns why (and keeps nothing): the staging's store is damaged or not what we sent.
  // `fps` is moved from only when they are taken.
  std::string AdoptBase(uint64_t base_point, const std::vector<uint64_t>& volume_bytes,
                        std::vector<FingerprintTable>* fps, const std::vector<std::optional<VolumeSeal>>& seals);
  // The block fingerprints of committed point `point` when the state is exactly that point's
  // (nothing read since); the state is then unknown until StartEmpty or AdoptBase. Empty
  // otherwise, and the state is kept.
  std::vector<FingerprintTable> TakeBase(uint64_t point, const std::vector<uint64_t>& volume_bytes);
  // Whether the state is that of committed point `point` plus reads since (0: empty chain).
  bool KnowsBase(uint64_t point, const std::vector<uint64_t>& volume_bytes) const;
  // Blocks [offset, offset + 4 KiB × n) of `volume` now hold data with fingerprints `fps`.
  void Note(size_t volume, uint64_t offset, const uint64_t* fps, size_t n);
  // A record for [offset, offset + length) of `volume` is part of the point being sent.
  void Sent(size_t volume, uint64_t offset, uint64_t length);
  // The point just sent was committed: it is the base from now on.
  void Committed(uint64_t point);
  // `prev`: the chain's head, which the point follows (VolumeSeal::prev).
  std::vector<VolumeSeal> Seals(uint64_t point_id, uint64_t time_ns, uint32_t flags, const SealLink& prev = {},
                                const std::string& label = {});
  // The block fingerprints of base_point() (after Committed: of the point just committed).
  const std::vector<FingerprintTable>& fingerprints() const { return fps_; }
  const std::string& spill_dir() const { return spill_dir_; }
  const SealKeys& keys() const { return *keys_; }
  const std::vector<uint64_t>& volume_bytes() const { return volume_bytes_; }
  uint64_t base_point() const { return base_point_; }

 private:
  const SealKeys* keys_;
  std::string spill_dir_;
  bool known_ = false;
  uint64_t base_point_ = 0;
  std::vector<uint64_t> volume_bytes_;
  std::vector<FingerprintTable> fps_;  // per volume, per 4 KiB block
  std::vector<std::unique_ptr<RegionDigests>> digests_;
  std::vector<std::vector<uint64_t>> region_points_;  // per volume, per region: VolumeSeal::region_points
  std::vector<std::vector<bool>> sent_;               // per volume, per region: a record went there
  bool noted_ = false;  // a read was noted since the state was last exactly a point's (or empty)
};

}  // namespace blockrep::agent
