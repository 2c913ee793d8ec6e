#include "blockrep/objstore/bucket_mirror.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "blockrep/base/fs.h"

namespace blockrep {
namespace {

// Objects one server's folder may hold in a listing (packs, indexes): far above what retention
// and compaction leave (a pack per session or point, an index per retained point).
constexpr size_t kServerObjectsMax = 1u << 20;
// A pack is fetched in ranges of this size (a bounded buffer whatever the pack's size).
constexpr size_t kFetchRangeBytes = 16u << 20;
constexpr size_t kServersMax = 100000;

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The pack ids an index names.
Result<std::set<uint32_t>> PacksOf(ByteSpan index_bytes, const std::string& what) {
  auto idx = store::PointIndex::Decode(index_bytes);
  if (!idx.ok()) return idx.status().Annotate(what);
  std::set<uint32_t> packs;
  for (const store::IndexEntry& e : idx->entries) packs.insert(e.pack);
  return packs;
}

// A read-only mapping of a whole file: an upload's body without copying it into memory.
class MappedFile {
 public:
  static Result<MappedFile> Open(const std::string& path) {
    MappedFile m;
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus("open " + path, errno);
    struct stat st{};
    if (fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
    m.size_ = static_cast<size_t>(st.st_size);
    if (m.size_ == 0) return m;
    void* p = mmap(nullptr, m.size_, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return ErrnoStatus("mmap " + path, errno);
    m.data_ = static_cast<uint8_t*>(p);
    return m;
  }
  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr; }
  MappedFile& operator=(MappedFile&&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  ByteSpan bytes() const { return ByteSpan(data_, size_); }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

ServerMirror::ServerMirror(std::unique_ptr<S3Client> client, std::string server_id)
    : client_(std::move(client)), server_id_(std::move(server_id)) {}

Status ServerMirror::FetchToFile(const std::string& key, uint64_t size, const std::string& path) {
  Env* env = Env::Default();
  std::string tmp = path + ".tmp";
  {
    BR_ASSIGN_OR_RETURN(auto file, env->Open(tmp, OpenMode::kCreateTruncate));
    for (uint64_t off = 0; off < size;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(kFetchRangeBytes, size - off));
      BR_ASSIGN_OR_RETURN(Bytes part, client_->GetRange(key, off, want));
      if (part.size() != want)
        return DataLoss("s3 object " + key + " ended at " + std::to_string(off + part.size()) + " bytes; its listing said " +
                        std::to_string(size));
      BR_RETURN_IF_ERROR(file->WriteAt(off, part));
      off += want;
    }
    BR_RETURN_IF_ERROR(file->Sync());
  }
  BR_RETURN_IF_ERROR(env->Rename(tmp, path));
  return env->SyncDir(ParentDir(path));
}

Result<ServerMirror::PullStats> ServerMirror::Pull(const std::string& server_dir) {
  Env* env = Env::Default();
  PullStats stats;
  pack_sizes_.clear();
  index_packs_.clear();
  manifest_etag_.clear();
  BR_ASSIGN_OR_RETURN(auto packs, client_->List(Key("packs/"), kServerObjectsMax));
  for (const S3Object& o : packs) pack_sizes_[static_cast<uint32_t>(std::strtoul(BaseName(o.key).c_str(), nullptr, 10))] = o.size_bytes;
  BR_ASSIGN_OR_RETURN(auto indexes, client_->List(Key("index/"), kServerObjectsMax));
  std::set<std::string> index_names;
  for (const S3Object& o : indexes) index_names.insert(BaseName(o.key));

  const std::string local_path = server_dir + "/MANIFEST";
  auto remote = client_->GetVersioned(Key("MANIFEST"), store::kMaxManifestBytes);
  if (!remote.ok() && remote.status().code() != Code::kNotFound) return remote.status();
  if (!remote.ok()) {
    // No chain in the bucket: a store that was local so far (or a server new to both). Objects
    // without a manifest are a first commit cut short: garbage.
    for (const auto& [pack, size] : pack_sizes_) BR_RETURN_IF_ERROR(client_->Delete(Key("packs/" + store::PackFileName(pack))));
    for (const std::string& name : index_names) BR_RETURN_IF_ERROR(client_->Delete(Key("index/" + name)));
    stats.garbage_deleted = static_cast<uint32_t>(pack_sizes_.size() + index_names.size());
    pack_sizes_.clear();
    if (!env->Exists(local_path)) return stats;
    BR_ASSIGN_OR_RETURN(Bytes local, env->ReadFile(local_path, store::kMaxManifestBytes));
    BR_ASSIGN_OR_RETURN(store::Manifest m, store::Manifest::Decode(local));
    BR_ASSIGN_OR_RETURN(auto opened, store::ServerStore::Open(ParentDir(ParentDir(server_dir)), server_id_, false));
    BR_RETURN_IF_ERROR(Publish(*opened, m));
    stats.uploaded = true;
    return stats;
  }
  manifest_etag_ = remote->etag;
  BR_ASSIGN_OR_RETURN(store::Manifest m, store::Manifest::Decode(remote->data));
  if (m.server_id != server_id_)
    return DataLoss("s3 object " + Key("MANIFEST") + " is the manifest of server '" + m.server_id + "'");
  BR_RETURN_IF_ERROR(env->MakeDirs(server_dir + "/index", 0700));
  BR_RETURN_IF_ERROR(env->MakeDirs(server_dir + "/packs", 0700));
  // Indexes, then packs, then the manifest: the cache's own write order.
  for (const store::PointInfo& p : m.points) {
    const std::string name = store::IndexFileName(p);
    const std::string path = server_dir + "/index/" + name;
    if (index_names.count(name) == 0)
      return DataLoss("the bucket's manifest of server '" + server_id_ + "' names index " + name + ", which the bucket lacks");
    Bytes data;
    if (env->Exists(path)) {
      BR_ASSIGN_OR_RETURN(data, env->ReadFile(path, store::kMaxIndexBytes));
    } else {
      BR_ASSIGN_OR_RETURN(data, client_->Get(Key("index/" + name), store::kMaxIndexBytes));
      BR_RETURN_IF_ERROR(env->WriteFileAtomic(path, data));
      ++stats.indexes_fetched;
      stats.bytes_fetched += data.size();
    }
    BR_ASSIGN_OR_RETURN(std::set<uint32_t> used, PacksOf(data, path));
    for (uint32_t pack : used) {
      auto size = pack_sizes_.find(pack);
      const std::string pname = store::PackFileName(pack);
      if (size == pack_sizes_.end())
        return DataLoss("index " + name + " of server '" + server_id_ + "' names pack " + pname +
                        ", which the bucket lacks");
      const std::string ppath = server_dir + "/packs/" + pname;
      auto have = env->FileSize(ppath);
      if (have.ok() && *have >= size->second) continue;
      BR_RETURN_IF_ERROR(FetchToFile(Key("packs/" + pname), size->second, ppath));
      ++stats.packs_fetched;
      stats.bytes_fetched += size->second;
    }
    index_packs_[name] = std::move(used);
  }
  // What the manifest does not reach is garbage (a commit cut short before its manifest PUT, a
  // delete that failed). It goes now: a pack number reused by this cache must never find an
  // older object of that name counted as its upload.
  std::set<uint32_t> live;
  for (const auto& [name, used] : index_packs_) live.insert(used.begin(), used.end());
  for (auto it = pack_sizes_.begin(); it != pack_sizes_.end();) {
    if (live.count(it->first) != 0) {
      ++it;
      continue;
    }
    BR_RETURN_IF_ERROR(client_->Delete(Key("packs/" + store::PackFileName(it->first))));
    ++stats.garbage_deleted;
    it = pack_sizes_.erase(it);
  }
  for (const std::string& name : index_names) {
    if (index_packs_.count(name) != 0) continue;
    BR_RETURN_IF_ERROR(client_->Delete(Key("index/" + name)));
    ++stats.garbage_deleted;
  }
  Bytes local;
  if (env->Exists(local_path)) {
    BR_ASSIGN_OR_RETURN(local, env->ReadFile(local_path, store::kMaxManifestBytes));
  }
  if (local != remote->data) {
    BR_RETURN_IF_ERROR(env->WriteFileAtomic(local_path, remote->data));
    stats.manifest_replaced = true;
  }
  return stats;
}

Status ServerMirror::EnsurePack(uint32_t pack, const std::string& path) {
  BR_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  auto known = pack_sizes_.find(pack);
  if (known != pack_sizes_.end() && known->second >= file.bytes().size()) return Status::Ok();
  // A pack still being appended is uploaded again, whole, when a later index names its newer
  // records: its earlier bytes never change, so a reader of the older manifest reads the same.
  BR_RETURN_IF_ERROR(client_->Put(Key("packs/" + BaseName(path)), file.bytes()));
  pack_sizes_[pack] = file.bytes().size();
  return Status::Ok();
}

Status ServerMirror::PutManifest(const store::Manifest& m) {
  Bytes enc = m.Encode();
  Result<std::string> etag = manifest_etag_.empty() ? client_->PutIfAbsent(Key("MANIFEST"), enc)
                                                    : client_->PutIfMatch(Key("MANIFEST"), enc, manifest_etag_);
  if (!etag.ok() && etag.status().code() == Code::kConflict)
    return Conflict("server '" + server_id_ + "': its manifest in the bucket changed since this staging last wrote it " +
                    "(another staging frontend writes this chain now): nothing committed; restart this staging to " +
                    "take the bucket's chain");
  if (!etag.ok()) return etag.status().Annotate("server '" + server_id_ + "': publish the manifest");
  manifest_etag_ = std::move(etag).value();
  return Status::Ok();
}

Status ServerMirror::Publish(const store::ServerStore& store, const store::Manifest& next) {
  Env* env = store.env();
  std::map<std::string, std::set<uint32_t>> named;
  for (const store::PointInfo& p : next.points) {
    const std::string path = store.IndexPath(p);
    const std::string name = BaseName(path);
    auto known = index_packs_.find(name);
    if (known != index_packs_.end()) {
      named[name] = known->second;
      continue;
    }
    // Its packs first, then the index: the bucket never names what it lacks.
    BR_ASSIGN_OR_RETURN(Bytes data, env->ReadFile(path, store::kMaxIndexBytes));
    BR_ASSIGN_OR_RETURN(std::set<uint32_t> used, PacksOf(data, path));
    for (uint32_t pack : used) BR_RETURN_IF_ERROR(EnsurePack(pack, store.PackPath(pack)));
    BR_RETURN_IF_ERROR(client_->Put(Key("index/" + name), data));
    index_packs_[name] = used;
    named[name] = std::move(used);
  }
  BR_RETURN_IF_ERROR(PutManifest(next));
  // What the new manifest no longer reaches goes. A failed delete leaves garbage, never damage:
  // the next commit tries again.
  std::set<uint32_t> live;
  for (const auto& [name, packs] : named) live.insert(packs.begin(), packs.end());
  for (auto it = index_packs_.begin(); it != index_packs_.end();) {
    if (named.count(it->first) != 0 || !client_->Delete(Key("index/" + it->first)).ok()) {
      ++it;
      continue;
    }
    it = index_packs_.erase(it);
  }
  for (auto it = pack_sizes_.begin(); it != pack_sizes_.end();) {
    if (live.count(it->first) != 0 || !client_->Delete(Key("packs/" + store::PackFileName(it->first))).ok()) {
      ++it;
      continue;
    }
    it = pack_sizes_.erase(it);
  }
  return Status::Ok();
}

Result<std::unique_ptr<BucketStore>> BucketStore::Open(const std::string& root_url, const S3Flags& flags) {
  BR_ASSIGN_OR_RETURN(S3Config config, MakeS3Config(root_url, flags));
  BR_ASSIGN_OR_RETURN(auto probe, S3Client::Open(config));  // checks the settings now
  return std::unique_ptr<BucketStore>(new BucketStore(root_url, std::move(config)));
}

Status BucketStore::SyncCache(const std::string& cache_root, const std::function<void(const std::string&)>& log) {
  Env* env = Env::Default();
  BR_ASSIGN_OR_RETURN(auto client, S3Client::Open(config_));
  auto format = client->Stat("FORMAT");
  if (!format.ok() && format.status().code() != Code::kNotFound)
    return format.status().Annotate("reach the store " + url_);
  if (!format.ok()) {
    BR_ASSIGN_OR_RETURN(Bytes local, env->ReadFile(cache_root + "/FORMAT", 4096));
    BR_RETURN_IF_ERROR(client->Put("FORMAT", local));
    log("store " + url_ + ": created (FORMAT written)");
  }
  std::set<std::string> ids;
  BR_ASSIGN_OR_RETURN(auto remote, client->ListChildren("servers/", kServersMax));
  ids.insert(remote.begin(), remote.end());
  BR_ASSIGN_OR_RETURN(auto local, store::ListServers(cache_root, env));
  ids.insert(local.begin(), local.end());
  for (const std::string& id : ids) {
    BR_ASSIGN_OR_RETURN(auto c, S3Client::Open(config_));
    auto mirror = std::make_unique<ServerMirror>(std::move(c), id);
    const std::string dir = cache_root + "/servers/" + id;
    BR_ASSIGN_OR_RETURN(ServerMirror::PullStats s, mirror->Pull(dir));
    if (s.uploaded) log("server '" + id + "': its chain in " + cache_root + " published to " + url_);
    if (s.garbage_deleted != 0)
      log("server '" + id + "': deleted " + std::to_string(s.garbage_deleted) +
          " objects its manifest in the bucket does not reach (a commit cut short, or a failed delete)");
    if (s.manifest_replaced)
      log("server '" + id + "': the cache took the bucket's chain (" + std::to_string(s.indexes_fetched) + " indexes, " +
          std::to_string(s.packs_fetched) + " packs, " + std::to_string(s.bytes_fetched) + " bytes fetched)");
    pulled_[id] = std::move(mirror);
  }
  return Status::Ok();
}

Result<std::unique_ptr<ServerMirror>> BucketStore::TakeMirror(const std::string& server_id) {
  auto it = pulled_.find(server_id);
  if (it != pulled_.end()) {
    std::unique_ptr<ServerMirror> m = std::move(it->second);
    pulled_.erase(it);
    return m;
  }
  BR_ASSIGN_OR_RETURN(auto c, S3Client::Open(config_));
  return std::make_unique<ServerMirror>(std::move(c), server_id);
}

}  // namespace blockrep
