#include "blockrep/objstore/s3_env.h"

#include <algorithm>
#include <cstring>

namespace blockrep {
namespace {

// Names in one folder of a store: packs and indexes of a long chain, bounded all the same.
constexpr size_t kFolderNamesMax = 4u << 20;

class S3ReadFile : public File {
 public:
  S3ReadFile(S3ReadEnv* env, std::string key, uint64_t size) : env_(env), key_(std::move(key)), size_(size) {}

  Status WriteAt(uint64_t, ByteSpan) override { return Refused(); }
  Status Sync() override { return Refused(); }
  Status Truncate(uint64_t) override { return Refused(); }
  Result<uint64_t> Size() override { return size_; }

  Result<size_t> ReadAt(uint64_t offset, uint8_t* dst, size_t len) override {
    if (offset >= size_ || len == 0) return size_t{0};
    len = static_cast<size_t>(std::min<uint64_t>(len, size_ - offset));
    const bool sequential = read_any_ && offset >= next_offset_ && offset - next_offset_ <= S3ReadEnv::kSequentialGapMax;
    read_any_ = true;
    next_offset_ = offset + len;
    // What the read-ahead buffer holds of it (a read may straddle it and the window after it).
    const size_t held = env_->ReadAhead(key_, offset, dst, len);
    if (held == len) return len;
    offset += held;
    dst += held;
    const size_t rest = len - held;
    if (sequential && env_->ReadPrefetched(key_, offset, dst, rest, size_)) return len;
    const uint64_t fetch = sequential ? std::min<uint64_t>(std::max<uint64_t>(rest, S3ReadEnv::kReadAheadBytes), size_ - offset) : rest;
    Bytes got;
    {
      S3ReadEnv::Locked c = env_->Client();
      BR_ASSIGN_OR_RETURN(got, c.client->GetRange(key_, offset, static_cast<size_t>(fetch)));
    }
    // Objects are written whole, never in place: the size at open bounds every read, and less
    // than asked means the object changed or the gateway misbehaved.
    if (got.size() != fetch)
      return DataLoss(key_ + ": " + std::to_string(got.size()) + " bytes at offset " + std::to_string(offset) +
                      " where the object holds " + std::to_string(fetch));
    std::memcpy(dst, got.data(), rest);
    if (fetch > rest) env_->KeepReadAhead(key_, offset, std::move(got), size_);
    return len;
  }

 private:
  Status Refused() const { return PermissionDenied("s3 object " + key_ + " is opened read-only"); }
  S3ReadEnv* env_;
  std::string key_;
  uint64_t size_;  // at open: objects are written whole, never in place
  bool read_any_ = false;
  uint64_t next_offset_ = 0;  // where the last read ended
};

}  // namespace

Result<S3Config> MakeS3Config(const std::string& root_url, const S3Flags& flags) {
  BR_ASSIGN_OR_RETURN(S3Location loc, ParseS3Url(root_url));
  if (flags.endpoint.empty())
    return InvalidArgument("--store " + root_url + " needs --s3-endpoint https://HOST[:PORT] (the object store's address)");
  S3Config config;
  config.endpoint = flags.endpoint;
  config.region = flags.region;
  config.ca_file = flags.ca_file;
  config.location = loc;
  BR_ASSIGN_OR_RETURN(config.credentials, LoadS3Credentials(flags.credentials_file));
  return config;
}

Result<std::unique_ptr<S3ReadEnv>> S3ReadEnv::Open(const std::string& root_url, const S3Flags& flags) {
  BR_ASSIGN_OR_RETURN(S3Config config, MakeS3Config(root_url, flags));
  const S3Location& loc = config.location;
  BR_ASSIGN_OR_RETURN(auto client, S3Client::Open(config));
  std::string root = "s3://" + loc.bucket + (loc.prefix.empty() ? "" : "/" + loc.prefix.substr(0, loc.prefix.size() - 1));
  return std::unique_ptr<S3ReadEnv>(new S3ReadEnv(std::move(root), std::move(client), std::move(config)));
}

Result<std::string> S3ReadEnv::KeyOf(const std::string& path) const {
  if (path.size() <= root_.size() + 1 || !path.starts_with(root_) || path[root_.size()] != '/')
    return InvalidArgument(path + " is not inside the store " + root_);
  return path.substr(root_.size() + 1);
}

Status S3ReadEnv::ReadOnly(const std::string& what) const {
  return PermissionDenied(what + ": the store in " + root_ + " is read-only here (recovery never writes to a bucket)");
}

Result<std::unique_ptr<File>> S3ReadEnv::Open(const std::string& path, OpenMode mode) {
  if (mode != OpenMode::kRead) return ReadOnly("open " + path + " for writing");
  BR_ASSIGN_OR_RETURN(std::string key, KeyOf(path));
  uint64_t size = 0;
  {
    Locked c = Client();
    BR_ASSIGN_OR_RETURN(size, c.client->Size(key));
  }
  return std::unique_ptr<File>(new S3ReadFile(this, std::move(key), size));
}

size_t S3ReadEnv::ReadAhead(const std::string& key, uint64_t offset, uint8_t* dst, size_t len) {
  std::lock_guard<std::mutex> lock(ahead_mu_);
  if (ahead_key_ != key || offset < ahead_offset_ || offset - ahead_offset_ >= ahead_.size()) return 0;
  const size_t n = std::min<size_t>(len, ahead_.size() - static_cast<size_t>(offset - ahead_offset_));
  std::memcpy(dst, ahead_.data() + (offset - ahead_offset_), n);
  return n;
}

void S3ReadEnv::KeepReadAhead(const std::string& key, uint64_t offset, Bytes data, uint64_t object_bytes) {
  std::lock_guard<std::mutex> lock(ahead_mu_);
  ahead_key_ = key;
  ahead_offset_ = offset;
  ahead_ = std::move(data);
  StartPrefetchLocked(key, offset + ahead_.size(), object_bytes);
}

void S3ReadEnv::StartPrefetchLocked(const std::string& key, uint64_t offset, uint64_t object_bytes) {
  if (offset >= object_bytes) return;
  if (!prefetch_key_.empty() && prefetch_key_ == key && prefetch_offset_ == offset) return;  // on its way
  // One window in flight: a fetch still running is waited for (the reader has moved elsewhere).
  if (prefetch_.valid()) prefetch_.wait();
  if (!prefetch_client_) {
    auto client = S3Client::Open(config_);
    if (!client.ok()) return;  // no prefetch: the reader's own requests report the problem
    prefetch_client_ = std::move(client).value();
  }
  prefetch_key_ = key;
  prefetch_offset_ = offset;
  prefetch_bytes_ = static_cast<size_t>(std::min<uint64_t>(kReadAheadBytes, object_bytes - offset));
  S3Client* client = prefetch_client_.get();
  prefetch_ = std::async(std::launch::async, [client, key, offset, n = prefetch_bytes_]() { return client->GetRange(key, offset, n); })
                  .share();
}

bool S3ReadEnv::ReadPrefetched(const std::string& key, uint64_t offset, uint8_t* dst, size_t len, uint64_t object_bytes) {
  std::shared_future<Result<Bytes>> window;
  uint64_t start = 0;
  size_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(ahead_mu_);
    if (prefetch_key_.empty() || prefetch_key_ != key || offset < prefetch_offset_ ||
        offset - prefetch_offset_ > prefetch_bytes_ || len > prefetch_bytes_ - (offset - prefetch_offset_))
      return false;
    window = prefetch_;
    start = prefetch_offset_;
    bytes = prefetch_bytes_;
  }
  const Result<Bytes>& got = window.get();  // outside the lock: other files read meanwhile
  std::lock_guard<std::mutex> lock(ahead_mu_);
  if (prefetch_key_ == key && prefetch_offset_ == start) prefetch_key_.clear();  // taken
  if (!got.ok() || got->size() != bytes) return false;
  std::memcpy(dst, got->data() + (offset - start), len);
  ahead_key_ = key;
  ahead_offset_ = start;
  ahead_ = *got;  // a copy: the future keeps its own until the next window replaces it
  StartPrefetchLocked(key, start + bytes, object_bytes);
  return true;
}

Status S3ReadEnv::Probe() {
  Result<uint64_t> format = FileSize(root_ + "/FORMAT");
  if (format.ok()) return Status::Ok();
  if (format.status().code() == Code::kNotFound && format.status().message().find("NoSuchBucket") == std::string::npos)
    return NotFound("no blockrep store at " + root_ + " (no FORMAT object there: wrong bucket or prefix?)");
  return format.status();
}

Status S3ReadEnv::Rename(const std::string& from, const std::string&) { return ReadOnly("rename " + from); }
Status S3ReadEnv::Remove(const std::string& path) { return ReadOnly("remove " + path); }
Status S3ReadEnv::SyncDir(const std::string&) { return Status::Ok(); }  // nothing written, nothing to sync
Status S3ReadEnv::MakeDirs(const std::string& path, unsigned) { return ReadOnly("mkdir " + path); }

Result<std::vector<std::string>> S3ReadEnv::ListDir(const std::string& dir) {
  BR_ASSIGN_OR_RETURN(std::string key, KeyOf(dir));
  Locked c = Client();
  return c.client->ListChildren(key + "/", kFolderNamesMax);
}

bool S3ReadEnv::Exists(const std::string& path) {
  Result<uint64_t> size = FileSize(path);
  return size.ok();
}

Result<uint64_t> S3ReadEnv::FileSize(const std::string& path) {
  BR_ASSIGN_OR_RETURN(std::string key, KeyOf(path));
  Locked c = Client();
  return c.client->Size(key);
}

}  // namespace blockrep
