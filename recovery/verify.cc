#include "verify.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <utility>

#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/keyfile.h"
#include "blockrep/crypto/seal.h"
#include "descent.h"
#include "restore.h"  // CheckChainHead

namespace blockrep::recovery {
namespace {

using RecordKey = std::pair<uint32_t, uint64_t>;  // (pack, pack_offset): one stored record

// What reading one stored record established, shared by every index entry that names it.
struct RecordFacts {
  store::IndexEntry entry;  // the first entry seen naming it (record_bytes, checksum)
  std::string problem;      // empty: intact (as far as the key, if any, lets us see)
  bool header_ok = false;
  RecordHeader header;
  std::vector<uint64_t> fps;  // with the key, intact: its blocks' fingerprints (checked against its data)
};

std::string Where(const store::IndexEntry& e) {
  return "record in pack " + std::to_string(e.pack) + " at offset " + std::to_string(e.pack_offset);
}

void CheckRecord(store::PackReader& packs, RecordOpener* opener, const KeyChain* keys, RecordFacts* f,
                 ServerVerifyReport* report) {
  Bytes stored, plain;
  const store::IndexEntry& e = f->entry;
  Status s = packs.Read(e, &stored);  // presence, length and checksum
  if (!s.ok()) {
    f->problem = s.message();
    return;
  }
  report->record_bytes += stored.size();
  auto h = RecordHeader::Decode(ByteSpan(stored.data(), std::min(stored.size(), kRecordHeaderSize)));
  if (!h.ok()) {
    f->problem = Where(e) + ": bad header: " + h.status().message();
    return;
  }
  f->header = *h;
  f->header_ok = true;
  if (h->total_size() != stored.size()) {
    f->problem = Where(e) + ": its header says " + std::to_string(h->total_size()) + " bytes, the index " +
                 std::to_string(stored.size());
    return;
  }
  if (opener == nullptr) return;
  RecordHeader opened;
  size_t key_index = 0;
  s = opener->Open(stored, &opened, &plain, &key_index);
  if (!s.ok()) {
    f->problem = Where(e) + ": " + s.message();
    return;
  }
  report->plain_bytes += plain.size();
  // The fingerprints stored after the record steer rescans; they must describe its data.
  Bytes expect, got(FingerprintCount(opened.plain_len) * kFingerprintBytes);
  keys->at(key_index).fingerprinter.Append(opened.offset, plain, &expect);  // keyed as its agent session was
  auto pack = packs.Pack(e.pack);
  s = pack.ok() ? (*pack)->ReadExact(e.pack_offset + e.record_bytes, got.data(), got.size()) : pack.status();
  if (!s.ok())
    f->problem = Where(e) + ": its fingerprints cannot be read: " + s.message();
  else if (got != expect)
    f->problem = Where(e) + ": the fingerprints stored after it do not match its data (a rescan would be misled)";
  if (!f->problem.empty()) return;
  ByteReader r(expect);
  f->fps.resize(expect.size() / kFingerprintBytes);
  for (uint64_t& fp : f->fps) fp = r.U64();
}

// Checks point `p`'s seals: present always; with the keys, authentic and matching the point's
// data (the fingerprints of the records its index names). Regions holding damage already
// reported for this point are not reported again.
void CheckSeals(const store::PointInfo& p, const store::PointIndex& idx, const std::map<RecordKey, RecordFacts>& records,
                const KeyChain* chain, std::vector<Damage>* out, uint64_t* matched) {
  auto whole = [&](uint16_t v, const std::string& problem) {
    out->push_back(Damage{v, 0, idx.volume_sizes[v], {p.id}, problem});
  };
  if (idx.seals.empty()) {
    for (uint16_t v = 0; v < idx.volume_sizes.size(); ++v)
      whole(v, "the point carries no seal from the agent (dropped by the staging, or older than seals)");
    return;
  }
  if (chain == nullptr) return;
  const SealKeys* keys = chain->ForIndex(idx).seal_keys.get();  // the key the point is sealed under
  for (uint16_t v = 0; v < idx.volume_sizes.size(); ++v) {
    const VolumeSeal& seal = idx.seals[v];
    if (!keys->Authentic(seal)) {
      whole(v, "the point's seal does not verify with the data key (forged or damaged seal)");
      continue;
    }
    if (!store::SealNamesPoint(seal, p)) {
      whole(v, "the manifest's time, flags or label differ from what the agent sealed (manifest tampered?)");
      continue;
    }
    RegionDigests digests(keys, idx.volume_sizes[v]);
    std::vector<bool> damaged(seal.regions.size(), false);
    for (const store::IndexEntry& e : idx.entries) {
      if (e.volume != v) continue;
      const RecordFacts& f = records.at({e.pack, e.pack_offset});
      uint64_t first = e.offset / kFingerprintBlockBytes, n = (e.length + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes;
      uint64_t skip = e.offset_in_record / kFingerprintBlockBytes;
      bool usable = f.problem.empty() && !f.fps.empty() && e.offset % kFingerprintBlockBytes == 0 &&
                    e.offset_in_record % kFingerprintBlockBytes == 0 && skip + n <= f.fps.size() &&
                    PlacementProblem(f.header, e, p.id).empty();
      if (!usable) {
        for (uint64_t r = e.offset / seal.region_bytes; r <= (e.offset + e.length - 1) / seal.region_bytes && r < damaged.size(); ++r)
          damaged[r] = true;
        continue;
      }
      for (uint64_t b = 0; b < n; ++b) digests.Note(first + b, f.fps[skip + b]);
    }
    digests.Flush();
    std::vector<uint32_t> mismatched = MismatchedRegions(seal, digests.regions());
    if (mismatched.empty()) ++*matched;
    for (uint32_t r : mismatched) {
      if (r < damaged.size() && damaged[r]) continue;
      uint64_t start = uint64_t{r} * seal.region_bytes;
      out->push_back(Damage{v, start, std::min(seal.region_bytes, idx.volume_sizes[v] - start), {p.id},
                            "the data does not match the point's seal: the index lacks a record the agent sent there, "
                            "or names an older one in its place (dropped or rolled back: store tampered?)"});
    }
  }
}

// Appends `id` to the damage entry for (record, extent), creating it on first sight.
void NoteDamage(std::map<std::tuple<RecordKey, uint16_t, uint64_t, uint64_t>, Damage>* out,
                const store::IndexEntry& e, uint64_t point_id, const std::string& problem) {
  Damage& d = (*out)[{RecordKey{e.pack, e.pack_offset}, e.volume, e.offset, e.length}];
  if (d.points.empty()) {
    d.volume = e.volume;
    d.offset = e.offset;
    d.length = e.length;
    d.problem = problem;
  }
  d.points.push_back(point_id);
}

ServerVerifyReport VerifyServer(const std::string& root, const std::string& server_id,
                                const std::vector<DataKey>& keys, const SealLink& expect_point, Env* env) {
  ServerVerifyReport report;
  report.server_id = server_id;
  auto st = store::ServerStore::Open(root, server_id, false, env);
  if (!st.ok()) {
    report.unreadable = st.status().message();
    return report;
  }
  const store::Manifest& m = (*st)->manifest();
  report.points = m.points.size();
  if (Status head = CheckChainHead(m, expect_point.point_id); !head.ok()) report.rolled_back = head.message();
  std::unique_ptr<RecordOpener> opener;
  std::unique_ptr<KeyChain> chain;
  bool holds = std::any_of(keys.begin(), keys.end(), [&](const DataKey& k) { return k.key_id == m.key_id; });
  if (!keys.empty() && m.key_id != 0 && !holds) {
    report.note = "not its data key: checked without it (structure and checksums only)";
  } else if (!keys.empty()) {
    auto c = KeyChain::Create(keys, server_id);
    if (!c.ok()) {
      report.unreadable = c.status().message();
      return report;
    }
    chain = std::move(c).value();
    opener = std::make_unique<RecordOpener>(keys, server_id);
    report.authenticated = true;
  }
  // With the key, --expect-point also follows the seals' links from the head down to it.
  if (chain && expect_point.point_id != 0 && report.rolled_back.empty()) {
    Status descent = CheckDescent(m, expect_point, *chain, [&](const store::PointInfo& p) -> Result<VolumeSeal> {
      BR_ASSIGN_OR_RETURN(store::PointIndex idx, (*st)->LoadIndex(p));
      if (idx.seals.empty()) return DataLoss("point " + std::to_string(p.id) + " has no seal");
      return idx.seals.front();
    });
    if (!descent.ok()) report.rolled_back = descent.message();
  }

  // Pass 1: every distinct record any retained point names, each read once (in pack order).
  std::map<RecordKey, RecordFacts> records;
  std::map<uint64_t, std::string> bad_index;  // point -> why its index cannot be read
  for (const store::PointInfo& p : m.points) {
    auto idx = (*st)->LoadIndex(p);
    if (!idx.ok()) {
      bad_index[p.id] = idx.status().message();
      continue;
    }
    for (const store::IndexEntry& e : idx->entries) records.try_emplace({e.pack, e.pack_offset}, RecordFacts{e, {}, false, {}, {}});
  }
  // Pin the packs (an open pack outlives a compaction's unlink), then make sure the chain we
  // read the indexes of is still the committed one; if the staging compacted meanwhile, the
  // caller runs us again.
  store::PackReader packs((*st)->dir(), env);
  store::PointIndex every_pack;
  for (const auto& [k, f] : records) every_pack.entries.push_back(f.entry);
  auto pinned = packs.OpenAll(every_pack);
  auto again = store::ServerStore::Open(root, server_id, false, env);
  auto same_chain = [&](const store::Manifest& a) {
    if (a.points.size() != m.points.size()) return false;
    for (size_t i = 0; i < a.points.size(); ++i)
      if (a.points[i].id != m.points[i].id || a.points[i].index_checksum != m.points[i].index_checksum) return false;
    return true;
  };
  if (!again.ok() || !same_chain(again.value()->manifest())) {
    report.raced = true;
    return report;
  }
  pinned.status().IgnoreError();  // a missing pack is reported below, record by record, with the points using it
  for (auto& [k, f] : records) {
    (void)k;
    if (f.entry.record_bytes != 0) CheckRecord(packs, opener.get(), chain.get(), &f, &report);
    ++report.records;
  }

  // Pass 2: every (point, extent) whose record is damaged or does not belong there.
  std::map<std::tuple<RecordKey, uint16_t, uint64_t, uint64_t>, Damage> damage;
  for (const store::PointInfo& p : m.points) {
    if (bad_index.count(p.id)) continue;
    auto idx = (*st)->LoadIndex(p);
    if (!idx.ok()) {
      bad_index[p.id] = idx.status().message();
      continue;
    }
    for (const store::IndexEntry& e : idx->entries) {
      const RecordFacts& f = records.at({e.pack, e.pack_offset});
      std::string problem = f.problem;
      if (problem.empty() && f.header_ok) {
        problem = PlacementProblem(f.header, e, p.id);
        if (!problem.empty()) problem = Where(e) + ": " + problem;
      }
      if (!problem.empty()) NoteDamage(&damage, e, p.id, problem);
    }
    CheckSeals(p, *idx, records, chain.get(), &report.damage, &report.seals_matched);
  }
  for (auto& [k, d] : damage) {
    (void)k;
    report.damage.push_back(std::move(d));
  }
  // In volume order, as an operator reads a disk.
  std::sort(report.damage.begin(), report.damage.end(), [](const Damage& a, const Damage& b) {
    return std::tie(a.volume, a.offset, a.points) < std::tie(b.volume, b.offset, b.points);
  });
  for (const auto& [id, why] : bad_index)
    report.unreadable += (report.unreadable.empty() ? "" : "; ") + ("point " + std::to_string(id) + ": " + why);
  return report;
}

std::string PointRanges(const std::vector<uint64_t>& points) {
  std::string s;
  for (size_t i = 0; i < points.size();) {
    size_t j = i;
    while (j + 1 < points.size() && points[j + 1] == points[j] + 1) ++j;
    if (!s.empty()) s += ",";
    s += std::to_string(points[i]);
    if (j > i) {
      s += '-';  // not `"-" + std::string&&`: GCC 12's -Wrestrict misfires on it at -O3
      s += std::to_string(points[j]);
    }
    i = j + 1;
  }
  return s;
}

}  // namespace

std::string PlacementProblem(const RecordHeader& h, const store::IndexEntry& e, uint64_t point_id) {
  if (h.zero()) return "a zero record is indexed as data";
  if (h.volume != e.volume)
    return "the record belongs to volume " + std::to_string(h.volume) + " (moved: store tampered?)";
  if (h.offset + e.offset_in_record != e.offset)
    return "the record belongs at offset " + std::to_string(h.offset + e.offset_in_record) + " (moved: store tampered?)";
  if (e.offset_in_record + uint64_t{e.length} > h.plain_len)
    return "the extent runs past the record's " + std::to_string(h.plain_len) + " bytes";
  if (h.point_id > point_id)
    return "the record was written for later point " + std::to_string(h.point_id) + " (spliced: store tampered?)";
  return {};
}

std::string DescribeDamage(const std::string& server_id, const Damage& d) {
  return "server '" + server_id + "' volume " + std::to_string(d.volume) +
         (d.points.size() == 1 ? " point " : " points ") + PointRanges(d.points) + " offset " +
         std::to_string(d.offset) + " length " + std::to_string(d.length) + ": " + d.problem;
}

Result<std::vector<ServerVerifyReport>> Verify(const VerifyRequest& req) {
  std::string root;
  BR_ASSIGN_OR_RETURN(std::shared_ptr<Env> env, OpenStoreEnv(req.store_dir, req.s3, &root));
  BR_RETURN_IF_ERROR(store::InitStoreRoot(root, false, env.get()));
  std::vector<std::string> servers;
  if (!req.server_id.empty()) {
    // Fails clearly on an unknown server-id instead of reporting it as damage.
    BR_RETURN_IF_ERROR(store::ServerStore::Open(root, req.server_id, false, env.get()).status());
    servers.push_back(req.server_id);
  } else {
    BR_ASSIGN_OR_RETURN(servers, store::ListServers(root, env.get()));
    if (servers.empty()) return NotFound("store " + req.store_dir + " holds no servers yet");
  }
  std::vector<DataKey> keys;  // none: structure and checksums only
  if (!req.key_file.empty()) {
    BR_ASSIGN_OR_RETURN(keys, LoadDataKeys(req.key_file));
  }
  std::vector<ServerVerifyReport> reports;
  for (const std::string& id : servers) {
    ServerVerifyReport r;
    for (int attempt = 0; attempt < 5; ++attempt) {
      r = VerifyServer(root, id, keys, req.expect_point, env.get());
      if (!r.raced) break;
    }
    if (r.raced) r.unreadable = "the staging kept rewriting this server's chain (compaction) during verify; run it again";
    reports.push_back(std::move(r));
  }
  if (!keys.empty()) {
    bool used = false;
    for (const auto& r : reports) used = used || r.authenticated;
    if (!used)
      return PermissionDenied("key file " + req.key_file + " is the data key of none of the servers checked (" +
                              "use the data-<SERVER-ID>.key its agent replicates with, or leave out --key)");
  }
  return reports;
}

}  // namespace blockrep::recovery
