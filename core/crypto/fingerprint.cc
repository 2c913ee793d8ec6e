#include "blockrep/crypto/fingerprint.h"

#include "blockrep/base/check.h"

#include <openssl/evp.h>


#define XXH_INLINE_ALL
#include <xxhash.h>

namespace blockrep {
namespace {

// One AES-256-ECB context per thread, keyed for the fingerprinter that used it last.
struct ThreadCipher {
  EVP_CIPHER_CTX* ctx = nullptr;
  uint64_t key_id = 0;
  ~ThreadCipher() { EVP_CIPHER_CTX_free(ctx); }
};

void EncryptBlock(const std::array<uint8_t, 32>& key, uint64_t key_id, const uint8_t in[16], uint8_t out[16]) {
  thread_local ThreadCipher cipher;
  // Failures here mean a broken crypto library or no memory: a fingerprint must never be
  // computed some other way, so they are fatal.
  if (cipher.ctx == nullptr) cipher.ctx = EVP_CIPHER_CTX_new();
  BR_CHECK(cipher.ctx != nullptr);
  if (cipher.key_id != key_id) {
    BR_CHECK(EVP_EncryptInit_ex(cipher.ctx, EVP_aes_256_ecb(), nullptr, key.data(), nullptr) == 1);
    EVP_CIPHER_CTX_set_padding(cipher.ctx, 0);
    cipher.key_id = key_id;
  }
  int len = 0;
  BR_CHECK(EVP_EncryptUpdate(cipher.ctx, out, &len, in, 16) == 1 && len == 16);
}

}  // namespace

Result<BlockFingerprinter> BlockFingerprinter::Create(const DataKey& key) {
  BlockFingerprinter f;
  static_assert(sizeof(f.secret_) >= XXH3_SECRET_SIZE_MIN);
  ByteSpan ikm(key.bytes.data(), key.bytes.size());
  BR_RETURN_IF_ERROR(HkdfSha256(ikm, ByteSpan(), "blockrep block fingerprint v2", f.secret_.data(), f.secret_.size()));
  BR_RETURN_IF_ERROR(HkdfSha256(ikm, ByteSpan(), "blockrep block fingerprint prp v2", f.prp_key_.data(), f.prp_key_.size()));
  // Not secret (it only tells keys apart in the per-thread cache); never 0, the cache's "none".
  f.prp_key_id_ = XXH3_64bits(f.prp_key_.data(), f.prp_key_.size()) | 1;
  return f;
}

uint64_t BlockFingerprinter::Block(uint64_t offset, ByteSpan block) const {
  if (IsAllZero(block)) return 0;
  XXH3_state_t state;
  XXH3_128bits_reset_withSecret(&state, secret_.data(), secret_.size());
  uint8_t where[8];
  for (int i = 0; i < 8; ++i) where[i] = static_cast<uint8_t>(offset >> (8 * i));
  XXH3_128bits_update(&state, where, sizeof(where));
  XXH3_128bits_update(&state, block.data(), block.size());
  XXH128_hash_t h = XXH3_128bits_digest(&state);
  uint8_t in[16], out[16];
  for (int i = 0; i < 8; ++i) {
    in[i] = static_cast<uint8_t>(h.low64 >> (8 * i));
    in[8 + i] = static_cast<uint8_t>(h.high64 >> (8 * i));
  }
  EncryptBlock(prp_key_, prp_key_id_, in, out);
  uint64_t fp = 0;
  for (int i = 7; i >= 0; --i) fp = (fp << 8) | out[i];
  return fp | 1;  // never 0: that means "zero or absent"
}

void BlockFingerprinter::Append(uint64_t offset, ByteSpan data, Bytes* out) const {
  for (size_t pos = 0; pos < data.size(); pos += kFingerprintBlockBytes) {
    size_t len = std::min(kFingerprintBlockBytes, data.size() - pos);
    uint64_t fp = Block(offset + pos, data.subspan(pos, len));
    for (int i = 0; i < 8; ++i) out->push_back(static_cast<uint8_t>(fp >> (8 * i)));
  }
}

}  // namespace blockrep
