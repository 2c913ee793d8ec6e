#include "blockrep/base/bytes.h"

#include "blockrep/base/limits.h"

#include <cstring>
#include <new>

namespace blockrep {

void ByteWriter::U16(uint16_t v) {
  for (int i = 0; i < 2; ++i) out_->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void ByteWriter::U32(uint32_t v) {
  for (int i = 0; i < 4; ++i) out_->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void ByteWriter::U64(uint64_t v) {
  for (int i = 0; i < 8; ++i) out_->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void ByteWriter::Raw(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  out_->insert(out_->end(), p, p + n);
}
void ByteWriter::String(std::string_view s) {
  U16(static_cast<uint16_t>(s.size()));
  Raw(s.data(), s.size());
}

bool ByteReader::Need(size_t n) {
  if (!ok_ || data_.size() - pos_ < n) {
    ok_ = false;
    return false;
  }
  return true;
}
uint8_t ByteReader::U8() {
  if (!Need(1)) return 0;
  return data_[pos_++];
}
uint16_t ByteReader::U16() {
  if (!Need(2)) return 0;
  uint16_t v = static_cast<uint16_t>(data_[pos_] | (data_[pos_ + 1] << 8));
  pos_ += 2;
  return v;
}
uint32_t ByteReader::U32() {
  if (!Need(4)) return 0;
  uint32_t v = LoadU32(&data_[pos_]);
  pos_ += 4;
  return v;
}
uint64_t ByteReader::U64() {
  if (!Need(8)) return 0;
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | data_[pos_ + i];
  pos_ += 8;
  return v;
}
void ByteReader::Raw(void* dst, size_t n) {
  if (!Need(n)) {
    std::memset(dst, 0, n);
    return;
  }
  std::memcpy(dst, &data_[pos_], n);
  pos_ += n;
}
ByteSpan ByteReader::Span(size_t n) {
  if (!Need(n)) return {};
  ByteSpan s = data_.subspan(pos_, n);
  pos_ += n;
  return s;
}
std::string ByteReader::String(size_t max_len) {
  uint16_t n = U16();
  if (n > max_len) {
    ok_ = false;
    return {};
  }
  ByteSpan s = Span(n);
  return std::string(s.begin(), s.end());
}

AlignedBuffer::AlignedBuffer(size_t size) : size_(size) {
  void* p = nullptr;
  if (posix_memalign(&p, kBlockBytes, size == 0 ? kBlockBytes : size) != 0) throw std::bad_alloc();
  data_ = static_cast<uint8_t*>(p);
}
AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

bool IsAllZero(ByteSpan data) {
  // Compare word-wise; the tail byte-wise.
  size_t i = 0;
  const uint8_t* p = data.data();
  for (; i + 8 <= data.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  for (; i < data.size(); ++i)
    if (p[i] != 0) return false;
  return true;
}

std::string HexEncode(ByteSpan data) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  s.reserve(data.size() * 2);
  for (uint8_t b : data) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 15]);
  }
  return s;
}

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool HexDecode(std::string_view hex, Bytes* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return true;
}

}  // namespace blockrep
