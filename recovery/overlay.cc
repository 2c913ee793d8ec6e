#include "overlay.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace blockrep::recovery {

Overlay::Overlay(std::string path, UniqueFd fd, uint64_t volume_bytes)
    : path_(std::move(path)),
      fd_(std::move(fd)),
      volume_bytes_(volume_bytes),
      bitmap_((volume_bytes + kBlockBytes * 64 - 1) / (kBlockBytes * 64), 0) {}

Result<std::unique_ptr<Overlay>> Overlay::Open(const std::string& path, uint64_t volume_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoStatus("open overlay " + path, errno);
  struct statvfs vfs{};
  if (fstatvfs(fd.get(), &vfs) != 0) return ErrnoStatus("statvfs " + path, errno);
  if (vfs.f_bsize > kBlockBytes || kBlockBytes % vfs.f_bsize != 0)
    return InvalidArgument("overlay " + path + " is on a filesystem with " + std::to_string(vfs.f_bsize) +
                           "-byte blocks; give --overlay a directory on ext4, xfs or tmpfs (4 KiB blocks or less)");
  struct stat st{};
  if (fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
  if (st.st_size != 0 && static_cast<uint64_t>(st.st_size) != volume_bytes)
    return InvalidArgument("overlay " + path + " holds " + std::to_string(st.st_size) + " bytes but the volume has " +
                           std::to_string(volume_bytes) + " (an overlay of another volume? remove it or use another --overlay)");
  if (st.st_size == 0 && ftruncate(fd.get(), static_cast<off_t>(volume_bytes)) != 0)
    return ErrnoStatus("size overlay " + path, errno);
  std::unique_ptr<Overlay> ov(new Overlay(path, std::move(fd), volume_bytes));
  BR_RETURN_IF_ERROR(ov->RebuildBitmap());
  return ov;
}

Status Overlay::RebuildBitmap() {
  off_t pos = 0, end = static_cast<off_t>(volume_bytes_);
  while (pos < end) {
    off_t data = lseek(fd_.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data past pos
      return ErrnoStatus("SEEK_DATA " + path_, errno);
    }
    off_t hole = lseek(fd_.get(), data, SEEK_HOLE);
    if (hole < 0) return ErrnoStatus("SEEK_HOLE " + path_, errno);
    // Writes are whole blocks, so allocated ranges are whole blocks too.
    for (uint64_t b = static_cast<uint64_t>(data) / kBlockBytes; b * kBlockBytes < static_cast<uint64_t>(hole); ++b)
      if (b * kBlockBytes < volume_bytes_) Mark(b);
    pos = hole;
  }
  return Status::Ok();
}

void Overlay::Mark(uint64_t block) {
  uint64_t bit = uint64_t{1} << (block % 64);
  if (bitmap_[block / 64] & bit) return;
  bitmap_[block / 64] |= bit;
  ++blocks_written_;
}

Status Overlay::Read(PointImage& base, uint16_t volume, uint64_t offset, uint64_t len, uint8_t* out) {
  uint64_t end = offset + len;
  while (offset < end) {
    uint64_t block = offset / kBlockBytes;
    bool written = Written(block);
    // The run of blocks with the same state.
    uint64_t run_end = std::min(end, (block + 1) * kBlockBytes);
    while (run_end < end && Written(run_end / kBlockBytes) == written)
      run_end = std::min(end, run_end + kBlockBytes);
    uint64_t n = run_end - offset;
    if (written)
      BR_RETURN_IF_ERROR(PreadAll(fd_.get(), offset, out, n).Annotate("overlay " + path_));
    else
      BR_RETURN_IF_ERROR(base.Read(volume, offset, n, out));
    out += n;
    offset = run_end;
  }
  return Status::Ok();
}

Status Overlay::Write(PointImage& base, uint16_t volume, uint64_t offset, ByteSpan data) {
  if (data.empty()) return Status::Ok();
  uint64_t first = offset / kBlockBytes, last = (offset + data.size() - 1) / kBlockBytes;
  uint64_t start = first * kBlockBytes, stop = std::min(volume_bytes_, (last + 1) * kBlockBytes);
  scratch_.resize(stop - start);
  // Complete the partial first and last blocks from what the volume holds now.
  if (offset != start) BR_RETURN_IF_ERROR(Read(base, volume, start, std::min(kBlockBytes, stop - start), scratch_.data()));
  uint64_t last_start = last * kBlockBytes;
  if (offset + data.size() != stop && (last != first || offset == start))
    BR_RETURN_IF_ERROR(Read(base, volume, last_start, stop - last_start, scratch_.data() + (last_start - start)));
  std::memcpy(scratch_.data() + (offset - start), data.data(), data.size());
  BR_RETURN_IF_ERROR(PwriteAll(fd_.get(), start, scratch_.data(), scratch_.size()).Annotate("overlay " + path_));
  for (uint64_t b = first; b <= last; ++b) Mark(b);
  return Status::Ok();
}

Status Overlay::Sync() {
  if (fdatasync(fd_.get()) != 0) return ErrnoStatus("fsync overlay " + path_, errno);
  return Status::Ok();
}

}  // namespace blockrep::recovery
