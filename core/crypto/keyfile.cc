#include "blockrep/crypto/keyfile.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "blockrep/base/fs.h"
#include "blockrep/net/wire.h"

namespace blockrep {
namespace {
constexpr char kKeyHeader[] = "blockrep-data-key-v1";
// HELLO names the current key and every retired one of a full key file.
static_assert(wire::kMaxRetiredKeys + 1 == kDataKeysPerFileMax);
}

Result<std::vector<DataKey>> LoadDataKeys(const std::string& path) {
  if (!PathExists(path)) {
    Status st = ErrnoStatus("key file " + path, errno);
    return Status(st.code(), st.message() + " (give the data key with --key; blockrep-keygen creates one)");
  }
  BR_RETURN_IF_ERROR(CheckOwnerOnlyFile(path, "key file"));
  BR_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, 32 + kDataKeysPerFileMax * 66));
  std::string_view view(text);
  std::string_view header(kKeyHeader);
  if (!view.starts_with(header) || view.size() < header.size() + 1 + 64 || view[header.size()] != '\n')
    return InvalidArgument("key file " + path +
                           " is not a blockrep data key (expected the format written by "
                           "blockrep-keygen)");
  std::vector<DataKey> keys;
  view.remove_prefix(header.size() + 1);
  while (!view.empty()) {
    size_t nl = view.find('\n');
    std::string_view line = view.substr(0, nl);
    view.remove_prefix(nl == std::string_view::npos ? view.size() : nl + 1);
    if (line.empty()) continue;
    Bytes raw;
    if (line.size() != 64 || !HexDecode(line, &raw) || raw.size() != kDataKeyBytes)
      return InvalidArgument("key file " + path + " holds a malformed key (expected lines of 64 hex digits)");
    if (keys.size() == kDataKeysPerFileMax)
      return InvalidArgument("key file " + path + " holds more than " + std::to_string(kDataKeysPerFileMax) + " keys");
    DataKey key;
    std::copy(raw.begin(), raw.end(), key.bytes.begin());
    OPENSSL_cleanse(raw.data(), raw.size());
    key.key_id = ComputeKeyId(key.bytes);
    keys.push_back(key);
  }
  OPENSSL_cleanse(text.data(), text.size());
  if (keys.empty()) return InvalidArgument("key file " + path + " holds no key");
  return keys;
}

Result<DataKey> LoadDataKey(const std::string& path) {
  BR_ASSIGN_OR_RETURN(std::vector<DataKey> keys, LoadDataKeys(path));
  DataKey current = keys.back();
  for (DataKey& k : keys) OPENSSL_cleanse(k.bytes.data(), k.bytes.size());
  return current;
}

Result<DataKey> RotateDataKey(const std::string& path) {
  BR_ASSIGN_OR_RETURN(std::vector<DataKey> keys, LoadDataKeys(path));
  if (keys.size() == kDataKeysPerFileMax)
    return InvalidArgument("key file " + path + " already holds " + std::to_string(kDataKeysPerFileMax) + " keys");
  DataKey fresh;
  if (RAND_bytes(fresh.bytes.data(), static_cast<int>(fresh.bytes.size())) != 1)
    return Internal("RAND_bytes failed: no entropy for a data key");
  fresh.key_id = ComputeKeyId(fresh.bytes);
  keys.push_back(fresh);
  std::string text = std::string(kKeyHeader) + "\n";
  for (const DataKey& k : keys) text += HexEncode(k.bytes) + "\n";
  for (DataKey& k : keys) OPENSSL_cleanse(k.bytes.data(), k.bytes.size());
  // The same directory, mode 0600 from creation, fsync'd and renamed over the old file.
  std::string tmp = path + ".tmp";
  unlink(tmp.c_str());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("create " + tmp, errno);
  Status s = WriteAll(fd, ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  if (s.ok() && fsync(fd) != 0) s = ErrnoStatus("fsync " + tmp, errno);
  close(fd);
  OPENSSL_cleanse(text.data(), text.size());
  if (s.ok() && rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoStatus("rename " + tmp, errno);
  if (!s.ok()) {
    unlink(tmp.c_str());
    return s;
  }
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  BR_RETURN_IF_ERROR(FsyncDir(dir.empty() ? "/" : dir));
  return fresh;
}

Status WriteNewDataKey(const std::string& path) {
  std::array<uint8_t, kDataKeyBytes> key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1)
    return Internal("RAND_bytes failed: no entropy for a data key");
  std::string text = std::string(kKeyHeader) + "\n" + HexEncode(key) + "\n";
  OPENSSL_cleanse(key.data(), key.size());
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    return ErrnoStatus("cannot create key file " + path + " (refusing to overwrite a key)", err);
  }
  Status s = WriteAll(fd, ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  if (s.ok() && fsync(fd) != 0) s = ErrnoStatus("fsync " + path, errno);
  close(fd);
  OPENSSL_cleanse(text.data(), text.size());
  return s;
}

}  // namespace blockrep
