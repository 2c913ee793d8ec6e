#define FUSE_USE_VERSION 35
#include "mount.h"

#include <fcntl.h>
#include <signal.h>
#include <fuse3/fuse.h>
#include <fuse3/fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"
#include "blockrep/crypto/keyfile.h"
#include "overlay.h"
#include "point_image.h"
#include "restore.h"

namespace blockrep::recovery {
namespace {

constexpr const char* kProg = "blockrep-recover mount";
// How often the manifest is read again when the root is listed (new points appear, expired ones
// go; a point already opened stays readable: its packs are pinned).
constexpr uint64_t kManifestRefreshNs = 1'000'000'000;

class PointsFs {
 public:
  PointsFs(MountRequest req, std::unique_ptr<PointSource> source, std::unique_ptr<KeyChain> keys)
      : req_(std::move(req)),
        source_(std::move(source)),
        keys_(std::move(keys)),
        opener_(keys_->keys(), req_.server_id),
        cache_(req_.cache_bytes) {}

  Status LoadPoints() {
    BR_ASSIGN_OR_RETURN(store::Manifest m, source_->LoadManifest());
    std::vector<store::PointInfo> points = m.points;
    if (!req_.point_spec.empty()) {
      BR_ASSIGN_OR_RETURN(store::PointInfo p, ResolvePoint(m, req_.point_spec));
      points = {p};
    }
    points_.clear();
    for (const auto& p : points) points_[p.id] = p;
    for (const auto& [id, img] : images_) points_.emplace(id, img->point());  // pinned: still readable
    loaded_ns_ = MonotonicNs();
    return Status::Ok();
  }
  size_t point_count() const { return points_.size(); }

  void MaybeRefresh() {
    if (!req_.point_spec.empty() || MonotonicNs() - loaded_ns_ < kManifestRefreshNs) return;
    Status st = LoadPoints();
    if (!st.ok()) Log(kProg, "reading the manifest again failed (keeping the last listing): " + st.ToString());
  }

  // Path forms: "/", "/latest" and "/<label>" (symlinks to a point's directory), "/<id>",
  // "/<id>/vol-<i>.img".
  struct Path {
    enum class Kind { kRoot, kLink, kPoint, kVolume, kNone } kind = Kind::kNone;
    uint64_t point = 0;
    uint16_t volume = 0;
  };
  Path Parse(const char* path) const {
    Path p;
    std::string s(path);
    if (s == "/") return p.kind = Path::Kind::kRoot, p;
    size_t slash = s.find('/', 1);
    if (slash == std::string::npos && s.size() > 1 && std::isalpha(static_cast<unsigned char>(s[1]))) {
      // "latest", or a label: the newest point carrying it (what --point LABEL picks).
      for (auto it = points_.rbegin(); it != points_.rend(); ++it)
        if (s == "/latest" || it->second.label == s.substr(1)) {
          p.point = it->first;
          p.kind = Path::Kind::kLink;
          return p;
        }
      return p;
    }
    std::string id = s.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
    if (id.empty() || id.size() > 20 || id.find_first_not_of("0123456789") != std::string::npos) return p;
    p.point = std::strtoull(id.c_str(), nullptr, 10);
    if (!points_.count(p.point)) return p;
    if (slash == std::string::npos) return p.kind = Path::Kind::kPoint, p;
    std::string file = s.substr(slash + 1);
    if (file.size() < 9 || file.compare(0, 4, "vol-") != 0 || file.compare(file.size() - 4, 4, ".img") != 0) return p;
    std::string num = file.substr(4, file.size() - 8);
    if (num.empty() || num.size() > 5 || num.find_first_not_of("0123456789") != std::string::npos) return p;
    unsigned long v = std::strtoul(num.c_str(), nullptr, 10);
    if (v >= points_.at(p.point).volume_count) return p;
    p.volume = static_cast<uint16_t>(v);
    p.kind = Path::Kind::kVolume;
    return p;
  }

  // Opens the point's index and pins its packs on first use.
  Result<PointImage*> Image(uint64_t point) {
    auto it = images_.find(point);
    if (it != images_.end()) return it->second.get();
    ReadKeys keys{keys_.get(), &opener_};
    BR_ASSIGN_OR_RETURN(auto img, PointImage::Open(source_.get(), req_.server_id, points_.at(point), keys, &cache_));
    PointImage* raw = img.get();
    images_[point] = std::move(img);
    return raw;
  }

  Result<Overlay*> OverlayOf(uint64_t point, uint16_t volume, uint64_t size) {
    auto key = std::make_pair(point, volume);
    auto it = overlays_.find(key);
    if (it != overlays_.end()) return it->second.get();
    std::string dir = req_.overlay_dir + "/" + std::to_string(point);
    BR_RETURN_IF_ERROR(MakeDirs(dir, 0700));
    BR_ASSIGN_OR_RETURN(auto ov, Overlay::Open(dir + "/vol-" + std::to_string(volume) + ".img", size));
    Overlay* raw = ov.get();
    overlays_[key] = std::move(ov);
    return raw;
  }

  // An errno for FUSE, logging the failure once per distinct message.
  int Fail(const Status& st) {
    if (logged_.insert(st.message()).second) Log(kProg, st.message());
    if (st.code() == Code::kNotFound) return -ENOENT;
    if (st.code() == Code::kInvalidArgument) return -EINVAL;
    return -EIO;
  }

  const MountRequest& req() const { return req_; }
  bool writable() const { return !req_.overlay_dir.empty(); }
  const std::map<uint64_t, store::PointInfo>& points() const { return points_; }

 private:
  MountRequest req_;
  std::unique_ptr<PointSource> source_;
  std::unique_ptr<KeyChain> keys_;
  RecordOpener opener_;
  RegionCache cache_;
  std::map<uint64_t, store::PointInfo> points_;
  uint64_t loaded_ns_ = 0;
  std::map<uint64_t, std::unique_ptr<PointImage>> images_;
  std::map<std::pair<uint64_t, uint16_t>, std::unique_ptr<Overlay>> overlays_;
  std::set<std::string> logged_;
};

// The session the signal handlers end. libfuse's own handlers leave a signal alone when it is
// ignored (as SIGINT is for a background job of a shell), so the mount sets its own.
fuse_session* g_session = nullptr;
void OnStopSignal(int) {
  if (g_session != nullptr) fuse_session_exit(g_session);
}

PointsFs* Fs() { return static_cast<PointsFs*>(fuse_get_context()->private_data); }

int FsGetattr(const char* path, struct stat* st, struct fuse_file_info*) {
  PointsFs* fs = Fs();
  auto p = fs->Parse(path);
  if (p.kind == PointsFs::Path::Kind::kNone) {
    fs->MaybeRefresh();
    p = fs->Parse(path);
  }
  std::memset(st, 0, sizeof(*st));
  st->st_uid = getuid();
  st->st_gid = getgid();
  switch (p.kind) {
    case PointsFs::Path::Kind::kRoot:
      st->st_mode = S_IFDIR | 0500;
      st->st_nlink = 2;
      return 0;
    case PointsFs::Path::Kind::kLink:
      st->st_mode = S_IFLNK | 0777;
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>(std::to_string(p.point).size());
      return 0;
    case PointsFs::Path::Kind::kPoint: {
      const store::PointInfo& info = fs->points().at(p.point);
      st->st_mode = S_IFDIR | 0500;
      st->st_nlink = 2;
      st->st_mtim.tv_sec = static_cast<time_t>(info.time_ns / 1'000'000'000);
      st->st_mtim.tv_nsec = static_cast<long>(info.time_ns % 1'000'000'000);
      return 0;
    }
    case PointsFs::Path::Kind::kVolume: {
      auto img = fs->Image(p.point);
      if (!img.ok()) return fs->Fail(img.status());
      const store::PointInfo& info = (*img)->point();
      st->st_mode = S_IFREG | (fs->writable() ? 0600 : 0400);
      st->st_nlink = 1;
      st->st_size = static_cast<off_t>((*img)->volume_bytes(p.volume));
      st->st_blocks = st->st_size / 512;
      st->st_mtim.tv_sec = static_cast<time_t>(info.time_ns / 1'000'000'000);
      st->st_mtim.tv_nsec = static_cast<long>(info.time_ns % 1'000'000'000);
      return 0;
    }
    case PointsFs::Path::Kind::kNone:
      break;
  }
  return -ENOENT;
}

int FsReadlink(const char* path, char* buf, size_t size) {
  PointsFs* fs = Fs();
  auto p = fs->Parse(path);
  if (p.kind != PointsFs::Path::Kind::kLink || size == 0) return -EINVAL;
  std::string target = std::to_string(p.point);
  std::snprintf(buf, size, "%s", target.c_str());
  return 0;
}

int FsReaddir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, struct fuse_file_info*,
              enum fuse_readdir_flags) {
  PointsFs* fs = Fs();
  auto p = fs->Parse(path);
  if (p.kind == PointsFs::Path::Kind::kRoot) fs->MaybeRefresh();
  if (p.kind != PointsFs::Path::Kind::kRoot && p.kind != PointsFs::Path::Kind::kPoint) return -ENOTDIR;
  fill(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  if (p.kind == PointsFs::Path::Kind::kRoot) {
    for (const auto& [id, info] : fs->points())
      fill(buf, std::to_string(id).c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
    if (!fs->points().empty()) fill(buf, "latest", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
    std::set<std::string> labels;
    for (const auto& [id, info] : fs->points())
      if (!info.label.empty() && labels.insert(info.label).second)
        fill(buf, info.label.c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
    return 0;
  }
  for (uint32_t v = 0; v < fs->points().at(p.point).volume_count; ++v)
    fill(buf, ("vol-" + std::to_string(v) + ".img").c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  return 0;
}

int FsOpen(const char* path, struct fuse_file_info* fi) {
  PointsFs* fs = Fs();
  auto p = fs->Parse(path);
  if (p.kind != PointsFs::Path::Kind::kVolume) return p.kind == PointsFs::Path::Kind::kNone ? -ENOENT : -EISDIR;
  if ((fi->flags & O_ACCMODE) != O_RDONLY && !fs->writable()) return -EROFS;
  if (fi->flags & O_TRUNC) return -EPERM;
  auto img = fs->Image(p.point);
  if (!img.ok()) return fs->Fail(img.status());
  if (fs->writable()) {
    auto ov = fs->OverlayOf(p.point, p.volume, (*img)->volume_bytes(p.volume));
    if (!ov.ok()) return fs->Fail(ov.status());
  }
  fi->keep_cache = 1;  // the image of a point never changes but through this process
  return 0;
}

// The volume image a path names, with its overlay when the mount is writable. 0 or -errno.
struct VolumeRef {
  PointImage* img = nullptr;
  uint16_t volume = 0;
  uint64_t size = 0;
  Overlay* overlay = nullptr;
};
int ResolveVolume(PointsFs* fs, const char* path, VolumeRef* ref) {
  auto p = fs->Parse(path);
  if (p.kind != PointsFs::Path::Kind::kVolume) return -EINVAL;
  auto img = fs->Image(p.point);
  if (!img.ok()) return fs->Fail(img.status());
  ref->img = *img;
  ref->volume = p.volume;
  ref->size = (*img)->volume_bytes(p.volume);
  if (fs->writable()) {
    auto ov = fs->OverlayOf(p.point, p.volume, ref->size);
    if (!ov.ok()) return fs->Fail(ov.status());
    ref->overlay = *ov;
  }
  return 0;
}

int FsRead(const char* path, char* buf, size_t size, off_t off, struct fuse_file_info*) {
  PointsFs* fs = Fs();
  VolumeRef v;
  if (int rc = ResolveVolume(fs, path, &v); rc != 0 || off < 0) return rc != 0 ? rc : -EINVAL;
  uint64_t offset = static_cast<uint64_t>(off);
  if (offset >= v.size) return 0;
  uint64_t len = std::min<uint64_t>(size, v.size - offset);
  auto* out = reinterpret_cast<uint8_t*>(buf);
  Status st = v.overlay ? v.overlay->Read(*v.img, v.volume, offset, len, out) : v.img->Read(v.volume, offset, len, out);
  if (!st.ok()) return fs->Fail(st);
  return static_cast<int>(len);
}

int FsWrite(const char* path, const char* buf, size_t size, off_t off, struct fuse_file_info*) {
  PointsFs* fs = Fs();
  if (!fs->writable()) return -EROFS;
  VolumeRef v;
  if (int rc = ResolveVolume(fs, path, &v); rc != 0 || off < 0) return rc != 0 ? rc : -EINVAL;
  uint64_t offset = static_cast<uint64_t>(off);
  if (offset >= v.size && size > 0) return -ENOSPC;  // an image has its volume's size
  uint64_t len = std::min<uint64_t>(size, v.size - offset);
  Status st = v.overlay->Write(*v.img, v.volume, offset, ByteSpan(reinterpret_cast<const uint8_t*>(buf), len));
  if (!st.ok()) return fs->Fail(st);
  return static_cast<int>(len);
}

int FsTruncate(const char*, off_t, struct fuse_file_info*) { return -EPERM; }

int FsFsync(const char* path, int, struct fuse_file_info*) {
  PointsFs* fs = Fs();
  if (!fs->writable()) return 0;
  VolumeRef v;
  if (int rc = ResolveVolume(fs, path, &v); rc != 0) return rc == -EINVAL ? 0 : rc;
  Status st = v.overlay->Sync();
  return st.ok() ? 0 : fs->Fail(st);
}

int FsStatfs(const char*, struct statvfs* st) {
  std::memset(st, 0, sizeof(*st));
  st->f_bsize = kBlockBytes;
  st->f_frsize = kBlockBytes;
  st->f_namemax = 255;
  return 0;
}

void* FsInit(struct fuse_conn_info*, struct fuse_config* cfg) {
  // Attributes and directory entries change only when the staging adds or expires points.
  cfg->entry_timeout = 1.0;
  cfg->attr_timeout = 1.0;
  cfg->negative_timeout = 0;
  return fuse_get_context()->private_data;
}

}  // namespace

Status Mount(const MountRequest& req, const std::function<void(const std::string&)>& ready) {
  BR_ASSIGN_OR_RETURN(auto keys, KeyChain::Load(req.key_file, req.server_id));
  SourceSpec spec{req.store_dir, req.staging, req.tls, req.server_id, req.key_file, req.s3};
  if (!spec.staging.empty()) FillTlsDefaults(&spec);
  BR_ASSIGN_OR_RETURN(auto source, OpenSource(spec, keys->keys()));
  BR_ASSIGN_OR_RETURN(store::Manifest manifest, source->LoadManifest());
  BR_RETURN_IF_ERROR(CheckKeyFile(manifest, *keys, req.key_file, req.server_id));
  struct stat mp{};
  if (stat(req.mountpoint.c_str(), &mp) != 0 || !S_ISDIR(mp.st_mode))
    return InvalidArgument("mount point " + req.mountpoint + " is not a directory (create it first)");
  if (!req.overlay_dir.empty()) BR_RETURN_IF_ERROR(MakeDirs(req.overlay_dir, 0700));
  PointsFs fs(req, std::move(source), std::move(keys));
  BR_RETURN_IF_ERROR(fs.LoadPoints());

  fuse_operations ops{};
  ops.getattr = FsGetattr;
  ops.readlink = FsReadlink;
  ops.readdir = FsReaddir;
  ops.open = FsOpen;
  ops.read = FsRead;
  ops.write = FsWrite;
  ops.truncate = FsTruncate;
  ops.fsync = FsFsync;
  ops.statfs = FsStatfs;
  ops.init = FsInit;

  std::string opts = "fsname=blockrep:" + req.server_id + ",subtype=blockrep,default_permissions";
  if (geteuid() == 0) opts += ",allow_other";  // services a drill starts may run as other users
  if (req.overlay_dir.empty()) opts += ",ro";
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  fuse_opt_add_arg(&args, "blockrep-recover");
  fuse_opt_add_arg(&args, "-o");
  fuse_opt_add_arg(&args, opts.c_str());
  fuse* f = fuse_new(&args, &ops, sizeof(ops), &fs);
  fuse_opt_free_args(&args);
  if (f == nullptr) return Internal("fuse_new failed (libfuse3 printed why above)");
  if (fuse_mount(f, req.mountpoint.c_str()) != 0) {
    fuse_destroy(f);
    return Unavailable("mounting FUSE at " + req.mountpoint +
                       " failed (is /dev/fuse there, fuse3 installed, the directory free?)");
  }
  g_session = fuse_get_session(f);
  struct sigaction sa{};
  sa.sa_handler = OnStopSignal;  // no SA_RESTART: the loop's read returns EINTR and sees the exit
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  ready("mounted server '" + req.server_id + "' from " + (req.staging.empty() ? "store " + req.store_dir : "staging " + req.staging) +
        " (" + std::to_string(fs.point_count()) + " point(s)" +
        (req.overlay_dir.empty() ? ", read-only" : ", writes to overlay " + req.overlay_dir) + ") at " +
        req.mountpoint);
  int rc = fuse_loop(f);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) signal(sig, SIG_DFL);
  g_session = nullptr;
  fuse_unmount(f);
  fuse_destroy(f);
  if (rc < 0) return Internal("FUSE loop failed: " + std::string(std::strerror(-rc)));
  return Status::Ok();
}

}  // namespace blockrep::recovery
