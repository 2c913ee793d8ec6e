#include "blockrep/checksum.h"

#include <xxhash.h>

namespace blockrep {

uint64_t Checksum64(ByteSpan data) { return XXH3_64bits(data.data(), data.size()); }

}  // namespace blockrep
