#include "blockrep/store/pack_appender.h"

#include "blockrep/base/check.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace blockrep::store {

void PackAppender::Buffer::Reserve(size_t bytes) {
  if (bytes <= capacity()) return;
  // Whole blocks, so that a direct write may round its length up within the buffer.
  AlignedBuffer grown((bytes + kDirectBlockBytes - 1) / kDirectBlockBytes * kDirectBlockBytes);
  if (size_ > 0) std::memcpy(grown.data(), mem_.data(), size_);
  mem_ = std::move(grown);
}

void PackAppender::Buffer::Append(ByteSpan bytes) {
  BR_CHECK(bytes.size() <= capacity() - size_);
  if (!bytes.empty()) std::memcpy(mem_.data() + size_, bytes.data(), bytes.size());
  size_ += bytes.size();
}

Status PackAppender::Open(const ServerStore& store, bool direct) {
  BR_CHECK(!inflight_);
  BR_ASSIGN_OR_RETURN(file_, store.CreatePack(&pack_id_));
  end_ = durable_end_ = kPackHeaderSize;
  batch_.clear();
  batch_head_ = 0;
  align_ = direct ? kDirectBlockBytes : 1;
  bypass_ = false;
  error_ = 0;
  if (direct && file_->fd() >= 0) {
    // A filesystem without O_DIRECT (tmpfs) refuses the flag: the same whole-block writes then go
    // through the page cache.
    const int flags = fcntl(file_->fd(), F_GETFL);
    bypass_ = flags >= 0 && fcntl(file_->fd(), F_SETFL, flags | O_DIRECT) == 0;
  }
  if (direct) {
    // The first commit writes block 0 again, the header's bytes first.
    Bytes header = EncodePackHeader(pack_id_);
    BR_CHECK(header.size() == kPackHeaderSize);
    batch_.Reserve(std::max(batch_reserve_, header.size()));
    batch_.Append(header);
    batch_head_ = header.size();
  }
  return Status::Ok();
}

void PackAppender::Close() {
  if (file_ != nullptr && align_ > 1 && !inflight_ && end_ == durable_end_ && durable_end_ % align_ != 0) {
    // Ignored on purpose: if the cut fails, the pack keeps up to 4095 zero bytes after its last
    // record, which no index names (docs/FORMAT.md, Pack file); only its size counts them.
    file_->Truncate(durable_end_).IgnoreError();
  }
  file_.reset();
}

uint64_t PackAppender::Append(ByteSpan record, ByteSpan after, uint64_t seq) {
  BR_CHECK(open() && seq > batch_last_seq_ && seq > durable_seq_);
  uint64_t at = end_ + batch_bytes();
  const size_t need = batch_.size() + record.size() + after.size();
  if (need > batch_.capacity()) batch_.Reserve(need <= batch_reserve_ ? batch_reserve_ : std::max(need, 2 * batch_.capacity()));
  batch_.Append(record);
  batch_.Append(after);
  batch_last_seq_ = seq;
  return at;
}

bool PackAppender::TakeBatch() {
  if (inflight_ || batch_bytes() == 0 || !open()) return false;
  commit_.swap(batch_);
  commit_offset_ = end_ - batch_head_;
  BR_CHECK(commit_offset_ % align_ == 0);
  end_ = commit_offset_ + commit_.size();
  // A direct write ends on a block boundary: zeros after the last record, overwritten next time.
  const size_t write_bytes = WriteBytes();
  BR_CHECK(write_bytes <= commit_.capacity());
  if (write_bytes > commit_.size()) std::memset(commit_.data() + commit_.size(), 0, write_bytes - commit_.size());
  // The next commit begins at the block end_ lies in, with the bytes of it this one writes.
  batch_.clear();
  batch_head_ = end_ % align_;
  if (batch_head_ > 0) {
    batch_.Reserve(std::max(batch_reserve_, batch_head_));
    batch_.Append(ByteSpan(commit_.data() + commit_.size() - batch_head_, batch_head_));
  }
  commit_written_ = 0;
  commit_last_seq_ = batch_last_seq_;
  error_ = 0;
  follower_failed_ = false;
  inflight_ = true;
  commit_ops_ = 2;
  return true;
}

void PackAppender::ReleaseBuffers() {
  if (inflight_ || batch_bytes() != 0) return;
  // A direct pack keeps the bytes of the block its next commit begins at (< 4 KiB).
  uint8_t head[kDirectBlockBytes];
  const size_t head_bytes = batch_head_;
  if (head_bytes > 0) std::memcpy(head, batch_.data(), head_bytes);
  batch_.Release();
  commit_.Release();
  if (head_bytes > 0) {
    batch_.Reserve(head_bytes);
    batch_.Append(ByteSpan(head, head_bytes));
  }
}

bool PackAppender::StartCommit(Ring& ring, uint64_t write_user_data, uint64_t fsync_user_data, Follower* follower) {
  BR_CHECK_MSG(!open() || fd() >= 0, "a ring commit needs a pack with a file descriptor (CommitBlocking otherwise)");
  BR_CHECK(follower == nullptr || (follower->file != nullptr && follower->file->fd() >= 0 && !follower->bytes.empty()));
  if (!ring.HasRoom(follower != nullptr ? 4 : 2) || !TakeBatch()) return false;
  TakeFollower(follower);
  io_uring_sqe* w = ring.Sqe();
  io_uring_prep_write(w, fd(), commit_.data(), static_cast<unsigned>(WriteBytes()), commit_offset_);
  io_uring_sqe_set_data64(w, write_user_data);
  w->flags |= IOSQE_IO_LINK;  // the fsync runs only after the write succeeded in full
  io_uring_sqe* f = ring.Sqe();
  io_uring_prep_fsync(f, fd(), IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(f, fsync_user_data);
  if (follower_.file == nullptr) return true;
  // Then the follower, only once the pack's bytes are durable: it never names a record that is not.
  f->flags |= IOSQE_IO_LINK;
  io_uring_sqe* fw = ring.Sqe();
  io_uring_prep_write(fw, follower_.file->fd(), follower_.bytes.data(), static_cast<unsigned>(follower_.bytes.size()),
                      follower_.offset);
  io_uring_sqe_set_data64(fw, follower_.write_user_data);
  fw->flags |= IOSQE_IO_LINK;
  io_uring_sqe* fs = ring.Sqe();
  io_uring_prep_fsync(fs, follower_.file->fd(), IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(fs, follower_.sync_user_data);
  return true;
}

void PackAppender::TakeFollower(Follower* follower) {
  follower_ = Follower();
  follower_written_ = 0;
  if (follower == nullptr) return;
  follower_ = std::move(*follower);
  commit_ops_ += 2;
}

PackAppender::Done PackAppender::OnCompletion(Op op, int res) {
  BR_CHECK(inflight_ && commit_ops_ > 0);
  --commit_ops_;
  if (op == Op::kWrite && res > 0) commit_written_ += static_cast<size_t>(res);
  if (op == Op::kFollowWrite && res > 0) follower_written_ += static_cast<size_t>(res);
  // A short write cancels the linked fsync (-ECANCELED): not an error, the rest is written again.
  if (res < 0 && res != -ECANCELED && error_ == 0) {
    error_ = -res;
    follower_failed_ = op == Op::kFollowWrite || op == Op::kFollowSync;
  }
  if (commit_ops_ > 0) return Done::kNo;
  inflight_ = false;
  // The follower's bytes are small and appended once: a short write of them (a full disk) fails
  // the commit, which nothing past durable_seq was acknowledged for.
  const size_t write_bytes = WriteBytes();
  if (error_ == 0 && follower_.file != nullptr && commit_written_ == write_bytes &&
      follower_written_ != follower_.bytes.size()) {
    error_ = follower_written_ > 0 ? ENOSPC : EIO;
    follower_failed_ = true;
  }
  if (error_ != 0) {
    // Nothing past durable_seq was acknowledged; what the failed write left past the durable end
    // is cut off (best effort: it is garbage either way, but on a full disk it is the space the
    // retry needs), and the pack is abandoned.
    // Ignored on purpose: the tail is unreferenced; compaction reclaims it if it stays.
    file_->Truncate(durable_end_).IgnoreError();
    file_.reset();
    batch_.clear();
    batch_head_ = 0;
    commit_.clear();
    follower_ = Follower();
    end_ = durable_end_;
    return Done::kFailed;
  }
  if (commit_written_ < write_bytes) {
    // Written again from the block the write stopped in, in front of what gathered since.
    const size_t from = commit_written_ / align_ * align_;
    BR_CHECK(from < commit_.size());
    Buffer rest;
    rest.Reserve(commit_.size() - from + batch_bytes());
    rest.Append(ByteSpan(commit_.data() + from, commit_.size() - from));
    rest.Append(ByteSpan(batch_.data() + batch_head_, batch_bytes()));
    batch_.swap(rest);
    batch_head_ = 0;
    end_ = commit_offset_ + from;
    batch_last_seq_ = std::max(batch_last_seq_, commit_last_seq_);
    commit_.clear();
    follower_ = Follower();  // cancelled with the pack's fsync: its owner gives it again
    return Done::kNo;
  }
  durable_seq_ = commit_last_seq_;
  durable_end_ = commit_offset_ + commit_.size();
  commit_.clear();
  follower_durable_bytes_ = follower_.file != nullptr ? follower_.bytes.size() : 0;
  follower_ = Follower();
  return Done::kDurable;
}

PackAppender::Done PackAppender::CommitBlocking(Follower* follower) {
  if (!TakeBatch()) return Done::kNo;
  TakeFollower(follower);
  // The errno each failure stands for, as io_uring would have reported it.
  auto as_res = [](const Status& st) { return st.code() == Code::kNoSpace ? -ENOSPC : -EIO; };
  // The four linked steps: once one fails, the rest are cancelled.
  bool broken = false;
  auto step = [&](Op op, File* file, uint64_t offset, ByteSpan bytes) {
    int res = -ECANCELED;
    if (!broken) {
      Status st = op == Op::kWrite || op == Op::kFollowWrite ? file->WriteAt(offset, bytes) : file->Sync();
      res = st.ok() ? static_cast<int>(bytes.size()) : as_res(st);
      broken = !st.ok();
    }
    return OnCompletion(op, res);
  };
  const bool follows = follower_.file != nullptr;
  Done d = step(Op::kWrite, file_.get(), commit_offset_, ByteSpan(commit_.data(), WriteBytes()));
  BR_CHECK(d == Done::kNo);  // the sync's completion is still expected
  d = step(Op::kFsync, file_.get(), 0, {});
  if (!follows) return d;
  BR_CHECK(d == Done::kNo);
  File* f = follower_.file.get();
  d = step(Op::kFollowWrite, f, follower_.offset, follower_.bytes);
  BR_CHECK(d == Done::kNo);
  return step(Op::kFollowSync, f, 0, {});
}

}  // namespace blockrep::store
