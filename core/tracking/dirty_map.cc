#include "blockrep/tracking/dirty_map.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "blockrep/base/check.h"

namespace blockrep {
namespace {

// Bit runs of `bits` (one per block, word `w` of a volume) appended to `runs` as byte extents.
void AppendRuns(uint64_t bits, uint64_t w, bool* in_run, uint64_t* run_start, std::vector<Extent>* runs) {
  for (int b = 0; b < 64; ++b) {
    bool set = (bits >> b) & 1;
    uint64_t block = w * 64 + static_cast<uint64_t>(b);
    if (set && !*in_run) {
      *run_start = block;
      *in_run = true;
    } else if (!set && *in_run) {
      runs->push_back({*run_start * kBlockBytes, (block - *run_start) * kBlockBytes});
      *in_run = false;
    }
  }
}

// The last block of a volume whose size is not a multiple of the block is shorter.
void TrimToVolume(uint64_t volume_bytes, std::vector<Extent>* runs) {
  while (!runs->empty() && runs->back().offset >= volume_bytes) runs->pop_back();
  if (!runs->empty() && runs->back().offset + runs->back().length > volume_bytes)
    runs->back().length = volume_bytes - runs->back().offset;
}

// The runs of set bits of one volume's `words` words (word(w) gives word w, in order) as byte
// extents of a volume of `volume_bytes`.
template <class WordFn>
std::vector<Extent> RunsOf(uint64_t words, uint64_t volume_bytes, WordFn word) {
  std::vector<Extent> runs;
  uint64_t run_start = 0;
  bool in_run = false;
  for (uint64_t w = 0; w < words; ++w) AppendRuns(word(w), w, &in_run, &run_start, &runs);
  if (in_run) runs.push_back({run_start * kBlockBytes, (words * 64 - run_start) * kBlockBytes});
  TrimToVolume(volume_bytes, &runs);
  return runs;
}

}  // namespace

uint64_t DirtyMap::DirtyBlocks() const {
  uint64_t n = 0;
  for (uint64_t w = 0; w < total_words_; ++w)
    n += static_cast<uint64_t>(std::popcount(__atomic_load_n(&dirty_[w], __ATOMIC_RELAXED)));
  return n;
}

void DirtyMap::Attach(uint64_t* dirty, uint64_t* inflight, uint64_t* undurable, uint64_t total_words) {
  BR_CHECK(dirty && inflight && undurable);
  dirty_ = dirty;
  inflight_ = inflight;
  undurable_ = undurable;
  total_words_ = total_words;
  undurable_touched_.clear();
  for (uint64_t w = 0; w < total_words_; ++w)
    if (undurable_[w] != 0) undurable_touched_.push_back(w);  // from before a restart
}

void DirtyMap::Mark(uint64_t word_base, uint64_t first_block, uint64_t last_block) {
  BR_CHECK(word_base + last_block / 64 < total_words_ && first_block <= last_block);
  for (uint64_t b = first_block; b <= last_block; ++b)
    __atomic_fetch_or(&dirty_[word_base + b / 64], uint64_t{1} << (b % 64), __ATOMIC_ACQ_REL);
}

std::vector<Extent> DirtyMap::Take(uint64_t word_base, uint64_t words, uint64_t volume_bytes, bool with_inflight) {
  BR_CHECK(word_base + words <= total_words_);
  return RunsOf(words, volume_bytes, [&](uint64_t w) {
    const uint64_t i = word_base + w;
    uint64_t seen = __atomic_load_n(&dirty_[i], __ATOMIC_ACQUIRE);
    // Copy to inflight (and undurable) first, then clear only what was copied: a bit is never in
    // neither map.
    while (seen != 0) {
      inflight_[i] |= seen;
      if ((undurable_[i] | seen) != undurable_[i]) {
        if (undurable_[i] == 0) undurable_touched_.push_back(i);
        undurable_[i] |= seen;
      }
      if (__atomic_compare_exchange_n(&dirty_[i], &seen, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) break;
    }
    return with_inflight ? inflight_[i] : seen;
  });
}

std::vector<Extent> DirtyMap::Undurable(uint64_t word_base, uint64_t words, uint64_t volume_bytes) const {
  BR_CHECK(word_base + words <= total_words_);
  return RunsOf(words, volume_bytes, [&](uint64_t w) { return undurable_[word_base + w]; });
}

std::vector<Extent> DirtyMap::Changed(uint64_t word_base, uint64_t words, uint64_t volume_bytes) const {
  BR_CHECK(word_base + words <= total_words_);
  return RunsOf(words, volume_bytes, [&](uint64_t w) {
    return __atomic_load_n(&dirty_[word_base + w], __ATOMIC_ACQUIRE) | inflight_[word_base + w];
  });
}

void DirtyMap::InflightUndurable() {
  for (uint64_t i = 0; i < total_words_; ++i) {
    if ((undurable_[i] | inflight_[i]) == undurable_[i]) continue;
    if (undurable_[i] == 0) undurable_touched_.push_back(i);
    undurable_[i] |= inflight_[i];
  }
}

void DirtyMap::CaughtUp() {
  for (uint64_t w : undurable_touched_) undurable_[w] = 0;
  undurable_touched_.clear();
}

void DirtyMap::Synced() {
  std::memset(inflight_, 0, total_words_ * 8);
  std::memset(undurable_, 0, total_words_ * 8);  // every record of the point is durable
  undurable_touched_.clear();
}

void DirtyMap::Clear() {
  for (uint64_t i = 0; i < total_words_; ++i) __atomic_store_n(&dirty_[i], 0, __ATOMIC_RELEASE);
  Synced();
}

}  // namespace blockrep
