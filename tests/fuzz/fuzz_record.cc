// Fuzzes what a restore does with a stored record: header parsing, authentication and
// decompression with the data key (selector 0), and the decompressors alone with an announced
// plaintext length (selector 1: codec, u32 length, compressed bytes), since a mutated record
// rarely authenticates. Output must never exceed what the header announces (at most 1 MiB), and
// decoding into the caller's memory (what a restore does) must agree with decoding into a vector.
#include <cstring>

#include "blockrep/crypto/codec.h"
#include "blockrep/crypto/record.h"
#include "fuzz_util.h"

using namespace blockrep;

namespace {

const char* const kServer = "fuzz1";

DataKey FixedKey() {
  DataKey key;
  for (size_t i = 0; i < key.bytes.size(); ++i) key.bytes[i] = static_cast<uint8_t>(i * 7 + 1);
  key.key_id = ComputeKeyId(key.bytes);
  return key;
}

void OpenRecord(ByteSpan record) {
  static RecordOpener opener(FixedKey(), kServer);
  RecordHeader h;
  Bytes plain;
  Status s = opener.Open(record, &h, &plain);
  if (s.ok()) {
    FUZZ_CHECK(plain.size() == h.plain_len && h.plain_len <= kMaxRecordPlainBytes);
    FUZZ_CHECK(record.size() == h.total_size());
  }
  static Bytes room(kMaxRecordPlainBytes);
  RecordHeader h_into;
  Status s_into = opener.OpenInto(record, &h_into, room);
  FUZZ_CHECK(s_into.code() == s.code());
  if (s_into.ok()) FUZZ_CHECK(std::memcmp(room.data(), plain.data(), plain.size()) == 0);
  auto header = RecordHeader::Decode(record.first(std::min(record.size(), kRecordHeaderSize)));
  if (header.ok()) FUZZ_CHECK(header->plain_len <= kMaxRecordPlainBytes && header->stored_len <= header->plain_len);
}

void DecompressAlone(ByteSpan p) {
  if (p.size() < 5) return;
  Codec codec = static_cast<Codec>(p[0] % 3);
  uint32_t plain_len = 0;
  std::memcpy(&plain_len, p.data() + 1, 4);
  plain_len %= kMaxRecordPlainBytes + 1;
  Bytes out;
  Status s = Decompress(codec, p.subspan(5), plain_len, &out);
  FUZZ_CHECK(out.size() <= plain_len || !s.ok());
  if (s.ok()) FUZZ_CHECK(out.size() == plain_len);
  Bytes room(plain_len);
  Status s_into = DecompressInto(codec, p.subspan(5), room);
  FUZZ_CHECK(s_into.code() == s.code());
  if (s_into.ok()) FUZZ_CHECK(room == out);
}

Bytes DecompressSeed(Codec codec, const Bytes& plain) {
  Bytes compressed;
  CodecChoice choice{codec, 3};
  FUZZ_CHECK(Compress(choice, plain, &compressed) == codec);
  Bytes seed{static_cast<uint8_t>(codec)};
  uint32_t len = static_cast<uint32_t>(plain.size());
  seed.insert(seed.end(), reinterpret_cast<uint8_t*>(&len), reinterpret_cast<uint8_t*>(&len) + 4);
  seed.insert(seed.end(), compressed.begin(), compressed.end());
  return seed;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto sealer = RecordSealer::Create(FixedKey(), kServer);
  FUZZ_CHECK(sealer.ok());
  Bytes text;
  for (int i = 0; text.size() < 16384; ++i) {
    std::string line = "line " + std::to_string(i) + " of a text file that compresses well\n";
    text.insert(text.end(), line.begin(), line.end());
  }
  text.resize(16384);
  Bytes out;
  for (Codec codec : {Codec::kNone, Codec::kLz4, Codec::kZstd}) {
    out.clear();
    FUZZ_CHECK((*sealer)->Seal(CodecChoice{codec, 3}, 1, 65536, 9, text, &out).ok());
    fuzz::WriteSeed(std::string("record-") + CodecName(codec), fuzz::WithSelector(0, out));
  }
  out.clear();
  FUZZ_CHECK((*sealer)->Seal(CodecChoice{}, 0, 0, 9, Bytes(4096, 0), &out).ok());
  fuzz::WriteSeed("record-zero", fuzz::WithSelector(0, out));
  fuzz::WriteSeed("lz4", fuzz::WithSelector(1, DecompressSeed(Codec::kLz4, text)));
  fuzz::WriteSeed("zstd", fuzz::WithSelector(1, DecompressSeed(Codec::kZstd, text)));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto [selector, p] = fuzz::Select(data, size);
  if (selector % 2 == 0) OpenRecord(p);
  else DecompressAlone(p);
  return 0;
}
