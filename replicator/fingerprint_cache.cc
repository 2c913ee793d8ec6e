#include "fingerprint_cache.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "blockrep/base/bytes.h"
#include "blockrep/base/checksum.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/base/fs.h"

namespace blockrep::agent {
namespace {

constexpr char kMagic[8] = {'B', 'R', 'F', 'P', 'C', '0', '0', '1'};
// Written and read in chunks of this many bytes, so the cache costs no memory beyond the
// fingerprints themselves (a whole-file buffer was 8 MiB more per 4 GiB protected, P6).
constexpr size_t kChunkBytes = 64u << 10;

std::string CachePath(const std::string& state_dir) { return state_dir + "/fingerprints"; }

uint64_t BlockCount(uint64_t volume_bytes) { return (volume_bytes + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes; }

}  // namespace

Status SaveFingerprintCache(const std::string& state_dir, const std::string& server_id, uint64_t point_id,
                            const std::vector<uint64_t>& volume_bytes, const std::vector<FingerprintTable>& fps,
                            Env* env) {
  if (fps.size() != volume_bytes.size()) return Internal("fingerprint cache: volume count differs");
  for (size_t v = 0; v < fps.size(); ++v)
    if (fps[v].size() != BlockCount(volume_bytes[v]))
      return Internal("fingerprint cache: volume " + std::to_string(v) + " has the wrong block count");
  std::string path = CachePath(state_dir), tmp = path + ".tmp";
  BR_ASSIGN_OR_RETURN(std::unique_ptr<File> file, env->Open(tmp, OpenMode::kCreateTruncate));
  Checksum64Stream sum;
  Bytes chunk;
  uint64_t file_offset = 0;
  // A chunk of zeros (unwritten blocks: most of a sparse volume) is left a hole in the file.
  auto flush = [&]() -> Status {
    sum.Update(chunk);
    Status st;
    if (!IsAllZero(chunk))
      st = file->WriteAt(file_offset, chunk).Annotate(tmp);
    file_offset += chunk.size();
    chunk.clear();
    return st;
  };
  ByteWriter w(&chunk);
  w.Raw(kMagic, sizeof(kMagic));
  w.U64(point_id);
  w.String(server_id);
  w.U32(static_cast<uint32_t>(volume_bytes.size()));
  for (uint64_t size : volume_bytes) w.U64(size);
  std::vector<uint64_t> run(kChunkBytes / 8);
  for (const FingerprintTable& volume : fps)
    for (uint64_t b = 0, data = 0; b < volume.size();) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(run.size(), volume.size() - b));
      if (data < b + n) data = volume.NextData(b);
      if (data >= b + n) {
        chunk.resize(chunk.size() + n * 8, 0);  // a hole of the table: zeros, never touched
      } else {
        volume.Read(b, run.data(), n);
        for (size_t i = 0; i < n; ++i) w.U64(run[i]);
      }
      b += n;
      if (chunk.size() >= kChunkBytes) BR_RETURN_IF_ERROR(flush());
    }
  BR_RETURN_IF_ERROR(flush());
  w.U64(sum.Digest());
  BR_RETURN_IF_ERROR(file->WriteAt(file_offset, chunk).Annotate(tmp));
  BR_RETURN_IF_ERROR(file->Sync());
  file.reset();
  BR_RETURN_IF_ERROR(env->Rename(tmp, path));
  return env->SyncDir(state_dir);
}

std::optional<std::vector<FingerprintTable>> LoadFingerprintCache(const std::string& state_dir,
                                                                 const std::string& server_id, uint64_t point_id,
                                                                 const std::vector<uint64_t>& volume_bytes, std::string* why,
                                                                 const std::string& spill_dir, Env* env) {
  why->clear();
  std::string path = CachePath(state_dir);
  auto opened = env->Open(path, OpenMode::kRead);
  if (!opened.ok()) {
    if (opened.status().code() != Code::kNotFound) *why = opened.status().message();
    return std::nullopt;
  }
  std::unique_ptr<File> file = std::move(opened).value();
  // The file is read front to back in chunks; everything but the last 8 bytes is checksummed.
  Checksum64Stream sum;
  Bytes buf;
  uint64_t file_offset = 0;
  size_t pos = 0;
  bool failed = false;
  // The file holds only zeros in [file_offset, data_from): the holes SaveFingerprintCache left
  // for the unwritten blocks of a sparse volume (2 GiB of file per TiB), which are not read. Read,
  // the kernel zero-fills a page-cache page for each (0.8-4 s per TiB here) and pushes out as much
  // of what the server had cached.
  uint64_t data_from = 0;
  // Makes `n` unread bytes available at buf[pos..]; false at end of file or on an error.
  auto need = [&](size_t n) -> bool {
    if (buf.size() - pos >= n) return true;
    sum.Update(ByteSpan(buf.data(), pos));
    buf.erase(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(pos));
    pos = 0;
    const size_t have = buf.size(), want = std::max(n, kChunkBytes);
    size_t filled = 0;
    buf.resize(have + want);
    while (filled < want) {
      if (file_offset >= data_from) {
        Result<uint64_t> next = file->NextData(file_offset);
        if (!next.ok()) {
          *why = path + ": " + next.status().message();
          failed = true;
          break;
        }
        data_from = std::max(*next, file_offset);
      }
      if (file_offset < data_from) {
        size_t zeros = static_cast<size_t>(std::min<uint64_t>(want - filled, data_from - file_offset));
        std::fill_n(buf.data() + have + filled, zeros, 0);
        filled += zeros;
        file_offset += zeros;
        continue;
      }
      Result<size_t> got = file->ReadAt(file_offset, buf.data() + have + filled, want - filled);
      if (!got.ok()) {
        *why = path + ": " + got.status().message();
        failed = true;
        break;
      }
      if (*got == 0) break;  // end of file
      filled += *got;
      file_offset += *got;
    }
    buf.resize(have + filled);
    return !failed && buf.size() >= n;
  };
  auto u64 = [&]() -> uint64_t {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(buf[pos + i]) << (8 * i);
    pos += 8;
    return v;
  };
  auto truncated = [&]() {
    if (!failed) *why = path + " is truncated";
    return std::nullopt;
  };
  if (!need(sizeof(kMagic) + 8 + 2) || !std::equal(kMagic, kMagic + sizeof(kMagic), buf.begin())) {
    if (!failed) *why = path + " is not a fingerprint cache";
    return std::nullopt;
  }
  pos += sizeof(kMagic);
  uint64_t cached_point = u64();
  size_t name_len = size_t{buf[pos]} | size_t{buf[pos + 1]} << 8;
  pos += 2;
  if (!need(name_len + 4)) return truncated();
  std::string cached_server(buf.begin() + static_cast<ptrdiff_t>(pos), buf.begin() + static_cast<ptrdiff_t>(pos + name_len));
  pos += name_len;
  uint32_t volumes = static_cast<uint32_t>(buf[pos]) | static_cast<uint32_t>(buf[pos + 1]) << 8 |
                     static_cast<uint32_t>(buf[pos + 2]) << 16 | static_cast<uint32_t>(buf[pos + 3]) << 24;
  pos += 4;
  if (cached_server != server_id || cached_point != point_id || volumes != volume_bytes.size()) {
    *why = path + " is of " + (cached_server != server_id ? "server '" + cached_server + "'" : "point " + std::to_string(cached_point));
    return std::nullopt;
  }
  for (uint64_t size : volume_bytes) {
    if (!need(8)) return truncated();
    if (u64() != size) {
      *why = path + " is of other volume sizes";
      return std::nullopt;
    }
  }
  Result<std::vector<FingerprintTable>> tables = MakeTables(volume_bytes, spill_dir);
  if (!tables.ok()) {
    *why = tables.status().message();
    return std::nullopt;
  }
  std::vector<FingerprintTable> fps = std::move(tables).value();
  // A chunk at a time: a 1 TiB volume has 268 M blocks, and one call per block took 2.7 s here.
  std::vector<uint64_t> run(kChunkBytes / 8);
  for (size_t v = 0; v < volume_bytes.size(); ++v) {
    for (uint64_t b = 0; b < fps[v].size();) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(run.size(), fps[v].size() - b));
      if (!need(n * 8)) return truncated();
      ByteSpan bytes(buf.data() + pos, n * 8);
      if (!IsAllZero(bytes)) {  // all zeros (most of a sparse volume): the table's pages stay untouched
        ByteReader r(bytes);
        for (size_t i = 0; i < n; ++i) run[i] = r.U64();
        fps[v].Write(b, run.data(), n);
      }
      pos += n * 8;
      b += n;
    }
  }
  if (!need(8)) return truncated();
  sum.Update(ByteSpan(buf.data(), pos));
  uint64_t stored = u64();
  if (stored != sum.Digest()) {
    *why = path + " is damaged (checksum)";
    return std::nullopt;
  }
  if (need(1)) {
    *why = path + " has trailing bytes";
    return std::nullopt;
  }
  if (failed) return std::nullopt;
  return fps;
}

}  // namespace blockrep::agent
