#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include "blockrep/base/fs.h"
#include "blockrep/net/uring.h"

namespace blockrep {
namespace {

// Synchronous helpers write, fsync and read back through the ring.
TEST(Uring, WriteFsyncReadBack) {
  auto ring = Ring::Create(8);
  ASSERT_TRUE(ring.ok()) << ring.status().message();
  char path[] = "/tmp/blockrep-uring.XXXXXX";
  UniqueFd fd(mkstemp(path));
  ASSERT_TRUE(fd.valid());
  Bytes data(300000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31);
  ASSERT_TRUE((*ring)->WriteFull(fd.get(), data.data(), data.size(), 4096).ok());
  ASSERT_TRUE((*ring)->Fsync(fd.get()).ok());
  Bytes back(data.size());
  ASSERT_TRUE((*ring)->ReadFull(fd.get(), back.data(), back.size(), 4096).ok());
  EXPECT_EQ(back, data);
  unlink(path);
}

// Reading past the end of a file is reported as data loss, not returned as zeros.
TEST(Uring, ReadPastEndIsDataLoss) {
  auto ring = Ring::Create(8);
  char path[] = "/tmp/blockrep-uring.XXXXXX";
  UniqueFd fd(mkstemp(path));
  Bytes small(100, 1);
  ASSERT_TRUE((*ring)->WriteFull(fd.get(), small.data(), small.size(), 0).ok());
  Bytes back(200);
  EXPECT_EQ((*ring)->ReadFull(fd.get(), back.data(), back.size(), 0).code(), Code::kDataLoss);
  unlink(path);
}

// The ring never allows more requests in flight than its completion queue holds.
TEST(Uring, InflightIsBoundedByCompletionQueue) {
  auto ring = Ring::Create(4);
  ASSERT_TRUE(ring.ok());
  unsigned queued = 0;
  while ((*ring)->HasRoom()) {
    io_uring_sqe* sqe = (*ring)->Sqe();
    ASSERT_NE(sqe, nullptr);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, UserData(queued, 1));
    ++queued;
  }
  EXPECT_EQ(queued, (*ring)->inflight());
  EXPECT_LE(queued, 8u);  // CQ is twice the SQ
  unsigned reaped = 0;
  while ((*ring)->inflight() > 0) {
    auto n = (*ring)->Reap([&](uint64_t, int res, uint32_t) { EXPECT_EQ(res, 0); ++reaped; }, true, 1000);
    ASSERT_TRUE(n.ok());
  }
  EXPECT_EQ(reaped, queued);
}

}  // namespace
}  // namespace blockrep
