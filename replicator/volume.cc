#include "volume.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace blockrep::agent {

Result<std::unique_ptr<Volume>> Volume::Open(const std::string& path) {
  auto v = std::make_unique<Volume>();
  v->path = path;
  struct stat st{};
  if (stat(path.c_str(), &st) != 0)
  {
    Status st = ErrnoStatus("volume " + path, errno);
    return Status(st.code(), st.message() + " (check --volume)");
  }
  if (S_ISBLK(st.st_mode)) {
    v->block_device = true;
  } else if (!S_ISREG(st.st_mode)) {
    return InvalidArgument("volume " + path + " is neither a block device nor a regular file");
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (fd >= 0) {
    v->direct = true;
  } else if (errno == EINVAL) {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);  // the filesystem refuses O_DIRECT
  }
  if (fd < 0) return ErrnoStatus("open volume " + path, errno);
  v->fd = UniqueFd(fd);
  if (v->block_device) {
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) return ErrnoStatus("size of " + path, errno);
    v->size_bytes = size;
  } else {
    v->size_bytes = static_cast<uint64_t>(st.st_size);
  }
  if (v->size_bytes == 0) return InvalidArgument("volume " + path + " is empty (size 0)");
  return v;
}

Result<std::vector<Extent>> Volume::DataExtents() const {
  if (block_device) return std::vector<Extent>{Extent{0, size_bytes}};
  std::vector<Extent> out;
  uint64_t at = 0;
  while (at < size_bytes) {
    off_t data = lseek(fd.get(), static_cast<off_t>(at), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data past `at`
      if (errno == EINVAL) return std::vector<Extent>{Extent{0, size_bytes}};  // no SEEK_DATA here
      return ErrnoStatus("SEEK_DATA in volume " + path, errno);
    }
    off_t hole = lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0) return ErrnoStatus("SEEK_HOLE in volume " + path, errno);
    uint64_t start = static_cast<uint64_t>(data) / kBlockBytes * kBlockBytes;
    uint64_t end = std::min<uint64_t>(size_bytes, (static_cast<uint64_t>(hole) + kBlockBytes - 1) / kBlockBytes * kBlockBytes);
    if (end <= start) break;  // the file shrank under us: what is left is read as it is
    if (!out.empty() && out.back().offset + out.back().length >= start) {
      out.back().length = std::max(out.back().offset + out.back().length, end) - out.back().offset;
    } else {
      out.push_back(Extent{start, end - start});
    }
    at = end;
  }
  return out;
}

}  // namespace blockrep::agent
