// blockrep-agent: reads volumes with io_uring, seals 64 KiB extents into records and streams them
// to the staging over one TLS channel, with at most `window_bytes_max` unacknowledged.
#pragma once

#include <csignal>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "blockrep/channel.h"
#include "blockrep/cli.h"
#include "blockrep/codec.h"
#include "blockrep/fingerprint.h"
#include "blockrep/record.h"
#include "blockrep/tls.h"
#include "blockrep/tracker.h"
#include "blockrep/uring.h"
#include "blockrep/wire.h"
#include "ack_window.h"
#include "agent_status.h"
#include "base_inbox.h"
#include "chain_memory.h"
#include "point_freeze.h"
#include "parallel_sealer.h"
#include "point_seal.h"
#include "token_bucket.h"
#include "volume.h"

namespace blockrep::agent {

enum class AgentState { kInitialSync, kRescan, kContinuous, kBacklog, kDisconnected, kStalled };
const char* StateName(AgentState s);

// Signals the agent reacts to: SIGTERM/SIGINT (finish the point in flight, exit 0) and SIGUSR1
// (take a recovery point now).
struct Signals {
  const volatile std::sig_atomic_t* term = nullptr;
  volatile std::sig_atomic_t* point_now = nullptr;
  volatile std::sig_atomic_t* reload = nullptr;  // SIGHUP: re-read <state-dir>/bandwidth-limit
};

struct Options {
  HostPort staging;
  std::string server_id;
  std::vector<std::string> volumes;
  std::string key_file;
  TlsFiles tls;
  std::string state_dir;
  CodecChoice codec;
  std::string tracker = "auto";  // auto | ebpf | scan
  bool once = false;
  uint64_t point_interval_ns = 600ull * 1000000000ull;  // continuous mode: a point every 10 min
  uint64_t poll_interval_ns = 100ull * 1000000ull;      // continuous mode: bitmap polls
  uint64_t rpo_target_ns = 30ull * 1000000000ull;       // warn before lag would pass this
  uint64_t bandwidth_bps = 0;                           // 0: unlimited
  std::string pre_hook, post_hook;                      // run around each point's freeze
};

struct SyncSummary {
  uint64_t point_id = 0;
  uint64_t base_point = 0;        // 0: full point
  bool resumed = false;           // continued an interrupted point the staging kept
  std::string tracker;            // which tracker ran, and why a full read happened if one did
  std::string mode_reason;
  uint64_t bytes_read = 0;
  uint64_t bytes_reread_to_seal = 0;  // resumed by another process: kept records' blocks read, not sent
  uint64_t bytes_zero = 0;        // all-zero extents skipped
  uint64_t bytes_shipped_plain = 0;
  uint64_t bytes_stored = 0;      // sealed record bytes
  uint64_t bytes_wire = 0;        // frame bytes before TLS
  uint64_t records = 0;
  uint64_t records_raw = 0;       // incompressible, stored raw
  double seconds = 0;
  // The staging's chain was behind, or differed from, what this agent saw acknowledged: the point
  // was sent as a rescan under a new id, and --once exits non-zero with this line.
  std::string alarm;
};

class Agent {
 public:
  explicit Agent(Options opts);
  ~Agent();
  // Validates everything local (key, volumes, TLS files) before touching the network.
  Status Prepare();
  // One recovery point (full or incremental), waiting for its durable acknowledgement.
  Result<SyncSummary> SyncOnce(const Signals& sig);
  // Continuous replication until SIGTERM: reconnects with exponential backoff and jitter.
  Status RunContinuous(const Signals& sig);

 private:
  struct Read;
  Status OpenTracker();
  // Chooses full or incremental for the next point and fills `work_`.
  void PlanPoint(uint64_t last_point);
  // One connection: points until `once` is satisfied or SIGTERM. Ok means a clean finish.
  Status Session(const Signals& sig, bool once);
  Status StartPoint(uint64_t last_point);
  // True (and `work_` filled) when the staging's interrupted point can be continued.
  bool PlanResume(uint64_t last_point);
  // Replaces the work with newly dirty blocks; false when there were none. The final take of a
  // point also marks every pending write and reads whole volumes whose tracking had a gap.
  bool PollTracker(bool with_inflight, bool final_take);
  void ReloadSettings();
  void SetState(AgentState s, const std::string& reason);
  void WriteStatus(bool force);
  Status Connect();
  Status Handshake(const Signals& sig);
  Status Step(bool wait, int timeout_ms = 1000);
  Status HandleInbox();
  Status IssueReads();
  Status ProcessRead(Read& r);
  // A record of `data` (at `offset` of `volume`) for the read being processed; sealed with the
  // rest of the read's records by SealAndFrameQueued. `fps`: the fingerprints of its blocks.
  void QueueRecord(size_t volume, uint64_t offset, ByteSpan data, const uint64_t* fps);
  // Seals the queued records on two threads, then frames them in order into `frames_`.
  Status SealAndFrameQueued();
  // Asks the staging for its last point's fingerprints of every volume (a rescan).
  Status RequestFingerprints();
  // The point's seal needs the base's block fingerprints, which this process does not hold (it
  // did not send the base): fetch them and the base's seals from the staging; reads wait.
  Status StartBaseLoad();
  // Keeps the fingerprints of the point just acknowledged in the state directory for the next
  // process (fingerprint_cache.h); a failure is logged, and costs that process a fetch.
  void SaveFingerprints();
  // Everything asked for arrived: adopt the fingerprints if the seals vouch for them, otherwise
  // turn the point into a rescan.
  Status FinishBaseLoad();
  std::vector<uint64_t> VolumeSizes() const;
  Status SendFrame(wire::MsgType type, const Bytes& payload);
  void Teardown();
  // Shows STALLED (staging full) or DISCONNECTED with `why`, sleeps a jittered backoff (cut short
  // by SIGTERM) and doubles the next one, up to kBackoffMaxMs.
  void WaitBeforeReconnect(const Signals& sig, const Status& why, std::mt19937_64& rng, uint64_t* backoff_ms);
  static constexpr uint64_t kBackoffFirstMs = 500;
  static constexpr uint64_t kBackoffMaxMs = 30000;

  Options opts_;
  DataKey key_;
  std::vector<std::unique_ptr<Volume>> volumes_;
  std::unique_ptr<TlsContext> tls_;
  std::unique_ptr<Ring> ring_;
  std::unique_ptr<Channel> ch_;
  std::unique_ptr<ParallelSealer> sealer_;  // one per session: new session ids on reconnect
  std::unique_ptr<EbpfTracker> tracker_;
  std::string tracker_note_;
  PointFreeze freeze_;  // freezes and hooks around each point's last take

  // Protocol state.
  std::optional<wire::HelloOk> hello_ok_;
  uint64_t last_heard_ns_ = 0;  // last bytes from the staging (liveness, wire::kPeerSilentNs)
  bool ping_outstanding_ = false;
  std::optional<Status> peer_error_;
  uint64_t point_id_ = 0;
  uint64_t point_time_ns_ = 0;
  uint64_t point_acked_ = 0;
  AckWindow window_;  // RECORDs not yet acknowledged durable
  uint64_t wire_bytes_total_ = 0;  // frame bytes of sessions before the current one

  AgentStatus status_;  // lag, rates and the RPO forecast, freeze times; status.json
  AgentState state_ = AgentState::kDisconnected;
  std::string state_reason_;
  uint64_t last_acked_point_ = 0;
  ChainMemory chain_;  // the newest point acknowledged to this agent: rollback alarms, ids, seal links
  // What the point being sent follows (its seals' `prev`): the newest point this agent saw
  // acknowledged, or the chain's head when that is newer; with its seal MAC when known.
  SealLink chain_link_;
  std::array<uint8_t, kSealMacBytes> sent_seal_mac_{};  // volume 0's seal of the point being sent
  std::vector<uint64_t> retired_key_ids_;  // older keys of the key file (HELLO: the chain may be under one)
  // The chain's last point is sealed under a retired key: this point is a full one under key_.
  bool KeyRotated() const { return hello_ok_ && hello_ok_->chain_key_id != 0 && hello_ok_->chain_key_id != key_.key_id; }
  // This session was refused in a way that heals by itself (at capacity, handshake evicted).
  bool refused_retryable_ = false;
  static constexpr int kOnceRefusalsMax = 8;
  TokenBucket bucket_;  // --bandwidth-limit

  // Read pipeline: per volume, the extents this point ships, walked in order.
  bool full_point_ = true;
  bool sweeping_ = true;  // the first pass of a full point: all-zero extents need not be sent
  // Rescan: every block is read and shipped only if its fingerprint differs from the staging's.
  bool rescan_ = false;
  std::optional<BlockFingerprinter> fingerprinter_;
  Bytes fingerprints_;
  std::vector<uint64_t> read_fps_;  // per 4 KiB block of the read being processed
  // Seals (blockrep/seal.h): what the point being sent holds, block by block.
  std::unique_ptr<SealKeys> seal_keys_;
  std::unique_ptr<PointSeal> point_seal_;
  bool loading_base_ = false;
  bool base_from_cache_ = false;
  BaseInbox base_;  // the staging's fingerprints and seals of the base, as they arrive  // the base's fingerprints came from <state-dir>/fingerprints
  // Resuming a kept point in a process that did not read its records: first every block taken
  // since the base is read again (nothing sent) so the seal knows what the kept records hold —
  // a block not written since its take reads as it was sent; one written since is dirty and is
  // sent — then `send_work_`, the point's own work.
  bool resealing_ = false;
  std::vector<std::vector<Extent>> send_work_;
  std::vector<std::vector<Extent>> work_;
  std::vector<std::unique_ptr<Read>> reads_;
  size_t cur_volume_ = 0;
  size_t cur_run_ = 0;
  uint64_t cur_offset_ = 0;  // within the current run
  uint64_t work_bytes_left_ = 0;
  std::vector<uint64_t> shipped_by_volume_;
  unsigned reads_inflight_ = 0;
  std::vector<SealJob> seal_jobs_;  // the read's records; [0, seal_jobs_queued_) in use
  std::vector<const uint64_t*> seal_job_fps_;
  size_t seal_jobs_queued_ = 0;
  Bytes frames_;
  SyncSummary summary_;
};

}  // namespace blockrep::agent
