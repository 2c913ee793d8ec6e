#include "agent.h"

#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <random>
#include <tuple>

#include "blockrep/fingerprint.h"
#include "blockrep/fs.h"
#include "blockrep/store.h"
#include "fingerprint_cache.h"
#include "blockrep/keyfile.h"

namespace blockrep::agent {
namespace {

constexpr const char* kProg = "blockrep-agent";
constexpr size_t kReadBytes = 1u << 20;         // one io_uring read
constexpr size_t kRecordBytes = 64u << 10;      // one record's plaintext extent
constexpr unsigned kReadsMax = 8;               // reads in flight (8 MiB of buffers)
constexpr uint64_t kWindowBytesMax = 32u << 20; // unacknowledged record bytes
// Ciphertext queued for the socket, counting a full kReadBytes for each read in flight (its records
// are at most the read plus a few KiB of headers, tags and TLS framing: incompressible extents are
// stored raw, never expanded). Without that, 16 reads completing together pushed the queue to
// 24 MiB and the two buffers that hold it (TLS output, socket send) to 83 MiB at peak.
constexpr size_t kUnsentBytesMax = 8u << 20;
// While filesystems are frozen, the last blocks are read and queued at once, up to this much: the
// writers wait on the disk, not on the link, the staging's window or --bandwidth-limit (the
// limiter's debt is paid after the thaw). Past it (a final take this large is rare: it is what was
// written since the last poll), reads wait on the link again and the 5 s watchdog bounds the freeze.
constexpr size_t kFrozenUnsentBytesMax = 64u << 20;
static_assert(kFrozenUnsentBytesMax >= kUnsentBytesMax);
constexpr size_t kInboxBytesMax = 1u << 20;     // staging sends small frames only
constexpr uint8_t kOpRead = 3;
constexpr uint64_t kChannelId = 1;
constexpr uint64_t kReadIdBase = 16;
// A freeze longer than this is cut short by the watchdog; the point is then not consistent.
// Fingerprints a rescan holds (8 bytes per 4 KiB: 32 GiB of volumes); larger sets read in full.
constexpr uint64_t kRescanFingerprintBytesMax = 64u << 20;

}  // namespace

struct Agent::Read {
  AlignedBuffer buf{kReadBytes};
  bool busy = false;
  size_t volume = 0;
  uint64_t offset = 0;
  size_t want = 0;  // bytes of the volume this read covers
  size_t got = 0;
};

Agent::Agent(Options opts) : opts_(std::move(opts)) { bucket_.SetRate(opts_.bandwidth_bps); }
Agent::~Agent() { Teardown(); }

Status Agent::Prepare() {
  BR_RETURN_IF_ERROR(wire::ValidateServerId(opts_.server_id));
  {
    BR_ASSIGN_OR_RETURN(std::vector<DataKey> keys, LoadDataKeys(opts_.key_file));
    key_ = keys.back();  // the current key seals; older ones only tell the staging the chain is ours
    for (size_t i = 0; i + 1 < keys.size(); ++i) retired_key_ids_.push_back(keys[i].key_id);
    for (DataKey& k : keys) OPENSSL_cleanse(k.bytes.data(), k.bytes.size());
  }
  if (opts_.volumes.empty()) return InvalidArgument("no --volume given: name at least one device or image");
  if (opts_.volumes.size() > wire::kMaxVolumes)
    return InvalidArgument("at most " + std::to_string(wire::kMaxVolumes) + " volumes per server");
  for (const std::string& path : opts_.volumes) {
    BR_ASSIGN_OR_RETURN(auto v, Volume::Open(path));
    volumes_.push_back(std::move(v));
  }
  if (!opts_.state_dir.empty()) BR_RETURN_IF_ERROR(MakeDirs(opts_.state_dir, 0700));
  BR_ASSIGN_OR_RETURN(auto fp, BlockFingerprinter::Create(key_));
  fingerprinter_ = fp;
  BR_ASSIGN_OR_RETURN(seal_keys_, SealKeys::Create(key_, opts_.server_id));
  point_seal_ = std::make_unique<PointSeal>(seal_keys_.get());
  BR_ASSIGN_OR_RETURN(tls_, TlsContext::Create(opts_.tls, false));
  BR_ASSIGN_OR_RETURN(ring_, Ring::Create(64));
  for (unsigned i = 0; i < kReadsMax; ++i) reads_.push_back(std::make_unique<Read>());
  // Reported with the point (one line), so that a failing run prints only its error.
  BR_RETURN_IF_ERROR(OpenTracker());
  std::vector<std::string> paths;
  for (const auto& v : volumes_) paths.push_back(v->path);
  freeze_.Plan(tracker_ != nullptr, paths, opts_.pre_hook, opts_.post_hook);
  BR_RETURN_IF_ERROR(chain_.Load(opts_.state_dir, opts_.server_id));
  if (tracker_) chain_.RaiseTo(tracker_->synced_point());
  return Status::Ok();
}

Status Agent::OpenTracker() {
  if (opts_.tracker == "scan") {
    tracker_note_ = "scan (--tracker scan): every point reads whole volumes and ships what differs";
    return Status::Ok();
  }
  std::vector<TrackedVolume> tracked;
  Status why;
  for (const auto& v : volumes_) {
    auto t = DescribeBlockDevice(v->path);
    if (!t.ok()) {
      why = t.status();
      break;
    }
    tracked.push_back(*t);
  }
  if (why.ok()) {
    auto t = EbpfTracker::Open(opts_.server_id, tracked);
    if (t.ok()) {
      tracker_ = std::move(t).value();
      tracker_note_ = std::string("ebpf (") + (tracker_->resumed() ? "pinned state reused" : "loaded and pinned") +
                      " in " + EbpfTracker::PinDir(opts_.server_id) + ")";
      return Status::Ok();
    }
    why = t.status();
  }
  if (opts_.tracker == "ebpf") return why.Annotate("--tracker ebpf");
  tracker_note_ = "scan: eBPF unavailable (" + why.message() + "); every point reads whole volumes and ships what differs";
  return Status::Ok();
}

void Agent::PlanPoint(uint64_t last_point) {
  full_point_ = true;
  work_.assign(volumes_.size(), {});
  if (KeyRotated()) {
    summary_.mode_reason = "the data key was rotated: the chain's last point is sealed under key " +
                           KeyIdHex(hello_ok_->chain_key_id) + ", this point under key " +
                           KeyIdHex(key_.key_id) + " (older points stay restorable with the same key file)";
  } else if (chain_.rescan_due()) {
    summary_.mode_reason = "ALARM: the staging's chain is not the one this agent saw acknowledged";
  } else if (!tracker_) {
    summary_.mode_reason = "no change tracker";
  } else if (tracker_->synced_point() == 0) {
    summary_.mode_reason = tracker_->resumed() ? "no point synced since tracking began" : "tracking just started";
  } else if (last_point < tracker_->synced_point()) {
    summary_.mode_reason = "the staging's chain (point " + std::to_string(last_point) +
                           ") is behind the tracker (point " + std::to_string(tracker_->synced_point()) + ")";
  } else if (last_point > tracker_->synced_point() + 1 ||
             (last_point == tracker_->synced_point() + 1 &&
              !(hello_ok_ && tracker_->SentPoint(hello_ok_->last_time_ns)))) {
    // Another agent of this server-id (a failover host replicating the recovered volume) moved
    // the chain on: the bitmap knows what changed here since point S, not what differs from L.
    summary_.mode_reason = "the staging's chain moved on from point " + std::to_string(tracker_->synced_point()) +
                           " to " + std::to_string(last_point) + " without this tracker (another agent of this "
                           "server-id, after a failover?)";
  } else {
    full_point_ = false;
    for (size_t v = 0; v < volumes_.size(); ++v) {
      if (tracker_->overflowed(v)) {
        full_point_ = true;
        summary_.mode_reason = "a request on " + volumes_[v]->path + " was too large to track";
        break;
      }
    }
  }
  cur_volume_ = cur_run_ = 0;
  cur_offset_ = 0;
  work_bytes_left_ = 0;
  status_.Restart(MonotonicNs());
  rescan_ = false;
  if (full_point_ && last_point != 0 && !KeyRotated()) {
    // The staging holds a chain: read everything, but ship only blocks whose keyed fingerprint
    // differs from its last point (an incremental point on it). (Not after a key rotation: the
    // staging's fingerprints are keyed with the old key, so every block would differ anyway.)
    uint64_t fps_bytes = 0;
    for (const auto& v : volumes_) fps_bytes += (v->size_bytes / kFingerprintBlockBytes + 1) * 8;
    if (fps_bytes <= kRescanFingerprintBytesMax) {
      rescan_ = true;
      full_point_ = false;
      summary_.mode_reason = "rescan against point " + std::to_string(last_point) + " (" + summary_.mode_reason + ")";
    } else {
      summary_.mode_reason += "; volumes too large to rescan in memory";
    }
  }
  sweeping_ = full_point_;
  if (full_point_ || rescan_) {
    // Clear before read: what changes from here on is caught for the next point. Until this
    // point is acknowledged the tracker is synced to nothing, so an agent killed meanwhile reads
    // everything again rather than resuming a point whose reads no bitmap recorded.
    if (tracker_) {
      tracker_->ClearDirty();
      tracker_->MarkSynced(0);
    }
    for (size_t v = 0; v < volumes_.size(); ++v) {
      work_[v] = {Extent{0, volumes_[v]->size_bytes}};
      work_bytes_left_ += volumes_[v]->size_bytes;
    }
    return;
  }
  summary_.mode_reason = "changes tracked by eBPF since point " + std::to_string(tracker_->synced_point());
  PollTracker(true, false);
}

bool Agent::PollTracker(bool with_inflight, bool final_take) {
  if (!tracker_) return false;
  sweeping_ = false;
  uint64_t now = MonotonicNs();
  uint64_t found = 0;
  // The end of a point must hold every completed write, reported or not.
  tracker_->MarkPendingWrites(final_take);
  for (size_t v = 0; v < volumes_.size(); ++v) {
    work_[v] = tracker_->TakeDirty(v, with_inflight);
    if (final_take && tracker_->overflowed(v)) {
      // A gap in tracking during this point (a request too large to mark, or a run of our
      // program the kernel skipped): only reading everything makes the point whole. Zero
      // extents go as zero records, since the base may hold data there.
      Log(kProg, "tracking of " + volumes_[v]->path + " had a gap during point " + std::to_string(point_id_) +
                     "; reading the whole volume before ending the point");
      work_[v] = {Extent{0, volumes_[v]->size_bytes}};
    }
    for (const Extent& e : work_[v]) found += e.length;
  }
  cur_volume_ = cur_run_ = 0;
  cur_offset_ = 0;
  work_bytes_left_ = found;
  status_.NoteTake(now, found);  // lag: the batch is durable once the ACK passes its last record
  return found != 0;
}

Status Agent::Connect() {
  const HostPort& hp = opts_.staging;
  std::string where = hp.host + ":" + std::to_string(hp.port);
  int fd = socket(hp.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  UniqueFd owned(fd);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));  // bounds connect()
  if (connect(fd, reinterpret_cast<const sockaddr*>(&hp.addr), hp.addr_len) != 0) {
    int err = errno;
    Status st = ErrnoStatus("cannot connect to staging " + where, err == EINPROGRESS ? ETIMEDOUT : err);
    return Status(st.code(), st.message() + " (is blockrep-staging running there? check --staging)");
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  BR_ASSIGN_OR_RETURN(auto tls, TlsSession::Create(tls_.get(), hp.host));
  ch_ = std::make_unique<Channel>(ring_.get(), owned.Release(), std::move(tls), kChannelId,
                                  kInboxBytesMax);
  ch_->ReserveSend(kUnsentBytesMax + kReadBytes);
  return Status::Ok();
}

Status Agent::SendFrame(wire::MsgType type, const Bytes& payload) {
  Bytes frame;
  wire::AppendFrame(&frame, type, payload);
  return ch_->Send(frame);
}

Status Agent::HandleInbox() {
  for (;;) {
    auto frame = wire::ParseFrame(ch_->inbox());
    if (!frame.ok()) return frame.status().Annotate("staging sent a malformed frame");
    if (!frame->has_value()) return Status::Ok();
    const wire::Frame& f = **frame;
    switch (f.type) {
      case wire::MsgType::kHelloOk: {
        BR_ASSIGN_OR_RETURN(auto ok, wire::HelloOk::Decode(f.payload));
        hello_ok_ = ok;
        break;
      }
      case wire::MsgType::kError: {
        BR_ASSIGN_OR_RETURN(auto e, wire::ErrorMsg::Decode(f.payload));
        if (e.code == wire::ErrorCode::kAtCapacity) refused_retryable_ = true;
        Code code = e.code == wire::ErrorCode::kStoreFull || e.code == wire::ErrorCode::kQuotaExceeded ? Code::kNoSpace
                    : e.code == wire::ErrorCode::kBusy || e.code == wire::ErrorCode::kAtCapacity ? Code::kUnavailable
                    : (e.code == wire::ErrorCode::kIdentity || e.code == wire::ErrorCode::kKeyMismatch)
                        ? Code::kPermissionDenied
                        : Code::kProtocol;
        peer_error_ = Status(code, "staging refused: " + e.message);
        break;
      }
      case wire::MsgType::kAck: {
        BR_ASSIGN_OR_RETURN(auto a, wire::Ack::Decode(f.payload));
        BR_RETURN_IF_ERROR(window_.Acked(a.durable_seq));
        status_.NoteAcked(window_.acked(), MonotonicNs());
        break;
      }
      case wire::MsgType::kPong:
        BR_RETURN_IF_ERROR(wire::DecodeEmpty(f.payload, "PONG"));
        break;
      case wire::MsgType::kFingerprints: {
        BR_ASSIGN_OR_RETURN(auto fps, wire::Fingerprints::Decode(f.payload));
        if (!(rescan_ || loading_base_)) return ProtocolError("staging sent fingerprints nobody asked for");
        BR_RETURN_IF_ERROR(base_.OnFingerprints(fps));
        break;
      }
      case wire::MsgType::kBaseSeal: {
        BR_ASSIGN_OR_RETURN(auto b, wire::BaseSeal::Decode(f.payload));
        if (!loading_base_) return ProtocolError("staging sent a seal nobody asked for");
        BR_RETURN_IF_ERROR(base_.OnSeal(std::move(b)));
        break;
      }
      case wire::MsgType::kPointAck: {
        BR_ASSIGN_OR_RETURN(auto p, wire::PointAck::Decode(f.payload));
        if (p.point_id != point_id_)
          return ProtocolError("staging acknowledged point " + std::to_string(p.point_id) +
                               ", expected " + std::to_string(point_id_));
        point_acked_ = p.point_id;
        break;
      }
      default:
        return ProtocolError("unexpected message type " + std::to_string(static_cast<int>(f.type)) +
                             " from the staging");
    }
    ch_->Consume(f.total_size);
  }
}

Status Agent::Step(bool wait, int timeout_ms) {
  uint64_t silent_ns = MonotonicNs() - last_heard_ns_;
  if (silent_ns > wire::kPeerSilentNs)
    return Unavailable("no word from the staging for " + std::to_string(silent_ns / 1000000000) +
                       " s (connection half-open, or the staging is stuck); reconnecting");
  if (hello_ok_ && silent_ns > wire::kPingAfterNs && !ping_outstanding_) {
    BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kPing, Bytes()));
    ping_outstanding_ = true;
  }
  // Wake at least once a second, so silence is noticed whatever the caller waits for.
  if (timeout_ms < 0 || timeout_ms > 1000) timeout_ms = 1000;
  BR_RETURN_IF_ERROR(ch_->Pump());
  Status failure;
  auto n = ring_->Reap(
      [&](uint64_t ud, int res, uint32_t) {
        uint64_t id = UserDataId(ud);
        Status st;
        if (id == kChannelId) {
          if (UserDataOp(ud) == Channel::kOpRecv && res > 0) {
            last_heard_ns_ = MonotonicNs();
            ping_outstanding_ = false;
          }
          st = ch_->OnCompletion(UserDataOp(ud), res);
        } else {
          Read& r = *reads_[id - kReadIdBase];
          --reads_inflight_;
          if (res < 0) {
            st = ErrnoStatus("read volume " + volumes_[r.volume]->path, -res);
          } else if (res == 0 && r.got < r.want) {
            st = DataLoss("volume " + volumes_[r.volume]->path + " ended early at byte " +
                          std::to_string(r.offset + r.got) + " (did it shrink?)");
          } else {
            r.got += static_cast<size_t>(res);
            if (r.got < r.want) {
              // Short read: ask for the rest (O_DIRECT keeps 4 KiB alignment: got is a multiple).
              io_uring_sqe* sqe = ring_->Sqe();
              size_t len = ((r.want - r.got) + 4095) & ~size_t{4095};
              io_uring_prep_read(sqe, volumes_[r.volume]->fd.get(), r.buf.data() + r.got,
                                 static_cast<unsigned>(len), r.offset + r.got);
              io_uring_sqe_set_data64(sqe, UserData(id, kOpRead));
              ++reads_inflight_;
            } else {
              st = ProcessRead(r);
            }
          }
        }
        if (!st.ok() && failure.ok()) failure = st;
      },
      wait, timeout_ms);
  if (!n.ok()) return n.status();
  // The staging's ERROR explains a close better than the close itself.
  Status inbox = HandleInbox();
  if (peer_error_) return *peer_error_;
  BR_RETURN_IF_ERROR(failure);
  return inbox;
}

Status Agent::Handshake(const Signals& sig) {
  last_heard_ns_ = MonotonicNs();  // the connection is new: silence counts from here
  ping_outstanding_ = false;
  while (!ch_->handshake_done()) {
    if (*sig.term) return Unavailable("interrupted");
    Status st = Step(true);
    if (!st.ok() && st.code() == Code::kUnavailable) refused_retryable_ = true;  // cut off mid-handshake
    if (!st.ok()) return st.Annotate("cannot establish TLS with staging " + opts_.staging.host);
  }
  wire::Hello h;
  h.server_id = opts_.server_id;
  h.key_id = key_.key_id;
  h.retired_key_ids = retired_key_ids_;
  BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kHello, h.Encode()));
  while (!hello_ok_) {
    if (*sig.term) return Unavailable("interrupted");
    Status st = Step(true);
    if (!st.ok()) {
      // In TLS 1.3 a rejected client certificate surfaces only at our first read.
      if (st.code() == Code::kUnauthenticated && st.message().find("revoked") != std::string::npos)
        return Unauthenticated("the staging refused our TLS certificate: it was revoked (" + st.message() +
                               "); issue a new one with blockrep-keygen --server-id " + opts_.server_id);
      if (st.code() == Code::kUnauthenticated)
        return Unauthenticated("the staging rejected our TLS certificate (" + st.message() +
                               "); is it signed by the staging's CA? check --tls-cert/--tls-ca");
      if (st.message().find("closed by peer") != std::string::npos) {
        refused_retryable_ = true;  // at capacity, or evicted from the handshake budget: try again
        return Unavailable("the staging closed the connection before accepting us (it may have "
                           "rejected our TLS certificate; see the staging's log)");
      }
      return st;
    }
  }
  if (hello_ok_->version != wire::kVersion)
    return ProtocolError("staging chose protocol version " + std::to_string(hello_ok_->version));
  return Status::Ok();
}

void Agent::ReloadSettings() {
  if (opts_.state_dir.empty()) return;
  auto text = ReadSmallFile(opts_.state_dir + "/bandwidth-limit", 64);
  if (!text.ok()) return;
  std::string t = *text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  auto rate = ParseRate(t, "bandwidth-limit file");
  if (!rate.ok()) {
    Log(kProg, "warning: ignoring " + opts_.state_dir + "/bandwidth-limit: " + rate.status().message());
    return;
  }
  opts_.bandwidth_bps = *rate;
  bucket_.SetRate(*rate);
  Log(kProg, "bandwidth limit now " + (*rate ? std::to_string(*rate) + " bytes/s" : std::string("unlimited")));
}

Status Agent::IssueReads() {
  if (loading_base_) {
    if (!base_.SealsComplete() || !base_.FingerprintsComplete()) return Status::Ok();
    BR_RETURN_IF_ERROR(FinishBaseLoad());
  }
  const bool frozen = freeze_.frozen();
  auto room = [&] {
    if (frozen) return ch_->unsent_bytes() + reads_inflight_ * kReadBytes < kFrozenUnsentBytesMax;
    return bucket_.WaitNs(MonotonicNs()) == 0 && window_.unacked_bytes() + reads_inflight_ * kReadBytes < kWindowBytesMax &&
           ch_->unsent_bytes() + reads_inflight_ * kReadBytes < kUnsentBytesMax;
  };
  while (cur_volume_ < work_.size() && reads_inflight_ < kReadsMax && ring_->HasRoom(2) && room()) {
    const std::vector<Extent>& runs = work_[cur_volume_];
    if (cur_run_ >= runs.size()) {
      ++cur_volume_;
      cur_run_ = 0;
      cur_offset_ = 0;
      continue;
    }
    const Extent& run = runs[cur_run_];
    if (cur_offset_ >= run.length) {
      ++cur_run_;
      cur_offset_ = 0;
      continue;
    }
    // A rescan reads a range only once the staging's fingerprints for it have arrived.
    if (rescan_ && run.offset + std::min<uint64_t>(run.length, cur_offset_ + kReadBytes) > base_.known_end(cur_volume_))
      break;
    Volume& v = *volumes_[cur_volume_];
    size_t slot = 0;
    while (slot < reads_.size() && reads_[slot]->busy) ++slot;
    // reads_inflight_ < kReadsMax guarantees a free slot; anything else is a bookkeeping bug.
    if (slot == reads_.size()) return Internal("no free read slot with " + std::to_string(reads_inflight_) +
                                               " reads in flight");
    Read& r = *reads_[slot];
    r.busy = true;
    r.volume = cur_volume_;
    r.offset = run.offset + cur_offset_;
    r.want = static_cast<size_t>(std::min<uint64_t>(kReadBytes, run.length - cur_offset_));
    r.got = 0;
    size_t len = (r.want + 4095) & ~size_t{4095};  // O_DIRECT: whole sectors; EOF shortens it
    io_uring_sqe* sqe = ring_->Sqe();
    io_uring_prep_read(sqe, v.fd.get(), r.buf.data(), static_cast<unsigned>(len), r.offset);
    io_uring_sqe_set_data64(sqe, UserData(kReadIdBase + slot, kOpRead));
    ++reads_inflight_;
    cur_offset_ += r.want;
    work_bytes_left_ -= std::min<uint64_t>(work_bytes_left_, r.want);
    // Reserve the read's size now (refunded to what it really produces in ProcessRead), so a
    // bucket in credit lets one read through, not a burst of all the slots.
    bucket_.Reserve(r.want);
  }
  return Status::Ok();
}

void Agent::QueueRecord(size_t volume, uint64_t offset, ByteSpan data, const uint64_t* fps) {
  if (seal_jobs_queued_ == seal_jobs_.size()) {
    seal_jobs_.emplace_back();
    seal_job_fps_.push_back(nullptr);
  }
  SealJob& job = seal_jobs_[seal_jobs_queued_];
  job.volume = static_cast<uint16_t>(volume);
  job.offset = offset;
  job.plain = data;
  seal_job_fps_[seal_jobs_queued_] = fps;
  ++seal_jobs_queued_;
}

Status Agent::SealAndFrameQueued() {
  size_t queued = seal_jobs_queued_;
  seal_jobs_queued_ = 0;
  sealer_->SealAll(opts_.codec, point_id_, std::span<SealJob>(seal_jobs_.data(), queued));
  for (size_t i = 0; i < queued; ++i) {
    const SealJob& job = seal_jobs_[i];
    BR_RETURN_IF_ERROR(job.status);
    const RecordHeader& h = job.header;
    point_seal_->Sent(job.volume, job.offset, job.plain.size());
    fingerprints_.clear();
    if (!h.zero()) {
      ByteWriter w(&fingerprints_);
      for (size_t b = 0; b < FingerprintCount(static_cast<uint32_t>(job.plain.size())); ++b) w.U64(seal_job_fps_[i][b]);
    }
    size_t before = frames_.size();
    const uint64_t seq = window_.last_sent() + 1;
    wire::RecordMsg::AppendEncoded(&frames_, seq, job.record, fingerprints_);
    const uint64_t frame_bytes = frames_.size() - before;
    window_.Sent(frame_bytes);
    ++summary_.records;
    if (h.flags & kRecordIncompressible) ++summary_.records_raw;
    summary_.bytes_shipped_plain += job.plain.size();
    shipped_by_volume_[job.volume] += job.plain.size();
    summary_.bytes_stored += job.record.size();
    summary_.bytes_wire += frame_bytes;
  }
  return Status::Ok();
}

Status Agent::ProcessRead(Read& r) {
  frames_.clear();
  // Each block's fingerprint, once: the seal needs every block read, records carry theirs.
  size_t blocks = (r.want + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes;
  read_fps_.resize(blocks);
  for (size_t b = 0; b < blocks; ++b) {
    size_t at = b * kFingerprintBlockBytes;
    read_fps_[b] = fingerprinter_->Block(r.offset + at, ByteSpan(r.buf.data() + at, std::min(kFingerprintBlockBytes, r.want - at)));
  }
  point_seal_->Note(r.volume, r.offset, read_fps_.data(), blocks);
  if (resealing_) {
    summary_.bytes_reread_to_seal += r.want;
    r.busy = false;
    bucket_.Settle(r.want, 0);  // nothing was produced
    return Status::Ok();
  }
  summary_.bytes_read += r.want;
  for (size_t pos = 0; pos < r.want; pos += kRecordBytes) {
    size_t len = std::min(kRecordBytes, r.want - pos);
    ByteSpan extent(r.buf.data() + pos, len);
    bool zero = IsAllZero(extent);
    if (zero) summary_.bytes_zero += len;
    if (rescan_) {
      // Ship only the runs of blocks whose fingerprint differs from the staging's last point.
      const std::vector<uint64_t>& theirs = base_.of(r.volume);
      size_t run_start = SIZE_MAX;
      for (size_t b = 0; b * kFingerprintBlockBytes < len; ++b) {
        size_t at = b * kFingerprintBlockBytes;
        uint64_t block_index = (r.offset + pos + at) / kFingerprintBlockBytes;
        uint64_t ours = read_fps_[(pos + at) / kFingerprintBlockBytes];
        bool same = block_index < theirs.size() && theirs[block_index] == ours;
        if (!same && run_start == SIZE_MAX) run_start = at;
        if (same && run_start != SIZE_MAX) {
          QueueRecord(r.volume, r.offset + pos + run_start, extent.subspan(run_start, at - run_start),
                      &read_fps_[(pos + run_start) / kFingerprintBlockBytes]);
          run_start = SIZE_MAX;
        }
      }
      if (run_start != SIZE_MAX)
        QueueRecord(r.volume, r.offset + pos + run_start, extent.subspan(run_start),
                    &read_fps_[(pos + run_start) / kFingerprintBlockBytes]);
      continue;
    }
    // Absent from a full point means zero, but only during its first sweep: a tracker batch
    // (incremental point, or a block re-read later in a full one) may be zeroing a range that
    // holds data, so it is sent as a zero record.
    if (zero && sweeping_) continue;
    QueueRecord(r.volume, r.offset + pos, extent, &read_fps_[pos / kFingerprintBlockBytes]);
  }
  // The records point into r.buf: sealed before the buffer is handed back.
  BR_RETURN_IF_ERROR(SealAndFrameQueued());
  r.busy = false;
  bucket_.Settle(r.want, frames_.size());
  if (frames_.empty()) return Status::Ok();
  return ch_->Send(frames_);
}

const char* StateName(AgentState s) {
  switch (s) {
    case AgentState::kInitialSync: return "INITIAL_SYNC";
    case AgentState::kRescan: return "RESCAN";
    case AgentState::kContinuous: return "CONTINUOUS";
    case AgentState::kBacklog: return "BACKLOG";
    case AgentState::kDisconnected: return "DISCONNECTED";
    case AgentState::kStalled: return "STALLED";
  }
  return "?";
}

void Agent::SetState(AgentState st, const std::string& reason) {
  if (st == state_ && reason == state_reason_) return;
  Log(kProg, std::string("state ") + StateName(state_) + " -> " + StateName(st) +
                 (reason.empty() ? "" : ": " + reason));
  state_ = st;
  state_reason_ = reason;
  WriteStatus(true);
}

void Agent::WriteStatus(bool force) {
  if (opts_.state_dir.empty()) return;
  uint64_t now = MonotonicNs();
  if (!status_.Due(now, force)) return;
  uint64_t backlog = window_.unacked_bytes() + work_bytes_left_;
  bool forecast = state_ == AgentState::kContinuous || state_ == AgentState::kBacklog;
  auto outrun = status_.UpdateRates(now, window_.acked_bytes_total(), backlog, opts_.rpo_target_ns, forecast);
  if (outrun && !outrun->empty()) {
    Log(kProg, "warning: " + *outrun);
    SetState(AgentState::kBacklog, "writes outrun shipping");
  } else if (outrun) {
    SetState(AgentState::kContinuous, "caught up");
  }
  AgentStatus::Fields f;
  f.server_id = opts_.server_id;
  f.state = StateName(state_);
  f.reason = state_reason_;
  f.alarm = chain_.alarm();
  f.last_point = last_acked_point_;
  f.backlog_bytes = backlog;
  f.wire_bytes = wire_bytes_total_ + summary_.bytes_wire;
  f.tracker_unreported_completions = tracker_ ? tracker_->UnreportedCompletions() : 0;
  for (size_t v = 0; v < volumes_.size(); ++v)
    f.volumes.emplace_back(volumes_[v]->path, v < shipped_by_volume_.size() ? shipped_by_volume_[v] : 0);
  if (!AgentStatus::Write(opts_.state_dir, status_.Json(f, now, FormatUtc(NowUtcNs()))))
    Log(kProg, "warning: cannot write " + opts_.state_dir + "/status.json: " + std::strerror(errno));
}

bool Agent::PlanResume(uint64_t last_point) {
  const wire::HelloOk& h = *hello_ok_;
  if (h.pending_point_id != last_point + 1 || h.pending_base_point == 0 || h.pending_base_point != last_point)
    return false;
  if (!tracker_ || tracker_->synced_point() == 0 || last_point < tracker_->synced_point()) return false;
  for (size_t v = 0; v < volumes_.size(); ++v)
    if (tracker_->overflowed(v)) return false;
  // The kept records' fingerprints are known only to the process that read them; another one
  // re-reads their blocks first (see resealing_).
  resealing_ = !point_seal_->KnowsBase(last_point, VolumeSizes());
  send_work_.assign(volumes_.size(), {});
  // Work = what became dirty since the last take, plus what was taken but whose latest read is
  // not known to be durable. The staging keeps the durable records; later records win over them.
  uint64_t found = 0;
  tracker_->MarkPendingWrites(false);
  for (size_t v = 0; v < volumes_.size(); ++v) {
    std::vector<Extent> taken = tracker_->TakeDirty(v, resealing_);  // also marks the fresh ones undurable
    work_[v] = tracker_->UndurableRuns(v);                            // so this is their union
    if (resealing_) {
      send_work_[v] = std::move(work_[v]);
      work_[v] = std::move(taken);  // every block taken since the base: what the kept records can hold
    }
    for (const Extent& e : work_[v]) found += e.length;
  }
  full_point_ = false;
  sweeping_ = false;
  cur_volume_ = cur_run_ = 0;
  cur_offset_ = 0;
  work_bytes_left_ = found;
  status_.Restart(MonotonicNs());
  summary_.mode_reason = "resuming point " + std::to_string(h.pending_point_id) +
                         ": its durable records are kept on the staging" +
                         (resealing_ ? "; re-reading the blocks taken since point " + std::to_string(last_point) +
                                           " to seal the point (this process did not read them)"
                                     : "");
  return true;
}

Status Agent::RequestFingerprints() {
  base_.ExpectFingerprints(VolumeSizes());
  for (size_t v = 0; v < volumes_.size(); ++v) {
    uint64_t size = volumes_[v]->size_bytes;
    // All requests at once: the replies come back in order, and the channel's inbox limit
    // paces them.
    for (uint64_t off = 0; off < size; off += wire::kMaxFingerprintSpan) {
      wire::FingerprintRequest rq{static_cast<uint16_t>(v), off, std::min(wire::kMaxFingerprintSpan, size - off)};
      BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kFingerprintRequest, rq.Encode()));
    }
  }
  return Status::Ok();
}

std::vector<uint64_t> Agent::VolumeSizes() const {
  std::vector<uint64_t> sizes;
  for (const auto& v : volumes_) sizes.push_back(v->size_bytes);
  return sizes;
}

Status Agent::StartBaseLoad() {
  loading_base_ = true;
  base_.ExpectSeals(volumes_.size());
  for (size_t v = 0; v < volumes_.size(); ++v)
    BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kSealRequest, wire::SealRequest{static_cast<uint16_t>(v)}.Encode()));
  base_from_cache_ = false;
  if (!opts_.state_dir.empty()) {
    std::string why;
    auto cached = LoadFingerprintCache(opts_.state_dir, opts_.server_id, point_id_ - 1, VolumeSizes(), &why);
    if (cached) {
      // Checked against the base's seal in FinishBaseLoad, like the staging's copy would be.
      base_.TakeFingerprints(std::move(*cached), VolumeSizes());
      base_from_cache_ = true;
      return Status::Ok();
    }
    if (!why.empty()) Log(kProg, "fingerprint cache not used: " + why + "; fetching them from the staging");
  }
  return RequestFingerprints();
}

void Agent::SaveFingerprints() {
  if (opts_.state_dir.empty() || point_seal_->base_point() != point_id_) return;
  Status st = SaveFingerprintCache(opts_.state_dir, opts_.server_id, point_id_, point_seal_->volume_bytes(),
                                   point_seal_->fingerprints());
  if (!st.ok())
    Log(kProg, "warning: cannot keep point " + std::to_string(point_id_) + "'s fingerprints in " + opts_.state_dir +
                   ": " + st.message() + " (the next run fetches them from the staging)");
}

Status Agent::FinishBaseLoad() {
  loading_base_ = false;
  uint64_t base = point_id_ - 1;
  std::string why = point_seal_->AdoptBase(base, VolumeSizes(), base_.mutable_fingerprints(), base_.seals());
  if (why.empty()) {
    // The base's seals are ours (AdoptBase checked their MACs): the link gets its MAC.
    const auto& seals = base_.seals();
    if (!chain_link_.KnowsMac() && !seals.empty() && seals[0] && seals[0]->point_id == chain_link_.point_id)
      chain_link_.mac = seals[0]->mac;
    base_.ReleaseSeals();
    base_.ReleaseFingerprints();
    Log(kProg, "point " + std::to_string(base) + "'s fingerprints " +
                   (base_from_cache_ ? "in " + opts_.state_dir + " match its seal" : "on the staging match its seal") +
                   ": sealing point " + std::to_string(point_id_) + " on it");
    return Status::Ok();
  }
  if (base_from_cache_) {
    // Our own copy is stale or damaged: the staging's is the one to judge.
    Log(kProg, "fingerprint cache in " + opts_.state_dir + " does not match point " + std::to_string(base) +
                   "'s seal (" + why + "); fetching them from the staging");
    base_from_cache_ = false;
    loading_base_ = true;
    return RequestFingerprints();
  }
  base_.ReleaseSeals();
  // The staging's copy of the base is not what we sealed (damaged, or not ours): compare every
  // block with it instead of trusting it, so this point is whole whatever it holds.
  Log(kProg, "warning: point " + std::to_string(base) + " on the staging does not match its seal (" + why +
                 "); rescanning every volume against it (blockrep-recover verify on the staging host names the damage)");
  rescan_ = true;
  if (resealing_) {
    // A resumed point: the kept records may hold any block taken since the base, whatever the
    // staging's base says, so those are sent whatever their fingerprint.
    for (size_t v = 0; v < volumes_.size(); ++v)
      for (const Extent& e : work_[v]) base_.MarkUnknown(v, e.offset, e.length);
    resealing_ = false;
    send_work_.clear();
  }
  if (tracker_) {
    tracker_->ClearDirty();
    tracker_->MarkSynced(0);
  }
  work_bytes_left_ = 0;
  for (size_t v = 0; v < volumes_.size(); ++v) {
    work_[v] = {Extent{0, volumes_[v]->size_bytes}};
    work_bytes_left_ += volumes_[v]->size_bytes;
  }
  cur_volume_ = cur_run_ = 0;
  cur_offset_ = 0;
  point_seal_->StartEmpty(VolumeSizes());
  summary_.mode_reason = "rescan against point " + std::to_string(base) + " (it does not match its seal)";
  SetState(AgentState::kRescan, summary_.mode_reason);
  return Status::Ok();
}

Status Agent::StartPoint(uint64_t last_point) {
  rescan_ = false;
  resealing_ = false;
  point_id_ = chain_.NextPointId(last_point);  // never an id acknowledged before
  // The link is this agent's history: the newest point it saw acknowledged, which after a
  // rollback is newer than the chain's head (the points between are lost; this one supersedes
  // them), else the chain's head (its MAC once the base's seals are loaded, FinishBaseLoad).
  chain_link_ = chain_.LinkFor(last_point);
  summary_.point_id = point_id_;
  work_.assign(volumes_.size(), {});
  if (hello_ok_ && !chain_.rescan_due() && !KeyRotated() && PlanResume(last_point)) {
    summary_.base_point = last_point;
    summary_.resumed = true;
    point_time_ns_ = hello_ok_->pending_time_ns;  // the kept BEGIN_POINT's: the seal binds it
    hello_ok_->pending_point_id = 0;  // only the first point of a session can resume
    BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kResumePoint, wire::ResumePoint{point_id_}.Encode()));
    loading_base_ = false;
    if (resealing_) BR_RETURN_IF_ERROR(StartBaseLoad());
    Log(kProg, "server '" + opts_.server_id + "': resuming point " + std::to_string(point_id_) + " (" +
                   summary_.mode_reason + ")");
    SetState(AgentState::kContinuous, "");
    return Status::Ok();
  }
  if (hello_ok_) hello_ok_->pending_point_id = 0;
  PlanPoint(last_point);
  wire::BeginPoint b;
  b.point_id = point_id_;
  // The staging refuses a point not later than the chain's last (its clock orders the chain):
  // after this clock stepped back, stay just past the last point instead of stalling.
  b.time_ns = std::max(NowUtcNs(), (hello_ok_ ? hello_ok_->last_time_ns : 0) + 1);
  b.base_point = full_point_ ? 0 : last_point;
  summary_.base_point = b.base_point;
  b.flags = 0;  // no filesystem freeze yet: the point is crash-consistent only if volumes are idle
  for (const auto& v : volumes_) b.volume_sizes.push_back(v->size_bytes);
  point_time_ns_ = b.time_ns;
  if (tracker_) tracker_->NoteSending(b.time_ns);
  BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kBeginPoint, b.Encode()));
  loading_base_ = false;
  if (full_point_ || rescan_)
    point_seal_->StartEmpty(VolumeSizes());  // every non-zero block will be read
  else if (!point_seal_->KnowsBase(last_point, VolumeSizes()))
    BR_RETURN_IF_ERROR(StartBaseLoad());
  if (rescan_) BR_RETURN_IF_ERROR(RequestFingerprints());
  Log(kProg, "server '" + opts_.server_id + "': sending point " + std::to_string(point_id_) + " (" +
                 std::to_string(volumes_.size()) + " volume(s), " +
                 (full_point_ ? "full: " : "incremental on point " + std::to_string(b.base_point) + ": ") +
                 summary_.mode_reason + "; tracker " + tracker_note_ + "; " + freeze_.note() + ")");
  if (full_point_ || rescan_) {
    SetState(last_point == 0 ? AgentState::kInitialSync : AgentState::kRescan, summary_.mode_reason);
  } else if (state_ != AgentState::kBacklog) {
    SetState(AgentState::kContinuous, "");
  }
  return Status::Ok();
}

Status Agent::Session(const Signals& sig, bool once) {
  hello_ok_.reset();
  peer_error_.reset();
  refused_retryable_ = false;
  window_.Reset();
  status_.ForgetBatches();
  point_acked_ = 0;
  BR_RETURN_IF_ERROR(Connect());
  BR_RETURN_IF_ERROR(Handshake(sig));
  BR_ASSIGN_OR_RETURN(sealer_, ParallelSealer::Create(key_, opts_.server_id));
  uint64_t last = hello_ok_->last_point_id;
  if (std::string alarm = chain_.Check(*hello_ok_); !alarm.empty()) {
    // Never a quiet resync: say so, keep saying so (status.json), and protect the volumes again
    // with a rescan under an id the staging never acknowledged before.
    Log(kProg, "ALARM: server '" + opts_.server_id + "': " + alarm + "; sending a rescan as point " +
                   std::to_string(chain_.NextPointId(last)) + " (an acknowledged point id is never reused)");
  }
  for (;;) {
    BR_RETURN_IF_ERROR(StartPoint(last));
    uint64_t now = MonotonicNs();
    uint64_t point_due = now + opts_.point_interval_ns;
    uint64_t next_poll = now + opts_.poll_interval_ns;
    bool closing = once || *sig.term;  // the point ends after one last take
    bool final_take_done = false, end_sent = false;
    // Whether this point's last take came after SIGTERM: only then does it hold every write made
    // before the signal. A SIGTERM (or SIGUSR1) that arrives after the last take is served by
    // the next point, or writes made just before it would be in no point.
    bool term_taken = false;
    while (point_acked_ != point_id_) {
      now = MonotonicNs();
      if (*sig.point_now && !final_take_done) {
        *sig.point_now = 0;
        Log(kProg, "SIGUSR1: taking a recovery point now");
        closing = true;
      }
      if (*sig.term && !closing) {
        Log(kProg, "SIGTERM: finishing point " + std::to_string(point_id_) + ", then exiting");
        closing = true;
      }
      if (now >= point_due) closing = true;
      BR_RETURN_IF_ERROR(IssueReads());
      bool idle = !loading_base_ && cur_volume_ >= work_.size() && reads_inflight_ == 0;
      if (idle) status_.BatchQueued(window_.last_sent());  // the newest batch is queued up to here
      if (idle && resealing_) {
        // The kept records are accounted for: now the point's own work.
        resealing_ = false;
        work_ = std::move(send_work_);
        send_work_.clear();
        cur_volume_ = cur_run_ = 0;
        cur_offset_ = 0;
        work_bytes_left_ = 0;
        for (const auto& runs : work_)
          for (const Extent& e : runs) work_bytes_left_ += e.length;
        continue;
      }
      if (idle && !end_sent) {
        if (closing && !final_take_done) {
          final_take_done = true;
          term_taken = *sig.term != 0;
          freeze_.Begin(point_id_);  // pre-hook, then writers stop until the take is read
          if (PollTracker(false, true)) continue;
        } else if (closing) {
          PointFreeze::Result fz = freeze_.Finish(point_id_);
          if (fz.frozen_ms) status_.NoteFreeze(*fz.frozen_ms);
          uint32_t flags = fz.consistent ? 1u : 0u;
          std::vector<VolumeSeal> seals = point_seal_->Seals(point_id_, point_time_ns_, flags, chain_link_);
          sent_seal_mac_ = seals.front().mac;  // a server has at least one volume
          for (const VolumeSeal& seal : seals)
            BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kSeal, wire::SealMsg{seal}.Encode()));
          wire::EndPoint e{point_id_, window_.last_sent(), summary_.records, flags};
          BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kEndPoint, e.Encode()));
          end_sent = true;
        } else if (now >= next_poll) {
          next_poll = now + opts_.poll_interval_ns;
          if (PollTracker(false, false)) continue;
        }
      }
      if (sig.reload != nullptr && *sig.reload) {
        *sig.reload = 0;
        ReloadSettings();
      }
      int timeout_ms = idle && !closing ? static_cast<int>((next_poll - std::min(next_poll, now)) / 1000000) + 1 : 100;
      if (!idle) {
        uint64_t throttle_ns = bucket_.WaitNs(MonotonicNs());
        if (throttle_ns > 0) timeout_ms = std::min<int>(timeout_ms, static_cast<int>(throttle_ns / 1000000) + 1);
      }
      BR_RETURN_IF_ERROR(Step(true, timeout_ms));
      // Caught up: nothing left to read, every record sent is acknowledged, so the latest read of
      // every taken block is durable on the staging.
      if (tracker_ && !loading_base_ && !resealing_ && cur_volume_ >= work_.size() && reads_inflight_ == 0 && window_.empty())
        tracker_->MarkCaughtUp();
      WriteStatus(false);
    }
    last = point_id_;
    last_acked_point_ = point_id_;
    summary_.alarm = chain_.alarm();
    point_seal_->Committed(point_id_);
    if (rescan_) {
      rescan_ = false;
      base_.ReleaseFingerprints();  // up to 64 MiB: give it back
    }
    if (tracker_) tracker_->MarkSynced(point_id_);
    BR_RETURN_IF_ERROR(chain_.Acked({point_id_, point_time_ns_, sent_seal_mac_}, opts_.state_dir, opts_.server_id));
    Log(kProg, "point " + std::to_string(point_id_) + " acknowledged (durable on staging)");
    WriteStatus(true);
    if (once || term_taken) {
      SaveFingerprints();  // the last point of this process: the next one starts from it
      break;
    }
    if (*sig.term) Log(kProg, "SIGTERM came after point " + std::to_string(point_id_) + "'s last take: one more point, then exiting");
    summary_.records = 0;  // END_POINT counts the records of its own point
  }
  Teardown();
  return Status::Ok();
}

Result<SyncSummary> Agent::SyncOnce(const Signals& sig) {
  uint64_t start = MonotonicNs();
  summary_ = SyncSummary{};
  summary_.tracker = tracker_note_;
  shipped_by_volume_.assign(volumes_.size(), 0);
  uint64_t backoff_ms = kBackoffFirstMs;
  std::mt19937_64 rng(NowUtcNs());
  Status st = Session(sig, true);
  // A full staging heals when its operator frees space: wait for it (STALLED) as the continuous
  // agent does, keeping the point's dirty state. While waiting, "busy" (the staging is still
  // closing our last session) is waited out too. A staging at capacity, or one that cut our
  // handshake (its budget for unauthenticated connections evicts the oldest), is tried again a
  // few times. Every other failure ends --once at once.
  bool stalled = st.code() == Code::kNoSpace;
  int refusals = 0;
  auto again = [&] {
    if (st.ok() || *sig.term) return false;
    if (st.code() == Code::kNoSpace) stalled = true;
    if (stalled) return st.code() == Code::kNoSpace || st.code() == Code::kUnavailable;
    return st.code() == Code::kUnavailable && refused_retryable_ && ++refusals <= kOnceRefusalsMax;
  };
  while (again()) {
    Teardown();
    WaitBeforeReconnect(sig, st, rng, &backoff_ms);
    if (*sig.term) break;
    summary_ = SyncSummary{};  // END_POINT counts this session's records only
    summary_.tracker = tracker_note_;
    shipped_by_volume_.assign(volumes_.size(), 0);
    st = Session(sig, true);
  }
  if (!st.ok() && point_id_ == 0)  // failed before a point began (connect, TLS, HELLO)
    return st.Annotate("nothing was sent");
  if (!st.ok())
    return st.Annotate("point " + std::to_string(point_id_) +
                       " was not acknowledged, so it may be missing on the staging; run again");
  summary_.seconds = static_cast<double>(MonotonicNs() - start) / 1e9;
  return summary_;
}

Status Agent::RunContinuous(const Signals& sig) {
  shipped_by_volume_.assign(volumes_.size(), 0);
  uint64_t backoff_ms = kBackoffFirstMs;
  std::mt19937_64 rng(NowUtcNs());
  while (!*sig.term) {
    wire_bytes_total_ += summary_.bytes_wire;  // the previous session's, before its summary goes
    summary_ = SyncSummary{};
    summary_.tracker = tracker_note_;
    uint64_t acked_before = last_acked_point_;
    Status st = Session(sig, false);
    if (st.ok()) return Status::Ok();
    Teardown();
    // Operator errors do not heal by retrying: report and exit.
    if (st.code() == Code::kPermissionDenied || st.code() == Code::kInvalidArgument ||
        st.code() == Code::kUnauthenticated || st.code() == Code::kDataLoss || st.code() == Code::kInternal)
      return st;
    if (last_acked_point_ != acked_before) backoff_ms = kBackoffFirstMs;  // progress was made: start over
    WaitBeforeReconnect(sig, st, rng, &backoff_ms);
  }
  return Status::Ok();
}

void Agent::WaitBeforeReconnect(const Signals& sig, const Status& why, std::mt19937_64& rng, uint64_t* backoff_ms) {
  // Full jitter in [backoff/2, backoff]: agents cut off together do not return together.
  uint64_t wait_ms = *backoff_ms / 2 + rng() % (*backoff_ms / 2 + 1);
  SetState(why.code() == Code::kNoSpace ? AgentState::kStalled : AgentState::kDisconnected,
           why.code() == Code::kNoSpace && why.message().find("quota exceeded") == std::string::npos
               ? "staging full: " + why.message()
               : why.message());
  Log(kProg, "reconnecting in " + std::to_string(wait_ms) + " ms");
  for (uint64_t waited = 0; waited < wait_ms && !*sig.term; waited += 50) usleep(50000);
  *backoff_ms = std::min(*backoff_ms * 2, kBackoffMaxMs);
}

void Agent::Teardown() {
  freeze_.ThawIfFrozen();
  if (!ch_) return;
  // Shut the socket, then reap every request still in flight before buffers go away.
  ch_->tls().Shutdown();
  ch_->Pump().IgnoreError();  // close_notify is a courtesy; the point is already durable or lost
  ch_->Shutdown();
  while (ring_->inflight() > 0) {
    auto n = ring_->Reap(
        [&](uint64_t ud, int res, uint32_t) {
          // The session already failed or ended; late completions only drain.
          if (UserDataId(ud) == kChannelId) ch_->OnCompletion(UserDataOp(ud), res).IgnoreError();
          else --reads_inflight_;
        },
        true, 1000);
    if (!n.ok()) break;
  }
  // Reads that were in flight, or completed but never processed, belong to the dead session;
  // their blocks are still in the tracker's inflight bits and are read again by the next one.
  for (auto& r : reads_) r->busy = false;
  reads_inflight_ = 0;
  ch_.reset();
}

}  // namespace blockrep::agent
