// A data key for unit tests: every byte `fill`, so tests can make equal and different keys.
#pragma once

#include "blockrep/record.h"

namespace blockrep {

inline DataKey FilledKey(uint8_t fill) {
  DataKey k;
  k.bytes.fill(fill);
  k.key_id = ComputeKeyId(k.bytes);
  return k;
}

}  // namespace blockrep
