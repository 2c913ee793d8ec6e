#include "drill.h"

#include <blkid/blkid.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ftw.h>

#include "blockrep/base/cli.h"
#include "blockrep/base/json.h"
#include "blockrep/base/fs.h"
#include "blockrep/store/store.h"
#include "blockrep/crypto/keyfile.h"
#include "restore.h"
#include "source.h"

namespace blockrep::recovery {
namespace {

constexpr const char* kProg = "blockrep-recover drill";
constexpr uint64_t kMountReadyTimeoutS = 60;
constexpr uint64_t kCheckTimeoutS = 1800;  // e2fsck / xfs_repair of a large volume
constexpr size_t kTailBytes = 2000;

std::atomic<int> g_signal{0};
void OnSignal(int sig) { g_signal.store(sig); }

std::string Fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f", v);
  return buf;
}

double SecondsSince(uint64_t start_ns) { return static_cast<double>(MonotonicNs() - start_ns) / 1e9; }

// The last kTailBytes of a file, valid UTF-8 not guaranteed (the JSON escaper keeps bytes).
std::string FileTail(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return "";
  struct stat st{};
  if (fstat(fd.get(), &st) != 0) return "";
  uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t from = size > kTailBytes ? size - kTailBytes : 0;
  std::string out(size - from, '\0');
  if (!PreadAll(fd.get(), from, reinterpret_cast<uint8_t*>(out.data()), out.size()).ok()) return "";
  return out;
}

struct RunResult {
  int exit = 0;  // exit status; -signal; 124 on time-out
  bool timed_out = false;
  bool interrupted = false;
};

// Runs argv in its own process group with stdout+stderr to `log` (appended), `env` added to the
// environment; kills the group on time-out or when the drill is interrupted.
RunResult Run(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& log,
              uint64_t timeout_s) {
  RunResult r;
  pid_t pid = fork();
  if (pid < 0) return r.exit = 127, r;
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    if (null >= 0) dup2(null, STDIN_FILENO);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  uint64_t deadline = MonotonicNs() + timeout_s * 1'000'000'000ull;
  int status = 0;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) return r.exit = 127, r;
    bool late = MonotonicNs() > deadline;
    if (late || g_signal.load() != 0) {
      r.timed_out = late;
      r.interrupted = !late;
      kill(-pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      r.exit = late ? 124 : -SIGKILL;
      return r;
    }
    usleep(20'000);
  }
  r.exit = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return r;
}

// Attaches `image` to a free loop device (read-write, detached when cleared).
Result<std::string> AttachLoop(const std::string& image, UniqueFd* loop_fd) {
  UniqueFd backing(open(image.c_str(), O_RDWR | O_CLOEXEC));
  if (!backing.valid()) return ErrnoStatus("open " + image, errno);
  UniqueFd ctl(open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!ctl.valid()) return ErrnoStatus("open /dev/loop-control (loop module loaded? root?)", errno);
  for (int attempt = 0; attempt < 16; ++attempt) {
    int n = ioctl(ctl.get(), LOOP_CTL_GET_FREE);
    if (n < 0) return ErrnoStatus("LOOP_CTL_GET_FREE", errno);
    std::string dev = "/dev/loop" + std::to_string(n);
    UniqueFd fd(open(dev.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus("open " + dev, errno);
    loop_config cfg{};
    cfg.fd = static_cast<uint32_t>(backing.get());
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    std::snprintf(reinterpret_cast<char*>(cfg.info.lo_file_name), LO_NAME_SIZE, "%s", image.c_str());
    if (ioctl(fd.get(), LOOP_CONFIGURE, &cfg) == 0) {
      *loop_fd = std::move(fd);
      return dev;
    }
    if (errno != EBUSY) return ErrnoStatus("LOOP_CONFIGURE " + dev, errno);
    // Another process took it between GET_FREE and CONFIGURE: take the next one.
  }
  return Unavailable("no free loop device after 16 attempts");
}

// The filesystem type on `dev`, "unknown" when none is recognised; an error when the device
// could not be read (a damaged point gives EIO here already).
Result<std::string> DetectFs(const std::string& dev) {
  blkid_probe pr = blkid_new_probe_from_filename(dev.c_str());
  if (pr == nullptr) return ErrnoStatus("libblkid cannot open " + dev, errno);
  blkid_probe_enable_superblocks(pr, 1);
  blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE);
  std::string type = "unknown";
  const char* value = nullptr;
  int rc = blkid_do_safeprobe(pr);
  if (rc == 0 && blkid_probe_lookup_value(pr, "TYPE", &value, nullptr) == 0 && value) type = value;
  blkid_free_probe(pr);
  if (rc < 0) return IoError("libblkid could not read " + dev + " to find its filesystem (damaged point? see the mount log)");
  return type;
}

bool IsExt(const std::string& fs) { return fs == "ext2" || fs == "ext3" || fs == "ext4"; }

// Everything the drill set up, torn down in reverse order.
class Scratch {
 public:
  ~Scratch() { Cleanup(); }
  std::string dir;
  bool keep = false;
  pid_t mount_child = -1;
  std::string fuse_dir;
  std::vector<std::string> mounts;
  std::vector<UniqueFd> loops;

  void Cleanup() {
    if (keep) return;
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) Unmount(*it);
    mounts.clear();
    for (auto& fd : loops)
      if (fd.valid() && ioctl(fd.get(), LOOP_CLR_FD) != 0 && errno != ENXIO)
        Log(kProg, "detaching a loop device failed: " + std::string(std::strerror(errno)));
    loops.clear();
    if (mount_child > 0) {
      kill(mount_child, SIGTERM);
      int status = 0;
      uint64_t deadline = MonotonicNs() + 10'000'000'000ull;
      while (waitpid(mount_child, &status, WNOHANG) == 0) {
        if (MonotonicNs() > deadline) {
          Log(kProg, "the mount process did not stop in 10 s; killing it and detaching " + fuse_dir);
          kill(mount_child, SIGKILL);
          waitpid(mount_child, &status, 0);
          break;
        }
        usleep(20'000);
      }
      mount_child = -1;
      // A killed FUSE server leaves its mount behind ("transport endpoint is not connected").
      if (umount2(fuse_dir.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
        Log(kProg, "unmounting " + fuse_dir + " failed: " + std::strerror(errno));
    }
    if (!dir.empty()) {
      nftw(dir.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return remove(p); }, 16,
           FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
      dir.clear();
    }
  }

  static void Unmount(const std::string& path) {
    for (int i = 0; i < 50; ++i) {
      if (umount2(path.c_str(), 0) == 0 || errno == EINVAL || errno == ENOENT) return;
      if (errno != EBUSY) break;
      usleep(100'000);
    }
    Log(kProg, "unmounting " + path + " failed (" + std::strerror(errno) + "); detaching it lazily");
    umount2(path.c_str(), MNT_DETACH);
  }
};

// Starts `blockrep-recover mount` for the point with an overlay; waits for its "mounted" line.
Status StartMountChild(const DrillRequest& req, uint64_t point_id, Scratch* s) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  std::string log = s->dir + "/mount.log";
  pid_t pid = fork();
  if (pid < 0) return ErrnoStatus("fork", errno);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // unmounts cleanly if the drill dies, even by SIGKILL
    dup2(pipefd[1], STDOUT_FILENO);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) dup2(fd, STDERR_FILENO);
    std::string point = std::to_string(point_id);
    std::string overlay = s->dir + "/overlay";
    std::vector<std::string> a = {req.self_exe, "mount", "--server-id", req.server_id, "--key", req.key_file,
                                  "--point", point, "--overlay", overlay};
    if (req.staging.empty()) {
      a.insert(a.end(), {"--store", req.store_dir});
      if (!req.s3.endpoint.empty()) a.insert(a.end(), {"--s3-endpoint", req.s3.endpoint, "--s3-region", req.s3.region});
      if (!req.s3.credentials_file.empty()) a.insert(a.end(), {"--s3-credentials", req.s3.credentials_file});
      if (!req.s3.ca_file.empty()) a.insert(a.end(), {"--s3-ca", req.s3.ca_file});
    } else {
      a.insert(a.end(), {"--staging", req.staging});
      if (!req.tls.cert.empty()) a.insert(a.end(), {"--tls-cert", req.tls.cert});
      if (!req.tls.key.empty()) a.insert(a.end(), {"--tls-key", req.tls.key});
      if (!req.tls.ca.empty()) a.insert(a.end(), {"--tls-ca", req.tls.ca});
    }
    a.push_back(s->fuse_dir);
    std::vector<char*> args;
    for (auto& x : a) args.push_back(x.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(pipefd[1]);
  UniqueFd out(pipefd[0]);
  s->mount_child = pid;
  std::string got;
  uint64_t deadline = MonotonicNs() + kMountReadyTimeoutS * 1'000'000'000ull;
  while (got.find('\n') == std::string::npos) {
    if (g_signal.load() != 0) return Unavailable("interrupted");
    if (MonotonicNs() > deadline)
      return Unavailable("the point was not mounted within " + std::to_string(kMountReadyTimeoutS) + " s");
    pollfd p{out.get(), POLLIN, 0};
    int n = poll(&p, 1, 100);
    if (n <= 0) continue;
    char buf[512];
    ssize_t r = read(out.get(), buf, sizeof(buf));
    if (r <= 0) {
      std::string tail = FileTail(log);
      return Unavailable("the mount process exited before mounting: " + (tail.empty() ? "no output" : tail));
    }
    got.append(buf, static_cast<size_t>(r));
  }
  return Status::Ok();
}

// Replays the journal on the overlay, checks the filesystem, mounts it for the hook.
void CheckVolume(DrillVolume* v, const std::string& dev, const std::string& mnt, Scratch* s, DrillReport* rep) {
  auto fs = DetectFs(dev);
  if (!fs.ok()) {
    v->fs = "unknown";
    v->check = "failed";
    v->detail = fs.status().message();
    rep->problems.push_back("volume " + std::to_string(v->index) + ": " + v->detail);
    return;
  }
  v->fs = *fs;
  bool ext = IsExt(v->fs), xfs = v->fs == "xfs";
  if (!ext && !xfs) {
    v->check = "unchecked";
    v->detail = v->fs == "unknown" ? "no filesystem recognised" : "no checker for " + v->fs;
    return;
  }
  std::string where = "volume " + std::to_string(v->index) + " (" + v->fs + ")";
  const char* data = xfs ? "nouuid" : "";
  const char* type = xfs ? "xfs" : "ext4";  // the ext4 driver mounts ext2 and ext3 too
  if (!MakeDirs(mnt, 0711).ok() || chmod((s->dir + "/mnt").c_str(), 0711) != 0) {
    v->check = "failed";
    v->detail = "cannot create " + mnt;
    rep->problems.push_back(where + ": " + v->detail);
    return;
  }
  // 1. Replay the journal / log into the overlay: a mount does it (an xfs point taken under
  //    FIFREEZE carries a covered log that xfs_repair -n would refuse to look past).
  if (mount(dev.c_str(), mnt.c_str(), type, 0, data) != 0) {
    v->check = "failed";
    v->detail = "mounting it to replay its journal failed: " + std::string(std::strerror(errno));
    rep->problems.push_back(where + ": " + v->detail);
    return;
  }
  Scratch::Unmount(mnt);
  // 2. Check, read-only.
  std::string log = s->dir + "/check-" + std::to_string(v->index) + ".log";
  RunResult r = ext ? Run({"e2fsck", "-fn", dev}, {}, log, kCheckTimeoutS) : Run({"xfs_repair", "-n", dev}, {}, log, kCheckTimeoutS);
  if (r.exit != 0) {
    v->check = r.interrupted ? "failed" : "errors";
    v->detail = (r.interrupted ? "interrupted" : r.timed_out ? "timed out" : "exit " + std::to_string(r.exit)) +
                ": " + FileTail(log);
    rep->problems.push_back(where + ": " + (ext ? "e2fsck -fn" : "xfs_repair -n") + " found errors (exit " +
                            std::to_string(r.exit) + ")");
    return;
  }
  v->check = "clean";
  // 3. Mount for the hook (read-write: writes land in the overlay).
  if (mount(dev.c_str(), mnt.c_str(), type, 0, data) != 0) {
    v->check = "failed";
    v->detail = "mounting it failed: " + std::string(std::strerror(errno));
    rep->problems.push_back(where + ": " + v->detail);
    return;
  }
  s->mounts.push_back(mnt);
  v->mount_path = mnt;
}

}  // namespace

std::string DrillReport::ToJson() const {
  std::string j = "{\"server\": " + JsonString(server_id) + ", \"point\": {\"id\": " + std::to_string(point_id) +
                  ", \"time\": " + JsonString(point_time) + ", \"consistent\": " + (consistent ? "true" : "false") +
                  "}, \"started\": " + JsonString(started) + ", \"mode\": " + JsonString(mode) +
                  ", \"rpo_seconds\": " + Fixed(rpo_seconds) + ", \"rto_seconds\": " + Fixed(rto_seconds) +
                  ", \"mount_seconds\": " + Fixed(mount_seconds) + ", \"volumes\": [";
  for (size_t i = 0; i < volumes.size(); ++i) {
    const DrillVolume& v = volumes[i];
    j += std::string(i ? ", " : "") + "{\"index\": " + std::to_string(v.index) + ", \"fs\": " + JsonString(v.fs) +
         ", \"check\": " + JsonString(v.check) + ", \"seconds\": " + Fixed(v.seconds) +
         ", \"mounted\": " + (v.mount_path.empty() ? "false" : "true");
    if (!v.detail.empty()) j += ", \"detail\": " + JsonString(v.detail);
    j += "}";
  }
  j += "], \"hook\": ";
  if (hook_run)
    j += "{\"exit\": " + std::to_string(hook_exit) + ", \"seconds\": " + Fixed(hook_seconds) +
         ", \"output_tail\": " + JsonString(hook_output_tail) + "}";
  else
    j += "null";
  j += ", \"problems\": [";
  for (size_t i = 0; i < problems.size(); ++i) j += std::string(i ? ", " : "") + JsonString(problems[i]);
  j += "], \"result\": " + JsonString(pass() ? "pass" : "fail") + "}";
  return j;
}

Result<DrillReport> Drill(const DrillRequest& req) {
  uint64_t start_ns = MonotonicNs();
  uint64_t start_utc = NowUtcNs();
  BR_ASSIGN_OR_RETURN(std::vector<DataKey> keys, LoadDataKeys(req.key_file));
  SourceSpec spec{req.store_dir, req.staging, req.tls, req.server_id, req.key_file, req.s3};
  if (!spec.staging.empty()) FillTlsDefaults(&spec);
  BR_ASSIGN_OR_RETURN(auto source, OpenSource(spec, keys));
  BR_ASSIGN_OR_RETURN(store::Manifest manifest, source->LoadManifest());
  BR_ASSIGN_OR_RETURN(store::PointInfo point, ResolvePoint(manifest, req.point_spec));
  if (!req.hook.empty() && access(req.hook.c_str(), X_OK) != 0)
    return InvalidArgument("--hook " + req.hook + " is not an executable file");
  if (geteuid() != 0) return PermissionDenied("drill attaches loop devices and mounts filesystems: run it as root");

  DrillReport rep;
  rep.server_id = req.server_id;
  rep.point_id = point.id;
  rep.point_time = FormatUtc(point.time_ns);
  rep.consistent = point.consistent();
  rep.started = FormatUtc(start_utc);
  rep.rpo_seconds = static_cast<double>(static_cast<int64_t>(start_utc - point.time_ns)) / 1e9;
  rep.mode = req.copy ? "copy" : "overlay";

  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  Scratch s;
  s.keep = req.keep;
  std::string tmpl = req.scratch_parent + "/blockrep-drill-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return ErrnoStatus("create a scratch directory in " + req.scratch_parent, errno);
  s.dir = tmpl;
  rep.scratch = s.dir;
  // Traversable (not readable) by others: a hook may start a service as its own user (PostgreSQL
  // as postgres) from a mounted volume, whose own permissions then apply.
  if (chmod(s.dir.c_str(), 0711) != 0) return ErrnoStatus("chmod " + s.dir, errno);
  s.fuse_dir = s.dir + "/point";

  auto fail = [&](const std::string& why) { rep.problems.push_back(why); };
  std::string images;
  if (req.copy) {
    RestoreRequest rr;
    rr.store_dir = req.store_dir;
    rr.staging = req.staging;
    rr.tls = req.tls;
    rr.server_id = req.server_id;
    rr.key_file = req.key_file;
    rr.s3 = req.s3;
    rr.point_spec = std::to_string(point.id);
    rr.output_dir = s.dir + "/images";
    auto sum = Restore(rr);
    if (!sum.ok()) fail("restoring the point failed: " + sum.status().message());
    images = rr.output_dir;
  } else {
    Status made = MakeDirs(s.fuse_dir, 0700);
    Status started = made.ok() ? StartMountChild(req, point.id, &s) : made;
    if (!started.ok()) fail("mounting the point failed: " + started.message());
    images = s.fuse_dir + "/" + std::to_string(point.id);
  }
  rep.mount_seconds = SecondsSince(start_ns);

  for (uint32_t i = 0; rep.problems.empty() && i < point.volume_count; ++i) {
    uint64_t vol_start = MonotonicNs();
    DrillVolume v;
    v.index = static_cast<uint16_t>(i);
    std::string image = images + "/vol-" + std::to_string(i) + ".img";
    UniqueFd loop;
    auto dev = AttachLoop(image, &loop);
    if (!dev.ok()) {
      v.check = "failed";
      v.detail = dev.status().message();
      fail("volume " + std::to_string(i) + ": " + v.detail);
    } else {
      s.loops.push_back(std::move(loop));
      CheckVolume(&v, *dev, s.dir + "/mnt/vol-" + std::to_string(i), &s, &rep);
    }
    v.seconds = SecondsSince(vol_start);
    rep.volumes.push_back(v);
    if (g_signal.load() != 0) fail("interrupted by signal " + std::to_string(g_signal.load()));
  }
  rep.rto_seconds = SecondsSince(start_ns);

  if (!req.hook.empty() && rep.problems.empty()) {
    std::vector<std::string> env = {"BLOCKREP_DRILL_ROOT=" + s.dir, "BLOCKREP_POINT_ID=" + std::to_string(point.id),
                                    "BLOCKREP_SERVER_ID=" + req.server_id,
                                    "BLOCKREP_VOLUMES=" + std::to_string(point.volume_count)};
    for (const auto& v : rep.volumes)
      if (!v.mount_path.empty()) env.push_back("BLOCKREP_VOLUME_" + std::to_string(v.index) + "=" + v.mount_path);
    std::string log = s.dir + "/hook.log";
    uint64_t hook_start = MonotonicNs();
    RunResult r = Run({req.hook}, env, log, req.hook_timeout_s);
    rep.hook_run = true;
    rep.hook_exit = r.exit;
    rep.hook_seconds = SecondsSince(hook_start);
    rep.hook_output_tail = FileTail(log);
    if (r.timed_out) fail("the hook ran past its " + std::to_string(req.hook_timeout_s) + " s limit and was killed");
    else if (r.interrupted) fail("interrupted by signal " + std::to_string(g_signal.load()));
    else if (r.exit != 0) fail("the hook exited " + std::to_string(r.exit));
  }
  // Damage met while serving the point (EIO) is logged by the mount process: any such line fails
  // the drill even if the checks happened not to notice.
  if (!req.copy) {
    std::string mount_log = FileTail(s.dir + "/mount.log");
    if (mount_log.find("server '" + req.server_id + "'") != std::string::npos)
      fail("reading the point met damage: " + mount_log);
  }
  if (g_signal.load() != 0 && rep.problems.empty()) fail("interrupted by signal " + std::to_string(g_signal.load()));
  s.Cleanup();
  if (req.keep) Log(kProg, "--keep: left mounted and in place under " + rep.scratch);

  // The audit history (a later point's metrics read it): in the store, or appended by the staging.
  // A failure to append is reported, not hidden, but does not change the drill's result.
  if (IsS3Url(req.store_dir)) {
    Log(kProg, "the report is not appended to drills.jsonl: recovery never writes to a bucket (" + source->Describe() + ")");
  } else if (Status appended = source->AppendDrillReport(rep.ToJson()); !appended.ok()) {
    Log(kProg, "appending the report to drills.jsonl (" + source->Describe() + ") failed: " + appended.message());
  }
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  return rep;
}

}  // namespace blockrep::recovery
