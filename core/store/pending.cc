#include "blockrep/store/pending.h"

#include "blockrep/base/checksum.h"

namespace blockrep::store {
namespace {

constexpr uint64_t kPendingMagic = 0x32444e4550524242ull;  // "BBRPEND2"

}  // namespace

Bytes EncodePending(const PendingPoint& p) {
  Bytes b;
  ByteWriter w(&b);
  w.U64(kPendingMagic);
  Bytes bp = p.begin.Encode();
  w.U32(static_cast<uint32_t>(bp.size()));
  w.Raw(bp);
  w.U64(p.bytes);
  w.U32(static_cast<uint32_t>(p.extents.size()));
  for (const NewExtent& x : p.extents) {
    AppendIndexEntry(&w, x.entry);
    w.U8(x.zero ? 1 : 0);
  }
  w.U64(Checksum64(b));
  return b;
}

Result<PendingPoint> DecodePending(ByteSpan data) {
  if (data.size() < 16 || Checksum64(data.first(data.size() - 8)) != ByteReader(data.subspan(data.size() - 8)).U64())
    return DataLoss("checksum mismatch");
  ByteReader r(data.first(data.size() - 8));
  if (r.U64() != kPendingMagic) return DataLoss("bad magic");
  uint32_t bp_len = r.U32();
  ByteSpan bp = r.Span(bp_len);
  if (!r.ok()) return DataLoss("truncated");
  PendingPoint p;
  BR_ASSIGN_OR_RETURN(p.begin, wire::BeginPoint::Decode(bp));
  p.bytes = r.U64();
  uint32_t n = r.U32();
  if (!r.ok() || n > kPendingExtentsMax) return DataLoss("bad extent count");
  p.extents.resize(n);
  for (NewExtent& x : p.extents) {
    x.entry = ReadIndexEntry(&r);
    x.zero = r.U8() != 0;
  }
  if (!r.ok() || r.remaining() != 0) return DataLoss("truncated");
  return p;
}

}  // namespace blockrep::store
