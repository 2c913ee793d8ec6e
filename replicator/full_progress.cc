#include "full_progress.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "blockrep/base/bytes.h"
#include "blockrep/base/check.h"
#include "blockrep/base/checksum.h"
#include "blockrep/crypto/fingerprint.h"

namespace blockrep::agent {
namespace {

constexpr char kMagic[8] = {'B', 'R', 'F', 'U', 'L', 'L', '0', '2'};  // 02: the base point (rescans)
constexpr size_t kChunkHeadBytes = 4 + 8 + 4;

uint64_t BlockCount(uint64_t volume_bytes) { return (volume_bytes + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes; }

}  // namespace

std::string BootId() {
  // procfs files report size 0: read, don't stat.
  int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[128];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  ::close(fd);
  if (n <= 0) return {};
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

FullProgress::FullProgress(std::string state_dir, std::string boot_id, Env* env)
    : dir_(std::move(state_dir)), boot_id_(std::move(boot_id)), env_(env) {}

uint64_t FullProgress::total_bytes() const {
  uint64_t t = 0;
  for (uint64_t s : id_.volume_bytes) t += s;
  return t;
}

Status FullProgress::Begin(const FullPointId& id, uint64_t limit) {
  active_ = false;
  log_.reset();
  if (dir_.empty() || boot_id_.empty()) return Status::Ok();
  id_ = id;
  cursor_ = 0;
  limit_ = std::min(limit, total_bytes());
  log_bytes_ = 0;
  BR_ASSIGN_OR_RETURN(log_, env_->Open(LogPath(), OpenMode::kCreateTruncate));
  active_ = true;
  Status st = WriteHeader();
  if (!st.ok()) active_ = false;
  return st;
}

Status FullProgress::WriteHeader() {
  Bytes out;
  ByteWriter w(&out);
  w.Raw(kMagic, sizeof(kMagic));
  w.String(id_.server_id);
  w.U64(id_.point_id);
  w.U64(id_.time_ns);
  w.U64(id_.key_id);
  w.U64(id_.base_point);
  w.String(boot_id_);
  w.U32(static_cast<uint32_t>(id_.volume_bytes.size()));
  for (uint64_t s : id_.volume_bytes) w.U64(s);
  w.U64(cursor_);
  w.U64(limit_);
  w.U64(log_bytes_);
  w.U64(Checksum64(out));
  // Not synced (see the header comment): a rename in the page cache is all a kill -9 needs.
  std::string tmp = HeaderPath() + ".tmp";
  BR_ASSIGN_OR_RETURN(std::unique_ptr<File> f, env_->Open(tmp, OpenMode::kCreateTruncate));
  BR_RETURN_IF_ERROR(f->WriteAt(0, out).Annotate(tmp));
  f.reset();
  return env_->Rename(tmp, HeaderPath());
}

bool FullProgress::Load(const FullPointId& id, std::string* why) {
  why->clear();
  active_ = false;
  log_.reset();
  if (dir_.empty()) return false;
  if (!env_->Exists(HeaderPath())) return false;
  auto data = env_->ReadFile(HeaderPath(), kHeaderBytesMax);
  if (!data.ok()) {
    *why = data.status().message();
    return false;
  }
  ByteReader r(*data);
  char magic[sizeof(kMagic)];
  r.Raw(magic, sizeof(magic));
  FullPointId got;
  got.server_id = r.String(256);
  got.point_id = r.U64();
  got.time_ns = r.U64();
  got.key_id = r.U64();
  got.base_point = r.U64();
  std::string boot = r.String(64);
  uint32_t volumes = r.U32();
  if (!r.ok() || !std::equal(magic, magic + sizeof(magic), kMagic) || volumes > 4096) {
    *why = HeaderPath() + " is not a checkpoint this agent writes (an older agent's?)";
    return false;
  }
  for (uint32_t v = 0; v < volumes; ++v) got.volume_bytes.push_back(r.U64());
  uint64_t cursor = r.U64(), limit = r.U64(), log_bytes = r.U64();
  size_t summed = r.position();
  uint64_t sum = r.U64();
  if (!r.ok() || r.remaining() != 0 || sum != Checksum64(ByteSpan(data->data(), summed))) {
    *why = HeaderPath() + " is damaged (checksum)";
    return false;
  }
  if (boot != boot_id_ || boot.empty()) {
    *why = "it was written before a reboot";
    return false;
  }
  if (!(got == id)) {
    *why = "it is of point " + std::to_string(got.point_id) + " at another time, key, base or volume sizes, not the staging's";
    return false;
  }
  id_ = got;
  if (cursor > limit || limit > total_bytes()) {
    *why = HeaderPath() + " names positions past the volumes";
    return false;
  }
  auto log = env_->Open(LogPath(), OpenMode::kReadWrite);
  if (!log.ok()) {
    *why = log.status().message();
    return false;
  }
  log_ = std::move(log).value();
  cursor_ = cursor;
  limit_ = limit;
  log_bytes_ = log_bytes;
  active_ = true;
  // The log is checked as it is replayed (Restore); a bad chunk there ends the resume.
  return true;
}

Status FullProgress::AppendRun(size_t volume, uint64_t first_block, const uint64_t* fps, uint32_t n, Bytes* out) {
  size_t start = out->size();
  ByteWriter w(out);
  w.U32(static_cast<uint32_t>(volume));
  w.U64(first_block);
  w.U32(n);
  for (uint32_t i = 0; i < n; ++i) w.U64(fps[i]);
  w.U64(Checksum64(ByteSpan(out->data() + start, out->size() - start)));
  return Status::Ok();
}

Status FullProgress::Save(uint64_t cursor, uint64_t limit, const PointSeal& seal) {
  if (!active_) return Status::Ok();
  const uint64_t total = total_bytes();
  cursor = std::min(cursor, total);
  limit = std::min(std::max(limit, limit_), total);
  if (cursor < cursor_) cursor = cursor_;
  // A cursor past the lease moved over holes only (image files: reads skip them, and none was
  // issued past the lease): everything before it is done, so the lease reaches it too. (The
  // last data of a sparse image made durable put the cursor at the end of the volumes.)
  limit = std::max(limit, cursor);
  const auto& fps = seal.fingerprints();
  BR_CHECK(fps.size() == id_.volume_bytes.size());
  Bytes out;
  std::vector<uint64_t> run;
  uint64_t base = 0, new_cursor = cursor_;
  for (size_t v = 0; v < id_.volume_bytes.size(); ++v) {
    const uint64_t size = id_.volume_bytes[v];
    const uint64_t end = base + size;
    if (cursor_ < end && cursor > base) {
      uint64_t from_block = (std::max(cursor_, base) - base) / kFingerprintBlockBytes;
      uint64_t to_block = cursor >= end ? BlockCount(size) : (cursor - base) / kFingerprintBlockBytes;
      new_cursor = cursor >= end ? end : base + to_block * kFingerprintBlockBytes;
      const FingerprintTable& mine = fps[v];
      BR_CHECK(mine.size() == BlockCount(size));
      uint64_t b = from_block;
      while (b < to_block) {
        b = mine.NextNonZero(b, to_block);  // a sparse image's table is mostly holes: 268 M blocks per TiB
        if (b >= to_block) break;
        uint64_t run_end = b, last_nonzero = b;
        while (run_end < to_block && run_end - b < kChunkBlocksMax) {
          if (mine[run_end] != 0) last_nonzero = run_end;
          else if (run_end - last_nonzero >= kZeroGapBlocks) break;
          ++run_end;
        }
        uint32_t n = static_cast<uint32_t>(last_nonzero + 1 - b);
        run.resize(n);
        mine.Read(b, run.data(), n);
        BR_RETURN_IF_ERROR(AppendRun(v, b, run.data(), n, &out));
        b += n;
      }
    }
    base = end;
  }
  if (!out.empty()) {
    BR_RETURN_IF_ERROR(log_->WriteAt(log_bytes_, out).Annotate(LogPath()));
    log_bytes_ += out.size();
  }
  if (new_cursor == cursor_ && limit == limit_ && out.empty()) return Status::Ok();
  cursor_ = new_cursor;
  limit_ = limit;
  return WriteHeader();
}

Status FullProgress::Restore(PointSeal* seal) const {
  if (!active_) return Internal("no full-point checkpoint to restore");
  uint64_t at = 0;
  Bytes chunk;
  while (at < log_bytes_) {
    uint8_t head[kChunkHeadBytes];
    BR_RETURN_IF_ERROR(log_->ReadExact(at, head, sizeof(head)).Annotate(LogPath()));
    ByteReader hr(ByteSpan(head, sizeof(head)));
    uint32_t volume = hr.U32();
    uint64_t first = hr.U64();
    uint32_t n = hr.U32();
    if (volume >= id_.volume_bytes.size() || n == 0 || n > kChunkBlocksMax || first + n > BlockCount(id_.volume_bytes[volume]))
      return DataLoss(LogPath() + ": chunk at byte " + std::to_string(at) + " names blocks outside the volumes");
    size_t len = sizeof(head) + size_t{n} * 8 + 8;
    if (at + len > log_bytes_) return DataLoss(LogPath() + " is truncated");
    chunk.resize(len);
    BR_RETURN_IF_ERROR(log_->ReadExact(at, chunk.data(), len).Annotate(LogPath()));
    ByteReader r(ByteSpan(chunk.data() + len - 8, 8));
    if (r.U64() != Checksum64(ByteSpan(chunk.data(), len - 8)))
      return DataLoss(LogPath() + ": chunk at byte " + std::to_string(at) + " is damaged (checksum)");
    uint64_t base = 0;
    for (uint32_t v = 0; v < volume; ++v) base += id_.volume_bytes[v];
    if (base + std::min<uint64_t>((first + n) * kFingerprintBlockBytes, id_.volume_bytes[volume]) > cursor_)
      return DataLoss(LogPath() + ": chunk at byte " + std::to_string(at) + " lies past the cursor");
    std::vector<uint64_t> fps(n);
    ByteReader fr(ByteSpan(chunk.data() + sizeof(head), size_t{n} * 8));
    for (uint64_t& fp : fps) fp = fr.U64();
    seal->Note(volume, first * kFingerprintBlockBytes, fps.data(), n);
    // Only informative in the seal (which point last sent a region): a record went there.
    seal->Sent(volume, first * kFingerprintBlockBytes,
               std::min<uint64_t>(uint64_t{n} * kFingerprintBlockBytes, id_.volume_bytes[volume] - first * kFingerprintBlockBytes));
    at += len;
  }
  return Status::Ok();
}

Status FullProgress::Drop() {
  active_ = false;
  log_.reset();
  if (dir_.empty()) return Status::Ok();
  for (const std::string& p : {HeaderPath(), LogPath()}) {
    Status st = env_->Remove(p);
    if (!st.ok() && st.code() != Code::kNotFound) return st.Annotate("cannot remove the full-point checkpoint");
  }
  return Status::Ok();
}

}  // namespace blockrep::agent
