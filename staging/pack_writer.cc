// The pack a session appends to: RECORDs gather in a batch; one write + fsync (linked, through
// the ring) at a time makes them durable, after which they are acknowledged (group commit).
#include <fcntl.h>
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
#include "server.h"
#include "session.h"

namespace blockrep::staging {

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

}  // namespace blockrep::staging
