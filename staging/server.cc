#include "server.h"

#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <set>

#include "blockrep/checksum.h"
#include "blockrep/fingerprint.h"
#include "blockrep/pending.h"
#include "blockrep/record.h"

namespace blockrep::staging {
namespace {

constexpr const char* kProg = "blockrep-staging";
constexpr uint8_t kOpAccept = 1;
constexpr uint8_t kOpPackWrite = 3;
constexpr uint8_t kOpPackFsync = 4;
constexpr uint8_t kOpWake = 5;
constexpr uint8_t kOpReadPack = 7;  // a reader's pack read (READ_REQUEST kind pack)
constexpr uint8_t kOpWakeCancel = 6;
constexpr uint64_t kListenerId = 0;
// The StoreWorker's eventfd read: an id no session reaches (they count from 1).
constexpr uint64_t kWorkerId = 1ull << 55;
// Group commit: records gather in `batch` while one write+fsync is in flight; reading from the
// socket pauses once a batch holds this much, which bounds staging memory per session.
constexpr size_t kBatchBytesMax = 8u << 20;
constexpr size_t kInboxBytesMax = 4u << 20;
// A connection that has not finished TLS and HELLO by then is dropped, so idle or hostile peers
// cannot hold session slots.
constexpr uint64_t kHelloDeadlineNs = 10ull * 1000000000ull;
// Connections that have not yet finished TLS and HELLO cost the staging memory and turns but prove
// nothing: they get a budget of their own, apart from authenticated sessions (opts.max_sessions),
// in total and per peer address. A new connection over budget evicts the oldest waiting one (an
// agent's handshake takes milliseconds; what waits longest is what is idle or slow on purpose).
constexpr size_t kPreAuthMax = 256;
constexpr size_t kPreAuthPerAddressMax = 64;
// Events about unauthenticated connections (evictions, deadlines, TLS failures) are logged at most
// kPreAuthLogLines a window; the rest are counted and summed up in one line.
constexpr unsigned kPreAuthLogLines = 10;
constexpr uint64_t kPreAuthLogWindowNs = 10ull * 1000000000ull;
// A refused session waits this long for the agent to read its ERROR and hang up, then closes
// anyway: an agent that never hangs up must not hold its server-id's session slot.
constexpr uint64_t kRefusedLingerNs = 5ull * 1000000000ull;
// A session starts a new pack past this size (between group commits), so that a long-lived
// session's older records can be compacted: the pack being appended never is.
constexpr uint64_t kPackRollBytes = 64ull << 20;
// A reader (recovery over --staging) pipelines READ_REQUESTs; the staging stops taking them while
// this much of its answers waits to be sent, which bounds its memory per reader.
constexpr size_t kReaderUnsentMax = 4u << 20;
// Per session, one agent cannot hold the loop or the memory every session shares: once this much
// of its replies are unsent (it does not read them), its requests wait in its inbox (bounded,
// kInboxBytesMax) and then in its socket. Readers stream READ_DATA, so they get kReaderUnsentMax.
constexpr size_t kAgentUnsentMax = 1u << 20;
// A session handles at most this many frames, and for at most this long, per loop turn; what is
// left waits for the next turn, after every other session had its own.
constexpr unsigned kFramesPerTurnMax = 256;
constexpr uint64_t kTurnBudgetNs = 2000000;  // 2 ms
// Manifest and index bytes a reader is being served, per session (one object at a time each).
constexpr size_t kReaderSnapshotsMax = 4;

}  // namespace

struct Server::Session {
  uint64_t id = 0;
  std::unique_ptr<Channel> ch;
  std::string peer;
  uint64_t accepted_ns = 0;
  std::string server_id;
  ServerState* server = nullptr;
  bool hello_done = false;
  bool failed = false;
  uint64_t failed_ns = 0;  // when it was refused
  uint64_t last_heard_ns = 0;  // last bytes from the agent (liveness: wire::kAgentSilentNs)
  uint64_t key_id = 0;
  bool reader = false;  // a recovery tool (wire::Role::kReader): reads only, never holds the server's slot

  // Reader: the manifest or index bytes being served, by (kind, id), and the packs pinned by the
  // indexes it read (open files outlive a compaction's unlink).
  std::map<std::pair<uint8_t, uint64_t>, Bytes> snapshots;
  std::unique_ptr<store::PackReader> read_packs;
  std::unique_ptr<uint8_t[]> read_buf;  // a READ_DATA frame: head, then up to kMaxReadBytes read from a pack
  Bytes read_frame;
  // The pack read in flight in the ring (one at a time, so answers stay in request order; the
  // session's frames wait meanwhile): into read_buf after the head, read_done of read_want bytes.
  bool read_inflight = false;
  int read_fd = -1;  // owned by read_packs
  uint64_t read_offset = 0;
  uint32_t read_want = 0, read_done = 0;

  // The point being received.
  std::optional<wire::BeginPoint> point;
  std::vector<store::NewExtent> extents;  // arrival order
  std::vector<uint64_t> extent_seqs;       // seq of each extent; 0: durable from an earlier session
  uint64_t session_records = 0;            // records of the open point received in this session
  uint64_t point_bytes = 0;
  uint64_t next_seq = 1;
  std::optional<wire::EndPoint> end;
  std::vector<std::optional<VolumeSeal>> seals;  // per volume of the open point, as SEALs arrive

  // Pack being appended. pack_end counts bytes handed to the kernel (durable or in flight).
  UniqueFd pack_fd;
  uint32_t pack_id = 0;
  uint64_t pack_end = 0;
  uint64_t pack_durable_end = 0;  // end of the last write + fsync that completed
  Bytes batch;
  uint64_t batch_last_seq = 0;
  Bytes commit_buf;
  uint64_t commit_offset = 0;  // file offset of commit_buf[0]
  size_t commit_written = 0;
  uint64_t commit_last_seq = 0;
  int commit_ops = 0;  // write + fsync completions still expected
  int commit_error = 0;
  bool commit_inflight = false;
  uint64_t durable_seq = 0;

  bool committing = false;    // the open point is with the StoreWorker (MaybeCommitPoint)
  bool defer_frame = false;   // the frame just handled must wait (its server's job runs): not consumed

  // The last committed point's index, loaded on the first FINGERPRINT_REQUEST or SEAL_REQUEST
  // (rescans); a compaction that rewrites it changes its checksum, which makes it reload. Owned by
  // the session; lent to the StoreWorker while a query runs (PostIndexQuery).
  struct IndexCache {
    std::optional<store::PointIndex> index;
    uint64_t checksum = 0;
    std::unique_ptr<store::PackReader> reader;
  };
  std::shared_ptr<IndexCache> last_index;
};

Server::Server(Options opts) : opts_(std::move(opts)) {}
Server::~Server() = default;

Status Server::Start() {
  BR_RETURN_IF_ERROR(store::InitStoreRoot(opts_.store_dir, true));
  std::string lock_path = opts_.store_dir + "/LOCK";
  lock_fd_ = UniqueFd(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_fd_.valid()) return ErrnoStatus("open " + lock_path, errno);
  if (flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0)
    return Unavailable("store " + opts_.store_dir +
                       " is in use by another blockrep-staging (stop it, or use another --store)");
  // TLS files first: a mistake there is reported before the store is touched (retention runs below).
  BR_ASSIGN_OR_RETURN(tls_, TlsContext::Create(opts_.tls, true));
  BR_ASSIGN_OR_RETURN(auto servers, store::ListServers(opts_.store_dir));
  for (const std::string& id : servers) {
    auto st = store::ServerStore::Open(opts_.store_dir, id, false);
    if (!st.ok()) return st.status().Annotate("cannot open the store of server '" + id + "'");
    BR_RETURN_IF_ERROR((*st)->RemoveOrphans());
    ServerState& state = servers_[id];
    state.store = std::move(st).value();
    LoadPending(state, id);
    ApplyRetention(id, state, true);
    SetPackUsage(state, CountPacks(*state.store));
  }
  BR_ASSIGN_OR_RETURN(ring_, Ring::Create(1024));
  BR_ASSIGN_OR_RETURN(worker_, StoreWorker::Create(opts_.store_threads));
  BR_RETURN_IF_ERROR(PostWake());

  int fd = socket(opts_.listen.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  listen_fd_ = UniqueFd(fd);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&opts_.listen.addr), opts_.listen.addr_len) != 0)
    return ErrnoStatus("bind " + opts_.listen.host + ":" + std::to_string(opts_.listen.port), errno);
  if (listen(fd, 1024) != 0) return ErrnoStatus("listen", errno);
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  bound_port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                  : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  Log(kProg, "listening on " + opts_.listen.host + ":" + std::to_string(bound_port_) + ", store " +
                 opts_.store_dir + ", " + std::to_string(servers_.size()) + " server(s) on record, retention " +
                 opts_.retention.ToString());
  return PostAccept();
}

void Server::ReloadTls() {
  auto fresh = TlsContext::Create(opts_.tls, true);
  if (!fresh.ok()) {
    Log(kProg, "SIGHUP: keeping the TLS files in use: " + fresh.status().message());
    return;
  }
  tls_ = std::move(fresh).value();  // sessions keep their own reference to the old context
  const std::vector<std::string>& revoked = tls_->revoked_serials();
  Log(kProg, "SIGHUP: TLS files re-read" +
                 (opts_.tls.crl.empty() ? std::string(" (no CRL)") : "; the CRL revokes " + std::to_string(revoked.size()) + " certificate(s)"));
  for (auto& [id, s] : sessions_) {
    if (!s->ch->handshake_done() || s->ch->closing()) continue;
    std::string serial = s->ch->tls().PeerSerialHex();
    if (std::find(revoked.begin(), revoked.end(), serial) == revoked.end()) continue;
    Fail(*s, wire::ErrorCode::kIdentity,
         PermissionDenied("the certificate of " + (s->server_id.empty() ? s->peer : "server '" + s->server_id + "'") +
                          " (serial " + serial + ") was revoked"));
  }
}

void Server::MakePreAuthRoom(const std::string& host) {
  size_t total = 0, same = 0;
  Session *oldest = nullptr, *oldest_same = nullptr;  // sessions_ is ordered by id: first is oldest
  for (auto& [id, s] : sessions_) {
    if (s->hello_done || s->ch->closing()) continue;
    ++total;
    if (oldest == nullptr) oldest = s.get();
    if (s->peer == host) {
      ++same;
      if (oldest_same == nullptr) oldest_same = s.get();
    }
  }
  Session* victim = same >= kPreAuthPerAddressMax ? oldest_same : total >= kPreAuthMax ? oldest : nullptr;
  if (victim == nullptr) return;
  PreAuthEvent("evicted a connection from " + victim->peer + " that had not finished TLS and HELLO in " +
               std::to_string((MonotonicNs() - victim->accepted_ns) / 1000000) + " ms (budget: " +
               std::to_string(kPreAuthMax) + " such connections, " + std::to_string(kPreAuthPerAddressMax) +
               " per address; oldest first)");
  Close(*victim);
}

void Server::PreAuthEvent(const std::string& line) {
  uint64_t now = MonotonicNs();
  if (now - preauth_window_ns_ > kPreAuthLogWindowNs) {
    if (preauth_suppressed_ > 0)
      Log(kProg, std::to_string(preauth_suppressed_) + " more event(s) about unauthenticated connections in the last " +
                     std::to_string(kPreAuthLogWindowNs / 1000000000ull) + " s not logged one by one");
    preauth_window_ns_ = now;
    preauth_logged_ = 0;
    preauth_suppressed_ = 0;
  }
  if (preauth_logged_ < kPreAuthLogLines) {
    ++preauth_logged_;
    Log(kProg, line);
  } else {
    ++preauth_suppressed_;
  }
}

Status Server::PostWake() {
  if (wake_inflight_ || !ring_->HasRoom()) return Status::Ok();  // no room: posted on a later turn
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_read(sqe, worker_->event_fd(), &wake_buf_, sizeof(wake_buf_), 0);
  io_uring_sqe_set_data64(sqe, UserData(kWorkerId, kOpWake));
  wake_inflight_ = true;
  return Status::Ok();
}

bool Server::PostJob(ServerState& st, StoreWorker::Work work) {
  assert(st.jobs == 0);  // one job of a server at a time: its sessions wait while it runs
  if (!worker_->Post(std::move(work))) return false;
  ++st.jobs;
  return true;
}

Status Server::PostAccept() {
  if (accept_inflight_ || stopping_ || !ring_->HasRoom()) return Status::Ok();
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_accept(sqe, listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, UserData(kListenerId, kOpAccept));
  accept_inflight_ = true;
  return Status::Ok();
}

void Server::OnAccept(int res) {
  accept_inflight_ = false;
  if (res < 0) {
    if (res != -ECANCELED && res != -EINVAL) Log(kProg, ErrnoStatus("accept", -res).message());
    return;
  }
  if (stopping_) {
    close(res);
    return;
  }
  sockaddr_storage peer{};
  socklen_t plen = sizeof(peer);
  char host[INET6_ADDRSTRLEN] = "?";
  if (getpeername(res, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) {
    if (peer.ss_family == AF_INET)
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&peer)->sin_addr, host, sizeof(host));
    else if (peer.ss_family == AF_INET6)
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr, host, sizeof(host));
  }
  MakePreAuthRoom(host);
  int one = 1;
  setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  auto tls = TlsSession::Create(tls_.get(), "");
  if (!tls.ok()) {
    Log(kProg, tls.status().message());
    close(res);
    return;
  }
  auto s = std::make_unique<Session>();
  s->id = next_session_id_++;
  s->accepted_ns = MonotonicNs();
  s->last_heard_ns = s->accepted_ns;
  s->peer = host;
  s->ch = std::make_unique<Channel>(ring_.get(), res, std::move(tls).value(), s->id, kInboxBytesMax);
  sessions_[s->id] = std::move(s);
}

void Server::OnCompletion(uint64_t ud, int res) {
  uint64_t id = UserDataId(ud);
  uint8_t op = UserDataOp(ud);
  if (id == kListenerId) {
    OnAccept(res);
    return;
  }
  if (id == kWorkerId) {
    if (op == kOpWakeCancel) return;
    wake_inflight_ = false;
    if (res < 0 && res != -ECANCELED && res != -EAGAIN && res != -EINTR)
      Log(kProg, ErrnoStatus("read the store worker's eventfd", -res).message());
    worker_->RunCompletions();  // also when the read failed: a job may have finished meanwhile
    return;
  }
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    Log(kProg, "completion for unknown session " + std::to_string(id));
    return;
  }
  Session& s = *it->second;
  if (op == Channel::kOpRecv || op == Channel::kOpSend) {
    if (op == Channel::kOpRecv && res > 0) s.last_heard_ns = MonotonicNs();
    Status st = s.ch->OnCompletion(op, res);
    if (!st.ok() && s.failed) {
      Close(s);  // the agent read our ERROR and hung up
    } else if (!st.ok() && !s.ch->closing()) {
      // Frames that arrived before the close still count (an agent's last END_POINT, say).
      HandleFrames(s).IgnoreError();  // a protocol error here only adds to the close below
      std::string line = "session " + std::to_string(s.id) + " (" + (s.server_id.empty() ? s.peer : s.server_id) +
                         (st.code() == Code::kUnavailable ? ") closed: " : "): ") + st.message();
      if (st.code() != Code::kUnavailable) s.ch->FlushBestEffort();  // the peer should see the TLS alert that explains it
      if (s.hello_done) Log(kProg, line);
      else PreAuthEvent(line);
      Close(s);
    }
    return;
  }
  if (op == kOpReadPack) {
    OnPackRead(s, res);
    return;
  }
  if (op == kOpPackWrite || op == kOpPackFsync) {
    --s.commit_ops;
    if (op == kOpPackWrite && res > 0) s.commit_written += static_cast<size_t>(res);
    if (res < 0 && res != -ECANCELED && s.commit_error == 0) s.commit_error = -res;
    if (s.commit_ops == 0) OnCommitDone(s);
    return;
  }
  Log(kProg, "completion with unknown op " + std::to_string(op));
}

Status Server::Run(const volatile std::sig_atomic_t* stop) {
  for (;;) {
    if (*stop && !stopping_) {
      stopping_ = true;
      Log(kProg, "stopping: draining " + std::to_string(sessions_.size()) + " session(s)");
      shutdown(listen_fd_.get(), SHUT_RDWR);
    }
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      Session& s = *it->second;
      Service(s);
      // On stop, a session finishes the point it is committing, then closes.
      if (stopping_ && !s.commit_inflight && !s.end) Close(s);
      if (!s.hello_done && !s.ch->closing() && MonotonicNs() - s.accepted_ns > kHelloDeadlineNs) {
        PreAuthEvent("session " + std::to_string(s.id) + " (" + s.peer + "): no TLS handshake and HELLO within 10 s; closing");
        Close(s);
      }
      if (s.hello_done && !s.ch->closing() && MonotonicNs() - s.last_heard_ns > wire::kAgentSilentNs) {
        Log(kProg, "session " + std::to_string(s.id) + " (" + s.server_id + "): nothing from the agent for " +
                       std::to_string(wire::kAgentSilentNs / 1000000000) + " s (connection half-open?); closing");
        Close(s);
      }
      if (s.failed && !s.ch->closing() && MonotonicNs() - s.failed_ns > kRefusedLingerNs) {
        Log(kProg, "session " + std::to_string(s.id) + " (" + (s.server_id.empty() ? s.peer : s.server_id) +
                       "): the agent did not hang up within 5 s of being refused; closing");
        Close(s);
      }
      // A session of a server whose job runs stays: the job's completion may still need it, and
      // KeepInterruptedPoint must not keep a point that is being committed.
      if (s.ch->closing() && s.ch->idle() && !s.commit_inflight && !s.read_inflight &&
          !(s.server != nullptr && s.server->jobs > 0)) {
        KeepInterruptedPoint(s);
        if (s.server != nullptr && s.server->active && !s.reader) s.server->active = false;
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
    if (stopping_ && sessions_.empty() && !accept_inflight_ && worker_->outstanding() == 0) {
      if (wake_inflight_ && ring_->inflight() == 1 && ring_->HasRoom()) {  // only the eventfd read is left: cancel it
        io_uring_sqe* c = ring_->Sqe();
        io_uring_prep_cancel64(c, UserData(kWorkerId, kOpWake), 0);
        io_uring_sqe_set_data64(c, UserData(kWorkerId, kOpWakeCancel));
      }
      if (ring_->inflight() == 0) break;
    }
    if (!stopping_) BR_RETURN_IF_ERROR(PostAccept());
    if (!stopping_ || worker_->outstanding() > 0) BR_RETURN_IF_ERROR(PostWake());
    if (opts_.reload != nullptr && *opts_.reload) {
      *opts_.reload = 0;
      ReloadTls();
    }
    bool more = more_work_;
    more_work_ = false;
    auto n = ring_->Reap([this](uint64_t ud, int res, uint32_t) { OnCompletion(ud, res); }, !more, 500);
    if (!n.ok()) return n.status();
  }
  Log(kProg, "stopped");
  return Status::Ok();
}

void Server::Service(Session& s) {
  if (s.ch->closing()) return;
  Status st = HandleFrames(s);
  if (!st.ok()) {
    Fail(s, st.code() == Code::kNoSpace ? wire::ErrorCode::kStoreFull : wire::ErrorCode::kProtocol, st);
    return;
  }
  if (!s.commit_inflight && !s.batch.empty()) StartCommit(s);
  if (s.end && !s.committing && !s.ch->closing()) {  // a commit that waited for its server's job
    Status commit = MaybeCommitPoint(s);
    if (!commit.ok()) FailStore(s, commit);
  }
  if (s.failed) s.ch->Consume(s.ch->inbox().size());  // refused: keep reading only to see the hang-up
  st = s.ch->Pump();
  if (!st.ok()) {
    Log(kProg, "session " + std::to_string(s.id) + " (" + s.peer + "): " + st.message());
    Close(s);
  }
}

Status Server::HandleFrames(Session& s) {
  if (!s.ch->handshake_done()) return Status::Ok();
  const size_t unsent_max = s.reader ? kReaderUnsentMax : kAgentUnsentMax;
  const uint64_t start_ns = MonotonicNs();
  for (unsigned n = 0; !s.failed && s.batch.size() < kBatchBytesMax && s.ch->unsent_bytes() <= unsent_max; ++n) {
    // While a job of its server runs (a commit, a query), the session waits; the job's
    // completion wakes the loop, which services it again.
    if (s.server != nullptr && s.server->jobs > 0) break;
    if (s.read_inflight) break;  // OnPackRead answers it, then the next request is taken
    BR_ASSIGN_OR_RETURN(auto frame, wire::ParseFrame(s.ch->inbox()));
    if (!frame) break;
    if (n == kFramesPerTurnMax || (n > 0 && MonotonicNs() - start_ns > kTurnBudgetNs)) {
      more_work_ = true;  // the loop comes back without waiting for a completion
      break;
    }
    size_t consumed = frame->total_size;
    BR_RETURN_IF_ERROR(HandleFrame(s, *frame));
    if (s.defer_frame) {  // handled again on a later turn
      s.defer_frame = false;
      break;
    }
    s.ch->Consume(consumed);
  }
  return Status::Ok();
}

Status Server::HandleFrame(Session& s, const wire::Frame& f) {
  using wire::MsgType;
  if (!s.hello_done && f.type != MsgType::kHello) return ProtocolError("expected HELLO first");
  if (f.type == MsgType::kPing) {  // either role
    BR_RETURN_IF_ERROR(wire::DecodeEmpty(f.payload, "PING"));
    SendFrame(s, MsgType::kPong, Bytes());
    return Status::Ok();
  }
  if (s.reader) {
    if (f.type == MsgType::kReadRequest) return OnReadRequest(s, f.payload);
    if (f.type == MsgType::kDrillReport) return OnDrillReport(s, f.payload);
    return ProtocolError("unexpected message type " + std::to_string(static_cast<int>(f.type)) +
                         " from a reader (it may only read)");
  }
  switch (f.type) {
    case MsgType::kHello: return OnHello(s, f.payload);
    case MsgType::kBeginPoint: return OnBeginPoint(s, f.payload);
    case MsgType::kResumePoint: return OnResumePoint(s, f.payload);
    case MsgType::kRecord: return OnRecord(s, f.payload);
    case MsgType::kEndPoint: return OnEndPoint(s, f.payload);
    case MsgType::kFingerprintRequest: return OnFingerprintRequest(s, f.payload);
    case MsgType::kSeal: return OnSeal(s, f.payload);
    case MsgType::kSealRequest: return OnSealRequest(s, f.payload);
    default:
      return ProtocolError("unexpected message type " + std::to_string(static_cast<int>(f.type)) +
                           " from an agent");
  }
}

void Server::SendFrame(Session& s, wire::MsgType type, const Bytes& payload) {
  Bytes frame;
  wire::AppendFrame(&frame, type, payload);
  Status st = s.ch->Send(frame);
  if (!st.ok()) {
    Log(kProg, "session " + std::to_string(s.id) + ": " + st.message());
    Close(s);
  }
}

void Server::Fail(Session& s, wire::ErrorCode code, const Status& status) {
  if (s.failed) return;
  s.failed = true;
  s.failed_ns = MonotonicNs();
  Log(kProg, "session " + std::to_string(s.id) + " (" + (s.server_id.empty() ? s.peer : s.server_id) +
                 ") refused: " + status.message());
  wire::ErrorMsg e{code, status.message()};
  SendFrame(s, wire::MsgType::kError, e.Encode());
  s.ch->tls().Shutdown();
  // Let the ERROR reach the agent; the agent closes, our recv sees it and closes the session.
  // (Service drops what the agent sends from now on, so that recv stays posted even when a full
  // inbox had paused reading; not here: HandleFrames may still be consuming the current frame.)
  s.ch->Pump().IgnoreError();  // best effort: the session is being refused anyway
  s.point.reset();
  s.end.reset();
}

void Server::Close(Session& s) {
  if (s.ch->closing()) return;
  // An open point is kept until the session's last commit has completed: then we know which of
  // its records are durable (KeepInterruptedPoint).
  s.end.reset();
  s.ch->Shutdown();
}

void Server::KeepInterruptedPoint(Session& s) {
  if (!s.point || s.failed || s.server == nullptr) return;
  store::PendingPoint p;
  p.begin = *s.point;
  for (size_t i = 0; i < s.extents.size(); ++i) {
    if (s.extent_seqs[i] > s.durable_seq) continue;  // never made durable: the agent sends it again
    p.extents.push_back(s.extents[i]);
    p.bytes += s.extents[i].entry.record_bytes;
  }
  std::string what = "server '" + s.server_id + "': point " + std::to_string(p.begin.point_id) + " interrupted";
  if (p.extents.empty() || p.extents.size() > store::kPendingExtentsMax) {
    Log(kProg, what + "; nothing kept (never visible)");
  } else {
    Log(kProg, what + "; " + std::to_string(p.extents.size()) + " durable records (" +
                   std::to_string(p.bytes) + " bytes) kept for the agent to resume");
    // Also on disk, so a restarted staging can offer it too. Failing that, it is kept in memory
    // only: the agent then resends after a restart, which costs bytes, not correctness.
    Status saved = WriteFileAtomic(s.server->store->PendingPath(), store::EncodePending(p));
    if (!saved.ok()) Log(kProg, "warning: " + what + ": cannot save it for a restart: " + saved.message());
    s.server->pending = std::move(p);
  }
  s.point.reset();
}

void Server::DropPending(ServerState& st) {
  st.pending.reset();
  if (!st.store) return;
  std::string path = st.store->PendingPath();
  if (unlink(path.c_str()) != 0 && errno != ENOENT)
    Log(kProg, "warning: cannot remove " + path + ": " + std::strerror(errno) +
                   " (a restarted staging would offer a stale point; it checks the chain first)");
}

void Server::LoadPending(ServerState& st, const std::string& server_id) {
  std::string path = st.store->PendingPath();
  if (!PathExists(path)) return;
  auto data = ReadSmallFile(path, store::kPendingFileBytesMax);
  Result<store::PendingPoint> kept =
      data.ok() ? store::DecodePending(ByteSpan(reinterpret_cast<const uint8_t*>(data->data()), data->size()))
                : Result<store::PendingPoint>(data.status());
  Status st_decode = kept.ok() ? Status::Ok() : kept.status();
  if (!kept.ok() || kept->begin.point_id != st.store->manifest().last_point_id() + 1 ||
      kept->begin.base_point != st.store->manifest().last_point_id()) {
    Log(kProg, "server '" + server_id + "': ignoring " + path +
                   (st_decode.ok() ? " (it no longer follows the chain)" : " (" + st_decode.message() + ")"));
    DropPending(st);
    return;
  }
  st.pending = std::move(kept).value();
  Log(kProg, "server '" + server_id + "': interrupted point " + std::to_string(st.pending->begin.point_id) + " found with " +
                 std::to_string(st.pending->extents.size()) + " durable records; the agent may resume it");
}

Status Server::OnHello(Session& s, ByteSpan payload) {
  if (s.hello_done) return ProtocolError("second HELLO");
  BR_ASSIGN_OR_RETURN(wire::Hello h, wire::Hello::Decode(payload));
  if (h.version_min > wire::kVersion || h.version_max < wire::kVersion) {
    Fail(s, wire::ErrorCode::kProtocol,
         ProtocolError("agent speaks protocol versions " + std::to_string(h.version_min) + ".." +
                       std::to_string(h.version_max) + "; this staging speaks " +
                       std::to_string(wire::kVersion) + " (upgrade one side)"));
    return Status::Ok();
  }
  Status valid = wire::ValidateServerId(h.server_id);
  if (!valid.ok()) {
    Fail(s, wire::ErrorCode::kIdentity, valid);
    return Status::Ok();
  }
  std::string cn = s.ch->tls().PeerCommonName();
  if (cn != h.server_id) {
    Fail(s, wire::ErrorCode::kIdentity,
         PermissionDenied("the agent's certificate belongs to server-id '" + Printable(cn, 80) +
                          "' but it claims server-id '" + h.server_id +
                          "' (use that server's certificate, from blockrep-keygen)"));
    return Status::Ok();
  }
  size_t authenticated = 0;
  for (const auto& [id, other] : sessions_) authenticated += other->hello_done && !other->ch->closing() ? 1 : 0;
  if (authenticated >= opts_.max_sessions) {
    Fail(s, wire::ErrorCode::kAtCapacity,
         Unavailable("staging at capacity (" + std::to_string(authenticated) + " sessions): retry later"));
    return Status::Ok();
  }
  auto known = servers_.find(h.server_id);
  if (known != servers_.end() && known->second.jobs > 0) {
    s.defer_frame = true;  // its store is with the StoreWorker: this HELLO waits for the job
    return Status::Ok();
  }
  if (h.role == wire::Role::kReader) return OnReaderHello(s, h);
  ServerState& st = servers_[h.server_id];
  if (st.active) {
    Fail(s, wire::ErrorCode::kBusy,
         Unavailable("server-id '" + h.server_id + "' already has an active session on this staging"));
    return Status::Ok();
  }
  if (!st.store) {
    auto opened = store::ServerStore::Open(opts_.store_dir, h.server_id, true);
    if (!opened.ok()) {
      servers_.erase(h.server_id);
      FailStore(s, opened.status());
      return Status::Ok();
    }
    st.store = std::move(opened).value();
    LoadPending(st, h.server_id);
    SetPackUsage(st, CountPacks(*st.store));
  }
  uint64_t chain_key = st.store->manifest().key_id;
  // The chain's key, or (after blockrep-keygen --rotate-key) a key file that still holds it as a
  // retired key: then the next point is a full one under the new key (OnBeginPoint).
  if (chain_key != 0 && !h.Holds(chain_key)) {
    Fail(s, wire::ErrorCode::kKeyMismatch,
         PermissionDenied("the agent's data key is not the key server '" + h.server_id +
                          "' has replicated with so far, nor among its retired keys (check --key)"));
    return Status::Ok();
  }
  st.active = true;
  Admit(s, st, h);
  Log(kProg, "session " + std::to_string(s.id) + ": server '" + s.server_id + "' connected from " +
                 s.peer + " (last point " + std::to_string(st.store->manifest().last_point_id()) + ")");
  wire::HelloOk ok;
  ok.last_point_id = st.store->manifest().last_point_id();
  if (!st.store->manifest().points.empty()) ok.last_time_ns = st.store->manifest().points.back().time_ns;
  ok.chain_key_id = chain_key;
  if (st.pending && st.pending->begin.point_id == ok.last_point_id + 1) {
    ok.pending_point_id = st.pending->begin.point_id;
    ok.pending_base_point = st.pending->begin.base_point;
    ok.pending_time_ns = st.pending->begin.time_ns;
  } else if (st.pending) {
    DropPending(st);
  }
  SendFrame(s, wire::MsgType::kHelloOk, ok.Encode());
  return Status::Ok();
}

void Server::Admit(Session& s, ServerState& st, const wire::Hello& h) {
  s.server = &st;
  s.server_id = h.server_id;
  s.key_id = h.key_id;
  s.hello_done = true;
}

Status Server::OnReaderHello(Session& s, const wire::Hello& h) {
  auto it = servers_.find(h.server_id);
  if (it == servers_.end() || !it->second.store) {
    // Never creates anything for a reader: a server without a chain here has nothing to read.
    auto opened = store::ServerStore::Open(opts_.store_dir, h.server_id, false);
    if (!opened.ok()) {
      Fail(s, wire::ErrorCode::kBadPoint,
           NotFound("server '" + h.server_id + "' has no recovery points on this staging"));
      return Status::Ok();
    }
    it = servers_.emplace(h.server_id, ServerState{}).first;
    it->second.store = std::move(opened).value();
    LoadPending(it->second, h.server_id);
  }
  ServerState& st = it->second;
  // A reader without a key (list) sends key id 0: it can read only ciphertext and metadata of its
  // own server, which its certificate already entitles it to. A key that is given must be right.
  uint64_t chain_key = st.store->manifest().key_id;
  if (chain_key != 0 && h.key_id != 0 && !h.Holds(chain_key)) {
    Fail(s, wire::ErrorCode::kKeyMismatch,
         PermissionDenied("the reader's key file does not hold the key server '" + h.server_id +
                          "' replicates with (check --key)"));
    return Status::Ok();
  }
  s.reader = true;
  Admit(s, st, h);
  s.read_packs = std::make_unique<store::PackReader>(st.store->dir());
  Log(kProg, "session " + std::to_string(s.id) + ": reader of server '" + s.server_id + "' connected from " + s.peer);
  wire::HelloOk ok;
  ok.last_point_id = st.store->manifest().last_point_id();
  SendFrame(s, wire::MsgType::kHelloOk, ok.Encode());
  return Status::Ok();
}

Status Server::OnReadRequest(Session& s, ByteSpan payload) {
  BR_ASSIGN_OR_RETURN(wire::ReadRequest rq, wire::ReadRequest::Decode(payload));
  if (rq.kind == wire::ReadKind::kPack) {
    auto fd = s.read_packs->Fd(static_cast<uint32_t>(rq.id));
    if (rq.id > UINT32_MAX || !fd.ok()) {
      SendReadAnswer(s, rq, 0, wire::ReadStatus::kNotFound, ByteSpan());
      return Status::Ok();
    }
    struct stat sb{};
    if (fstat(*fd, &sb) != 0) return ErrnoStatus("stat pack " + std::to_string(rq.id), errno);
    uint64_t size = static_cast<uint64_t>(sb.st_size);
    uint64_t n = rq.offset >= size ? 0 : std::min<uint64_t>(rq.length, size - rq.offset);
    // Read straight into the answer's frame, after its head (the bulk of a restore over the
    // network: no bounce buffer, no zero-fill).
    if (!s.read_buf) s.read_buf = std::make_unique<uint8_t[]>(wire::ReadData::kFrameBytes + wire::kMaxReadBytes);
    uint8_t* buf = s.read_buf.get();
    wire::ReadData::EncodeFrameHead(buf, rq.tag, size, wire::ReadStatus::kOk, static_cast<uint32_t>(n));
    s.read_fd = *fd;
    s.read_offset = rq.offset;
    s.read_want = static_cast<uint32_t>(n);
    s.read_done = 0;
    // In the ring, not in the loop: a cold 1 MiB read must not hold every other session.
    if (n > 0 && ring_->HasRoom()) return PostPackRead(s);
    if (n > 0) BR_RETURN_IF_ERROR(PreadAll(*fd, rq.offset, buf + wire::ReadData::kFrameBytes, n));  // ring full: rare
    SendPackRead(s);
    return Status::Ok();
  }
  // Manifest and index bytes come from a snapshot taken at the first chunk (offset 0), so that
  // the reader gets one version whole; an index read also pins every pack the index names. The
  // snapshot is taken on the StoreWorker (an index file may be large), the session waiting.
  auto key = std::make_pair(static_cast<uint8_t>(rq.kind), rq.id);
  auto snap = s.snapshots.find(key);
  if (snap != s.snapshots.end() && rq.offset != 0) return AnswerFromSnapshot(s, rq);
  if (s.snapshots.size() >= kReaderSnapshotsMax && snap == s.snapshots.end())
    return ProtocolError("more than " + std::to_string(kReaderSnapshotsMax) + " manifests and indexes read at once");
  const store::ServerStore* store = s.server->store.get();
  store::PackReader* packs = s.read_packs.get();  // the session's; it waits while the job runs
  ServerState* state = s.server;
  const uint64_t session_id = s.id;
  bool posted = PostJob(*state, [this, store, packs, state, session_id, rq]() -> StoreWorker::Done {
    // nullopt: no such point (answered "not found").
    auto take = [&]() -> Result<std::optional<Bytes>> {
      if (rq.kind == wire::ReadKind::kManifest) return std::optional<Bytes>(store->manifest().Encode());
      const store::PointInfo* point = nullptr;
      for (const auto& p : store->manifest().points)
        if (p.id == rq.id) point = &p;
      if (point == nullptr) return std::optional<Bytes>();
      // The file's own bytes: the reader checks them against the manifest's checksum.
      auto data = ReadFileBytes(store->IndexPath(*point), store::kMaxIndexBytes);
      if (!data.ok()) return data.status().Annotate("index of point " + std::to_string(rq.id));
      auto index = store::PointIndex::Decode(*data);
      if (!index.ok()) return index.status().Annotate("index of point " + std::to_string(rq.id));
      auto pinned = packs->OpenAll(*index);
      if (!pinned.ok()) return pinned.status().Annotate("pinning the packs of point " + std::to_string(rq.id));
      return std::optional<Bytes>(std::move(data).value());
    };
    auto taken = std::make_shared<Result<std::optional<Bytes>>>(take());
    return [this, state, session_id, rq, taken]() {
      --state->jobs;
      auto it = sessions_.find(session_id);
      if (it == sessions_.end() || it->second->ch->closing() || it->second->failed) return;
      Session& s = *it->second;
      if (!taken->ok()) {
        Fail(s, wire::ErrorCode::kStoreError, taken->status().Annotate("reader session"));
        return;
      }
      if (!taken->value()) {
        SendReadAnswer(s, rq, 0, wire::ReadStatus::kNotFound, ByteSpan());
        return;
      }
      s.snapshots.insert_or_assign(std::make_pair(static_cast<uint8_t>(rq.kind), rq.id), std::move(*taken->value()));
      AnswerFromSnapshot(s, rq).IgnoreError();  // it only fails by closing the session, which it logs
    };
  });
  if (!posted) return Unavailable("the staging's store worker is saturated; retry later");
  return Status::Ok();
}

void Server::SendReadAnswer(Session& s, const wire::ReadRequest& rq, uint64_t object_bytes, wire::ReadStatus status,
                            ByteSpan data) {
  Bytes& frame = s.read_frame;  // reused: one answer at a time
  frame.clear();
  wire::ReadData::AppendEncoded(&frame, rq.tag, object_bytes, status, data);
  Status sent = s.ch->Send(frame);
  if (!sent.ok()) {
    Log(kProg, "session " + std::to_string(s.id) + ": " + sent.message());
    Close(s);
  }
}

Status Server::AnswerFromSnapshot(Session& s, const wire::ReadRequest& rq) {
  auto snap = s.snapshots.find(std::make_pair(static_cast<uint8_t>(rq.kind), rq.id));
  assert(snap != s.snapshots.end());
  const Bytes& bytes = snap->second;
  uint64_t n = rq.offset >= bytes.size() ? 0 : std::min<uint64_t>(rq.length, bytes.size() - rq.offset);
  SendReadAnswer(s, rq, bytes.size(), wire::ReadStatus::kOk,
                 ByteSpan(bytes).subspan(rq.offset >= bytes.size() ? bytes.size() : rq.offset, n));
  if (rq.offset + n >= bytes.size()) s.snapshots.erase(snap);  // served to the end
  return Status::Ok();
}

Status Server::PostPackRead(Session& s) {
  assert(s.read_done < s.read_want && ring_->HasRoom());
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_read(sqe, s.read_fd, s.read_buf.get() + wire::ReadData::kFrameBytes + s.read_done,
                     s.read_want - s.read_done, s.read_offset + s.read_done);
  io_uring_sqe_set_data64(sqe, UserData(s.id, kOpReadPack));
  s.read_inflight = true;
  return Status::Ok();
}

void Server::OnPackRead(Session& s, int res) {
  s.read_inflight = false;
  if (res <= 0) {
    // A pack shorter than it was a moment ago, or an I/O error: the reader's request fails whole.
    Status st = res == 0 ? DataLoss("pack read ended early at offset " + std::to_string(s.read_offset + s.read_done))
                         : ErrnoStatus("read pack", -res);
    if (!s.ch->closing()) Fail(s, wire::ErrorCode::kStoreError, st.Annotate("reader session"));
    return;
  }
  s.read_done += static_cast<uint32_t>(res);
  if (s.read_done < s.read_want) {  // short read: ask for the rest
    if (ring_->HasRoom()) {
      PostPackRead(s).IgnoreError();  // cannot fail with room in the ring
      return;
    }
    Status st = PreadAll(s.read_fd, s.read_offset + s.read_done,
                         s.read_buf.get() + wire::ReadData::kFrameBytes + s.read_done, s.read_want - s.read_done);
    if (!st.ok()) {
      if (!s.ch->closing()) Fail(s, wire::ErrorCode::kStoreError, st.Annotate("reader session"));
      return;
    }
    s.read_done = s.read_want;
  }
  if (!s.ch->closing()) SendPackRead(s);
}

void Server::SendPackRead(Session& s) {
  Status sent = s.ch->Send(ByteSpan(s.read_buf.get(), wire::ReadData::kFrameBytes + s.read_want));
  if (!sent.ok()) {
    Log(kProg, "session " + std::to_string(s.id) + ": " + sent.message());
    Close(s);
  }
}

Status Server::OnDrillReport(Session& s, ByteSpan payload) {
  BR_ASSIGN_OR_RETURN(wire::DrillReport r, wire::DrillReport::Decode(payload));
  std::string path = s.server->store->dir() + "/drills.jsonl";
  std::string line = r.line + "\n";
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus("open " + path, errno);
  if (write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    return ErrnoStatus("append to " + path, errno);
  if (fsync(fd.get()) != 0) return ErrnoStatus("fsync " + path, errno);
  Log(kProg, "server '" + s.server_id + "': drill report appended to drills.jsonl");
  SendFrame(s, wire::MsgType::kDrillReportOk, Bytes());
  return Status::Ok();
}

Status Server::OnBeginPoint(Session& s, ByteSpan payload) {
  if (s.point) return ProtocolError("BEGIN_POINT while a point is open");
  BR_ASSIGN_OR_RETURN(wire::BeginPoint b, wire::BeginPoint::Decode(payload));
  // Ids only grow. Usually by one; more when an agent found this chain behind the points it saw
  // acknowledged (a rolled-back store): it never reuses their ids (PROTOCOL.md, Rollback).
  uint64_t last = s.server->store->manifest().last_point_id();
  if (b.point_id <= last || b.point_id - last > wire::kPointIdGapMax) {
    Fail(s, wire::ErrorCode::kBadPoint,
         InvalidArgument("point " + std::to_string(b.point_id) + " does not follow the chain (expected " +
                         std::to_string(last + 1) + ", or at most " + std::to_string(wire::kPointIdGapMax) +
                         " past it)"));
    return Status::Ok();
  }
  uint64_t chain_key = s.server->store->manifest().key_id;
  if (b.base_point != 0 && chain_key != 0 && chain_key != s.key_id) {
    Fail(s, wire::ErrorCode::kBadPoint,
         InvalidArgument("incremental point " + std::to_string(b.point_id) + " is sealed under data key " +
                         KeyIdHex(s.key_id) + ", its base under " + KeyIdHex(chain_key) +
                         ": after a key rotation the first point must be full"));
    return Status::Ok();
  }
  if (b.base_point != 0 && b.base_point != last) {
    Fail(s, wire::ErrorCode::kBadPoint,
         InvalidArgument("incremental point " + std::to_string(b.point_id) + " is based on point " +
                         std::to_string(b.base_point) + ", but the chain ends at " + std::to_string(last) +
                         " (the agent must rescan)"));
    return Status::Ok();
  }
  // A point's time orders the chain and decides retention, so it is the staging's: later than
  // the chain's last point and within wire::kPointClockSkewNs of this clock (a hostile agent cannot
  // backdate points to outrank genuine ones in their retention slots).
  Clock& clock = opts_.clock ? *opts_.clock : system_clock_;
  uint64_t now_ns = clock.NowUtcNs();
  const auto& points = s.server->store->manifest().points;
  uint64_t skew_ns = b.time_ns > now_ns ? b.time_ns - now_ns : now_ns - b.time_ns;
  if (skew_ns > wire::kPointClockSkewNs) {
    Fail(s, wire::ErrorCode::kBadTime,
         InvalidArgument("point " + std::to_string(b.point_id) + " is dated " + FormatUtc(b.time_ns) + ", " +
                         std::to_string(skew_ns / 1000000000ull) + " s " + (b.time_ns > now_ns ? "ahead of" : "behind") +
                         " the staging's clock (" + FormatUtc(now_ns) + "; at most " +
                         std::to_string(wire::kPointClockSkewNs / 1000000000ull) +
                         " s apart): set the clocks of the agent and the staging (NTP)"));
    return Status::Ok();
  }
  if (!points.empty() && b.time_ns <= points.back().time_ns) {
    Fail(s, wire::ErrorCode::kBadTime,
         InvalidArgument("point " + std::to_string(b.point_id) + " is dated " + FormatUtc(b.time_ns) +
                         ", not after the chain's last point " + std::to_string(points.back().id) + " (" +
                         FormatUtc(points.back().time_ns) + "): point times only move forward"));
    return Status::Ok();
  }
  if (s.server->pending) {
    Log(kProg, "server '" + s.server_id + "': agent starts point " + std::to_string(b.point_id) +
                   " afresh; the interrupted one is dropped");
    DropPending(*s.server);
  }
  s.point = std::move(b);
  s.seals.assign(s.point->volume_sizes.size(), std::nullopt);
  s.extents.clear();
  s.extent_seqs.clear();
  s.session_records = 0;
  s.point_bytes = 0;
  return Status::Ok();
}

Status Server::OnResumePoint(Session& s, ByteSpan payload) {
  if (s.point) return ProtocolError("RESUME_POINT while a point is open");
  BR_ASSIGN_OR_RETURN(wire::ResumePoint m, wire::ResumePoint::Decode(payload));
  store::PendingPoint* p = s.server->pending ? &*s.server->pending : nullptr;
  if (p == nullptr || p->begin.point_id != m.point_id)
    return ProtocolError("RESUME_POINT " + std::to_string(m.point_id) + " names no interrupted point");
  s.point = p->begin;
  s.seals.assign(s.point->volume_sizes.size(), std::nullopt);
  s.extents = std::move(p->extents);
  s.extent_seqs.assign(s.extents.size(), 0);
  s.session_records = 0;
  s.point_bytes = p->bytes;
  // From here its records live in this session (and are saved again if it is interrupted).
  DropPending(*s.server);
  Log(kProg, "server '" + s.server_id + "': point " + std::to_string(m.point_id) + " resumed with " +
                 std::to_string(s.extents.size()) + " durable records");
  return Status::Ok();
}

Status Server::OpenPack(Session& s) {
  BR_ASSIGN_OR_RETURN(s.pack_fd, s.server->store->CreatePack(&s.pack_id));
  s.pack_end = s.pack_durable_end = store::kPackHeaderSize;
  ++s.server->pack_count;
  s.server->pack_bytes += store::kPackHeaderSize;
  return Status::Ok();
}

Status Server::OnRecord(Session& s, ByteSpan payload) {
  if (!s.point || s.end) return ProtocolError("RECORD outside a point");
  if (s.session_records >= opts_.quota_records_per_point) {
    FailQuota(s, "point " + std::to_string(s.point->point_id) + " has reached " + std::to_string(opts_.quota_records_per_point) +
                     " records (--quota-records-per-point)");
    return Status::Ok();
  }
  BR_ASSIGN_OR_RETURN(wire::RecordMsg m, wire::RecordMsg::Decode(payload));
  if (m.seq != s.next_seq)
    return ProtocolError("RECORD sequence " + std::to_string(m.seq) + ", expected " +
                         std::to_string(s.next_seq));
  auto hdr = RecordHeader::Decode(m.record);
  if (!hdr.ok()) return ProtocolError("malformed record: " + hdr.status().message());
  if (hdr->total_size() != m.record.size()) return ProtocolError("record length does not match its header");
  if (hdr->point_id != s.point->point_id) return ProtocolError("record belongs to another point");
  if (hdr->volume >= s.point->volume_sizes.size()) return ProtocolError("record names a missing volume");
  uint64_t vol_size = s.point->volume_sizes[hdr->volume];
  if (hdr->offset > vol_size || hdr->plain_len > vol_size - hdr->offset)
    return ProtocolError("record extends past the end of its volume");
  size_t fp_bytes = hdr->zero() ? 0 : FingerprintCount(hdr->plain_len) * kFingerprintBytes;
  if (m.fingerprints.size() != fp_bytes)
    return ProtocolError("RECORD carries " + std::to_string(m.fingerprints.size()) + " bytes of fingerprints, expected " +
                         std::to_string(fp_bytes));
  uint64_t stored = s.server->pack_bytes + (s.commit_inflight ? s.commit_buf.size() : 0) + s.batch.size() +
                    m.record.size() + m.fingerprints.size();
  if (opts_.quota_bytes != 0 && stored > opts_.quota_bytes) {
    FailQuota(s, "its packs would hold " + std::to_string(stored) + " bytes, over its quota of " +
                     std::to_string(opts_.quota_bytes) + " (--quota-bytes)");
    return Status::Ok();
  }
  if (s.pack_fd.valid() && s.pack_end >= kPackRollBytes && s.batch.empty() && !s.commit_inflight) s.pack_fd.Reset();
  if (!s.pack_fd.valid()) {
    if (opts_.quota_packs != 0 && s.server->pack_count >= opts_.quota_packs) {
      // Short sessions leave a small pack each: a compaction merges them (EnforceRetention with
      // compact_fully), which may free the room by the time the agent retries.
      FailQuota(s, "it has " + std::to_string(s.server->pack_count) + " pack files, its quota (--quota-packs " +
                       std::to_string(opts_.quota_packs) + "); compacting to merge small ones");
      if (s.server->jobs == 0) PostRetention(s.server_id, *s.server, true, true);
      return Status::Ok();
    }
    BR_RETURN_IF_ERROR(OpenPack(s));
  }

  store::NewExtent x;
  x.zero = hdr->zero();
  store::IndexEntry& e = x.entry;
  e.volume = hdr->volume;
  e.length = hdr->plain_len;
  e.offset = hdr->offset;
  e.pack = s.pack_id;
  e.record_bytes = static_cast<uint32_t>(m.record.size());
  e.pack_offset = s.pack_end + s.batch.size();
  e.checksum = Checksum64(m.record);
  s.extents.push_back(x);
  s.extent_seqs.push_back(m.seq);
  ++s.session_records;
  s.point_bytes += m.record.size();
  s.batch.insert(s.batch.end(), m.record.begin(), m.record.end());
  s.batch.insert(s.batch.end(), m.fingerprints.begin(), m.fingerprints.end());  // FORMAT.md: packs
  s.batch_last_seq = m.seq;
  ++s.next_seq;
  return Status::Ok();
}

Status Server::OnEndPoint(Session& s, ByteSpan payload) {
  if (!s.point || s.end) return ProtocolError("END_POINT outside a point");
  BR_ASSIGN_OR_RETURN(wire::EndPoint e, wire::EndPoint::Decode(payload));
  if (e.point_id != s.point->point_id) return ProtocolError("END_POINT names another point");
  if (e.last_seq != s.next_seq - 1 || e.record_count != s.session_records)
    return ProtocolError("END_POINT says " + std::to_string(e.record_count) + " records up to sequence " +
                         std::to_string(e.last_seq) + ", but " + std::to_string(s.session_records) +
                         " arrived up to " + std::to_string(s.next_seq - 1));
  for (size_t v = 0; v < s.seals.size(); ++v) {
    if (!s.seals[v]) return ProtocolError("END_POINT " + std::to_string(e.point_id) + " before the SEAL of volume " + std::to_string(v));
    if (s.seals[v]->flags != e.flags)
      return ProtocolError("the SEAL of volume " + std::to_string(v) + " says flags " + std::to_string(s.seals[v]->flags) +
                           ", END_POINT " + std::to_string(e.flags));
  }
  s.end = e;
  return MaybeCommitPoint(s);
}

Status Server::OnSeal(Session& s, ByteSpan payload) {
  if (!s.point || s.end) return ProtocolError("SEAL outside a point");
  BR_ASSIGN_OR_RETURN(wire::SealMsg m, wire::SealMsg::Decode(payload));
  const VolumeSeal& seal = m.seal;
  const wire::BeginPoint& b = *s.point;
  if (seal.point_id != b.point_id || seal.time_ns != b.time_ns || seal.volume_count != b.volume_sizes.size())
    return ProtocolError("SEAL names point " + std::to_string(seal.point_id) + " of " + std::to_string(seal.volume_count) +
                         " volumes at time " + std::to_string(seal.time_ns) + ", not the open point");
  if (seal.volume_bytes != b.volume_sizes[seal.volume])
    return ProtocolError("SEAL of volume " + std::to_string(seal.volume) + " says " + std::to_string(seal.volume_bytes) +
                         " bytes, BEGIN_POINT " + std::to_string(b.volume_sizes[seal.volume]));
  if (s.seals[seal.volume]) return ProtocolError("a second SEAL for volume " + std::to_string(seal.volume));
  // The link to the point it follows: the chain's head, or a later point the agent saw
  // acknowledged (a rolled-back store lost it). Its MAC is the agent's to check, its id is ours.
  uint64_t head = s.server->store->manifest().last_point_id();
  if (seal.prev.point_id < head)
    return ProtocolError("SEAL of point " + std::to_string(seal.point_id) + " says it follows point " +
                         std::to_string(seal.prev.point_id) + ", but the chain already ends at point " + std::to_string(head));
  s.seals[seal.volume] = std::move(m.seal);
  return Status::Ok();
}

Status Server::PostIndexQuery(Session& s, const char* what, wire::MsgType reply, IndexQuery fn) {
  const store::ServerStore* store = s.server->store.get();
  if (store->manifest().points.empty()) return ProtocolError(std::string(what) + " without a committed point");
  if (!s.last_index) s.last_index = std::make_shared<Session::IndexCache>();
  std::shared_ptr<Session::IndexCache> cache = std::move(s.last_index);  // lent to the job
  ServerState* st = s.server;
  const uint64_t session_id = s.id;
  std::string what_s = what;
  bool posted = PostJob(*st, [this, store, cache, st, session_id, what_s, reply, fn = std::move(fn)]() -> StoreWorker::Done {
    // Worker thread: the server's store is ours until `done` runs (its sessions wait).
    const store::PointInfo& last = store->manifest().points.back();
    Status loaded = Status::Ok();
    if (!cache->index || cache->index->point_id != last.id || cache->checksum != last.index_checksum) {
      auto idx = store->LoadIndex(last);
      if (idx.ok()) {
        cache->index = std::move(idx).value();
        cache->checksum = last.index_checksum;
        cache->reader = std::make_unique<store::PackReader>(store->dir());
      } else {
        cache->index.reset();
        loaded = idx.status().Annotate("cannot load point " + std::to_string(last.id) + " for " + what_s);
      }
    }
    Result<Bytes> answer = loaded.ok() ? fn(*cache->index, *cache->reader) : Result<Bytes>(loaded);
    return [this, cache, st, session_id, reply, answer = std::move(answer)]() mutable {
      --st->jobs;
      auto it = sessions_.find(session_id);
      if (it == sessions_.end()) return;
      Session& s = *it->second;
      s.last_index = cache;
      if (s.ch->closing() || s.failed) return;
      if (!answer.ok()) {
        Fail(s, answer.status().code() == Code::kNoSpace ? wire::ErrorCode::kStoreFull : wire::ErrorCode::kProtocol,
             answer.status());
        return;
      }
      SendFrame(s, reply, *answer);
    };
  });
  if (!posted) return Unavailable(std::string(what) + ": the staging's store worker is saturated; retry later");
  return Status::Ok();
}

Status Server::OnSealRequest(Session& s, ByteSpan payload) {
  BR_ASSIGN_OR_RETURN(wire::SealRequest rq, wire::SealRequest::Decode(payload));
  return PostIndexQuery(s, "SEAL_REQUEST", wire::MsgType::kBaseSeal,
                        [rq](const store::PointIndex& index, store::PackReader&) -> Result<Bytes> {
                          wire::BaseSeal reply;
                          reply.volume = rq.volume;
                          if (rq.volume < index.seals.size()) reply.seal = index.seals[rq.volume];
                          return reply.Encode();
                        });
}

Status Server::OnFingerprintRequest(Session& s, ByteSpan payload) {
  BR_ASSIGN_OR_RETURN(wire::FingerprintRequest rq, wire::FingerprintRequest::Decode(payload));
  return PostIndexQuery(s, "FINGERPRINT_REQUEST", wire::MsgType::kFingerprints,
                        [rq](const store::PointIndex& index, store::PackReader& reader) -> Result<Bytes> {
                          wire::Fingerprints reply;
                          reply.volume = rq.volume;
                          reply.offset = rq.offset;
                          reply.values.assign((rq.length + 4095) / 4096, store::kFingerprintUnknown);
                          // A volume the point lacks, or the part past its end, has nothing to compare with.
                          uint64_t size = rq.volume < index.volume_sizes.size() ? index.volume_sizes[rq.volume] : 0;
                          if (rq.offset < size) {
                            std::vector<uint64_t> known((std::min(rq.length, size - rq.offset) + 4095) / 4096);
                            BR_RETURN_IF_ERROR(reader.ReadFingerprints(index, rq.volume, rq.offset, &known));
                            std::copy(known.begin(), known.end(), reply.values.begin());
                          }
                          return reply.Encode();
                        });
}

void Server::StartCommit(Session& s) {
  if (!ring_->HasRoom(2)) return;  // retried on the next loop turn
  s.commit_buf.swap(s.batch);
  s.batch.clear();
  s.commit_offset = s.pack_end;
  s.pack_end += s.commit_buf.size();
  s.commit_written = 0;
  s.commit_last_seq = s.batch_last_seq;
  s.commit_error = 0;
  s.commit_inflight = true;
  s.commit_ops = 2;
  io_uring_sqe* w = ring_->Sqe();
  io_uring_prep_write(w, s.pack_fd.get(), s.commit_buf.data(), static_cast<unsigned>(s.commit_buf.size()),
                      s.commit_offset);
  io_uring_sqe_set_data64(w, UserData(s.id, kOpPackWrite));
  w->flags |= IOSQE_IO_LINK;  // fsync runs only after the write succeeded in full
  io_uring_sqe* f = ring_->Sqe();
  io_uring_prep_fsync(f, s.pack_fd.get(), IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(f, UserData(s.id, kOpPackFsync));
}

void Server::OnCommitDone(Session& s) {
  s.commit_inflight = false;
  if (s.commit_error != 0) {
    Status st = ErrnoStatus("write pack " + s.server->store->PackPath(s.pack_id), s.commit_error);
    if (!s.ch->closing()) FailStore(s, st);
    // Nothing past durable_seq is acknowledged; further writes to this pack are abandoned, and
    // what the failed write left past the last durable commit is cut off (best effort: it is
    // garbage either way, but on a full disk it is the space the retry needs).
    if (ftruncate(s.pack_fd.get(), static_cast<off_t>(s.pack_durable_end)) != 0) {
      // Ignored on purpose: the tail is unreferenced; compaction reclaims it if it stays.
    }
    s.pack_fd.Reset();
    s.batch.clear();
    return;
  }
  if (s.commit_written < s.commit_buf.size()) {
    // Short write: the linked fsync was cancelled. Write the rest (and fsync) again.
    Bytes rest(s.commit_buf.begin() + static_cast<ptrdiff_t>(s.commit_written), s.commit_buf.end());
    rest.insert(rest.end(), s.batch.begin(), s.batch.end());
    s.batch.swap(rest);
    s.pack_end = s.commit_offset + s.commit_written;
    uint64_t last = std::max(s.batch_last_seq, s.commit_last_seq);
    s.batch_last_seq = last;
    StartCommit(s);
    return;
  }
  s.durable_seq = s.commit_last_seq;
  uint64_t durable_end = s.commit_offset + s.commit_buf.size();
  s.server->pack_bytes += durable_end - s.pack_durable_end;  // counted once, also after a short write
  s.pack_durable_end = durable_end;
  s.commit_buf.clear();
  if (!s.ch->closing()) {
    wire::Ack ack{s.durable_seq};
    SendFrame(s, wire::MsgType::kAck, ack.Encode());
  }
  Status st = MaybeCommitPoint(s);
  if (!st.ok() && !s.ch->closing()) FailStore(s, st);
}

void Server::FailQuota(Session& s, const std::string& what) {
  // Like a full store, for this server only: the agent backs off keeping its dirty state, and
  // finishes once retention frees space or the operator raises the quota.
  Fail(s, wire::ErrorCode::kQuotaExceeded,
       NoSpace("quota exceeded: server '" + s.server_id + "': " + what +
               "; nothing acknowledged is lost (the agent waits): let retention free space or raise the quota"));
}

Server::PackUsage Server::CountPacks(const store::ServerStore& store) {
  PackUsage u;
  auto names = ListDir(store.dir() + "/packs");
  if (!names.ok()) return u;  // no packs directory yet: nothing stored
  for (const std::string& n : *names) {
    struct stat st{};
    if (stat((store.dir() + "/packs/" + n).c_str(), &st) != 0) continue;
    u.bytes += static_cast<uint64_t>(st.st_size);
    ++u.count;
  }
  return u;
}

void Server::FailStore(Session& s, const Status& st) {
  bool full = st.code() == Code::kNoSpace;
  Fail(s, full ? wire::ErrorCode::kStoreFull : wire::ErrorCode::kStoreError,
       st.Annotate(full ? "staging store is full" : "staging cannot write its store"));
}

Status Server::MaybeCommitPoint(Session& s) {
  if (!s.end || !s.point || s.committing) return Status::Ok();
  if (s.end->last_seq > s.durable_seq) return Status::Ok();  // records still on their way to disk
  if (s.server->jobs > 0) return Status::Ok();  // Service tries again once the server's job is done
  struct Commit {
    store::PointInfo info;
    wire::BeginPoint begin;
    std::vector<store::NewExtent> extents;
    std::vector<VolumeSeal> seals;
    uint64_t key_id = 0;
  };
  auto c = std::make_shared<Commit>();
  c->begin = *s.point;
  c->extents = std::move(s.extents);  // the job's now; a failed commit refuses the session anyway
  for (auto& seal : s.seals) c->seals.push_back(std::move(*seal));  // all present: OnEndPoint checked
  c->key_id = s.key_id;
  store::PointInfo& info = c->info;
  info.id = s.point->point_id;
  info.time_ns = s.point->time_ns;
  info.flags = s.end->flags & store::kPointConsistent;  // known only at the end (freeze)
  info.volume_count = static_cast<uint32_t>(s.point->volume_sizes.size());
  info.bytes_added = s.point_bytes;
  store::ServerStore* store = s.server->store.get();
  ServerState* st = s.server;
  const uint64_t session_id = s.id;
  s.committing = true;
  bool posted = PostJob(*st, [this, c, store, st, session_id, server_id = s.server_id]() -> StoreWorker::Done {
    // Worker thread: load the base, merge, validate, write index then manifest.
    auto commit = [&]() -> Status {
      std::optional<store::PointIndex> base;
      if (c->begin.base_point != 0) {
        auto loaded = store->LoadIndex(store->manifest().points.back());
        if (!loaded.ok()) return loaded.status().Annotate("cannot load the base of an incremental point");
        base = std::move(loaded).value();
      }
      store::PointIndex idx = store::BuildPointIndex(c->info.id, c->begin.volume_sizes, base ? &*base : nullptr, c->extents);
      base.reset();
      idx.seals = std::move(c->seals);
      Status valid = idx.Validate();
      if (!valid.ok()) return ProtocolError("point " + std::to_string(idx.point_id) + ": " + valid.message());
      return store->CommitPoint(c->info, idx, c->key_id);
    };
    Status status = commit();
    return [this, c, st, session_id, server_id, status]() {
      --st->jobs;
      if (status.ok())
        Log(kProg, "server '" + server_id + "': point " + std::to_string(c->info.id) + " committed (" +
                       std::to_string(c->extents.size()) + " records, " + std::to_string(c->info.bytes_added) + " bytes)");
      OnPointCommitted(session_id, *st, status);
    };
  });
  if (!posted) {
    s.committing = false;
    s.extents = std::move(c->extents);
    return Unavailable("the staging's store worker is saturated; retry later");
  }
  return Status::Ok();
}

void Server::OnPointCommitted(uint64_t session_id, ServerState& st, const Status& status) {
  auto it = sessions_.find(session_id);
  assert(it != sessions_.end());  // a session of a server with a job in flight is never erased
  Session& s = *it->second;
  s.committing = false;
  if (!status.ok()) {
    // Nothing was acknowledged: the agent sends the point again once the cause is gone.
    if (!s.ch->closing()) {
      if (status.code() == Code::kProtocol) Fail(s, wire::ErrorCode::kProtocol, status);
      else FailStore(s, status);
    }
    s.point.reset();
    s.end.reset();
    return;
  }
  wire::PointAck pa{s.point->point_id};
  s.point.reset();
  s.end.reset();
  s.extents.clear();
  s.extent_seqs.clear();
  s.seals.clear();
  s.session_records = 0;
  if (!s.ch->closing()) SendFrame(s, wire::MsgType::kPointAck, pa.Encode());
  ApplyRetention(s.server_id, st, false);
}

std::vector<uint32_t> Server::PinnedPacks(const ServerState& st) const {
  std::set<uint32_t> pinned;
  for (const auto& [id, s] : sessions_) {
    if (s->server != &st) continue;
    if (s->pack_id != 0) pinned.insert(s->pack_id);
    for (const store::NewExtent& x : s->extents) pinned.insert(x.entry.pack);
  }
  if (st.pending)
    for (const store::NewExtent& x : st.pending->extents) pinned.insert(x.entry.pack);
  return {pinned.begin(), pinned.end()};
}

void Server::ApplyRetention(const std::string& server_id, ServerState& st, bool startup) {
  if (startup) {  // before any session: on this thread
    Clock& clock = opts_.clock ? *opts_.clock : system_clock_;
    RetentionRun run = EnforceRetention(*st.store, opts_.retention, clock.NowUtcNs(), PinnedPacks(st), true,
                                        &st.expired_bytes);
    if (run.compacted) SetPackUsage(st, CountPacks(*st.store));
    LogRetention(server_id, st, run);
    return;
  }
  PostRetention(server_id, st, false, false);
}

void Server::PostRetention(const std::string& server_id, ServerState& st, bool compact_fully, bool merge_small_packs) {
  Clock& clock = opts_.clock ? *opts_.clock : system_clock_;
  const uint64_t now_ns = clock.NowUtcNs();
  std::vector<uint32_t> pinned = PinnedPacks(st);
  store::ServerStore* store = st.store.get();
  ServerState* state = &st;
  uint64_t expired_bytes = st.expired_bytes;
  bool posted = PostJob(st, [this, store, state, server_id, now_ns, pinned, expired_bytes, compact_fully,
                             merge_small_packs]() mutable -> StoreWorker::Done {
    RetentionRun run =
        EnforceRetention(*store, opts_.retention, now_ns, pinned, compact_fully, &expired_bytes, merge_small_packs);
    // A recount after a compaction replaces the running figure; it may miss what a commit of
    // this server's open pack adds meanwhile, until the next recount (the quota is that loose).
    std::optional<PackUsage> usage;
    if (run.compacted) usage = CountPacks(*store);
    return [this, state, server_id, expired_bytes, usage, run = std::move(run)]() {
      --state->jobs;
      state->expired_bytes = expired_bytes;
      if (usage) SetPackUsage(*state, *usage);
      LogRetention(server_id, *state, run);
    };
  });
  if (!posted) Log(kProg, "server '" + server_id + "': retention skipped (the store worker is saturated); tried after the next point");
}

void Server::LogRetention(const std::string& server_id, const ServerState& st, const RetentionRun& run) {
  const std::string who = "server '" + server_id + "': ";
  if (!run.expired.empty()) {
    std::string ids;
    for (size_t i = 0; i < run.expired.size() && i < 8; ++i) {
      if (i) ids += ',';  // appended apart: GCC 12's -Wrestrict misfires on `"," + std::string&&`
      ids += std::to_string(run.expired[i]);
    }
    if (run.expired.size() > 8) ids += ",...";
    Log(kProg, who + "expired " + std::to_string(run.expired.size()) + " point(s) [" + ids + "] by retention " +
                   opts_.retention.ToString() + "; " + std::to_string(st.store->manifest().points.size()) +
                   " retained");
  }
  const auto& c = run.compaction;
  if (c.packs_rewritten + c.packs_deleted > 0)
    Log(kProg, who + "compacted " + std::to_string(c.packs_rewritten) + " pack(s), deleted " +
                   std::to_string(c.packs_deleted) + " dead pack(s): copied " + std::to_string(c.bytes_copied) +
                   " bytes in " + std::to_string(c.records_copied) + " records, reclaimed " +
                   std::to_string(c.bytes_reclaimed) + " bytes, rewrote " + std::to_string(c.indexes_rewritten) +
                   " index(es) in " + std::to_string(run.compaction_ms) + " ms");
  if (!run.status.ok())
    Log(kProg, who + "retention: " + run.status.message() +
                   " (nothing retained is lost; expiry or compaction is retried after the next point)");
}

}  // namespace blockrep::staging
