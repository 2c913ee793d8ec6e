// One volume's keyed block fingerprints (8 bytes per 4 KiB block): the seal's state of the point
// being built, and the staging's fingerprints of the base during a rescan. At 2 GiB per TiB they
// cannot all stay in memory (BRIEF P6: 40 MiB per TiB), so a table of more than kInMemoryBlocksMax
// blocks lives in an unlinked file in the spill directory (the state directory), mapped, and
// the pages it touches are given back (MADV_DONTNEED) whenever more than kResidentBytesMax of
// them may be resident: the kernel's page cache holds the table, not the agent. Untouched parts
// of a table cost nothing (a sparse file, or untouched anonymous pages): 0 = zeros.
//
// The file is scratch: unlinked from the start, never fsync'd, gone when the agent exits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "blockrep/base/status.h"

namespace blockrep::agent {

class FingerprintTable {
 public:
  static constexpr uint64_t kInMemoryBlocksMax = 1u << 18;  // 2 MiB of table (a 1 GiB volume)
  static constexpr uint64_t kResidentBytesMax = 4u << 20;    // of a spilled table's pages
  static constexpr uint64_t kPageBytes = 4096;
  static constexpr uint64_t kFaultAroundPages = 32;  // fault_around_bytes is 64 KiB; large folios map more
  static_assert(kResidentBytesMax % kPageBytes == 0);

  FingerprintTable() = default;
  FingerprintTable(FingerprintTable&& o) noexcept;
  FingerprintTable& operator=(FingerprintTable&& o) noexcept;
  FingerprintTable(const FingerprintTable&) = delete;
  FingerprintTable& operator=(const FingerprintTable&) = delete;
  ~FingerprintTable();

  // A table of `blocks` fingerprints, all 0. In memory up to kInMemoryBlocksMax blocks (or when
  // `spill_dir` is empty), else in an unlinked file in `spill_dir`.
  static Result<FingerprintTable> Make(uint64_t blocks, const std::string& spill_dir);
  // A table holding `values` (tests, small volumes).
  static FingerprintTable Of(const std::vector<uint64_t>& values);

  uint64_t size() const { return blocks_; }
  bool spilled() const { return fd_ >= 0; }
  uint64_t operator[](uint64_t block) const {
    Touch(block);
    return data_[block];
  }
  void Set(uint64_t block, uint64_t fp) {
    Touch(block);
    data_[block] = fp;
  }
  // Copies `n` fingerprints from `first` into `out` / from `in`.
  void Read(uint64_t first, uint64_t* out, size_t n) const;
  void Write(uint64_t first, const uint64_t* in, size_t n);
  std::vector<uint64_t> ToVector() const;
  // The first block at or after `block` that may hold a fingerprint other than 0 (size() if
  // none): a spilled table skips the holes of its file (SEEK_DATA); one in memory skips nothing.
  uint64_t NextData(uint64_t block) const;
  // The first block in [block, end) whose fingerprint is not 0, or `end`: the holes of a spilled
  // table are skipped whole (NextData at each page), the rest is looked at block by block.
  uint64_t NextNonZero(uint64_t block, uint64_t end) const;

 private:
  void Touch(uint64_t block) const {
    if (fd_ < 0) return;
    uint64_t page = block * sizeof(uint64_t) / kPageBytes;
    if (page == last_page_) return;
    // A fault on a file mapping maps the pages around it too (fault-around, 64 KiB): a jump
    // counts as that many.
    touched_pages_ += page == last_page_ + 1 ? 1 : kFaultAroundPages;
    last_page_ = page;
    if (touched_pages_ * kPageBytes > kResidentBytesMax) Trim();
  }
  void Trim() const;
  void Reset();
  template <typename Fn>
  void InPages(uint64_t first, size_t n, Fn fn) const;

  uint64_t* data_ = nullptr;
  uint64_t blocks_ = 0;
  size_t map_bytes_ = 0;
  int fd_ = -1;  // spilled: the unlinked file
  mutable uint64_t last_page_ = UINT64_MAX;
  mutable uint64_t touched_pages_ = 0;
};

// One table per volume, each of ceil(size / 4 KiB) blocks.
Result<std::vector<FingerprintTable>> MakeTables(const std::vector<uint64_t>& volume_bytes, const std::string& spill_dir);

}  // namespace blockrep::agent
