// Shared by the libFuzzer targets. Each target writes a few valid inputs as seeds into the
// directory named by BLOCKREP_FUZZ_SEEDS (when set) before fuzzing starts, so the fuzzer begins
// from real frames, indexes and records rather than from nothing; tests/fuzz/run.sh uses it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "blockrep/base/bytes.h"

namespace blockrep::fuzz {

// An invariant the code under test must keep for every input: abort (a finding) if it does not.
#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

inline void WriteSeed(const std::string& name, const Bytes& data) {
  const char* dir = std::getenv("BLOCKREP_FUZZ_SEEDS");
  if (dir == nullptr) return;
  std::string path = std::string(dir) + "/seed-" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    std::abort();
  }
  FUZZ_CHECK(std::fwrite(data.data(), 1, data.size(), f) == data.size());
  FUZZ_CHECK(std::fclose(f) == 0);
}

// Input with its first byte taken off as a selector.
struct Selected {
  uint8_t selector;
  ByteSpan rest;
};
inline Selected Select(const uint8_t* data, size_t size) {
  if (size == 0) return {0, ByteSpan()};
  return {data[0], ByteSpan(data + 1, size - 1)};
}
inline Bytes WithSelector(uint8_t selector, const Bytes& payload) {
  Bytes b{selector};
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

}  // namespace blockrep::fuzz
