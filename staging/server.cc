#include "server.h"

#include <fcntl.h>
#include <malloc.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "blockrep/base/check.h"
#include "blockrep/base/checksum.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/store/pending.h"
#include "blockrep/crypto/record.h"
#include "session.h"

namespace blockrep::staging {
namespace {
constexpr uint64_t kBindRetryForNs = 5'000'000'000ull;  // a port in use is waited for this long
constexpr uint64_t kBindRetryEveryNs = 100'000'000ull;
static_assert(kBindRetryForNs % kBindRetryEveryNs == 0);
}  // namespace

Server::Server(Options opts) : opts_(std::move(opts)) {
  if (opts_.listen_fd >= 0) listen_fd_ = UniqueFd(opts_.listen_fd);  // ours from now on, whatever Start says
}
Server::~Server() = default;

Status Server::Start() {
  BR_RETURN_IF_ERROR(store::InitStoreRoot(opts_.store_dir, true, opts_.env));
  if (opts_.env == Env::Default()) {  // another Env (the simulation's, in memory) has no other process to keep out
    std::string lock_path = opts_.store_dir + "/LOCK";
    lock_fd_ = UniqueFd(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock_fd_.valid()) return ErrnoStatus("open " + lock_path, errno);
    if (flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0)
      return Unavailable("store " + opts_.store_dir +
                         " is in use by another blockrep-staging (stop it, or use another --store)");
  }
  // TLS files first: a mistake there is reported before the store is touched (retention runs below).
  BR_ASSIGN_OR_RETURN(tls_, TlsContext::Create(opts_.tls, true));
  if (opts_.bucket) {
    // The bucket is the store of record: the cache takes its chains before anything is served.
    BR_RETURN_IF_ERROR(opts_.bucket->SyncCache(opts_.store_dir, [](const std::string& line) { Log(kProg, line); }));
    // From here the stores see every published pack, its bytes in the cache or in the bucket.
    opts_.env = opts_.bucket->cache();
  }
  BR_ASSIGN_OR_RETURN(auto servers, store::ListServers(opts_.store_dir, opts_.env));
  for (const std::string& id : servers) {
    auto st = store::ServerStore::Open(opts_.store_dir, id, false, opts_.env);
    if (!st.ok() && st.status().code() == Code::kNotFound) {
      // A crash cut the server's first HELLO short, before its empty manifest was written: it has
      // never had a point. Its agent's next HELLO completes the directory.
      Log(kProg, "server '" + id + "': its store was being created when the staging stopped (no MANIFEST yet); "
                 "it is completed at its agent's next HELLO");
      continue;
    }
    if (!st.ok()) return st.status().Annotate("cannot open the store of server '" + id + "'");
    BR_RETURN_IF_ERROR((*st)->RemoveOrphans());
    BR_ASSIGN_OR_RETURN(ServerMirror * mirror, AttachBucket(**st, id));
    ServerState& state = servers_[id];
    state.store = std::move(st).value();
    state.mirror = mirror;
    LoadPending(state, id);
    // With leases, a chain is written only by its lease holder: retention runs after its commits.
    if (mirror == nullptr || !mirror->leased()) ApplyRetention(id, state, true);
    SetPackUsage(state, CountPacks(*state.store));
  }
  BR_ASSIGN_OR_RETURN(ring_, opts_.make_ring ? opts_.make_ring(1024) : Ring::Create(1024));
  BR_ASSIGN_OR_RETURN(worker_, StoreWorker::Create(opts_.store_threads));
  BR_RETURN_IF_ERROR(PostWake());

  if (opts_.listen_fd < 0) {
    int fd = socket(opts_.listen.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ErrnoStatus("socket", errno);
    listen_fd_ = UniqueFd(fd);
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) return ErrnoStatus("setsockopt SO_REUSEADDR", errno);
    // A staging killed a moment ago may still hold the port: the kernel tears its io_uring down
    // after the process is gone, and the accept pending there keeps the listening socket open
    // meanwhile (2 of 30 restarts right after kill -9, here). Wait that out, for a bounded time,
    // quietly: a port that stays taken is one error line, saying how long it was waited for.
    const std::string where = opts_.listen.host + ":" + std::to_string(opts_.listen.port);
    for (uint64_t waited_ns = 0;; waited_ns += kBindRetryEveryNs) {
      if (bind(fd, reinterpret_cast<const sockaddr*>(&opts_.listen.addr), opts_.listen.addr_len) == 0) break;
      if (errno != EADDRINUSE || waited_ns >= kBindRetryForNs) {
        const bool in_use = errno == EADDRINUSE;
        Status st = ErrnoStatus("bind " + where, errno);
        return Status(st.code(), st.message() + (in_use ? " (waited " + std::to_string(kBindRetryForNs / 1000000000) +
                                                              " s): another program listens there; stop it or choose another --listen"
                                                        : "; check --listen"));
      }
      SleepNs(kBindRetryEveryNs);
    }
    if (listen(fd, 1024) != 0) return ErrnoStatus("listen", errno);
    sockaddr_storage bound{};
    socklen_t len = sizeof(bound);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    bound_port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                    : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  Log(kProg, "listening on " + opts_.listen.host + ":" + std::to_string(bound_port_) + ", store " +
                 (opts_.bucket ? opts_.bucket->url() + " (cache " + opts_.store_dir + ")" : opts_.store_dir) + ", " + std::to_string(servers_.size()) + " server(s) on record, retention " +
                 opts_.retention.ToString());
  if (opts_.metrics) {
    BR_ASSIGN_OR_RETURN(metrics_, metrics::HttpEndpoint::Start(*opts_.metrics, "--metrics"));
    Log(kProg, "metrics at http://" + opts_.metrics->host + ":" + std::to_string(metrics_->port()) + "/metrics");
    PublishMetrics(true);
  }
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
  ++figures_.preauth_evicted;
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
  BR_CHECK_MSG(st.jobs == 0, "one job of a server at a time: its sessions wait while it runs");
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
  bool tcp = peer.ss_family == AF_INET || peer.ss_family == AF_INET6;  // else the simulation's Unix socket
  if (tcp && setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
    Log(kProg, "connection from " + std::string(host) + " closed: setsockopt TCP_NODELAY: " + std::strerror(errno));
    close(res);
    return;
  }
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
    if (op == Channel::kOpRecv && res > 0) {
      s.last_heard_ns = MonotonicNs();
      if (s.server != nullptr && !s.reader) s.server->figures.last_heard_utc_ns = NowUtcNs();
    }
    Status st = s.ch->OnCompletion(op, res);
    if (st.ok() || s.draining) return;  // draining: the peer is gone already, DrainDone closes
    if (s.failed) {
      Close(s);  // the agent read our ERROR and hung up
    } else if (!s.ch->closing()) {
      std::string line = "session " + std::to_string(s.id) + " (" + (s.server_id.empty() ? s.peer : s.server_id) +
                         (st.code() == Code::kUnavailable ? ") closed: " : "): ") + st.message();
      if (st.code() == Code::kUnavailable && s.hello_done && s.point && !s.reader && !s.fleet_view) {
        // Frames that arrived before the close still count: an agent killed right after its
        // END_POINT has sent a whole point, which is committed as if it had stayed (its next
        // session finds the chain one point further). They may take more than this turn: the
        // session drains them first (Service, DrainDone).
        Log(kProg, line + "; handling what it sent before");
        s.draining = true;
        s.ch->StopSending();
        return;
      }
      HandleFrames(s).IgnoreError();  // a protocol error here only adds to the close below
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
  if (op == kOpPackWrite || op == kOpPackFsync || op == kOpKeepWrite || op == kOpKeepSync) {
    using Op = store::PackAppender::Op;
    Op which = op == kOpPackWrite ? Op::kWrite : op == kOpPackFsync ? Op::kFsync : op == kOpKeepWrite ? Op::kFollowWrite : Op::kFollowSync;
    auto done = s.pack.OnCompletion(which, res);
    if (done != store::PackAppender::Done::kNo) OnCommitDone(s, done);
    return;
  }
  Log(kProg, "completion with unknown op " + std::to_string(op));
}

Status Server::Run(const volatile std::sig_atomic_t* stop) {
  for (;;) {
    BR_ASSIGN_OR_RETURN(bool more, Turn(stop, true));
    if (!more) break;
  }
  // Leases given back: an agent that moves to another frontend need not wait for them to run out.
  for (auto& [id, st] : servers_)
    if (st.mirror != nullptr && st.mirror->LeaseHeld()) st.mirror->ReleaseLease();
  Log(kProg, "stopped");
  return Status::Ok();
}

void Server::ShareMemory() {
  size_t sending = 0;
  for (const auto& [id, s] : sessions_)
    if (s->point && !s->reader) ++sending;
  sending = std::max<size_t>(sending, 1);
  batch_bytes_max_ = std::clamp(kBatchBytesBudget / sending, kBatchBytesMin, kBatchBytesMax);
  inbox_bytes_max_ = std::clamp(kInboxBytesBudget / sending, kInboxBytesMin, kInboxBytesMax);
  const size_t recv_chunk = std::clamp(kRecvBytesBudget / sending, kRecvBytesMin, Channel::kRecvChunk);
  const uint64_t now = MonotonicNs();
  bool released = false;
  for (auto& [id, sp] : sessions_) {
    Session& s = *sp;
    if (s.reader || s.fleet_view || !s.hello_done || s.ch->closing()) continue;
    s.ch->set_inbox_max(inbox_bytes_max_);
    s.ch->set_recv_chunk(recv_chunk);
    s.pack.set_batch_reserve(batch_bytes_max_ + kBatchReserveExtraBytes);
    if (s.trimmed || now - s.last_record_ns < kIdleTrimNs || s.pack.inflight() || s.pack.batch_bytes() != 0 ||
        !s.ch->inbox().empty())
      continue;
    s.pack.ReleaseBuffers();
    s.ch->ReleaseBuffers();
    s.last_index.reset();  // a cache (null while lent to a job): loaded again when asked
    s.trimmed = true;
    released = true;
  }
  // Freed buffers (trimmed or closed sessions) go back to the system, not only to malloc's free
  // lists: at most once a second.
  memory_freed_ = memory_freed_ || released;
  if (memory_freed_ && now - trimmed_ns_ > 1000000000ull) {
    malloc_trim(0);
    trimmed_ns_ = now;
    memory_freed_ = false;
  }
}

Result<bool> Server::Turn(const volatile std::sig_atomic_t* stop, bool wait) {
  if (*stop && !stopping_) {
    stopping_ = true;
    Log(kProg, "stopping: draining " + std::to_string(sessions_.size()) + " session(s)");
    shutdown(listen_fd_.get(), SHUT_RDWR);
  }
  ShareMemory();
  RenewLeases();
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session& s = *it->second;
    Service(s);
    // On stop, a session finishes the point it is committing, then closes.
    if (stopping_ && !s.pack.inflight() && !s.end) Close(s);
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
    if (s.ch->closing() && s.ch->idle() && !s.pack.inflight() && !s.read_inflight &&
        !(s.server != nullptr && s.server->jobs > 0)) {
      KeepInterruptedPoint(s);
      if (s.server != nullptr && s.server->active && !s.reader) s.server->active = false;
      it = sessions_.erase(it);
      memory_freed_ = true;
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
    if (ring_->inflight() == 0) return false;
  }
  if (!stopping_) BR_RETURN_IF_ERROR(PostAccept());
  if (!stopping_ || worker_->outstanding() > 0) BR_RETURN_IF_ERROR(PostWake());
  if (opts_.reload != nullptr && *opts_.reload) {
    *opts_.reload = 0;
    ReloadTls();
  }
  PublishMetrics(false);
  bool more = more_work_;
  more_work_ = false;
  auto n = ring_->Reap([this](uint64_t ud, int res, uint32_t) { OnCompletion(ud, res); }, wait && !more, 500);
  if (!n.ok()) return n.status();
  return true;
}

void Server::Service(Session& s) {
  if (s.ch->closing()) return;
  Status st = HandleFrames(s);
  if (!st.ok()) {
    Fail(s, st.code() == Code::kNoSpace ? wire::ErrorCode::kStoreFull : wire::ErrorCode::kProtocol, st);
    return;
  }
  // Group commit: what gathered while the last write + fsync ran goes out now (or, without room in
  // the ring, on a later turn), with the live PENDING file's frame of it when the point has one.
  if (Status kept = PrepareLiveKeep(s); !kept.ok()) {
    FailStore(s, kept);
    return;
  }
  std::optional<store::PackAppender::Follower> keep = LiveKeepFrame(s);
  if (s.pack.StartCommit(*ring_, UserData(s.id, kOpPackWrite), UserData(s.id, kOpPackFsync), keep ? &*keep : nullptr))
    s.commit_started_ns = MonotonicNs();
  if (s.end && !s.committing && !s.ch->closing()) {  // a commit that waited for its server's job
    Status commit = MaybeCommitPoint(s);
    if (!commit.ok()) FailStore(s, commit);
  }
  if (s.failed) s.ch->Consume(s.ch->inbox().size());  // refused: keep reading only to see the hang-up
  if (s.draining && DrainDone(s)) {
    Log(kProg, "session " + std::to_string(s.id) + " (" + s.server_id + "): done with what the agent sent before it hung up");
    Close(s);
    return;
  }
  st = s.ch->Pump();  // draining: receives only, until the peer's close
  if (!st.ok()) {
    Log(kProg, "session " + std::to_string(s.id) + " (" + s.peer + "): " + st.message());
    Close(s);
  }
}

Status Server::HandleFrames(Session& s) {
  if (!s.ch->handshake_done()) return Status::Ok();
  const size_t unsent_max = s.reader ? kReaderUnsentMax : kAgentUnsentMax;
  const uint64_t start_ns = MonotonicNs();
  for (unsigned n = 0; !s.failed && s.pack.batch_bytes() < batch_bytes_max_ && (s.draining || s.ch->unsent_bytes() <= unsent_max); ++n) {
    // While a job of its server runs (a commit, a query), the session waits; the job's
    // completion wakes the loop, which services it again.
    if (s.server != nullptr && s.server->jobs > 0) break;
    if (s.read_inflight) break;  // OnPackRead answers it, then the next request is taken
    BR_ASSIGN_OR_RETURN(auto frame, wire::ParseFrame(s.ch->inbox()));
    if (!frame) {
      s.ch->NeedWhole(wire::FrameBytes(s.ch->inbox()));  // a frame larger than the inbox's share
      break;
    }
    if (n == kFramesPerTurnMax || (n > 0 && MonotonicNs() - start_ns > kTurnBudgetNs)) {
      more_work_ = true;  // the loop comes back without waiting for a completion
      break;
    }
    // A batch holds at most its share, or one record that is larger: a full sync's records are
    // up to 8 times a 64-agent share, and letting each batch pass its share by one of them would
    // double the staging's batch memory (P6).
    if (frame->type == wire::MsgType::kRecord && s.pack.batch_bytes() > 0 &&
        s.pack.batch_bytes() + frame->total_size > batch_bytes_max_)
      break;
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
  if (s.fleet_view) {
    if (f.type == MsgType::kFleetRequest) return OnFleetRequest(s, f.payload);
    return ProtocolError("unexpected message type " + std::to_string(static_cast<int>(f.type)) +
                         " from an operator (it may only ask for the fleet)");
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
    case MsgType::kAgentReport: return OnAgentReport(s, f.payload);
    default:
      return ProtocolError("unexpected message type " + std::to_string(static_cast<int>(f.type)) +
                           " from an agent");
  }
}

bool Server::DrainDone(const Session& s) const {
  if (s.failed) return true;
  if (s.committing || s.pack.inflight() || s.pack.batch_bytes() > 0) return false;
  if (s.server != nullptr && s.server->jobs > 0) return false;  // the point's commit may wait for it
  if (s.end) return false;  // Service starts its commit (or a failed write refuses the session)
  if (!s.ch->receive_ended()) return false;  // a send failed first: what the socket holds still counts
  Result<std::optional<wire::Frame>> next = wire::ParseFrame(s.ch->inbox());
  return !next.ok() || !next->has_value();  // a frame cut by the close is never handled
}

void Server::SendFrame(Session& s, wire::MsgType type, const Bytes& payload) {
  if (s.draining) return;  // the peer is gone
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
  size_t code_index = static_cast<size_t>(code);
  if (code_index < figures_.refused.size()) ++figures_.refused[code_index];
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

Result<ServerMirror*> Server::AttachBucket(store::ServerStore& store, const std::string& server_id) {
  if (!opts_.bucket) return static_cast<ServerMirror*>(nullptr);
  BR_ASSIGN_OR_RETURN(auto mirror, opts_.bucket->TakeMirror(server_id));
  ServerMirror* m = mirror.get();
  store.set_publisher(std::move(mirror));
  return m;
}

void Server::Close(Session& s) {
  if (s.ch->closing()) return;
  // An open point is kept until the session's last commit has completed: then we know which of
  // its records are durable (KeepInterruptedPoint).
  s.end.reset();
  s.ch->Shutdown();
}

}  // namespace blockrep::staging
