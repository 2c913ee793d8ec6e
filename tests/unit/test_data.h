// Data for unit tests, made by the tests: keys and bytes.
#pragma once

#include <random>

#include "blockrep/base/bytes.h"
#include "blockrep/crypto/record.h"

namespace blockrep {

// A data key whose every byte is `fill`, so tests can make equal and different keys.
inline DataKey FilledKey(uint8_t fill) {
  DataKey k;
  k.bytes.fill(fill);
  k.key_id = ComputeKeyId(k.bytes);
  return k;
}

// `n` pseudo-random (incompressible) bytes, the same for the same seed.
inline Bytes RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

}  // namespace blockrep
