// Non-cryptographic checksums for stored structures (torn writes, bit rot). Authenticity comes
// from AES-GCM tags and the key, never from these.
#pragma once

#include <cstdint>

#include "blockrep/bytes.h"

namespace blockrep {

uint64_t Checksum64(ByteSpan data);

}  // namespace blockrep
