#include "blockrep/store/pending.h"

#include "blockrep/base/checksum.h"

namespace blockrep::store {
namespace {

constexpr uint64_t kPendingMagic = 0x33444e4550524242ull;  // "BBRPEND3"
constexpr uint8_t kClosed = 0, kLive = 1;

Bytes Header(const wire::BeginPoint& begin, uint8_t kind) {
  Bytes b;
  ByteWriter w(&b);
  w.U64(kPendingMagic);
  w.U8(kind);
  Bytes bp = begin.Encode();
  w.U32(static_cast<uint32_t>(bp.size()));
  w.Raw(bp);
  w.U64(Checksum64(b));
  return b;
}

}  // namespace

Bytes EncodePendingLiveHeader(const wire::BeginPoint& begin) { return Header(begin, kLive); }

Bytes EncodePendingFrame(std::span<const NewExtent> extents) {
  Bytes b;
  b.reserve(kPendingFrameOverheadBytes + extents.size() * kPendingExtentBytes);
  ByteWriter w(&b);
  uint64_t bytes = 0;
  for (const NewExtent& x : extents) bytes += x.entry.record_bytes;
  w.U32(static_cast<uint32_t>(extents.size()));
  w.U64(bytes);
  for (const NewExtent& x : extents) {
    AppendIndexEntry(&w, x.entry);
    w.U8(x.zero ? 1 : 0);
  }
  w.U64(Checksum64(b));
  return b;
}

Bytes EncodePending(const PendingPoint& p) {
  Bytes b = Header(p.begin, kClosed);
  Bytes frame = EncodePendingFrame(p.extents);
  b.insert(b.end(), frame.begin(), frame.end());
  return b;
}

Result<DecodedPending> DecodePending(ByteSpan data) {
  ByteReader r(data);
  if (r.U64() != kPendingMagic || !r.ok()) return DataLoss("bad magic (not a BBRPEND3 file)");
  uint8_t kind = r.U8();
  uint32_t bp_len = r.U32();
  ByteSpan bp = r.Span(bp_len);
  size_t header_bytes = 8 + 1 + 4 + static_cast<size_t>(bp_len);
  uint64_t sum = r.U64();
  if (!r.ok() || Checksum64(data.first(header_bytes)) != sum) return DataLoss("header checksum mismatch");
  if (kind != kClosed && kind != kLive) return DataLoss("unknown kind " + std::to_string(kind));
  DecodedPending d;
  d.live = kind == kLive;
  BR_ASSIGN_OR_RETURN(d.point.begin, wire::BeginPoint::Decode(bp));
  size_t at = header_bytes + 8;
  size_t frames = 0;
  while (at < data.size()) {
    // One frame: whole and matching its checksum, or (live files only) the torn last write.
    ByteSpan rest = data.subspan(at);
    ByteReader f(rest);
    uint32_t count = f.U32();
    uint64_t bytes = f.U64();
    const size_t need = kPendingFrameOverheadBytes + static_cast<size_t>(count) * kPendingExtentBytes;
    bool whole = f.ok() && count <= kPendingExtentsMax && rest.size() >= need &&
                 Checksum64(rest.first(need - 8)) == ByteReader(rest.subspan(need - 8, 8)).U64();
    if (!whole) {
      if (!d.live) return DataLoss("frame " + std::to_string(frames) + " is damaged or cut short");
      d.torn_bytes = rest.size();
      break;
    }
    if (d.point.extents.size() + count > kPendingExtentsMax) return DataLoss("more extents than a kept point holds");
    for (uint32_t i = 0; i < count; ++i) {
      NewExtent x;
      x.entry = ReadIndexEntry(&f);
      x.zero = f.U8() != 0;
      d.point.extents.push_back(x);
    }
    d.point.bytes += bytes;
    at += need;
    ++frames;
  }
  if (!d.live && frames != 1) return DataLoss("a closed file holds " + std::to_string(frames) + " frames, not 1");
  return d;
}

}  // namespace blockrep::store
