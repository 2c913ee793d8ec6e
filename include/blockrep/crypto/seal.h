// Point seals (docs/FORMAT.md, Point seals): the agent's signed statement of what each volume holds at a point,
// so a staging that drops a record from a point, or rolls an extent back to an older authentic
// record, is caught at restore (records alone cannot show that: each one is authentic).
//
// A volume is cut into regions (a power of two ≥ 1 MiB, at most kSealRegionsMax of them). A
// region's digest is
//
//   D = Σ AES-256_Kr( u64 block index ‖ u64 fingerprint )   mod 2^128
//
// over its non-zero 4 KiB blocks, with the keyed block fingerprint of blockrep/crypto/fingerprint.h.
// A sum, not a hash chain, so the agent updates it in O(1) per block it reads (subtract the old
// block's term, add the new one's) and the restore recomputes it from the plaintext it writes,
// in any order. Without Kr the staging cannot compute a term, so it cannot choose other blocks
// whose terms add up to the same sum. The seal of a volume (its region digests, the point's id,
// time and flags, the volume's index, count and size) is MAC'd with HMAC-SHA256 under Km, bound
// to the server-id. Kr and Km are derived from the data key (HKDF), so the staging has neither.
//
// Each seal also names the point it follows on the chain (the chain's head when the agent
// started it) and that point's volume-0 seal MAC, under the same MAC: a link the staging cannot
// forge, so that a recovery told which point an agent last saw acknowledged can tell whether the
// chain it reads descends from it (recovery/descent.h).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/base/status.h"

namespace blockrep {

inline constexpr uint64_t kSealRegionBytesMin = 1u << 20;
static_assert(kSealRegionBytesMin % kBlockBytes == 0, "a seal region holds whole blocks");
// Fine enough that instant access (blockrep-recover mount) checks a read against the seal by
// decoding one small region: 1 MiB regions up to 32 GiB volumes, 32 MiB at 1 TiB. A seal then
// takes 24 bytes per region (768 KiB at most), which must fit one frame (static_assert in wire.h).
inline constexpr uint32_t kSealRegionsMax = 32768;
inline constexpr size_t kSealMacBytes = 32;

// A point's flags, as the seal (and END_POINT, and the manifest) carry them.
inline constexpr uint32_t kSealFlagConsistent = 1;  // its last blocks were read under a freeze
inline constexpr uint32_t kSealFlagLabelled = 2;    // an operator's label follows the flags
inline constexpr uint32_t kSealFlagsKnown = kSealFlagConsistent | kSealFlagLabelled;

// An operator's label of a point ("before-upgrade"): 1..64 characters of [A-Za-z0-9._-],
// starting with a letter, so that it can never read as a point id, a time or "latest".
inline constexpr size_t kPointLabelBytesMax = 64;
// Ok, or why `label` is not one (naming the rule).
Status CheckPointLabel(const std::string& label);

// The encoded size of a seal with `regions` regions and a label of `label_bytes` (0: none).
inline constexpr size_t SealEncodedSize(size_t regions, size_t label_bytes = 0) {
  return 84 + (label_bytes ? 1 + label_bytes : 0) + regions * 24 + kSealMacBytes;
}
inline constexpr size_t kSealEncodedBytesMax = SealEncodedSize(kSealRegionsMax, kPointLabelBytesMax);

// Bytes per region for a volume of `volume_bytes`: the smallest power of two ≥ 1 MiB that needs
// at most kSealRegionsMax regions.
uint64_t SealRegionBytes(uint64_t volume_bytes);
uint32_t SealRegionCount(uint64_t volume_bytes);

struct Digest128 {
  uint64_t lo = 0, hi = 0;
  void Add(const Digest128& o) {
    uint64_t l = lo + o.lo;
    hi += o.hi + (l < lo ? 1 : 0);
    lo = l;
  }
  void Sub(const Digest128& o) {
    uint64_t l = lo - o.lo;
    hi -= o.hi + (lo < o.lo ? 1 : 0);
    lo = l;
  }
  bool operator==(const Digest128&) const = default;
};

// The point a seal's point follows, and the MAC of that point's volume-0 seal (all zero when the
// agent did not know it: then only the id links them). Point 0: the chain was empty.
struct SealLink {
  uint64_t point_id = 0;
  std::array<uint8_t, kSealMacBytes> mac{};
  bool KnowsMac() const;
};

struct VolumeSeal {
  uint64_t point_id = 0;
  uint64_t time_ns = 0;  // the point's time (BEGIN_POINT)
  uint32_t flags = 0;    // the point's flags (END_POINT): kSealFlag*
  std::string label;     // with kSealFlagLabelled: the operator's label, under the MAC too
  uint16_t volume = 0;
  uint16_t volume_count = 0;
  uint64_t volume_bytes = 0;
  uint64_t region_bytes = 0;
  std::vector<Digest128> regions;
  // Per region, the newest point in which the agent sent a record there (0: not known), so that
  // a mismatch can say which point's record is missing.
  std::vector<uint64_t> region_points;
  SealLink prev;  // prev.point_id < point_id
  std::array<uint8_t, kSealMacBytes> mac{};

  void AppendEncoded(ByteWriter* w) const;
  Bytes Encode() const;
  // Structure only (the MAC needs the key): lengths, region size and count agree with the
  // volume size, volume < volume_count.
  static Result<VolumeSeal> Read(ByteReader* r);
  static Result<VolumeSeal> Decode(ByteSpan p);
};

// The keys of the seals of one server's chain.
class SealKeys {
 public:
  static Result<std::unique_ptr<SealKeys>> Create(const DataKey& key, std::string server_id);
  ~SealKeys();
  SealKeys(const SealKeys&) = delete;
  SealKeys& operator=(const SealKeys&) = delete;

  std::array<uint8_t, kSealMacBytes> Mac(const VolumeSeal& seal) const;
  // Constant-time comparison of the seal's MAC with the expected one.
  bool Authentic(const VolumeSeal& seal) const;
  // AES-256 of each 16-byte term in place (ECB, one call for the batch).
  void Encrypt(uint8_t* terms, size_t count) const;

 private:
  SealKeys() = default;
  std::string server_id_;
  std::array<uint8_t, 32> mac_key_{};
  void* ctx_ = nullptr;  // EVP_CIPHER_CTX, AES-256-ECB under the region key
};

// The region digests of one volume, updated block by block. Terms are batched (one AES call per
// kBatchMax blocks); call Flush before reading regions().
class RegionDigests {
 public:
  RegionDigests(const SealKeys* keys, uint64_t volume_bytes);
  // Adds (or, with `remove`, subtracts) the term of block `block` whose fingerprint is `fp`.
  // Fingerprint 0 (zeros) has no term.
  void Note(uint64_t block, uint64_t fp, bool remove = false);
  void Flush();
  const std::vector<Digest128>& regions() const { return regions_; }
  std::vector<Digest128>* mutable_regions() { return &regions_; }
  uint64_t region_bytes() const { return region_bytes_; }
  uint64_t volume_bytes() const { return volume_bytes_; }

 private:
  static constexpr size_t kBatchMax = 4096;
  const SealKeys* keys_;
  uint64_t volume_bytes_, region_bytes_;
  std::vector<Digest128> regions_;
  Bytes batch_;                   // 16 bytes per pending term
  std::vector<uint64_t> pending_;  // region index, with bit 63 set for a removal
};

// Adds the terms of `data` (the volume's bytes from block-aligned `offset`) to `digests`.
void NoteData(const BlockFingerprinter& fingerprinter, uint64_t offset, ByteSpan data, RegionDigests* digests);

// The digest of one region computed from its plaintext `data` (the volume's bytes from the
// region's start, `offset`; holes as zeros): what instant access compares with the seal's
// region, without RegionDigests' per-volume table.
Digest128 DigestOfRegion(const SealKeys& keys, const BlockFingerprinter& fingerprinter, uint64_t offset, ByteSpan data);

// Finishes a seal: fills the digests (flushed), the region points (all 0 when empty) and the MAC.
// `flags` has kSealFlagLabelled exactly when `label` is not empty (a checked label).
VolumeSeal MakeSeal(const SealKeys& keys, uint64_t point_id, uint64_t time_ns, uint32_t flags, uint16_t volume,
                    uint16_t volume_count, RegionDigests* digests, std::vector<uint64_t> region_points = {},
                    const SealLink& prev = {}, const std::string& label = {});

// Indexes of the regions where `seal` and `computed` differ (all of them if the counts differ).
std::vector<uint32_t> MismatchedRegions(const VolumeSeal& seal, const std::vector<Digest128>& computed);

}  // namespace blockrep
