// <server dir>/PENDING (docs/FORMAT.md §PENDING): the durable part of a point whose session ended
// before END_POINT — its BEGIN_POINT and the records that were fsync'd and acknowledged — so that
// the agent can resume the point instead of sending them again, also after a staging restart.
#pragma once

#include <cstdint>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"
#include "blockrep/net/wire.h"

namespace blockrep::store {

// A memory bound: a point with more durable records is not kept (the agent sends it again).
inline constexpr size_t kPendingExtentsMax = 4u << 20;
inline constexpr size_t kPendingFileBytesMax = 1u << 30;
static_assert(kPendingExtentsMax * (kIndexEntrySize + 1) < kPendingFileBytesMax);

struct PendingPoint {
  wire::BeginPoint begin;
  std::vector<NewExtent> extents;  // arrival order
  uint64_t bytes = 0;              // stored bytes of their records
};

Bytes EncodePending(const PendingPoint& p);
// kDataLoss naming what is wrong (checksum, magic, truncation, count).
Result<PendingPoint> DecodePending(ByteSpan data);

}  // namespace blockrep::store
