// The bookkeeping of the three bitmaps the tracker keeps, one bit per block (docs/TRACKING.md):
//   dirty      set when a write completes (by the kernel program; Mark does the same), cleared
//              here only after its bits were copied — "mark on completion, clear before read";
//   inflight   blocks taken since the last acknowledged point (read again if that point is lost);
//   undurable  blocks taken whose latest read is not yet known durable on the staging (what a
//              resumed point must send again).
// The memory is handed in — the pinned BPF maps, mmapped, so it outlives the agent; plain arrays
// in tests and the simulation — so this class does no I/O and needs no root.
#pragma once

#include <cstdint>
#include <vector>

#include "blockrep/base/limits.h"

namespace blockrep {

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
};

class DirtyMap {
 public:
  // `total_words` 64-bit words in each bitmap. Undurable bits already set (by an agent before
  // this one) are remembered for CaughtUp.
  void Attach(uint64_t* dirty, uint64_t* inflight, uint64_t* undurable, uint64_t total_words);
  bool attached() const { return dirty_ != nullptr; }
  // Set bits of `dirty` (a racy count: the kernel sets bits meanwhile), for the backlog.
  uint64_t DirtyBlocks() const;

  // Blocks [first_block, last_block] of the volume whose bits start at word `word_base` were
  // written: what the kernel program does when a write completes.
  void Mark(uint64_t word_base, uint64_t first_block, uint64_t last_block);
  // Takes the dirty bits of one volume (words [word_base, word_base + words)): each word is
  // copied into inflight and undurable, then cleared if unchanged since (a write completing
  // meanwhile keeps its bit). Returns the runs to read as byte extents of a volume of
  // `volume_bytes`: the bits just taken, or with `with_inflight` every inflight bit.
  std::vector<Extent> Take(uint64_t word_base, uint64_t words, uint64_t volume_bytes, bool with_inflight);
  // The undurable blocks of one volume, taking nothing.
  std::vector<Extent> Undurable(uint64_t word_base, uint64_t words, uint64_t volume_bytes) const;
  // The blocks of one volume that may differ from the last acknowledged point: dirty or inflight,
  // taking nothing.
  std::vector<Extent> Changed(uint64_t word_base, uint64_t words, uint64_t volume_bytes) const;
  // A new point (or a new try at one, after the staging dropped the last) reads every inflight
  // block again: they are all undurable again, whatever an earlier catch-up said — it spoke of
  // records of a point the staging no longer holds. (Not for a resume: the staging kept those.)
  void InflightUndurable();
  // Every block taken so far was read, sent and acknowledged durable: undurable is empty.
  void CaughtUp();
  // The point is acknowledged: inflight and undurable are empty.
  void Synced();
  // A full read follows: every bitmap is empty.
  void Clear();

 private:
  uint64_t* dirty_ = nullptr;
  uint64_t* inflight_ = nullptr;
  uint64_t* undurable_ = nullptr;
  uint64_t total_words_ = 0;
  std::vector<uint64_t> undurable_touched_;  // words set in undurable since it was last emptied
};

}  // namespace blockrep
