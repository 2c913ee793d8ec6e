// Writes a restore's decoded extents to its target on a second thread, and notes each in the
// volume's region digests for the seal check, while the caller reads and decodes the next records.
// On the 2-core reference machine a restore of usr-4g was one thread doing everything in turn:
// decrypt and decompress (a third of its time), copy into the page cache and fingerprint for the
// seal (more than another third); the other core idled.
//
// Two batches: the caller fills one (decoding records straight into its buffers, no copy) while the
// writer thread writes the other. The writer also does write-behind: every kWriteBehindBytes of a
// sequential run it asks the kernel to start writing that run back (sync_file_range), which it
// would otherwise do only once a tenth of memory is dirty (vm.dirty_background_ratio: 2.4 GB
// here), so the final fsync waited for nearly the whole image (1.2 s of a 3.1 s restore).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/seal.h"

namespace blockrep::recovery {

class ExtentWriter {
 public:
  static constexpr size_t kBatchBytes = 4u << 20;   // decoded bytes handed over at once
  static constexpr size_t kBatchRecordsMax = 256;   // records in one batch
  static constexpr uint64_t kWriteBehindBytes = 32u << 20;

  // Writes to `fd` (named `path` in errors); notes into `digests`, which the caller reads only
  // after Finish.
  ExtentWriter(int fd, std::string path, const BlockFingerprinter& fingerprinter, RegionDigests* digests);
  ~ExtentWriter();  // stops the thread (what was not written is dropped: the restore failed)
  ExtentWriter(const ExtentWriter&) = delete;
  ExtentWriter& operator=(const ExtentWriter&) = delete;

  // A buffer to decode the next record into, kept until its pieces are written.
  Bytes* NextBuffer();
  // Bytes [from, from + length) of the buffer NextBuffer last gave go to `offset` of the target.
  void AddPiece(uint64_t offset, size_t from, size_t length);
  // The record's pieces are all added. Hands the batch to the writer once it is full, waiting for
  // the one before to be written; an error of an earlier write stops the restore here.
  [[nodiscard]] Status EndRecord();
  // Writes what is left and waits for every write: the first error, if any. No fsync.
  [[nodiscard]] Status Finish();

 private:
  struct Piece {
    size_t buffer;
    size_t from;
    size_t length;
    uint64_t offset;
  };
  struct Batch {
    std::vector<Bytes> buffers;  // [0, used) hold this batch's records; capacity kept
    size_t used = 0;
    std::vector<Piece> pieces;
    size_t bytes = 0;
  };
  [[nodiscard]] Status Submit();
  void Loop();
  Status Write(const Batch& b);

  const int fd_;
  const std::string path_;
  const BlockFingerprinter& fingerprinter_;
  RegionDigests* const digests_;
  // The writer thread's: the sequential run of writes not yet handed to write-behind.
  uint64_t run_start_ = 0, run_end_ = 0;

  Batch batches_[2];
  int filling_ = 0;  // the caller's batch; the other is the writer's while `pending_`

  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  bool pending_ = false, stop_ = false;
  Status error_;
  std::thread thread_;
};

}  // namespace blockrep::recovery
