// SPDX-License-Identifier: GPL-2.0
// blockrep dirty-block tracker. On every completed block request that changes data (anything but
// a read), sets the 4 KiB-granularity bits of the touched range in a bitmap shared with the agent
// (an mmapped array). Marking on completion and letting the agent clear a word before it reads
// the blocks means a write that completes after the clear sets its bit again: nothing is lost.
// No ring buffer, so no event can be dropped.
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

// Only the fields we use; CO-RE relocates them against the running kernel's BTF, so the object
// survives kernel upgrades that move fields around.
struct trace_event_raw_block_rq_completion {
  __u32 dev;
  __u64 sector;
  unsigned int nr_sector;
  int error;
  char rwbs[10];
} __attribute__((preserve_access_index));

#define BLOCK_SHIFT 3          // 4 KiB blocks of 512-byte sectors
#define MARK_WORDS_MAX 64      // one request marks at most 64 words (16 MiB) before overflowing

struct volume_slot {
  __u64 word_base;     // first bitmap word of this volume
  __u64 start_sector;  // where the volume starts on the disk (partitions)
  __u64 nr_sectors;
  __u64 overflows;     // requests too large to mark bit by bit: the agent rescans the volume
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 256);
  __type(key, __u32);  // kernel dev_t of the whole disk
  __type(value, struct volume_slot);
} volumes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, 1);  // sized by the loader
  __type(key, __u32);
  __type(value, __u64);
} dirty SEC(".maps");

// Bits the agent has taken from `dirty` but the staging has not yet acknowledged. Only the agent
// touches it; it is pinned with the rest, so an agent killed mid-point loses no bits.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, 1);  // sized by the loader, like `dirty`
  __type(key, __u32);
  __type(value, __u64);
} inflight SEC(".maps");

// Bits taken whose latest read the staging has not yet made durable. Set with `inflight`; cleared
// when the agent has caught up (every taken block's latest read acknowledged). After an agent
// crash, resuming an interrupted point reads `dirty` | `undurable`.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, 1);  // sized by the loader
  __type(key, __u32);
  __type(value, __u64);
} undurable SEC(".maps");

#define META_VOLUMES_MAX 32
// What the pinned bitmap describes; the agent checks it before trusting a pin it finds.
struct tracker_meta {
  __u64 magic;
  __u64 synced_point;  // every change before this point's read is in it; later ones are in the bitmap
  __u32 volume_count;
  __u32 reserved;
  __u32 devs[META_VOLUMES_MAX];
  __u64 start_sectors[META_VOLUMES_MAX];
  __u64 nr_sectors[META_VOLUMES_MAX];
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct tracker_meta);
} meta SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 2);
  __type(key, __u32);
  __type(value, __u64);
} stats SEC(".maps");  // [0] requests marked, [1] requests seen on protected disks

SEC("tracepoint/block/block_rq_complete")
int blockrep_rq_complete(struct trace_event_raw_block_rq_completion *ctx) {
  __u32 dev = BPF_CORE_READ(ctx, dev);
  struct volume_slot *slot = bpf_map_lookup_elem(&volumes, &dev);
  if (!slot) return 0;
  __u32 key = 1;
  __u64 *seen = bpf_map_lookup_elem(&stats, &key);
  if (seen) __sync_fetch_and_add(seen, 1);

  char rwbs[10];
  BPF_CORE_READ_STR_INTO(&rwbs, ctx, rwbs);
  char op = rwbs[0] == 'F' ? rwbs[1] : rwbs[0];  // skip a pre-flush marker
  if (op == 'R' || op == '\0') return 0;
  if (op == 'F' && rwbs[0] == 'F') return 0;     // a pure flush changes no data

  __u64 sector = BPF_CORE_READ(ctx, sector);
  __u64 nr = BPF_CORE_READ(ctx, nr_sector);
  if (nr == 0) return 0;
  __u64 start = slot->start_sector, end = start + slot->nr_sectors;
  if (sector + nr <= start || sector >= end) return 0;
  if (sector < start) { nr -= start - sector; sector = start; }
  if (sector + nr > end) nr = end - sector;

  __u64 first = (sector - start) >> BLOCK_SHIFT;
  __u64 last = (sector - start + nr - 1) >> BLOCK_SHIFT;
  __u64 w0 = first / 64, w1 = last / 64;
  if (w1 - w0 >= MARK_WORDS_MAX) {
    __sync_fetch_and_add(&slot->overflows, 1);
    return 0;
  }
  for (int i = 0; i < MARK_WORDS_MAX; i++) {
    __u64 w = w0 + i;
    if (w > w1) break;
    __u64 lo = w == w0 ? first % 64 : 0;
    __u64 hi = w == w1 ? last % 64 : 63;
    __u64 mask = (hi == 63 ? ~0ULL : ((1ULL << (hi + 1)) - 1)) & ~((1ULL << lo) - 1);
    __u32 idx = (__u32)(slot->word_base + w);
    __u64 *word = bpf_map_lookup_elem(&dirty, &idx);
    if (!word) {
      __sync_fetch_and_add(&slot->overflows, 1);
      return 0;
    }
    __sync_fetch_and_or(word, mask);
  }
  key = 0;
  __u64 *marked = bpf_map_lookup_elem(&stats, &key);
  if (marked) __sync_fetch_and_add(marked, 1);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
