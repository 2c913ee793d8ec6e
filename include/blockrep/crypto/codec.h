// Record compression. A record whose compressed form is not smaller than its plaintext is stored
// raw: the codec never expands data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"

namespace blockrep {

enum class Codec : uint8_t { kNone = 0, kLz4 = 1, kZstd = 2 };

struct CodecChoice {
  Codec codec = Codec::kLz4;
  int level = 3;  // zstd only
};

// Parses "lz4", "none", "zstd" or "zstd:N" (N in 1..19).
Result<CodecChoice> ParseCodec(std::string_view text);
const char* CodecName(Codec codec);

// Compresses `in` into `out` (resized). Returns the codec actually used: kNone when compression
// did not make the data smaller, in which case `out` holds a copy of `in`.
Codec Compress(const CodecChoice& choice, ByteSpan in, Bytes* out);

// The same, for a thread that compresses record after record: it keeps its lz4 state (reset
// cheaply between records, instead of clearing 16 KiB each time), its zstd context and its output
// buffer (never zero-filled), and leaves raw data where it is. Each output is an independent
// block, as Compress's, decompressed by Decompress. One per thread.
class Compressor {
 public:
  Compressor();
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;

  // Returns the codec used; `*out` is the compressed bytes (valid until the next call), or `in`
  // itself when the codec is kNone.
  Codec Compress(const CodecChoice& choice, ByteSpan in, ByteSpan* out);

 private:
  void* lz4_ = nullptr;   // LZ4_stream_t
  void* zstd_ = nullptr;  // ZSTD_CCtx, made on first use
  std::unique_ptr<uint8_t[]> buf_;
  size_t buf_bytes_ = 0;
};

// Decompresses exactly `plain_len` bytes; anything else is kDataLoss. Output never exceeds
// plain_len, so a hostile record cannot make us allocate more than its header announces.
Status Decompress(Codec codec, ByteSpan in, uint32_t plain_len, Bytes* out);
// The same into memory the caller owns: exactly out.size() bytes.
Status DecompressInto(Codec codec, ByteSpan in, std::span<uint8_t> out);

}  // namespace blockrep
