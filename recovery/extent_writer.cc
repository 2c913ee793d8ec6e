#include "extent_writer.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "blockrep/base/check.h"
#include "blockrep/base/fs.h"

namespace blockrep::recovery {

static_assert(ExtentWriter::kDirectIovMax <= IOV_MAX, "one pwritev takes at most IOV_MAX pieces");

ExtentWriter::ExtentWriter(int fd, std::string path, const BlockFingerprinter& fingerprinter, RegionDigests* digests)
    : fd_(fd), path_(std::move(path)), fingerprinter_(fingerprinter), digests_(digests) {
  // The same file again, through /proc (never its name, which someone could have swapped), and
  // only when `fd` may write: reopening must not turn a read-only descriptor into a writable one.
  int mode = fcntl(fd_, F_GETFL);
  if (mode >= 0 && (mode & O_ACCMODE) != O_RDONLY) {
    std::string self = "/proc/self/fd/" + std::to_string(fd_);
    direct_fd_ = UniqueFd(open(self.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC));
  }
  thread_ = std::thread([this] { Loop(); });
}

ExtentWriter::~ExtentWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::span<uint8_t> ExtentWriter::NextBuffer() {
  BR_CHECK(!record_open_);
  Batch& b = batches_[filling_];
  BR_CHECK(b.used < kBatchBytes && b.used % kBlockBytes == 0);  // EndRecord hands a fuller batch over
  record_open_ = true;
  record_at_ = b.used;
  record_end_ = 0;
  return std::span<uint8_t>(b.buffer.data() + record_at_, kMaxRecordPlainBytes);
}

void ExtentWriter::AddPiece(uint64_t offset, size_t from, size_t length) {
  BR_CHECK(record_open_ && length > 0 && from <= kMaxRecordPlainBytes && length <= kMaxRecordPlainBytes - from);
  Batch& b = batches_[filling_];
  b.pieces.push_back(Piece{record_at_ + from, length, offset});
  record_end_ = std::max(record_end_, from + length);
  NoteData(fingerprinter_, offset, ByteSpan(b.buffer.data() + record_at_ + from, length), digests_);
}

Status ExtentWriter::EndRecord() {
  BR_CHECK(record_open_);
  record_open_ = false;
  Batch& b = batches_[filling_];
  // The next record starts on the next block after this one's furthest piece; what is past it
  // was decoded but is not written, so the next record may overwrite it.
  b.used = record_at_ + (record_end_ + kBlockBytes - 1) / kBlockBytes * kBlockBytes;
  if (b.used < kBatchBytes) return Status::Ok();
  return Submit();
}

Status ExtentWriter::Submit() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !pending_; });
  if (!error_.ok()) return error_;
  pending_ = true;
  filling_ ^= 1;
  Batch& next = batches_[filling_];  // written by the thread before `pending_` was last cleared
  next.used = 0;
  next.pieces.clear();
  cv_.notify_all();
  return Status::Ok();
}

Status ExtentWriter::Finish() {
  BR_CHECK(!record_open_);
  if (!batches_[filling_].pieces.empty()) BR_RETURN_IF_ERROR(Submit());
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !pending_; });
  return error_;
}

void ExtentWriter::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || pending_; });
    if (stop_) return;
    const Batch& b = batches_[filling_ ^ 1];  // Submit switched `filling_` before setting `pending_`
    const bool failed = !error_.ok();
    lock.unlock();
    Status st = failed ? Status::Ok() : Write(b);  // after an error nothing more is written
    lock.lock();
    if (error_.ok()) error_ = std::move(st);
    pending_ = false;
    cv_.notify_all();
  }
}

Status ExtentWriter::Write(const Batch& b) {
  // O_DIRECT takes whole blocks from block-aligned memory; a piece that is not (the tail of a
  // volume whose size is not a multiple of 4 KiB) is written through the page cache.
  auto whole_blocks = [&b](size_t k) {
    const Piece& p = b.pieces[k];
    return p.offset % kBlockBytes == 0 && p.at % kBlockBytes == 0 && p.length % kBlockBytes == 0;
  };
  for (size_t i = 0; i < b.pieces.size();) {
    // The pieces from i on that continue one another in the target, as many as one pwritev takes.
    size_t j = i + 1;
    uint64_t bytes = b.pieces[i].length;
    if (whole_blocks(i)) {
      while (j < b.pieces.size() && j - i < kDirectIovMax && b.pieces[j].offset == b.pieces[i].offset + bytes &&
             whole_blocks(j)) {
        bytes += b.pieces[j].length;
        ++j;
      }
    }
    bool direct = false;
    if (direct_fd_.valid() && bytes >= kDirectRunMinBytes && whole_blocks(i)) {
      BR_ASSIGN_OR_RETURN(direct, WriteDirect(b, i, j));
    }
    for (; i < j; ++i) {
      const Piece& p = b.pieces[i];
      if (!direct) BR_RETURN_IF_ERROR(WriteBuffered(p.offset, b.buffer.data() + p.at, p.length));
    }
  }
  return Status::Ok();
}

Result<bool> ExtentWriter::WriteDirect(const Batch& b, size_t first, size_t last) {
  BR_CHECK(last - first <= kDirectIovMax);
  const uint64_t offset = b.pieces[first].offset;
  iovec iov[kDirectIovMax];
  int count = 0;
  uint64_t bytes = 0;
  for (size_t k = first; k < last; ++k) {
    const Piece& p = b.pieces[k];
    uint8_t* data = const_cast<uint8_t*>(b.buffer.data()) + p.at;  // pwritev's iovec is not const
    if (count > 0 && static_cast<uint8_t*>(iov[count - 1].iov_base) + iov[count - 1].iov_len == data)
      iov[count - 1].iov_len += p.length;  // consecutive records sit back to back in the buffer
    else
      iov[count++] = iovec{data, p.length};
    bytes += p.length;
  }
  ssize_t n;
  do {
    n = pwritev(direct_fd_.get(), iov, count, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EINVAL) {  // the target takes no O_DIRECT (or not these sizes): the page cache from now on
    direct_fd_ = UniqueFd();
    return false;
  }
  if (n < 0) return ErrnoStatus("write at offset " + std::to_string(offset), errno).Annotate(path_);
  direct_bytes_ += static_cast<uint64_t>(n);
  // A short write: the rest goes through the page cache (it may not be block-aligned any more).
  for (size_t k = first, skip = static_cast<size_t>(n); k < last && static_cast<uint64_t>(n) < bytes; ++k) {
    const Piece& p = b.pieces[k];
    if (skip >= p.length) {
      skip -= p.length;
      continue;
    }
    BR_RETURN_IF_ERROR(WriteBuffered(p.offset + skip, b.buffer.data() + p.at + skip, p.length - skip));
    skip = 0;
  }
  return true;
}

Status ExtentWriter::WriteBuffered(uint64_t offset, const uint8_t* data, size_t length) {
  BR_RETURN_IF_ERROR(PwriteAll(fd_, offset, data, length).Annotate(path_));
  // Write-behind follows a sequential run only: scattered writes (the newest point of a long
  // chain of small changes) are left to the final fsync, which writes them back in file order,
  // merged; written back as they came they were many small writes (P7: 3.3 s became 4.3 s).
  if (offset != run_end_) run_start_ = offset;
  run_end_ = offset + length;
  if (run_end_ - run_start_ >= kWriteBehindBytes) {
    // Only a hint to the kernel, ignored on failure: the caller's fsync is what makes the
    // target durable, and it reports any write error.
    (void)sync_file_range(fd_, static_cast<off_t>(run_start_), static_cast<off_t>(run_end_ - run_start_),
                          SYNC_FILE_RANGE_WRITE);
    run_start_ = run_end_;
  }
  return Status::Ok();
}

}  // namespace blockrep::recovery
