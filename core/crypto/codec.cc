#include "blockrep/crypto/codec.h"

#include <lz4.h>
#include <zstd.h>

#include <charconv>

#include "blockrep/base/check.h"

namespace blockrep {

Result<CodecChoice> ParseCodec(std::string_view text) {
  CodecChoice c;
  if (text == "lz4") {
    c.codec = Codec::kLz4;
  } else if (text == "none") {
    c.codec = Codec::kNone;
  } else if (text == "zstd" || text.starts_with("zstd:")) {
    c.codec = Codec::kZstd;
    if (text.size() > 4) {
      std::string_view num = text.substr(5);
      int level = 0;
      auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), level);
      if (ec != std::errc() || ptr != num.data() + num.size() || level < 1 || level > 19)
        return InvalidArgument("--compress " + std::string(text) +
                               ": zstd level must be a whole number from 1 to 19 (e.g. zstd:3)");
      c.level = level;
    }
  } else {
    return InvalidArgument("--compress " + std::string(text) +
                           ": unknown codec; use lz4, zstd, zstd:LEVEL or none");
  }
  return c;
}

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kNone: return "none";
    case Codec::kLz4: return "lz4";
    case Codec::kZstd: return "zstd";
  }
  return "?";
}

Codec Compress(const CodecChoice& choice, ByteSpan in, Bytes* out) {
  Compressor c;
  ByteSpan produced;
  Codec used = c.Compress(choice, in, &produced);
  out->assign(produced.begin(), produced.end());
  return used;
}

Compressor::Compressor() : lz4_(LZ4_createStream()) { BR_CHECK(lz4_ != nullptr); }

Compressor::~Compressor() {
  LZ4_freeStream(static_cast<LZ4_stream_t*>(lz4_));
  ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(zstd_));
}

Codec Compressor::Compress(const CodecChoice& choice, ByteSpan in, ByteSpan* out) {
  size_t produced = 0;
  if (choice.codec == Codec::kLz4 || choice.codec == Codec::kZstd) {
    const size_t bound = choice.codec == Codec::kLz4 ? static_cast<size_t>(LZ4_compressBound(static_cast<int>(in.size())))
                                                      : ZSTD_compressBound(in.size());
    if (bound > buf_bytes_) {
      buf_.reset(new uint8_t[bound]);  // default-initialised: the codec writes what is read back
      buf_bytes_ = bound;
    }
    if (choice.codec == Codec::kLz4) {
      // A fast reset and no dictionary: the block is independent, as LZ4_compress_default makes it.
      auto* state = static_cast<LZ4_stream_t*>(lz4_);
      LZ4_resetStream_fast(state);
      int n = LZ4_compress_fast_continue(state, reinterpret_cast<const char*>(in.data()),
                                         reinterpret_cast<char*>(buf_.get()), static_cast<int>(in.size()),
                                         static_cast<int>(bound), 1);
      produced = n > 0 ? static_cast<size_t>(n) : 0;
    } else {
      if (zstd_ == nullptr) zstd_ = ZSTD_createCCtx();
      BR_CHECK(zstd_ != nullptr);
      size_t n = ZSTD_compressCCtx(static_cast<ZSTD_CCtx*>(zstd_), buf_.get(), bound, in.data(), in.size(), choice.level);
      produced = ZSTD_isError(n) ? 0 : n;
    }
  }
  if (produced == 0 || produced >= in.size()) {
    *out = in;
    return Codec::kNone;
  }
  *out = ByteSpan(buf_.get(), produced);
  return choice.codec;
}

Status Decompress(Codec codec, ByteSpan in, uint32_t plain_len, Bytes* out) {
  out->resize(plain_len);
  return DecompressInto(codec, in, *out);
}

Status DecompressInto(Codec codec, ByteSpan in, std::span<uint8_t> out) {
  const size_t plain_len = out.size();
  switch (codec) {
    case Codec::kNone:
      if (in.size() != plain_len) return DataLoss("raw record length does not match its header");
      std::copy(in.begin(), in.end(), out.begin());
      return Status::Ok();
    case Codec::kLz4: {
      int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(out.data()),
                                  static_cast<int>(in.size()), static_cast<int>(plain_len));
      if (n < 0 || static_cast<size_t>(n) != plain_len) return DataLoss("lz4 record does not decompress to its announced length");
      return Status::Ok();
    }
    case Codec::kZstd: {
      size_t n = ZSTD_decompress(out.data(), plain_len, in.data(), in.size());
      if (ZSTD_isError(n) || n != plain_len) return DataLoss("zstd record does not decompress to its announced length");
      return Status::Ok();
    }
  }
  return DataLoss("unknown codec " + std::to_string(static_cast<int>(codec)));
}

}  // namespace blockrep
