#include "oracle.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "blockrep/store/store.h"

namespace blockrep::sim {

void Trace(bool verbose, uint64_t seed, const std::string& line) {
  if (verbose) std::fprintf(stderr, "seed %llu: %s\n", static_cast<unsigned long long>(seed), line.c_str());
}

std::string CheckStore(FaultEnv* env, const std::string& root, const std::string& server_id, const DataKey& key,
                       uint64_t volume_bytes, const std::map<uint64_t, Bytes>& expected,
                       const std::set<uint64_t>& must_be_listed,
                       const std::map<uint64_t, std::vector<Bytes>>& fuzzy) {
  auto opened = store::ServerStore::Open(root, server_id, false, env);
  if (!opened.ok()) {
    if (opened.status().code() == Code::kNotFound && must_be_listed.empty()) return "";
    return "the store does not open after the power cut: " + opened.status().ToString();
  }
  auto& store = *opened;
  if (Status st = store->RemoveOrphans(); !st.ok()) return "removing orphans failed: " + st.ToString();
  std::set<uint64_t> listed;
  RecordOpener opener(key, server_id);
  store::PackReader reader(store->dir(), env);
  for (const store::PointInfo& p : store->manifest().points) {
    const std::string point = "listed point " + std::to_string(p.id);
    listed.insert(p.id);
    auto want = expected.find(p.id);
    if (want == expected.end()) return point + " was never ended";
    auto idx = store->LoadIndex(p);
    if (!idx.ok()) return point + " has no readable index: " + idx.status().ToString();
    Bytes image(volume_bytes, 0), rec, plain;
    for (const store::IndexEntry& e : idx->entries) {
      if (Status st = reader.Read(e, &rec); !st.ok()) return point + " is partial: " + st.ToString();
      RecordHeader h;
      if (Status st = opener.Open(rec, &h, &plain); !st.ok())
        return point + ": a record does not authenticate: " + st.ToString();
      if (uint64_t{e.offset_in_record} + e.length > plain.size() || e.offset + e.length > volume_bytes)
        return point + ": an index entry points outside its record or the volume";
      std::copy_n(plain.begin() + e.offset_in_record, e.length, image.begin() + static_cast<ptrdiff_t>(e.offset));
    }
    auto versions = fuzzy.find(p.id);
    if (versions != fuzzy.end()) {
      for (uint64_t b = 0; b * kBlockBytes < volume_bytes; ++b) {
        const size_t len = std::min<uint64_t>(kBlockBytes, volume_bytes - b * kBlockBytes);
        const bool held = std::any_of(versions->second.begin(), versions->second.end(), [&](const Bytes& v) {
          return std::memcmp(image.data() + b * kBlockBytes, v.data() + b * kBlockBytes, len) == 0;
        });
        if (!held)
          return point + " (resumed across " + std::to_string(versions->second.size()) + " runs) restores block " +
                 std::to_string(b) + " to bytes it held in none of them";
      }
    } else if (image != want->second) {
      uint64_t b = 0;
      while (std::memcmp(image.data() + b * kBlockBytes, want->second.data() + b * kBlockBytes, kBlockBytes) == 0) ++b;
      return point + " restores to other bytes than were written when it was taken (first differing block " +
             std::to_string(b) + ")";
    }
  }
  for (uint64_t id : must_be_listed)
    if (listed.count(id) == 0) return "acknowledged point " + std::to_string(id) + " is gone after the power cut";
  return "";
}

}  // namespace blockrep::sim
