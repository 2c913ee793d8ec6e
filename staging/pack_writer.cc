// The pack a session appends to: RECORDs gather in a batch; one write + fsync (linked, through
// the ring) at a time makes them durable, after which they are acknowledged (group commit).
#include <fcntl.h>
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

Status Server::OpenPack(Session& s) {
  BR_RETURN_IF_ERROR(s.pack.Open(*s.server->store, opts_.direct_pack_writes && s.server->mirror == nullptr));
  s.pack_bytes_counted = s.pack.durable_end();  // the header, counted below
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
  s.last_record_ns = MonotonicNs();
  s.trimmed = false;
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
  uint64_t stored = s.server->pack_bytes + s.pack.inflight_bytes() + s.pack.batch_bytes() + m.record.size() +
                    m.fingerprints.size();
  if (opts_.quota_bytes != 0 && stored > opts_.quota_bytes) {
    FailQuota(s, "its packs would hold " + std::to_string(stored) + " bytes, over its quota of " +
                     std::to_string(opts_.quota_bytes) + " (--quota-bytes)");
    return Status::Ok();
  }
  if (s.pack.open() && s.pack.end() + s.pack.batch_bytes() >= kPackRollBytes && !s.pack.ShouldRoll(kPackRollBytes)) {
    // The pack is full but its last records are still on their way to disk: this record waits,
    // unconsumed, until they are durable, and goes into the next pack. Packs stay within
    // kPackRollBytes and a record (a bucket takes each with one conditional PUT).
    s.defer_frame = true;
    return Status::Ok();
  }
  if (s.pack.ShouldRoll(kPackRollBytes)) s.pack.Close();
  if (!s.pack.open()) {
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
  e.pack = s.pack.pack_id();
  e.record_bytes = static_cast<uint32_t>(m.record.size());
  e.pack_offset = s.pack.Append(m.record, m.fingerprints, m.seq);  // FORMAT.md: packs
  e.checksum = Checksum64(m.record);
  s.extents.push_back(x);
  s.extent_seqs.push_back(m.seq);
  ++s.session_records;
  s.point_bytes += m.record.size();
  s.server->figures.ingested_bytes_total += m.record.size();
  ++s.next_seq;
  return Status::Ok();
}

void Server::OnCommitDone(Session& s, store::PackAppender::Done done) {
  if (done == store::PackAppender::Done::kFailed) {
    // Nothing past durable_seq is acknowledged; the appender cut the pack back to its durable end.
    Status st = s.pack.follower_failed()
                    ? ErrnoStatus("write " + s.server->store->PendingPath() + " (the open point's records, kept live)",
                                  s.pack.error())
                    : ErrnoStatus("write pack " + s.server->store->PackPath(s.pack.pack_id()), s.pack.error());
    if (!s.ch->closing()) FailStore(s, st);
    return;
  }
  if (s.commit_started_ns != 0) figures_.commit_seconds.Observe(static_cast<double>(MonotonicNs() - s.commit_started_ns) / 1e9);
  if (s.pack.follower_durable_bytes() != 0 && s.keep_file) {  // the live PENDING file lists them too
    s.keep_end += s.pack.follower_durable_bytes();
    s.keep_extents = s.keep_inflight_extents;
  }
  // The quota's measure grows by what became durable, counted once (also after a short write).
  s.server->pack_bytes += s.pack.durable_end() - s.pack_bytes_counted;
  s.pack_bytes_counted = s.pack.durable_end();
  if (!s.ch->closing()) {
    wire::Ack ack{s.pack.durable_seq()};
    SendFrame(s, wire::MsgType::kAck, ack.Encode());
  }
  Status st = MaybeCommitPoint(s);
  if (!st.ok() && !s.ch->closing()) FailStore(s, st);
}

}  // namespace blockrep::staging
