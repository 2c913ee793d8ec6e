// blockrep-staging: accepts agents over TLS, appends their sealed records to per-server packs and
// commits recovery points. One loop thread, one io_uring: socket I/O, pack writes and fsyncs all
// go through the ring. What can take long (point commits, index loads and fingerprint preads,
// retention and compaction) runs on a StoreWorker's threads, while the loop serves the other
// servers' sessions. The class's rooms: server.cc (loop, listener, budgets, lifecycle),
// agent_session.cc, pack_writer.cc, reader_session.cc, store_jobs.cc; session.h holds a
// session's state and the limits they share.
#pragma once

#include <array>
#include <csignal>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "blockrep/net/channel.h"
#include "blockrep/base/cli.h"
#include "blockrep/base/env.h"
#include "blockrep/base/fs.h"
#include "blockrep/metrics/exposition.h"
#include "blockrep/objstore/bucket_mirror.h"
#include "blockrep/metrics/http_endpoint.h"
#include "blockrep/store/pack_appender.h"
#include "blockrep/store/pending.h"
#include "blockrep/store/retention.h"
#include "blockrep/store/store.h"
#include "blockrep/net/tls.h"
#include "blockrep/net/uring.h"
#include "blockrep/net/wire.h"
#include "store_worker.h"

namespace blockrep::staging {

struct Options {
  HostPort listen;
  std::string store_dir;
  TlsFiles tls;
  unsigned max_sessions = 256;  // authenticated sessions (agents and readers); more get "at capacity"
  // Per server (--quota-bytes, --quota-records-per-point): past them only that server's session is
  // refused ("quota exceeded"), as a full store would refuse it; 0 bytes: no quota.
  uint64_t quota_bytes = 0;
  uint64_t quota_records_per_point = 64ull << 20;
  // Per server (--quota-packs): pack files at most; 0: no quota. Reaching it starts a compaction
  // (small packs are merged) and refuses the session meanwhile.
  uint64_t quota_packs = 0;
  RetentionPolicy retention;  // applied after every committed point and at startup
  Clock* clock = nullptr;     // point times and ages; the system clock when null
  unsigned store_threads = 2;  // StoreWorker threads: commits, index loads, retention of several servers at once
  // Seams of the deterministic simulation (tests/sim/): the store's files, the ring, and a
  // listening socket made by the caller (adopted; `listen` is then only a name for the logs).
  // With store_threads 0, store jobs run when the simulation says (store_worker()->RunQueuedJob).
  Env* env = Env::Default();
  RingFactory make_ring;
  int listen_fd = -1;
  // --metrics: Prometheus text at http://HOST:PORT/metrics (staging/metrics.cc); unset: none.
  std::optional<HostPort> metrics;
  // --store s3://...: the bucket every commit is published to (store_dir is then its cache).
  std::shared_ptr<BucketStore> bucket;
  // An open point whose stored bytes reach this is kept live: its PENDING file grows with every
  // group commit (synced before the ACK), so a staging killed mid-point still offers it to resume
  // (docs/FORMAT.md, PENDING). Smaller points cost one extra sync per commit for little: a kill -9
  // then costs their resend. UINT64_MAX: never (a store in a bucket never is either).
  uint64_t keep_live_after_bytes = 64ull << 20;
  // Packs of a local store are written around the page cache (store::PackAppender, `direct`),
  // where its filesystem allows it. A store in a bucket writes its cache through the page cache.
  bool direct_pack_writes = true;
  // Set (by SIGHUP): re-read the TLS files and CRL; sessions of revoked certificates are closed.
  volatile std::sig_atomic_t* reload = nullptr;
};

class Server {
 public:
  explicit Server(Options opts);
  ~Server();
  Status Start();
  // Runs until `*stop` becomes non-zero, then drains every session and returns.
  Status Run(const volatile std::sig_atomic_t* stop);
  // One turn of Run's loop; `wait`: for a completion, at most 500 ms. False once stopped.
  Result<bool> Turn(const volatile std::sig_atomic_t* stop, bool wait);
  StoreWorker* store_worker() { return worker_.get(); }
  uint16_t bound_port() const { return bound_port_; }

 private:
  struct ServerState {
    std::unique_ptr<store::ServerStore> store;
    // --store s3://...: the store's publisher (owned by `store`); null with a local store.
    ServerMirror* mirror = nullptr;
    // Why the last try to take the server's lease failed (another frontend holds it): the HELLO
    // that waited for that try is refused with it.
    std::optional<Status> lease_refusal;
    bool active = false;
    // The durable part of a point whose session ended before END_POINT (blockrep/store/pending.h), kept
    // in memory and in the server's PENDING file so the agent can resume it. A session's large
    // point keeps that file live (Options::keep_live_after_bytes), so a kill -9 leaves it too;
    // after a kill -9 inside a smaller point the agent sends the point anew.
    std::optional<store::PendingPoint> pending;
    // Stored bytes the points expired since the last compaction had added: a cheap upper bound
    // of the garbage waiting, so that compaction (which reads every retained index) runs only
    // when it can reclaim a worthwhile share.
    uint64_t expired_bytes = 0;
    // Bytes of this server's pack files (the quota's measure): counted when the store is opened
    // and after each retention run, grown by each commit in between.
    uint64_t pack_bytes = 0;
    uint64_t pack_count = 0;  // its pack files (--quota-packs): counted with pack_bytes, grown by OpenPack
    // StoreWorker jobs of this server in flight (0 or 1). While one runs it owns `store`: no
    // session of this server is serviced, and a HELLO naming it waits.
    unsigned jobs = 0;
    // What /metrics shows of this server (staging/metrics.cc), kept by the loop.
    struct Figures {
      uint64_t ingested_bytes_total = 0;  // record bytes received
      uint64_t points_committed_total = 0;
      uint64_t last_heard_utc_ns = 0;  // its agent's last frame
      // From its store, refreshed while no job owns the store.
      uint64_t retained_points = 0, last_point_ns = 0, last_consistent_ns = 0;
      // From its drills.jsonl, read again when the file's size changes.
      uint64_t drills_bytes_seen = UINT64_MAX, last_drill_ns = 0;
      int last_drill_pass = -1;  // -1: no drill on record
      // Its agent's last AGENT_REPORT (received_utc_ns 0: none since the staging started).
      wire::AgentReport report;
      uint64_t report_utc_ns = 0;
    } figures;
  };
  using PackUsage = store::ServerStore::PackUsage;
  static PackUsage CountPacks(const store::ServerStore& store) { return store.CountPacks(); }
  static void SetPackUsage(ServerState& st, const PackUsage& u) {
    st.pack_bytes = u.bytes;
    st.pack_count = u.count;
  }
  struct Session;

  Status PostAccept();
  void OnCompletion(uint64_t user_data, int res);
  void OnAccept(int res);
  void Service(Session& s);
  Status HandleFrames(Session& s);
  Status HandleFrame(Session& s, const wire::Frame& f);
  Status OnHello(Session& s, ByteSpan payload);
  // A recovery tool's session (wire::Role::kReader): reads its own server's manifest, indexes and
  // packs (ciphertext, verbatim) and appends drill reports; never holds the server's agent slot.
  Status OnReaderHello(Session& s, const wire::Hello& h);
  // An operator's fleet view (staging/operator_session.cc): HELLO, then FLEET_REQUESTs.
  Status OnOperatorHello(Session& s);
  Status OnFleetRequest(Session& s, ByteSpan payload);
  // The session belongs to `st` from now on (agent or reader).
  void Admit(Session& s, ServerState& st, const wire::Hello& h);
  Status OnReadRequest(Session& s, ByteSpan payload);
  void SendReadAnswer(Session& s, const wire::ReadRequest& rq, uint64_t object_bytes, wire::ReadStatus status,
                      ByteSpan data);
  // Answers `rq` from the session's snapshot of its object (which must exist).
  Status AnswerFromSnapshot(Session& s, const wire::ReadRequest& rq);
  // A reader's pack read runs in the ring (short reads resubmitted); its answer is sent on completion.
  Status PostPackRead(Session& s);
  void OnPackRead(Session& s, int res);
  void SendPackRead(Session& s);
  Status OnDrillReport(Session& s, ByteSpan payload);
  Status OnBeginPoint(Session& s, ByteSpan payload);
  Status OnResumePoint(Session& s, ByteSpan payload);
  void KeepInterruptedPoint(Session& s);
  // The open point's live PENDING file: started once the point is large enough (with every record
  // durable so far), dropped when it grows past what a kept point holds; then the commit's frame.
  [[nodiscard]] Status PrepareLiveKeep(Session& s);
  std::optional<store::PackAppender::Follower> LiveKeepFrame(Session& s);
  // Closes the session's live PENDING file (it stays on disk until DropPending or, once its point
  // is committed, the commit job removes it).
  static void EndLiveKeep(Session& s);
  // Forgets the kept point of `st`, in memory and on disk (durably: the directory is synced).
  [[nodiscard]] Status DropPending(ServerState& st);
  // Offers a kept point a previous run of the staging saved, if it still follows the chain.
  void LoadPending(ServerState& st, const std::string& server_id);
  Status OnRecord(Session& s, ByteSpan payload);
  Status OnEndPoint(Session& s, ByteSpan payload);
  Status OnFingerprintRequest(Session& s, ByteSpan payload);
  Status OnSeal(Session& s, ByteSpan payload);
  Status OnSealRequest(Session& s, ByteSpan payload);
  // The agent's state, lag and backlog, kept for /metrics (staging/metrics.cc).
  Status OnAgentReport(Session& s, ByteSpan payload);
  Status OpenPack(Session& s);
  // A group commit of the session's pack completed (durable or failed): ACK, or refuse the session.
  void OnCommitDone(Session& s, store::PackAppender::Done done);
  // Once END_POINT came and every record is durable: hands the point to the StoreWorker (index
  // build, index and manifest writes); OnPointCommitted acknowledges it on the loop.
  Status MaybeCommitPoint(Session& s);
  void OnPointCommitted(uint64_t session_id, ServerState& st, const Status& status);
  // Runs `fn` on the last committed point's index (loaded on the worker, kept by the session) on
  // a worker thread, then sends the frame it returns to the session.
  using IndexQuery = std::function<Result<Bytes>(const store::PointIndex&, store::PackReader&)>;
  Status PostIndexQuery(Session& s, const char* what, wire::MsgType reply, IndexQuery fn);
  // Counts a job of `st` in flight and posts it; false when the worker's queue is full.
  [[nodiscard]] bool PostJob(ServerState& st, StoreWorker::Work work);
  Status PostWake();
  // Expires what the retention policy no longer keeps, then compacts when enough is garbage
  // (always at startup). Failures are logged: they cost space, never a retained point.
  // At startup on this thread; later as a StoreWorker job.
  void ApplyRetention(const std::string& server_id, ServerState& st, bool startup);
  // The StoreWorker job of ApplyRetention; with `compact_fully`, compaction goes on until nothing
  // is worth it (as at startup), also without an expiry; `merge_small_packs` (at the pack quota)
  // merges small packs too.
  void PostRetention(const std::string& server_id, ServerState& st, bool compact_fully, bool merge_small_packs);
  void LogRetention(const std::string& server_id, const ServerState& st, const RetentionRun& run);
  std::vector<uint32_t> PinnedPacks(const ServerState& st) const;
  void Fail(Session& s, wire::ErrorCode code, const Status& status);
  void SendFrame(Session& s, wire::MsgType type, const Bytes& payload);
  // Refuses the session for a store failure: "store full" (the agent waits, STALLED) on ENOSPC.
  void FailStore(Session& s, const Status& st);
  void Close(Session& s);
  // --store s3://...: every commit of `store` is published to the bucket first; returns its
  // mirror (null without a bucket).
  Result<ServerMirror*> AttachBucket(store::ServerStore& store, const std::string& server_id);
  // Leases (several frontends on one bucket): a job that takes the server's lease, and when it is
  // newly this frontend's, brings the cache to the bucket's chain and fences it (TakeOver); or
  // renews a held lease. A lost lease refuses the server's session.
  // `for_hello`: a HELLO waits for it (a refusal is kept for that HELLO in lease_refusal).
  bool PostLeaseJob(const std::string& server_id, ServerState& st, bool for_hello);
  // A reader's HELLO on a frontend that does not hold the server's lease (another may be writing
  // the chain): the bucket's chain is pulled into the cache first, read-only, so that the reader
  // sees the newest point. `fresh`: the mirror of a server this frontend had no chain of (else
  // st.mirror). The HELLO of session `session_id` waits for it; a failure refuses that session.
  bool PostReaderPull(const std::string& server_id, ServerState& st, std::unique_ptr<ServerMirror> fresh,
                      uint64_t session_id);
  void RenewLeases();
  // A store reopened on the server's directory, after its chain was pulled from the bucket,
  // takes the old one's place (with `publisher`), and what depends on it is read again.
  void ReplaceStore(ServerState& st, const std::string& server_id, std::unique_ptr<store::ServerStore> fresh,
                    std::unique_ptr<store::ManifestPublisher> publisher);
  // A draining session (the agent hung up) has handled, made durable and committed all it can.
  bool DrainDone(const Session& s) const;
  void FailQuota(Session& s, const std::string& what);
  void ReloadTls();
  // Before a new connection is taken on: evicts the oldest one still before TLS and HELLO if the
  // budget (in total, or for `host`) is spent.
  void MakePreAuthRoom(const std::string& host);
  void PreAuthEvent(const std::string& line);  // logs it, at most kPreAuthLogLines a window
  // /metrics (staging/metrics.cc): renders every figure into the endpoint, about once a second.
  void PublishMetrics(bool force);
  std::string RenderMetrics();
  void RefreshFigures(ServerState& st);
  // Sets each agent session's share of the batch and inbox budgets, and gives back the buffers of
  // sessions idle for kIdleTrimNs.
  void ShareMemory();

  Options opts_;
  SystemClock system_clock_;
  bool more_work_ = false;  // a session left frames for the next loop turn (its budget ran out)
  // Each agent session's share of kBatchBytesBudget / kInboxBytesBudget, set every turn from the
  // number of sessions with an open point; and when free memory was last given back to the system.
  size_t batch_bytes_max_ = 0;  // set by ShareMemory at the start of every turn
  size_t inbox_bytes_max_ = 0;
  uint64_t trimmed_ns_ = 0;
  bool memory_freed_ = false;
  // Rate limit of the log lines about unauthenticated connections (PreAuthEvent).
  uint64_t preauth_window_ns_ = 0;
  unsigned preauth_logged_ = 0;
  uint64_t preauth_suppressed_ = 0;
  // Declared before ring_, so destroyed after it: the ring's teardown ends a read still in flight
  // into wake_buf_ before the buffer and the eventfd go.
  std::unique_ptr<StoreWorker> worker_;
  uint64_t wake_buf_ = 0;  // the eventfd read's target
  bool wake_inflight_ = false;
  std::unique_ptr<Ring> ring_;
  std::unique_ptr<TlsContext> tls_;
  UniqueFd listen_fd_;
  UniqueFd lock_fd_;
  uint16_t bound_port_ = 0;
  bool accept_inflight_ = false;
  bool stopping_ = false;
  uint64_t next_session_id_ = 1;
  std::map<uint64_t, std::unique_ptr<Session>> sessions_;
  std::map<std::string, ServerState> servers_;
  // Process-wide figures for /metrics.
  struct ProcessFigures {
    std::array<uint64_t, 16> refused{};  // by wire::ErrorCode
    uint64_t preauth_evicted = 0;
    uint64_t compactions = 0, compaction_reclaimed_bytes = 0;
    metrics::Histogram commit_seconds{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}};
  } figures_;
  std::unique_ptr<metrics::HttpEndpoint> metrics_;
  uint64_t metrics_published_ns_ = 0;
};

}  // namespace blockrep::staging
