// Instant access to a recovery point: the bytes of its volumes, read on demand, every byte
// authenticated (AES-GCM per record) and checked against the agent's seal of its region
// (docs/FORMAT.md, Point seals) before it is served. Used by `mount` and `drill`.
//
// A read decodes the seal region(s) it touches (1 MiB for volumes up to 32 GiB): every record
// the index names there is read, opened and placed, and the region's digest is recomputed from
// the plaintext and compared with the seal. So a staging that drops a record, rolls an extent
// back to an older authentic record, or damages one, makes exactly the reads of that region
// fail; nothing wrong is ever served. Checked regions are kept in a RegionCache.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"
#include "keys.h"
#include "source.h"

namespace blockrep::recovery {

// Decoded, seal-checked regions of any number of points, least recently used evicted first.
// Bounded by bytes: never more than capacity_bytes, except that the one region being served is
// always held (a region is at most 128 MiB, at 4 TiB volumes).
class RegionCache {
 public:
  explicit RegionCache(uint64_t capacity_bytes) : capacity_bytes_(capacity_bytes) {}
  using Key = std::tuple<uint64_t, uint16_t, uint64_t>;  // point, volume, region
  // Null when absent; the pointer stays valid until the next Put.
  const Bytes* Get(const Key& key);
  const Bytes* Put(const Key& key, Bytes data);
  uint64_t bytes() const { return bytes_; }
  uint64_t capacity_bytes() const { return capacity_bytes_; }

 private:
  uint64_t capacity_bytes_;
  uint64_t bytes_ = 0;
  std::list<std::pair<Key, Bytes>> lru_;  // front: most recent
  std::map<Key, std::list<std::pair<Key, Bytes>>::iterator> where_;
};

// The keys a reader needs, for one server's chain.
struct ReadKeys {
  const KeyChain* chain;  // the point's own key (its seal's) is picked from it when it opens
  RecordOpener* opener;   // not thread-safe: a PointImage is used from one thread
};

class PointImage {
 public:
  // Loads the point's index and opens (pins) every pack it names; the point stays readable if
  // the staging expires or compacts it later. Cost: one index read, whatever the volumes' size.
  static Result<std::unique_ptr<PointImage>> Open(PointSource* source, const std::string& server_id,
                                                  store::PointInfo point, ReadKeys keys, RegionCache* cache);

  const store::PointInfo& point() const { return point_; }
  size_t volume_count() const { return index_.volume_sizes.size(); }
  uint64_t volume_bytes(uint16_t volume) const { return index_.volume_sizes[volume]; }

  // Fills out[0, len) with bytes [offset, offset + len) of `volume` (clipped by the caller to
  // the volume's size). On damage: kDataLoss / kUnauthenticated naming server, volume, point and
  // byte range; nothing is written to `out` that was not checked.
  Status Read(uint16_t volume, uint64_t offset, uint64_t len, uint8_t* out);

 private:
  PointImage(PointSource* source, std::string server_id, store::PointInfo point, ReadKeys keys, RegionCache* cache);
  Result<const Bytes*> Region(uint16_t volume, uint64_t region);
  Status DecodeRegion(uint16_t volume, uint64_t region, Bytes* out);
  std::string Where(uint16_t volume) const;

  PointSource* source_;
  std::string server_id_;
  store::PointInfo point_;
  ReadKeys keys_;
  const KeyChain::Derived* point_key_ = nullptr;  // the key this point is sealed under
  RegionCache* cache_;
  store::PointIndex index_;
  // Per volume: empty when its seal is authentic and names this point's time and flags; else
  // why no read of it can be trusted.
  std::vector<std::string> seal_problems_;
  Bytes plain_;  // scratch for one record
};

}  // namespace blockrep::recovery
