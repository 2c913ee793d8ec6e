// Records: the unit of data that travels and is stored. One record holds one extent of one volume,
// compressed and then sealed with AES-256-GCM. Layout (docs/FORMAT.md §Record):
//
//   [64-byte cleartext header][ciphertext: stored_len bytes][16-byte GCM tag]
//
// The header travels and is stored in clear so the staging can index records without keys; it is
// authenticated as AAD together with the server-id, so the staging cannot move a record to another
// offset, volume, point or server undetected.
//
// Nonces: each sealer draws a random 128-bit session id and derives a session key
// HKDF-SHA256(data key, salt = session id). The nonce is the sealer's 64-bit record counter, which
// only counts up. A (key, nonce) pair therefore repeats only if two sessions draw the same 128-bit
// id, which is negligible (docs/FORMAT.md §Nonces).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/crypto/codec.h"
#include "blockrep/base/limits.h"
#include "blockrep/base/status.h"

namespace blockrep {

inline constexpr size_t kRecordHeaderSize = 64;
inline constexpr size_t kTagSize = 16;
inline constexpr uint32_t kRecordMagic = 0x31525242;         // "BRR1"
inline constexpr size_t kDataKeyBytes = 32;

using SessionId = std::array<uint8_t, 16>;

struct DataKey {
  std::array<uint8_t, kDataKeyBytes> bytes{};
  // First 8 bytes of HMAC-SHA256(key, "blockrep key id v1"): names the key without revealing it.
  uint64_t key_id = 0;
};

// HKDF-SHA256 (RFC 5869): derives `out_len` bytes from `key`.
Status HkdfSha256(ByteSpan key, ByteSpan salt, const std::string& info, uint8_t* out, size_t out_len);

// Computes key_id for raw key bytes.
uint64_t ComputeKeyId(const std::array<uint8_t, kDataKeyBytes>& bytes);
// A key id as every message names it: 16 hex digits.
std::string KeyIdHex(uint64_t key_id);

enum RecordFlags : uint8_t {
  kRecordIncompressible = 1,  // compression was requested but did not help; stored raw
  kRecordZero = 2,            // the extent is all zeros: no ciphertext, the tag covers the header
};

struct RecordHeader {
  Codec codec = Codec::kNone;
  uint8_t flags = 0;
  uint16_t volume = 0;
  uint32_t plain_len = 0;
  uint32_t stored_len = 0;  // ciphertext bytes, without the tag (0 for a zero record)
  uint64_t offset = 0;      // byte offset in the volume
  uint64_t point_id = 0;
  SessionId session{};
  uint64_t counter = 0;

  size_t total_size() const { return kRecordHeaderSize + stored_len + kTagSize; }
  bool zero() const { return (flags & kRecordZero) != 0; }
  void Encode(uint8_t out[kRecordHeaderSize]) const;
  // Checks magic, version, codec and length bounds; never trusts the input.
  static Result<RecordHeader> Decode(ByteSpan in);
};

// Seals plaintext extents for one server. Not thread-safe; one per sending thread.
class RecordSealer {
 public:
  static Result<std::unique_ptr<RecordSealer>> Create(const DataKey& key, std::string server_id);
  ~RecordSealer();

  // The most bytes a sealed record of `plain_bytes` takes: compression never expands (raw instead).
  static constexpr size_t MaxSealedBytes(size_t plain_bytes) { return kRecordHeaderSize + plain_bytes + kTagSize; }

  // Appends the sealed record (header + ciphertext + tag) to `out`. An all-zero extent becomes a
  // zero record: header and tag only, so a freed or trimmed region costs 80 bytes. Returns the
  // header written.
  Result<RecordHeader> Seal(const CodecChoice& codec, uint16_t volume, uint64_t offset,
                            uint64_t point_id, ByteSpan plain, Bytes* out);
  // The same into `dst`, which holds at least MaxSealedBytes(plain.size()); the record is the
  // first total_size() bytes of it. `zero`: the caller already knows `plain` is all zeros.
  Result<RecordHeader> SealInto(const CodecChoice& codec, uint16_t volume, uint64_t offset, uint64_t point_id,
                                ByteSpan plain, bool zero, uint8_t* dst);

 private:
  RecordSealer() = default;
  Compressor compressor_;
  Bytes aad_;
  std::string server_id_;
  SessionId session_{};
  std::array<uint8_t, 32> session_key_{};
  uint64_t next_counter_ = 0;
  void* ctx_ = nullptr;  // EVP_CIPHER_CTX
};

// Authenticates and decompresses records. Caches derived session keys.
class RecordOpener {
 public:
  RecordOpener(const DataKey& key, std::string server_id);
  // Several data keys (a key file after rotation): each record opens with the one its agent
  // session sealed it under, found once per session (a wrong key fails the tag) and remembered.
  RecordOpener(std::vector<DataKey> keys, std::string server_id);
  ~RecordOpener();
  RecordOpener(const RecordOpener&) = delete;
  RecordOpener& operator=(const RecordOpener&) = delete;

  // `record` is a whole stored record. On success `plain` holds header.plain_len bytes, and
  // `*key_index` (if given) the index of the key that opened it. A failed tag check is
  // kUnauthenticated; malformed input is kDataLoss.
  Status Open(ByteSpan record, RecordHeader* header, Bytes* plain, size_t* key_index = nullptr);
  // The same, the plaintext going to the start of `room` (which must hold header.plain_len bytes,
  // else kDataLoss): a restore decodes straight into the buffer it writes the target from.
  Status OpenInto(ByteSpan record, RecordHeader* header, std::span<uint8_t> room, size_t* key_index = nullptr);

 private:
  // Checks the header and the tag; the decrypted payload is left in scratch_.
  Status Authenticate(ByteSpan record, RecordHeader* header, size_t* key_index);
  // The plaintext of an authenticated record (scratch_) into `out`, exactly header.plain_len bytes.
  Status Plaintext(const RecordHeader& h, std::span<uint8_t> out);
  // Decrypts with one session key; a failed tag is kUnauthenticated.
  Status Decrypt(const std::array<uint8_t, 32>& session_key, ByteSpan record, const RecordHeader& h);
  std::vector<DataKey> keys_;
  std::string server_id_;
  struct SessionKey {
    std::array<uint8_t, 32> key;
    size_t data_key;  // index in keys_
  };
  std::map<SessionId, SessionKey> session_keys_;
  Bytes scratch_;
  void* ctx_ = nullptr;
};

}  // namespace blockrep
