#include "blockrep/store/store.h"

#include "blockrep/base/check.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <set>

#include "blockrep/base/checksum.h"
#include "blockrep/net/wire.h"

namespace blockrep::store {
namespace {

constexpr uint64_t kIndexMagic = 0x3230305844495242ull;     // "BRIDX002"
constexpr uint64_t kManifestMagic = 0x32304e414d524242ull;    // "BBRMAN02": points carry a label
constexpr uint64_t kManifestMagicV1 = 0x31304e414d524242ull;  // "BBRMAN01": read, never written
constexpr uint64_t kManifestMagicV3 = 0x33304e414d524242ull;  // "BBRMAN03": a writer token follows the key id
constexpr uint64_t kPackMagic = 0x32304b4341505242ull;      // "BRPACK02": records, each followed by its fingerprints
constexpr char kFormatLine[] = "blockrep-store v1\n";

// Appends XXH3 of everything so far; Verify checks and strips it.
void SealTrailer(Bytes* b) {
  uint64_t sum = Checksum64(*b);
  ByteWriter(b).U64(sum);
}

Result<ByteSpan> CheckTrailer(ByteSpan data, const char* what) {
  if (data.size() < 8) return DataLoss(std::string(what) + " is truncated");
  ByteSpan body = data.first(data.size() - 8);
  ByteReader r(data.subspan(data.size() - 8));
  if (r.U64() != Checksum64(body))
    return DataLoss(std::string(what) + " fails its checksum (damaged or torn)");
  return body;
}


}  // namespace

Bytes PointIndex::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U64(kIndexMagic);
  w.U64(point_id);
  w.U32(static_cast<uint32_t>(volume_sizes.size()));
  for (uint64_t s : volume_sizes) w.U64(s);
  w.U64(entries.size());
  for (const IndexEntry& e : entries) AppendIndexEntry(&w, e);
  w.U32(static_cast<uint32_t>(seals.size()));
  for (const VolumeSeal& s : seals) s.AppendEncoded(&w);
  SealTrailer(&b);
  return b;
}

Result<PointIndex> PointIndex::Decode(ByteSpan data) {
  BR_ASSIGN_OR_RETURN(ByteSpan body, CheckTrailer(data, "point index"));
  ByteReader r(body);
  PointIndex idx;
  if (r.U64() != kIndexMagic) return DataLoss("point index has a bad magic number");
  idx.point_id = r.U64();
  uint32_t nvol = r.U32();
  if (nvol == 0 || nvol > wire::kMaxVolumes) return DataLoss("point index names a bad volume count");
  for (uint32_t i = 0; i < nvol && r.ok(); ++i) idx.volume_sizes.push_back(r.U64());
  uint64_t n = r.U64();
  if (!r.ok() || n > r.remaining() / kIndexEntrySize) return DataLoss("point index entry count does not match its size");
  idx.entries.resize(n);
  for (IndexEntry& e : idx.entries) e = ReadIndexEntry(&r);
  uint32_t nseal = r.U32();
  if (!r.ok()) return DataLoss("point index is truncated");
  if (nseal != 0 && nseal != nvol) return DataLoss("point index holds " + std::to_string(nseal) + " seals for " +
                                                   std::to_string(nvol) + " volumes");
  for (uint32_t i = 0; i < nseal; ++i) {
    auto seal = VolumeSeal::Read(&r);
    if (!seal.ok()) return seal.status().Annotate("point index");
    idx.seals.push_back(std::move(*seal));
  }
  if (r.remaining() != 0) return DataLoss("point index has trailing bytes");
  BR_RETURN_IF_ERROR(idx.Validate());
  return idx;
}

Status PointIndex::Validate() const {
  const IndexEntry* prev = nullptr;
  for (const IndexEntry& e : entries) {
    if (e.volume >= volume_sizes.size()) return DataLoss("index entry names a missing volume");
    if (e.length == 0 || e.offset > volume_sizes[e.volume] || e.length > volume_sizes[e.volume] - e.offset)
      return DataLoss("index entry lies outside its volume");
    if (e.record_bytes < kRecordBytesMin || e.record_bytes > kRecordBytesMax || e.pack == 0 ||
        e.pack_offset < kPackHeaderSize || e.pack_offset > kPackBytesMax - e.record_bytes)
      return DataLoss("index entry for volume " + std::to_string(e.volume) + " offset " + std::to_string(e.offset) +
                      " names an impossible record (pack " + std::to_string(e.pack) + " offset " +
                      std::to_string(e.pack_offset) + ", " + std::to_string(e.record_bytes) + " bytes)");
    if (e.offset_in_record > kMaxRecordPlainBytes || e.length > kMaxRecordPlainBytes - e.offset_in_record)
      return DataLoss("index entry for volume " + std::to_string(e.volume) + " offset " + std::to_string(e.offset) +
                      " reaches past its record's plaintext");
    if (prev != nullptr && prev->volume == e.volume && prev->offset + prev->length > e.offset)
      return DataLoss("index entries overlap or are out of order");
    if (prev != nullptr && prev->volume > e.volume) return DataLoss("index entries are out of order");
    prev = &e;
  }
  if (!seals.empty() && seals.size() != volume_sizes.size()) return DataLoss("point index lacks some volumes' seals");
  for (size_t v = 0; v < seals.size(); ++v) {
    const VolumeSeal& s = seals[v];
    if (s.volume != v || s.volume_count != volume_sizes.size() || s.volume_bytes != volume_sizes[v] ||
        s.point_id != point_id)
      return DataLoss("the seal of volume " + std::to_string(v) + " in point " + std::to_string(point_id) +
                      "'s index describes volume " + std::to_string(s.volume) + " of point " +
                      std::to_string(s.point_id));
  }
  return Status::Ok();
}

Bytes Manifest::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U64(writer_token != 0 ? kManifestMagicV3 : kManifestMagic);
  w.String(server_id);
  w.U64(key_id);
  if (writer_token != 0) w.U64(writer_token);
  w.U64(points.size());
  for (const PointInfo& p : points) {
    w.U64(p.id);
    w.U64(p.time_ns);
    w.U32(p.flags);
    w.U32(p.volume_count);
    w.U64(p.bytes_added);
    w.U64(p.index_checksum);
    w.U8(static_cast<uint8_t>(p.label.size()));
    w.Raw(p.label.data(), p.label.size());
  }
  SealTrailer(&b);
  return b;
}

Result<Manifest> Manifest::Decode(ByteSpan data) {
  BR_ASSIGN_OR_RETURN(ByteSpan body, CheckTrailer(data, "manifest"));
  ByteReader r(body);
  Manifest m;
  uint64_t magic = r.U64();
  if (magic != kManifestMagic && magic != kManifestMagicV1 && magic != kManifestMagicV3)
    return DataLoss("manifest has a bad magic number");
  const bool labels = magic != kManifestMagicV1;
  const size_t point_bytes = labels ? Manifest::kPointBytes : 40;
  m.server_id = r.String(wire::kMaxServerIdLen);
  m.key_id = r.U64();
  if (magic == kManifestMagicV3) {
    m.writer_token = r.U64();
    if (r.ok() && m.writer_token == 0) return DataLoss("manifest has a writer token of 0");
  }
  uint64_t n = r.U64();
  if (!r.ok() || n > r.remaining() / point_bytes || (!labels && r.remaining() != n * point_bytes))
    return DataLoss("manifest point count does not match its size");
  m.points.resize(n);
  uint64_t prev = 0;
  for (PointInfo& p : m.points) {
    p.id = r.U64();
    p.time_ns = r.U64();
    p.flags = r.U32();
    p.volume_count = r.U32();
    p.bytes_added = r.U64();
    p.index_checksum = r.U64();
    if (labels) {
      uint8_t len = r.U8();
      if (!r.ok() || len > r.remaining()) return DataLoss("manifest is truncated");
      p.label.assign(len, '\0');
      r.Raw(p.label.data(), len);
    }
    if (!r.ok()) return DataLoss("manifest is truncated");
    if (p.id <= prev) return DataLoss("manifest point ids are not ascending");
    if (((p.flags & kPointLabelled) != 0) != !p.label.empty())
      return DataLoss("manifest point " + std::to_string(p.id) + " has a label flag that does not match its label");
    if (!p.label.empty() && !CheckPointLabel(p.label).ok())
      return DataLoss("manifest point " + std::to_string(p.id) + " has a malformed label");
    prev = p.id;
  }
  if (r.remaining() != 0) return DataLoss("manifest has trailing bytes");
  return m;
}

Status InitStoreRoot(const std::string& root, bool create, Env* env) {
  std::string format = root + "/FORMAT";
  if (!env->Exists(format)) {
    if (!create)
      return NotFound("no blockrep store at " + root + " (wrong --store, or nothing replicated yet)");
    BR_RETURN_IF_ERROR(env->MakeDirs(root + "/servers", 0700));
    std::string line = kFormatLine;
    return env->WriteFileAtomic(format, ByteSpan(reinterpret_cast<const uint8_t*>(line.data()), line.size()));
  }
  BR_ASSIGN_OR_RETURN(Bytes raw, env->ReadFile(format, 256));
  std::string text(raw.begin(), raw.end());
  if (text != kFormatLine)
    return InvalidArgument(root + " holds an unsupported store format: " + text.substr(0, 40));
  return Status::Ok();
}

Result<std::vector<std::string>> ListServers(const std::string& root, Env* env) {
  BR_RETURN_IF_ERROR(InitStoreRoot(root, false, env));
  return env->ListDir(root + "/servers");
}

void AppendIndexEntry(ByteWriter* w, const IndexEntry& e) {
  w->U16(e.volume);
  w->U16(0);
  w->U32(e.length);
  w->U64(e.offset);
  w->U32(e.pack);
  w->U32(e.record_bytes);
  w->U64(e.pack_offset);
  w->U32(e.offset_in_record);
  w->U32(0);
  w->U64(e.checksum);
}

IndexEntry ReadIndexEntry(ByteReader* r) {
  IndexEntry e;
  e.volume = r->U16();
  r->U16();
  e.length = r->U32();
  e.offset = r->U64();
  e.pack = r->U32();
  e.record_bytes = r->U32();
  e.pack_offset = r->U64();
  e.offset_in_record = r->U32();
  r->U32();
  e.checksum = r->U64();
  return e;
}

Bytes EncodePackHeader(uint32_t pack_id) {
  Bytes b;
  ByteWriter w(&b);
  w.U64(kPackMagic);
  w.U32(pack_id);
  w.U32(0);
  return b;
}

Result<std::unique_ptr<ServerStore>> ServerStore::Open(const std::string& root, const std::string& server_id,
                                                       bool create, Env* env) {
  BR_RETURN_IF_ERROR(wire::ValidateServerId(server_id));
  auto s = std::make_unique<ServerStore>();
  s->env_ = env;
  s->dir_ = root + "/servers/" + server_id;
  std::string manifest_path = s->dir_ + "/MANIFEST";
  if (!env->Exists(manifest_path)) {
    if (!create)
      return NotFound("server '" + server_id + "' has no recovery points in store " + root +
                      " (check --server-id; blockrep-recover list shows what is there)");
    BR_RETURN_IF_ERROR(env->MakeDirs(s->dir_ + "/packs", 0700));
    BR_RETURN_IF_ERROR(env->MakeDirs(s->dir_ + "/index", 0700));
    s->manifest_.server_id = server_id;
    Bytes enc = s->manifest_.Encode();
    BR_RETURN_IF_ERROR(env->WriteFileAtomic(manifest_path, enc));
    return s;
  }
  BR_ASSIGN_OR_RETURN(Bytes data, env->ReadFile(manifest_path, kMaxManifestBytes));
  auto m = Manifest::Decode(data);
  if (!m.ok()) return m.status().Annotate(manifest_path);
  if (m->server_id != server_id)
    return DataLoss(manifest_path + " belongs to server '" + m->server_id + "'");
  s->manifest_ = std::move(m).value();
  return s;
}

ServerStore::PackUsage ServerStore::CountPacks() const {
  PackUsage u;
  auto names = env_->ListDir(dir_ + "/packs");
  if (!names.ok()) return u;  // no packs directory yet: nothing stored
  for (const std::string& n : *names) {
    auto size = env_->FileSize(dir_ + "/packs/" + n);
    if (!size.ok()) continue;  // removed meanwhile (a compaction)
    u.bytes += *size;
    ++u.count;
  }
  return u;
}

std::string ServerStore::PackPath(uint32_t pack) const { return dir_ + "/packs/" + PackFileName(pack); }

std::string IndexFileName(const PointInfo& point) {
  char name[48];
  std::snprintf(name, sizeof(name), "%012" PRIu64 "-%016" PRIx64 ".idx", point.id, point.index_checksum);
  return name;
}

std::string PackFileName(uint32_t pack) {
  char name[32];
  std::snprintf(name, sizeof(name), "%08" PRIu32 ".pack", pack);
  return name;
}

std::string ServerStore::IndexPath(const PointInfo& point) const { return dir_ + "/index/" + IndexFileName(point); }

Result<std::unique_ptr<File>> ServerStore::CreatePack(uint32_t* pack_id) const {
  BR_ASSIGN_OR_RETURN(*pack_id, NextPackId());
  std::string path = PackPath(*pack_id);
  BR_ASSIGN_OR_RETURN(auto file, env_->Open(path, OpenMode::kCreateExclusive));
  BR_RETURN_IF_ERROR(file->WriteAt(0, EncodePackHeader(*pack_id)));
  BR_RETURN_IF_ERROR(file->Sync());
  BR_RETURN_IF_ERROR(env_->SyncDir(dir_ + "/packs"));
  return file;
}

Result<uint32_t> ServerStore::NextPackId() const {
  if (next_pack_id_ == 0) {  // once per process: the directory is listed, then counted on
    BR_ASSIGN_OR_RETURN(auto names, env_->ListDir(dir_ + "/packs"));
    uint32_t next = 1;
    for (const std::string& n : names) {
      unsigned long v = std::strtoul(n.c_str(), nullptr, 10);
      if (v >= next) next = static_cast<uint32_t>(v + 1);
    }
    next_pack_id_ = next;
  }
  if (next_pack_id_ == UINT32_MAX) return NoSpace("server directory " + dir_ + " has used every pack number");
  return next_pack_id_++;
}

Result<PointIndex> ServerStore::LoadIndex(const PointInfo& point) const {
  std::string path = IndexPath(point);
  BR_ASSIGN_OR_RETURN(Bytes data, env_->ReadFile(path, kMaxIndexBytes));
  if (Checksum64(data) != point.index_checksum)
    return DataLoss(path + " does not match the checksum the manifest holds for point " +
                    std::to_string(point.id));
  auto idx = PointIndex::Decode(data);
  if (!idx.ok()) return idx.status().Annotate(path);
  if (idx->point_id != point.id) return DataLoss(path + " holds the index of another point");
  return idx;
}

Status ServerStore::CommitPoint(const PointInfo& info, const PointIndex& index, uint64_t key_id) {
  if (info.id <= manifest_.last_point_id())
    return Internal("point " + std::to_string(info.id) + " is not newer than the chain's last");
  if (!manifest_.points.empty() && info.time_ns <= manifest_.points.back().time_ns)
    return Internal("point " + std::to_string(info.id) + " is not later in time than the chain's last");
  Bytes enc = index.Encode();
  // Nothing is committed (and so acknowledged) that a reader would refuse to load back.
  if (enc.size() > kMaxIndexBytes)
    return NoSpace("point " + std::to_string(info.id) + "'s index would take " + std::to_string(enc.size()) +
                   " bytes, over the " + std::to_string(kMaxIndexBytes) + " a reader loads (" +
                   std::to_string(index.entries.size()) + " extents): not committed");
  PointInfo p = info;
  p.index_checksum = Checksum64(enc);
  Manifest next = manifest_;
  next.points.push_back(p);
  next.key_id = key_id;
  BR_RETURN_IF_ERROR(CheckManifestSize(next));  // before the index is written: no orphan either
  BR_RETURN_IF_ERROR(env_->WriteFileAtomic(IndexPath(p), enc));
  return CommitManifest(std::move(next));
}

Status ServerStore::CheckManifestSize(const Manifest& next) const {
  size_t bytes = next.EncodedSize();
  if (bytes <= kMaxManifestBytes) return Status::Ok();
  return NoSpace("server '" + manifest_.server_id + "': a manifest of " + std::to_string(next.points.size()) +
                 " points would take " + std::to_string(bytes) + " bytes, over the " +
                 std::to_string(kMaxManifestBytes) + " a reader loads: not committed; let retention expire points");
}

Status ServerStore::CommitManifest(Manifest next) {
  BR_RETURN_IF_ERROR(CheckManifestSize(next));
  Bytes menc = next.Encode();
  if (publisher_) BR_RETURN_IF_ERROR(publisher_->Publish(*this, next));
  BR_RETURN_IF_ERROR(env_->WriteFileAtomic(dir_ + "/MANIFEST", menc));
  manifest_ = std::move(next);
  return Status::Ok();
}

Status ServerStore::ExpirePoints(const std::vector<uint64_t>& ids) {
  if (ids.empty()) return Status::Ok();
  std::set<uint64_t> drop(ids.begin(), ids.end());
  if (drop.count(manifest_.last_point_id()) != 0)
    return Internal("the newest point " + std::to_string(manifest_.last_point_id()) + " cannot expire");
  Manifest next = manifest_;
  std::vector<PointInfo> gone;
  next.points.clear();
  for (const PointInfo& p : manifest_.points) (drop.count(p.id) ? gone : next.points).push_back(p);
  if (gone.size() != drop.size()) return Internal("asked to expire a point the chain does not hold");
  BR_RETURN_IF_ERROR(CommitManifest(std::move(next)));
  // From here the points are gone; an index file left behind is an orphan RemoveOrphans deletes.
  for (const PointInfo& p : gone) {
    std::string path = IndexPath(p);
    Status st = env_->Remove(path);
    if (!st.ok() && st.code() != Code::kNotFound)
      return st.Annotate("remove the index of expired point " + std::to_string(p.id));
  }
  return env_->SyncDir(dir_ + "/index");
}

Status ServerStore::RemoveOrphans() {
  std::set<std::string> wanted;
  for (const PointInfo& p : manifest_.points) wanted.insert(IndexPath(p));
  BR_ASSIGN_OR_RETURN(auto names, env_->ListDir(dir_ + "/index"));
  for (const std::string& n : names) {
    std::string path = dir_ + "/index/" + n;
    if (wanted.count(path) == 0) BR_RETURN_IF_ERROR(env_->Remove(path).Annotate("remove orphan"));
  }
  std::string tmp = dir_ + "/MANIFEST.tmp";
  if (env_->Exists(tmp)) BR_RETURN_IF_ERROR(env_->Remove(tmp));
  return env_->SyncDir(dir_ + "/index");
}

Result<File*> PackReader::Pack(uint32_t pack) {
  auto it = files_.find(pack);
  if (it == files_.end()) {
    char name[32];
    std::snprintf(name, sizeof(name), "%08" PRIu32 ".pack", pack);
    std::string path = dir_ + "/packs/" + name;
    auto file = env_->Open(path, OpenMode::kRead);
    if (!file.ok()) return file.status().Annotate("store damaged: open pack");
    it = files_.emplace(pack, std::move(file).value()).first;
  }
  return it->second.get();
}

Result<int> PackReader::Fd(uint32_t pack) {
  BR_ASSIGN_OR_RETURN(File* f, Pack(pack));
  if (f->fd() < 0) return Unavailable("pack " + std::to_string(pack) + " has no file descriptor here (an object store)");
  return f->fd();
}

Result<bool> PackReader::OpenAll(const PointIndex& index) {
  std::set<uint32_t> packs;
  for (const IndexEntry& e : index.entries) packs.insert(e.pack);
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return ErrnoStatus("getrlimit", errno);
  const rlim_t want = packs.size() + 256;  // room for the output files and everything else
  if (lim.rlim_cur < want && lim.rlim_max >= want) {
    lim.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) return ErrnoStatus("setrlimit", errno);
  }
  if (lim.rlim_cur < want) return false;
  for (uint32_t p : packs) BR_RETURN_IF_ERROR(Pack(p).status());
  return true;
}

Status PackReader::Read(const IndexEntry& e, Bytes* out) {
  if (e.record_bytes > kRecordBytesMax)
    return DataLoss("pack " + std::to_string(e.pack) + " offset " + std::to_string(e.pack_offset) + ": a record of " +
                    std::to_string(e.record_bytes) + " bytes cannot exist");
  BR_ASSIGN_OR_RETURN(File* f, Pack(e.pack));
  out->resize(e.record_bytes);
  Status s = f->ReadExact(e.pack_offset, out->data(), out->size());
  if (!s.ok())
    return DataLoss("pack " + std::to_string(e.pack) + " offset " + std::to_string(e.pack_offset) +
                    ": " + s.message());
  if (Checksum64(*out) != e.checksum)
    return DataLoss("record in pack " + std::to_string(e.pack) + " at offset " +
                    std::to_string(e.pack_offset) + " fails its checksum");
  return Status::Ok();
}

Status PackReader::ReadFingerprints(const PointIndex& index, uint16_t volume, uint64_t offset,
                                    std::vector<uint64_t>* out) {
  constexpr uint64_t kBlock = kBlockBytes;
  const uint64_t end = offset + out->size() * kBlock;
  std::fill(out->begin(), out->end(), 0);  // no entry: the point holds zeros there
  auto it = std::lower_bound(index.entries.begin(), index.entries.end(), std::pair{volume, offset},
                             [](const IndexEntry& e, const std::pair<uint16_t, uint64_t>& k) {
                               return e.volume < k.first || (e.volume == k.first && e.offset + e.length <= k.second);
                             });
  Bytes raw;
  for (; it != index.entries.end() && it->volume == volume && it->offset < end; ++it) {
    const IndexEntry& e = *it;
    uint64_t from = std::max(e.offset, offset), to = std::min(e.offset + e.length, end);
    if (e.offset % kBlock != 0 || e.offset_in_record % kBlock != 0) {
      // Not block aligned (never written so by our agent): unknown, so the agent resends it.
      for (uint64_t b = from / kBlock; b * kBlock < to; ++b) (*out)[b - offset / kBlock] = kFingerprintUnknown;
      continue;
    }
    uint64_t first = (from - e.offset) / kBlock, count = (to - from + kBlock - 1) / kBlock;
    uint64_t at = e.pack_offset + e.record_bytes + (e.offset_in_record / kBlock + first) * 8;
    BR_ASSIGN_OR_RETURN(File* f, Pack(e.pack));
    raw.resize(count * 8);
    Status s = f->ReadExact(at, raw.data(), raw.size());
    if (!s.ok()) return DataLoss("fingerprints in pack " + std::to_string(e.pack) + ": " + s.message());
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t v = 0;
      for (int b = 0; b < 8; ++b) v |= static_cast<uint64_t>(raw[i * 8 + b]) << (8 * b);
      (*out)[(from - offset) / kBlock + i] = v;
    }
  }
  return Status::Ok();
}

}  // namespace blockrep::store
