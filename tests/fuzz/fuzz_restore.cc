// Fuzzes restore's whole read path over a hostile store: a real one-point store (its pack of sealed
// records, the point's seal) is built once; each input becomes that point's index (with the
// manifest's checksum fixed to match, as a staging host with write access could), and the real
// restore runs on it. Invariants: no crash, hang or sanitizer finding; and a restore that
// succeeds wrote exactly the point the agent sealed (an index the fuzzer made up may only ever
// restore the truth). Selector bit 0 set: the target appends the index's own checksum trailer, so
// the fuzzer reaches the entries instead of stopping at the checksum.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>

#include "blockrep/base/checksum.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/base/fs.h"
#include "blockrep/crypto/keyfile.h"
#include "blockrep/crypto/record.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/store/store.h"
#include "fuzz_util.h"
#include "restore.h"

using namespace blockrep;

namespace {

constexpr uint64_t kVolumeBytes = 256 << 10;
constexpr uint64_t kExtentBytes = 64 << 10;
constexpr const char* kServer = "db1";

struct World {
  std::string root, key_file;
  store::PointInfo point;
  Bytes image;
};
World* g_world = nullptr;

template <typename T>
T Need(Result<T> r) {
  FUZZ_CHECK(r.ok());
  return std::move(r).value();
}

// The store a genuine agent and staging would have written: one point, four 64 KiB records (one
// of them zeros), sealed.
World* Build() {
  auto* w = new World;
  char tmpl[] = "/tmp/blockrep-fuzz-restore.XXXXXX";
  FUZZ_CHECK(mkdtemp(tmpl) != nullptr);
  w->root = tmpl;
  w->key_file = w->root + "/data.key";
  FUZZ_CHECK(store::InitStoreRoot(w->root, true).ok());
  FUZZ_CHECK(WriteNewDataKey(w->key_file).ok());
  DataKey key = Need(LoadDataKey(w->key_file));
  auto st = Need(store::ServerStore::Open(w->root, kServer, true));
  auto sealer = Need(RecordSealer::Create(key, kServer));
  BlockFingerprinter fingerprinter = Need(BlockFingerprinter::Create(key));
  auto seal_keys = Need(SealKeys::Create(key, kServer));
  w->image.assign(kVolumeBytes, 0);
  std::mt19937_64 rng(20261127);
  for (uint64_t i = 0; i < kVolumeBytes; ++i)
    if (i / kExtentBytes != 2) w->image[i] = static_cast<uint8_t>(rng() % 7);  // compressible
  uint32_t pack = 0;
  std::unique_ptr<File> pack_file = Need(st->CreatePack(&pack));
  uint64_t end = store::kPackHeaderSize;
  std::vector<store::NewExtent> extents;
  Bytes out;
  for (uint64_t off = 0; off < kVolumeBytes; off += kExtentBytes) {
    out.clear();
    ByteSpan plain(w->image.data() + off, kExtentBytes);
    RecordHeader hdr = Need(sealer->Seal(CodecChoice{}, 0, off, 1, plain, &out));
    store::NewExtent x;
    x.zero = hdr.zero();
    x.entry = {0, static_cast<uint32_t>(kExtentBytes), off, pack, static_cast<uint32_t>(out.size()), end, 0,
               Checksum64(out)};
    if (!x.zero) fingerprinter.Append(off, plain, &out);
    FUZZ_CHECK(pack_file->WriteAt(end, out).ok());
    end += out.size();
    extents.push_back(x);
  }
  store::PointIndex idx = store::BuildPointIndex(1, {kVolumeBytes}, nullptr, extents);
  RegionDigests digests(seal_keys.get(), kVolumeBytes);
  NoteData(fingerprinter, 0, w->image, &digests);
  idx.seals.push_back(MakeSeal(*seal_keys, 1, 1000, store::kPointConsistent, 0, 1, &digests,
                               std::vector<uint64_t>(SealRegionCount(kVolumeBytes), 1)));
  w->point = {1, 1000, store::kPointConsistent, 1, end, 0, ""};
  FUZZ_CHECK(st->CommitPoint(w->point, idx, key.key_id).ok());
  w->point = st->manifest().points.back();
  Bytes enc = idx.Encode();
  fuzz::WriteSeed("index", fuzz::WithSelector(0, enc));
  fuzz::WriteSeed("index-body", fuzz::WithSelector(1, Bytes(enc.begin(), enc.end() - 8)));
  return w;
}

void RemoveTree() {
  std::string cmd = "rm -rf '" + g_world->root + "'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", g_world->root.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_world = Build();
  std::atexit(RemoveTree);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto [selector, p] = fuzz::Select(data, size);
  Bytes index(p.begin(), p.end());
  if (selector & 1) ByteWriter(&index).U64(Checksum64(p));
  // The input is point 1's index; the manifest names it by its checksum.
  auto st = Need(store::ServerStore::Open(g_world->root, kServer, false));
  store::PointInfo info = g_world->point;
  info.index_checksum = Checksum64(index);
  std::string index_path = st->IndexPath(info);
  FUZZ_CHECK(WriteFileAtomic(index_path, index).ok());
  store::Manifest m = st->manifest();
  m.points = {info};
  std::string manifest_path = g_world->root + "/servers/" + kServer + "/MANIFEST";
  FUZZ_CHECK(WriteFileAtomic(manifest_path, m.Encode()).ok());

  recovery::RestoreRequest rq;
  rq.store_dir = g_world->root;
  rq.server_id = kServer;
  rq.key_file = g_world->key_file;
  rq.point_spec = "1";
  rq.output_dir = g_world->root + "/out";
  auto sum = recovery::Restore(rq);
  std::string image = rq.output_dir + "/vol-0.img";
  if (sum.ok()) {
    Bytes got = Need(ReadFileBytes(image, kVolumeBytes + 1));
    FUZZ_CHECK(got == g_world->image);  // only the sealed truth may come out
  } else {
    FUZZ_CHECK(!sum.status().message().empty());
    FUZZ_CHECK(sum.status().message().find('\n') == std::string::npos);  // one line
  }
  unlink(image.c_str());
  if (info.index_checksum != g_world->point.index_checksum) unlink(index_path.c_str());
  return 0;
}
