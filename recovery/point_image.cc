#include "point_image.h"

#include <algorithm>
#include <cstring>

#include "blockrep/base/cli.h"
#include "verify.h"

namespace blockrep::recovery {

const Bytes* RegionCache::Get(const Key& key) {
  auto it = where_.find(key);
  if (it == where_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return &it->second->second;
}

const Bytes* RegionCache::Put(const Key& key, Bytes data) {
  auto old = where_.find(key);
  if (old != where_.end()) {
    bytes_ -= old->second->second.size();
    lru_.erase(old->second);
    where_.erase(old);
  }
  bytes_ += data.size();
  lru_.emplace_front(key, std::move(data));
  where_[key] = lru_.begin();
  // Evict from the cold end, never the region just added.
  while (bytes_ > capacity_bytes_ && lru_.size() > 1) {
    bytes_ -= lru_.back().second.size();
    where_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return &lru_.front().second;
}

PointImage::PointImage(PointSource* source, std::string server_id, store::PointInfo point, ReadKeys keys,
                       RegionCache* cache)
    : source_(source), server_id_(std::move(server_id)), point_(point), keys_(keys), cache_(cache) {}

Result<std::unique_ptr<PointImage>> PointImage::Open(PointSource* source, const std::string& server_id,
                                                     store::PointInfo point, ReadKeys keys, RegionCache* cache) {
  std::unique_ptr<PointImage> img(new PointImage(source, server_id, point, keys, cache));
  BR_ASSIGN_OR_RETURN(img->index_, source->OpenPoint(img->point_, false));
  const store::PointIndex& idx = img->index_;
  img->point_key_ = &keys.chain->ForIndex(idx);
  img->seal_problems_.assign(idx.volume_sizes.size(), "");
  for (uint16_t v = 0; v < idx.volume_sizes.size(); ++v) {
    std::string& problem = img->seal_problems_[v];
    if (idx.seals.empty()) {
      problem = "the point carries no seal from the agent, so nothing proves its index complete";
      continue;
    }
    const VolumeSeal& seal = idx.seals[v];
    if (!img->point_key_->seal_keys->Authentic(seal))
      problem = "the point's seal does not verify with this data key (forged or damaged seal)";
    else if (!store::SealNamesPoint(seal, img->point_))
      problem = "the manifest says time " + FormatUtc(img->point_.time_ns) + " label '" + img->point_.label +
                "' but the agent sealed time " + FormatUtc(seal.time_ns) + " label '" + seal.label + "' (manifest tampered?)";
    else if (seal.volume_bytes != idx.volume_sizes[v])
      problem = "the seal is of a " + std::to_string(seal.volume_bytes) + "-byte volume, the index of a " +
                std::to_string(idx.volume_sizes[v]) + "-byte one";
  }
  return img;
}

std::string PointImage::Where(uint16_t volume) const {
  return "server '" + server_id_ + "' volume " + std::to_string(volume) + " point " + std::to_string(point_.id);
}

Status PointImage::DecodeRegion(uint16_t volume, uint64_t region, Bytes* out) {
  const VolumeSeal& seal = index_.seals[volume];
  uint64_t start = region * seal.region_bytes;
  uint64_t end = std::min(start + seal.region_bytes, index_.volume_sizes[volume]);
  out->assign(end - start, 0);
  // Entries are sorted by (volume, offset) and never overlap: the first one that ends past
  // `start` is the first to use.
  auto first = std::partition_point(index_.entries.begin(), index_.entries.end(), [&](const store::IndexEntry& e) {
    return e.volume < volume || (e.volume == volume && e.offset + e.length <= start);
  });
  std::vector<const store::IndexEntry*> pieces, records;
  std::vector<size_t> group_start;
  for (auto it = first; it != index_.entries.end() && it->volume == volume && it->offset < end; ++it) {
    const store::IndexEntry& e = *it;
    pieces.push_back(&e);
    if (!records.empty() && records.back()->pack == e.pack && records.back()->pack_offset == e.pack_offset &&
        records.back()->checksum == e.checksum)
      continue;
    records.push_back(&e);
    group_start.push_back(pieces.size() - 1);
  }
  group_start.push_back(pieces.size());
  RecordHeader h;
  BR_RETURN_IF_ERROR(source_->ReadRecords(point_.id, records, [&](size_t g, const Status& read, ByteSpan stored) -> Status {
    const store::IndexEntry& first_piece = *pieces[group_start[g]];
    Status st = read;
    if (st.ok()) st = keys_.opener->Open(stored, &h, &plain_);
    for (size_t i = group_start[g]; st.ok() && i < group_start[g + 1]; ++i) {
      std::string misplaced = PlacementProblem(h, *pieces[i], point_.id);
      if (!misplaced.empty()) st = DataLoss("record in pack " + std::to_string(pieces[i]->pack) + ": " + misplaced);
    }
    if (!st.ok()) return Status(st.code(), Where(volume) + " offset " + std::to_string(first_piece.offset) + ": " + st.message());
    for (size_t i = group_start[g]; i < group_start[g + 1]; ++i) {
      const store::IndexEntry& e = *pieces[i];
      uint64_t from = std::max(start, e.offset), to = std::min(end, e.offset + e.length);
      std::memcpy(out->data() + (from - start), plain_.data() + e.offset_in_record + (from - e.offset), to - from);
    }
    return Status::Ok();
  }));
  Digest128 got = DigestOfRegion(*point_key_->seal_keys, point_key_->fingerprinter, start, ByteSpan(out->data(), out->size()));
  if (!(got == seal.regions[region]))
    return DataLoss(Where(volume) + " bytes " + std::to_string(start) + ".." + std::to_string(end) +
                    ": the data does not match the point's seal (a record the agent sent there is missing, "
                    "older or damaged: store tampered?)");
  return Status::Ok();
}

Result<const Bytes*> PointImage::Region(uint16_t volume, uint64_t region) {
  RegionCache::Key key{point_.id, volume, region};
  if (const Bytes* hit = cache_->Get(key)) return hit;
  Bytes data;
  BR_RETURN_IF_ERROR(DecodeRegion(volume, region, &data));
  return cache_->Put(key, std::move(data));
}

Status PointImage::Read(uint16_t volume, uint64_t offset, uint64_t len, uint8_t* out) {
  if (volume >= volume_count() || offset > volume_bytes(volume) || len > volume_bytes(volume) - offset)
    return InvalidArgument(Where(volume) + ": read past the end of the volume");
  if (!seal_problems_[volume].empty()) return DataLoss(Where(volume) + ": " + seal_problems_[volume]);
  uint64_t region_bytes = index_.seals[volume].region_bytes;
  while (len > 0) {
    uint64_t region = offset / region_bytes;
    BR_ASSIGN_OR_RETURN(const Bytes* data, Region(volume, region));
    uint64_t at = offset - region * region_bytes;
    uint64_t n = std::min<uint64_t>(len, data->size() - at);
    std::memcpy(out, data->data() + at, n);
    out += n;
    offset += n;
    len -= n;
  }
  return Status::Ok();
}

}  // namespace blockrep::recovery
