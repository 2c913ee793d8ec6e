// What runs on the StoreWorker for a session or a server: point commits, the last point's index
// queries (fingerprints, base seals), retention and compaction; and their completions on the loop.
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
        cache->reader = std::make_unique<store::PackReader>(store->dir(), store->env());
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
                          reply.values.assign((rq.length + kBlockBytes - 1) / kBlockBytes, store::kFingerprintUnknown);
                          // A volume the point lacks, or the part past its end, has nothing to compare with.
                          uint64_t size = rq.volume < index.volume_sizes.size() ? index.volume_sizes[rq.volume] : 0;
                          if (rq.offset < size) {
                            std::vector<uint64_t> known((std::min(rq.length, size - rq.offset) + kBlockBytes - 1) / kBlockBytes);
                            BR_RETURN_IF_ERROR(reader.ReadFingerprints(index, rq.volume, rq.offset, &known));
                            std::copy(known.begin(), known.end(), reply.values.begin());
                          }
                          return reply.Encode();
                        });
}

Status Server::MaybeCommitPoint(Session& s) {
  if (!s.end || !s.point || s.committing) return Status::Ok();
  if (s.end->last_seq > s.pack.durable_seq()) return Status::Ok();  // records still on their way to disk
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
  EndLiveKeep(s);  // its file, if any, is removed by the job once the point is committed
  for (auto& seal : s.seals) c->seals.push_back(std::move(*seal));  // all present: OnEndPoint checked
  c->key_id = s.key_id;
  store::PointInfo& info = c->info;
  info.id = s.point->point_id;
  info.time_ns = s.point->time_ns;
  // Known only at the end (freeze, label); OnEndPoint checked that every seal says the same.
  info.flags = s.end->flags & (store::kPointConsistent | store::kPointLabelled);
  info.label = c->seals.front().label;
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
      BR_RETURN_IF_ERROR(store->CommitPoint(c->info, idx, c->key_id));
      // The point's live PENDING file, if it had one, is stale now. Removed here, off the loop and
      // without a directory sync: one that a crash brings back names a committed point, which a
      // restart ignores and BEGIN_POINT removes (Server::LoadPending, OnBeginPoint).
      store->env()->Remove(store->PendingPath()).IgnoreError();
      return Status::Ok();
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
  BR_CHECK_MSG(it != sessions_.end(), "a session of a server with a job in flight is never erased");
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
  ++st.figures.points_committed_total;
  s.point.reset();
  s.end.reset();
  s.extents.clear();
  s.extent_seqs.clear();
  s.seals.clear();
  s.session_records = 0;
  if (!s.ch->closing()) SendFrame(s, wire::MsgType::kPointAck, pa.Encode());
  // In a bucket a pack is an object written whole: one that a committed point names is not
  // appended to again (the next record starts a new pack), so it is uploaded once.
  if (st.store->published() && s.pack.open() && s.pack.batch_bytes() == 0 && !s.pack.inflight()) s.pack.Close();
  ApplyRetention(s.server_id, st, false);
}

std::vector<uint32_t> Server::PinnedPacks(const ServerState& st) const {
  std::set<uint32_t> pinned;
  for (const auto& [id, s] : sessions_) {
    if (s->server != &st) continue;
    if (s->pack.pack_id() != 0) pinned.insert(s->pack.pack_id());
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
  if (run.compacted) {
    ++figures_.compactions;
    figures_.compaction_reclaimed_bytes += run.compaction.bytes_reclaimed;
  }
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

bool Server::PostLeaseJob(const std::string& server_id, ServerState& st, bool for_hello) {
  ServerMirror* mirror = st.mirror;
  ServerState* state = &st;
  const std::string root = opts_.store_dir;
  Env* env = opts_.env;
  return PostJob(st, [this, mirror, state, server_id, root, env, for_hello]() -> StoreWorker::Done {
    // Worker thread: the server's store and its mirror are ours until `done` runs.
    Result<bool> taken = mirror->AcquireLease();
    Status failed = taken.ok() ? Status::Ok() : taken.status();
    std::optional<ServerMirror::PullStats> pulled;
    std::unique_ptr<store::ServerStore> reopened;
    if (taken.ok() && *taken) {
      auto over = mirror->TakeOver(root + "/servers/" + server_id);
      if (over.ok()) {
        pulled = *over;
        auto opened = store::ServerStore::Open(root, server_id, false, env);
        if (opened.ok()) reopened = std::move(opened).value();
        else failed = opened.status();
      } else {
        failed = over.status();
      }
      if (!failed.ok()) mirror->ReleaseLease();  // the cache is not the bucket's chain: let another frontend try
    }
    auto holder = std::make_shared<std::unique_ptr<store::ServerStore>>(std::move(reopened));
    return [this, mirror, state, server_id, failed, pulled, holder, for_hello]() {
      --state->jobs;
      if (!failed.ok()) {
        mirror->ForgetLease();
        if (for_hello) state->lease_refusal = failed;
        Log(kProg, failed.message());
        for (auto& [id, s] : sessions_)
          if (s->server == state && !s->reader && !s->ch->closing() && !s->failed) Fail(*s, wire::ErrorCode::kBusy, failed);
        return;
      }
      if (!*holder) return;  // renewed
      // Newly this frontend's: the chain as the bucket has it, fenced with our token. A session
      // still open on the chain as it was before is refused (its point no longer follows).
      for (auto& [id, s] : sessions_)
        if (s->server == state && !s->reader && !s->ch->closing() && !s->failed)
          Fail(*s, wire::ErrorCode::kBusy, Unavailable("the chain of server '" + server_id + "' was taken over again; reconnect"));
      ReplaceStore(*state, server_id, std::move(*holder), state->store->TakePublisher());
      Log(kProg, "server '" + server_id + "': this frontend holds its lease now (token " + std::to_string(mirror->lease_token()) +
                     "); chain at point " + std::to_string(state->store->manifest().last_point_id()) + " (" +
                     std::to_string(pulled->indexes_fetched) + " indexes, " + std::to_string(pulled->packs_fetched) +
                     " packs fetched; " + std::to_string(pulled->garbage_deleted) + " unreferenced objects deleted)");
    };
  });
}

bool Server::PostReaderPull(const std::string& server_id, ServerState& st, std::unique_ptr<ServerMirror> fresh,
                            uint64_t session_id) {
  // The job owns a fresh mirror until `done` hands it to the store it opened.
  auto owned = std::make_shared<std::unique_ptr<ServerMirror>>(std::move(fresh));
  ServerMirror* mirror = *owned ? owned->get() : st.mirror;
  ServerState* state = &st;
  const std::string root = opts_.store_dir;
  Env* env = opts_.env;
  return PostJob(st, [this, mirror, owned, state, server_id, root, env, session_id]() -> StoreWorker::Done {
    // Worker thread: the server's store and its mirror are ours until `done` runs. Read-only:
    // nothing is deleted or published; of the local packs only this frontend's own uploads stay.
    Result<ServerMirror::PullStats> pulled = mirror->Pull(root + "/servers/" + server_id, false, false);
    std::shared_ptr<std::unique_ptr<store::ServerStore>> holder = std::make_shared<std::unique_ptr<store::ServerStore>>();
    Status failed = pulled.status();
    if (pulled.ok()) {
      auto opened = store::ServerStore::Open(root, server_id, false, env);
      if (opened.ok()) *holder = std::move(opened).value();
      else if (opened.status().code() != Code::kNotFound) failed = opened.status();
    }
    return [this, mirror, owned, state, server_id, failed, holder, session_id]() {
      --state->jobs;
      if (!failed.ok()) {
        // Not what this frontend's cache holds, which may be behind: the reader is told.
        auto it = sessions_.find(session_id);
        if (it != sessions_.end() && !it->second->ch->closing() && !it->second->failed)
          Fail(*it->second, wire::ErrorCode::kStoreError,
               failed.Annotate("server '" + server_id + "': this staging frontend could not read the chain from the bucket " +
                               "(another frontend may write it); retry, or read the bucket itself with --store s3://..."));
        if (!state->store) servers_.erase(server_id);
        return;
      }
      if (!*holder) {
        if (!state->store) servers_.erase(server_id);  // nothing in the bucket either
        return;
      }
      std::unique_ptr<store::ManifestPublisher> publisher =
          *owned ? std::unique_ptr<store::ManifestPublisher>(std::move(*owned)) : state->store->TakePublisher();
      ReplaceStore(*state, server_id, std::move(*holder), std::move(publisher));
      state->mirror = mirror;
    };
  });
}

void Server::ReplaceStore(ServerState& st, const std::string& server_id, std::unique_ptr<store::ServerStore> fresh,
                          std::unique_ptr<store::ManifestPublisher> publisher) {
  fresh->set_publisher(std::move(publisher));
  st.store = std::move(fresh);
  st.pending.reset();
  LoadPending(st, server_id);
  SetPackUsage(st, CountPacks(*st.store));
}

void Server::RenewLeases() {
  for (auto& [id, st] : servers_) {
    if (st.mirror == nullptr || !st.mirror->leased() || st.jobs > 0 || !st.active) continue;
    if (!st.mirror->LeaseRenewalDue()) continue;
    if (!PostLeaseJob(id, st, false)) Log(kProg, "server '" + id + "': lease renewal postponed (the store worker is saturated)");
  }
}

}  // namespace blockrep::staging
