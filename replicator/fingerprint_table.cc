#include "fingerprint_table.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "blockrep/base/check.h"
#include "blockrep/crypto/fingerprint.h"

namespace blockrep::agent {

FingerprintTable::FingerprintTable(FingerprintTable&& o) noexcept { *this = std::move(o); }

FingerprintTable& FingerprintTable::operator=(FingerprintTable&& o) noexcept {
  if (this == &o) return *this;
  Reset();
  data_ = std::exchange(o.data_, nullptr);
  blocks_ = std::exchange(o.blocks_, 0);
  map_bytes_ = std::exchange(o.map_bytes_, 0);
  fd_ = std::exchange(o.fd_, -1);
  last_page_ = UINT64_MAX;
  touched_pages_ = 0;
  return *this;
}

FingerprintTable::~FingerprintTable() { Reset(); }

void FingerprintTable::Reset() {
  if (data_ != nullptr) munmap(data_, map_bytes_);
  if (fd_ >= 0) close(fd_);
  data_ = nullptr;
  fd_ = -1;
  blocks_ = map_bytes_ = 0;
}

Result<FingerprintTable> FingerprintTable::Make(uint64_t blocks, const std::string& spill_dir) {
  FingerprintTable t;
  t.blocks_ = blocks;
  t.map_bytes_ = std::max<size_t>(kPageBytes, (blocks * sizeof(uint64_t) + kPageBytes - 1) / kPageBytes * kPageBytes);
  if (blocks <= kInMemoryBlocksMax || spill_dir.empty()) {
    // Anonymous pages read as zero and cost nothing until written.
    void* p = mmap(nullptr, t.map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return ErrnoStatus("cannot map " + std::to_string(t.map_bytes_) + " bytes for fingerprints", errno);
    t.data_ = static_cast<uint64_t*>(p);
    return t;
  }
  int fd = open(spill_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0)
    return ErrnoStatus("cannot create a fingerprint file in " + spill_dir +
                           " (the fingerprints of volumes over 1 GiB live there; give --state-dir a directory on a "
                           "local filesystem with " + std::to_string(t.map_bytes_ >> 20) + " MiB free)",
                       errno);
  t.fd_ = fd;
  if (ftruncate(fd, static_cast<off_t>(t.map_bytes_)) != 0)
    return ErrnoStatus("cannot size the fingerprint file in " + spill_dir, errno);
  void* p = mmap(nullptr, t.map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus("cannot map the fingerprint file in " + spill_dir, errno);
  t.data_ = static_cast<uint64_t*>(p);
  return t;
}

FingerprintTable FingerprintTable::Of(const std::vector<uint64_t>& values) {
  Result<FingerprintTable> t = Make(values.size(), "");
  BR_CHECK_MSG(t.ok(), t.status().message());
  if (!values.empty()) t->Write(0, values.data(), values.size());
  return std::move(*t);
}

void FingerprintTable::Trim() const {
  // Dirty pages of a shared file mapping stay in the page cache: nothing is lost, they are only
  // no longer mapped into (and counted against) this process.
  touched_pages_ = 0;
  last_page_ = UINT64_MAX;
  BR_CHECK_MSG(madvise(data_, map_bytes_, MADV_DONTNEED) == 0, std::string("madvise: ") + std::strerror(errno));
}

// Calls fn(block, done, count) for each run of [first, first + n) within one page, touching each
// page once, so a spilled table's resident bound holds.
template <typename Fn>
void FingerprintTable::InPages(uint64_t first, size_t n, Fn fn) const {
  BR_CHECK(first + n <= blocks_);
  for (size_t done = 0; done < n;) {
    uint64_t b = first + done;
    size_t in_page = std::min<size_t>(n - done, (kPageBytes - (b * sizeof(uint64_t)) % kPageBytes) / sizeof(uint64_t));
    Touch(b);
    fn(b, done, in_page);
    done += in_page;
  }
}

void FingerprintTable::Read(uint64_t first, uint64_t* out, size_t n) const {
  InPages(first, n, [&](uint64_t b, size_t done, size_t k) { std::memcpy(out + done, data_ + b, k * sizeof(uint64_t)); });
}

void FingerprintTable::Write(uint64_t first, const uint64_t* in, size_t n) {
  InPages(first, n, [&](uint64_t b, size_t done, size_t k) { std::memcpy(data_ + b, in + done, k * sizeof(uint64_t)); });
}

uint64_t FingerprintTable::NextData(uint64_t block) const {
  if (fd_ < 0 || block >= blocks_) return std::min(block, blocks_);
  off_t at = lseek(fd_, static_cast<off_t>(block * sizeof(uint64_t)), SEEK_DATA);
  if (at < 0) return errno == ENXIO ? blocks_ : block;  // no SEEK_DATA here: nothing skipped
  return std::max(block, std::min<uint64_t>(blocks_, static_cast<uint64_t>(at) / sizeof(uint64_t)));
}

uint64_t FingerprintTable::NextNonZero(uint64_t block, uint64_t end) const {
  constexpr uint64_t kBlocksPerPage = kPageBytes / sizeof(uint64_t);
  end = std::min(end, blocks_);
  while (block < end) {
    if (fd_ >= 0) {  // once per page of the table
      block = std::max(block, NextData(block));
      if (block >= end) return end;
    }
    const uint64_t page_end = std::min(end, (block / kBlocksPerPage + 1) * kBlocksPerPage);
    for (; block < page_end; ++block)
      if ((*this)[block] != 0) return block;
  }
  return end;
}

std::vector<uint64_t> FingerprintTable::ToVector() const {
  std::vector<uint64_t> v(blocks_);
  if (blocks_ != 0) Read(0, v.data(), v.size());
  return v;
}

Result<std::vector<FingerprintTable>> MakeTables(const std::vector<uint64_t>& volume_bytes, const std::string& spill_dir) {
  std::vector<FingerprintTable> out;
  for (uint64_t bytes : volume_bytes) {
    BR_ASSIGN_OR_RETURN(FingerprintTable t,
                        FingerprintTable::Make((bytes + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes, spill_dir));
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace blockrep::agent
