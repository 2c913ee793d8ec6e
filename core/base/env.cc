#include "blockrep/base/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "blockrep/base/fs.h"

namespace blockrep {

Status File::ReadExact(uint64_t offset, uint8_t* dst, size_t len) {
  BR_ASSIGN_OR_RETURN(size_t got, ReadAt(offset, dst, len));
  if (got < len) return DataLoss("unexpected end of file at offset " + std::to_string(offset + got));
  return Status::Ok();
}

std::string ParentDir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Result<Bytes> Env::ReadFile(const std::string& path, size_t max_bytes) {
  BR_ASSIGN_OR_RETURN(auto f, Open(path, OpenMode::kRead));
  BR_ASSIGN_OR_RETURN(uint64_t size, f->Size());
  if (size > max_bytes)
    return DataLoss(path + " is " + std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) +
                    " it may hold");
  Bytes data(static_cast<size_t>(size));
  BR_RETURN_IF_ERROR(f->ReadExact(0, data.data(), data.size()).Annotate(path));
  return data;
}

Status Env::WriteFileAtomic(const std::string& path, ByteSpan data) {
  std::string tmp = path + ".tmp";
  {
    BR_ASSIGN_OR_RETURN(auto f, Open(tmp, OpenMode::kCreateTruncate));
    BR_RETURN_IF_ERROR(f->Append(data).Annotate(tmp));  // write(2), from offset 0 of the empty file
    BR_RETURN_IF_ERROR(f->Sync().Annotate(tmp));
  }
  BR_RETURN_IF_ERROR(Rename(tmp, path));
  return SyncDir(ParentDir(path));
}

Status File::Append(ByteSpan data) {
  BR_ASSIGN_OR_RETURN(uint64_t end, Size());
  return WriteAt(end, data);
}

Status Env::AppendDurably(const std::string& path, ByteSpan data) {
  const bool fresh = !Exists(path);
  BR_ASSIGN_OR_RETURN(auto f, Open(path, OpenMode::kAppend));
  BR_RETURN_IF_ERROR(f->Append(data));
  BR_RETURN_IF_ERROR(f->Sync());
  return fresh ? SyncDir(ParentDir(path)) : Status::Ok();
}

namespace {

class PosixFile final : public File {
 public:
  PosixFile(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  Status WriteAt(uint64_t offset, ByteSpan data) override {
    return PwriteAll(fd_.get(), offset, data.data(), data.size()).Annotate(path_);
  }
  Status Append(ByteSpan data) override { return WriteAll(fd_.get(), data).Annotate("append to " + path_); }
  Result<size_t> ReadAt(uint64_t offset, uint8_t* dst, size_t len) override {
    return PreadUpTo(fd_.get(), offset, dst, len);
  }
  Status Sync() override {
    if (fsync(fd_.get()) != 0) return ErrnoStatus("fsync " + path_, errno);
    return Status::Ok();
  }
  Status Truncate(uint64_t size) override {
    if (ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) return ErrnoStatus("truncate " + path_, errno);
    return Status::Ok();
  }
  Result<uint64_t> Size() override {
    struct stat st{};
    if (fstat(fd_.get(), &st) != 0) return ErrnoStatus("stat " + path_, errno);
    return static_cast<uint64_t>(st.st_size);
  }
  Result<uint64_t> NextData(uint64_t offset) override {
    off_t at = lseek(fd_.get(), static_cast<off_t>(offset), SEEK_DATA);
    if (at >= 0) return std::max(offset, static_cast<uint64_t>(at));
    if (errno == ENXIO) return Size();     // only a hole from `offset` to the end
    if (errno == EINVAL) return offset;  // no SEEK_DATA on this filesystem: nothing is skipped
    return ErrnoStatus("seek data in " + path_, errno);
  }
  int fd() const override { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::string path_;
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode) override {
    int flags = O_CLOEXEC;
    const char* what = "open";
    switch (mode) {
      case OpenMode::kRead: flags |= O_RDONLY; break;
      case OpenMode::kCreateExclusive: flags |= O_RDWR | O_CREAT | O_EXCL; what = "create"; break;
      case OpenMode::kCreateTruncate: flags |= O_RDWR | O_CREAT | O_TRUNC; what = "create"; break;
      case OpenMode::kReadWrite: flags |= O_RDWR; break;
      case OpenMode::kCreateOrOpen: flags |= O_RDWR | O_CREAT; what = "create"; break;
      case OpenMode::kAppend: flags |= O_WRONLY | O_CREAT | O_APPEND; what = "open"; break;
    }
    UniqueFd fd(open(path.c_str(), flags, 0600));
    if (!fd.valid()) return ErrnoStatus(std::string(what) + " " + path, errno);
    return std::unique_ptr<File>(new PosixFile(std::move(fd), path));
  }
  Status Rename(const std::string& from, const std::string& to) override {
    if (rename(from.c_str(), to.c_str()) != 0) return ErrnoStatus("rename " + from, errno);
    return Status::Ok();
  }
  Status Remove(const std::string& path) override {
    if (unlink(path.c_str()) != 0) return ErrnoStatus("remove " + path, errno);
    return Status::Ok();
  }
  Status SyncDir(const std::string& dir) override { return FsyncDir(dir); }
  Status MakeDirs(const std::string& path, unsigned mode) override { return blockrep::MakeDirs(path, mode); }
  Result<std::vector<std::string>> ListDir(const std::string& dir) override { return blockrep::ListDir(dir); }
  bool Exists(const std::string& path) override { return PathExists(path); }
  Result<uint64_t> FileSize(const std::string& path) override {
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) return ErrnoStatus("stat " + path, errno);
    return static_cast<uint64_t>(st.st_size);
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();  // never destroyed: used until the process ends
  return env;
}

}  // namespace blockrep
