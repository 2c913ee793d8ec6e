// Writes a restore's decoded extents to its target on a second thread, while the caller reads and
// decodes the next records; the caller's thread notes each extent in the volume's region digests
// for the seal check as it is added. On the 2-core reference machine a restore of usr-4g was one
// thread doing everything in turn: decrypt and decompress (a third of its time), copy into the
// page cache and fingerprint for the seal (more than another third); the other core idled. Once
// the writes went around the page cache, the writer thread spent its time waiting on the disk, and
// fingerprinting there came on top of that wait (0.4 s of a 2.6 s restore): it is done where the
// record was just decoded, while the writer's disk write is in flight.
//
// Two batches: the caller fills one (decoding records straight into its aligned buffer, no copy)
// while the writer thread writes the other. For what it writes through the page cache it also does
// write-behind: every kWriteBehindBytes of a sequential run it asks the kernel to start writing
// that run back (sync_file_range), which it would otherwise do only once a tenth of memory is
// dirty (vm.dirty_background_ratio: 2.4 GB here), so the final fsync waited for nearly the whole
// image (1.2 s of a 3.1 s restore).
//
// Long runs of whole blocks bypass the page cache: the writer reopens the target with O_DIRECT and
// writes each run of at least kDirectRunMinBytes straight from the batch's buffer (pwritev).
// Copying 2.5 GB into the page cache was the writer's busiest work (1.5 s of CPU in the kernel for
// usr-4g, more than the decrypting and decompressing of the thread feeding it). Short or scattered
// pieces (the newest point of a long chain of small changes) still go through the page cache, where
// the final fsync writes them back merged. A target that refuses O_DIRECT (a filesystem without
// it, a device with sectors larger than 4 KiB) is written through the page cache throughout.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/fs.h"
#include "blockrep/base/limits.h"
#include "blockrep/base/status.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/seal.h"

namespace blockrep::recovery {

class ExtentWriter {
 public:
  static constexpr size_t kBatchBytes = 4u << 20;  // decoded bytes handed over at once
  static constexpr uint64_t kWriteBehindBytes = 32u << 20;
  static constexpr size_t kDirectRunMinBytes = 256u << 10;  // shorter runs are written buffered
  static constexpr size_t kDirectIovMax = 1024;             // Linux's UIO_MAXIOV: pieces in one pwritev
  static_assert(kDirectRunMinBytes % kBlockBytes == 0 && kBatchBytes % kBlockBytes == 0);
  static_assert(kMaxRecordPlainBytes % kBlockBytes == 0, "records start on a block in the batch buffer");

  // Writes to `fd` (named `path` in errors), and long runs to a second, O_DIRECT descriptor of the
  // same file where it allows one; notes into `digests`, which the caller reads only after Finish.
  ExtentWriter(int fd, std::string path, const BlockFingerprinter& fingerprinter, RegionDigests* digests);
  ~ExtentWriter();  // stops the thread (what was not written is dropped: the restore failed)
  ExtentWriter(const ExtentWriter&) = delete;
  ExtentWriter& operator=(const ExtentWriter&) = delete;

  // Room to decode the next record into (kMaxRecordPlainBytes, 4 KiB aligned), kept until its
  // pieces are written. One record at a time: AddPiece its pieces, then EndRecord.
  std::span<uint8_t> NextBuffer();
  // Bytes [from, from + length) of the room NextBuffer last gave (decoded by now) go to `offset`
  // of the target; they are noted in the digests here.
  void AddPiece(uint64_t offset, size_t from, size_t length);
  // The record's pieces are all added. Hands the batch to the writer once it is full, waiting for
  // the one before to be written; an error of an earlier write stops the restore here.
  [[nodiscard]] Status EndRecord();
  // Writes what is left and waits for every write: the first error, if any. No fsync.
  [[nodiscard]] Status Finish();
  // Bytes written bypassing the page cache (read after Finish).
  uint64_t direct_bytes() const { return direct_bytes_; }

 private:
  struct Piece {
    size_t at;  // in the batch's buffer
    size_t length;
    uint64_t offset;
  };
  struct Batch {
    AlignedBuffer buffer{kBatchBytes + kMaxRecordPlainBytes};  // a full batch still has room for one record
    size_t used = 0;                                           // by the records ended so far, whole blocks
    std::vector<Piece> pieces;
  };
  [[nodiscard]] Status Submit();
  void Loop();
  Status Write(const Batch& b);
  // Pieces [first, last) of `b`, contiguous in the target and whole blocks: one O_DIRECT pwritev.
  // False: the target refused it (EINVAL), and O_DIRECT is off from now on; the caller writes
  // them buffered.
  Result<bool> WriteDirect(const Batch& b, size_t first, size_t last);
  Status WriteBuffered(uint64_t offset, const uint8_t* data, size_t length);

  const int fd_;
  const std::string path_;
  const BlockFingerprinter& fingerprinter_;
  RegionDigests* const digests_;
  // The writer thread's: the O_DIRECT descriptor (invalid when the target refuses it), what went
  // through it, and the sequential run of buffered writes not yet handed to write-behind.
  UniqueFd direct_fd_;
  uint64_t direct_bytes_ = 0;
  uint64_t run_start_ = 0, run_end_ = 0;

  Batch batches_[2];
  int filling_ = 0;             // the caller's batch; the other is the writer's while `pending_`
  size_t record_at_ = 0;        // the caller's: where the open record starts in batches_[filling_]
  size_t record_end_ = 0;       // and the end of its furthest piece, from record_at_
  bool record_open_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  bool pending_ = false, stop_ = false;
  Status error_;
  std::thread thread_;
};

}  // namespace blockrep::recovery
