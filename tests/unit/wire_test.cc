#include <gtest/gtest.h>

#include "blockrep/base/cli.h"
#include "blockrep/net/wire.h"

namespace blockrep::wire {
namespace {

// A frame is parsed only once all of it has arrived.
TEST(Wire, PartialFrameWaits) {
  Bytes buf;
  AppendFrame(&buf, MsgType::kAck, Ack{42}.Encode());
  for (size_t n = 0; n < buf.size(); ++n) {
    auto f = ParseFrame(ByteSpan(buf).first(n));
    ASSERT_TRUE(f.ok());
    EXPECT_FALSE(f->has_value()) << n;
  }
  auto f = ParseFrame(buf);
  ASSERT_TRUE(f.ok() && f->has_value());
  EXPECT_EQ((*f)->type, MsgType::kAck);
  EXPECT_EQ(Ack::Decode((*f)->payload)->durable_seq, 42u);
}

// An oversized length is refused from the header alone, before any buffering.
TEST(Wire, OversizedFrameIsRefused) {
  Bytes buf;
  ByteWriter w(&buf);
  w.U32(kMaxFramePayload + 1);
  w.U16(static_cast<uint16_t>(MsgType::kRecord));
  w.U16(0);
  EXPECT_EQ(ParseFrame(buf).status().code(), Code::kProtocol);
}

// Unknown types and non-zero reserved bits are protocol errors.
TEST(Wire, UnknownTypeAndReservedBitsAreRefused) {
  Bytes a, b;
  ByteWriter(&a).U32(0);
  ByteWriter(&a).U16(99);
  ByteWriter(&a).U16(0);
  EXPECT_EQ(ParseFrame(a).status().code(), Code::kProtocol);
  ByteWriter(&b).U32(0);
  ByteWriter(&b).U16(static_cast<uint16_t>(MsgType::kAck));
  ByteWriter(&b).U16(1);
  EXPECT_EQ(ParseFrame(b).status().code(), Code::kProtocol);
}

// Messages round-trip; every truncation of a message is rejected, never read past.
TEST(Wire, MessagesRoundTripAndTruncationsFail) {
  Hello h;
  h.server_id = "web-01.prod";
  h.key_id = 0x1122334455667788ull;
  h.retired_key_ids = {7, 0x99};
  Bytes enc = h.Encode();
  auto back = Hello::Decode(enc);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->server_id, h.server_id);
  EXPECT_EQ(back->key_id, h.key_id);
  EXPECT_EQ(back->retired_key_ids, h.retired_key_ids);
  EXPECT_TRUE(back->Holds(0x99) && back->Holds(h.key_id) && !back->Holds(8));
  for (size_t n = 0; n < enc.size(); ++n) EXPECT_FALSE(Hello::Decode(ByteSpan(enc).first(n)).ok()) << n;

  BeginPoint b;
  b.point_id = 5;
  b.time_ns = 123;
  b.volume_sizes = {1 << 20, 1 << 30};
  Bytes benc = b.Encode();
  auto bback = BeginPoint::Decode(benc);
  ASSERT_TRUE(bback.ok());
  EXPECT_EQ(bback->volume_sizes, b.volume_sizes);
  for (size_t n = 0; n < benc.size(); ++n) EXPECT_FALSE(BeginPoint::Decode(ByteSpan(benc).first(n)).ok());
  benc.push_back(0);
  EXPECT_FALSE(BeginPoint::Decode(benc).ok());  // trailing bytes
}

// A BEGIN_POINT with zero or too many volumes is refused.
TEST(Wire, VolumeCountIsBounded) {
  BeginPoint b;
  EXPECT_FALSE(BeginPoint::Decode(b.Encode()).ok());
  b.volume_sizes.assign(kMaxVolumes + 1, 4096);
  EXPECT_FALSE(BeginPoint::Decode(b.Encode()).ok());
}

// v6 reader messages: READ_REQUEST bounds its kind and length, READ_DATA its payload, a drill
// report is one non-empty line; every truncation is refused; HELLO carries the role.
TEST(Wire, ReaderMessages) {
  Hello h;
  h.server_id = "web1";
  h.role = Role::kReader;
  EXPECT_EQ(Hello::Decode(h.Encode())->role, Role::kReader);
  Bytes bad_role = h.Encode();
  bad_role.back() = 7;
  EXPECT_FALSE(Hello::Decode(bad_role).ok());

  ReadRequest rq;
  rq.tag = 9;
  rq.kind = ReadKind::kIndex;
  rq.id = 12;
  rq.offset = 1 << 20;
  rq.length = kMaxReadBytes;
  Bytes enc = rq.Encode();
  auto back = ReadRequest::Decode(enc);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->kind, ReadKind::kIndex);
  EXPECT_EQ(back->offset, 1u << 20);
  for (size_t n = 0; n < enc.size(); ++n) EXPECT_FALSE(ReadRequest::Decode(ByteSpan(enc).first(n)).ok()) << n;
  rq.length = kMaxReadBytes + 1;
  EXPECT_EQ(ReadRequest::Decode(rq.Encode()).status().code(), Code::kProtocol);
  rq.length = 0;
  EXPECT_EQ(ReadRequest::Decode(rq.Encode()).status().code(), Code::kProtocol);
  rq.length = 1;
  Bytes kind = rq.Encode();
  kind[8] = 9;
  EXPECT_EQ(ReadRequest::Decode(kind).status().code(), Code::kProtocol);

  Bytes frame, data(5000, 0x33);
  ReadData::AppendEncoded(&frame, 4, 99999, ReadStatus::kOk, data);
  auto f = ParseFrame(frame);
  ASSERT_TRUE(f.ok() && f->has_value());
  auto d = ReadData::Decode((*f)->payload);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->tag, 4u);
  EXPECT_EQ(d->object_bytes, 99999u);
  EXPECT_EQ(Bytes(d->data.begin(), d->data.end()), data);
  // The staging's in-place head is the same bytes as the whole encoding's first ones.
  uint8_t head[ReadData::kFrameBytes];
  ReadData::EncodeFrameHead(head, 4, 99999, ReadStatus::kOk, static_cast<uint32_t>(data.size()));
  EXPECT_TRUE(std::equal(head, head + ReadData::kFrameBytes, frame.begin()));
  ByteSpan payload = (*f)->payload;
  for (size_t n = 0; n < payload.size(); n += 97) EXPECT_FALSE(ReadData::Decode(payload.first(n)).ok()) << n;

  EXPECT_EQ(DrillReport::Decode(DrillReport{"{\"a\": 1}"}.Encode())->line, "{\"a\": 1}");
  EXPECT_FALSE(DrillReport::Decode(DrillReport{"two\nlines"}.Encode()).ok());
  EXPECT_FALSE(DrillReport::Decode(DrillReport{""}.Encode()).ok());
  EXPECT_FALSE(DrillReport::Decode(DrillReport{std::string(kMaxDrillReportBytes + 1, 'x')}.Encode()).ok());
}

// RESUME_POINT round-trips.
TEST(Wire, ResumePointRoundTrip) { EXPECT_EQ(ResumePoint::Decode(ResumePoint{7}.Encode())->point_id, 7u); }

// A pending point must be the one after the chain's last.
TEST(Wire, HelloOkPendingMustFollowChain) {
  HelloOk h;
  h.last_point_id = 5;
  h.pending_point_id = 6;
  h.pending_base_point = 5;
  EXPECT_TRUE(HelloOk::Decode(h.Encode()).ok());
  h.pending_time_ns = 1234;
  EXPECT_EQ(HelloOk::Decode(h.Encode())->pending_time_ns, 1234u);
  h.pending_point_id = 9;
  EXPECT_EQ(HelloOk::Decode(h.Encode()).status().code(), Code::kProtocol);
}

// SEAL carries one volume's seal; BASE_SEAL says whether the point has one; both re-encode to the
// same bytes, and a BASE_SEAL whose seal names another volume is refused.
TEST(Wire, SealMessages) {
  VolumeSeal seal;
  seal.point_id = 4;
  seal.volume = 1;
  seal.volume_count = 2;
  seal.volume_bytes = 2 << 20;
  seal.region_bytes = SealRegionBytes(seal.volume_bytes);
  seal.regions = {{1, 2}, {3, 4}};
  seal.region_points = {4, 2};
  Bytes enc = SealMsg{seal}.Encode();
  EXPECT_EQ(SealMsg::Decode(enc)->seal.Encode(), enc);
  Bytes cut(enc.begin(), enc.end() - 1);
  EXPECT_EQ(SealMsg::Decode(cut).status().code(), Code::kProtocol);
  EXPECT_EQ(SealRequest::Decode(SealRequest{3}.Encode())->volume, 3u);
  auto present = BaseSeal::Decode(BaseSeal{1, seal}.Encode());
  ASSERT_TRUE(present.ok());
  ASSERT_TRUE(present->seal.has_value());
  EXPECT_EQ(present->seal->region_points, seal.region_points);
  EXPECT_FALSE(BaseSeal::Decode(BaseSeal{0, std::nullopt}.Encode())->seal.has_value());
  EXPECT_EQ(BaseSeal::Decode(BaseSeal{0, seal}.Encode()).status().code(), Code::kProtocol);
}

// Server-ids become directory names: anything that could escape is refused.
// A RECORD carries its record and fingerprints; fingerprints that are not whole are refused.
TEST(Wire, RecordWithFingerprintsRoundTrips) {
  Bytes record(kRecordHeaderSize + kTagSize + 10, 0x11);
  Bytes fps(16, 0x22);
  Bytes frame;
  RecordMsg::AppendEncoded(&frame, 9, record, fps);
  auto f = ParseFrame(frame);
  ASSERT_TRUE(f.ok() && f->has_value());
  auto m = RecordMsg::Decode((*f)->payload);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->seq, 9u);
  EXPECT_EQ(m->record.size(), record.size());
  EXPECT_EQ(m->fingerprints.size(), 16u);
  Bytes odd;
  RecordMsg::AppendEncoded(&odd, 9, record, ByteSpan(fps).first(5));
  EXPECT_EQ(RecordMsg::Decode(ByteSpan(odd).subspan(kFrameHeaderSize)).status().code(), Code::kProtocol);
  // A record length past the payload is refused, not read past.
  Bytes lying = (*f)->payload.size() ? Bytes((*f)->payload.begin(), (*f)->payload.end()) : Bytes();
  lying[8] = 0xff;
  lying[9] = 0xff;
  EXPECT_EQ(RecordMsg::Decode(lying).status().code(), Code::kProtocol);
}

// Fingerprint requests must be block aligned and bounded; answers round-trip.
TEST(Wire, FingerprintMessages) {
  auto rq = FingerprintRequest::Decode(FingerprintRequest{1, 8192, 1 << 20}.Encode());
  ASSERT_TRUE(rq.ok());
  EXPECT_EQ(rq->volume, 1);
  EXPECT_EQ(rq->offset, 8192u);
  EXPECT_FALSE(FingerprintRequest::Decode(FingerprintRequest{0, 100, 4096}.Encode()).ok());
  EXPECT_FALSE(FingerprintRequest::Decode(FingerprintRequest{0, 0, kMaxFingerprintSpan + 1}.Encode()).ok());
  EXPECT_FALSE(FingerprintRequest::Decode(FingerprintRequest{0, 0, 0}.Encode()).ok());
  Fingerprints f;
  f.volume = 2;
  f.offset = 4096;
  f.values = {0, 3, 0xffffffffffffffffull};
  Bytes enc = f.Encode();
  auto back = Fingerprints::Decode(enc);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->values, f.values);
  for (size_t n = 0; n < enc.size(); ++n) EXPECT_FALSE(Fingerprints::Decode(ByteSpan(enc).first(n)).ok()) << n;
}

TEST(Wire, ServerIdValidation) {
  EXPECT_TRUE(ValidateServerId("web1").ok());
  EXPECT_TRUE(ValidateServerId("db-01.eu_west").ok());
  for (const char* bad : {"", ".", "..", "a/b", "../x", "has space", "x\n"})
    EXPECT_FALSE(ValidateServerId(bad).ok()) << bad;
  EXPECT_FALSE(ValidateServerId(std::string(65, 'a')).ok());
}

}  // namespace
}  // namespace blockrep::wire

namespace blockrep::wire {
namespace {

// A server-id a peer sent is quoted escaped and cut short: a newline in it cannot start a forged
// log line, and a megabyte of it does not fill the log.
TEST(Wire, InvalidServerIdIsQuotedEscaped) {
  Status st = ValidateServerId("web1\n2026-11-27T00:00:00.000Z blockrep-staging: server 'db1': point 9 committed");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message().find('\n'), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("web1\\x0a2026"), std::string::npos) << st.message();
  EXPECT_EQ(Printable(std::string(1000, 'a'), 80), std::string(80, 'a') + "...");
  EXPECT_EQ(Printable(std::string("a\0b\x7f\xc3", 5)), "a\\x00b\\x7f\\xc3");
}

// FLEET round-trips; a bad state, drill result, server-id or count is a protocol error.
TEST(Wire, FleetRoundTripsAndRefusesMalformed) {
  Fleet f;
  FleetEntry a;
  a.server_id = "db1";
  a.connected = true;
  a.state = 3;
  a.lag_ms = 25700;
  a.points = 35;
  a.last_drill_pass = 1;
  FleetEntry b;
  b.server_id = "web-2";
  f.servers = {a, b};
  auto back = Fleet::Decode(f.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  ASSERT_EQ(back->servers.size(), 2u);
  EXPECT_EQ(back->servers[0].lag_ms, 25700u);
  EXPECT_TRUE(back->servers[0].connected);
  EXPECT_EQ(back->servers[1].state, FleetEntry::kNoReport);
  EXPECT_EQ(back->servers[1].last_drill_pass, -1);
  Fleet bad = f;
  bad.servers[0].state = 17;
  EXPECT_EQ(Fleet::Decode(bad.Encode()).status().code(), Code::kProtocol);
  bad = f;
  bad.servers[0].last_drill_pass = 2;
  EXPECT_EQ(Fleet::Decode(bad.Encode()).status().code(), Code::kProtocol);
  bad = f;
  bad.servers[0].server_id = "../x";
  EXPECT_FALSE(Fleet::Decode(bad.Encode()).ok());
  Bytes big;
  ByteWriter(&big).U32(Fleet::kServersMax + 1);
  EXPECT_EQ(Fleet::Decode(big).status().code(), Code::kProtocol);
  Bytes truncated = f.Encode();
  truncated.pop_back();
  EXPECT_FALSE(Fleet::Decode(truncated).ok());
}

}  // namespace
}  // namespace blockrep::wire
