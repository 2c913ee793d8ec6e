// The whole system in one process: the real agent (replicator/agent.h) and the real staging
// (staging/server.h), with their real TLS, records, seals, tracker ("scan") and store code,
// connected through Unix sockets that the world cuts and stalls. Both run on SimRings
// (sim_ring.h) in this one thread, the staging's store lives on a FaultEnv that loses power at a
// random I/O (the staging is then destroyed and started again on what survived), its store jobs
// run when the scheduler says, and time is the world's clock: it moves only while the agent
// waits. Between runs of `blockrep-agent --once` (each a new Agent, some killed halfway) a
// workload writes the volume.
//
// The oracle: every point the agent reported acknowledged is listed after a last power cut
// (unless retention's keep-last let it go), every listed point restores, authenticated, to
// exactly the volume as it was during the run that ended it, and the agent never raised a
// rollback alarm, since no acknowledged point was ever lost.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "agent.h"
#include "blockrep/base/cli.h"
#include "blockrep/base/clock.h"
#include "blockrep/crypto/keyfile.h"
#include "blockrep/store/store.h"
#include "fault_env.h"
#include "oracle.h"
#include "scenarios.h"
#include "server.h"
#include "sim_ring.h"

namespace blockrep::sim {
namespace {

constexpr const char* kRoot = "/store";
constexpr const char* kServer = "sim";
constexpr uint64_t kRunStepsMax = 20000;  // a run still going after this many world steps is killed

// The PKI and data key, made once per process by blockrep-keygen.
struct Pki {
  std::string dir;
  DataKey key;
};

const Pki& SharedPki() {
  static Pki* pki = [] {
    auto* p = new Pki();
    char tmpl[] = "/tmp/blockrep-sim-pki.XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      std::perror("mkdtemp");
      std::exit(2);
    }
    p->dir = tmpl;
    std::string cmd = std::string(BLOCKREP_BIN_DIR) + "/blockrep-keygen --out " + p->dir + " --server-id " + kServer +
                      " > /dev/null";
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "blockrep_simulation: %s failed\n", cmd.c_str());
      std::exit(2);
    }
    auto keys = LoadDataKeys(p->dir + "/data-" + kServer + ".key");
    if (!keys.ok()) {
      std::fprintf(stderr, "blockrep_simulation: %s\n", keys.status().ToString().c_str());
      std::exit(2);
    }
    p->key = keys->back();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(SharedPki().dir, ec);
    });
    return p;
  }();
  return *pki;
}

// Log lines of the scenario running: on stderr with --verbose, else dropped; the agent's line
// that it begins or resumes a point is noted (g_point_starts).
bool g_verbose = false;
uint64_t g_seed = 0;
struct PointStart {
  uint64_t id = 0;
  bool from_checkpoint = false;  // resumed a full point or rescan from the agent's checkpoint
};
std::vector<PointStart>* g_point_starts = nullptr;
void SimLog(const std::string& line) {
  if (g_verbose) std::fprintf(stderr, "seed %llu: %s\n", static_cast<unsigned long long>(g_seed), line.c_str());
  if (g_point_starts == nullptr) return;
  for (const auto& [what, checkpoint] : {std::pair<const char*, bool>{": sending point ", false},
                                         {": resuming point ", false}, {": resuming rescan ", true},
                                         {": resuming full point ", true}}) {
    size_t at = line.find(std::string("blockrep-agent: server '") + "sim'" + what);
    if (at == std::string::npos) continue;
    at = line.find(what, at) + std::strlen(what);
    g_point_starts->push_back({std::strtoull(line.c_str() + at, nullptr, 10), checkpoint});
    return;
  }
}

struct AgentKilled {};

unsigned g_listeners = 0;  // listening sockets made by this process: each gets a name of its own

class SystemSim final : public SimWorld, public Clock {
 public:
  SystemSim(uint64_t seed, bool verbose)
      : seed_(seed), verbose_(verbose), rng_(seed), env_(seed ^ 0x5157e11u), pki_(SharedPki()) {}

  SimOutcome Run() {
    SimOutcome out;
    // The volume and the agent's state: in memory where /dev/shm is, else in /tmp.
    char shm[] = "/dev/shm/blockrep-sim.XXXXXX", tmp[] = "/tmp/blockrep-sim.XXXXXX";
    const char* made = mkdtemp(shm);
    if (made == nullptr) made = mkdtemp(tmp);
    if (made == nullptr) return {false, std::string("mkdtemp: ") + std::strerror(errno), 0};
    dir_ = made;
    SetProcessClock(this);
    SetLogSink(SimLog);
    g_verbose = verbose_;
    g_seed = seed_;
    out.why = Scenario();
    out.ops = env_.ops();
    out.ok = out.why.empty();
    if (server_ring_ != nullptr) server_ring_->Kill();
    server_.reset();
    SetLogSink(nullptr);
    SetProcessClock(nullptr);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    return out;
  }

  // --- Clock -----------------------------------------------------------------------------------
  uint64_t NowUtcNs() override { return 1790000000ull * 1000000000ull + mono_ns_; }
  uint64_t MonotonicNs() override { return mono_ns_; }
  void SleepNs(uint64_t ns) override {
    uint64_t until = mono_ns_ + ns;
    while (Wait(until)) {
    }
  }

  // --- SimWorld --------------------------------------------------------------------------------
  bool Wait(uint64_t deadline_ns) override {
    Step(true);
    if (mono_ns_ >= deadline_ns) return false;
    mono_ns_ += std::min<uint64_t>(deadline_ns - mono_ns_, (1 + rng_() % 20) * 1000000ull);
    return mono_ns_ < deadline_ns;
  }
  bool Stalled(int fd) override { return fd == agent_fd_ && mono_ns_ < stall_until_ns_; }
  std::mt19937_64& rng() override { return rng_; }

 private:
  void Log(const std::string& line) { Trace(verbose_, seed_, "sim: " + line); }

  std::string Scenario() {
    // The world's character, drawn once.
    static constexpr uint64_t kCutRates[] = {0, 3, 15}, kStallRates[] = {0, 0, 2};
    cut_per_mille_ = kCutRates[rng_() % 3];
    stall_per_mille_ = kStallRates[rng_() % 3];
    keep_last_ = 2 + rng_() % 3;
    if (rng_() % 2) env_.PowerLossAtOp(1 + rng_() % 150);
    env_.set_tear(rng_() % 4 != 0);
    full_per_mille_ = rng_() % 4 == 0 ? 3 : 0;
    volume_bytes_ = (32 + rng_() % 97) * kBlockBytes;
    // The staging keeps an open point live (its PENDING file grows with each commit) from its
    // first record, from 64 KiB, or never, so that a crash inside a point leaves it to resume or not.
    static constexpr uint64_t kKeepLiveAfter[] = {0, 64u << 10, UINT64_MAX};
    keep_live_after_bytes_ = kKeepLiveAfter[rng_() % 3];
    Log("cuts " + std::to_string(cut_per_mille_) + "/1000 steps, stalls " + std::to_string(stall_per_mille_) +
        "/1000, keep-last " + std::to_string(keep_last_) + ", volume " + std::to_string(volume_bytes_ / kBlockBytes) +
        " blocks, points kept live " +
        (keep_live_after_bytes_ == UINT64_MAX ? std::string("never") : "from " + std::to_string(keep_live_after_bytes_) + " bytes"));

    volume_path_ = dir_ + "/vol0.img";
    Bytes volume(volume_bytes_, 0);
    if (std::string why = StartStaging(); !why.empty()) return why;

    std::set<uint64_t> acked;
    std::map<uint64_t, Bytes> expected;  // listed point -> the volume during the run that ended it
    std::set<uint64_t> seen;
    // A point whose last try resumed from the agent's checkpoint holds blocks read in any run since
    // the try that began it (a scanning agent does not see writes between its runs).
    std::vector<Bytes> by_run;
    std::vector<PointStart> starts;
    std::map<uint64_t, size_t> begun_in;  // point -> the run that last began it afresh
    std::set<uint64_t> resumed;           // points whose last try resumed from the checkpoint
    std::map<uint64_t, std::vector<Bytes>> fuzzy;
    const int runs = 3 + static_cast<int>(rng_() % 5);
    for (int run = 0; run < runs; ++run) {
      Workload(&volume, run == 0);
      if (std::string why = WriteVolume(volume); !why.empty()) return why;
      by_run.push_back(volume);
      starts.clear();
      g_point_starts = &starts;
      std::string why = AgentRun(run, &acked);
      g_point_starts = nullptr;
      if (!why.empty()) return why;
      for (const PointStart& s : starts) {
        if (s.from_checkpoint) {
          resumed.insert(s.id);
        } else {
          resumed.erase(s.id);
          begun_in[s.id] = by_run.size() - 1;
        }
      }
      // The staging finishes what it was handed (commits, retention) before the volume changes.
      for (int i = 0; i < 400; ++i) Step(false);
      for (uint64_t id : Listed()) {
        if (!seen.insert(id).second) continue;
        expected[id] = volume;
        if (resumed.count(id) != 0 && begun_in.count(id) != 0)
          fuzzy[id].assign(by_run.begin() + static_cast<ptrdiff_t>(begun_in[id]), by_run.end());
      }
    }
    if (!start_failure_.empty()) return start_failure_;
    // The last power cut, then the oracle on what survived.
    env_.LosePower();
    CrashStaging(false);
    env_.Reboot();
    std::set<uint64_t> listed = Listed();
    std::set<uint64_t> must;
    for (uint64_t a : acked) {
      uint64_t newer = 0;
      for (uint64_t id : listed) newer += id > a;
      if (newer < keep_last_) must.insert(a);  // retention (keep-last) may have let it go otherwise
    }
    if (!alarm_.empty()) return "the agent raised a rollback alarm though no acknowledged point was lost: " + alarm_;
    return CheckStore(&env_, kRoot, kServer, pki_.key, volume_bytes_, expected, must, fuzzy);
  }

  // Changes some blocks of the volume: new random bytes, zeros, or a copy of another block.
  void Workload(Bytes* volume, bool first) {
    uint64_t blocks = volume_bytes_ / kBlockBytes;
    uint64_t changes = first ? blocks / 2 : rng_() % 12;
    for (uint64_t i = 0; i < changes; ++i) {
      uint64_t b = rng_() % blocks;
      uint8_t* at = volume->data() + b * kBlockBytes;
      switch (rng_() % 4) {
        case 0: std::memset(at, 0, kBlockBytes); break;
        case 1: std::memcpy(at, volume->data() + (rng_() % blocks) * kBlockBytes, kBlockBytes); break;
        default:
          for (uint64_t j = 0; j < kBlockBytes; j += 8) {
            uint64_t v = rng_();
            std::memcpy(at + j, &v, 8);
          }
      }
    }
    Log("workload: " + std::to_string(changes) + " block(s) written");
  }

  std::string WriteVolume(const Bytes& volume) {
    int fd = open(volume_path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return "open " + volume_path_ + ": " + std::strerror(errno);
    ssize_t n = pwrite(fd, volume.data(), volume.size(), 0);
    close(fd);
    if (n != static_cast<ssize_t>(volume.size())) return "write " + volume_path_ + " failed";
    return "";
  }

  // One `blockrep-agent --once`, perhaps killed halfway.
  std::string AgentRun(int run, std::set<uint64_t>* acked) {
    agent::Options o;
    auto hp = ParseHostPort("127.0.0.1:1", "--staging");
    if (!hp.ok()) return hp.status().ToString();
    o.staging = *hp;
    o.server_id = kServer;
    o.volumes = {volume_path_};
    o.key_file = pki_.dir + "/data-" + kServer + ".key";
    o.tls = TlsFiles{pki_.dir + "/agent-" + kServer + ".crt", pki_.dir + "/agent-" + kServer + ".key",
                     pki_.dir + "/ca.crt", ""};
    o.state_dir = dir_ + "/state";
    o.tracker = "scan";
    // Volumes of KiBs: a lease of 4 blocks and a save every 2, so that a killed full point or
    // rescan resumes from the middle of the volume (agent.h, Options).
    o.checkpoint_lease_bytes = 16u << 10;
    o.checkpoint_every_bytes = 8u << 10;
    o.once = true;
    o.make_ring = [this](unsigned n) -> Result<std::unique_ptr<Ring>> {
      auto r = std::make_unique<SimRing>(this, nullptr, n, true);
      agent_ring_ = r.get();
      return std::unique_ptr<Ring>(std::move(r));
    };
    o.connect = [this]() -> Result<UniqueFd> { return Connect(); };
    kill_at_step_ = rng_() % 3 == 0 ? steps_ + 1 + rng_() % 120 : 0;
    run_start_step_ = steps_;
    Log("run " + std::to_string(run) + (kill_at_step_ ? ": the agent dies at step " + std::to_string(kill_at_step_) : ""));
    volatile std::sig_atomic_t term = 0, point_now = 0, reload = 0;
    agent::Signals sig{&term, &point_now, &reload};
    auto a = std::make_unique<agent::Agent>(o);
    if (Status st = a->Prepare(); !st.ok()) return "the agent does not start: " + st.ToString();
    agent_live_ = true;
    try {
      auto r = a->SyncOnce(sig);
      agent_live_ = false;
      if (r.ok()) {
        Log("run " + std::to_string(run) + ": point " + std::to_string(r->point_id) + " acknowledged");
        acked->insert(r->point_id);
        if (!r->alarm.empty()) alarm_ = r->alarm;
      } else {
        Log("run " + std::to_string(run) + " failed: " + r.status().ToString());
      }
    } catch (const AgentKilled&) {
      agent_live_ = false;
      agent_ring_->Kill();
      Log("run " + std::to_string(run) + ": the agent was killed");
    }
    a.reset();
    agent_ring_ = nullptr;
    agent_fd_ = -1;
    return "";
  }

  Result<UniqueFd> Connect() {
    if (!server_) return Unavailable("connection refused (the staging is down)");
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ErrnoStatus("socket", errno);
    UniqueFd owned(fd);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr_), addr_len_) != 0) return ErrnoStatus("connect", errno);
    agent_fd_ = fd;
    return owned;
  }

  // One step of everything but the agent: faults, a turn of the staging, perhaps a store job.
  void Step(bool from_agent) {
    ++steps_;
    if (from_agent && agent_live_) {
      if (kill_at_step_ != 0 && steps_ >= kill_at_step_) {
        kill_at_step_ = 0;
        throw AgentKilled{};
      }
      if (steps_ - run_start_step_ > kRunStepsMax) {
        Log("the run goes on past " + std::to_string(kRunStepsMax) + " steps: the agent is killed");
        throw AgentKilled{};
      }
    }
    if (agent_fd_ >= 0 && rng_() % 1000 < cut_per_mille_) {
      Log("the connection is cut");
      shutdown(agent_fd_, SHUT_RDWR);
    }
    if (agent_fd_ >= 0 && rng_() % 1000 < stall_per_mille_) {
      uint64_t ns = (1 + rng_() % 40) * 1000000000ull;
      Log("the connection stalls for " + std::to_string(ns / 1000000000ull) + " s");
      stall_until_ns_ = mono_ns_ + ns;
    }
    if (full_until_step_ == 0 && agent_live_ && rng_() % 1000 < full_per_mille_) {
      full_until_step_ = steps_ + 20 + rng_() % 300;
      Log("the staging's disk is full until step " + std::to_string(full_until_step_));
      env_.SetCapacity(env_.used_bytes() + rng_() % 32768);
    }
    if (full_until_step_ != 0 && steps_ >= full_until_step_) {
      Log("the staging's disk has room again");
      full_until_step_ = 0;
      env_.SetCapacity(UINT64_MAX);
    }
    if (!server_) return;
    auto turn = server_->Turn(&stop_, false);
    if (!turn.ok()) Log("the staging's loop failed: " + turn.status().ToString());
    if (rng_() % 2 == 0) server_->store_worker()->RunQueuedJob();
    if (!env_.powered() || !turn.ok()) {
      CrashStaging(true);
    }
  }

  // The staging dies (its process: memory, sockets); with `restart`, power returns and it starts
  // again on what the store kept.
  void CrashStaging(bool restart) {
    Log("the staging crashes");
    if (server_ring_ != nullptr) server_ring_->Kill();
    server_.reset();
    server_ring_ = nullptr;
    if (!restart) return;
    if (!env_.powered()) env_.Reboot();
    if (rng_() % 3 == 0) env_.PowerLossAtOp(1 + rng_() % 150);
    start_failure_ = StartStaging();
  }

  std::string StartStaging() {
    for (int attempt = 0; attempt < 8; ++attempt) {
      int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0) return std::string("socket: ") + std::strerror(errno);
      std::memset(&addr_, 0, sizeof addr_);
      addr_.sun_family = AF_UNIX;
      // An abstract name (leading NUL): nothing on disk, gone with the socket.
      std::string name = "blockrep-sim-" + std::to_string(getpid()) + "-" + std::to_string(++g_listeners);
      std::memcpy(addr_.sun_path + 1, name.data(), name.size());
      addr_len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
      if (bind(fd, reinterpret_cast<const sockaddr*>(&addr_), addr_len_) != 0 || listen(fd, 16) != 0) {
        close(fd);
        return std::string("bind/listen: ") + std::strerror(errno);
      }
      staging::Options o;
      o.listen = *ParseHostPort("127.0.0.1:1", "--listen");
      o.store_dir = kRoot;
      o.tls = TlsFiles{pki_.dir + "/staging.crt", pki_.dir + "/staging.key", pki_.dir + "/ca.crt", ""};
      o.retention = *RetentionPolicy::Parse("none", static_cast<uint32_t>(keep_last_));
      o.keep_live_after_bytes = keep_live_after_bytes_;
      o.clock = this;
      o.store_threads = 0;
      o.env = &env_;
      o.listen_fd = fd;
      o.make_ring = [this](unsigned n) -> Result<std::unique_ptr<Ring>> {
        auto r = std::make_unique<SimRing>(this, &env_, n, false);
        server_ring_ = r.get();
        return std::unique_ptr<Ring>(std::move(r));
      };
      server_ = std::make_unique<staging::Server>(o);
      Status st = server_->Start();
      if (st.ok()) return "";
      server_.reset();
      server_ring_ = nullptr;
      if (env_.powered()) return "the staging does not start: " + st.ToString();
      Log("power was lost while the staging started");
      env_.Reboot();
    }
    return "the staging does not start after 8 power cuts in a row";
  }

  // The ids the store lists now (read without changing anything).
  std::set<uint64_t> Listed() {
    std::set<uint64_t> ids;
    auto opened = store::ServerStore::Open(kRoot, kServer, false, &env_);
    if (!opened.ok()) return ids;
    for (const store::PointInfo& p : (*opened)->manifest().points) ids.insert(p.id);
    return ids;
  }

  uint64_t seed_;
  bool verbose_;
  std::mt19937_64 rng_;
  FaultEnv env_;
  const Pki& pki_;
  std::string dir_, volume_path_;
  uint64_t volume_bytes_ = 0;
  uint64_t mono_ns_ = 1000ull * 1000000000ull;
  uint64_t steps_ = 0, run_start_step_ = 0, kill_at_step_ = 0;
  uint64_t cut_per_mille_ = 0, stall_per_mille_ = 0, keep_last_ = 2;
  uint64_t full_per_mille_ = 0, full_until_step_ = 0;
  uint64_t keep_live_after_bytes_ = UINT64_MAX;
  uint64_t stall_until_ns_ = 0;
  bool agent_live_ = false;
  int agent_fd_ = -1;
  SimRing* agent_ring_ = nullptr;
  SimRing* server_ring_ = nullptr;
  std::unique_ptr<staging::Server> server_;
  volatile std::sig_atomic_t stop_ = 0;
  sockaddr_un addr_{};
  socklen_t addr_len_ = 0;
  std::string alarm_, start_failure_;
};

}  // namespace

SimOutcome RunSystemScenario(uint64_t seed, bool verbose) { return SystemSim(seed, verbose).Run(); }

}  // namespace blockrep::sim
