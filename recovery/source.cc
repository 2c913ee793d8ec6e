#include "source.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <map>
#include <set>
#include <thread>

#include "blockrep/net/channel.h"
#include "blockrep/base/checksum.h"
#include "blockrep/base/cli.h"
#include "blockrep/base/env.h"
#include "blockrep/base/fs.h"
#include "blockrep/net/tcp.h"
#include "blockrep/net/uring.h"
#include "blockrep/net/wire.h"
#include "restore.h"
#include "span_queue.h"
#include "stretch_reader.h"

namespace blockrep::recovery {

void FillTlsDefaults(SourceSpec* spec) {
  std::string dir = ".";
  size_t slash = spec->key_file.rfind('/');
  if (slash != std::string::npos) dir = spec->key_file.substr(0, slash == 0 ? 1 : slash);
  if (spec->tls.cert.empty()) spec->tls.cert = dir + "/agent-" + spec->server_id + ".crt";
  if (spec->tls.key.empty()) spec->tls.key = dir + "/agent-" + spec->server_id + ".key";
  if (spec->tls.ca.empty()) spec->tls.ca = dir + "/ca.crt";
}

Status CheckSourceFlags(const SourceSpec& spec, const char* command) {
  if (spec.store_dir.empty() == spec.staging.empty())
    return InvalidArgument(std::string(command) + " needs exactly one of --store DIR or --staging HOST:PORT");
  if (spec.server_id.empty()) return InvalidArgument(std::string(command) + " needs --server-id ID");
  return Status::Ok();
}

namespace {

// ---- a store directory -------------------------------------------------------------------

class LocalSource : public PointSource {
 public:
  LocalSource(std::string dir, std::string server_id, std::shared_ptr<Env> env)
      : dir_(std::move(dir)), server_id_(std::move(server_id)), env_(std::move(env)) {}

  std::string Describe() const override { return "store " + dir_; }

  Result<store::Manifest> LoadManifest() override {
    BR_RETURN_IF_ERROR(store::InitStoreRoot(dir_, false, env_.get()));
    BR_ASSIGN_OR_RETURN(auto st, store::ServerStore::Open(dir_, server_id_, false, env_.get()));
    server_dir_ = st->dir();
    return st->manifest();
  }

  Result<store::PointIndex> OpenPoint(store::PointInfo& point, bool allow_damaged) override {
    auto packs = std::make_unique<store::PackReader>("", env_.get());
    BR_ASSIGN_OR_RETURN(store::PointIndex idx,
                        LoadAndPin(dir_, server_id_, point, packs.get(), allow_damaged, env_.get()));
    packs_[point.id] = std::move(packs);
    return idx;
  }

  void AdviseRecords(uint64_t point_id, const std::vector<const store::IndexEntry*>& entries) override {
    auto it = packs_.find(point_id);
    if (it == packs_.end()) return;
    uint64_t advised = 0;
    for (size_t i = 0; i < entries.size() && advised < StretchReader::kAdviseAheadBytes; ++i) {
      auto fd = it->second->Fd(entries[i]->pack);
      // Advice only: a pack that cannot be opened is reported when it is read.
      if (fd.ok()) (void)posix_fadvise(*fd, static_cast<off_t>(entries[i]->pack_offset), entries[i]->record_bytes, POSIX_FADV_WILLNEED);
      advised += entries[i]->record_bytes;
    }
  }

  Status ReadRecords(uint64_t point_id, const std::vector<const store::IndexEntry*>& entries,
                     const RecordFn& fn) override {
    auto it = packs_.find(point_id);
    if (it == packs_.end()) return Internal("point " + std::to_string(point_id) + " was not opened");
    StretchReader reader(it->second.get());
    return reader.Read(entries, fn);
  }

  Status ReadRanges(uint64_t point_id, const std::vector<PackRange>& ranges, const RangeFn& fn) override {
    auto it = packs_.find(point_id);
    if (it == packs_.end()) return Internal("point " + std::to_string(point_id) + " was not opened");
    for (size_t i = 0; i < ranges.size(); ++i) {
      const PackRange& r = ranges[i];
      Status st;
      auto pack = it->second->Pack(r.pack);
      if (!pack.ok()) st = pack.status();
      if (st.ok()) {
        buf_.resize(r.length);
        st = (*pack)->ReadExact(r.offset, buf_.data(), r.length);
        if (!st.ok()) st = DataLoss("pack " + std::to_string(r.pack) + " offset " + std::to_string(r.offset) + ": " + st.message());
      }
      BR_RETURN_IF_ERROR(fn(i, st, st.ok() ? ByteSpan(buf_) : ByteSpan()));
    }
    return Status::Ok();
  }

  Status AppendDrillReport(const std::string& line) override {
    if (server_dir_.empty()) BR_RETURN_IF_ERROR(LoadManifest().status());
    std::string path = server_dir_ + "/drills.jsonl";
    std::string text = line + "\n";
    return env_->AppendDurably(path, ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }

 private:
  std::string dir_, server_id_, server_dir_;
  std::shared_ptr<Env> env_;  // the real filesystem, or a bucket (read-only)
  std::map<uint64_t, std::unique_ptr<store::PackReader>> packs_;  // per opened point: its pinned packs
  Bytes buf_;
};

// ---- a staging over TLS ------------------------------------------------------------------

constexpr uint64_t kChannelId = 1;
constexpr size_t kInboxBytesMax = 4u << 20;
// Bytes asked for and not yet received: enough to keep a long link busy (a 100 ms round trip at
// 1 Gbit/s holds 12.5 MB), bounded so the client's memory is too.
constexpr uint64_t kWindowBytes = 16u << 20;
constexpr size_t kRequestsInFlightMax = 1024;
// Reads of at least this much run the network on a thread of their own (ReadRecords), with at
// most kPrefetchBytesMax received and not yet taken by the caller.
constexpr uint64_t kPrefetchMinBytes = 8u << 20;
constexpr size_t kPrefetchBytesMax = 8u << 20;
constexpr int kStepTimeoutMs = 1000;

class RemoteSource : public PointSource {
 public:
  static Result<std::unique_ptr<RemoteSource>> Connect(const SourceSpec& spec, std::vector<uint64_t> key_ids,
                                                       wire::Role role = wire::Role::kReader) {
    std::unique_ptr<RemoteSource> r(new RemoteSource(spec, std::move(key_ids)));
    r->role_ = role;
    BR_ASSIGN_OR_RETURN(r->hp_, ParseHostPort(spec.staging, "--staging"));
    BR_ASSIGN_OR_RETURN(r->tls_ctx_, TlsContext::Create(spec.tls, false));
    BR_ASSIGN_OR_RETURN(r->ring_, Ring::Create(64));
    BR_RETURN_IF_ERROR(r->Open());
    return r;
  }
  ~RemoteSource() override { CloseChannel(); }

  std::string Describe() const override { return "staging " + spec_.staging; }

  // An operator session's one question (wire::Role::kOperator).
  Result<wire::Fleet> FetchFleet() {
    BR_RETURN_IF_ERROR(Send(wire::MsgType::kFleetRequest, Bytes()));
    for (;;) {
      BR_ASSIGN_OR_RETURN(auto f, NextFrame());
      if (f.first == wire::MsgType::kFleet) return wire::Fleet::Decode(f.second);
      if (f.first != wire::MsgType::kPong) return ProtocolError("unexpected answer to FLEET_REQUEST");
    }
  }


  Result<store::Manifest> LoadManifest() override {
    BR_RETURN_IF_ERROR(EnsureLive());
    BR_ASSIGN_OR_RETURN(Bytes data, FetchObject(wire::ReadKind::kManifest, 0));
    auto m = store::Manifest::Decode(data);
    if (!m.ok()) return m.status().Annotate("the manifest the staging sent");
    if (m->server_id != spec_.server_id)
      return DataLoss("the staging sent the manifest of server '" + m->server_id + "' for '" + spec_.server_id + "'");
    return m;
  }

  Result<store::PointIndex> OpenPoint(store::PointInfo& point, bool) override {
    // The manifest names the index the staging will serve (it pins that index's packs for this
    // session); a compaction between the two reads changes the checksum: read both again.
    for (int attempt = 0; attempt < 5; ++attempt) {
      BR_ASSIGN_OR_RETURN(store::Manifest m, LoadManifest());
      const store::PointInfo* now = nullptr;
      for (const auto& p : m.points)
        if (p.id == point.id) now = &p;
      if (now == nullptr)
        return NotFound("server '" + spec_.server_id + "' point " + std::to_string(point.id) +
                        " is no longer on the staging (expired by retention); pick another point");
      point = *now;
      auto data = FetchObject(wire::ReadKind::kIndex, point.id);
      if (!data.ok()) return data.status();
      if (Checksum64(*data) != point.index_checksum) continue;  // rewritten meanwhile: again
      auto idx = store::PointIndex::Decode(*data);
      if (!idx.ok()) return idx.status().Annotate("the index of point " + std::to_string(point.id) + " the staging sent");
      if (idx->point_id != point.id) return DataLoss("the staging sent the index of another point");
      opened_[point.id] = point.index_checksum;
      return idx;
    }
    return Unavailable("point " + std::to_string(point.id) + " kept changing on the staging (compaction?); try again");
  }

  Status ReadRecords(uint64_t point_id, const std::vector<const store::IndexEntry*>& entries, const RecordFn& fn) override {
    // Records that sit close together in a pack (the usual case in pack order: each is followed
    // only by its fingerprints) are asked for as one span of at most kMaxReadBytes and cut apart
    // here: one request per 64 KiB record cost a third of the throughput over loopback.
    constexpr uint64_t kGapMax = 64u << 10;
    std::vector<PackRange> spans;
    std::vector<size_t> span_first;  // index into entries of each span's first record
    for (size_t i = 0; i < entries.size(); ++i) {
      const store::IndexEntry& e = *entries[i];
      if (!spans.empty()) {
        PackRange& last = spans.back();
        uint64_t end = last.offset + last.length;
        uint64_t new_end = std::max(end, e.pack_offset + e.record_bytes);
        if (e.pack == last.pack && e.pack_offset >= last.offset && e.pack_offset <= end + kGapMax &&
            new_end - last.offset <= wire::kMaxReadBytes) {
          last.length = static_cast<uint32_t>(new_end - last.offset);
          continue;
        }
      }
      spans.push_back(PackRange{e.pack, e.pack_offset, e.record_bytes});
      span_first.push_back(i);
    }
    span_first.push_back(entries.size());
    auto deliver = [&](size_t sp, const Status& read, ByteSpan bytes) -> Status {
      for (size_t i = span_first[sp]; i < span_first[sp + 1]; ++i) {
        const store::IndexEntry& e = *entries[i];
        Status st = read;
        ByteSpan record;
        if (st.ok()) {
          record = bytes.subspan(e.pack_offset - spans[sp].offset, e.record_bytes);
          if (Checksum64(record) != e.checksum)
            st = DataLoss("record in pack " + std::to_string(e.pack) + " at offset " + std::to_string(e.pack_offset) +
                          " fails its checksum");
        }
        BR_RETURN_IF_ERROR(fn(i, st, st.ok() ? record : ByteSpan()));
      }
      return Status::Ok();
    };
    uint64_t total = 0;
    for (const PackRange& r : spans) total += r.length;
    if (total < kPrefetchMinBytes) return ReadRanges(point_id, spans, deliver);
    // A long read (a restore): the connection, TLS and framing on a thread of their own, the
    // caller's opening and writing on this one, spans handed over through a bounded queue.
    SpanQueue queue(kPrefetchBytesMax);
    std::thread network([&] {
      queue.Finish(ReadRanges(point_id, spans, [&](size_t sp, const Status& read, ByteSpan bytes) -> Status {
        SpanQueue::Item item{sp, read, queue.TakeBuffer()};
        item.data.assign(bytes.begin(), bytes.end());
        if (!queue.Push(std::move(item))) return Unavailable("the reader stopped");
        return Status::Ok();
      }));
    });
    Status result = queue.Consume(
        [&](const SpanQueue::Item& item) { return deliver(item.index, item.status, ByteSpan(item.data)); });
    network.join();
    BR_RETURN_IF_ERROR(result);
    return queue.final_status();
  }

  Status ReadRanges(uint64_t point_id, const std::vector<PackRange>& ranges, const RangeFn& fn) override {
    BR_RETURN_IF_ERROR(EnsureLive());
    if (stale_.count(point_id))
      return Unavailable("point " + std::to_string(point_id) + " was compacted on the staging while it was open here "
                         "(its records moved); open it again (unmount and mount)");
    // Each range is asked for in chunks of at most kMaxReadBytes, many in flight (bounded by
    // kWindowBytes); answers come in request order.
    struct Want {
      size_t range;
      uint32_t offset;  // within the range
      uint32_t length;
    };
    std::deque<Want> inflight;
    uint64_t inflight_bytes = 0;
    size_t next = 0;
    uint32_t next_offset = 0;
    Bytes got;
    Status range_status;
    while (next < ranges.size() || !inflight.empty()) {
      while (next < ranges.size() && inflight.size() < kRequestsInFlightMax && inflight_bytes < kWindowBytes) {
        const PackRange& r = ranges[next];
        uint32_t len = std::min<uint32_t>(wire::kMaxReadBytes, r.length - next_offset);
        if (r.length == 0) len = 0;
        wire::ReadRequest rq;
        rq.tag = next_tag_++;
        rq.kind = wire::ReadKind::kPack;
        rq.id = r.pack;
        rq.offset = r.offset + next_offset;
        rq.length = std::max<uint32_t>(len, 1);
        BR_RETURN_IF_ERROR(Send(wire::MsgType::kReadRequest, rq.Encode()));
        inflight.push_back(Want{next, next_offset, len});
        inflight_bytes += rq.length;
        next_offset += len;
        if (next_offset >= r.length) {
          ++next;
          next_offset = 0;
        }
      }
      BR_ASSIGN_OR_RETURN(wire::ReadData d, NextReadData());
      Want w = inflight.front();
      inflight.pop_front();
      inflight_bytes -= std::max<uint32_t>(w.length, 1);
      if (d.tag != expect_tag_++) return ProtocolError("the staging answered out of order");
      const PackRange& r = ranges[w.range];
      if (w.offset == 0) {
        got.clear();
        range_status = Status::Ok();
      }
      if (range_status.ok() && d.status != wire::ReadStatus::kOk)
        range_status = DataLoss("pack " + std::to_string(r.pack) + ": the staging has no such pack");
      else if (range_status.ok() && d.data.size() < w.length)
        range_status = DataLoss("pack " + std::to_string(r.pack) + " offset " + std::to_string(r.offset) + ": the pack ends early");
      if (w.offset == 0 && w.length == r.length) {
        // The whole range in one answer: handed over in place, no copy (the usual case).
        Status st = fn(w.range, range_status, range_status.ok() ? d.data.first(w.length) : ByteSpan());
        ConsumeFrame();
        BR_RETURN_IF_ERROR(st);
        continue;
      }
      if (range_status.ok()) got.insert(got.end(), d.data.begin(), d.data.begin() + w.length);
      ConsumeFrame();
      if (w.offset + w.length < r.length) continue;  // more chunks of this range to come
      BR_RETURN_IF_ERROR(fn(w.range, range_status, range_status.ok() ? ByteSpan(got) : ByteSpan()));
    }
    return Status::Ok();
  }

  Status AppendDrillReport(const std::string& line) override {
    BR_RETURN_IF_ERROR(EnsureLive());
    wire::DrillReport r{line};
    BR_RETURN_IF_ERROR(Send(wire::MsgType::kDrillReport, r.Encode()));
    for (;;) {
      BR_ASSIGN_OR_RETURN(auto f, NextFrame());
      if (f.first == wire::MsgType::kDrillReportOk) return wire::DecodeEmpty(f.second, "DRILL_REPORT_OK");
      if (f.first != wire::MsgType::kPong) return ProtocolError("unexpected answer to DRILL_REPORT");
    }
  }

 private:
  RemoteSource(SourceSpec spec, std::vector<uint64_t> key_ids) : spec_(std::move(spec)), key_ids_(std::move(key_ids)) {}
  wire::Role role_ = wire::Role::kReader;

  Status Open() {
    BR_ASSIGN_OR_RETURN(UniqueFd owned, ConnectToStaging(hp_, spec_.staging));
    BR_ASSIGN_OR_RETURN(auto tls, TlsSession::Create(tls_ctx_.get(), hp_.host));
    ch_ = std::make_unique<Channel>(ring_.get(), owned.Release(), std::move(tls), kChannelId, kInboxBytesMax);
    last_heard_ns_ = MonotonicNs();
    next_tag_ = expect_tag_ = 1;
    while (!ch_->handshake_done()) {
      Status st = Step();
      if (!st.ok()) return st.Annotate("cannot establish TLS with staging " + spec_.staging);
    }
    wire::Hello h;
    h.server_id = spec_.server_id;
    if (!key_ids_.empty()) {
      h.key_id = key_ids_.back();
      h.retired_key_ids.assign(key_ids_.begin(), key_ids_.end() - 1);
    }
    h.role = role_;
    BR_RETURN_IF_ERROR(Send(wire::MsgType::kHello, h.Encode()));
    BR_ASSIGN_OR_RETURN(auto f, NextFrame());
    if (f.first != wire::MsgType::kHelloOk) return ProtocolError("the staging did not answer HELLO with HELLO_OK");
    BR_ASSIGN_OR_RETURN(auto ok, wire::HelloOk::Decode(f.second));
    if (ok.version != wire::kVersion)
      return ProtocolError("staging chose protocol version " + std::to_string(ok.version));
    return Status::Ok();
  }

  // A reader can sit idle (a mounted point nobody reads), and the staging closes sessions silent
  // for 30 s. Before a request after a pause: a PING; if the connection is gone, connect again
  // and pin the opened points anew (a point whose index changed meanwhile cannot be read on).
  Status EnsureLive() {
    if (ch_ && MonotonicNs() - last_heard_ns_ < wire::kPingAfterNs) return Status::Ok();
    if (ch_) {
      Status ping = Send(wire::MsgType::kPing, Bytes());
      while (ping.ok()) {
        auto frame = wire::ParseFrame(ch_->inbox());
        if (!frame.ok()) return frame.status();
        if (frame->has_value()) {
          bool pong = (*frame)->type == wire::MsgType::kPong;
          if (!pong) return ProtocolError("unexpected message while idle");
          ch_->Consume((*frame)->total_size);
          return Status::Ok();
        }
        ping = Step();
      }
      Log("blockrep-recover", "the connection to staging " + spec_.staging + " was lost (" + ping.message() + "); reconnecting");
      CloseChannel();
    }
    BR_RETURN_IF_ERROR(Open());
    std::map<uint64_t, uint64_t> opened = opened_;
    for (const auto& [id, checksum] : opened) {
      auto data = FetchObject(wire::ReadKind::kIndex, id);
      if (!data.ok() || Checksum64(*data) != checksum) stale_.insert(id);
    }
    return Status::Ok();
  }

  void CloseChannel() {
    if (!ch_) return;
    ch_->Shutdown();
    // Reap the recv/send in flight before their buffers go (io_uring: cancel and reap first).
    for (int i = 0; i < 50 && !ch_->idle(); ++i)
      ring_->Reap([&](uint64_t ud, int res, uint32_t) { ch_->OnCompletion(UserDataOp(ud), res).IgnoreError(); }, true, 100)
          .status()
          .IgnoreError();  // teardown: nothing left to report to
    ch_.reset();
  }

  Status Send(wire::MsgType type, const Bytes& payload) {
    Bytes frame;
    wire::AppendFrame(&frame, type, payload);
    return ch_->Send(frame);
  }

  // One turn of the loop: post what the channel needs, wait for completions (up to a second).
  Status Step() {
    BR_RETURN_IF_ERROR(ch_->Pump());
    Status failure;
    auto n = ring_->Reap(
        [&](uint64_t ud, int res, uint32_t) {
          if (UserDataOp(ud) == Channel::kOpRecv && res > 0) last_heard_ns_ = MonotonicNs();
          Status st = ch_->OnCompletion(UserDataOp(ud), res);
          if (!st.ok() && failure.ok()) failure = st;
        },
        true, kStepTimeoutMs);
    if (!n.ok()) return n.status();
    // An ERROR the staging sent before closing explains the close better than the close.
    auto peer = PeerError();
    if (!peer.ok()) return peer;
    if (!failure.ok()) {
      if (failure.code() == Code::kUnauthenticated)
        return Unauthenticated("the staging rejected our TLS certificate or we rejected its (" + failure.message() +
                               "); use the agent's certificate of this server-id and the staging's CA (--tls-cert, --tls-ca)");
      return failure;
    }
    if (MonotonicNs() - last_heard_ns_ > wire::kPeerSilentNs)
      return Unavailable("no word from staging " + spec_.staging + " for " +
                         std::to_string(wire::kPeerSilentNs / 1000000000) + " s");
    return Status::Ok();
  }

  Status PeerError() {
    auto frame = wire::ParseFrame(ch_->inbox());
    if (!frame.ok() || !frame->has_value() || (*frame)->type != wire::MsgType::kError) return Status::Ok();
    auto e = wire::ErrorMsg::Decode((*frame)->payload);
    if (!e.ok()) return e.status();
    Code code = (e->code == wire::ErrorCode::kIdentity || e->code == wire::ErrorCode::kKeyMismatch)
                    ? Code::kPermissionDenied
                : e->code == wire::ErrorCode::kBadPoint ? Code::kNotFound
                                                        : Code::kUnavailable;
    return Status(code, "staging refused: " + e->message);
  }

  // The next frame (type, payload copy), PONGs answered by nothing and skipped.
  Result<std::pair<wire::MsgType, Bytes>> NextFrame() {
    for (;;) {
      BR_ASSIGN_OR_RETURN(auto frame, wire::ParseFrame(ch_->inbox()));
      if (frame) {
        if (frame->type == wire::MsgType::kError) {
          BR_RETURN_IF_ERROR(PeerError());
        }
        std::pair<wire::MsgType, Bytes> out{frame->type, Bytes(frame->payload.begin(), frame->payload.end())};
        ch_->Consume(frame->total_size);
        if (out.first == wire::MsgType::kPong) continue;
        return out;
      }
      BR_RETURN_IF_ERROR(Step());
    }
  }

  // The next READ_DATA, decoded in place: its data points into the channel's inbox and stays
  // valid until ConsumeFrame().
  Result<wire::ReadData> NextReadData() {
    for (;;) {
      BR_ASSIGN_OR_RETURN(auto frame, wire::ParseFrame(ch_->inbox()));
      if (frame) {
        if (frame->type == wire::MsgType::kReadData) {
          pending_consume_ = frame->total_size;
          return wire::ReadData::Decode(frame->payload);
        }
        if (frame->type == wire::MsgType::kError) BR_RETURN_IF_ERROR(PeerError());
        if (frame->type != wire::MsgType::kPong)
          return ProtocolError("the staging answered a read with message type " +
                               std::to_string(static_cast<int>(frame->type)));
        ch_->Consume(frame->total_size);
        continue;
      }
      BR_RETURN_IF_ERROR(Step());
    }
  }
  void ConsumeFrame() {
    ch_->Consume(pending_consume_);
    pending_consume_ = 0;
  }

  // A whole manifest or index, in kMaxReadBytes chunks (pipelined once its size is known).
  Result<Bytes> FetchObject(wire::ReadKind kind, uint64_t id) {
    Bytes out;
    uint64_t size = UINT64_MAX;
    uint64_t asked = 0;
    size_t outstanding = 0;
    auto ask = [&](uint64_t offset) -> Status {
      wire::ReadRequest rq;
      rq.tag = next_tag_++;
      rq.kind = kind;
      rq.id = id;
      rq.offset = offset;
      rq.length = wire::kMaxReadBytes;
      ++outstanding;
      return Send(wire::MsgType::kReadRequest, rq.Encode());
    };
    BR_RETURN_IF_ERROR(ask(0));
    asked = wire::kMaxReadBytes;
    while (outstanding > 0) {
      BR_ASSIGN_OR_RETURN(wire::ReadData d, NextReadData());
      --outstanding;
      if (d.tag != expect_tag_++) return ProtocolError("the staging answered out of order");
      if (d.status == wire::ReadStatus::kNotFound) {
        ConsumeFrame();
        for (; outstanding > 0; --outstanding) {  // answers still due for this object: drain them
          auto more = NextReadData();
          if (!more.ok()) return more.status();
          ++expect_tag_;
          ConsumeFrame();
        }
        return NotFound(kind == wire::ReadKind::kIndex ? "point " + std::to_string(id) + " is not on the staging"
                                                      : "the staging has no manifest for this server");
      }
      if (size == UINT64_MAX) {
        size = d.object_bytes;
        if (size > store::kMaxIndexBytes) return ProtocolError("the staging announced a " + std::to_string(size) + "-byte object");
        out.reserve(size);
        for (; asked < size && outstanding < 64; asked += wire::kMaxReadBytes) BR_RETURN_IF_ERROR(ask(asked));
      } else if (d.object_bytes != size) {
        return ProtocolError("the object changed size while it was read");
      }
      out.insert(out.end(), d.data.begin(), d.data.end());
      ConsumeFrame();
      for (; asked < size && outstanding < 64; asked += wire::kMaxReadBytes) BR_RETURN_IF_ERROR(ask(asked));
    }
    if (out.size() != size) return ProtocolError("the staging sent " + std::to_string(out.size()) + " of " + std::to_string(size) + " bytes");
    return out;
  }

  SourceSpec spec_;
  std::vector<uint64_t> key_ids_;  // the key file's, oldest first (HELLO); empty: no key
  HostPort hp_;
  std::unique_ptr<TlsContext> tls_ctx_;
  std::unique_ptr<Ring> ring_;
  std::unique_ptr<Channel> ch_;
  uint64_t last_heard_ns_ = 0;
  uint64_t next_tag_ = 1, expect_tag_ = 1;
  size_t pending_consume_ = 0;  // bytes of the READ_DATA frame last decoded in place
  std::map<uint64_t, uint64_t> opened_;  // point id -> checksum of the index it was opened with
  std::set<uint64_t> stale_;              // opened points whose index changed across a reconnect
};

}  // namespace

Status ReadVolumeFingerprints(PointSource& source, const store::PointIndex& index, uint16_t volume,
                              std::vector<uint64_t>* out) {
  constexpr uint64_t kBlock = kBlockBytes;
  out->assign((index.volume_sizes[volume] + kBlock - 1) / kBlock, 0);  // no entry: zeros
  std::vector<PointSource::PackRange> ranges;
  std::vector<uint64_t> first_block;
  for (const store::IndexEntry& e : index.entries) {
    if (e.volume != volume) continue;
    uint64_t count = (e.length + kBlock - 1) / kBlock;
    if (e.offset % kBlock != 0 || e.offset_in_record % kBlock != 0) {
      for (uint64_t b = 0; b < count; ++b) (*out)[e.offset / kBlock + b] = store::kFingerprintUnknown;
      continue;
    }
    ranges.push_back({e.pack, e.pack_offset + e.record_bytes + (e.offset_in_record / kBlock) * 8,
                      static_cast<uint32_t>(count * 8)});
    first_block.push_back(e.offset / kBlock);
  }
  return source.ReadRanges(index.point_id, ranges, [&](size_t i, const Status& read, ByteSpan bytes) {
    uint64_t count = ranges[i].length / 8;
    for (uint64_t b = 0; b < count; ++b) {
      uint64_t v = store::kFingerprintUnknown;  // unreadable: compare as different, fetch the record
      if (read.ok()) {
        v = 0;
        for (int k = 7; k >= 0; --k) v = (v << 8) | bytes[b * 8 + static_cast<size_t>(k)];
      }
      (*out)[first_block[i] + b] = v;
    }
    return Status::Ok();
  });
}

Result<wire::Fleet> FetchFleet(const SourceSpec& spec) {
  BR_ASSIGN_OR_RETURN(auto remote, RemoteSource::Connect(spec, {}, wire::Role::kOperator));
  return remote->FetchFleet();
}

Result<std::shared_ptr<Env>> OpenStoreEnv(const std::string& store_dir, const S3Flags& s3, std::string* root) {
  if (!IsS3Url(store_dir)) {
    if (!s3.endpoint.empty() || !s3.credentials_file.empty() || !s3.ca_file.empty())
      return InvalidArgument("--s3-endpoint, --s3-credentials and --s3-ca go with --store s3://BUCKET/PREFIX, not --store " +
                             store_dir);
    *root = store_dir;
    return std::shared_ptr<Env>(Env::Default(), [](Env*) {});  // lives for the whole process
  }
  BR_ASSIGN_OR_RETURN(std::unique_ptr<S3ReadEnv> env, S3ReadEnv::Open(store_dir, s3));
  BR_RETURN_IF_ERROR(env->Probe());
  *root = env->root();
  return std::shared_ptr<Env>(std::move(env));
}

Result<std::unique_ptr<PointSource>> OpenSource(const SourceSpec& spec, const std::vector<DataKey>& keys) {
  if (!spec.store_dir.empty()) {
    std::string root;
    BR_ASSIGN_OR_RETURN(std::shared_ptr<Env> env, OpenStoreEnv(spec.store_dir, spec.s3, &root));
    return std::unique_ptr<PointSource>(new LocalSource(root, spec.server_id, std::move(env)));
  }
  std::vector<uint64_t> ids;
  for (const DataKey& k : keys) ids.push_back(k.key_id);
  BR_ASSIGN_OR_RETURN(auto remote, RemoteSource::Connect(spec, std::move(ids)));
  return std::unique_ptr<PointSource>(std::move(remote));
}

}  // namespace blockrep::recovery
