#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "blockrep/crypto/fingerprint.h"

#include "test_data.h"

namespace blockrep {
namespace {

// Zero blocks fingerprint to 0; blocks with data never do (their fingerprints are odd).
TEST(Fingerprint, ZeroIsReserved) {
  auto f = BlockFingerprinter::Create(FilledKey(1));
  ASSERT_TRUE(f.ok());
  Bytes zero(4096, 0), one(4096, 0);
  one[100] = 1;
  EXPECT_EQ(f->Block(0, zero), 0u);
  EXPECT_EQ(f->Block(0, one) & 1, 1u);
}

// The same block gets unrelated fingerprints under another key or at another offset.
TEST(Fingerprint, DependsOnKeyAndOffset) {
  auto a = BlockFingerprinter::Create(FilledKey(1));
  auto b = BlockFingerprinter::Create(FilledKey(2));
  ASSERT_TRUE(a.ok() && b.ok());
  Bytes block(4096, 0x5a);
  EXPECT_EQ(a->Block(4096, block), a->Block(4096, block));
  EXPECT_NE(a->Block(4096, block), b->Block(4096, block));
  EXPECT_NE(a->Block(4096, block), a->Block(8192, block));
  Bytes changed = block;
  changed[4095] ^= 1;
  EXPECT_NE(a->Block(4096, block), a->Block(4096, changed));
}

// Append emits one little-endian fingerprint per 4 KiB block, the last one possibly short.
TEST(Fingerprint, AppendCoversEveryBlock) {
  auto f = BlockFingerprinter::Create(FilledKey(3));
  ASSERT_TRUE(f.ok());
  Bytes data(3 * 4096 + 512, 0x77);
  Bytes out;
  f->Append(65536, data, &out);
  ASSERT_EQ(out.size(), FingerprintCount(static_cast<uint32_t>(data.size())) * 8);
  ASSERT_EQ(out.size(), 32u);
  uint64_t second = 0;
  for (int i = 0; i < 8; ++i) second |= static_cast<uint64_t>(out[8 + i]) << (8 * i);
  EXPECT_EQ(second, f->Block(65536 + 4096, ByteSpan(data).subspan(4096, 4096)));
}

// Each thread keeps one AES context, re-keyed when another fingerprinter uses it: threads that
// alternate between two keys get exactly the fingerprints one thread computes alone.
TEST(Fingerprint, ThreadsAndKeysDoNotMix) {
  auto a = BlockFingerprinter::Create(FilledKey(1));
  auto b = BlockFingerprinter::Create(FilledKey(2));
  ASSERT_TRUE(a.ok() && b.ok());
  Bytes data = RandomBytes(64 * 4096, 9);
  std::vector<uint64_t> want_a, want_b;
  for (size_t i = 0; i < 64; ++i) {
    ByteSpan block(data.data() + i * 4096, 4096);
    want_a.push_back(a->Block(i * 4096, block));
    want_b.push_back(b->Block(i * 4096, block));
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int round = 0; round < 50; ++round)
        for (size_t i = 0; i < 64; ++i) {
          ByteSpan block(data.data() + i * 4096, 4096);
          if (a->Block(i * 4096, block) != want_a[i]) ++mismatches;
          if (b->Block(i * 4096, block) != want_b[i]) ++mismatches;
        }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace blockrep
