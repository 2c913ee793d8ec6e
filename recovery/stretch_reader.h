// Reads the stored records of an opened point, in the order the caller lists them, a stretch of a
// pack at a time: a record closer than kReadGapMax to the next one is read with it in one pread
// (bytes of other points' records in between are read and skipped), up to
// store::PackReader::kWindowBytes a stretch. One pread per small record defeated readahead: a
// restore of 74k scattered 4 KiB records took 1.1 s more from a cold cache than warm. Each record
// is checked against its index checksum before the caller sees it.
//
// A large read (a restore: at least kThreadedBytesMin) reads its stretches on a thread of its own,
// up to kSlots ahead, while the caller decodes the ones read. On the caller's thread the reads
// (pread, and the kernel's readahead advice, which blocks while it allocates and submits) took
// 0.5 s of the 2.2 s a usr-4g restore spent decrypting and decompressing on that thread, which is
// what limits the restore once its writes bypass the page cache. Small reads (a mounted point's
// few blocks) stay on the caller's thread: a thread each would cost more than it saves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "blockrep/base/status.h"
#include "blockrep/store/store.h"

namespace blockrep::recovery {

class StretchReader {
 public:
  static constexpr uint64_t kReadGapMax = 128u << 10;
  // Stretches ahead announced to the kernel (POSIX_FADV_WILLNEED), so that reads of scattered
  // records (a failback's few changed extents) overlap instead of waiting in turn. One
  // announcement per stretch, not per record: P7's 261k small records announced one by one became
  // as many small disk reads (a 1000-point chain's restore went from 3.2 to 6-9 s).
  static constexpr uint64_t kAdviseAheadBytes = 32u << 20;
  static constexpr uint64_t kThreadedBytesMin = 16u << 20;
  static constexpr size_t kSlots = 3;  // about as many stretches read and not yet handed to the caller
  static_assert(kAdviseAheadBytes >= kSlots * store::PackReader::kWindowBytes, "advice runs ahead of the reads");

  // fn(i, read, record) for entries[i], in order: `record` is valid during the call only.
  using RecordFn = std::function<Status(size_t i, const Status& read, ByteSpan record)>;

  // `packs` holds the point's packs open; only this reader uses it until Read returns.
  // `threaded_bytes_min`: reads of at least this many bytes use a thread (tests lower it).
  explicit StretchReader(store::PackReader* packs, uint64_t threaded_bytes_min = kThreadedBytesMin)
      : packs_(packs), threaded_bytes_min_(threaded_bytes_min) {}

  // A failed read (a pack that cannot be opened or read, a record cut short or failing its
  // checksum) is passed to fn for each record it concerns; fn's error stops the reading.
  [[nodiscard]] Status Read(const std::vector<const store::IndexEntry*>& entries, const RecordFn& fn);

 private:
  store::PackReader* const packs_;
  const uint64_t threaded_bytes_min_;
};

}  // namespace blockrep::recovery
