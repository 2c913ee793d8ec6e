// Keyed fingerprints of 4 KiB blocks (docs/TRACKING.md, scan tracking). A fingerprint is XXH3-64 over
// (volume offset, block bytes) with a 192-byte secret derived from the data key by HKDF, so the
// staging, which stores them, never holds a plain hash of plaintext it could match against known
// data, and equal blocks at different offsets get unrelated fingerprints.
//
// 0 is reserved for "all zero or absent"; a block with data never fingerprints to 0.
#pragma once

#include <array>
#include <cstdint>

#include "blockrep/bytes.h"
#include "blockrep/record.h"
#include "blockrep/status.h"

namespace blockrep {

inline constexpr size_t kFingerprintBlockBytes = 4096;
inline constexpr size_t kFingerprintBytes = 8;

// Fingerprints stored after a record of `plain_len` bytes (none after a zero record).
inline size_t FingerprintCount(uint32_t plain_len) {
  return (plain_len + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes;
}

class BlockFingerprinter {
 public:
  static Result<BlockFingerprinter> Create(const DataKey& key);
  // The fingerprint of one block (the last block of a volume may be shorter) at `offset`.
  uint64_t Block(uint64_t offset, ByteSpan block) const;
  // Appends the fingerprints of `data` (starting at `offset`, block-aligned) to `out`.
  void Append(uint64_t offset, ByteSpan data, Bytes* out) const;

 private:
  std::array<uint8_t, 192> secret_{};
};

}  // namespace blockrep
