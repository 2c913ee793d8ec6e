// A recovery tool's session (wire::Role::kReader): reads its own server's manifest, indexes and
// packs (ciphertext, verbatim) and appends drill reports; never holds the server's agent slot.
#include <fcntl.h>
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
#include "server.h"
#include "session.h"

namespace blockrep::staging {

Status Server::OnReaderHello(Session& s, const wire::Hello& h) {
  auto it = servers_.find(h.server_id);
  if (opts_.bucket && opts_.bucket->leased() && !s.reader_pulled) {
    // Another frontend may write this chain: the reader gets the bucket's, not this cache's.
    const bool known = it != servers_.end() && it->second.store && it->second.mirror != nullptr;
    if (!known || (!it->second.active && !it->second.mirror->LeaseHeld())) {
      std::unique_ptr<ServerMirror> fresh;
      if (!known) {
        if (it != servers_.end()) {  // a chain being created by an agent's HELLO: not a reader's to pull
          s.defer_frame = true;
          return Status::Ok();
        }
        BR_ASSIGN_OR_RETURN(fresh, opts_.bucket->TakeMirror(h.server_id));
        it = servers_.emplace(h.server_id, ServerState{}).first;
      }
      s.reader_pulled = true;
      if (!PostReaderPull(h.server_id, it->second, std::move(fresh), s.id)) {
        if (!known) servers_.erase(it);
        Fail(s, wire::ErrorCode::kBusy, Unavailable("the staging's store worker is saturated; retry later"));
        return Status::Ok();
      }
      s.defer_frame = true;
      return Status::Ok();
    }
  }
  if (it == servers_.end() || !it->second.store) {
    // Never creates anything for a reader: a server without a chain here has nothing to read.
    auto opened = store::ServerStore::Open(opts_.store_dir, h.server_id, false, opts_.env);
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
  s.read_packs = std::make_unique<store::PackReader>(st.store->dir(), st.store->env());
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
  BR_CHECK(snap != s.snapshots.end());
  const Bytes& bytes = snap->second;
  uint64_t n = rq.offset >= bytes.size() ? 0 : std::min<uint64_t>(rq.length, bytes.size() - rq.offset);
  SendReadAnswer(s, rq, bytes.size(), wire::ReadStatus::kOk,
                 ByteSpan(bytes).subspan(rq.offset >= bytes.size() ? bytes.size() : rq.offset, n));
  if (rq.offset + n >= bytes.size()) s.snapshots.erase(snap);  // served to the end
  return Status::Ok();
}

Status Server::PostPackRead(Session& s) {
  BR_CHECK(s.read_done < s.read_want && ring_->HasRoom());
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
  BR_RETURN_IF_ERROR(s.server->store->env()->AppendDurably(
      path, ByteSpan(reinterpret_cast<const uint8_t*>(line.data()), line.size())));
  Log(kProg, "server '" + s.server_id + "': drill report appended to drills.jsonl");
  SendFrame(s, wire::MsgType::kDrillReportOk, Bytes());
  return Status::Ok();
}

}  // namespace blockrep::staging
