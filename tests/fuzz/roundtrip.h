// Decode-encode-decode: whatever a parser accepts must re-encode to bytes it accepts again, and
// to the same bytes a second time (nothing is lost or invented between the two forms).
#pragma once

#include "fuzz_util.h"

namespace blockrep::fuzz {

template <typename Message>
void RoundTrip(ByteSpan input) {
  auto first = Message::Decode(input);
  if (!first.ok()) return;
  Bytes encoded = first->Encode();
  auto second = Message::Decode(encoded);
  FUZZ_CHECK(second.ok());
  FUZZ_CHECK(second->Encode() == encoded);
}

}  // namespace blockrep::fuzz
