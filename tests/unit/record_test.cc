#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "blockrep/crypto/keyfile.h"
#include "blockrep/crypto/record.h"

#include "test_data.h"

namespace blockrep {
namespace {

Bytes Text(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>('a' + i % 23);
  return b;
}

struct Sealed {
  Bytes record;
  RecordHeader header;
};

Sealed SealOne(RecordSealer& s, ByteSpan plain, uint64_t offset = 4096) {
  Sealed out;
  auto h = s.Seal(CodecChoice{Codec::kLz4, 0}, 1, offset, 7, plain, &out.record);
  EXPECT_TRUE(h.ok()) << h.status().message();
  out.header = *h;
  return out;
}

// A sealed record opens with the same key and server-id and yields the plaintext.
TEST(Record, SealOpenRoundTrip) {
  auto sealer = RecordSealer::Create(FilledKey(1), "web1");
  ASSERT_TRUE(sealer.ok());
  Bytes plain = Text(65536);
  Sealed s = SealOne(**sealer, plain);
  EXPECT_EQ(s.record.size(), s.header.total_size());
  RecordOpener opener(FilledKey(1), "web1");
  RecordHeader h;
  Bytes back;
  ASSERT_TRUE(opener.Open(s.record, &h, &back).ok());
  EXPECT_EQ(back, plain);
  EXPECT_EQ(h.offset, 4096u);
  EXPECT_EQ(h.volume, 1);
  EXPECT_EQ(h.point_id, 7u);
}

// Another key fails authentication.
TEST(Record, WrongKeyFailsAuthentication) {
  auto sealer = RecordSealer::Create(FilledKey(1), "web1");
  Sealed s = SealOne(**sealer, Text(1000));
  RecordOpener opener(FilledKey(2), "web1");
  RecordHeader h;
  Bytes back;
  EXPECT_EQ(opener.Open(s.record, &h, &back).code(), Code::kUnauthenticated);
}

// The server-id is bound into the tag: a record moved to another server does not open.
TEST(Record, ServerIdIsAuthenticated) {
  auto sealer = RecordSealer::Create(FilledKey(1), "web1");
  Sealed s = SealOne(**sealer, Text(1000));
  RecordOpener opener(FilledKey(1), "web2");
  RecordHeader h;
  Bytes back;
  EXPECT_EQ(opener.Open(s.record, &h, &back).code(), Code::kUnauthenticated);
}

// Moving a record to another offset (editing the cleartext header) is detected.
TEST(Record, HeaderTamperIsDetected) {
  auto sealer = RecordSealer::Create(FilledKey(1), "web1");
  Sealed s = SealOne(**sealer, Text(1000));
  s.record[24] ^= 0x10;  // offset field
  RecordOpener opener(FilledKey(1), "web1");
  RecordHeader h;
  Bytes back;
  EXPECT_EQ(opener.Open(s.record, &h, &back).code(), Code::kUnauthenticated);
}

// Every bit of the ciphertext and tag is covered.
TEST(Record, CiphertextBitFlipIsDetected) {
  auto sealer = RecordSealer::Create(FilledKey(1), "web1");
  Sealed s = SealOne(**sealer, Text(3000));
  RecordOpener opener(FilledKey(1), "web1");
  for (size_t pos : {kRecordHeaderSize, s.record.size() / 2, s.record.size() - 1}) {
    Bytes copy = s.record;
    copy[pos] ^= 1;
    RecordHeader h;
    Bytes back;
    EXPECT_FALSE(opener.Open(copy, &h, &back).ok()) << "flip at " << pos;
  }
}

// Nonces never repeat: within a sealer the counter increases; two sealers have distinct sessions.
TEST(Record, NoncesNeverRepeat) {
  std::set<std::pair<SessionId, uint64_t>> seen;
  for (int sealer_no = 0; sealer_no < 8; ++sealer_no) {
    auto sealer = RecordSealer::Create(FilledKey(1), "web1");
    for (int i = 0; i < 200; ++i) {
      Sealed s = SealOne(**sealer, Text(100), static_cast<uint64_t>(i) * 4096);
      EXPECT_TRUE(seen.emplace(s.header.session, s.header.counter).second);
    }
  }
  EXPECT_EQ(seen.size(), 1600u);
}

// A header announcing an absurd length is rejected before anything is allocated for it.
TEST(Record, DecodeRejectsOutOfBoundsLengths) {
  auto sealer = RecordSealer::Create(FilledKey(1), "web1");
  Sealed s = SealOne(**sealer, Text(1000));
  Bytes copy = s.record;
  copy[12] = 0xff; copy[13] = 0xff; copy[14] = 0xff; copy[15] = 0x7f;  // plain_len
  EXPECT_EQ(RecordHeader::Decode(copy).status().code(), Code::kDataLoss);
  EXPECT_EQ(RecordHeader::Decode(ByteSpan(copy).first(10)).status().code(), Code::kDataLoss);
}

// An all-zero extent becomes a header-and-tag zero record that still authenticates.
TEST(Record, ZeroExtentIsAZeroRecord) {
  auto sealer = RecordSealer::Create(FilledKey(1), "web1");
  Bytes zeros(65536, 0);
  Sealed s = SealOne(**sealer, zeros);
  EXPECT_TRUE(s.header.zero());
  EXPECT_EQ(s.record.size(), kRecordHeaderSize + kTagSize);
  RecordOpener opener(FilledKey(1), "web1");
  RecordHeader h;
  Bytes back;
  ASSERT_TRUE(opener.Open(s.record, &h, &back).ok());
  EXPECT_EQ(back, zeros);
  s.record[12] ^= 1;  // claim another length
  EXPECT_EQ(opener.Open(s.record, &h, &back).code(), Code::kUnauthenticated);
}

// Key files: written 0600 and loaded; a loose mode is refused with the fix in the message.
TEST(KeyFile, WriteLoadAndRefuseLooseMode) {
  char dir[] = "/tmp/blockrep-keytest.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/data.key";
  ASSERT_TRUE(WriteNewDataKey(path).ok());
  EXPECT_FALSE(WriteNewDataKey(path).ok());  // never overwrites a key
  auto k = LoadDataKey(path);
  ASSERT_TRUE(k.ok()) << k.status().message();
  EXPECT_EQ(k->key_id, ComputeKeyId(k->bytes));
  chmod(path.c_str(), 0644);
  auto loose = LoadDataKey(path);
  EXPECT_EQ(loose.status().code(), Code::kPermissionDenied);
  EXPECT_NE(loose.status().message().find("chmod 600"), std::string::npos);
  unlink(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace blockrep
