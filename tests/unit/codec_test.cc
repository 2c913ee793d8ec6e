#include <gtest/gtest.h>

#include <random>

#include "blockrep/crypto/codec.h"

#include "test_data.h"

namespace blockrep {
namespace {

Bytes Compressible(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>("blockrep "[i % 9]);
  return b;
}

// Each codec round-trips compressible data and actually shrinks it.
TEST(Codec, RoundTripEveryCodec) {
  Bytes in = Compressible(65536);
  for (const char* name : {"lz4", "zstd", "zstd:9"}) {
    auto c = ParseCodec(name);
    ASSERT_TRUE(c.ok()) << name;
    Bytes out, back;
    Codec used = Compress(*c, in, &out);
    EXPECT_EQ(used, c->codec) << name;
    EXPECT_LT(out.size(), in.size() / 10) << name;
    ASSERT_TRUE(Decompress(used, out, static_cast<uint32_t>(in.size()), &back).ok()) << name;
    EXPECT_EQ(back, in) << name;
  }
}

// Random data is stored raw: the codec never expands an extent.
TEST(Codec, IncompressibleDataIsStoredRaw) {
  Bytes in = RandomBytes(65536, 7), out;
  EXPECT_EQ(Compress(CodecChoice{Codec::kLz4, 0}, in, &out), Codec::kNone);
  EXPECT_EQ(out, in);
  EXPECT_EQ(Compress(CodecChoice{Codec::kZstd, 3}, in, &out), Codec::kNone);
}

// A decompression that would exceed the announced length is data loss, not an overflow.
TEST(Codec, DecompressRefusesWrongLength) {
  Bytes in = Compressible(65536), out, back;
  Codec used = Compress(CodecChoice{Codec::kLz4, 0}, in, &out);
  Status s = Decompress(used, out, 1000, &back);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_LE(back.size(), 1000u);
}

// Garbage input to a decompressor is reported, never trusted.
TEST(Codec, DecompressRejectsGarbage) {
  Bytes junk = RandomBytes(500, 3), back;
  EXPECT_EQ(Decompress(Codec::kZstd, junk, 4096, &back).code(), Code::kDataLoss);
  EXPECT_EQ(Decompress(Codec::kLz4, junk, 4096, &back).code(), Code::kDataLoss);
}

// Bad --compress values name the problem and the fix.
TEST(Codec, ParseRejectsBadValues) {
  EXPECT_EQ(ParseCodec("gzip").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ParseCodec("zstd:0").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ParseCodec("zstd:20").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ParseCodec("zstd:x").status().code(), Code::kInvalidArgument);
  EXPECT_NE(ParseCodec("gzip").status().message().find("use lz4"), std::string::npos);
  EXPECT_EQ(ParseCodec("zstd:19")->level, 19);
}

}  // namespace
}  // namespace blockrep
