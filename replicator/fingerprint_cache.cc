#include "fingerprint_cache.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "blockrep/bytes.h"
#include "blockrep/checksum.h"
#include "blockrep/fingerprint.h"
#include "blockrep/fs.h"

namespace blockrep::agent {
namespace {

constexpr char kMagic[8] = {'B', 'R', 'F', 'P', 'C', '0', '0', '1'};
// 2 GiB of fingerprints: 1 PiB of volumes. A larger file is not ours.
constexpr size_t kCacheBytesMax = size_t{2} << 30;

std::string CachePath(const std::string& state_dir) { return state_dir + "/fingerprints"; }

}  // namespace

Status SaveFingerprintCache(const std::string& state_dir, const std::string& server_id, uint64_t point_id,
                            const std::vector<uint64_t>& volume_bytes, const std::vector<std::vector<uint64_t>>& fps) {
  if (fps.size() != volume_bytes.size()) return Internal("fingerprint cache: volume count differs");
  Bytes out;
  ByteWriter w(&out);
  w.Raw(kMagic, sizeof(kMagic));
  w.U64(point_id);
  w.String(server_id);
  w.U32(static_cast<uint32_t>(volume_bytes.size()));
  for (uint64_t size : volume_bytes) w.U64(size);
  for (size_t v = 0; v < fps.size(); ++v) {
    if (fps[v].size() != (volume_bytes[v] + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes)
      return Internal("fingerprint cache: volume " + std::to_string(v) + " has the wrong block count");
    for (uint64_t fp : fps[v]) w.U64(fp);
  }
  w.U64(Checksum64(out));
  return WriteFileAtomic(CachePath(state_dir), out);
}

std::optional<std::vector<std::vector<uint64_t>>> LoadFingerprintCache(const std::string& state_dir,
                                                                       const std::string& server_id, uint64_t point_id,
                                                                       const std::vector<uint64_t>& volume_bytes,
                                                                       std::string* why) {
  why->clear();
  std::string path = CachePath(state_dir);
  Result<Bytes> data = ReadFileBytes(path, kCacheBytesMax);
  if (!data.ok()) {
    if (data.status().message().find(std::strerror(ENOENT)) == std::string::npos) *why = data.status().message();
    return std::nullopt;
  }
  const Bytes& d = *data;
  if (d.size() < sizeof(kMagic) + 8 || !std::equal(kMagic, kMagic + sizeof(kMagic), d.begin())) {
    *why = path + " is not a fingerprint cache";
    return std::nullopt;
  }
  ByteSpan body(d.data(), d.size() - 8);
  ByteReader tail(ByteSpan(d).subspan(d.size() - 8));
  if (Checksum64(body) != tail.U64()) {
    *why = path + " is damaged (checksum)";
    return std::nullopt;
  }
  ByteReader r(body.subspan(sizeof(kMagic)));
  uint64_t cached_point = r.U64();
  std::string cached_server = r.String(1024);
  uint32_t volumes = r.U32();
  if (!r.ok() || cached_server != server_id || cached_point != point_id || volumes != volume_bytes.size()) {
    *why = path + " is of " + (cached_server != server_id ? "server '" + cached_server + "'" : "point " + std::to_string(cached_point));
    return std::nullopt;
  }
  for (uint64_t size : volume_bytes)
    if (r.U64() != size) {
      *why = path + " is of other volume sizes";
      return std::nullopt;
    }
  std::vector<std::vector<uint64_t>> fps(volume_bytes.size());
  for (size_t v = 0; v < volume_bytes.size(); ++v) {
    uint64_t blocks = (volume_bytes[v] + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes;
    if (r.remaining() / 8 < blocks) {
      *why = path + " is truncated";
      return std::nullopt;
    }
    fps[v].resize(blocks);
    for (uint64_t& fp : fps[v]) fp = r.U64();
  }
  if (!r.ok() || r.remaining() != 0) {
    *why = path + " has trailing bytes";
    return std::nullopt;
  }
  return fps;
}

}  // namespace blockrep::agent
