// <server dir>/PENDING (docs/FORMAT.md §PENDING): the durable part of a point whose session ended
// before END_POINT — its BEGIN_POINT and the records that were fsync'd and acknowledged — so that
// the agent can resume the point instead of sending them again, also after a staging restart.
//
// The file is a header and frames of extents. Written whole (a session that ended: `EncodePending`,
// one frame, a *closed* file) or grown while the session lives (a large open point: the header
// with the extents durable so far, then one frame per group commit, each written and synced after
// the commit's pack bytes and before its ACK: a *live* file), so that a staging killed mid-point
// still offers what it acknowledged.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"
#include "blockrep/net/wire.h"

namespace blockrep::store {

// A memory bound: a point with more durable records is not kept (the agent sends it again).
inline constexpr size_t kPendingExtentsMax = 4u << 20;
inline constexpr size_t kPendingFileBytesMax = 1u << 30;
inline constexpr size_t kPendingExtentBytes = kIndexEntrySize + 1;
inline constexpr size_t kPendingFrameOverheadBytes = 4 + 8 + 8;  // count, bytes, checksum
static_assert(kPendingExtentsMax * kPendingExtentBytes + kPendingFrameOverheadBytes < kPendingFileBytesMax);

struct PendingPoint {
  wire::BeginPoint begin;
  std::vector<NewExtent> extents;  // arrival order
  uint64_t bytes = 0;              // stored bytes of their records
};

// A closed file: header and one frame holding every extent.
Bytes EncodePending(const PendingPoint& p);
// A live file's header (no frame yet; `EncodePendingFrame` follows).
Bytes EncodePendingLiveHeader(const wire::BeginPoint& begin);
// One frame: `extents` and the stored bytes of their records.
Bytes EncodePendingFrame(std::span<const NewExtent> extents);

struct DecodedPending {
  PendingPoint point;
  bool live = false;
  // A live file's last write, cut short by a crash (its frame was never synced, so none of its
  // records was acknowledged): ignored.
  uint64_t torn_bytes = 0;
};
// kDataLoss naming what is wrong (checksum, magic, truncation, count). A closed file must be whole;
// a live one may end in a torn frame (then `torn_bytes`).
Result<DecodedPending> DecodePending(ByteSpan data);

}  // namespace blockrep::store
