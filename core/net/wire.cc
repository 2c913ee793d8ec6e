#include "blockrep/net/wire.h"

#include <cstring>

#include "blockrep/base/cli.h"

namespace blockrep::wire {
namespace {

Status Finish(const ByteReader& r, const char* what) {
  if (!r.ok()) return ProtocolError(std::string("truncated or oversized ") + what + " message");
  if (r.remaining() != 0) return ProtocolError(std::string("trailing bytes after ") + what + " message");
  return Status::Ok();
}

}  // namespace

Result<std::optional<Frame>> ParseFrame(ByteSpan buffer) {
  if (buffer.size() < kFrameHeaderSize) return std::optional<Frame>();
  ByteReader r(buffer.first(kFrameHeaderSize));
  uint32_t len = r.U32();
  uint16_t type = r.U16();
  uint16_t reserved = r.U16();
  if (len > kMaxFramePayload)
    return ProtocolError("frame of " + std::to_string(len) + " bytes exceeds the limit of " +
                         std::to_string(kMaxFramePayload));
  if (reserved != 0) return ProtocolError("frame header has non-zero reserved bits");
  if (type < static_cast<uint16_t>(MsgType::kHello) || type > static_cast<uint16_t>(MsgType::kLast))
    return ProtocolError("unknown frame type " + std::to_string(type));
  if (buffer.size() - kFrameHeaderSize < len) return std::optional<Frame>();
  return std::optional<Frame>(
      Frame{static_cast<MsgType>(type), buffer.subspan(kFrameHeaderSize, len), kFrameHeaderSize + len});
}

size_t FrameBytes(ByteSpan buffer) {
  if (buffer.size() < kFrameHeaderSize) return 0;
  ByteReader r(buffer.first(kFrameHeaderSize));
  uint32_t len = r.U32();
  return len > kMaxFramePayload ? 0 : kFrameHeaderSize + len;
}

void AppendFrame(Bytes* out, MsgType type, ByteSpan payload) {
  ByteWriter w(out);
  w.U32(static_cast<uint32_t>(payload.size()));
  w.U16(static_cast<uint16_t>(type));
  w.U16(0);
  w.Raw(payload);
}

Status ValidateServerId(const std::string& id) {
  if (id.empty() || id.size() > kMaxServerIdLen || id == "." || id == "..")
    return InvalidArgument("server-id '" + Printable(id, 80) + "' must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok)
      return InvalidArgument("server-id '" + Printable(id, 80) +
                             "' must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
  }
  return Status::Ok();
}

Status DecodeEmpty(ByteSpan p, const char* what) {
  if (!p.empty()) return ProtocolError(std::string(what) + " carries " + std::to_string(p.size()) + " unexpected bytes");
  return Status::Ok();
}

Bytes Hello::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U64(kHelloMagic);
  w.U16(version_min);
  w.U16(version_max);
  w.String(server_id);
  w.U64(key_id);
  w.U8(static_cast<uint8_t>(role));
  w.U8(static_cast<uint8_t>(retired_key_ids.size()));
  for (uint64_t id : retired_key_ids) w.U64(id);
  return b;
}

Result<Hello> Hello::Decode(ByteSpan p) {
  ByteReader r(p);
  Hello h;
  if (r.U64() != kHelloMagic) return ProtocolError("peer is not a blockrep agent (bad hello magic)");
  h.version_min = r.U16();
  h.version_max = r.U16();
  h.server_id = r.String(kMaxServerIdLen);
  h.key_id = r.U64();
  uint8_t role = r.U8();
  if (r.ok() && role > static_cast<uint8_t>(Role::kOperator)) return ProtocolError("HELLO names an unknown role");
  h.role = static_cast<Role>(role);
  uint8_t retired = r.U8();
  if (r.ok() && retired > kMaxRetiredKeys) return ProtocolError("HELLO names more than 63 retired keys");
  for (uint8_t i = 0; i < retired && r.ok(); ++i) h.retired_key_ids.push_back(r.U64());
  BR_RETURN_IF_ERROR(Finish(r, "HELLO"));
  return h;
}

Bytes HelloOk::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U16(version);
  w.U64(last_point_id);
  w.U64(pending_point_id);
  w.U64(pending_base_point);
  w.U64(pending_time_ns);
  w.U64(last_time_ns);
  w.U64(chain_key_id);
  return b;
}

Result<HelloOk> HelloOk::Decode(ByteSpan p) {
  ByteReader r(p);
  HelloOk h;
  h.version = r.U16();
  h.last_point_id = r.U64();
  h.pending_point_id = r.U64();
  h.pending_base_point = r.U64();
  h.pending_time_ns = r.U64();
  h.last_time_ns = r.U64();
  h.chain_key_id = r.U64();
  BR_RETURN_IF_ERROR(Finish(r, "HELLO_OK"));
  if (h.pending_point_id != 0 && h.pending_point_id != h.last_point_id + 1)
    return ProtocolError("HELLO_OK names a pending point that does not follow the chain");
  return h;
}

Bytes ResumePoint::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U64(point_id);
  return b;
}

Result<ResumePoint> ResumePoint::Decode(ByteSpan p) {
  ByteReader r(p);
  ResumePoint m;
  m.point_id = r.U64();
  BR_RETURN_IF_ERROR(Finish(r, "RESUME_POINT"));
  return m;
}

Bytes ErrorMsg::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U16(static_cast<uint16_t>(code));
  w.String(message.substr(0, kMaxErrorLen));
  return b;
}

Result<ErrorMsg> ErrorMsg::Decode(ByteSpan p) {
  ByteReader r(p);
  ErrorMsg e;
  e.code = static_cast<ErrorCode>(r.U16());
  e.message = r.String(kMaxErrorLen);
  BR_RETURN_IF_ERROR(Finish(r, "ERROR"));
  return e;
}

Bytes BeginPoint::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U64(point_id);
  w.U64(time_ns);
  w.U64(base_point);
  w.U32(flags);
  w.U16(static_cast<uint16_t>(volume_sizes.size()));
  for (uint64_t s : volume_sizes) w.U64(s);
  return b;
}

Result<BeginPoint> BeginPoint::Decode(ByteSpan p) {
  ByteReader r(p);
  BeginPoint m;
  m.point_id = r.U64();
  m.time_ns = r.U64();
  m.base_point = r.U64();
  m.flags = r.U32();
  uint16_t n = r.U16();
  if (n == 0 || n > kMaxVolumes)
    return ProtocolError("BEGIN_POINT names " + std::to_string(n) + " volumes (1.." +
                         std::to_string(kMaxVolumes) + " allowed)");
  for (uint16_t i = 0; i < n && r.ok(); ++i) m.volume_sizes.push_back(r.U64());
  BR_RETURN_IF_ERROR(Finish(r, "BEGIN_POINT"));
  return m;
}

void RecordMsg::AppendEncoded(Bytes* out, uint64_t seq, ByteSpan record, ByteSpan fingerprints) {
  ByteWriter w(out);
  w.U32(static_cast<uint32_t>(8 + 4 + record.size() + fingerprints.size()));
  w.U16(static_cast<uint16_t>(MsgType::kRecord));
  w.U16(0);
  w.U64(seq);
  w.U32(static_cast<uint32_t>(record.size()));
  w.Raw(record);
  w.Raw(fingerprints);
}

Result<RecordMsg> RecordMsg::Decode(ByteSpan p) {
  ByteReader r(p);
  RecordMsg m;
  m.seq = r.U64();
  uint32_t record_len = r.U32();
  if (!r.ok() || record_len < kRecordHeaderSize + kTagSize || record_len > r.remaining())
    return ProtocolError("RECORD message too short for its record");
  m.record = p.subspan(12, record_len);
  m.fingerprints = p.subspan(12 + record_len);
  if (m.fingerprints.size() % 8 != 0) return ProtocolError("RECORD fingerprints are not whole");
  return m;
}

Bytes FingerprintRequest::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U16(volume);
  w.U64(offset);
  w.U64(length);
  return b;
}

Result<FingerprintRequest> FingerprintRequest::Decode(ByteSpan p) {
  ByteReader r(p);
  FingerprintRequest m;
  m.volume = r.U16();
  m.offset = r.U64();
  m.length = r.U64();
  if (!r.ok() || r.remaining() != 0) return ProtocolError("malformed FINGERPRINT_REQUEST");
  if (m.offset % kBlockBytes != 0 || m.length == 0 || m.length > kMaxFingerprintSpan)
    return ProtocolError("FINGERPRINT_REQUEST range is not 4 KiB aligned or too long");
  return m;
}

Bytes Fingerprints::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U16(volume);
  w.U64(offset);
  w.U32(static_cast<uint32_t>(values.size()));
  for (uint64_t v : values) w.U64(v);
  return b;
}

Result<Fingerprints> Fingerprints::Decode(ByteSpan p) {
  ByteReader r(p);
  Fingerprints m;
  m.volume = r.U16();
  m.offset = r.U64();
  uint32_t n = r.U32();
  if (!r.ok() || n > kMaxFingerprintSpan / kBlockBytes || r.remaining() != size_t{n} * 8)
    return ProtocolError("malformed FINGERPRINTS");
  m.values.resize(n);
  for (uint32_t i = 0; i < n; ++i) m.values[i] = r.U64();
  return m;
}

Bytes EndPoint::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U64(point_id);
  w.U64(last_seq);
  w.U64(record_count);
  w.U32(flags);
  return b;
}

Result<EndPoint> EndPoint::Decode(ByteSpan p) {
  ByteReader r(p);
  EndPoint m;
  m.point_id = r.U64();
  m.last_seq = r.U64();
  m.record_count = r.U64();
  m.flags = r.U32();
  BR_RETURN_IF_ERROR(Finish(r, "END_POINT"));
  return m;
}

Bytes Ack::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U64(durable_seq);
  return b;
}

Result<Ack> Ack::Decode(ByteSpan p) {
  ByteReader r(p);
  Ack m;
  m.durable_seq = r.U64();
  BR_RETURN_IF_ERROR(Finish(r, "ACK"));
  return m;
}

Bytes AgentReport::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U8(state);
  w.U64(lag_ms);
  w.U64(backlog_bytes);
  w.U64(rpo_target_ms);
  return b;
}

Result<AgentReport> AgentReport::Decode(ByteSpan p) {
  ByteReader r(p);
  AgentReport m;
  m.state = r.U8();
  m.lag_ms = r.U64();
  m.backlog_bytes = r.U64();
  m.rpo_target_ms = r.U64();
  BR_RETURN_IF_ERROR(Finish(r, "AGENT_REPORT"));
  if (m.state >= kStatesMax) return ProtocolError("AGENT_REPORT names state " + std::to_string(m.state));
  return m;
}

Bytes Fleet::Encode() const {
  BR_CHECK(servers.size() <= kServersMax);
  Bytes b;
  ByteWriter w(&b);
  w.U32(static_cast<uint32_t>(servers.size()));
  for (const FleetEntry& e : servers) {
    w.String(e.server_id);
    w.U8(e.connected ? 1 : 0);
    w.U8(e.state);
    for (uint64_t v : {e.lag_ms, e.backlog_bytes, e.rpo_target_ms, e.report_utc_ns, e.last_heard_utc_ns, e.points,
                       e.last_point_ns, e.last_consistent_ns, e.stored_bytes, e.pack_files})
      w.U64(v);
    w.U64(e.last_drill_ns);
    w.U8(static_cast<uint8_t>(e.last_drill_pass));
  }
  return b;
}

Result<Fleet> Fleet::Decode(ByteSpan p) {
  ByteReader r(p);
  Fleet f;
  uint32_t n = r.U32();
  if (!r.ok() || n > kServersMax) return ProtocolError("FLEET names " + std::to_string(n) + " servers");
  f.servers.resize(n);
  for (FleetEntry& e : f.servers) {
    e.server_id = r.String(kMaxServerIdLen);
    uint8_t connected = r.U8();
    e.state = r.U8();
    for (uint64_t* v : {&e.lag_ms, &e.backlog_bytes, &e.rpo_target_ms, &e.report_utc_ns, &e.last_heard_utc_ns, &e.points,
                        &e.last_point_ns, &e.last_consistent_ns, &e.stored_bytes, &e.pack_files})
      *v = r.U64();
    e.last_drill_ns = r.U64();
    e.last_drill_pass = static_cast<int8_t>(r.U8());
    if (!r.ok()) break;
    if (connected > 1 || (e.state >= AgentReport::kStatesMax && e.state != FleetEntry::kNoReport) ||
        e.last_drill_pass < -1 || e.last_drill_pass > 1)
      return ProtocolError("FLEET entry of '" + Printable(e.server_id, 80) + "' is malformed");
    BR_RETURN_IF_ERROR(ValidateServerId(e.server_id).Annotate("FLEET"));
    e.connected = connected == 1;
  }
  BR_RETURN_IF_ERROR(Finish(r, "FLEET"));
  return f;
}

Bytes PointAck::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U64(point_id);
  return b;
}

Result<PointAck> PointAck::Decode(ByteSpan p) {
  ByteReader r(p);
  PointAck m;
  m.point_id = r.U64();
  BR_RETURN_IF_ERROR(Finish(r, "POINT_ACK"));
  return m;
}

Bytes SealMsg::Encode() const { return seal.Encode(); }

Result<SealMsg> SealMsg::Decode(ByteSpan p) {
  auto s = VolumeSeal::Decode(p);
  if (!s.ok()) return ProtocolError("SEAL: " + s.status().message());
  return SealMsg{std::move(*s)};
}

Bytes SealRequest::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U16(volume);
  return b;
}

Result<SealRequest> SealRequest::Decode(ByteSpan p) {
  ByteReader r(p);
  SealRequest m;
  m.volume = r.U16();
  BR_RETURN_IF_ERROR(Finish(r, "SEAL_REQUEST"));
  return m;
}

Bytes BaseSeal::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U16(volume);
  w.U8(seal ? 1 : 0);
  if (seal) seal->AppendEncoded(&w);
  return b;
}

Result<BaseSeal> BaseSeal::Decode(ByteSpan p) {
  ByteReader r(p);
  BaseSeal m;
  m.volume = r.U16();
  uint8_t present = r.U8();
  if (r.ok() && present > 1) return ProtocolError("BASE_SEAL has a bad presence flag");
  if (r.ok() && present == 1) {
    auto s = VolumeSeal::Read(&r);
    if (!s.ok()) return ProtocolError("BASE_SEAL: " + s.status().message());
    if (s->volume != m.volume) return ProtocolError("BASE_SEAL for volume " + std::to_string(m.volume) +
                                                    " holds the seal of volume " + std::to_string(s->volume));
    m.seal = std::move(*s);
  }
  BR_RETURN_IF_ERROR(Finish(r, "BASE_SEAL"));
  return m;
}

Bytes ReadRequest::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U64(tag);
  w.U8(static_cast<uint8_t>(kind));
  w.U64(id);
  w.U64(offset);
  w.U32(length);
  return b;
}

Result<ReadRequest> ReadRequest::Decode(ByteSpan p) {
  ByteReader r(p);
  ReadRequest m;
  m.tag = r.U64();
  uint8_t kind = r.U8();
  m.id = r.U64();
  m.offset = r.U64();
  m.length = r.U32();
  BR_RETURN_IF_ERROR(Finish(r, "READ_REQUEST"));
  if (kind < static_cast<uint8_t>(ReadKind::kManifest) || kind > static_cast<uint8_t>(ReadKind::kPack))
    return ProtocolError("READ_REQUEST of unknown kind " + std::to_string(kind));
  m.kind = static_cast<ReadKind>(kind);
  if (m.length == 0 || m.length > kMaxReadBytes)
    return ProtocolError("READ_REQUEST of " + std::to_string(m.length) + " bytes (1.." + std::to_string(kMaxReadBytes) + ")");
  return m;
}

void ReadData::AppendEncoded(Bytes* frame_out, uint64_t tag, uint64_t object_bytes, ReadStatus status, ByteSpan data) {
  // Straight into the frame: the data is the bulk of a restore over the network.
  ByteWriter w(frame_out);
  w.U32(static_cast<uint32_t>(8 + 8 + 1 + 4 + data.size()));
  w.U16(static_cast<uint16_t>(MsgType::kReadData));
  w.U16(0);
  w.U64(tag);
  w.U64(object_bytes);
  w.U8(static_cast<uint8_t>(status));
  w.U32(static_cast<uint32_t>(data.size()));
  w.Raw(data);
}

void ReadData::EncodeFrameHead(uint8_t out[kFrameBytes], uint64_t tag, uint64_t object_bytes, ReadStatus status,
                               uint32_t n) {
  Bytes head;
  head.reserve(kFrameBytes);
  AppendEncoded(&head, tag, object_bytes, status, ByteSpan());
  // The same bytes with the lengths of n data bytes.
  uint32_t payload = static_cast<uint32_t>(8 + 8 + 1 + 4) + n;
  for (int i = 0; i < 4; ++i) head[static_cast<size_t>(i)] = static_cast<uint8_t>(payload >> (8 * i));
  for (int i = 0; i < 4; ++i) head[kFrameBytes - 4 + static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(out, head.data(), kFrameBytes);
}

Result<ReadData> ReadData::Decode(ByteSpan p) {
  ByteReader r(p);
  ReadData m;
  m.tag = r.U64();
  m.object_bytes = r.U64();
  uint8_t status = r.U8();
  uint32_t n = r.U32();
  if (!r.ok()) return ProtocolError("READ_DATA is truncated");
  if (status > static_cast<uint8_t>(ReadStatus::kNotFound)) return ProtocolError("READ_DATA has an unknown status");
  m.status = static_cast<ReadStatus>(status);
  if (n > kMaxReadBytes || r.remaining() != n) return ProtocolError("READ_DATA length does not match its payload");
  m.data = p.subspan(p.size() - n);
  return m;
}

Bytes DrillReport::Encode() const {
  Bytes b;
  ByteWriter w(&b);
  w.U32(static_cast<uint32_t>(line.size()));
  w.Raw(reinterpret_cast<const uint8_t*>(line.data()), line.size());
  return b;
}

Result<DrillReport> DrillReport::Decode(ByteSpan p) {
  ByteReader r(p);
  uint32_t n = r.U32();
  if (!r.ok() || n == 0 || n > kMaxDrillReportBytes || r.remaining() != n)
    return ProtocolError("DRILL_REPORT must carry 1.." + std::to_string(kMaxDrillReportBytes) + " bytes");
  DrillReport m;
  m.line.assign(reinterpret_cast<const char*>(p.data() + 4), n);
  for (unsigned char c : m.line)
    if (c == '\n' || c == '\r' || c == 0) return ProtocolError("DRILL_REPORT must be one line");
  return m;
}

Code AgentStatusCode(ErrorCode e) {
  switch (e) {
    case ErrorCode::kStoreFull:
    case ErrorCode::kQuotaExceeded: return Code::kNoSpace;
    case ErrorCode::kBusy:
    case ErrorCode::kAtCapacity: return Code::kUnavailable;
    case ErrorCode::kIdentity:
    case ErrorCode::kKeyMismatch: return Code::kPermissionDenied;
    default: return Code::kProtocol;
  }
}

}  // namespace blockrep::wire
