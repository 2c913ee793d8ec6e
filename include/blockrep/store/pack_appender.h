// The pack one writer appends records to, with group commit through an io_uring (docs/FORMAT.md,
// Packs): records gather in a batch while one write + fsync (linked) is in flight; when both
// complete in full, everything up to the batch's last sequence number is durable. A short write
// is queued again in front of what gathered since; a failed write or fsync cuts the file back to
// its durable end and closes the pack (nothing past that end was durable, so nothing is lost).
// A commit may carry a *follower*: bytes for a second file, written and synced after the pack's
// write and fsync succeeded (all four linked), and part of the commit: it is durable only once
// they are too (the staging's live PENDING journal, blockrep/store/pending.h).
// The staging appends with it; the store tests write their packs with it too.
//
// Opened `direct`, the pack's writes go around the page cache (O_DIRECT, where its filesystem
// allows it; else the same writes go through it): a staging storing many agents' streams does not
// copy each byte into the page cache and write it back on every fsync. Such writes cover whole
// 4 KiB blocks from an aligned buffer:
// a commit begins at the block holding the durable end, so it writes that block's durable bytes
// again (the same bytes: a crash mid-write leaves each sector old or new, equal up to the durable
// end) and ends with zeros up to the next block boundary, which the next commit overwrites. A
// pack written so may end with up to 4095 zero bytes after its last record; readers only follow
// index entries (docs/FORMAT.md, Pack file).
#pragma once

#include <cstdint>
#include <memory>

#include "blockrep/base/bytes.h"
#include "blockrep/base/limits.h"
#include "blockrep/base/fs.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"
#include "blockrep/net/uring.h"

namespace blockrep::store {

class PackAppender {
 public:
  // A direct write's alignment of offset, length and buffer: a block (AlignedBuffer's alignment).
  static constexpr size_t kDirectBlockBytes = kBlockBytes;
  enum class Op : uint8_t { kWrite, kFsync, kFollowWrite, kFollowSync };
  // The second file's part of the next commit.
  struct Follower {
    std::shared_ptr<File> file;  // kept open until the commit's end, whatever its owner does meanwhile
    uint64_t offset = 0;
    Bytes bytes;
    uint64_t write_user_data = 0, sync_user_data = 0;
  };
  enum class Done : uint8_t {
    kNo,       // the other completion is still to come, or a short write waits for StartCommit
    kDurable,  // durable_seq() and durable_end() moved on
    kFailed,   // error() says why; the pack is closed
  };

  bool open() const { return file_ != nullptr; }
  uint32_t pack_id() const { return pack_id_; }
  int fd() const { return file_ ? file_->fd() : -1; }
  uint64_t end() const { return end_; }  // bytes handed to the kernel, durable or in flight
  uint64_t durable_end() const { return durable_end_; }
  uint64_t durable_seq() const { return durable_seq_; }
  size_t batch_bytes() const { return batch_.size() - batch_head_; }
  bool inflight() const { return inflight_; }
  size_t inflight_bytes() const { return inflight_ ? end_ - durable_end_ : 0; }
  // Opened `direct`: every write covers whole blocks.
  bool direct() const { return align_ > 1; }
  // And the filesystem took O_DIRECT: the writes go around the page cache.
  bool bypasses_page_cache() const { return bypass_; }
  int error() const { return error_; }
  // The failed commit's error() came from its follower's write or sync, not the pack's.
  bool follower_failed() const { return follower_failed_; }
  // Bytes the follower of the last durable commit wrote (0: it had none).
  size_t follower_durable_bytes() const { return follower_durable_bytes_; }

  // Creates the store's next pack (header written and fsync'd) and appends to it from now on;
  // `direct`: whole-block writes, around the page cache where the pack's filesystem allows it.
  Status Open(const ServerStore& store, bool direct = false);
  // Nothing gathered or in flight and the pack holds at least `roll_bytes`: time for a new one.
  bool ShouldRoll(uint64_t roll_bytes) const { return open() && end_ >= roll_bytes && batch_bytes() == 0 && !inflight_; }
  // Closes the pack; a direct one is cut back to its durable end first (the last commit's zeros).
  void Close();
  PackAppender() = default;
  ~PackAppender() { Close(); }
  PackAppender(const PackAppender&) = delete;
  PackAppender& operator=(const PackAppender&) = delete;
  // Gives the batch and commit buffers' memory back when nothing is gathered or in flight (an
  // idle session: they grew to the largest group commit and would stay that size).
  void ReleaseBuffers();
  // The batch grows straight to this many bytes when it must grow (at least what it needs), not
  // by doubling past its owner's limit: its owner keeps it under about this much.
  void set_batch_reserve(size_t bytes) { batch_reserve_ = bytes; }
  // Gathers a record and the bytes stored after it (its fingerprints) under sequence number
  // `seq` (increasing); returns the record's offset in the pack. Needs open().
  uint64_t Append(ByteSpan record, ByteSpan after, uint64_t seq);
  // Starts the write + fsync of what gathered; false when there is nothing to start, a commit is
  // in flight, or `ring` has no room for two requests (four with a follower; call again later).
  // `follower` (taken only when this returns true) joins the commit; its file needs a descriptor.
  bool StartCommit(Ring& ring, uint64_t write_user_data, uint64_t fsync_user_data, Follower* follower = nullptr);
  // One completion of the commit in flight.
  Done OnCompletion(Op op, int res);
  // The same commit without a ring: the write, then the sync, through the pack's File (then the
  // follower's), and their results fed to OnCompletion. For stores on an Env without descriptors
  // (tests' FaultEnv); kNo when there is nothing to commit.
  Done CommitBlocking(Follower* follower = nullptr);

 private:
  // A growable byte buffer aligned for O_DIRECT.
  class Buffer {
   public:
    uint8_t* data() { return mem_.data(); }
    const uint8_t* data() const { return mem_.data(); }
    size_t size() const { return size_; }
    size_t capacity() const { return mem_.size(); }
    void clear() { size_ = 0; }
    void Reserve(size_t bytes);  // keeps the contents; whole blocks
    void Append(ByteSpan bytes);  // within capacity()
    void Release() { mem_ = AlignedBuffer(); size_ = 0; }
    void swap(Buffer& o) { std::swap(mem_, o.mem_); std::swap(size_, o.size_); }

   private:
    AlignedBuffer mem_;
    size_t size_ = 0;
  };
  // Takes what gathered as the commit in flight.
  bool TakeBatch();
  // How much of commit_ its write covers: its size, rounded up to a whole block when direct.
  size_t WriteBytes() const { return (commit_.size() + align_ - 1) / align_ * align_; }
  // Makes `follower` (or none) part of the commit just taken.
  void TakeFollower(Follower* follower);
  std::unique_ptr<File> file_;
  uint32_t pack_id_ = 0;
  uint64_t end_ = 0;
  uint64_t durable_end_ = 0;  // end of the last write + fsync that completed
  uint64_t durable_seq_ = 0;
  size_t align_ = 1;  // of every write's offset and length: 4096 when direct
  bool bypass_ = false;  // O_DIRECT
  // batch_[0] is at file offset end_ - batch_head_: when direct, the durable bytes of the block
  // end_ lies in come first (batch_head_ of them), then the records gathered.
  Buffer batch_;
  size_t batch_head_ = 0;
  size_t batch_reserve_ = 0;
  uint64_t batch_last_seq_ = 0;
  Buffer commit_;               // in flight; written up to WriteBytes(), zero-filled past its size
  uint64_t commit_offset_ = 0;  // file offset of commit_[0]
  size_t commit_written_ = 0;
  uint64_t commit_last_seq_ = 0;
  int commit_ops_ = 0;  // completions still expected (write, fsync; the follower's two)
  Follower follower_;   // of the commit in flight (file null: none)
  size_t follower_written_ = 0;
  size_t follower_durable_bytes_ = 0;
  int error_ = 0;
  bool follower_failed_ = false;
  bool inflight_ = false;
};

}  // namespace blockrep::store
