// Fuzzes the wire frame parser and every message decoder behind it, as the staging and the agent
// run them on bytes from the network: a stream of frames, each dispatched by type.
#include "blockrep/net/wire.h"
#include "roundtrip.h"

using namespace blockrep;
using namespace blockrep::wire;
using fuzz::RoundTrip;

namespace {

void DecodePayload(MsgType type, ByteSpan p) {
  switch (type) {
    case MsgType::kHello: RoundTrip<Hello>(p); break;
    case MsgType::kHelloOk: RoundTrip<HelloOk>(p); break;
    case MsgType::kError: RoundTrip<ErrorMsg>(p); break;
    case MsgType::kBeginPoint: RoundTrip<BeginPoint>(p); break;
    case MsgType::kEndPoint: RoundTrip<EndPoint>(p); break;
    case MsgType::kAck: RoundTrip<Ack>(p); break;
    case MsgType::kPointAck: RoundTrip<PointAck>(p); break;
    case MsgType::kResumePoint: RoundTrip<ResumePoint>(p); break;
    case MsgType::kFingerprintRequest: RoundTrip<FingerprintRequest>(p); break;
    case MsgType::kFingerprints: RoundTrip<Fingerprints>(p); break;
    case MsgType::kSeal: RoundTrip<SealMsg>(p); break;
    case MsgType::kSealRequest: RoundTrip<SealRequest>(p); break;
    case MsgType::kBaseSeal: RoundTrip<BaseSeal>(p); break;
    case MsgType::kReadRequest: RoundTrip<ReadRequest>(p); break;
    case MsgType::kDrillReport: RoundTrip<DrillReport>(p); break;
    case MsgType::kAgentReport: RoundTrip<AgentReport>(p); break;
    case MsgType::kFleet: RoundTrip<Fleet>(p); break;
    case MsgType::kReadData: {
      auto m = ReadData::Decode(p);
      if (!m.ok()) return;
      FUZZ_CHECK(m->data.data() >= p.data() && m->data.data() + m->data.size() <= p.data() + p.size());
      Bytes frame;
      ReadData::AppendEncoded(&frame, m->tag, m->object_bytes, m->status, m->data);
      auto again = ParseFrame(frame);
      FUZZ_CHECK(again.ok() && again->has_value() && (*again)->type == MsgType::kReadData);
      auto m2 = ReadData::Decode((*again)->payload);
      FUZZ_CHECK(m2.ok() && m2->tag == m->tag && m2->data.size() == m->data.size());
      break;
    }
    case MsgType::kPing:
    case MsgType::kPong:
    case MsgType::kDrillReportOk:
    case MsgType::kFleetRequest:
      FUZZ_CHECK(DecodeEmpty(p, "PING").ok() == p.empty());
      break;
    case MsgType::kRecord: {
      auto m = RecordMsg::Decode(p);
      if (!m.ok()) return;
      // The spans point into the payload, never past it.
      FUZZ_CHECK(m->record.data() >= p.data() && m->record.data() + m->record.size() <= p.data() + p.size());
      FUZZ_CHECK(m->fingerprints.size() % 8 == 0);
      Bytes frame;
      RecordMsg::AppendEncoded(&frame, m->seq, m->record, m->fingerprints);
      auto again = ParseFrame(frame);
      FUZZ_CHECK(again.ok() && again->has_value() && (*again)->type == MsgType::kRecord);
      auto m2 = RecordMsg::Decode((*again)->payload);
      FUZZ_CHECK(m2.ok() && m2->seq == m->seq && m2->record.size() == m->record.size());
      break;
    }
  }
}

void WriteSeeds() {
  Bytes stream;
  Hello hello;
  hello.server_id = "web1";
  hello.key_id = 42;
  AppendFrame(&stream, MsgType::kHello, hello.Encode());
  BeginPoint begin;
  begin.point_id = 7;
  begin.base_point = 6;
  begin.volume_sizes = {1 << 20, 4096};
  AppendFrame(&stream, MsgType::kBeginPoint, begin.Encode());
  Bytes record(64 + 4096 + 16, 0x5a), fps(8, 0x11);
  RecordMsg::AppendEncoded(&stream, 1, record, fps);
  FingerprintRequest req;
  req.length = 1 << 20;
  AppendFrame(&stream, MsgType::kFingerprintRequest, req.Encode());
  Fingerprints f;
  f.values = {1, 3, 5};
  AppendFrame(&stream, MsgType::kFingerprints, f.Encode());
  ReadRequest rr;
  rr.kind = ReadKind::kPack;
  rr.id = 3;
  rr.length = 65536;
  AppendFrame(&stream, MsgType::kReadRequest, rr.Encode());
  Bytes chunk(100, 0x42);
  ReadData::AppendEncoded(&stream, 1, 1 << 20, ReadStatus::kOk, chunk);
  AppendFrame(&stream, MsgType::kDrillReport, DrillReport{"{\"result\": \"pass\"}"}.Encode());
  VolumeSeal seal;
  seal.point_id = 7;
  seal.volume_count = 2;
  seal.volume_bytes = 3 << 20;
  seal.region_bytes = SealRegionBytes(seal.volume_bytes);
  seal.regions = {{1, 2}, {3, 4}, {5, 6}};
  seal.region_points = {7, 3, 0};
  AppendFrame(&stream, MsgType::kSeal, SealMsg{seal}.Encode());
  AppendFrame(&stream, MsgType::kSealRequest, SealRequest{1}.Encode());
  AppendFrame(&stream, MsgType::kBaseSeal, BaseSeal{0, seal}.Encode());
  AppendFrame(&stream, MsgType::kBaseSeal, BaseSeal{1, std::nullopt}.Encode());
  AppendFrame(&stream, MsgType::kEndPoint, EndPoint{7, 1, 1, 1}.Encode());
  AppendFrame(&stream, MsgType::kAck, Ack{1}.Encode());
  AppendFrame(&stream, MsgType::kPointAck, PointAck{7}.Encode());
  AppendFrame(&stream, MsgType::kPing, Bytes());
  AppendFrame(&stream, MsgType::kPong, Bytes());
  AppendFrame(&stream, MsgType::kAgentReport, AgentReport{2, 150, 4096, 30000}.Encode());
  AppendFrame(&stream, MsgType::kFleetRequest, Bytes());
  Fleet fleet;
  fleet.servers.resize(2);
  fleet.servers[0].server_id = "web1";
  fleet.servers[0].connected = true;
  fleet.servers[0].state = 3;
  fleet.servers[0].last_drill_pass = 1;
  fleet.servers[1].server_id = "db1";
  AppendFrame(&stream, MsgType::kFleet, fleet.Encode());
  fuzz::WriteSeed("stream", stream);
  ErrorMsg err;
  err.code = ErrorCode::kStoreFull;
  err.message = "staging full";
  Bytes one;
  AppendFrame(&one, MsgType::kError, err.Encode());
  fuzz::WriteSeed("error", one);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  WriteSeeds();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteSpan buffer(data, size);
  while (true) {
    auto frame = ParseFrame(buffer);
    if (!frame.ok() || !frame->has_value()) return 0;  // damaged, or waits for more bytes
    const Frame& f = **frame;
    FUZZ_CHECK(f.total_size == kFrameHeaderSize + f.payload.size() && f.total_size <= buffer.size());
    FUZZ_CHECK(f.payload.size() <= kMaxFramePayload);
    DecodePayload(f.type, f.payload);
    buffer = buffer.subspan(f.total_size);
  }
}
