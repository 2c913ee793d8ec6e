// Non-cryptographic checksums for stored structures (torn writes, bit rot). Authenticity comes
// from AES-GCM tags and the key, never from these.
#pragma once

#include <cstdint>

#include "blockrep/base/bytes.h"

namespace blockrep {

uint64_t Checksum64(ByteSpan data);

// XXH3-64 of data given in pieces: equal to Checksum64 of their concatenation.
class Checksum64Stream {
 public:
  Checksum64Stream();
  ~Checksum64Stream();
  Checksum64Stream(const Checksum64Stream&) = delete;
  Checksum64Stream& operator=(const Checksum64Stream&) = delete;
  void Update(ByteSpan data);
  uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t
};

}  // namespace blockrep
