#include "agent.h"

#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "blockrep/fs.h"
#include "blockrep/keyfile.h"

namespace blockrep::agent {
namespace {

constexpr const char* kProg = "blockrep-agent";
constexpr size_t kReadBytes = 1u << 20;         // one io_uring read
constexpr size_t kRecordBytes = 64u << 10;      // one record's plaintext extent
constexpr unsigned kReadsMax = 4;               // reads in flight
constexpr uint64_t kWindowBytesMax = 32u << 20; // unacknowledged record bytes
constexpr size_t kUnsentBytesMax = 8u << 20;    // ciphertext queued for the socket
constexpr size_t kInboxBytesMax = 1u << 20;     // staging sends small frames only
constexpr uint8_t kOpRead = 3;
constexpr uint64_t kChannelId = 1;
constexpr uint64_t kReadIdBase = 16;

}  // namespace

struct Agent::Read {
  AlignedBuffer buf{kReadBytes};
  bool busy = false;
  size_t volume = 0;
  uint64_t offset = 0;
  size_t want = 0;  // bytes of the volume this read covers
  size_t got = 0;
};

Agent::Agent(Options opts) : opts_(std::move(opts)) {}
Agent::~Agent() { Teardown(); }

Status Agent::Prepare() {
  BR_RETURN_IF_ERROR(wire::ValidateServerId(opts_.server_id));
  BR_ASSIGN_OR_RETURN(key_, LoadDataKey(opts_.key_file));
  if (opts_.volumes.empty()) return InvalidArgument("no --volume given: name at least one device or image");
  if (opts_.volumes.size() > wire::kMaxVolumes)
    return InvalidArgument("at most " + std::to_string(wire::kMaxVolumes) + " volumes per server");
  for (const std::string& path : opts_.volumes) {
    BR_ASSIGN_OR_RETURN(auto v, Volume::Open(path));
    volumes_.push_back(std::move(v));
  }
  if (!opts_.state_dir.empty()) BR_RETURN_IF_ERROR(MakeDirs(opts_.state_dir, 0700));
  BR_ASSIGN_OR_RETURN(tls_, TlsContext::Create(opts_.tls, false));
  BR_ASSIGN_OR_RETURN(ring_, Ring::Create(64));
  for (unsigned i = 0; i < kReadsMax; ++i) reads_.push_back(std::make_unique<Read>());
  // Reported with the point (one line), so that a failing run prints only its error.
  BR_RETURN_IF_ERROR(OpenTracker());
  return Status::Ok();
}

Status Agent::OpenTracker() {
  if (opts_.tracker == "none") {
    tracker_note_ = "none (--tracker none): every point reads whole volumes";
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
  tracker_note_ = "none: eBPF unavailable (" + why.message() + "); every point reads whole volumes";
  return Status::Ok();
}

void Agent::PlanPoint(uint64_t last_point) {
  full_point_ = true;
  work_.assign(volumes_.size(), {});
  if (!tracker_) {
    summary_.mode_reason = "no change tracker";
  } else if (tracker_->synced_point() == 0) {
    summary_.mode_reason = tracker_->resumed() ? "no point synced since tracking began" : "tracking just started";
  } else if (last_point < tracker_->synced_point()) {
    summary_.mode_reason = "the staging's chain (point " + std::to_string(last_point) +
                           ") is behind the tracker (point " + std::to_string(tracker_->synced_point()) + ")";
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
  if (full_point_) {
    // Clear before read: what changes from here on is caught for the next point.
    if (tracker_) tracker_->ClearDirty();
    for (size_t v = 0; v < volumes_.size(); ++v) work_[v] = {Extent{0, volumes_[v]->size_bytes}};
    return;
  }
  summary_.mode_reason = "changes tracked by eBPF since point " + std::to_string(tracker_->synced_point());
  for (size_t v = 0; v < volumes_.size(); ++v) work_[v] = tracker_->TakeDirty(v);
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
        Code code = e.code == wire::ErrorCode::kStoreFull ? Code::kNoSpace
                    : e.code == wire::ErrorCode::kBusy    ? Code::kUnavailable
                    : (e.code == wire::ErrorCode::kIdentity || e.code == wire::ErrorCode::kKeyMismatch)
                        ? Code::kPermissionDenied
                        : Code::kProtocol;
        peer_error_ = Status(code, "staging refused: " + e.message);
        break;
      }
      case wire::MsgType::kAck: {
        BR_ASSIGN_OR_RETURN(auto a, wire::Ack::Decode(f.payload));
        if (a.durable_seq < acked_seq_ || a.durable_seq >= next_seq_)
          return ProtocolError("staging acknowledged sequence " + std::to_string(a.durable_seq) +
                               " out of order");
        acked_seq_ = a.durable_seq;
        while (!unacked_.empty() && unacked_.front().first <= acked_seq_) {
          unacked_bytes_ -= unacked_.front().second;
          unacked_.pop_front();
        }
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

Status Agent::Step(bool wait) {
  BR_RETURN_IF_ERROR(ch_->Pump());
  Status failure;
  auto n = ring_->Reap(
      [&](uint64_t ud, int res, uint32_t) {
        uint64_t id = UserDataId(ud);
        Status st;
        if (id == kChannelId) {
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
      wait, 1000);
  if (!n.ok()) return n.status();
  // The staging's ERROR explains a close better than the close itself.
  Status inbox = HandleInbox();
  if (peer_error_) return *peer_error_;
  BR_RETURN_IF_ERROR(failure);
  return inbox;
}

Status Agent::Handshake(const volatile std::sig_atomic_t* stop) {
  while (!ch_->handshake_done()) {
    if (*stop) return Unavailable("interrupted");
    Status st = Step(true);
    if (!st.ok()) return st.Annotate("cannot establish TLS with staging " + opts_.staging.host);
  }
  wire::Hello h;
  h.server_id = opts_.server_id;
  h.key_id = key_.key_id;
  BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kHello, h.Encode()));
  while (!hello_ok_) {
    if (*stop) return Unavailable("interrupted");
    Status st = Step(true);
    if (!st.ok()) {
      // In TLS 1.3 a rejected client certificate surfaces only at our first read.
      if (st.code() == Code::kUnauthenticated || st.message().find("alert") != std::string::npos)
        return Unauthenticated("the staging rejected our TLS certificate (" + st.message() +
                               "); is it signed by the staging's CA? check --tls-cert/--tls-ca");
      if (st.message().find("closed by peer") != std::string::npos)
        return Unavailable("the staging closed the connection before accepting us (it may have "
                           "rejected our TLS certificate; see the staging's log)");
      return st;
    }
  }
  if (hello_ok_->version != wire::kVersion)
    return ProtocolError("staging chose protocol version " + std::to_string(hello_ok_->version));
  return Status::Ok();
}

Status Agent::IssueReads() {
  while (cur_volume_ < work_.size() && reads_inflight_ < kReadsMax && ring_->HasRoom(2) &&
         unacked_bytes_ + reads_inflight_ * kReadBytes < kWindowBytesMax &&
         ch_->unsent_bytes() < kUnsentBytesMax) {
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
    Volume& v = *volumes_[cur_volume_];
    size_t slot = 0;
    while (reads_[slot]->busy) ++slot;
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
  }
  return Status::Ok();
}

Status Agent::ProcessRead(Read& r) {
  summary_.bytes_read += r.want;
  frames_.clear();
  for (size_t pos = 0; pos < r.want; pos += kRecordBytes) {
    size_t len = std::min(kRecordBytes, r.want - pos);
    ByteSpan extent(r.buf.data() + pos, len);
    if (IsAllZero(extent)) {
      summary_.bytes_zero += len;
      // Absent from a full point means zero; an incremental point sends a zero record, because
      // the range may have held data at the base point.
      if (full_point_) continue;
    }
    Bytes record;
    BR_ASSIGN_OR_RETURN(RecordHeader h,
                        sealer_->Seal(opts_.codec, static_cast<uint16_t>(r.volume), r.offset + pos,
                                      point_id_, extent, &scratch_, &record));
    size_t before = frames_.size();
    wire::RecordMsg::AppendEncoded(&frames_, next_seq_, record);
    uint64_t frame_bytes = frames_.size() - before;
    unacked_.emplace_back(next_seq_, frame_bytes);
    unacked_bytes_ += frame_bytes;
    ++next_seq_;
    ++summary_.records;
    if (h.flags & kRecordIncompressible) ++summary_.records_raw;
    summary_.bytes_shipped_plain += len;
    summary_.bytes_stored += record.size();
    summary_.bytes_wire += frame_bytes;
  }
  r.busy = false;
  if (frames_.empty()) return Status::Ok();
  return ch_->Send(frames_);
}

Result<SyncSummary> Agent::SyncOnce(const volatile std::sig_atomic_t* stop) {
  uint64_t start = MonotonicNs();
  summary_ = SyncSummary{};
  summary_.tracker = tracker_note_;
  BR_RETURN_IF_ERROR(Connect());
  BR_RETURN_IF_ERROR(Handshake(stop));
  BR_ASSIGN_OR_RETURN(sealer_, RecordSealer::Create(key_, opts_.server_id));

  point_id_ = hello_ok_->last_point_id + 1;
  summary_.point_id = point_id_;
  PlanPoint(hello_ok_->last_point_id);
  wire::BeginPoint b;
  b.point_id = point_id_;
  b.time_ns = NowUtcNs();
  b.base_point = full_point_ ? 0 : hello_ok_->last_point_id;
  summary_.base_point = b.base_point;
  b.flags = 0;  // no filesystem freeze yet: the point is crash-consistent only if volumes are idle
  for (const auto& v : volumes_) b.volume_sizes.push_back(v->size_bytes);
  BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kBeginPoint, b.Encode()));
  Log(kProg, "server '" + opts_.server_id + "': sending point " + std::to_string(point_id_) + " (" +
                 std::to_string(volumes_.size()) + " volume(s), " +
                 (full_point_ ? "full: " : "incremental on point " + std::to_string(b.base_point) + ": ") +
                 summary_.mode_reason + "; tracker " + tracker_note_ + ")");

  auto lost = [&](const Status& st) {
    return st.Annotate("point " + std::to_string(point_id_) +
                       " was not acknowledged, so it may be missing on the staging; run again");
  };
  bool end_sent = false;
  while (point_acked_ != point_id_) {
    if (*stop) return lost(Unavailable("interrupted by signal"));
    BR_RETURN_IF_ERROR(IssueReads());
    if (!end_sent && cur_volume_ >= work_.size() && reads_inflight_ == 0) {
      wire::EndPoint e{point_id_, next_seq_ - 1, summary_.records};
      BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kEndPoint, e.Encode()));
      end_sent = true;
    }
    Status st = Step(true);
    if (!st.ok()) return lost(st);
  }
  summary_.seconds = static_cast<double>(MonotonicNs() - start) / 1e9;
  if (tracker_) tracker_->MarkSynced(point_id_);
  if (!opts_.state_dir.empty())
    BR_RETURN_IF_ERROR(RecordAckedPoint(opts_.state_dir, opts_.server_id, point_id_, b.time_ns));
  Teardown();
  return summary_;
}

void Agent::Teardown() {
  if (!ch_) return;
  // Shut the socket, then reap every request still in flight before buffers go away.
  ch_->tls().Shutdown();
  ch_->Pump().IgnoreError();  // close_notify is a courtesy; the point is already durable or lost
  ch_->Shutdown();
  while (ring_->inflight() > 0) {
    auto n = ring_->Reap(
        [&](uint64_t ud, int res, uint32_t) {
          if (UserDataId(ud) == kChannelId) ch_->OnCompletion(UserDataOp(ud), res).IgnoreError();
          else --reads_inflight_;
        },
        true, 1000);
    if (!n.ok()) break;
  }
  ch_.reset();
}

Status RecordAckedPoint(const std::string& state_dir, const std::string& server_id, uint64_t point_id,
                        uint64_t time_ns) {
  std::string text = "server-id " + server_id + "\nlast-acked-point " + std::to_string(point_id) +
                     "\nlast-acked-time " + FormatUtc(time_ns) + "\n";
  return WriteFileAtomic(state_dir + "/last-point",
                         ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace blockrep::agent
