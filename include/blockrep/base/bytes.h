// Little-endian encoding helpers. ByteReader never reads past its span: every Get* checks the
// remaining length first and reports a kProtocol/kDataLoss-style failure through ok().
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace blockrep {

using Bytes = std::vector<uint8_t>;
using ByteSpan = std::span<const uint8_t>;

// An allocator whose resize() leaves new elements uninitialised instead of zero-filling them.
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
// A byte buffer for the data path: growing it does not clear what the next call overwrites
// anyway (the TLS output, the bytes received), which cost a memset of every byte sent or received.
using RawBytes = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

class ByteWriter {
 public:
  explicit ByteWriter(Bytes* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(v); }
  void U16(uint16_t v);
  void U32(uint32_t v);
  void U64(uint64_t v);
  void Raw(ByteSpan data) { out_->insert(out_->end(), data.begin(), data.end()); }
  void Raw(const void* data, size_t n);
  // u16 length + bytes; callers bound the string to kMaxString first.
  void String(std::string_view s);

 private:
  Bytes* out_;
};

class ByteReader {
 public:
  explicit ByteReader(ByteSpan data) : data_(data) {}
  uint8_t U8();
  uint16_t U16();
  uint32_t U32();
  uint64_t U64();
  // Copies n bytes; on underflow returns zeros and marks the reader failed.
  void Raw(void* dst, size_t n);
  ByteSpan Span(size_t n);
  std::string String(size_t max_len);

  bool ok() const { return ok_; }
  size_t remaining() const { return ok_ ? data_.size() - pos_ : 0; }
  size_t position() const { return pos_; }

 private:
  bool Need(size_t n);
  ByteSpan data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

inline void StoreU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A heap buffer aligned for O_DIRECT (4 KiB). Move-only.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size);
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

bool IsAllZero(ByteSpan data);
std::string HexEncode(ByteSpan data);
// Returns false on odd length or a non-hex character.
bool HexDecode(std::string_view hex, Bytes* out);

}  // namespace blockrep
