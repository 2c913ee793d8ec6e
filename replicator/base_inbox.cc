#include "base_inbox.h"

#include <algorithm>

#include "blockrep/crypto/fingerprint.h"
#include "blockrep/store/store.h"

namespace blockrep::agent {

Status BaseInbox::ExpectFingerprints(const std::vector<uint64_t>& volume_bytes) {
  fps_.clear();  // before the new tables are made: never both on disk
  known_end_.assign(volume_bytes.size(), 0);
  volume_bytes_ = volume_bytes;
  BR_ASSIGN_OR_RETURN(fps_, MakeTables(volume_bytes, spill_dir_));
  return Status::Ok();
}

void BaseInbox::TakeFingerprints(std::vector<FingerprintTable> fps, const std::vector<uint64_t>& volume_bytes) {
  volume_bytes_ = volume_bytes;
  fps_ = std::move(fps);
  known_end_ = volume_bytes;
}

void BaseInbox::ExpectSeals(size_t volumes) {
  seals_.assign(volumes, std::nullopt);
  seals_received_ = 0;
}

Status BaseInbox::OnFingerprints(const wire::Fingerprints& m) {
  if (m.volume >= fps_.size() || m.offset != known_end_[m.volume])
    return ProtocolError("staging sent fingerprints nobody asked for");
  FingerprintTable& dst = fps_[m.volume];
  uint64_t first = m.offset / kFingerprintBlockBytes;
  if (first + m.values.size() > dst.size()) return ProtocolError("staging sent too many fingerprints");
  // Zeros are what a new table holds: only the runs of others are written, so the table of a
  // sparse volume stays sparse (fingerprint_table.h).
  const std::vector<uint64_t>& v = m.values;
  for (size_t i = 0; i < v.size();) {
    if (v[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < v.size() && v[j] != 0) ++j;
    dst.Write(first + i, v.data() + i, j - i);
    i = j;
  }
  known_end_[m.volume] = std::min(volume_bytes_[m.volume], m.offset + m.values.size() * kFingerprintBlockBytes);
  return Status::Ok();
}

Status BaseInbox::OnSeal(wire::BaseSeal m) {
  if (m.volume >= seals_.size() || seals_received_ != m.volume) return ProtocolError("staging sent a seal nobody asked for");
  seals_[m.volume] = std::move(m.seal);
  ++seals_received_;
  return Status::Ok();
}

bool BaseInbox::FingerprintsComplete() const {
  for (size_t v = 0; v < known_end_.size(); ++v)
    if (known_end_[v] < volume_bytes_[v]) return false;
  return true;
}

uint64_t BaseInbox::Fingerprint(size_t volume, uint64_t block) const {
  if (volume >= fps_.size() || block >= fps_[volume].size() || block * kFingerprintBlockBytes >= known_end_[volume])
    return store::kFingerprintUnknown;
  return fps_[volume][block];
}

uint64_t BaseInbox::NextNonZero(size_t volume, uint64_t block, uint64_t end) const {
  if (volume >= fps_.size()) return block;
  const uint64_t known_blocks = (known_end_[volume] + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes;
  if (block >= known_blocks) return block;  // not known yet: nothing is skipped
  return fps_[volume].NextNonZero(block, std::min(end, known_blocks));
}

void BaseInbox::MarkUnknown(size_t volume, uint64_t offset, uint64_t length) {
  FingerprintTable& f = fps_[volume];
  for (uint64_t b = offset / kFingerprintBlockBytes; b * kFingerprintBlockBytes < offset + length && b < f.size(); ++b)
    f.Set(b, store::kFingerprintUnknown);
}

void BaseInbox::ReleaseSeals() {
  seals_.clear();
  seals_received_ = 0;
}

void BaseInbox::ReleaseFingerprints() {
  fps_.clear();
  known_end_.clear();
  volume_bytes_.clear();
}

}  // namespace blockrep::agent
