// Fingerprint tables from and to plain vectors, for tests that state them as values.
#pragma once

#include <cstdint>
#include <vector>

#include "fingerprint_table.h"

namespace blockrep::agent {

inline std::vector<FingerprintTable> TablesOf(const std::vector<std::vector<uint64_t>>& values) {
  std::vector<FingerprintTable> out;
  for (const auto& v : values) out.push_back(FingerprintTable::Of(v));
  return out;
}

inline std::vector<std::vector<uint64_t>> VectorsOf(const std::vector<FingerprintTable>& tables) {
  std::vector<std::vector<uint64_t>> out;
  for (const auto& t : tables) out.push_back(t.ToVector());
  return out;
}

}  // namespace blockrep::agent
