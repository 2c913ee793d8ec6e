// The one way the store reaches the filesystem (LevelDB's Env): files, directories, fsync and
// rename. Env::Default() is the real one (POSIX); tests hand the store a FaultEnv
// (tests/support/fault_env.h) that keeps files in memory, fails the Nth operation, fills the disk,
// tears writes and loses power — drops everything not yet made durable by Sync / SyncDir.
//
// Durability rules every Env keeps, and the store relies on: a file's bytes survive a power loss
// only once File::Sync returned; a name (create, rename, remove) only once SyncDir of its
// directory returned.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"

namespace blockrep {

class File {
 public:
  virtual ~File() = default;
  // Writes all of `data` at `offset` (a short write is retried; an error means some of it may
  // have been written).
  virtual Status WriteAt(uint64_t offset, ByteSpan data) = 0;
  // Reads up to `len` bytes at `offset`: fewer only at end of file.
  virtual Result<size_t> ReadAt(uint64_t offset, uint8_t* dst, size_t len) = 0;
  // Adds `data` at the end of the file (one write: other processes appending to the same file
  // never split it, on the real Env).
  virtual Status Append(ByteSpan data);
  // Makes every byte written so far durable (fsync).
  virtual Status Sync() = 0;
  virtual Status Truncate(uint64_t size) = 0;
  virtual Result<uint64_t> Size() = 0;
  // The first offset at or after `offset` that may hold data other than zeros (a hole of a sparse
  // file reads as zeros; SEEK_DATA), or the file's size. An Env that cannot tell says `offset`.
  virtual Result<uint64_t> NextData(uint64_t offset) { return offset; }
  // A descriptor for io_uring, where the Env has real files; -1 otherwise.
  virtual int fd() const { return -1; }

  // ReadAt that must fill `len` bytes: end of file first is kDataLoss.
  Status ReadExact(uint64_t offset, uint8_t* dst, size_t len);
};

enum class OpenMode {
  kRead,             // an existing file, read-only
  kCreateExclusive,  // a new file (kNotFound never; an existing one is an error), read-write
  kCreateTruncate,   // created or emptied, read-write
  kReadWrite,        // an existing file, read-write
  kCreateOrOpen,     // created if absent, kept if present, read-write
  kAppend,           // created if absent; File::Append adds at the end even with other appenders
};

class Env {
 public:
  virtual ~Env() = default;
  // The real filesystem; lives for the whole process.
  static Env* Default();

  virtual Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode) = 0;
  // Atomically replaces `to` (durable once the directory is synced).
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // kNotFound when there is no such file.
  virtual Status Remove(const std::string& path) = 0;
  virtual Status SyncDir(const std::string& dir) = 0;
  // mkdir -p, each new directory made durable in its parent.
  virtual Status MakeDirs(const std::string& path, unsigned mode) = 0;
  // Names in `dir` (no . and ..), sorted.
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  virtual bool Exists(const std::string& path) = 0;
  virtual Result<uint64_t> FileSize(const std::string& path) = 0;

  // Built on the above, the same for every Env.
  Result<Bytes> ReadFile(const std::string& path, size_t max_bytes);
  // <path>.tmp written and synced, renamed over `path`, the directory synced.
  Status WriteFileAtomic(const std::string& path, ByteSpan data);
  // Appends `data` to `path` (created if absent, its name then synced too) and syncs it: a log
  // whose lines, once this returns, survive a power loss.
  Status AppendDurably(const std::string& path, ByteSpan data);
};

// The directory part of `path` ("." when there is none).
std::string ParentDir(const std::string& path);

}  // namespace blockrep
