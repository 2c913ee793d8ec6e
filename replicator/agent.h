// blockrep-agent: reads volumes with io_uring, seals 64 KiB extents into records and streams them
// to the staging over one TLS channel, with at most `window_bytes_max` unacknowledged.
#pragma once

#include <csignal>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "blockrep/net/channel.h"
#include "blockrep/base/cli.h"
#include "blockrep/crypto/codec.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/metrics/http_endpoint.h"
#include "blockrep/net/tls.h"
#include "blockrep/tracking/tracker.h"
#include "blockrep/net/uring.h"
#include "blockrep/net/wire.h"
#include "agent_status.h"
#include "backoff.h"
#include "base_load.h"
#include "chain_memory.h"
#include "full_progress.h"
#include "parallel_sealer.h"
#include "point_freeze.h"
#include "point_plan.h"
#include "point_seal.h"
#include "blockrep/base/progress.h"
#include "read_pipeline.h"
#include "staging_link.h"
#include "token_bucket.h"
#include "tracker_choice.h"
#include "volume.h"

namespace blockrep::agent {

// Signals the agent reacts to: SIGTERM/SIGINT (finish the point in flight, exit 0) and SIGUSR1
// (take a recovery point now).
struct Signals {
  const volatile std::sig_atomic_t* term = nullptr;
  volatile std::sig_atomic_t* point_now = nullptr;
  volatile std::sig_atomic_t* reload = nullptr;  // SIGHUP: re-read <state-dir>/bandwidth-limit
};

struct Options {
  HostPort staging;
  // More stagings (frontends sharing one bucket, --staging A,B,...): after a failed session the
  // agent tries the next one in turn.
  std::vector<HostPort> other_stagings;
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
  std::string label;  // --once --label: the operator's label of the point (checked: CheckPointLabel)
  bool progress = false;  // --once: a progress bar on stderr (main sets it when stderr is a terminal)
  // --metrics: Prometheus text at http://HOST:PORT/metrics; --metrics-textfile: the same text in
  // a file for node_exporter's textfile collector (replaced about once a second). Unset: none.
  std::optional<HostPort> metrics;
  std::string metrics_textfile;
  // Seams of the deterministic simulation (tests/sim/): the ring, and the connection's socket.
  // Unset: io_uring, and a TCP connect to `staging`.
  RingFactory make_ring;
  StagingLink::Connector connect;
  // A full point's or rescan's checkpoint (full_progress.h): the lease ahead of the reads, and
  // how much is read between saves. The simulation's volumes are KiBs: it shrinks both, so that
  // a killed point resumes from the middle of a volume there too.
  uint64_t checkpoint_lease_bytes = 32u << 20;
  uint64_t checkpoint_every_bytes = 8u << 20;
  static constexpr uint64_t kCheckpointLeaseBytesMin = 8u << 10;  // two blocks: a read always fits
};

struct SyncSummary : ReadCounters {
  uint64_t point_id = 0;
  uint64_t base_point = 0;        // 0: full point
  std::string label;              // the operator's label of the point (--label), if any
  bool resumed = false;           // continued an interrupted point the staging kept
  bool resumed_rescan = false;    // ... a rescan, from this agent's checkpoint
  std::string tracker;            // which tracker ran, and why a full read happened if one did
  std::string mode_reason;
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
  // The point being sent.
  struct PointRun {
    uint64_t id = 0;
    uint64_t time_ns = 0;  // BEGIN_POINT's (or the kept point's): the seal binds it
    bool acked = false;
    PointMode mode = PointMode::kFull;
    PointPhase phase = PointPhase::kIdle;
    // What the point follows (its seals' `prev`): the newest point this agent saw acknowledged,
    // or the chain's head when that is newer; with its seal MAC when known.
    SealLink chain_link;
    std::array<uint8_t, kSealMacBytes> sent_seal_mac{};  // volume 0's seal
    // kResealing: the point's own work, read once the kept records' blocks are.
    std::vector<std::vector<Extent>> send_work;
    uint64_t last_acked = 0;  // the newest point acknowledged to this process (status.json)
    // SIGUSR1 (or `blockrep-agent point`) asked for a point: the point being sent ends at once
    // and carries `label` (sealed); `request` names the command waiting for it (point_request.h).
    // Kept across reconnects until a point that holds them is acknowledged.
    bool requested = false;
    std::string label, request;
    bool consistent = false;  // END_POINT's flag
    // A resumed full point's final take reads the tracker's inflight blocks too: the earlier try
    // may have taken some and died before their records were acknowledged.
    bool final_with_inflight = false;
  };
  struct Keys {
    DataKey current;                    // seals every new record
    std::vector<uint64_t> retired_ids;  // older keys of the key file (HELLO: the chain may be under one)
  };
  // What the agent needs to seal points: block fingerprints, seal keys, the point's seal state.
  struct Sealing {
    std::optional<BlockFingerprinter> fingerprinter;
    std::unique_ptr<SealKeys> keys;
    std::unique_ptr<PointSeal> point;
  };

  // One connection: points until `once` is satisfied or SIGTERM. Ok means a clean finish.
  Status Session(const Signals& sig, bool once);
  // Sends one point until the staging acknowledges it; `*term_taken`: its last take came after SIGTERM.
  Status SendPoint(const Signals& sig, bool once, bool* term_taken);
  // With the scan tracker, between points: waits until the next one is due (--point-interval,
  // SIGUSR1), so that its rescan reads the volumes then. `*stop`: SIGTERM came meanwhile.
  Status AwaitScanPoint(const Signals& sig, bool* stop);
  // SIGUSR1: takes <state-dir>/point-request, if any, into point_ (label, request).
  void TakePointRequest();
  // The point just acknowledged answers the request it carried (point-reply), then forgets it.
  void AnswerPointRequest();
  Status StartPoint(uint64_t last_point);
  void StartResume(uint64_t last_point);
  // kResumeFull, kResumeRescan: the checkpoint's seal state is `restored`; reads [cursor, limit)
  // in full, then the data after it (a rescan: compared with the base, whose fingerprints the
  // caller then loads), then the final take.
  Status StartResumeWhole(uint64_t last_point, PointSeal restored);
  // Whether the agent's checkpoint matches the staging's interrupted full point or rescan on
  // `last_point` (HELLO_OK) and replays into a seal state (then in `*restored`); logs why not
  // when there is one.
  bool LoadWholeCheckpoint(uint64_t last_point, PointSeal* restored);
  FullPointId FullId(uint64_t point_id, uint64_t time_ns, uint64_t base_point) const;
  // During a full point's sweep or a rescan: saves its progress when it read
  // checkpoint_every_bytes or kFullSaveEveryNs ago, and extends the lease before the reads reach it.
  Status CheckpointFull();
  static constexpr uint64_t kFullHoleLeaseBytes = 1ull << 30;  // over a rescan's hole
  static constexpr uint64_t kFullSaveEveryNs = 100000000ull;
  // Replaces the work with newly dirty blocks; false when there were none. The final take of a
  // point also marks every pending write and reads whole volumes whose tracking had a gap.
  // With `append`, the batch is queued behind the reads in progress (none is made when nothing
  // is dirty).
  bool PollTracker(bool with_inflight, bool final_take, bool append = false);
  // Behind, a new batch is taken this often while reads go on, up to kQueuedWorkBytesMax of
  // queued reads (extents in memory: at most 16 bytes per 4 KiB block queued, 4 MiB).
  static constexpr uint64_t kBatchEveryNs = 1000000000ull;
  static constexpr uint64_t kQueuedWorkBytesMax = 1ull << 30;
  Status IssueReads();
  // The staging's copy of the base did not match its seal: the point becomes a rescan against it.
  [[nodiscard]] Status RescanUntrustedBase();
  // Where fingerprint tables of large volumes live (fingerprint_table.h): the state directory,
  // else /var/tmp.
  std::string SpillDir() const { return opts_.state_dir.empty() ? "/var/tmp" : opts_.state_dir; }
  Status EndPoint(bool consistent);
  Status OnFrame(const wire::Frame& f);
  Status Step(bool wait, int timeout_ms = 1000);
  Status SendFrame(wire::MsgType type, const Bytes& payload) { return link_->SendFrame(type, payload); }
  BaseLoad::SendFn Sender() {
    return [this](wire::MsgType t, const Bytes& p) { return SendFrame(t, p); };
  }
  // Keeps the fingerprints of the point just acknowledged in the state directory for the next
  // process (fingerprint_cache.h); a failure is logged, and costs that process a fetch.
  void SaveFingerprints();
  void ReloadSettings();
  void SetPhase(PointPhase p);
  void SetState(AgentState s, const std::string& reason);
  void WriteStatus(bool force);
  // AGENT_REPORT to the staging, every kReportEveryNs while a session is up (agent_report.cc).
  void ReportToStaging(uint64_t now_ns, uint64_t backlog_bytes);
  static constexpr uint64_t kReportEveryNs = 2000000000ull;
  // --metrics and --metrics-textfile (agent_report.cc): started by Prepare, published about once
  // a second, and at once on a state change or an acknowledged point.
  Status StartMetrics();
  void PublishMetrics(uint64_t now_ns, uint64_t backlog_bytes, bool force);
  std::string RenderMetrics(uint64_t now_ns, uint64_t backlog_bytes) const;
  static constexpr uint64_t kPublishEveryNs = 1000000000ull;
  std::vector<uint64_t> VolumeSizes() const;
  // The chain's last point is sealed under a retired key: this point is a full one under ours.
  bool KeyRotated() const;
  void Teardown();
  // Shows STALLED (staging full) or DISCONNECTED with `why`, sleeps a jittered backoff (cut short
  // by SIGTERM).
  void WaitBeforeReconnect(const Signals& sig, const Status& why, Backoff* backoff);
  static constexpr int kOnceRefusalsMax = 8;
  // --once with several stagings: failed sessions (a frontend down, or not the lease holder yet)
  // before it gives up; with two stagings 12 rounds of the reconnect backoff (its waits double up
  // to 30 s): 1.5 to 3.5 minutes, several default leases (15 s) over.
  static constexpr int kOnceFailoversMax = 24;

  Options opts_;
  // Stagings tried since the last exponential wait (several stagings: one round over them all
  // between two such waits, a short one before each of the others; WaitBeforeReconnect).
  size_t tried_in_round_ = 0;
  Keys keys_;
  std::vector<std::unique_ptr<Volume>> volumes_;
  std::unique_ptr<Ring> ring_;
  std::unique_ptr<StagingLink> link_;       // connection, handshake, liveness, ack window
  std::unique_ptr<ParallelSealer> sealer_;  // one per session: new session ids on reconnect
  std::unique_ptr<ReadPipeline> reads_;     // reads, records, frames
  TrackerChoice tracker_;  // eBPF, or none (scanning)
  PointFreeze freeze_;  // freezes and hooks around each point's last take
  Sealing seal_;
  BaseLoad base_;       // the base's fingerprints and seals (incremental points, rescans)
  ChainMemory chain_;   // the newest point acknowledged to this agent: rollback alarms, ids, seal links
  PointRun point_;
  std::unique_ptr<FullProgress> full_;  // a full point's or a rescan's checkpoint (full_progress.h)
  uint64_t full_saved_ns_ = 0;
  uint64_t full_saved_read_ = 0;  // summary_.bytes_read at the last save
  TokenBucket bucket_;  // --bandwidth-limit
  AgentStatus status_;  // lag, rates and the RPO forecast, freeze times; status.json
  std::pair<AgentState, std::string> state_{AgentState::kDisconnected, ""};  // and why
  SyncSummary summary_;
  uint64_t wire_bytes_total_ = 0;  // frame bytes of sessions before the current one
  // What the agent tells others: the staging (AGENT_REPORT) and Prometheus (--metrics).
  struct Reporting {
    uint64_t reported_ns = 0;   // the last AGENT_REPORT
    uint64_t published_ns = 0;  // the last metrics text
    uint64_t dirty_counted_ns = 0, dirty_bytes = 0;  // the tracker's bitmap, counted once a second
    std::unique_ptr<ProgressBar> bar;  // --once on a terminal: the point's reads
    std::unique_ptr<metrics::HttpEndpoint> endpoint;
  } reporting_;
};

}  // namespace blockrep::agent
