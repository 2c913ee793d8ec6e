#include "blockrep/base/fs.h"

#include "blockrep/base/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace blockrep {

void UniqueFd::Reset() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

Result<Bytes> ReadFileBytes(const std::string& path, size_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open " + path, errno);
  struct stat st{};
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    return DataLoss(path + " is " + std::to_string(st.st_size) + " bytes, more than the " +
                    std::to_string(max_bytes) + " allowed");
  Bytes data(static_cast<size_t>(st.st_size));
  BR_RETURN_IF_ERROR(PreadAll(fd.get(), 0, data.data(), data.size()).Annotate(path));
  return data;
}

Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  BR_ASSIGN_OR_RETURN(Bytes b, ReadFileBytes(path, max_bytes));
  return std::string(b.begin(), b.end());
}

Status WriteAll(int fd, ByteSpan data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", errno);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<size_t> PreadUpTo(int fd, uint64_t offset, uint8_t* dst, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, dst + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read", errno);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Status PreadAll(int fd, uint64_t offset, uint8_t* dst, size_t len) {
  BR_ASSIGN_OR_RETURN(size_t got, PreadUpTo(fd, offset, dst, len));
  if (got < len) return DataLoss("unexpected end of file at offset " + std::to_string(offset + got));
  return Status::Ok();
}

Status PwriteAll(int fd, uint64_t offset, const uint8_t* src, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, src + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write at offset " + std::to_string(offset + done), errno);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FsyncDir(const std::string& dir) {
  UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open directory " + dir, errno);
  if (fsync(fd.get()) != 0) return ErrnoStatus("fsync directory " + dir, errno);
  return Status::Ok();
}


Status WriteFileAtomic(const std::string& path, ByteSpan data) {
  std::string tmp = path + ".tmp";
  {
    UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) return ErrnoStatus("create " + tmp, errno);
    BR_RETURN_IF_ERROR(WriteAll(fd.get(), data).Annotate(tmp));
    if (fsync(fd.get()) != 0) return ErrnoStatus("fsync " + tmp, errno);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus("rename " + tmp, errno);
  return FsyncDir(ParentDir(path));
}

Status MakeDirs(const std::string& path, unsigned mode) {
  if (path.empty()) return Status::Ok();
  struct stat st{};
  if (stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::Ok();
    return InvalidArgument(path + " exists and is not a directory");
  }
  std::string parent = ParentDir(path);
  if (parent != path) BR_RETURN_IF_ERROR(MakeDirs(parent, mode));
  if (mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return ErrnoStatus("mkdir " + path, errno);
  return FsyncDir(parent);
}

Result<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus("open directory " + dir, errno);
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

bool PathExists(const std::string& path) {
  struct stat st{};
  return stat(path.c_str(), &st) == 0;
}

Status CheckOwnerOnlyFile(const std::string& path, std::string_view what) {
  struct stat st{};
  if (stat(path.c_str(), &st) != 0) return ErrnoStatus(std::string(what) + " " + path, errno);
  if (!S_ISREG(st.st_mode)) return InvalidArgument(std::string(what) + " " + path + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
    return PermissionDenied(std::string(what) + " " + path + " has mode " + mode +
                            " and may be readable by others; run: chmod 600 " + path);
  }
  return Status::Ok();
}

}  // namespace blockrep
