// A protected volume: a block device or a regular image file, opened read-only, with O_DIRECT
// where the target allows it (reads then bypass the page cache and need 4 KiB alignment).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/fs.h"
#include "blockrep/base/limits.h"
#include "blockrep/base/status.h"
#include "blockrep/tracking/dirty_map.h"  // Extent

namespace blockrep::agent {

struct Volume {
  std::string path;
  UniqueFd fd;
  uint64_t size_bytes = 0;
  bool block_device = false;
  bool direct = false;

  static Result<std::unique_ptr<Volume>> Open(const std::string& path);

  // The extents a full read must cover: for an image file, its data as SEEK_DATA/SEEK_HOLE tell
  // it, widened to whole 4 KiB blocks (a hole reads as zeros, which a full point neither ships
  // nor seals, so skipping it changes nothing but the time: a 1 TiB image holding 1 GiB is read
  // as 1 GiB); for a block device, or a filesystem without SEEK_DATA, the whole volume.
  Result<std::vector<Extent>> DataExtents() const;
};

}  // namespace blockrep::agent
