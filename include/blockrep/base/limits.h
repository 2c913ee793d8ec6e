// The sizes every part of blockrep agrees on, in one place, tied together at compile time. Limits
// of one message or one file live beside it (net/wire.h, store/store.h) and are asserted against
// these.
#pragma once

#include <cstddef>
#include <cstdint>

namespace blockrep {

// The block: what the tracker marks dirty, what a fingerprint and a seal count, the alignment of
// O_DIRECT reads and of every buffer handed to them, the overlay's unit of copy-on-write.
inline constexpr size_t kBlockBytes = 4096;
// A record carries at most this much plaintext (a whole number of blocks).
inline constexpr uint32_t kMaxRecordPlainBytes = 1u << 20;
// A keyed block fingerprint, stored after each non-zero record for every block it covers.
inline constexpr size_t kFingerprintBytes = 8;
inline constexpr size_t kRecordFingerprintBytesMax = kMaxRecordPlainBytes / kBlockBytes * kFingerprintBytes;

static_assert((kBlockBytes & (kBlockBytes - 1)) == 0, "blocks are a power of two");
static_assert(kBlockBytes >= 512, "O_DIRECT needs at least sector alignment");
static_assert(kMaxRecordPlainBytes % kBlockBytes == 0, "a record holds whole blocks");

}  // namespace blockrep
