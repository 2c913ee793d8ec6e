// The restore's stretch reader (recovery/stretch_reader.h): records read a stretch at a time, on
// the caller's thread or one stretch ahead on a thread of its own, equal records read one by one;
// what is cut short, damaged or missing is reported for exactly the records it concerns; the
// caller's error stops the reading.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <string>
#include <vector>

#include "blockrep/base/checksum.h"
#include "blockrep/base/fs.h"
#include "blockrep/store/store.h"
#include "stretch_reader.h"
#include "temp_dir.h"

namespace blockrep::recovery {
namespace {

using store::IndexEntry;
using store::PackReader;

constexpr uint64_t kInline = std::numeric_limits<uint64_t>::max();  // threaded_bytes_min: never a thread
constexpr uint64_t kThreaded = 0;                                    // always a thread

// Packs 1 and 2 under dir/packs: records of 1000 bytes to 600 KiB with gaps of other bytes
// between them (up to 300 KiB, wider than StretchReader::kReadGapMax), so that reads take several
// stretches and windows. Their entries, in pack order.
std::vector<IndexEntry> WritePacks(const TempDir& dir, uint32_t records_per_pack) {
  EXPECT_TRUE(MakeDirs(dir / "packs", 0700).ok());
  std::vector<IndexEntry> entries;
  std::mt19937 rng(11);
  for (uint32_t pack = 1; pack <= 2; ++pack) {
    Bytes bytes(16, 0);
    for (uint32_t i = 0; i < records_per_pack; ++i) {
      IndexEntry e;
      e.pack = pack;
      e.pack_offset = bytes.size();
      e.record_bytes = (i % 7 == 3) ? 600u << 10 : 1000 + 37 * i;
      for (uint32_t b = 0; b < e.record_bytes; ++b) bytes.push_back(static_cast<uint8_t>(rng()));
      e.checksum = Checksum64(ByteSpan(bytes).subspan(e.pack_offset, e.record_bytes));
      bytes.resize(bytes.size() + (i % 5 == 4 ? 300u << 10 : (i % 3) * 500), 0);
      entries.push_back(e);
    }
    char name[32];
    std::snprintf(name, sizeof(name), "%08u.pack", pack);
    EXPECT_TRUE(WriteFileAtomic(dir / ("packs/" + std::string(name)), bytes).ok());
  }
  return entries;
}

std::vector<const IndexEntry*> Pointers(const std::vector<IndexEntry>& entries) {
  std::vector<const IndexEntry*> out;
  for (const IndexEntry& e : entries) out.push_back(&e);
  return out;
}

// What fn saw of each record: its status code and, when read, its bytes.
struct Seen {
  std::vector<size_t> order;
  std::vector<Code> codes;
  std::vector<std::string> messages;
  std::vector<Bytes> records;
};

Status ReadAll(const TempDir& dir, const std::vector<const IndexEntry*>& entries, uint64_t threaded_bytes_min, Seen* seen) {
  PackReader packs(dir.path());
  StretchReader reader(&packs, threaded_bytes_min);
  return reader.Read(entries, [&](size_t i, const Status& read, ByteSpan record) {
    seen->order.push_back(i);
    seen->codes.push_back(read.code());
    seen->messages.push_back(read.message());
    seen->records.emplace_back(record.begin(), record.end());
    return Status::Ok();
  });
}

// Every record, in pack order and then again out of order, equals what PackReader::Read gives for
// it alone, on the caller's thread and on a thread of its own.
TEST(StretchReader, RecordsEqualRecordsReadOneByOne) {
  TempDir dir("stretch-reader");
  std::vector<IndexEntry> entries = WritePacks(dir, 40);
  std::vector<const IndexEntry*> list = Pointers(entries);
  for (size_t i = 0; i < 10; ++i) list.push_back(&entries[(i * 13) % entries.size()]);  // out of order
  PackReader one_by_one(dir.path());
  for (uint64_t mode : {kInline, kThreaded}) {
    Seen seen;
    ASSERT_TRUE(ReadAll(dir, list, mode, &seen).ok());
    ASSERT_EQ(seen.order.size(), list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      EXPECT_EQ(seen.order[i], i);
      ASSERT_EQ(seen.codes[i], Code::kOk) << i << ": " << seen.messages[i];
      Bytes want;
      ASSERT_TRUE(one_by_one.Read(*list[i], &want).ok());
      EXPECT_TRUE(seen.records[i] == want) << "record " << i << (mode == kInline ? " inline" : " threaded");
    }
  }
}

// A record that runs past the end of its pack is data loss, named by its offset; the records
// before it in the same stretch are read.
TEST(StretchReader, ARecordCutShortIsDataLoss) {
  TempDir dir("stretch-reader");
  std::vector<IndexEntry> entries = WritePacks(dir, 6);
  entries.resize(6);  // pack 1 only
  IndexEntry cut = entries.back();
  cut.pack_offset = cut.pack_offset + cut.record_bytes + 1000;  // past the last record: the file ends there
  entries.push_back(cut);
  for (uint64_t mode : {kInline, kThreaded}) {
    Seen seen;
    ASSERT_TRUE(ReadAll(dir, Pointers(entries), mode, &seen).ok());
    ASSERT_EQ(seen.codes.size(), entries.size());
    for (size_t i = 0; i + 1 < entries.size(); ++i) EXPECT_EQ(seen.codes[i], Code::kOk) << i;
    EXPECT_EQ(seen.codes.back(), Code::kDataLoss);
    EXPECT_NE(seen.messages.back().find("unexpected end of file"), std::string::npos) << seen.messages.back();
    EXPECT_NE(seen.messages.back().find("offset " + std::to_string(cut.pack_offset)), std::string::npos)
        << seen.messages.back();
  }
}

// One flipped byte fails the checksum of its record only; a missing pack fails each of its records;
// a record no pack could hold is refused without reading.
TEST(StretchReader, DamageIsReportedForTheRecordsItConcerns) {
  TempDir dir("stretch-reader");
  std::vector<IndexEntry> entries = WritePacks(dir, 12);
  const IndexEntry& hit = entries[4];
  {
    Result<Bytes> read = ReadFileBytes(dir / "packs/00000001.pack", 64u << 20);
    ASSERT_TRUE(read.ok()) << read.status().message();
    Bytes pack = std::move(read).value();
    pack[hit.pack_offset + hit.record_bytes / 2] ^= 0x01;
    ASSERT_TRUE(WriteFileAtomic(dir / "packs/00000001.pack", pack).ok());
  }
  ASSERT_EQ(unlink((dir / "packs/00000002.pack").c_str()), 0);
  IndexEntry impossible = entries[0];
  impossible.record_bytes = store::kRecordBytesMax + 1;
  entries.push_back(impossible);
  for (uint64_t mode : {kInline, kThreaded}) {
    Seen seen;
    ASSERT_TRUE(ReadAll(dir, Pointers(entries), mode, &seen).ok());
    ASSERT_EQ(seen.codes.size(), entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i == 4) {
        EXPECT_EQ(seen.codes[i], Code::kDataLoss);
        EXPECT_NE(seen.messages[i].find("fails its checksum"), std::string::npos) << seen.messages[i];
      } else if (i + 1 == entries.size()) {
        EXPECT_EQ(seen.codes[i], Code::kDataLoss);
        EXPECT_NE(seen.messages[i].find("cannot exist"), std::string::npos) << seen.messages[i];
      } else if (entries[i].pack == 2) {
        EXPECT_NE(seen.codes[i], Code::kOk) << i;
        EXPECT_NE(seen.messages[i].find("open pack"), std::string::npos) << seen.messages[i];
      } else {
        EXPECT_EQ(seen.codes[i], Code::kOk) << i << ": " << seen.messages[i];
      }
    }
  }
}

// The caller's error ends the reading at once: Read returns it, and fn is not called again (the
// reading thread is stopped and joined, not left running).
TEST(StretchReader, TheCallersErrorStopsTheReading) {
  TempDir dir("stretch-reader");
  std::vector<IndexEntry> entries = WritePacks(dir, 40);
  for (uint64_t mode : {kInline, kThreaded}) {
    PackReader packs(dir.path());
    StretchReader reader(&packs, mode);
    size_t calls = 0;
    Status st = reader.Read(Pointers(entries), [&](size_t i, const Status&, ByteSpan) {
      ++calls;
      return i == 25 ? Conflict("enough") : Status::Ok();
    });
    EXPECT_EQ(st.code(), Code::kConflict) << st.message();
    EXPECT_EQ(calls, 26u);
  }
}

}  // namespace
}  // namespace blockrep::recovery
