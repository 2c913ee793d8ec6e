// Wire protocol v1 (docs/PROTOCOL.md). Inside TLS, a stream of frames:
//
//   u32 payload_len | u16 type | u16 reserved (0) | payload
//
// payload_len <= kMaxFramePayload; anything larger, or a reserved field that is not zero, ends
// the session with a protocol error. Every message decoder checks every length it reads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/crypto/record.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/base/status.h"

namespace blockrep::wire {

// v6: seals of up to kSealRegionsMax = 32768 regions (1 MiB regions up to 32 GiB volumes).
// v7: data keys rotate: HELLO lists the sender's retired key ids, HELLO_OK the chain's key id.
// v8: each SEAL links to the point it follows (VolumeSeal::prev: id and seal MAC, under the MAC).
// v9: AGENT_REPORT. v10: a point may carry an operator's label (SEAL flag 2, then the label).
inline constexpr uint16_t kVersion = 10;
inline constexpr size_t kMaxRetiredKeys = 63;  // a key file holds at most 64 keys
inline constexpr size_t kFrameHeaderSize = 8;
// v3: a RECORD carries the keyed fingerprints of its 4 KiB blocks (blockrep/crypto/fingerprint.h).
inline constexpr uint32_t kMaxFramePayload = 8 + 4 + kRecordHeaderSize + kMaxRecordPlainBytes + kTagSize +
                                             kRecordFingerprintBytesMax;  // the largest frame
// The largest seal (SEAL, or BASE_SEAL's 3 bytes + seal) fits one frame.
static_assert(3 + kSealEncodedBytesMax <= kMaxFramePayload);
// A FINGERPRINT_REQUEST covers at most this much of a volume (16384 fingerprints, 128 KiB).
inline constexpr uint64_t kMaxFingerprintSpan = 64ull << 20;
inline constexpr size_t kMaxServerIdLen = 64;
inline constexpr size_t kMaxErrorLen = 1024;
inline constexpr uint16_t kMaxVolumes = 256;
inline constexpr uint64_t kHelloMagic = 0x0150455242434c42ull;  // "BLCBREP\x01"

enum class MsgType : uint16_t {
  kHello = 1,
  kHelloOk = 2,
  kError = 3,
  kBeginPoint = 4,
  kRecord = 5,
  kEndPoint = 6,
  kAck = 7,
  kPointAck = 8,
  kResumePoint = 9,  // v2: the agent continues the staging's interrupted point
  kFingerprintRequest = 10,  // v3: agent asks for the last point's fingerprints of a range
  kFingerprints = 11,        // v3: the staging's answer
  kPing = 12,                // v4: agent -> staging when it has heard nothing for a while; empty
  kPong = 13,                // v4: the staging's answer; empty
  kSeal = 14,                // v5: agent -> staging, one per volume before END_POINT
  kSealRequest = 15,         // v5: agent asks for the last point's seal of a volume
  kBaseSeal = 16,            // v5: the staging's answer
  kReadRequest = 17,         // v6: recovery tool -> staging: bytes of the manifest, an index or a pack
  kReadData = 18,            // v6: the staging's answer
  kDrillReport = 19,         // v6: recovery tool -> staging: one drill report to append to drills.jsonl
  kDrillReportOk = 20,       // v6: the staging's answer: appended and fsync'd
  kAgentReport = 21,         // v9: agent -> staging, about every 2 s: state, lag, backlog (no answer)
  kFleetRequest = 22,        // v10: operator -> staging: every server's figures (empty payload)
  kFleet = 23,               // v10: staging -> operator: the answer (Fleet)
  kLast = kFleet,            // ParseFrame refuses types past it
};

// Who opens a session (v6): an agent replicating, or a recovery tool reading its own server's
// chain (list, restore, mount, drill over --staging).
// kOperator (v10): a fleet view (blockrep-recover servers --staging) by a certificate whose CN is
// kOperatorCnPrefix + NAME (blockrep-keygen --operator NAME); it reads every server's figures and
// nothing else. The prefix holds a ':', which no server-id may, so an agent's certificate is never
// an operator's and an operator's never an agent's.
enum class Role : uint8_t { kAgent = 0, kReader = 1, kOperator = 2 };
inline constexpr const char* kOperatorCnPrefix = "operator:";

enum class ErrorCode : uint16_t {
  kProtocol = 1,
  kIdentity = 2,      // server-id does not match the client certificate
  kKeyMismatch = 3,   // the agent's data key is not the one this server's points use
  kBusy = 4,          // another session for this server-id is active
  kStoreFull = 5,     // staging out of space: back off, keep dirty state
  kStoreError = 6,
  kBadPoint = 7,
  kBadTime = 8,  // BEGIN_POINT's time is not after the chain's last, or too far from the staging's clock
  kAtCapacity = 9,  // the staging holds its maximum of sessions: retry later
  kQuotaExceeded = 10,  // this server is over its quota: back off keeping dirty state, like kStoreFull
};
// What an agent makes of the staging's ERROR: kNoSpace (full or over quota: back off, keep the
// dirty state), kUnavailable (busy or at capacity: try again), kPermissionDenied (identity or key:
// the operator must act), kProtocol otherwise.
Code AgentStatusCode(ErrorCode e);

// How far past the chain's last point a BEGIN_POINT's id may jump (an agent that saw later points
// acknowledged than the chain holds goes on after those), so ids can never run out.
inline constexpr uint64_t kPointIdGapMax = 1ull << 20;
// How far a BEGIN_POINT's time may be from the staging's clock (either way).
inline constexpr uint64_t kPointClockSkewNs = 300ull * 1000000000ull;

struct Frame {
  MsgType type;
  ByteSpan payload;
  size_t total_size;  // header + payload
};

// nullopt: the buffer does not hold a whole frame yet.
Result<std::optional<Frame>> ParseFrame(ByteSpan buffer);
// The whole size (header and payload) of the frame `buffer` begins with, once its header is
// there and valid; 0 before.
size_t FrameBytes(ByteSpan buffer);
void AppendFrame(Bytes* out, MsgType type, ByteSpan payload);

// A server-id names a directory on the staging: [A-Za-z0-9._-], 1..64 chars, not "." or "..".
Status ValidateServerId(const std::string& id);

struct Hello {
  uint16_t version_min = kVersion;
  uint16_t version_max = kVersion;
  std::string server_id;
  uint64_t key_id = 0;        // the current data key's (readers without a key: 0)
  Role role = Role::kAgent;  // v6
  // v7: the ids of the older keys of the sender's key file (rotated out, still held): the chain may
  // be sealed under one of them.
  std::vector<uint64_t> retired_key_ids;
  bool Holds(uint64_t id) const {
    return id == key_id || std::find(retired_key_ids.begin(), retired_key_ids.end(), id) != retired_key_ids.end();
  }
  Bytes Encode() const;
  static Result<Hello> Decode(ByteSpan p);
};

struct HelloOk {
  uint16_t version = kVersion;
  uint64_t last_point_id = 0;  // newest committed point of this server, 0 if none
  // An interrupted point whose durable records the staging kept (0: none).
  uint64_t pending_point_id = 0;
  uint64_t pending_base_point = 0;
  uint64_t pending_time_ns = 0;  // v5: the pending point's BEGIN_POINT time (its seal binds it)
  uint64_t last_time_ns = 0;     // v6: the last committed point's time (0: none)
  uint64_t chain_key_id = 0;     // v7: the key id the chain's last point is sealed under (0: none)
  Bytes Encode() const;
  static Result<HelloOk> Decode(ByteSpan p);
};

struct ResumePoint {
  uint64_t point_id = 0;
  Bytes Encode() const;
  static Result<ResumePoint> Decode(ByteSpan p);
};

struct ErrorMsg {
  ErrorCode code = ErrorCode::kProtocol;
  std::string message;
  Bytes Encode() const;
  static Result<ErrorMsg> Decode(ByteSpan p);
};

struct BeginPoint {
  uint64_t point_id = 0;
  uint64_t time_ns = 0;     // UTC, nanoseconds since the epoch
  uint64_t base_point = 0;  // 0: full point (every non-zero extent follows)
  uint32_t flags = 0;       // bit 0: consistent
  std::vector<uint64_t> volume_sizes;
  Bytes Encode() const;
  static Result<BeginPoint> Decode(ByteSpan p);
};

struct RecordMsg {
  uint64_t seq = 0;
  ByteSpan record;        // header + ciphertext + tag, points into the frame
  ByteSpan fingerprints;  // 8 bytes per 4 KiB block of the record's extent; none for a zero record
  static void AppendEncoded(Bytes* frame_out, uint64_t seq, ByteSpan record, ByteSpan fingerprints);
  static Result<RecordMsg> Decode(ByteSpan p);
};

struct FingerprintRequest {
  uint16_t volume = 0;
  uint64_t offset = 0;  // 4 KiB aligned
  uint64_t length = 0;  // 1..kMaxFingerprintSpan
  Bytes Encode() const;
  static Result<FingerprintRequest> Decode(ByteSpan p);
};

// Fingerprints of the last committed point for consecutive 4 KiB blocks from `offset`; 0 where
// the point holds zeros.
struct Fingerprints {
  uint16_t volume = 0;
  uint64_t offset = 0;
  std::vector<uint64_t> values;
  Bytes Encode() const;
  static Result<Fingerprints> Decode(ByteSpan p);
};

struct EndPoint {
  uint64_t point_id = 0;
  uint64_t last_seq = 0;
  uint64_t record_count = 0;  // records of this point sent in this session
  uint32_t flags = 0;         // bit 0: consistent (its last blocks were read under a freeze)
  Bytes Encode() const;
  static Result<EndPoint> Decode(ByteSpan p);
};

struct Ack {
  uint64_t durable_seq = 0;
  Bytes Encode() const;
  static Result<Ack> Decode(ByteSpan p);
};

// FLEET (v10): what the staging knows of each server it stores, for an operator.
struct FleetEntry {
  static constexpr uint8_t kNoReport = 255;  // `state` when no AGENT_REPORT came since the staging started
  std::string server_id;
  bool connected = false;
  uint8_t state = kNoReport;  // AgentReport::state
  uint64_t lag_ms = 0, backlog_bytes = 0, rpo_target_ms = 0;
  uint64_t report_utc_ns = 0, last_heard_utc_ns = 0;  // 0: none since the staging started
  uint64_t points = 0, last_point_ns = 0, last_consistent_ns = 0;
  uint64_t stored_bytes = 0, pack_files = 0;
  uint64_t last_drill_ns = 0;
  int8_t last_drill_pass = -1;  // -1: no drill on record
};
struct Fleet {
  static constexpr size_t kServersMax = 4096;
  std::vector<FleetEntry> servers;
  Bytes Encode() const;
  static Result<Fleet> Decode(ByteSpan p);
};
// The largest FLEET: a u32 count, then per server a u16-prefixed id, two u8, ten u64 and an i8.
static_assert(4 + Fleet::kServersMax * (2 + 64 + 2 + 10 * 8 + 1) <= kMaxFramePayload);

// What the agent says of itself (v9), so that the DR side sees the RPO (metrics) even when the
// source site goes quiet: then the report's age says how long it has been quiet.
struct AgentReport {
  static constexpr uint8_t kStatesMax = 16;  // AgentState codes (replicator/agent_status.h) are below this
  uint8_t state = 0;
  uint64_t lag_ms = 0;         // age of the oldest write not yet durable on the staging (0: none)
  uint64_t backlog_bytes = 0;  // taken or dirty, not yet acknowledged
  uint64_t rpo_target_ms = 0;  // the agent's --rpo-target
  Bytes Encode() const;
  static Result<AgentReport> Decode(ByteSpan p);
};

// Liveness (v4). A half-open connection (peer gone without a FIN, a middlebox that stopped
// forwarding) shows no error: the agent PINGs after kPingAfterNs without a word from the staging
// and gives the connection up after kPeerSilentNs; the staging closes a session it has heard
// nothing from for kAgentSilentNs.
inline constexpr uint64_t kPingAfterNs = 5ull * 1000000000ull;
inline constexpr uint64_t kPeerSilentNs = 20ull * 1000000000ull;
inline constexpr uint64_t kAgentSilentNs = 30ull * 1000000000ull;
// PING and PONG carry nothing; anything else in them is a protocol error.
Status DecodeEmpty(ByteSpan p, const char* what);

struct PointAck {
  uint64_t point_id = 0;
  Bytes Encode() const;
  static Result<PointAck> Decode(ByteSpan p);
};

// The agent's seal of one volume of the point being sent (blockrep/crypto/seal.h). The staging checks
// its structure and that it names this point, its time and sizes; it cannot check the MAC.
struct SealMsg {
  VolumeSeal seal;
  Bytes Encode() const;
  static Result<SealMsg> Decode(ByteSpan p);
};

struct SealRequest {
  uint16_t volume = 0;
  Bytes Encode() const;
  static Result<SealRequest> Decode(ByteSpan p);
};

// The seal the last committed point holds for `volume`; absent when that point has none.
struct BaseSeal {
  uint16_t volume = 0;
  std::optional<VolumeSeal> seal;
  Bytes Encode() const;
  static Result<BaseSeal> Decode(ByteSpan p);
};

// What a READ_REQUEST reads (v6). The staging serves its own files' bytes and nothing else: the
// reader authenticates every record itself and checks every index and manifest checksum.
enum class ReadKind : uint8_t {
  kManifest = 1,  // the committed manifest (id 0)
  kIndex = 2,     // the index of point `id`; reading it pins every pack it names for the session
  kPack = 3,      // bytes of pack `id`
};
inline constexpr uint32_t kMaxReadBytes = 1u << 20;
static_assert(8 + 8 + 1 + 4 + kMaxReadBytes <= kMaxFramePayload);

struct ReadRequest {
  uint64_t tag = 0;  // echoed in the answer; the reader's own numbering
  ReadKind kind = ReadKind::kManifest;
  uint64_t id = 0;
  uint64_t offset = 0;
  uint32_t length = 0;  // 1..kMaxReadBytes
  Bytes Encode() const;
  static Result<ReadRequest> Decode(ByteSpan p);
};

enum class ReadStatus : uint8_t { kOk = 0, kNotFound = 1 };

// Answers come in request order. `data` holds up to `length` bytes from `offset` (fewer at the
// end of the object); `object_bytes` is the object's whole size.
struct ReadData {
  uint64_t tag = 0;
  uint64_t object_bytes = 0;
  ReadStatus status = ReadStatus::kOk;
  ByteSpan data;  // points into the frame
  static void AppendEncoded(Bytes* frame_out, uint64_t tag, uint64_t object_bytes, ReadStatus status, ByteSpan data);
  // The frame header and the message's fixed part, for a sender that puts the n data bytes right
  // after them itself (the staging preads them there): kFrameBytes before the data.
  static constexpr size_t kFrameBytes = kFrameHeaderSize + 8 + 8 + 1 + 4;
  static void EncodeFrameHead(uint8_t out[kFrameBytes], uint64_t tag, uint64_t object_bytes, ReadStatus status, uint32_t n);
  static Result<ReadData> Decode(ByteSpan p);
};

// One line of JSON (no newline), at most kMaxDrillReportBytes.
inline constexpr size_t kMaxDrillReportBytes = 64u << 10;
struct DrillReport {
  std::string line;
  Bytes Encode() const;
  static Result<DrillReport> Decode(ByteSpan p);
};

}  // namespace blockrep::wire
