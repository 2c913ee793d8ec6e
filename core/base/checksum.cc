#include "blockrep/base/checksum.h"

#include <xxhash.h>

#include <new>

namespace blockrep {

uint64_t Checksum64(ByteSpan data) { return XXH3_64bits(data.data(), data.size()); }

Checksum64Stream::Checksum64Stream() : state_(XXH3_createState()) {
  if (state_ == nullptr) throw std::bad_alloc();
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_));
}

Checksum64Stream::~Checksum64Stream() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Checksum64Stream::Update(ByteSpan data) { XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data.data(), data.size()); }

uint64_t Checksum64Stream::Digest() const { return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_)); }

}  // namespace blockrep
