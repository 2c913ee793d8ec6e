// Building a point's full index from its predecessor and the point's records.
#include <map>

#include "blockrep/store/store.h"

namespace blockrep::store {
namespace {

using Key = std::pair<uint16_t, uint64_t>;  // (volume, offset)

// Removes [offset, offset + length) of `vol` from `map`, keeping what lies outside of it.
void Punch(std::map<Key, IndexEntry>* map, uint16_t vol, uint64_t offset, uint64_t length) {
  const uint64_t end = offset + length;
  auto it = map->lower_bound({vol, offset});
  if (it != map->begin()) {
    auto prev = std::prev(it);
    if (prev->first.first == vol && prev->second.offset + prev->second.length > offset) it = prev;
  }
  std::vector<IndexEntry> hit;
  while (it != map->end() && it->first.first == vol && it->second.offset < end) {
    hit.push_back(it->second);
    it = map->erase(it);
  }
  for (const IndexEntry& old : hit) {
    if (old.offset < offset) {
      IndexEntry left = old;
      left.length = static_cast<uint32_t>(offset - old.offset);
      map->emplace(Key{vol, left.offset}, left);
    }
    if (old.offset + old.length > end) {
      IndexEntry right = old;
      uint64_t cut = end - old.offset;
      right.offset = end;
      right.offset_in_record += static_cast<uint32_t>(cut);
      right.length -= static_cast<uint32_t>(cut);
      map->emplace(Key{vol, right.offset}, right);
    }
  }
}

}  // namespace

PointIndex BuildPointIndex(uint64_t point_id, const std::vector<uint64_t>& volume_sizes,
                           const PointIndex* base, const std::vector<NewExtent>& extents) {
  std::map<Key, IndexEntry> map;
  if (base != nullptr) {
    for (const IndexEntry& e : base->entries) map.emplace(Key{e.volume, e.offset}, e);
    // A volume that shrank or went away loses what lies past its new end.
    for (uint16_t v = 0; v < base->volume_sizes.size(); ++v) {
      uint64_t old_size = base->volume_sizes[v];
      uint64_t new_size = v < volume_sizes.size() ? volume_sizes[v] : 0;
      if (new_size < old_size) Punch(&map, v, new_size, old_size - new_size);
    }
  }
  for (const NewExtent& x : extents) {
    Punch(&map, x.entry.volume, x.entry.offset, x.entry.length);
    if (!x.zero) map.emplace(Key{x.entry.volume, x.entry.offset}, x.entry);
  }
  PointIndex idx;
  idx.point_id = point_id;
  idx.volume_sizes = volume_sizes;
  idx.entries.reserve(map.size());
  for (auto& [key, e] : map) idx.entries.push_back(e);
  return idx;
}

}  // namespace blockrep::store
