#include "blockrep/fingerprint.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace blockrep {

Result<BlockFingerprinter> BlockFingerprinter::Create(const DataKey& key) {
  BlockFingerprinter f;
  static_assert(sizeof(f.secret_) >= XXH3_SECRET_SIZE_MIN);
  BR_RETURN_IF_ERROR(HkdfSha256(ByteSpan(key.bytes.data(), key.bytes.size()), ByteSpan(),
                                "blockrep block fingerprint v1", f.secret_.data(), f.secret_.size()));
  return f;
}

uint64_t BlockFingerprinter::Block(uint64_t offset, ByteSpan block) const {
  if (IsAllZero(block)) return 0;
  XXH3_state_t state;
  XXH3_64bits_reset_withSecret(&state, secret_.data(), secret_.size());
  uint8_t where[8];
  for (int i = 0; i < 8; ++i) where[i] = static_cast<uint8_t>(offset >> (8 * i));
  XXH3_64bits_update(&state, where, sizeof(where));
  XXH3_64bits_update(&state, block.data(), block.size());
  return XXH3_64bits_digest(&state) | 1;  // never 0: that means "zero or absent"
}

void BlockFingerprinter::Append(uint64_t offset, ByteSpan data, Bytes* out) const {
  for (size_t pos = 0; pos < data.size(); pos += kFingerprintBlockBytes) {
    size_t len = std::min(kFingerprintBlockBytes, data.size() - pos);
    uint64_t fp = Block(offset + pos, data.subspan(pos, len));
    for (int i = 0; i < 8; ++i) out->push_back(static_cast<uint8_t>(fp >> (8 * i)));
  }
}

}  // namespace blockrep
