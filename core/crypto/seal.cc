#include "blockrep/crypto/seal.h"

#include "blockrep/base/check.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "blockrep/net/tls.h"  // TakeOpenSslError

namespace blockrep {
namespace {

constexpr char kMacLabel[] = "blockrep seal v2";

}  // namespace

namespace {

// ceil(a / b) without overflow: volume sizes come from the wire and may be anything.
uint64_t CeilDiv(uint64_t a, uint64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

}  // namespace

bool SealLink::KnowsMac() const {
  return std::any_of(mac.begin(), mac.end(), [](uint8_t b) { return b != 0; });
}

Status CheckPointLabel(const std::string& label) {
  const char* rule = " (a label is 1..64 characters of A-Z a-z 0-9 . _ -, starting with a letter)";
  if (label.empty() || label.size() > kPointLabelBytesMax)
    return InvalidArgument("point label of " + std::to_string(label.size()) + " characters" + rule);
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!letter(label[0])) return InvalidArgument("point label '" + label + "' does not start with a letter" + rule);
  for (char c : label)
    if (!letter(c) && !(c >= '0' && c <= '9') && c != '.' && c != '_' && c != '-')
      return InvalidArgument("point label '" + label + "' holds a character outside the allowed set" + rule);
  if (label == "latest") return InvalidArgument("'latest' names the newest point; it cannot be a label" );
  return Status::Ok();
}

uint64_t SealRegionBytes(uint64_t volume_bytes) {
  uint64_t region = kSealRegionBytesMin;
  // Terminates: at region = 2^63 any u64 needs at most 2 regions.
  while (CeilDiv(volume_bytes, region) > kSealRegionsMax) region <<= 1;
  return region;
}

uint32_t SealRegionCount(uint64_t volume_bytes) {
  return static_cast<uint32_t>(CeilDiv(volume_bytes, SealRegionBytes(volume_bytes)));
}

void VolumeSeal::AppendEncoded(ByteWriter* w) const {
  w->U64(point_id);
  w->U64(time_ns);
  w->U32(flags);
  if (flags & kSealFlagLabelled) {
    BR_CHECK(!label.empty() && label.size() <= kPointLabelBytesMax);
    w->U8(static_cast<uint8_t>(label.size()));
    w->Raw(label.data(), label.size());
  }
  w->U16(volume);
  w->U16(volume_count);
  w->U64(volume_bytes);
  w->U64(region_bytes);
  w->U64(prev.point_id);
  w->Raw(prev.mac.data(), prev.mac.size());
  w->U32(static_cast<uint32_t>(regions.size()));
  for (size_t i = 0; i < regions.size(); ++i) {
    w->U64(regions[i].lo);
    w->U64(regions[i].hi);
    w->U64(i < region_points.size() ? region_points[i] : 0);
  }
  w->Raw(mac.data(), mac.size());
}

Bytes VolumeSeal::Encode() const {
  Bytes out;
  out.reserve(SealEncodedSize(regions.size(), label.size()));
  ByteWriter w(&out);
  AppendEncoded(&w);
  return out;
}

Result<VolumeSeal> VolumeSeal::Read(ByteReader* r) {
  VolumeSeal s;
  s.point_id = r->U64();
  s.time_ns = r->U64();
  s.flags = r->U32();
  if (!r->ok()) return DataLoss("seal is truncated");
  if (s.flags & ~kSealFlagsKnown) return DataLoss("seal has unknown flags " + std::to_string(s.flags));
  if (s.flags & kSealFlagLabelled) {
    uint8_t n = r->U8();
    if (!r->ok() || n > r->remaining()) return DataLoss("seal is truncated");
    s.label.assign(n, '\0');
    r->Raw(s.label.data(), n);
    if (Status st = CheckPointLabel(s.label); !st.ok()) return DataLoss("seal carries a bad label: " + st.message());
  }
  s.volume = r->U16();
  s.volume_count = r->U16();
  s.volume_bytes = r->U64();
  s.region_bytes = r->U64();
  s.prev.point_id = r->U64();
  r->Raw(s.prev.mac.data(), s.prev.mac.size());
  uint32_t n = r->U32();
  if (!r->ok()) return DataLoss("seal is truncated");
  if (s.prev.point_id >= s.point_id)
    return DataLoss("seal of point " + std::to_string(s.point_id) + " says it follows point " +
                    std::to_string(s.prev.point_id));
  if (s.volume_count == 0 || s.volume >= s.volume_count)
    return DataLoss("seal names volume " + std::to_string(s.volume) + " of " + std::to_string(s.volume_count));
  if (s.region_bytes != SealRegionBytes(s.volume_bytes) || n != SealRegionCount(s.volume_bytes))
    return DataLoss("seal of volume " + std::to_string(s.volume) + " has " + std::to_string(n) + " regions of " +
                    std::to_string(s.region_bytes) + " bytes, which does not fit its " +
                    std::to_string(s.volume_bytes) + " bytes");
  if (r->remaining() < size_t{n} * 24 + kSealMacBytes) return DataLoss("seal is truncated");
  s.regions.resize(n);
  s.region_points.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    s.regions[i].lo = r->U64();
    s.regions[i].hi = r->U64();
    s.region_points[i] = r->U64();
    if (s.region_points[i] > s.point_id) return DataLoss("seal names a region written in a later point");
  }
  r->Raw(s.mac.data(), s.mac.size());
  if (!r->ok()) return DataLoss("seal is truncated");
  return s;
}

Result<VolumeSeal> VolumeSeal::Decode(ByteSpan p) {
  ByteReader r(p);
  BR_ASSIGN_OR_RETURN(VolumeSeal s, Read(&r));
  if (r.remaining() != 0) return DataLoss("seal has trailing bytes");
  return s;
}

Result<std::unique_ptr<SealKeys>> SealKeys::Create(const DataKey& key, std::string server_id) {
  std::unique_ptr<SealKeys> k(new SealKeys());
  k->server_id_ = std::move(server_id);
  ByteSpan ikm(key.bytes.data(), key.bytes.size());
  std::array<uint8_t, 32> region_key{};
  BR_RETURN_IF_ERROR(HkdfSha256(ikm, ByteSpan(), "blockrep seal region key v1", region_key.data(), region_key.size()));
  BR_RETURN_IF_ERROR(HkdfSha256(ikm, ByteSpan(), "blockrep seal mac key v1", k->mac_key_.data(), k->mac_key_.size()));
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr) return Internal("EVP_CIPHER_CTX_new failed");
  k->ctx_ = ctx;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_ecb(), nullptr, region_key.data(), nullptr) != 1)
    return Internal("AES-256-ECB init failed");
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  OPENSSL_cleanse(region_key.data(), region_key.size());
  return k;
}

SealKeys::~SealKeys() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(ctx_));
  OPENSSL_cleanse(mac_key_.data(), mac_key_.size());
}

std::array<uint8_t, kSealMacBytes> SealKeys::Mac(const VolumeSeal& seal) const {
  Bytes msg;
  ByteWriter w(&msg);
  w.Raw(kMacLabel, sizeof(kMacLabel) - 1);
  w.String(server_id_);
  VolumeSeal unsigned_seal = seal;
  unsigned_seal.mac.fill(0);
  unsigned_seal.AppendEncoded(&w);
  msg.resize(msg.size() - kSealMacBytes);  // the MAC field is not part of what it covers
  std::array<uint8_t, kSealMacBytes> out{};
  unsigned len = 0;
  // Fails only in a broken crypto library; an unchecked all-zero MAC would seal nothing.
  bool ok = HMAC(EVP_sha256(), mac_key_.data(), static_cast<int>(mac_key_.size()), msg.data(), msg.size(), out.data(),
                 &len) != nullptr;
  BR_CHECK_MSG(ok && len == kSealMacBytes, "HMAC-SHA256 of a seal: " + TakeOpenSslError());
  return out;
}

bool SealKeys::Authentic(const VolumeSeal& seal) const {
  std::array<uint8_t, kSealMacBytes> want = Mac(seal);
  return CRYPTO_memcmp(want.data(), seal.mac.data(), want.size()) == 0;
}

void SealKeys::Encrypt(uint8_t* terms, size_t count) const {
  int out_len = 0;
  // ECB on whole 16-byte blocks with padding off cannot fail short of a broken library.
  bool ok = EVP_EncryptUpdate(static_cast<EVP_CIPHER_CTX*>(ctx_), terms, &out_len, terms, static_cast<int>(count * 16)) == 1;
  BR_CHECK_MSG(ok && out_len == static_cast<int>(count * 16), "AES-256-ECB of seal terms: " + TakeOpenSslError());
}

RegionDigests::RegionDigests(const SealKeys* keys, uint64_t volume_bytes)
    : keys_(keys), volume_bytes_(volume_bytes), region_bytes_(SealRegionBytes(volume_bytes)),
      regions_(SealRegionCount(volume_bytes)) {}

void RegionDigests::Note(uint64_t block, uint64_t fp, bool remove) {
  if (fp == 0) return;
  uint64_t region = block * kFingerprintBlockBytes / region_bytes_;
  // A block past the end would be a bookkeeping bug in the caller: a seal must never hide it.
  BR_CHECK(region < regions_.size());
  size_t at = batch_.size();
  batch_.resize(at + 16);
  for (int i = 0; i < 8; ++i) {
    batch_[at + i] = static_cast<uint8_t>(block >> (8 * i));
    batch_[at + 8 + i] = static_cast<uint8_t>(fp >> (8 * i));
  }
  pending_.push_back(region | (remove ? (1ull << 63) : 0));
  if (pending_.size() >= kBatchMax) Flush();
}

void RegionDigests::Flush() {
  if (pending_.empty()) return;
  keys_->Encrypt(batch_.data(), pending_.size());
  for (size_t i = 0; i < pending_.size(); ++i) {
    Digest128 term;
    const uint8_t* p = batch_.data() + i * 16;
    for (int b = 7; b >= 0; --b) {
      term.lo = (term.lo << 8) | p[b];
      term.hi = (term.hi << 8) | p[8 + b];
    }
    uint64_t region = pending_[i] & ~(1ull << 63);
    if (pending_[i] >> 63)
      regions_[region].Sub(term);
    else
      regions_[region].Add(term);
  }
  batch_.clear();
  pending_.clear();
}

void NoteData(const BlockFingerprinter& fingerprinter, uint64_t offset, ByteSpan data, RegionDigests* digests) {
  for (size_t pos = 0; pos < data.size(); pos += kFingerprintBlockBytes) {
    size_t len = std::min(kFingerprintBlockBytes, data.size() - pos);
    digests->Note((offset + pos) / kFingerprintBlockBytes, fingerprinter.Block(offset + pos, data.subspan(pos, len)));
  }
}

Digest128 DigestOfRegion(const SealKeys& keys, const BlockFingerprinter& fingerprinter, uint64_t offset,
                         ByteSpan data) {
  constexpr size_t kBatch = 256;
  uint8_t batch[kBatch * 16];
  size_t n = 0;
  Digest128 sum;
  auto flush = [&] {
    keys.Encrypt(batch, n);
    for (size_t i = 0; i < n; ++i) {
      Digest128 term;
      const uint8_t* p = batch + i * 16;
      for (int b = 7; b >= 0; --b) {
        term.lo = (term.lo << 8) | p[b];
        term.hi = (term.hi << 8) | p[8 + b];
      }
      sum.Add(term);
    }
    n = 0;
  };
  for (size_t pos = 0; pos < data.size(); pos += kFingerprintBlockBytes) {
    size_t len = std::min(kFingerprintBlockBytes, data.size() - pos);
    uint64_t fp = fingerprinter.Block(offset + pos, data.subspan(pos, len));
    if (fp == 0) continue;
    uint64_t block = (offset + pos) / kFingerprintBlockBytes;
    for (int i = 0; i < 8; ++i) {
      batch[n * 16 + i] = static_cast<uint8_t>(block >> (8 * i));
      batch[n * 16 + 8 + i] = static_cast<uint8_t>(fp >> (8 * i));
    }
    if (++n == kBatch) flush();
  }
  if (n) flush();
  return sum;
}

VolumeSeal MakeSeal(const SealKeys& keys, uint64_t point_id, uint64_t time_ns, uint32_t flags, uint16_t volume,
                    uint16_t volume_count, RegionDigests* digests, std::vector<uint64_t> region_points,
                    const SealLink& prev, const std::string& label) {
  BR_CHECK(((flags & kSealFlagLabelled) != 0) == !label.empty());
  digests->Flush();
  VolumeSeal s;
  s.point_id = point_id;
  s.time_ns = time_ns;
  s.flags = flags;
  s.label = label;
  s.volume = volume;
  s.volume_count = volume_count;
  s.volume_bytes = digests->volume_bytes();
  s.region_bytes = digests->region_bytes();
  s.regions = digests->regions();
  region_points.resize(s.regions.size(), 0);
  s.region_points = std::move(region_points);
  s.prev = prev;
  s.mac = keys.Mac(s);
  return s;
}

std::vector<uint32_t> MismatchedRegions(const VolumeSeal& seal, const std::vector<Digest128>& computed) {
  std::vector<uint32_t> out;
  size_t n = std::max(seal.regions.size(), computed.size());
  for (size_t i = 0; i < n; ++i)
    if (i >= seal.regions.size() || i >= computed.size() || !(seal.regions[i] == computed[i]))
      out.push_back(static_cast<uint32_t>(i));
  return out;
}

}  // namespace blockrep
