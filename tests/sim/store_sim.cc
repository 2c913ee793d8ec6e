// A deterministic, seeded simulation of the staging's store under power loss, injected I/O
// failures and a full disk. Each scenario runs the real store code — PackAppender (group commit),
// ServerStore (index then manifest, expiry, compaction, orphan removal), the real record sealer —
// on a FaultEnv, with a random workload writing a small volume, points committed, expired and
// compacted, and the power cut (or an operation failed) at a random I/O. After the power returns,
// an oracle reopens the store and checks that
//   - every point whose commit returned OK (the staging acknowledges it then) and that was not
//     expired is listed, and
//   - every listed point restores — records read, checksums and AES-GCM tags checked — to
//     exactly the volume the workload had when the point was taken: nothing partial, nothing lost.
// tests/sim/simulation.cc runs scenarios by seed.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/checksum.h"
#include "blockrep/crypto/codec.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/store/pack_appender.h"
#include "blockrep/store/store.h"
#include "fault_env.h"
#include "oracle.h"
#include "scenarios.h"

namespace blockrep::sim {
namespace {

constexpr const char* kRoot = "/store";
constexpr const char* kServer = "sim";
constexpr uint64_t kVolumeBytes = 64 * kBlockBytes;  // small: many scenarios per second
constexpr int kPointsMax = 7;

DataKey SimKey() {
  DataKey k;
  for (size_t i = 0; i < k.bytes.size(); ++i) k.bytes[i] = static_cast<uint8_t>(i * 7 + 1);
  k.key_id = ComputeKeyId(k.bytes);
  return k;
}

class Scenario {
 public:
  Scenario(uint64_t seed, bool verbose) : seed_(seed), rng_(seed), env_(seed ^ 0x5eed), verbose_(verbose) {}

  SimOutcome Run() {
    // The fault: power lost at a random I/O, an operation failed, or a small disk; sometimes none.
    switch (rng_() % 8) {
      case 0: break;  // no fault until the end: the power is still lost then
      case 1: env_.FailOp(1 + rng_() % 150, rng_() % 2 ? Code::kIoError : Code::kNoSpace); break;
      case 2: env_.SetCapacity(16 * kBlockBytes + rng_() % (256 * kBlockBytes)); break;
      default: env_.PowerLossAtOp(1 + rng_() % 150); break;  // a workload runs about 80
    }
    env_.set_tear(rng_() % 4 != 0);
    Status st = Work();
    Log("workload stopped: " + (st.ok() ? std::string("finished") : st.ToString()) + " after " +
        std::to_string(env_.ops()) + " I/O operations");
    SimOutcome out;
    out.ops = env_.ops();
    env_.Reboot();  // power is lost at the end whatever happened: only the durable state counts
    out.why = Check();
    out.ok = out.why.empty();
    return out;
  }

 private:
  void Log(const std::string& line) { Trace(verbose_, seed_, line); }

  // The workload: points of random writes, committed one after another, with expiry and compaction.
  Status Work() {
    BR_RETURN_IF_ERROR(store::InitStoreRoot(kRoot, true, &env_));
    BR_ASSIGN_OR_RETURN(auto store, store::ServerStore::Open(kRoot, kServer, true, &env_));
    BR_ASSIGN_OR_RETURN(auto sealer, RecordSealer::Create(key_, kServer));
    BR_ASSIGN_OR_RETURN(BlockFingerprinter fingerprinter, BlockFingerprinter::Create(key_));
    store::PackAppender pack;
    BR_RETURN_IF_ERROR(pack.Open(*store));
    Bytes volume(kVolumeBytes, 0);
    uint64_t seq = 0;
    const int points = 1 + static_cast<int>(rng_() % kPointsMax);
    for (int p = 1; p <= points; ++p) {
      std::vector<store::NewExtent> extents;
      const int writes = p == 1 ? 8 : 1 + static_cast<int>(rng_() % 5);
      uint64_t bytes_added = 0;
      Bytes out;
      for (int w = 0; w < writes; ++w) {
        uint64_t blocks = 1 + rng_() % 8;
        uint64_t first = rng_() % (kVolumeBytes / kBlockBytes - blocks + 1);
        uint64_t off = first * kBlockBytes, len = blocks * kBlockBytes;
        // All zero, compressible, or random (one draw per 8 bytes): every codec path is taken.
        const uint64_t kind = rng_() % 5, salt = rng_();
        for (uint64_t i = 0; i < len; i += 8) {
          uint64_t word = kind == 0 ? 0 : kind < 3 ? salt + i / 512 : rng_();
          std::memcpy(volume.data() + off + i, &word, 8);
        }
        out.clear();
        ByteSpan plain(volume.data() + off, len);
        BR_ASSIGN_OR_RETURN(RecordHeader h, sealer->Seal(CodecChoice{}, 0, off, static_cast<uint64_t>(p), plain, &out));
        store::NewExtent x;
        x.zero = h.zero();
        x.entry = {0, static_cast<uint32_t>(len), off, pack.pack_id(), static_cast<uint32_t>(out.size()), 0, 0,
                   Checksum64(out)};
        Bytes fps;
        if (!x.zero) fingerprinter.Append(off, plain, &fps);
        x.entry.pack_offset = pack.Append(out, fps, ++seq);
        bytes_added += out.size() + fps.size();
        extents.push_back(x);
      }
      expected_[static_cast<uint64_t>(p)] = volume;
      // Every record of the point durable before its commit, as the staging waits for its ACK.
      store::PackAppender::Done d = pack.CommitBlocking();
      if (d == store::PackAppender::Done::kFailed)
        return IoError("pack commit failed: " + std::string(std::strerror(pack.error())));
      if (pack.durable_seq() != seq) return Internal("pack commit left records not durable");
      // The base as the store holds it now (compaction may have moved its records), as the
      // staging's commit job loads it.
      std::optional<store::PointIndex> base;
      if (!store->manifest().points.empty()) {
        BR_ASSIGN_OR_RETURN(store::PointIndex loaded, store->LoadIndex(store->manifest().points.back()));
        base = std::move(loaded);
      }
      store::PointIndex idx = store::BuildPointIndex(static_cast<uint64_t>(p), {kVolumeBytes},
                                                     base ? &*base : nullptr, extents);
      store::PointInfo info{static_cast<uint64_t>(p), 1000 + static_cast<uint64_t>(p), store::kPointConsistent, 1,
                            bytes_added, 0, ""};
      BR_RETURN_IF_ERROR(store->CommitPoint(info, idx, key_.key_id));
      acked_.insert(static_cast<uint64_t>(p));
      Log("point " + std::to_string(p) + " committed (" + std::to_string(writes) + " writes, pack " +
          std::to_string(pack.pack_id()) + ")");
      if (rng_() % 3 == 0) {  // a new pack, as a new session or a roll would start
        pack.Close();
        BR_RETURN_IF_ERROR(pack.Open(*store));
      }
      if (p >= 3 && rng_() % 2 == 0) {  // retention: drop an older point
        std::vector<uint64_t> live;
        for (const auto& pi : store->manifest().points)
          if (pi.id != store->manifest().last_point_id()) live.push_back(pi.id);
        if (!live.empty()) {
          uint64_t victim = live[rng_() % live.size()];
          maybe_gone_.insert(victim);  // from the moment the manifest commit may have happened
          BR_RETURN_IF_ERROR(store->ExpirePoints({victim}));
          Log("point " + std::to_string(victim) + " expired");
        }
      }
      if (rng_() % 3 == 0) {
        store::ServerStore::CompactionOptions opts;
        opts.garbage_share_min = 0.01 * static_cast<double>(rng_() % 50);
        opts.pinned_packs = {pack.pack_id()};
        opts.merge_small_packs = rng_() % 2 == 0;
        BR_ASSIGN_OR_RETURN(auto stats, store->Compact(opts));
        Log("compaction: " + std::to_string(stats.packs_rewritten) + " packs rewritten, " +
            std::to_string(stats.packs_deleted) + " deleted");
      }
    }
    return Status::Ok();
  }

  // The oracle, on the store as the power cut left it: acknowledged points not expired must be
  // listed.
  std::string Check() {
    std::set<uint64_t> must;
    for (uint64_t id : acked_)
      if (maybe_gone_.count(id) == 0) must.insert(id);
    return CheckStore(&env_, kRoot, kServer, key_, kVolumeBytes, expected_, must);
  }

  uint64_t seed_;
  std::mt19937_64 rng_;
  FaultEnv env_;
  bool verbose_;
  DataKey key_ = SimKey();
  std::map<uint64_t, Bytes> expected_;  // point id -> the volume when it was taken
  std::set<uint64_t> acked_;            // CommitPoint returned OK
  std::set<uint64_t> maybe_gone_;       // expired (or being expired when the fault came)
};

}  // namespace

SimOutcome RunStoreScenario(uint64_t seed, bool verbose) {
  return Scenario(seed, verbose).Run();
}

}  // namespace blockrep::sim
