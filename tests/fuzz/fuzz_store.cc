// Fuzzes the store's MANIFEST and point-index parsers, which read files a damaged disk or a hostile
// staging host may have written. Selector bit 0 set: the input is a body and the target appends
// its valid checksum trailer, so the fuzzer reaches the body parser instead of stopping at the
// checksum.
#include "blockrep/base/checksum.h"
#include "blockrep/store/store.h"
#include "roundtrip.h"

using namespace blockrep;
using namespace blockrep::store;

namespace {

Bytes WithTrailer(ByteSpan body) {
  Bytes b(body.begin(), body.end());
  ByteWriter(&b).U64(Checksum64(body));
  return b;
}

Bytes Body(const Bytes& sealed) { return Bytes(sealed.begin(), sealed.end() - 8); }

void CheckIndex(ByteSpan input) {
  fuzz::RoundTrip<PointIndex>(input);
  auto idx = PointIndex::Decode(input);
  if (!idx.ok()) return;
  FUZZ_CHECK(idx->Validate().ok());
  // The staging builds the next point on top of a loaded index: that must stay valid too, with a
  // new extent over the first volume's start and a zero extent punching its middle.
  std::vector<NewExtent> extents;
  if (idx->volume_sizes[0] >= 8192) {
    NewExtent data;
    data.entry = {0, 4096, 0, 1, 4176, 16, 0, 0};
    NewExtent hole;
    hole.entry = {0, 4096, idx->volume_sizes[0] / 2 / 4096 * 4096, 0, 0, 0, 0, 0};
    hole.zero = true;
    extents = {data, hole};
  }
  PointIndex next = BuildPointIndex(idx->point_id + 1, idx->volume_sizes, &*idx, extents);
  FUZZ_CHECK(next.Validate().ok());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Manifest m;
  m.server_id = "web1";
  m.key_id = 77;
  for (uint64_t id : {3, 4, 9}) m.points.push_back(PointInfo{id, id * 1000, static_cast<uint32_t>(id % 2), 2, id * 4096, id * 31, ""});
  m.points[1].label = "before-upgrade";  // a labelled point: flag and label together
  m.points[1].flags |= kPointLabelled;
  fuzz::WriteSeed("manifest", fuzz::WithSelector(0, m.Encode()));
  fuzz::WriteSeed("manifest-body", fuzz::WithSelector(1, Body(m.Encode())));
  std::vector<NewExtent> extents;
  for (uint64_t off : {0, 65536, 200704, 8192}) {
    NewExtent x;
    x.entry = {static_cast<uint16_t>(off % 2), 65536, off, 2, 65616, 16 + off, 0, off * 7};
    extents.push_back(x);
  }
  PointIndex idx = BuildPointIndex(5, {1 << 20, 1 << 19}, nullptr, extents);
  for (uint16_t v = 0; v < 2; ++v) {
    VolumeSeal seal;
    seal.point_id = 5;
    seal.volume = v;
    seal.volume_count = 2;
    seal.volume_bytes = idx.volume_sizes[v];
    seal.region_bytes = SealRegionBytes(seal.volume_bytes);
    seal.regions = {{v + 1u, 9}};
    seal.region_points = {5};
    idx.seals.push_back(seal);
  }
  fuzz::WriteSeed("index", fuzz::WithSelector(2, idx.Encode()));
  fuzz::WriteSeed("index-body", fuzz::WithSelector(3, Body(idx.Encode())));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto [selector, p] = fuzz::Select(data, size);
  Bytes sealed;
  if (selector & 1) {
    sealed = WithTrailer(p);
    p = sealed;
  }
  if ((selector & 2) == 0) {
    fuzz::RoundTrip<Manifest>(p);
  } else {
    CheckIndex(p);
  }
  return 0;
}
