#include "volume.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

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

}  // namespace blockrep::agent
