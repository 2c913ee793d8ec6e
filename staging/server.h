// blockrep-staging: accepts agents over TLS, appends their sealed records to per-server packs and
// commits recovery points. One thread, one io_uring: socket I/O, pack writes and fsyncs all go
// through the ring; index and manifest writes (once per point) are synchronous.
#pragma once

#include <csignal>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "blockrep/channel.h"
#include "blockrep/cli.h"
#include "blockrep/fs.h"
#include "blockrep/retention.h"
#include "blockrep/store.h"
#include "blockrep/tls.h"
#include "blockrep/uring.h"
#include "blockrep/wire.h"

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
  RetentionPolicy retention;  // applied after every committed point and at startup
  Clock* clock = nullptr;     // point times and ages; the system clock when null
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
  uint16_t bound_port() const { return bound_port_; }

 private:
  // The durable part of a point whose session ended before END_POINT: its records are in a
  // pack, fsync'd and acknowledged. Kept (in memory, and in <server dir>/PENDING for a restart)
  // so the agent can resume the point instead of sending them again. A kill -9 while the point's
  // session is still live leaves no PENDING: the agent then sends the point anew.
  struct PendingPoint {
    wire::BeginPoint begin;
    std::vector<store::NewExtent> extents;
    uint64_t bytes = 0;
  };
  struct ServerState {
    std::unique_ptr<store::ServerStore> store;
    bool active = false;
    std::optional<PendingPoint> pending;
    // Stored bytes the points expired since the last compaction had added: a cheap upper bound
    // of the garbage waiting, so that compaction (which reads every retained index) runs only
    // when it can reclaim a worthwhile share.
    uint64_t expired_bytes = 0;
    // Bytes of this server's pack files (the quota's measure): counted when the store is opened
    // and after each retention run, grown by each commit in between.
    uint64_t pack_bytes = 0;
  };
  static uint64_t CountPackBytes(const store::ServerStore& store);
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
  // The session belongs to `st` from now on (agent or reader).
  void Admit(Session& s, ServerState& st, const wire::Hello& h);
  Status OnReadRequest(Session& s, ByteSpan payload);
  Status OnDrillReport(Session& s, ByteSpan payload);
  Status OnBeginPoint(Session& s, ByteSpan payload);
  Status OnResumePoint(Session& s, ByteSpan payload);
  void KeepInterruptedPoint(Session& s);
  // Forgets the kept point of `st`, in memory and on disk.
  void DropPending(ServerState& st);
  // Offers a kept point a previous run of the staging saved, if it still follows the chain.
  void LoadPending(ServerState& st, const std::string& server_id);
  Status OnRecord(Session& s, ByteSpan payload);
  Status OnEndPoint(Session& s, ByteSpan payload);
  Status OnFingerprintRequest(Session& s, ByteSpan payload);
  Status OnSeal(Session& s, ByteSpan payload);
  Status OnSealRequest(Session& s, ByteSpan payload);
  // Loads (or keeps) the last committed point's index in s.fp_index.
  Status LoadLastIndex(Session& s, const char* what);
  Status OpenPack(Session& s);
  void StartCommit(Session& s);
  void OnCommitDone(Session& s);
  Status MaybeCommitPoint(Session& s);
  // Expires what the retention policy no longer keeps, then compacts when enough is garbage
  // (always at startup). Failures are logged: they cost space, never a retained point.
  void ApplyRetention(const std::string& server_id, ServerState& st, bool startup);
  std::vector<uint32_t> PinnedPacks(const ServerState& st) const;
  void Fail(Session& s, wire::ErrorCode code, const Status& status);
  void SendFrame(Session& s, wire::MsgType type, const Bytes& payload);
  // Refuses the session for a store failure: "store full" (the agent waits, STALLED) on ENOSPC.
  void FailStore(Session& s, const Status& st);
  void Close(Session& s);
  void FailQuota(Session& s, const std::string& what);
  void ReloadTls();
  // Before a new connection is taken on: evicts the oldest one still before TLS and HELLO if the
  // budget (in total, or for `host`) is spent.
  void MakePreAuthRoom(const std::string& host);
  void PreAuthEvent(const std::string& line);  // logs it, at most kPreAuthLogLines a window

  Options opts_;
  SystemClock system_clock_;
  bool more_work_ = false;  // a session left frames for the next loop turn (its budget ran out)
  // Rate limit of the log lines about unauthenticated connections (PreAuthEvent).
  uint64_t preauth_window_ns_ = 0;
  unsigned preauth_logged_ = 0;
  uint64_t preauth_suppressed_ = 0;
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
};

}  // namespace blockrep::staging
