// A protected volume: a block device or a regular image file, opened read-only, with O_DIRECT
// where the target allows it (reads then bypass the page cache and need 4 KiB alignment).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "blockrep/base/fs.h"
#include "blockrep/base/status.h"

namespace blockrep::agent {

struct Volume {
  std::string path;
  UniqueFd fd;
  uint64_t size_bytes = 0;
  bool block_device = false;
  bool direct = false;

  static Result<std::unique_ptr<Volume>> Open(const std::string& path);
};

}  // namespace blockrep::agent
