// Small filesystem helpers with the durability rules of the store spelled out: a file becomes
// visible under its final name only after its bytes are fsync'd, and a rename is followed by an
// fsync of the directory.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"

namespace blockrep {

Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes);
Result<Bytes> ReadFileBytes(const std::string& path, size_t max_bytes);
// Writes all bytes, retrying short writes and EINTR.
Status WriteAll(int fd, ByteSpan data);
Status PreadAll(int fd, uint64_t offset, uint8_t* dst, size_t len);
// Writes all of `src` at `offset`, retrying short writes and EINTR.
Status PwriteAll(int fd, uint64_t offset, const uint8_t* src, size_t len);
// Reads up to `len` bytes, fewer only at end of file; returns how many.
Result<size_t> PreadUpTo(int fd, uint64_t offset, uint8_t* dst, size_t len);
Status FsyncDir(const std::string& dir);
// tmp file → fsync → rename over `path` → fsync parent directory.
Status WriteFileAtomic(const std::string& path, ByteSpan data);
// mkdir -p; mode applies to created directories.
Status MakeDirs(const std::string& path, unsigned mode = 0755);
bool PathExists(const std::string& path);
// A secret the operator gives us (a data key, S3 credentials): a regular file no one but its owner
// may read or write. The error names `what` and the chmod that fixes it.
Status CheckOwnerOnlyFile(const std::string& path, std::string_view what);
// Names in `dir` (without . and ..), sorted.
Result<std::vector<std::string>> ListDir(const std::string& dir);

// A file descriptor that closes itself.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = o.Release();
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void Reset();

 private:
  int fd_ = -1;
};

}  // namespace blockrep
