// PackAppender (blockrep/store/pack_appender.h): the staging's pack writer, driven through a real
// io_uring on a real store directory.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "blockrep/base/env.h"
#include "blockrep/base/fs.h"
#include "blockrep/store/pack_appender.h"
#include "blockrep/store/store.h"
#include "blockrep/net/uring.h"
#include "test_data.h"

namespace blockrep::store {
namespace {

class PackAppenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/blockrep-appender.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    ASSERT_TRUE(InitStoreRoot(root_, true).ok());
    store_ = std::move(ServerStore::Open(root_, "web1", true)).value();
    ring_ = std::move(Ring::Create(8)).value();
  }
  void TearDown() override { std::system(("rm -rf " + root_).c_str()); }

  // Runs the commit in flight to its end.
  PackAppender::Done Finish(PackAppender& a) {
    PackAppender::Done done = PackAppender::Done::kNo;
    while (a.inflight()) {
      Status st = ring_->Reap([&](uint64_t ud, int res, uint32_t) {
        // user data 1, 2: the pack's write and fsync; 3, 4: the follower's.
        const PackAppender::Op ops[] = {PackAppender::Op::kWrite, PackAppender::Op::kFsync,
                                         PackAppender::Op::kFollowWrite, PackAppender::Op::kFollowSync};
        done = a.OnCompletion(ops[ud - 1], res);
      }, true).status();
      EXPECT_TRUE(st.ok());
    }
    return done;
  }
  PackAppender::Follower FollowerOf(std::shared_ptr<File> file, uint64_t offset, Bytes bytes) {
    PackAppender::Follower f;
    f.file = std::move(file);
    f.offset = offset;
    f.bytes = std::move(bytes);
    f.write_user_data = 3;
    f.sync_user_data = 4;
    return f;
  }
  // Commits one record (seq 1), turns the pack's descriptor read-only and commits another of
  // `bytes` (seq 2), which fails with EBADF; returns the durable end before it.
  uint64_t CommitThenFail(PackAppender& a, size_t bytes) {
    a.Append(RandomBytes(500, 3), {}, 1);
    EXPECT_TRUE(a.StartCommit(*ring_, 1, 2));
    EXPECT_EQ(Finish(a), PackAppender::Done::kDurable);
    const uint64_t durable = a.durable_end();
    int ro = open(store_->PackPath(a.pack_id()).c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(ro, 0);
    EXPECT_EQ(dup2(ro, a.fd()), a.fd());
    close(ro);
    a.Append(RandomBytes(bytes, 4), {}, 2);
    EXPECT_TRUE(a.StartCommit(*ring_, 1, 2));
    EXPECT_EQ(Finish(a), PackAppender::Done::kFailed);
    return durable;
  }
  uint64_t FileBytes(const PackAppender& a) {
    struct stat st{};
    EXPECT_EQ(stat(store_->PackPath(a.pack_id()).c_str(), &st), 0);
    return static_cast<uint64_t>(st.st_size);
  }

  std::string root_;
  std::unique_ptr<ServerStore> store_;
  std::unique_ptr<Ring> ring_;
};

// Records gather while a commit is in flight and go out in the next one; each commit makes the
// records up to its last sequence number durable, at the offsets Append returned.
TEST_F(PackAppenderTest, GroupCommitMakesRecordsDurableInOrder) {
  PackAppender a;
  ASSERT_TRUE(a.Open(*store_).ok());
  Bytes r1 = RandomBytes(1000, 1), r2 = RandomBytes(3000, 2), fp(8, 7);
  EXPECT_EQ(a.Append(r1, fp, 1), kPackHeaderSize);
  EXPECT_EQ(a.Append(r2, {}, 2), kPackHeaderSize + 1008);
  ASSERT_TRUE(a.StartCommit(*ring_, 1, 2));
  EXPECT_EQ(a.Append(r1, {}, 3), kPackHeaderSize + 4008);  // gathers behind the commit
  EXPECT_FALSE(a.StartCommit(*ring_, 1, 2)) << "one commit at a time";
  ASSERT_EQ(Finish(a), PackAppender::Done::kDurable);
  EXPECT_EQ(a.durable_seq(), 2u);
  EXPECT_EQ(a.durable_end(), kPackHeaderSize + 4008);
  ASSERT_TRUE(a.StartCommit(*ring_, 1, 2));
  ASSERT_EQ(Finish(a), PackAppender::Done::kDurable);
  EXPECT_EQ(a.durable_seq(), 3u);
  EXPECT_EQ(FileBytes(a), a.durable_end());
  Bytes file = std::move(ReadFileBytes(store_->PackPath(a.pack_id()), 1 << 20)).value();
  EXPECT_TRUE(std::equal(r2.begin(), r2.end(), file.begin() + kPackHeaderSize + 1008));
  EXPECT_FALSE(a.StartCommit(*ring_, 1, 2)) << "nothing gathered";
  EXPECT_FALSE(a.ShouldRoll(1 << 20));
  EXPECT_TRUE(a.ShouldRoll(4096));
}

// A direct pack writes whole blocks (around the page cache where /tmp's filesystem takes O_DIRECT,
// through it where it does not: the same writes either way): each commit writes the block the last one ended in
// again, so every record stays at the offset Append returned, intact, also after the buffers were
// given back; the file ends with zeros up to a block boundary until the pack is closed.
TEST_F(PackAppenderTest, DirectCommitsKeepEveryByteAtItsOffset) {
  PackAppender a;
  ASSERT_TRUE(a.Open(*store_, true).ok());
  ASSERT_TRUE(a.direct());
  std::vector<std::pair<uint64_t, Bytes>> records;
  uint64_t seq = 0;
  for (size_t len : {1000u, 3000u, 5000u, 4096u, 70000u, 12u, 8192u, 333u}) {
    Bytes r = RandomBytes(len, static_cast<uint32_t>(len));
    records.emplace_back(a.Append(r, {}, ++seq), r);
    if (seq % 2 == 0) {
      ASSERT_TRUE(a.StartCommit(*ring_, 1, 2));
      ASSERT_EQ(Finish(a), PackAppender::Done::kDurable);
      EXPECT_EQ(a.durable_seq(), seq);
      EXPECT_EQ(a.durable_end(), records.back().first + len);
      if (seq == 4) a.ReleaseBuffers();  // an idle session's: the next commit still has its block's head
    }
  }
  const uint64_t end = a.durable_end();
  EXPECT_EQ(FileBytes(a), (end + 4095) / 4096 * 4096);
  Bytes file = std::move(ReadFileBytes(store_->PackPath(a.pack_id()), 1 << 20)).value();
  EXPECT_TRUE(std::equal(file.begin(), file.begin() + kPackHeaderSize, EncodePackHeader(a.pack_id()).begin()));
  for (const auto& [at, r] : records)
    EXPECT_TRUE(std::equal(r.begin(), r.end(), file.begin() + static_cast<ptrdiff_t>(at))) << "record at " << at;
  EXPECT_TRUE(IsAllZero(ByteSpan(file.data() + end, file.size() - end)));
  a.Close();
  EXPECT_EQ(FileBytes(a), end) << "a closed pack ends at its last record";
}

// A failed direct commit acknowledges nothing more and leaves nothing but zeros past the durable
// end (here the cut back fails too, on the read-only descriptor: the last block's padding stays).
TEST_F(PackAppenderTest, FailedDirectCommitCutsBackToTheDurableEnd) {
  PackAppender a;
  ASSERT_TRUE(a.Open(*store_, true).ok());
  ASSERT_TRUE(a.direct());
  const uint64_t durable = CommitThenFail(a, 7000);
  const std::string path = store_->PackPath(a.pack_id());
  EXPECT_EQ(a.durable_seq(), 1u);
  EXPECT_FALSE(a.open());
  Bytes file = std::move(ReadFileBytes(path, 1 << 20)).value();
  ASSERT_LE(file.size(), 4096u);
  EXPECT_TRUE(IsAllZero(ByteSpan(file.data() + durable, file.size() - durable)));
}

// A commit that fails (here: the pack's descriptor turned read-only, EBADF) acknowledges nothing
// more, leaves the file at its durable end and closes the pack.
TEST_F(PackAppenderTest, FailedCommitCutsBackAndCloses) {
  PackAppender a;
  ASSERT_TRUE(a.Open(*store_).ok());
  const uint64_t durable = CommitThenFail(a, 700);
  const std::string path = store_->PackPath(a.pack_id());
  EXPECT_EQ(a.error(), EBADF);
  EXPECT_FALSE(a.follower_failed());
  EXPECT_EQ(a.durable_seq(), 1u);
  EXPECT_FALSE(a.open());
  struct stat st{};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), durable);
}

// A commit with a follower writes the follower's bytes too (after the pack's), and is durable only
// with them; a commit without one leaves the follower's file alone.
TEST_F(PackAppenderTest, FollowerIsWrittenWithTheCommit) {
  PackAppender a;
  ASSERT_TRUE(a.Open(*store_).ok());
  const std::string path = root_ + "/follower";
  std::shared_ptr<File> file = std::move(Env::Default()->Open(path, OpenMode::kCreateTruncate)).value();
  Bytes r1 = RandomBytes(1000, 1), f1 = RandomBytes(77, 2), f2 = RandomBytes(33, 3);
  a.Append(r1, {}, 1);
  PackAppender::Follower follow = FollowerOf(file, 0, f1);
  ASSERT_TRUE(a.StartCommit(*ring_, 1, 2, &follow));
  ASSERT_EQ(Finish(a), PackAppender::Done::kDurable);
  EXPECT_EQ(a.durable_seq(), 1u);
  EXPECT_EQ(a.follower_durable_bytes(), 77u);
  a.Append(r1, {}, 2);
  ASSERT_TRUE(a.StartCommit(*ring_, 1, 2));
  ASSERT_EQ(Finish(a), PackAppender::Done::kDurable);
  EXPECT_EQ(a.follower_durable_bytes(), 0u);
  a.Append(r1, {}, 3);
  follow = FollowerOf(file, 77, f2);
  ASSERT_EQ(a.CommitBlocking(&follow), PackAppender::Done::kDurable);  // the same without a ring
  EXPECT_EQ(a.durable_seq(), 3u);
  EXPECT_EQ(a.follower_durable_bytes(), 33u);
  Bytes want = f1;
  want.insert(want.end(), f2.begin(), f2.end());
  EXPECT_EQ(std::move(ReadFileBytes(path, 1 << 20)).value(), want);
}

// A follower that cannot be written (a read-only descriptor, EBADF) fails the whole commit: its
// records are not acknowledged and the pack is cut back to its durable end.
TEST_F(PackAppenderTest, AFailedFollowerFailsTheCommit) {
  PackAppender a;
  ASSERT_TRUE(a.Open(*store_).ok());
  const std::string path = root_ + "/follower";
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(path, Bytes(5, 1)).ok());
  std::shared_ptr<File> ro = std::move(Env::Default()->Open(path, OpenMode::kRead)).value();
  a.Append(RandomBytes(500, 3), {}, 1);
  const uint64_t durable = a.durable_end();
  PackAppender::Follower follow = FollowerOf(ro, 5, RandomBytes(40, 4));
  ASSERT_TRUE(a.StartCommit(*ring_, 1, 2, &follow));
  ASSERT_EQ(Finish(a), PackAppender::Done::kFailed);
  EXPECT_EQ(a.error(), EBADF);
  EXPECT_TRUE(a.follower_failed());
  EXPECT_EQ(a.durable_seq(), 0u);
  EXPECT_EQ(a.durable_end(), durable);
  EXPECT_FALSE(a.open());
  EXPECT_EQ(std::move(ReadFileBytes(path, 1 << 20)).value(), Bytes(5, 1));
}

}  // namespace
}  // namespace blockrep::store
