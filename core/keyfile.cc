#include "blockrep/keyfile.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "blockrep/fs.h"

namespace blockrep {
namespace {
constexpr char kKeyHeader[] = "blockrep-data-key-v1";
}

Result<DataKey> LoadDataKey(const std::string& path) {
  struct stat st{};
  if (stat(path.c_str(), &st) != 0) {
    Status st = ErrnoStatus("key file " + path, errno);
    return Status(st.code(), st.message() + " (give the data key with --key; blockrep-keygen creates one)");
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument("key file " + path + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
    return PermissionDenied("key file " + path + " has mode " + mode +
                            " and may be readable by others; run: chmod 600 " + path);
  }
  BR_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, 4096));
  std::string_view view(text);
  std::string_view header(kKeyHeader);
  if (!view.starts_with(header) || view.size() < header.size() + 1 + 64 || view[header.size()] != '\n')
    return InvalidArgument("key file " + path +
                           " is not a blockrep data key (expected the format written by "
                           "blockrep-keygen)");
  Bytes raw;
  if (!HexDecode(view.substr(header.size() + 1, 64), &raw) || raw.size() != kDataKeyBytes)
    return InvalidArgument("key file " + path + " holds a malformed key (expected 64 hex digits)");
  DataKey key;
  std::copy(raw.begin(), raw.end(), key.bytes.begin());
  OPENSSL_cleanse(raw.data(), raw.size());
  OPENSSL_cleanse(text.data(), text.size());
  key.key_id = ComputeKeyId(key.bytes);
  return key;
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
