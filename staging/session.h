// The staging's internals shared by its rooms (server.cc: the loop, listener and session
// lifecycle; agent_session.cc, pack_writer.cc, reader_session.cc, store_jobs.cc: what a session
// asks for): its limits, the ring's operation codes, and the state of one session. Not a public
// header: only staging/ includes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "blockrep/net/channel.h"
#include "blockrep/store/pack_appender.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/store/store.h"
#include "blockrep/net/wire.h"
#include "server.h"

namespace blockrep::staging {

inline constexpr const char* kProg = "blockrep-staging";
inline constexpr uint8_t kOpAccept = 1;
inline constexpr uint8_t kOpPackWrite = 3;
inline constexpr uint8_t kOpPackFsync = 4;
inline constexpr uint8_t kOpWake = 5;
inline constexpr uint8_t kOpWakeCancel = 6;
inline constexpr uint8_t kOpReadPack = 7;  // a reader's pack read (READ_REQUEST kind pack)
inline constexpr uint8_t kOpKeepWrite = 8;  // the live PENDING file's frame, after the pack's commit
inline constexpr uint8_t kOpKeepSync = 9;
inline constexpr uint64_t kListenerId = 0;
// The StoreWorker's eventfd read: an id no session reaches (they count from 1).
inline constexpr uint64_t kWorkerId = 1ull << 55;
// Group commit: records gather in `batch` while one write+fsync is in flight; reading from the
// socket pauses once a batch holds this much, which bounds staging memory per session.
inline constexpr size_t kBatchBytesMax = 8u << 20;
inline constexpr size_t kInboxBytesMax = 4u << 20;
// With many agents sending at once, each session's batch, inbox and receive buffer get a share of
// these budgets (never less than the minimums), so the staging's memory stays bounded whatever
// the number of agents (P6: 256 MiB with 64 agents). A batch is double-buffered (one filling,
// one committing): twice its share. A frame larger than the inbox's share (a seal, up to 800 KiB)
// grows that inbox for as long as it takes to arrive (Channel::NeedWhole).
inline constexpr size_t kBatchBytesBudget = 32u << 20;
inline constexpr size_t kInboxBytesBudget = 16u << 20;
inline constexpr size_t kRecvBytesBudget = 8u << 20;
inline constexpr size_t kBatchBytesMin = 256u << 10;
// An agent's RECORD frame: a 64 KiB extent (ReadPipeline::kRecordBytes) and its 16 fingerprints.
// A full sync's sweep sends records of up to 512 KiB: such a frame grows the inbox while it
// arrives, and a batch holds one of them alone once it would pass its share (HandleFrames).
inline constexpr size_t kAgentRecordFrameBytes =
    wire::kFrameHeaderSize + 8 + 4 + kRecordHeaderSize + (64u << 10) + kTagSize + 16 * 8;
inline constexpr size_t kInboxBytesMin = 2 * kAgentRecordFrameBytes;
inline constexpr size_t kRecvBytesMin = 64u << 10;
static_assert(kBatchBytesMin <= kBatchBytesMax && kInboxBytesMin <= kInboxBytesMax);
static_assert(kInboxBytesMin <= wire::kFrameHeaderSize + wire::kMaxFramePayload);
// A batch passes its limit only with its first record: an agent's 64 KiB one and its
// fingerprints fit in this much more; a larger one grows the buffer past it.
inline constexpr size_t kBatchReserveExtraBytes = 128u << 10;
// A session that received no RECORD for this long gives back its buffers' memory (Channel and
// PackAppender ReleaseBuffers, its cached index), so an idle agent costs little (P6: <= 4 MiB).
inline constexpr uint64_t kIdleTrimNs = 2ull * 1000000000ull;
// A connection that has not finished TLS and HELLO by then is dropped, so idle or hostile peers
// cannot hold session slots.
inline constexpr uint64_t kHelloDeadlineNs = 10ull * 1000000000ull;
// Connections that have not yet finished TLS and HELLO cost the staging memory and turns but prove
// nothing: they get a budget of their own, apart from authenticated sessions (opts.max_sessions),
// in total and per peer address. A new connection over budget evicts the oldest waiting one (an
// agent's handshake takes milliseconds; what waits longest is what is idle or slow on purpose).
inline constexpr size_t kPreAuthMax = 256;
inline constexpr size_t kPreAuthPerAddressMax = 64;
// Events about unauthenticated connections (evictions, deadlines, TLS failures) are logged at most
// kPreAuthLogLines a window; the rest are counted and summed up in one line.
inline constexpr unsigned kPreAuthLogLines = 10;
inline constexpr uint64_t kPreAuthLogWindowNs = 10ull * 1000000000ull;
// A refused session waits this long for the agent to read its ERROR and hang up, then closes
// anyway: an agent that never hangs up must not hold its server-id's session slot.
inline constexpr uint64_t kRefusedLingerNs = 5ull * 1000000000ull;
// A session starts a new pack past this size, so that a long-lived session's older records can
// be compacted (the pack being appended never is) and a bucket takes each pack with one PUT: a
// record that would go past it waits until the pack's last group commit is durable
// (Server::OnRecord). A pack holds at most this much and one record.
inline constexpr uint64_t kPackRollBytes = 64ull << 20;
// A reader (recovery over --staging) pipelines READ_REQUESTs; the staging stops taking them while
// this much of its answers waits to be sent, which bounds its memory per reader.
inline constexpr size_t kReaderUnsentMax = 4u << 20;
// Per session, one agent cannot hold the loop or the memory every session shares: once this much
// of its replies are unsent (it does not read them), its requests wait in its inbox (bounded,
// kInboxBytesMax) and then in its socket. Readers stream READ_DATA, so they get kReaderUnsentMax.
inline constexpr size_t kAgentUnsentMax = 1u << 20;
// A session handles at most this many frames, and for at most this long, per loop turn; what is
// left waits for the next turn, after every other session had its own.
inline constexpr unsigned kFramesPerTurnMax = 256;
inline constexpr uint64_t kTurnBudgetNs = 2000000;  // 2 ms
// Manifest and index bytes a reader is being served, per session (one object at a time each).
inline constexpr size_t kReaderSnapshotsMax = 4;

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
  uint64_t last_record_ns = 0;  // last RECORD (kIdleTrimNs)
  bool trimmed = false;         // its buffers were given back since that RECORD
  uint64_t key_id = 0;
  bool reader = false;  // a recovery tool (wire::Role::kReader): reads only, never holds the server's slot
  bool fleet_view = false;  // an operator (wire::Role::kOperator): every server's figures, nothing else

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

  // The pack being appended, with its group commit; durable_seq() is what ACK acknowledges.
  store::PackAppender pack;
  uint64_t pack_bytes_counted = 0;  // of the pack's durable bytes, those in ServerState::pack_bytes

  // The open point's live PENDING file (Server::PrepareLiveKeep): null while it has none. Its
  // frames list extents [0, keep_extents) (durable, acknowledged or about to be); the commit in
  // flight carries those up to keep_inflight_extents.
  std::shared_ptr<File> keep_file;
  uint64_t keep_end = 0;  // bytes of the file
  size_t keep_extents = 0, keep_inflight_extents = 0;
  bool keep_off = false;  // the point grew past kPendingExtentsMax: not kept live any more

  uint64_t commit_started_ns = 0;  // the pack's group commit in flight began (for /metrics)
  bool committing = false;    // the open point is with the StoreWorker (MaybeCommitPoint)
  bool defer_frame = false;   // the frame just handled must wait (its server's job runs): not consumed
  bool reader_pulled = false;  // a reader's HELLO had the bucket's chain pulled (PostReaderPull)
  // The agent hung up inside a point: the frames it sent before (its last records, SEALs and
  // END_POINT) are still handled, made durable and committed; nothing more is sent or received;
  // then the session closes (Server::DrainDone).
  bool draining = false;

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

}  // namespace blockrep::staging
