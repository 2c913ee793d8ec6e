// An agent's session: HELLO, the point it sends (BEGIN_POINT, RESUME_POINT, SEAL, END_POINT), and
// what an interrupted point leaves (PENDING). Records and their group commit: pack_writer.cc.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <span>

#include "blockrep/base/check.h"
#include "blockrep/base/checksum.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/store/pending.h"
#include "blockrep/crypto/record.h"
#include "server.h"
#include "session.h"

namespace blockrep::staging {

void Server::KeepInterruptedPoint(Session& s) {
  EndLiveKeep(s);
  if (!s.point || s.failed || s.server == nullptr) return;
  store::PendingPoint p;
  p.begin = *s.point;
  for (size_t i = 0; i < s.extents.size(); ++i) {
    if (s.extent_seqs[i] > s.pack.durable_seq()) continue;  // never made durable: the agent sends it again
    p.extents.push_back(s.extents[i]);
    p.bytes += s.extents[i].entry.record_bytes;
  }
  std::string what = "server '" + s.server_id + "': point " + std::to_string(p.begin.point_id) + " interrupted";
  // Kept even without a durable record: a rescan that found nothing to send up to its checkpoint
  // resumes from there too (docs/TRACKING.md), and an agent that cannot resume begins afresh.
  if (p.extents.size() > store::kPendingExtentsMax) {
    Log(kProg, what + "; not kept: " + std::to_string(p.extents.size()) + " records are more than a kept point holds (" +
                   std::to_string(store::kPendingExtentsMax) + "); the agent sends it anew");
  } else {
    // Also on disk, so a restarted staging can offer it too (replacing the live file, which holds
    // the same). Failing that, it is kept in memory only: the agent then resends after a restart,
    // which costs bytes, not correctness. Saved first, logged after: whoever reads the line (an
    // operator, a test about to kill -9) can count on the file.
    Status saved = s.server->store->env()->WriteFileAtomic(s.server->store->PendingPath(), store::EncodePending(p));
    if (!saved.ok()) Log(kProg, "warning: " + what + ": cannot save it for a restart: " + saved.message());
    Log(kProg, what + "; " + std::to_string(p.extents.size()) + " durable records (" + std::to_string(p.bytes) +
                   " bytes) kept for the agent to resume" + (saved.ok() ? "" : " (until this staging stops)"));
    s.server->pending = std::move(p);
  }
  s.point.reset();
}

Status Server::DropPending(ServerState& st) {
  st.pending.reset();
  if (!st.store) return Status::Ok();
  // Durably gone before the session goes on: the point's records acknowledged from here on are
  // not in the file, and a staging that lost power would otherwise offer the stale one again,
  // which an agent would resume as if it held them (the simulation found a resumed point missing
  // the blocks acknowledged after its resume, tests/sim/system_sim.cc).
  std::string path = st.store->PendingPath();
  Status removed = st.store->env()->Remove(path);
  if (removed.code() == Code::kNotFound) return Status::Ok();
  if (removed.ok()) removed = st.store->env()->SyncDir(st.store->dir());
  return removed.Annotate("remove " + path + " durably (a staging restarted after a power cut would offer a stale point "
                          "to resume); check the store's disk");
}

void Server::LoadPending(ServerState& st, const std::string& server_id) {
  std::string path = st.store->PendingPath();
  if (!st.store->env()->Exists(path)) return;
  auto data = st.store->env()->ReadFile(path, store::kPendingFileBytesMax);
  Result<store::DecodedPending> kept =
      data.ok() ? store::DecodePending(*data) : Result<store::DecodedPending>(data.status());
  Status st_decode = kept.ok() ? Status::Ok() : kept.status();
  if (!kept.ok() || kept->point.begin.point_id != st.store->manifest().last_point_id() + 1 ||
      kept->point.begin.base_point != st.store->manifest().last_point_id()) {
    Log(kProg, "server '" + server_id + "': ignoring " + path +
                   (st_decode.ok() ? " (it no longer follows the chain)" : " (" + st_decode.message() + ")"));
    if (Status dropped = DropPending(st); !dropped.ok()) Log(kProg, "warning: " + dropped.message());
    return;
  }
  std::string how;
  if (kept->live) {
    how = " (kept live by a session this staging did not see end";
    if (kept->torn_bytes != 0)
      how += "; its last " + std::to_string(kept->torn_bytes) + " bytes, a write the crash cut short, are ignored: "
             "nothing in them was acknowledged";
    how += ")";
  }
  st.pending = std::move(kept->point);
  Log(kProg, "server '" + server_id + "': interrupted point " + std::to_string(st.pending->begin.point_id) + " found with " +
                 std::to_string(st.pending->extents.size()) + " durable records" + how + "; the agent may resume it");
}

Status Server::PrepareLiveKeep(Session& s) {
  // Not while the point is with the StoreWorker: its extents are the commit job's then.
  if (!s.point || s.committing || s.keep_off || s.pack.inflight() || s.server == nullptr || !s.server->store)
    return Status::Ok();
  store::ServerStore& store = *s.server->store;
  // Called every turn of every sending session: nothing is built before it is needed.
  auto what = [&s] { return "server '" + s.server_id + "': point " + std::to_string(s.point->point_id); };
  if (s.keep_file) {
    if (s.extents.size() <= store::kPendingExtentsMax) return Status::Ok();
    // Too many records to keep: the file goes, durably, before anything more is acknowledged
    // (a file that stopped growing would offer a point without the records acknowledged since).
    EndLiveKeep(s);
    s.keep_off = true;
    Log(kProg, what() + " has more than " + std::to_string(store::kPendingExtentsMax) +
                   " records, more than a kept point holds: no longer kept live (interrupted, it is sent anew)");
    return DropPending(*s.server);
  }
  if (s.point_bytes < opts_.keep_live_after_bytes || store.published()) return Status::Ok();
  // Every record durable so far (nothing is in flight): the batch's go with the next commit.
  size_t durable = s.extents.size();
  while (durable > 0 && s.extent_seqs[durable - 1] > s.pack.durable_seq()) --durable;
  if (durable > store::kPendingExtentsMax) {
    s.keep_off = true;
    return Status::Ok();
  }
  Bytes data = store::EncodePendingLiveHeader(*s.point);
  Bytes frame = store::EncodePendingFrame(std::span(s.extents).first(durable));
  data.insert(data.end(), frame.begin(), frame.end());
  const std::string path = store.PendingPath();
  // A failure here fails the session (as a pack's would): nothing more is acknowledged, so a file
  // that did reach the disk still holds every record acknowledged.
  BR_RETURN_IF_ERROR(store.env()->WriteFileAtomic(path, data).Annotate("keep point " +
                                                                        std::to_string(s.point->point_id) + " live"));
  BR_ASSIGN_OR_RETURN(std::unique_ptr<File> file, store.env()->Open(path, OpenMode::kReadWrite));
  s.keep_file = std::move(file);
  s.keep_end = data.size();
  s.keep_extents = durable;
  Log(kProg, what() + " is kept live from here (" + std::to_string(durable) + " durable records, " +
                 std::to_string(s.point_bytes) + " bytes so far): a staging killed now offers it to resume");
  return Status::Ok();
}

std::optional<store::PackAppender::Follower> Server::LiveKeepFrame(Session& s) {
  if (!s.keep_file || s.pack.inflight() || s.pack.batch_bytes() == 0) return std::nullopt;
  BR_CHECK(s.keep_extents < s.extents.size());  // the batch holds records, each an extent
  store::PackAppender::Follower f;
  f.file = s.keep_file;
  f.offset = s.keep_end;
  f.bytes = store::EncodePendingFrame(std::span(s.extents).subspan(s.keep_extents));
  f.write_user_data = UserData(s.id, kOpKeepWrite);
  f.sync_user_data = UserData(s.id, kOpKeepSync);
  s.keep_inflight_extents = s.extents.size();
  return f;
}

void Server::EndLiveKeep(Session& s) {
  s.keep_file.reset();  // a commit in flight holds it open until its end
  s.keep_end = 0;
  s.keep_extents = s.keep_inflight_extents = 0;
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
  if (h.role == wire::Role::kOperator) return OnOperatorHello(s);
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
    auto opened = store::ServerStore::Open(opts_.store_dir, h.server_id, true, opts_.env);
    if (!opened.ok()) {
      servers_.erase(h.server_id);
      FailStore(s, opened.status());
      return Status::Ok();
    }
    Result<ServerMirror*> attached = AttachBucket(**opened, h.server_id);
    if (!attached.ok()) {
      servers_.erase(h.server_id);
      FailStore(s, attached.status());
      return Status::Ok();
    }
    st.store = std::move(opened).value();
    st.mirror = *attached;
    LoadPending(st, h.server_id);
    SetPackUsage(st, CountPacks(*st.store));
  }
  if (st.mirror != nullptr && st.mirror->leased() && !st.mirror->LeaseHeld()) {
    // Another frontend may write this chain: the lease first (a job: requests to the bucket),
    // then this HELLO again (it waits, unconsumed, while the job runs).
    if (st.lease_refusal) {
      Status refusal = std::move(*st.lease_refusal);
      st.lease_refusal.reset();
      Fail(s, wire::ErrorCode::kBusy, refusal);
      return Status::Ok();
    }
    if (!PostLeaseJob(h.server_id, st, true)) {
      Fail(s, wire::ErrorCode::kBusy, Unavailable("the staging's store worker is saturated; retry later"));
      return Status::Ok();
    }
    s.defer_frame = true;
    return Status::Ok();
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
    // It does not continue the chain: never offered, whatever a restart finds.
    if (Status dropped = DropPending(st); !dropped.ok()) Log(kProg, "warning: " + dropped.message());
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
  if (s.server->pending)
    Log(kProg, "server '" + s.server_id + "': agent starts point " + std::to_string(b.point_id) +
                   " afresh; the interrupted one is dropped");
  // Also a file no memory knows of (a failed session's live one, one a crash brought back): a
  // staging that restarts must never offer an older try of this point.
  BR_RETURN_IF_ERROR(DropPending(*s.server));
  EndLiveKeep(s);
  s.keep_off = false;
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
  EndLiveKeep(s);
  s.keep_off = false;
  s.point = p->begin;
  s.seals.assign(s.point->volume_sizes.size(), std::nullopt);
  s.extents = std::move(p->extents);
  s.extent_seqs.assign(s.extents.size(), 0);
  s.session_records = 0;
  s.point_bytes = p->bytes;
  // From here its records live in this session (and are saved again if it is interrupted).
  BR_RETURN_IF_ERROR(DropPending(*s.server));
  Log(kProg, "server '" + s.server_id + "': point " + std::to_string(m.point_id) + " resumed with " +
                 std::to_string(s.extents.size()) + " durable records");
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
    if (s.seals[v]->label != s.seals[0]->label)
      return ProtocolError("the SEALs of volumes 0 and " + std::to_string(v) + " carry different labels");
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

void Server::FailQuota(Session& s, const std::string& what) {
  // Like a full store, for this server only: the agent backs off keeping its dirty state, and
  // finishes once retention frees space or the operator raises the quota.
  Fail(s, wire::ErrorCode::kQuotaExceeded,
       NoSpace("quota exceeded: server '" + s.server_id + "': " + what +
               "; nothing acknowledged is lost (the agent waits): let retention free space or raise the quota"));
}

void Server::FailStore(Session& s, const Status& st) {
  bool full = st.code() == Code::kNoSpace;
  Fail(s, full ? wire::ErrorCode::kStoreFull : wire::ErrorCode::kStoreError,
       st.Annotate(full ? "staging store is full" : "staging cannot write its store"));
}

}  // namespace blockrep::staging
