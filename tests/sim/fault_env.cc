#include "fault_env.h"

#include <algorithm>

namespace blockrep::sim {

class MemFile final : public File {
 public:
  MemFile(FaultEnv* env, std::shared_ptr<FaultEnv::Inode> inode, std::string path, bool writable)
      : env_(env), inode_(std::move(inode)), path_(std::move(path)), writable_(writable), epoch_(env->epoch_),
        fd_(env->next_fd_++) {
    env_->open_fds_[fd_] = this;
  }
  ~MemFile() override { env_->open_fds_.erase(fd_); }
  int fd() const override { return fd_; }

  Status WriteAt(uint64_t offset, ByteSpan data) override {
    BR_RETURN_IF_ERROR(Alive());
    if (!writable_) return PermissionDenied(path_ + " is open read-only");
    BR_RETURN_IF_ERROR(env_->Mutate("write", path_));
    uint64_t end = std::max<uint64_t>(inode_->data.size(), offset + data.size());
    if (env_->used_bytes() - inode_->data.size() + end > env_->capacity_bytes_)
      return NoSpace("write " + path_ + ": No space left on device");
    if (inode_->data.size() < end) inode_->data.resize(end, 0);
    std::copy(data.begin(), data.end(), inode_->data.begin() + static_cast<ptrdiff_t>(offset));
    inode_->Changed(static_cast<size_t>(offset), static_cast<size_t>(end));
    return Status::Ok();
  }
  Result<size_t> ReadAt(uint64_t offset, uint8_t* dst, size_t len) override {
    BR_RETURN_IF_ERROR(Alive());
    if (offset >= inode_->data.size()) return size_t{0};
    size_t n = static_cast<size_t>(std::min<uint64_t>(len, inode_->data.size() - offset));
    std::copy_n(inode_->data.begin() + static_cast<ptrdiff_t>(offset), n, dst);
    return n;
  }
  Status Sync() override {
    BR_RETURN_IF_ERROR(Alive());
    BR_RETURN_IF_ERROR(env_->Mutate("fsync", path_));
    FaultEnv::Inode& n = *inode_;
    n.synced.resize(n.data.size(), 0);
    if (n.changed_from < n.changed_to) {
      size_t to = std::min(n.changed_to, n.data.size());
      if (n.changed_from < to)
        std::copy(n.data.begin() + static_cast<ptrdiff_t>(n.changed_from), n.data.begin() + static_cast<ptrdiff_t>(to),
                  n.synced.begin() + static_cast<ptrdiff_t>(n.changed_from));
    }
    n.changed_from = SIZE_MAX;
    n.changed_to = 0;
    return Status::Ok();
  }
  Status Truncate(uint64_t size) override {
    BR_RETURN_IF_ERROR(Alive());
    BR_RETURN_IF_ERROR(env_->Mutate("truncate", path_));
    inode_->data.resize(static_cast<size_t>(size), 0);
    inode_->Changed(static_cast<size_t>(size), static_cast<size_t>(size));  // Sync then fixes the length
    return Status::Ok();
  }
  Result<uint64_t> Size() override {
    BR_RETURN_IF_ERROR(Alive());
    return uint64_t{inode_->data.size()};
  }

 private:
  Status Alive() const {
    if (epoch_ != env_->epoch_ || !env_->powered_) return Unavailable(path_ + ": power was lost");
    return Status::Ok();
  }
  FaultEnv* env_;
  std::shared_ptr<FaultEnv::Inode> inode_;
  std::string path_;
  bool writable_;
  uint64_t epoch_;
  int fd_;
};

std::string FaultEnv::Norm(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

void FaultEnv::FailOp(uint64_t n, Code code) {
  fail_at_ = ops_ + n;
  fail_code_ = code;
}

void FaultEnv::PowerLossAtOp(uint64_t n) { power_loss_at_ = ops_ + n; }

uint64_t FaultEnv::used_bytes() const {
  uint64_t total = 0;
  for (const auto& [path, inode] : files_) total += inode->data.size();
  return total;
}

Status FaultEnv::Powered(const std::string& path) const {
  if (!powered_) return Unavailable(path + ": power was lost");
  return Status::Ok();
}

Status FaultEnv::Mutate(const char* what, const std::string& path) {
  BR_RETURN_IF_ERROR(Powered(path));
  uint64_t n = ops_ + 1;
  if (power_loss_at_ != 0 && n >= power_loss_at_) {
    LosePower();
    return Unavailable(std::string(what) + " " + path + ": power was lost");
  }
  if (fail_at_ == n) {
    fail_at_ = 0;
    ops_ = n;
    return Status(fail_code_, std::string(what) + " " + path + ": injected failure");
  }
  ops_ = n;
  return Status::Ok();
}

void FaultEnv::LosePower() {
  if (!powered_) return;
  powered_ = false;
  power_loss_at_ = 0;
  ++epoch_;
}

void FaultEnv::Reboot() {
  LosePower();
  fail_at_ = 0;  // a planned failure belonged to the run the power cut ended
  // Names: as the directories last synced them. Bytes: the synced ones, with writes since torn.
  files_ = durable_;
  dirs_ = durable_dirs_;
  std::set<Inode*> seen;
  for (auto& [path, inode] : files_) {
    if (!seen.insert(inode.get()).second) continue;
    Bytes& now = inode->data;
    const Bytes& old = inode->synced;
    inode->changed_from = SIZE_MAX;
    inode->changed_to = 0;
    if (!tear_ || now == old) {
      now = old;
      continue;
    }
    size_t size = rng_() % 2 ? now.size() : old.size();
    Bytes torn(size, 0);
    for (size_t at = 0; at < size; at += kBlockBytes) {
      bool keep_new = rng_() % 2;
      for (size_t i = at; i < std::min(size, at + kBlockBytes); ++i) {
        uint8_t o = i < old.size() ? old[i] : 0, n = i < now.size() ? now[i] : 0;
        torn[i] = keep_new ? n : o;
      }
    }
    now = std::move(torn);
    inode->synced = now;
  }
  powered_ = true;
}

Result<std::unique_ptr<File>> FaultEnv::Open(const std::string& raw, OpenMode mode) {
  std::string path = Norm(raw);
  BR_RETURN_IF_ERROR(Powered(path));
  auto it = files_.find(path);
  switch (mode) {
    case OpenMode::kRead:
    case OpenMode::kReadWrite:
      if (it == files_.end()) return NotFound("open " + path + ": No such file or directory");
      return std::unique_ptr<File>(new MemFile(this, it->second, path, mode == OpenMode::kReadWrite));
    case OpenMode::kCreateOrOpen:
    case OpenMode::kAppend:
      if (it != files_.end()) return std::unique_ptr<File>(new MemFile(this, it->second, path, true));
      break;
    case OpenMode::kCreateExclusive:
    case OpenMode::kCreateTruncate:
      break;
  }
  if (dirs_.count(ParentDir(path)) == 0) return NotFound("create " + path + ": No such file or directory");
  if (mode == OpenMode::kCreateExclusive && it != files_.end()) return IoError("create " + path + ": File exists");
  BR_RETURN_IF_ERROR(Mutate("create", path));
  if (it == files_.end()) {
    it = files_.insert_or_assign(path, std::make_shared<Inode>()).first;
  } else {
    it->second->data.clear();
    it->second->Changed(0, 0);
  }
  return std::unique_ptr<File>(new MemFile(this, it->second, path, true));
}

Status FaultEnv::Rename(const std::string& from_raw, const std::string& to_raw) {
  std::string from = Norm(from_raw), to = Norm(to_raw);
  BR_RETURN_IF_ERROR(Powered(from));
  auto it = files_.find(from);
  if (it == files_.end()) return NotFound("rename " + from + ": No such file or directory");
  BR_RETURN_IF_ERROR(Mutate("rename", from));
  auto inode = it->second;
  files_.erase(it);
  files_[to] = std::move(inode);
  return Status::Ok();
}

Status FaultEnv::Remove(const std::string& raw) {
  std::string path = Norm(raw);
  BR_RETURN_IF_ERROR(Powered(path));
  auto it = files_.find(path);
  if (it == files_.end()) return NotFound("remove " + path + ": No such file or directory");
  BR_RETURN_IF_ERROR(Mutate("remove", path));
  files_.erase(it);
  return Status::Ok();
}

Status FaultEnv::SyncDir(const std::string& raw) {
  std::string dir = Norm(raw);
  BR_RETURN_IF_ERROR(Powered(dir));
  if (dirs_.count(dir) == 0) return NotFound("open directory " + dir + ": No such file or directory");
  BR_RETURN_IF_ERROR(Mutate("fsync directory", dir));
  for (auto it = durable_.begin(); it != durable_.end();)
    it = ParentDir(it->first) == dir ? durable_.erase(it) : std::next(it);
  for (const auto& [path, inode] : files_)
    if (ParentDir(path) == dir) durable_[path] = inode;
  for (const std::string& d : dirs_)
    if (ParentDir(d) == dir) durable_dirs_.insert(d);
  return Status::Ok();
}

Status FaultEnv::MakeDirs(const std::string& raw, unsigned mode) {
  std::string path = Norm(raw);
  if (path.empty() || dirs_.count(path)) return Status::Ok();
  BR_RETURN_IF_ERROR(Powered(path));
  if (files_.count(path)) return InvalidArgument(path + " exists and is not a directory");
  std::string parent = ParentDir(path);
  if (parent != path && parent != "/" && parent != ".") BR_RETURN_IF_ERROR(MakeDirs(parent, mode));
  BR_RETURN_IF_ERROR(Mutate("mkdir", path));
  dirs_.insert(path);
  // Made durable in its parent at once, as the real MakeDirs does (mkdir, then fsync the parent).
  durable_dirs_.insert(path);
  return Status::Ok();
}

Result<std::vector<std::string>> FaultEnv::ListDir(const std::string& raw) {
  std::string dir = Norm(raw);
  BR_RETURN_IF_ERROR(Powered(dir));
  if (dirs_.count(dir) == 0) return NotFound("open directory " + dir + ": No such file or directory");
  std::vector<std::string> names;
  for (const auto& [path, inode] : files_)
    if (ParentDir(path) == dir) names.push_back(path.substr(dir.size() + 1));
  for (const std::string& d : dirs_)
    if (ParentDir(d) == dir) names.push_back(d.substr(dir.size() + 1));
  std::sort(names.begin(), names.end());
  return names;
}

bool FaultEnv::Exists(const std::string& raw) {
  std::string path = Norm(raw);
  return powered_ && (files_.count(path) != 0 || dirs_.count(path) != 0);
}

Result<uint64_t> FaultEnv::FileSize(const std::string& raw) {
  std::string path = Norm(raw);
  BR_RETURN_IF_ERROR(Powered(path));
  auto it = files_.find(path);
  if (it == files_.end()) return NotFound("stat " + path + ": No such file or directory");
  return uint64_t{it->second->data.size()};
}

}  // namespace blockrep::sim
