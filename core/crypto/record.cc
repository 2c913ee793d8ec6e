#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "blockrep/base/check.h"
#include "blockrep/crypto/record.h"
#include "blockrep/net/tls.h"

namespace blockrep {
namespace {

constexpr uint8_t kRecordVersion = 1;
constexpr char kAadLabel[] = "blockrep-record-v1";

void BuildNonce(uint64_t counter, uint8_t nonce[12]) {
  for (int i = 0; i < 8; ++i) nonce[i] = static_cast<uint8_t>(counter >> (8 * i));
  std::memset(nonce + 8, 0, 4);
}

Status DeriveSessionKey(const DataKey& key, const SessionId& session, std::array<uint8_t, 32>* out) {
  return HkdfSha256(ByteSpan(key.bytes.data(), key.bytes.size()), ByteSpan(session.data(), session.size()),
                    "blockrep record key v1", out->data(), out->size());
}

void BuildAad(const std::string& server_id, const uint8_t header[kRecordHeaderSize], Bytes* aad) {
  aad->clear();
  ByteWriter w(aad);
  w.Raw(kAadLabel, sizeof(kAadLabel) - 1);
  w.String(server_id);
  w.Raw(header, kRecordHeaderSize);
}

}  // namespace

Status HkdfSha256(ByteSpan key, ByteSpan salt, const std::string& info, uint8_t* out, size_t out_len) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) return Internal("OpenSSL has no HKDF");
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (kctx == nullptr) return Internal("EVP_KDF_CTX_new failed");
  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  size_t n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(key.data()), key.size());
  // RFC 5869: no salt means a salt of zeros, which is what OpenSSL does when the parameter is absent.
  if (!salt.empty())
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(salt.data()), salt.size());
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size());
  params[n] = OSSL_PARAM_construct_end();
  int rc = EVP_KDF_derive(kctx, out, out_len, params);
  EVP_KDF_CTX_free(kctx);
  if (rc != 1) return Internal("HKDF derivation failed");
  return Status::Ok();
}

uint64_t ComputeKeyId(const std::array<uint8_t, kDataKeyBytes>& bytes) {
  static const char kLabel[] = "blockrep key id v1";
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned mac_len = 0;
  // HMAC-SHA256 over a few bytes fails only in a broken crypto library: no key id is better
  // than a wrong one.
  bool ok = HMAC(EVP_sha256(), bytes.data(), static_cast<int>(bytes.size()), reinterpret_cast<const uint8_t*>(kLabel),
                 sizeof(kLabel) - 1, mac, &mac_len) != nullptr;
  BR_CHECK_MSG(ok && mac_len >= 8, "HMAC-SHA256 of a key id: " + TakeOpenSslError());
  uint64_t id = 0;
  for (int i = 0; i < 8; ++i) id = (id << 8) | mac[i];
  return id;
}

std::string KeyIdHex(uint64_t key_id) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(key_id));
  return hex;
}

void RecordHeader::Encode(uint8_t out[kRecordHeaderSize]) const {
  std::memset(out, 0, kRecordHeaderSize);
  Bytes tmp;
  tmp.reserve(kRecordHeaderSize);
  ByteWriter w(&tmp);
  w.U32(kRecordMagic);
  w.U8(kRecordVersion);
  w.U8(static_cast<uint8_t>(codec));
  w.U8(flags);
  w.U8(0);
  w.U16(volume);
  w.U16(0);
  w.U32(plain_len);
  w.U32(stored_len);
  w.U32(0);
  w.U64(offset);
  w.U64(point_id);
  w.Raw(session.data(), session.size());
  w.U64(counter);
  std::memcpy(out, tmp.data(), kRecordHeaderSize);
}

Result<RecordHeader> RecordHeader::Decode(ByteSpan in) {
  if (in.size() < kRecordHeaderSize) return DataLoss("record shorter than its header");
  ByteReader r(in.first(kRecordHeaderSize));
  RecordHeader h;
  if (r.U32() != kRecordMagic) return DataLoss("record has a bad magic number");
  if (r.U8() != kRecordVersion) return DataLoss("record has an unknown version");
  uint8_t codec = r.U8();
  if (codec > static_cast<uint8_t>(Codec::kZstd)) return DataLoss("record names an unknown codec");
  h.codec = static_cast<Codec>(codec);
  h.flags = r.U8();
  r.U8();
  h.volume = r.U16();
  r.U16();
  h.plain_len = r.U32();
  h.stored_len = r.U32();
  r.U32();
  h.offset = r.U64();
  h.point_id = r.U64();
  r.Raw(h.session.data(), h.session.size());
  h.counter = r.U64();
  if (h.plain_len == 0 || h.plain_len > kMaxRecordPlainBytes)
    return DataLoss("record plaintext length " + std::to_string(h.plain_len) + " out of bounds");
  if (h.flags & ~(kRecordIncompressible | kRecordZero)) return DataLoss("record has unknown flags");
  if (h.zero()) {
    if (h.stored_len != 0 || h.codec != Codec::kNone)
      return DataLoss("zero record with a payload or a codec");
    return h;
  }
  // Compressed data is never larger than the plaintext (we store raw instead).
  if (h.stored_len == 0 || h.stored_len > h.plain_len)
    return DataLoss("record stored length " + std::to_string(h.stored_len) + " out of bounds");
  if (h.codec == Codec::kNone && h.stored_len != h.plain_len)
    return DataLoss("raw record with stored length different from plaintext length");
  return h;
}

Result<std::unique_ptr<RecordSealer>> RecordSealer::Create(const DataKey& key,
                                                           std::string server_id) {
  std::unique_ptr<RecordSealer> s(new RecordSealer());
  s->server_id_ = std::move(server_id);
  if (RAND_bytes(s->session_.data(), static_cast<int>(s->session_.size())) != 1)
    return Internal("RAND_bytes failed: no entropy for a session id");
  BR_RETURN_IF_ERROR(DeriveSessionKey(key, s->session_, &s->session_key_));
  s->ctx_ = EVP_CIPHER_CTX_new();
  if (s->ctx_ == nullptr) return Internal("EVP_CIPHER_CTX_new failed");
  return s;
}

RecordSealer::~RecordSealer() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(ctx_));
  OPENSSL_cleanse(session_key_.data(), session_key_.size());
}

Result<RecordHeader> RecordSealer::Seal(const CodecChoice& codec, uint16_t volume, uint64_t offset,
                                        uint64_t point_id, ByteSpan plain, Bytes* out) {
  if (plain.empty() || plain.size() > kMaxRecordPlainBytes)
    return InvalidArgument("record plaintext size " + std::to_string(plain.size()) + " out of bounds");
  const size_t base = out->size();
  out->resize(base + MaxSealedBytes(plain.size()));
  Result<RecordHeader> h = SealInto(codec, volume, offset, point_id, plain, IsAllZero(plain), out->data() + base);
  out->resize(h.ok() ? base + h->total_size() : base);
  return h;
}

Result<RecordHeader> RecordSealer::SealInto(const CodecChoice& codec, uint16_t volume, uint64_t offset,
                                            uint64_t point_id, ByteSpan plain, bool zero, uint8_t* dst) {
  if (plain.empty() || plain.size() > kMaxRecordPlainBytes)
    return InvalidArgument("record plaintext size " + std::to_string(plain.size()) + " out of bounds");
  RecordHeader h;
  ByteSpan stored;
  if (zero) {
    h.codec = Codec::kNone;
    h.flags = kRecordZero;
  } else {
    h.codec = compressor_.Compress(codec, plain, &stored);
    if (h.codec == Codec::kNone && codec.codec != Codec::kNone) h.flags |= kRecordIncompressible;
  }
  BR_CHECK(stored.size() <= plain.size());
  h.volume = volume;
  h.plain_len = static_cast<uint32_t>(plain.size());
  h.stored_len = static_cast<uint32_t>(stored.size());
  h.offset = offset;
  h.point_id = point_id;
  h.session = session_;
  h.counter = next_counter_++;  // the nonce: strictly increasing within this session

  uint8_t* hdr = dst;
  h.Encode(hdr);
  BuildAad(server_id_, hdr, &aad_);
  uint8_t nonce[12];
  BuildNonce(h.counter, nonce);

  auto* ctx = static_cast<EVP_CIPHER_CTX*>(ctx_);
  int len = 0;  // stays 0 when there is no ciphertext (zero records)
  uint8_t* ct = hdr + kRecordHeaderSize;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, session_key_.data(), nonce) != 1 ||
      EVP_EncryptUpdate(ctx, nullptr, &len, aad_.data(), static_cast<int>(aad_.size())) != 1 ||
      (!stored.empty() &&
       EVP_EncryptUpdate(ctx, ct, &len, stored.data(), static_cast<int>(stored.size())) != 1) ||
      EVP_EncryptFinal_ex(ctx, ct + h.stored_len, &len) != 1 ||  // GCM: writes nothing
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagSize, ct + h.stored_len) != 1) {
    return Internal("AES-256-GCM encryption failed");
  }
  return h;
}

RecordOpener::RecordOpener(const DataKey& key, std::string server_id)
    : RecordOpener(std::vector<DataKey>{key}, std::move(server_id)) {}

RecordOpener::RecordOpener(std::vector<DataKey> keys, std::string server_id)
    : keys_(std::move(keys)), server_id_(std::move(server_id)), ctx_(EVP_CIPHER_CTX_new()) {}

RecordOpener::~RecordOpener() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(ctx_));
  for (DataKey& k : keys_) OPENSSL_cleanse(k.bytes.data(), k.bytes.size());
  for (auto& [id, k] : session_keys_) OPENSSL_cleanse(k.key.data(), k.key.size());
}

Status RecordOpener::Open(ByteSpan record, RecordHeader* header, Bytes* plain, size_t* key_index) {
  BR_RETURN_IF_ERROR(Authenticate(record, header, key_index));
  plain->resize(header->plain_len);
  return Plaintext(*header, *plain);
}

Status RecordOpener::OpenInto(ByteSpan record, RecordHeader* header, std::span<uint8_t> room, size_t* key_index) {
  BR_RETURN_IF_ERROR(Authenticate(record, header, key_index));
  if (header->plain_len > room.size())
    return DataLoss("record of " + std::to_string(header->plain_len) + " plaintext bytes, more than the " +
                    std::to_string(room.size()) + " a record may hold");
  return Plaintext(*header, room.first(header->plain_len));
}

Status RecordOpener::Plaintext(const RecordHeader& h, std::span<uint8_t> out) {
  if (h.zero()) {
    std::fill(out.begin(), out.end(), uint8_t{0});
    return Status::Ok();
  }
  return DecompressInto(h.codec, scratch_, out);
}

Status RecordOpener::Authenticate(ByteSpan record, RecordHeader* header, size_t* key_index) {
  if (ctx_ == nullptr) return Internal("EVP_CIPHER_CTX_new failed");
  BR_ASSIGN_OR_RETURN(*header, RecordHeader::Decode(record));
  const RecordHeader& h = *header;
  if (record.size() != h.total_size())
    return DataLoss("record length " + std::to_string(record.size()) + " does not match header (" +
                    std::to_string(h.total_size()) + ")");
  auto it = session_keys_.find(h.session);
  if (it != session_keys_.end()) {
    BR_RETURN_IF_ERROR(Decrypt(it->second.key, record, h));
    if (key_index != nullptr) *key_index = it->second.data_key;
  } else {
    // A session not seen yet: the newest key first (most records are under it), then older ones.
    Status last = Unauthenticated("record failed authentication (no data key given)");
    for (size_t i = keys_.size(); i-- > 0;) {
      std::array<uint8_t, 32> k{};
      BR_RETURN_IF_ERROR(DeriveSessionKey(keys_[i], h.session, &k));
      last = Decrypt(k, record, h);
      if (last.ok()) {
        session_keys_.emplace(h.session, SessionKey{k, i});
        if (key_index != nullptr) *key_index = i;
        break;
      }
      OPENSSL_cleanse(k.data(), k.size());
      if (last.code() != Code::kUnauthenticated) return last;
    }
    BR_RETURN_IF_ERROR(last);
  }
  return Status::Ok();
}

Status RecordOpener::Decrypt(const std::array<uint8_t, 32>& session_key, ByteSpan record, const RecordHeader& h) {
  Bytes aad;
  BuildAad(server_id_, record.data(), &aad);
  uint8_t nonce[12];
  BuildNonce(h.counter, nonce);
  auto* ctx = static_cast<EVP_CIPHER_CTX*>(ctx_);
  scratch_.resize(h.stored_len);
  const uint8_t* ct = record.data() + kRecordHeaderSize;
  int len = 0;
  if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, session_key.data(), nonce) != 1 ||
      EVP_DecryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
      (h.stored_len > 0 &&
       EVP_DecryptUpdate(ctx, scratch_.data(), &len, ct, static_cast<int>(h.stored_len)) != 1) ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagSize,
                          const_cast<uint8_t*>(ct + h.stored_len)) != 1)
    return Internal("AES-256-GCM setup failed");
  // GCM's final step writes no bytes; the pointer must still be valid when there is no ciphertext
  // (a zero record: scratch_ is empty and its data() may be null).
  uint8_t final_out[kTagSize];
  if (EVP_DecryptFinal_ex(ctx, final_out, &len) != 1)
    return Unauthenticated("record failed authentication (wrong data key, or the record was altered)");
  return Status::Ok();
}

}  // namespace blockrep
