#include "extent_writer.h"

#include <fcntl.h>

#include <utility>

#include "blockrep/base/check.h"
#include "blockrep/base/fs.h"

namespace blockrep::recovery {

ExtentWriter::ExtentWriter(int fd, std::string path, const BlockFingerprinter& fingerprinter, RegionDigests* digests)
    : fd_(fd), path_(std::move(path)), fingerprinter_(fingerprinter), digests_(digests) {
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

Bytes* ExtentWriter::NextBuffer() {
  Batch& b = batches_[filling_];
  if (b.used == b.buffers.size()) b.buffers.emplace_back();
  return &b.buffers[b.used++];
}

void ExtentWriter::AddPiece(uint64_t offset, size_t from, size_t length) {
  Batch& b = batches_[filling_];
  BR_CHECK(b.used > 0 && from + length <= b.buffers[b.used - 1].size());
  b.pieces.push_back(Piece{b.used - 1, from, length, offset});
  b.bytes += length;
}

Status ExtentWriter::EndRecord() {
  const Batch& b = batches_[filling_];
  if (b.bytes < kBatchBytes && b.used < kBatchRecordsMax) return Status::Ok();
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
  next.bytes = 0;
  cv_.notify_all();
  return Status::Ok();
}

Status ExtentWriter::Finish() {
  if (batches_[filling_].used > 0) BR_RETURN_IF_ERROR(Submit());
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
  for (const Piece& p : b.pieces) {
    const uint8_t* data = b.buffers[p.buffer].data() + p.from;
    BR_RETURN_IF_ERROR(PwriteAll(fd_, p.offset, data, p.length).Annotate(path_));
    NoteData(fingerprinter_, p.offset, ByteSpan(data, p.length), digests_);
    // Write-behind follows a sequential run only: scattered writes (the newest point of a long
    // chain of small changes) are left to the final fsync, which writes them back in file order,
    // merged; written back as they came they were many small writes (P7: 3.3 s became 4.3 s).
    if (p.offset != run_end_) run_start_ = p.offset;
    run_end_ = p.offset + p.length;
    if (run_end_ - run_start_ >= kWriteBehindBytes) {
      // Only a hint to the kernel, ignored on failure: the caller's fsync is what makes the
      // target durable, and it reports any write error.
      (void)sync_file_range(fd_, static_cast<off_t>(run_start_), static_cast<off_t>(run_end_ - run_start_),
                            SYNC_FILE_RANGE_WRITE);
      run_start_ = run_end_;
    }
  }
  return Status::Ok();
}

}  // namespace blockrep::recovery
