// FingerprintTable: small tables in memory, large ones in an unlinked file whose resident pages
// stay under kResidentBytesMax whatever is written or read.
#include "fingerprint_table.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "temp_dir.h"

namespace blockrep::agent {
namespace {

// The process's resident set, in bytes (VmRSS of /proc/self/status).
uint64_t RssBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// A table under the spill size stays in memory, reads 0 until written, and keeps what is written.
TEST(FingerprintTable, SmallTablesStayInMemory) {
  TempDir dir("fptable");
  auto t = FingerprintTable::Make(1000, dir.path());
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_FALSE(t->spilled());
  EXPECT_EQ((*t)[999], 0u);
  t->Set(999, 77);
  uint64_t in[3] = {1, 2, 3}, out[3] = {};
  t->Write(10, in, 3);
  t->Read(10, out, 3);
  EXPECT_EQ(out[2], 3u);
  EXPECT_EQ((*t)[999], 77u);
}

// A 32 MiB table (a 16 GiB volume) written and read in full, in order and at random, keeps every
// value and never holds more than its resident bound (plus slack for the test's own pages).
TEST(FingerprintTable, SpilledTableKeepsItsResidentPagesBounded) {
  TempDir dir("fptable");
  const uint64_t blocks = uint64_t{4} << 20;
  auto t = FingerprintTable::Make(blocks, dir.path());
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_TRUE(t->spilled());
  const uint64_t rss0 = RssBytes();
  uint64_t peak = rss0;
  for (uint64_t b = 0; b < blocks; ++b) {
    t->Set(b, b * 0x9e3779b97f4a7c15ull | 1);
    if (b % 65536 == 0) peak = std::max(peak, RssBytes());
  }
  uint64_t x = 12345;
  for (int i = 0; i < 200000; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t b = (x >> 20) % blocks;
    ASSERT_EQ((*t)[b], b * 0x9e3779b97f4a7c15ull | 1) << "block " << b;
    if (i % 10000 == 0) peak = std::max(peak, RssBytes());
  }
  EXPECT_LT(peak - rss0, FingerprintTable::kResidentBytesMax + (2u << 20))
      << "the table's 32 MiB must not all be resident";
  // Nothing of it is left in the directory: the file was never linked there.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator{}), 0);
}

// NextNonZero finds each non-zero fingerprint, in a table in memory and in a spilled one (whose
// holes it skips a page at a time): at a page's first block, inside a page, the last block, and
// none past the end it is given.
TEST(FingerprintTable, NextNonZeroFindsEveryNonZeroBlock) {
  TempDir dir("fptable");
  for (uint64_t blocks : {uint64_t{1000}, uint64_t{1} << 20}) {
    auto t = FingerprintTable::Make(blocks, dir.path());
    ASSERT_TRUE(t.ok()) << t.status().message();
    EXPECT_EQ(t->spilled(), blocks > FingerprintTable::kInMemoryBlocksMax);
    std::vector<uint64_t> set = {3, 512, 700, blocks - 1};
    if (t->spilled()) set = {3, 512, 700, 512 * 300, 512 * 300 + 9, blocks - 1};
    for (uint64_t b : set) t->Set(b, 5);
    std::vector<uint64_t> found;
    for (uint64_t b = t->NextNonZero(0, blocks); b < blocks; b = t->NextNonZero(b + 1, blocks)) found.push_back(b);
    EXPECT_EQ(found, set) << blocks << " blocks";
    EXPECT_EQ(t->NextNonZero(701, blocks - 1), t->spilled() ? 512u * 300 : blocks - 1);
    EXPECT_EQ(t->NextNonZero(4, 512), 512u);
  }
}

// A spill directory that does not exist: a clear error naming it.
TEST(FingerprintTable, MissingSpillDirectoryIsAnError) {
  auto t = FingerprintTable::Make(uint64_t{1} << 20, "/nonexistent/blockrep-state");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("/nonexistent/blockrep-state"), std::string::npos) << t.status().message();
}

}  // namespace
}  // namespace blockrep::agent
