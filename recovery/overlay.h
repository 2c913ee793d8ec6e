// The writable layer over a point's volume image (`mount --overlay DIR`, `drill`): a sparse file
// of the volume's size that receives every write, in whole 4 KiB blocks, and a bitmap of the
// blocks written. A read takes written blocks from the overlay and the rest from the point. The
// store is never written.
//
// The bitmap lives in memory while mounted; it is rebuilt from the file's allocated ranges
// (SEEK_DATA / SEEK_HOLE) when an overlay left by an earlier mount is opened, so an overlay
// survives a crash of the mount as far as its writes reached the disk. That needs a filesystem
// whose blocks are at most 4 KiB (ext4, xfs, tmpfs): Open refuses others.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/fs.h"
#include "blockrep/base/status.h"
#include "point_image.h"

namespace blockrep::recovery {

class Overlay {
 public:
  static constexpr uint64_t kBlockBytes = ::blockrep::kBlockBytes;
  static Result<std::unique_ptr<Overlay>> Open(const std::string& path, uint64_t volume_bytes);

  // Bytes [offset, offset + len) of the volume as written so far over `base`'s volume `volume`.
  Status Read(PointImage& base, uint16_t volume, uint64_t offset, uint64_t len, uint8_t* out);
  // Writes `data` at `offset` (inside the volume); partial blocks are completed from what the
  // volume holds there first.
  Status Write(PointImage& base, uint16_t volume, uint64_t offset, ByteSpan data);
  Status Sync();
  uint64_t blocks_written() const { return blocks_written_; }

 private:
  Overlay(std::string path, UniqueFd fd, uint64_t volume_bytes);
  Status RebuildBitmap();
  bool Written(uint64_t block) const { return (bitmap_[block / 64] >> (block % 64)) & 1; }
  void Mark(uint64_t block);

  std::string path_;
  UniqueFd fd_;
  uint64_t volume_bytes_;
  std::vector<uint64_t> bitmap_;  // one bit per 4 KiB block of the volume
  uint64_t blocks_written_ = 0;
  Bytes scratch_;
};

}  // namespace blockrep::recovery
