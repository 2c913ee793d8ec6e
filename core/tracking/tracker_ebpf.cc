#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <set>

#include "blockrep/base/check.h"
#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"
#include "blockrep/tracking/tracker.h"
#include "dirty_tracker.skel.h"

namespace blockrep {
namespace {

constexpr uint64_t kMetaMagic = 0x3154524b52425242ull;  // "BRBRKRT1"
constexpr size_t kMetaVolumesMax = 32;
constexpr unsigned long kBpfFsMagic = 0xcafe4a11;
constexpr char kPinRoot[] = "/sys/fs/bpf/blockrep";
constexpr size_t kPendingWritesMax = 65536;  // PENDING_WRITES_MAX in the BPF program

// Mirrors struct tracker_meta and struct volume_slot in dirty_tracker.bpf.c.
struct Meta {
  uint64_t magic;
  uint64_t synced_point;
  uint32_t volume_count;
  // The low 32 bits of the millisecond time of the point this tracker began sending after
  // synced_point (0: none): tells that point from one another agent of the server-id committed.
  uint32_t sending_stamp;
  uint32_t devs[kMetaVolumesMax];
  uint64_t start_sectors[kMetaVolumesMax];
  uint64_t nr_sectors[kMetaVolumesMax];
  uint64_t skips_handled;
};
// Mirrors struct pending_write.
struct PendingWrite {
  uint64_t word_base;
  uint64_t first_block;
  uint64_t last_block;
  uint64_t issued_ns;
};
struct VolumeSlot {
  uint64_t word_base;
  uint64_t start_sector;
  uint64_t nr_sectors;
  uint64_t overflows;
};

// libbpf's own diagnostics: keep the last one for our error line instead of printing them.
thread_local std::string g_libbpf_last;
int CaptureLibbpf(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[512];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  g_libbpf_last.assign(buf);
  while (!g_libbpf_last.empty() && g_libbpf_last.back() == '\n') g_libbpf_last.pop_back();
  return n;
}

Status LibbpfError(const std::string& what, int err) {
  std::string detail = g_libbpf_last.empty() ? std::strerror(err < 0 ? -err : err) : g_libbpf_last;
  return Status(Code::kUnavailable, what + ": " + detail);
}

Status EnsureMounted(const char* dir, const char* type, unsigned long magic) {
  struct statfs sfs{};
  if (statfs(dir, &sfs) == 0 && static_cast<unsigned long>(sfs.f_type) == magic) return Status::Ok();
  mkdir(dir, 0700);
  if (mount(type, dir, type, 0, nullptr) != 0)
    return ErrnoStatus(std::string("mount ") + type + " on " + dir + " (eBPF tracking needs root)", errno);
  return Status::Ok();
}

// sysfs files claim 4096 bytes and hold a short line: read to end of file, not to st_size.
std::string ReadSysfs(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return "";
  char buf[256];
  ssize_t n = read(fd.get(), buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

uint64_t WordsFor(const TrackedVolume& v) {
  uint64_t blocks = (v.nr_sectors * 512 + kTrackBlockBytes - 1) / kTrackBlockBytes;
  return (blocks + 63) / 64;
}

}  // namespace

struct EbpfTracker::Impl {
  std::string dir;
  std::vector<TrackedVolume> vols;
  std::vector<uint64_t> word_base;
  uint64_t total_words = 0;
  int fd_dirty = -1, fd_inflight = -1, fd_undurable = -1, fd_meta = -1, fd_volumes = -1, fd_stats = -1;
  int fd_pending = -1;
  std::vector<int> prog_fds;     // both programs, for the kernel's count of skipped runs
  uint64_t skips_handled = 0;    // mirrored in meta
  uint64_t unreported_marked = 0;  // pending writes this process marked for their age
  // Pending writes (request address, issue time) already marked for their age: marked once, and
  // kept in the map — see MarkPendingWrites.
  std::set<std::pair<uint64_t, uint64_t>> aged;
  uint64_t* dirty = nullptr;
  uint64_t* inflight = nullptr;
  uint64_t* undurable = nullptr;
  DirtyMap map;  // the bookkeeping of dirty, inflight and undurable, over the mmapped maps
  size_t map_bytes = 0;
  dirty_tracker* skel = nullptr;

  ~Impl() {
    if (dirty != nullptr) munmap(dirty, map_bytes);
    if (inflight != nullptr) munmap(inflight, map_bytes);
    if (undurable != nullptr) munmap(undurable, map_bytes);
    for (int fd : prog_fds) close(fd);
    if (skel != nullptr) {
      dirty_tracker__destroy(skel);  // the pinned link and maps live on
    } else {
      for (int fd : {fd_dirty, fd_inflight, fd_undurable, fd_meta, fd_volumes, fd_stats, fd_pending})
        if (fd >= 0) close(fd);
    }
  }

  Status MapBitmaps() {
    long page = sysconf(_SC_PAGESIZE);
    map_bytes = (total_words * 8 + page - 1) / page * page;
    void* d = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_dirty, 0);
    if (d == MAP_FAILED) return ErrnoStatus("mmap the dirty bitmap", errno);
    dirty = static_cast<uint64_t*>(d);
    void* f = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_inflight, 0);
    if (f == MAP_FAILED) return ErrnoStatus("mmap the inflight bitmap", errno);
    inflight = static_cast<uint64_t*>(f);
    void* u = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_undurable, 0);
    if (u == MAP_FAILED) return ErrnoStatus("mmap the undurable bitmap", errno);
    undurable = static_cast<uint64_t*>(u);
    map.Attach(dirty, inflight, undurable, total_words);  // undurable bits from before a restart count
    return Status::Ok();
  }

  // Runs of our programs the kernel skipped (recursion protection): each may be a lost write.
  uint64_t KernelSkips() const {
    uint64_t total = 0;
    for (int fd : prog_fds) {
      bpf_prog_info info{};
      uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) total += info.recursion_misses;
    }
    return total;
  }

  Meta ExpectedMeta(uint64_t synced, uint32_t stamp = 0) const {
    Meta m{};
    m.magic = kMetaMagic;
    m.synced_point = synced;
    m.sending_stamp = stamp;
    m.skips_handled = skips_handled;
    m.volume_count = static_cast<uint32_t>(vols.size());
    for (size_t i = 0; i < vols.size(); ++i) {
      m.devs[i] = vols[i].kernel_dev;
      m.start_sectors[i] = vols[i].start_sector;
      m.nr_sectors[i] = vols[i].nr_sectors;
    }
    return m;
  }

  // True when the pin exists and describes exactly these volumes.
  bool TryReuse() {
    if (!PathExists(dir + "/link")) return false;
    fd_meta = bpf_obj_get((dir + "/meta").c_str());
    fd_dirty = bpf_obj_get((dir + "/dirty").c_str());
    fd_inflight = bpf_obj_get((dir + "/inflight").c_str());
    fd_undurable = bpf_obj_get((dir + "/undurable").c_str());
    fd_volumes = bpf_obj_get((dir + "/volumes").c_str());
    fd_stats = bpf_obj_get((dir + "/stats").c_str());
    fd_pending = bpf_obj_get((dir + "/pending").c_str());
    if (fd_meta < 0 || fd_dirty < 0 || fd_inflight < 0 || fd_undurable < 0 || fd_volumes < 0 || fd_stats < 0 ||
        fd_pending < 0)
      return false;
    for (const char* link : {"link", "link-issue"}) {
      UniqueFd lfd(bpf_obj_get((dir + "/" + link).c_str()));
      if (!lfd.valid()) return false;
      bpf_link_info li{};
      uint32_t li_len = sizeof(li);
      if (bpf_obj_get_info_by_fd(lfd.get(), &li, &li_len) != 0) return false;
      int pfd = bpf_prog_get_fd_by_id(li.prog_id);
      if (pfd < 0) return false;
      prog_fds.push_back(pfd);
    }
    Meta m{};
    uint32_t key = 0;
    if (bpf_map_lookup_elem(fd_meta, &key, &m) != 0) return false;
    skips_handled = m.skips_handled;
    Meta want = ExpectedMeta(m.synced_point, m.sending_stamp);
    if (std::memcmp(&m, &want, sizeof(Meta)) != 0) return false;
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd_dirty, &info, &len) != 0 || info.max_entries != total_words) return false;
    if (!MapBitmaps().ok()) return false;
    return true;
  }

  void CloseAll() {
    if (dirty != nullptr) munmap(dirty, map_bytes);
    if (inflight != nullptr) munmap(inflight, map_bytes);
    if (undurable != nullptr) munmap(undurable, map_bytes);
    dirty = inflight = undurable = nullptr;
    for (int* fd : {&fd_dirty, &fd_inflight, &fd_undurable, &fd_meta, &fd_volumes, &fd_stats, &fd_pending}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
    for (int fd : prog_fds) close(fd);
    prog_fds.clear();
    skips_handled = 0;
  }

  Status LoadFresh() {
    skel = dirty_tracker__open();
    if (skel == nullptr) return LibbpfError("open the BPF tracker", errno);
    bpf_map__set_max_entries(skel->maps.dirty, static_cast<uint32_t>(total_words));
    bpf_map__set_max_entries(skel->maps.inflight, static_cast<uint32_t>(total_words));
    bpf_map__set_max_entries(skel->maps.undurable, static_cast<uint32_t>(total_words));
    int err = dirty_tracker__load(skel);
    if (err != 0) return LibbpfError("load the BPF tracker (kernel without BPF or BTF?)", err);
    fd_dirty = bpf_map__fd(skel->maps.dirty);
    fd_inflight = bpf_map__fd(skel->maps.inflight);
    fd_undurable = bpf_map__fd(skel->maps.undurable);
    fd_meta = bpf_map__fd(skel->maps.meta);
    fd_volumes = bpf_map__fd(skel->maps.volumes);
    fd_stats = bpf_map__fd(skel->maps.stats);
    fd_pending = bpf_map__fd(skel->maps.pending);
    for (bpf_program* prog : {skel->progs.blockrep_rq_complete, skel->progs.blockrep_rq_issue}) {
      int pfd = fcntl(bpf_program__fd(prog), F_DUPFD_CLOEXEC, 0);
      if (pfd < 0) return ErrnoStatus("duplicate a BPF program descriptor", errno);
      prog_fds.push_back(pfd);
    }
    for (size_t i = 0; i < vols.size(); ++i) {
      VolumeSlot slot{word_base[i], vols[i].start_sector, vols[i].nr_sectors, 0};
      if (bpf_map_update_elem(fd_volumes, &vols[i].kernel_dev, &slot, BPF_NOEXIST) != 0)
        return InvalidArgument("two volumes on the same disk (" + vols[i].path +
                               "): eBPF tracking protects one volume per disk");
    }
    Meta m = ExpectedMeta(0);
    uint32_t key = 0;
    if (bpf_map_update_elem(fd_meta, &key, &m, BPF_ANY) != 0) return ErrnoStatus("write tracker meta", errno);
    BR_RETURN_IF_ERROR(MapBitmaps());
    BR_RETURN_IF_ERROR(MakeDirs(dir, 0700));
    // Issue first: a write whose completion we see is then also known as pending, never the
    // other way round.
    for (auto [prog, name] : {std::pair{skel->progs.blockrep_rq_issue, "link-issue"},
                              {skel->progs.blockrep_rq_complete, "link"}}) {
      bpf_link* link = bpf_program__attach(prog);
      if (link == nullptr) return LibbpfError(std::string("attach ") + bpf_program__name(prog), errno);
      int pin_err = bpf_link__pin(link, (dir + "/" + name).c_str());
      if (pin_err != 0) {
        bpf_link__destroy(link);
        return LibbpfError("pin the tracker link in " + dir, pin_err);
      }
      // From here the pin keeps the program attached; our exit must not detach it.
      bpf_link__disconnect(link);
      bpf_link__destroy(link);
    }
    for (auto [map, name] : {std::pair{skel->maps.dirty, "dirty"}, {skel->maps.inflight, "inflight"}, {skel->maps.undurable, "undurable"},
                             {skel->maps.meta, "meta"}, {skel->maps.volumes, "volumes"},
                             {skel->maps.stats, "stats"}, {skel->maps.pending, "pending"}}) {
      int pin_err = bpf_map__pin(map, (dir + "/" + name).c_str());
      if (pin_err != 0) return LibbpfError(std::string("pin the ") + name + " map", pin_err);
    }
    return Status::Ok();
  }
};

std::string EbpfTracker::PinDir(const std::string& server_id) {
  return std::string(kPinRoot) + "/" + server_id;
}

Result<TrackedVolume> DescribeBlockDevice(const std::string& path) {
  struct stat st{};
  if (stat(path.c_str(), &st) != 0) return ErrnoStatus("volume " + path, errno);
  if (!S_ISBLK(st.st_mode))
    return InvalidArgument(path + " is not a block device; eBPF tracks block devices only");
  unsigned maj = major(st.st_rdev), min = minor(st.st_rdev);
  std::string sys = "/sys/dev/block/" + std::to_string(maj) + ":" + std::to_string(min);
  TrackedVolume v;
  v.path = path;
  std::string size = ReadSysfs(sys + "/size");
  if (size.empty()) return NotFound("cannot read " + sys + "/size");
  v.nr_sectors = std::strtoull(size.c_str(), nullptr, 10);
  std::string disk = sys;
  if (PathExists(sys + "/partition")) {
    v.start_sector = std::strtoull(ReadSysfs(sys + "/start").c_str(), nullptr, 10);
    disk = sys + "/..";
    std::string dev = ReadSysfs(disk + "/dev");
    if (sscanf(dev.c_str(), "%u:%u", &maj, &min) != 2) return NotFound("cannot find the disk of " + path);
  }
  if (!PathExists(disk + "/mq"))
    return InvalidArgument(path + " is a bio-based device (device-mapper, md, ...); eBPF tracking covers "
                                  "request-based disks for now");
  v.kernel_dev = (maj << 20) | min;
  return v;
}

Result<std::unique_ptr<EbpfTracker>> EbpfTracker::Open(const std::string& server_id,
                                                       const std::vector<TrackedVolume>& volumes) {
  if (volumes.empty() || volumes.size() > kMetaVolumesMax)
    return InvalidArgument("eBPF tracking covers 1 to 32 volumes per server");
  libbpf_set_print(CaptureLibbpf);
  BR_RETURN_IF_ERROR(EnsureMounted("/sys/fs/bpf", "bpf", kBpfFsMagic));
  BR_RETURN_IF_ERROR(EnsureMounted("/sys/kernel/tracing", "tracefs", 0x74726163));
  std::unique_ptr<EbpfTracker> t(new EbpfTracker());
  t->impl_ = std::make_unique<Impl>();
  Impl& im = *t->impl_;
  im.dir = PinDir(server_id);
  im.vols = volumes;
  for (const auto& v : volumes) {
    im.word_base.push_back(im.total_words);
    im.total_words += WordsFor(v);
  }
  if (im.TryReuse()) {
    t->resumed_ = true;
    return t;
  }
  im.CloseAll();
  BR_RETURN_IF_ERROR(Unpin(server_id));
  BR_RETURN_IF_ERROR(im.LoadFresh());
  return t;
}

Result<std::unique_ptr<EbpfTracker>> EbpfTracker::OpenPinned(const std::string& server_id) {
  libbpf_set_print(CaptureLibbpf);
  std::string dir = PinDir(server_id);
  if (!PathExists(dir + "/meta"))
    return NotFound("no pinned eBPF tracker of server '" + server_id + "' on this host (" + dir +
                    " is missing: rebooted since, or the agent did not track with eBPF)");
  UniqueFd meta(bpf_obj_get((dir + "/meta").c_str()));
  if (!meta.valid()) return ErrnoStatus("open " + dir + "/meta", errno);
  Meta m{};
  uint32_t key = 0;
  if (bpf_map_lookup_elem(meta.get(), &key, &m) != 0) return ErrnoStatus("read " + dir + "/meta", errno);
  if (m.magic != kMetaMagic || m.volume_count == 0 || m.volume_count > kMetaVolumesMax)
    return DataLoss(dir + "/meta is not a blockrep tracker's (another version?)");
  std::unique_ptr<EbpfTracker> t(new EbpfTracker());
  t->impl_ = std::make_unique<Impl>();
  Impl& im = *t->impl_;
  im.dir = dir;
  for (uint32_t i = 0; i < m.volume_count; ++i) {
    TrackedVolume v;
    v.kernel_dev = m.devs[i];
    v.start_sector = m.start_sectors[i];
    v.nr_sectors = m.nr_sectors[i];
    im.vols.push_back(v);
    im.word_base.push_back(im.total_words);
    im.total_words += WordsFor(v);
  }
  if (!im.TryReuse()) return DataLoss("the pinned tracker in " + dir + " is incomplete or changed while it was read");
  t->resumed_ = true;
  return t;
}

EbpfTracker::~EbpfTracker() = default;

const std::vector<TrackedVolume>& EbpfTracker::volumes() const { return impl_->vols; }

int EbpfTracker::IndexOf(const TrackedVolume& v) const {
  for (size_t i = 0; i < impl_->vols.size(); ++i) {
    const TrackedVolume& t = impl_->vols[i];
    if (t.kernel_dev == v.kernel_dev && t.start_sector == v.start_sector && t.nr_sectors == v.nr_sectors)
      return static_cast<int>(i);
  }
  return -1;
}

std::vector<Extent> EbpfTracker::ChangedSinceSynced(size_t v) const {
  const Impl& im = *impl_;
  return im.map.Changed(im.word_base[v], WordsFor(im.vols[v]), im.vols[v].nr_sectors * 512);
}

uint32_t EbpfTracker::SendingStamp() const {
  Meta m{};
  uint32_t key = 0;
  if (bpf_map_lookup_elem(impl_->fd_meta, &key, &m) != 0) return 0;
  return m.sending_stamp;
}

namespace {
// Updates and lookups of keys the tracker created itself (array slots, its volumes' entries in a
// map pinned by it) fail only when the kernel or the pin is broken: the tracker's state would then
// be unknown, so the agent stops rather than trust it.
void MapUpdate(int fd, const void* key, const void* value, uint64_t flags) {
  int rc = bpf_map_update_elem(fd, key, value, flags);
  BR_CHECK_MSG(rc == 0, std::string("bpf_map_update_elem on the tracker's own key: ") + std::strerror(errno));
}
void MapLookup(int fd, const void* key, void* value) {
  int rc = bpf_map_lookup_elem(fd, key, value);
  BR_CHECK_MSG(rc == 0, std::string("bpf_map_lookup_elem on the tracker's own key: ") + std::strerror(errno));
}
uint32_t StampOf(uint64_t time_ns) {
  uint32_t stamp = static_cast<uint32_t>(time_ns / 1000000);
  return stamp == 0 ? 1 : stamp;  // 0 means "none"
}
}  // namespace

void EbpfTracker::NoteSending(uint64_t time_ns) {
  Meta m = impl_->ExpectedMeta(synced_point(), StampOf(time_ns));
  uint32_t key = 0;
  MapUpdate(impl_->fd_meta, &key, &m, BPF_ANY);
}

bool EbpfTracker::SentPoint(uint64_t time_ns) const {
  uint32_t stamp = SendingStamp();
  return stamp != 0 && stamp == StampOf(time_ns);
}

uint64_t EbpfTracker::synced_point() const {
  Meta m{};
  uint32_t key = 0;
  if (bpf_map_lookup_elem(impl_->fd_meta, &key, &m) != 0) return 0;
  return m.synced_point;
}

bool EbpfTracker::overflowed(size_t v) const {
  VolumeSlot slot{};
  if (bpf_map_lookup_elem(impl_->fd_volumes, &impl_->vols[v].kernel_dev, &slot) != 0) return true;
  return slot.overflows != 0 || impl_->KernelSkips() > impl_->skips_handled;
}

size_t EbpfTracker::MarkPendingWrites(bool all) {
  Impl& im = *impl_;
  constexpr uint64_t kPendingAgeMaxNs = 1000000000ull;  // far beyond a healthy write's latency
  uint64_t now = MonotonicNs();
  size_t marked = 0;
  std::set<std::pair<uint64_t, uint64_t>> still_aged;
  uint64_t key = 0, next = 0;
  const void* prev = nullptr;
  // Entries are never deleted here. An entry older than a second may be a write the kernel
  // completed without telling us — or one still in flight on a stalled disk (a loop device
  // under writeback pressure takes seconds): marked now, it is read now, possibly before its data
  // lands, so only its entry staying until its completion (which marks again) or its request's
  // reissue (which marks again, the write being done by then) keeps it from being lost. Deleting
  // aged entries lost 148 of 440,000 writes under such pressure (bench/chain.sh).
  // A key deleted under us (its write completed) restarts the walk from the first key, so the
  // walk is bounded: at worst some entries are marked twice, which costs nothing.
  for (size_t steps = 0; steps < 2 * kPendingWritesMax && bpf_map_get_next_key(im.fd_pending, prev, &next) == 0;
       ++steps) {
    key = next;
    prev = &key;
    PendingWrite p{};
    if (bpf_map_lookup_elem(im.fd_pending, &key, &p) != 0) continue;  // completed meanwhile
    if (p.word_base + p.last_block / 64 >= im.total_words || p.first_block > p.last_block) continue;
    bool old = now > p.issued_ns && now - p.issued_ns > kPendingAgeMaxNs;
    std::pair<uint64_t, uint64_t> id{key, p.issued_ns};
    bool aged_before = old && im.aged.count(id) != 0;
    if (old) still_aged.insert(id);
    // By age once per write (a request never reused would otherwise be re-read at every poll);
    // at the end of a point, every entry, every time.
    if (!all && (!old || aged_before)) continue;
    im.map.Mark(p.word_base, p.first_block, p.last_block);
    ++marked;
    if (old && !aged_before) ++im.unreported_marked;
  }
  im.aged.swap(still_aged);
  return marked;
}

uint64_t EbpfTracker::UnreportedCompletions() const {
  uint64_t in_kernel = 0;
  uint32_t k2 = 2;
  MapLookup(impl_->fd_stats, &k2, &in_kernel);
  return in_kernel + impl_->unreported_marked;
}

std::vector<Extent> EbpfTracker::TakeDirty(size_t v, bool with_inflight) {
  Impl& im = *impl_;
  return im.map.Take(im.word_base[v], WordsFor(im.vols[v]), im.vols[v].nr_sectors * 512, with_inflight);
}

std::vector<Extent> EbpfTracker::UndurableRuns(size_t v) const {
  const Impl& im = *impl_;
  return im.map.Undurable(im.word_base[v], WordsFor(im.vols[v]), im.vols[v].nr_sectors * 512);
}

void EbpfTracker::MarkCaughtUp() { impl_->map.CaughtUp(); }

void EbpfTracker::MarkInflightUndurable() { impl_->map.InflightUndurable(); }

void EbpfTracker::ClearDirty() {
  Impl& im = *impl_;
  // The full read that follows covers whatever the skipped runs would have marked.
  im.skips_handled = im.KernelSkips();
  Meta m = im.ExpectedMeta(synced_point(), SendingStamp());
  uint32_t key = 0;
  MapUpdate(im.fd_meta, &key, &m, BPF_ANY);
  im.map.Clear();
  for (size_t v = 0; v < im.vols.size(); ++v) {
    VolumeSlot slot{im.word_base[v], im.vols[v].start_sector, im.vols[v].nr_sectors, 0};
    MapUpdate(im.fd_volumes, &im.vols[v].kernel_dev, &slot, BPF_EXIST);
  }
}

void EbpfTracker::MarkSynced(uint64_t point_id) {
  Impl& im = *impl_;
  im.map.Synced();  // every record of the point is durable
  Meta m = im.ExpectedMeta(point_id);
  uint32_t key = 0;
  MapUpdate(im.fd_meta, &key, &m, BPF_ANY);
}

bool EbpfTracker::WrittenBytes(uint64_t* bytes) const {
  uint32_t k3 = 3;
  return bpf_map_lookup_elem(impl_->fd_stats, &k3, bytes) == 0;  // fails on a 3-entry map (older pin)
}

uint64_t EbpfTracker::DirtyBytes() const { return impl_->map.DirtyBlocks() * kTrackBlockBytes; }

std::pair<uint64_t, uint64_t> EbpfTracker::Stats() const {
  uint64_t marked = 0, seen = 0;
  uint32_t k0 = 0, k1 = 1;
  MapLookup(impl_->fd_stats, &k0, &marked);
  MapLookup(impl_->fd_stats, &k1, &seen);
  return {marked, seen};
}

Status EbpfTracker::Unpin(const std::string& server_id) {
  std::string dir = PinDir(server_id);
  if (!PathExists(dir)) return Status::Ok();
  for (const char* name :
       {"link-issue", "link", "dirty", "inflight", "undurable", "meta", "volumes", "stats", "pending"}) {
    std::string p = dir + "/" + name;
    if (unlink(p.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove pin " + p, errno);
  }
  if (rmdir(dir.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove " + dir, errno);
  return Status::Ok();
}

}  // namespace blockrep
