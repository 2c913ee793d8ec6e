// Keyed fingerprints of 4 KiB blocks (docs/TRACKING.md, scan tracking). A fingerprint is
//
//   F(offset, block) = first 8 bytes of AES-256_Kp( XXH3-128_S(u64 offset ‖ block) ), low bit set
//
// with the 192-byte XXH3 secret S and the AES key Kp both derived from the data key by HKDF: a
// keyed hash, then a block cipher over its output (hash-then-encrypt). The staging, which stores
// fingerprints beside the records, sees only AES outputs: no XXH3 value, so none of XXH3's
// structure to solve for S, and no plain hash of plaintext to match against known data. Equal
// blocks at different offsets get unrelated fingerprints. As a PRF it rests on AES and on keyed
// XXH3-128 behaving as an almost-universal hash (unproven, but the attacker never sees it). Costs
// XXH3's speed plus one AES block per 4 KiB.
//
// 0 is reserved for "all zero or absent"; a block with data never fingerprints to 0.
#pragma once

#include <array>
#include <cstdint>

#include "blockrep/base/bytes.h"
#include "blockrep/base/limits.h"
#include "blockrep/crypto/record.h"
#include "blockrep/base/status.h"

namespace blockrep {

inline constexpr size_t kFingerprintBlockBytes = kBlockBytes;  // one fingerprint per block

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
  std::array<uint8_t, 32> prp_key_{};
  // Names prp_key_ in each thread's AES context cache (fingerprint.cc): an EVP context is not to
  // be shared between threads, and a fingerprinter is used from several.
  uint64_t prp_key_id_ = 0;
};

}  // namespace blockrep
