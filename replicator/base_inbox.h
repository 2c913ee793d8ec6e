// What the agent receives of the staging's copy of its last point (the base), for a rescan or a
// base load (docs/TRACKING.md, Scan and rescan): the keyed fingerprints of every 4 KiB block, which arrive
// in order per volume (FINGERPRINTS), and each volume's seal (BASE_SEAL). Anything not asked for,
// out of order or out of bounds is the staging breaking the protocol. They take 8 bytes per 4 KiB
// block while held, in memory or, for large volumes, in a file (fingerprint_table.h); Release
// gives them back.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "blockrep/crypto/seal.h"
#include "blockrep/base/status.h"
#include "blockrep/net/wire.h"
#include "fingerprint_table.h"

namespace blockrep::agent {

class BaseInbox {
 public:
  // Where the fingerprints of large volumes live (fingerprint_table.h); none: in memory.
  void set_spill_dir(std::string dir) { spill_dir_ = std::move(dir); }
  // Fingerprints of volumes of `volume_bytes` are asked for: unknown until they arrive.
  [[nodiscard]] Status ExpectFingerprints(const std::vector<uint64_t>& volume_bytes);
  // They came from elsewhere (<state-dir>/fingerprints), whole.
  void TakeFingerprints(std::vector<FingerprintTable> fps, const std::vector<uint64_t>& volume_bytes);
  // The seals of `volumes` volumes are asked for, in volume order.
  void ExpectSeals(size_t volumes);
  Status OnFingerprints(const wire::Fingerprints& m);
  Status OnSeal(wire::BaseSeal m);

  bool SealsComplete() const { return seals_received_ == seals_.size(); }
  bool FingerprintsComplete() const;
  // Fingerprints of `volume` are known up to this byte offset.
  uint64_t known_end(size_t volume) const { return volume < known_end_.size() ? known_end_[volume] : 0; }
  // The staging's fingerprint of block `block` of `volume`; kFingerprintUnknown where it did not
  // say (not arrived yet, past the end, or MarkUnknown).
  uint64_t Fingerprint(size_t volume, uint64_t block) const;
  // The first block in [block, end) of `volume` whose fingerprint is not 0 or not known yet, or
  // `end` (FingerprintTable::NextNonZero: a spilled table's holes are skipped whole).
  uint64_t NextNonZero(size_t volume, uint64_t block, uint64_t end) const;
  std::vector<FingerprintTable>* mutable_fingerprints() { return &fps_; }
  const std::string& spill_dir() const { return spill_dir_; }
  const std::vector<std::optional<VolumeSeal>>& seals() const { return seals_; }
  // Forgets what the staging said of blocks [offset, offset + length) of `volume` (they are sent
  // whatever their fingerprint).
  void MarkUnknown(size_t volume, uint64_t offset, uint64_t length);
  void ReleaseSeals();
  void ReleaseFingerprints();

 private:
  std::string spill_dir_;
  std::vector<uint64_t> volume_bytes_;
  std::vector<FingerprintTable> fps_;  // per volume, per 4 KiB block
  std::vector<uint64_t> known_end_;        // per volume
  std::vector<std::optional<VolumeSeal>> seals_;
  size_t seals_received_ = 0;
};

}  // namespace blockrep::agent
