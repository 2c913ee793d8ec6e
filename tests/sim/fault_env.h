// An Env (blockrep/base/env.h) that keeps files in memory and fails on purpose, for tests and the
// simulation: the Nth operation fails, the disk fills, power is lost — every byte not made durable
// by File::Sync and every name not made durable by SyncDir is gone, and writes since the last sync
// are torn (each block keeps its old or its new content, the size either). Deterministic: the
// same seed and the same calls give the same state.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>

#include "blockrep/base/env.h"
#include "blockrep/base/limits.h"

namespace blockrep::sim {

class FaultEnv final : public Env {
 public:
  explicit FaultEnv(uint64_t seed) : rng_(seed) {}

  // The `n`th mutating operation from now (1: the next) fails with `code`, changing nothing.
  void FailOp(uint64_t n, Code code);
  // Power is lost just before the `n`th mutating operation from now runs (it fails, and so does
  // everything after it until Reboot).
  void PowerLossAtOp(uint64_t n);
  // File bytes the disk holds at most: a write past it fails kNoSpace, writing nothing.
  void SetCapacity(uint64_t bytes) { capacity_bytes_ = bytes; }
  void LosePower();
  // Power returns: what was durable, with the torn remains of what was not.
  void Reboot();
  bool powered() const { return powered_; }
  uint64_t ops() const { return ops_; }  // mutating operations that ran
  uint64_t used_bytes() const;
  // Lose power without tearing: unsynced writes are simply gone.
  void set_tear(bool tear) { tear_ = tear; }

  // Files opened here answer fd() with a number no real descriptor has (kFdBase and up), so that
  // the simulation's ring (sim_ring.h) can carry a ring's reads, writes and fsyncs to the file.
  static constexpr int kFdBase = 1 << 28;
  File* FileForFd(int fd) const {
    auto it = open_fds_.find(fd);
    return it == open_fds_.end() ? nullptr : it->second;
  }

  Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status SyncDir(const std::string& dir) override;
  Status MakeDirs(const std::string& path, unsigned mode) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  bool Exists(const std::string& path) override;
  Result<uint64_t> FileSize(const std::string& path) override;

 private:
  friend class MemFile;
  struct Inode {
    Bytes data;
    Bytes synced;  // what survives a power loss (if its name does)
    // Bytes [changed_from, changed_to) of data may differ from synced (a Sync copies only those).
    size_t changed_from = SIZE_MAX, changed_to = 0;
    void Changed(size_t from, size_t to) {
      changed_from = std::min(changed_from, from);
      changed_to = std::max(changed_to, to);
    }
  };
  // Runs before every mutating operation: counts it, and applies a planned failure or power loss.
  Status Mutate(const char* what, const std::string& path);
  Status Powered(const std::string& path) const;
  static std::string Norm(const std::string& path);

  std::mt19937_64 rng_;
  bool powered_ = true;
  bool tear_ = true;
  uint64_t epoch_ = 0;  // power cycles: a file opened before one is dead
  uint64_t ops_ = 0;
  uint64_t fail_at_ = 0, power_loss_at_ = 0;  // absolute op numbers; 0: none
  Code fail_code_ = Code::kIoError;
  uint64_t capacity_bytes_ = UINT64_MAX;
  std::map<std::string, std::shared_ptr<Inode>> files_;    // names now
  std::map<std::string, std::shared_ptr<Inode>> durable_;  // names as of each directory's last sync
  std::set<std::string> dirs_, durable_dirs_;
  int next_fd_ = kFdBase;
  std::map<int, File*> open_fds_;
};

}  // namespace blockrep::sim
