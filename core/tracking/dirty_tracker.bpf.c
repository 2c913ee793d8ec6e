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
#include <bpf/bpf_tracing.h>

// Only the fields we use; CO-RE relocates them against the running kernel's BTF, so the object
// survives kernel upgrades that move fields around.
struct gendisk {
  int major;
  int first_minor;
} __attribute__((preserve_access_index));
struct request_queue {
  struct gendisk *disk;
} __attribute__((preserve_access_index));
struct request {
  struct request_queue *q;
  __u32 cmd_flags;
  unsigned int __data_len;
  __u64 __sector;
} __attribute__((preserve_access_index));
// Kernels before 5.17 keep the disk in the request itself.
struct request___rq_disk {
  struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

#define REQ_OP_MASK 0xff  // the low bits of cmd_flags; odd operations write (op_is_write)
#define MINORBITS 20
#define PENDING_WRITES_MAX 65536  // more than any disk's queue depth times its queues

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
  __u32 sending_stamp;  /* user space only: the point being sent (tracker_ebpf.cc) */
  __u32 devs[META_VOLUMES_MAX];
  __u64 start_sectors[META_VOLUMES_MAX];
  __u64 nr_sectors[META_VOLUMES_MAX];
  __u64 skips_handled;  // kernel-counted skips of our programs that a full read has covered
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct tracker_meta);
} meta SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 4);
  __type(key, __u32);
  __type(value, __u64);
} stats SEC(".maps");  // [0] requests marked, [1] requests seen, [2] completions never reported,
                       // [3] bytes of completed writes to protected volumes (the write rate)

// Writes issued to a protected disk and not yet seen completing, keyed by request address. The
// kernel does not report every completion (see TRACKING.md: about one write in 4000 completed
// unseen on a loop device under load), so the issue is recorded too: when a request address is
// issued again, its previous write has certainly completed, and if that completion went unseen
// its blocks are marked then. The agent marks entries that stay too long (an idle disk reuses
// no request) and, at the end of a point, all of them.
struct pending_write {
  __u64 word_base;    // the volume's first bitmap word
  __u64 first_block;  // 4 KiB blocks within the volume, inclusive
  __u64 last_block;
  __u64 issued_ns;    // bpf_ktime_get_ns(): CLOCK_MONOTONIC
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, PENDING_WRITES_MAX);
  __type(key, __u64);
  __type(value, struct pending_write);
} pending SEC(".maps");

static __always_inline struct volume_slot *slot_of(struct request *rq, __u32 *dev_out) {
  struct gendisk *disk;
  if (bpf_core_field_exists(rq->q->disk)) {
    disk = BPF_CORE_READ(rq, q, disk);
  } else {
    struct request___rq_disk *old = (void *)rq;
    disk = BPF_CORE_READ(old, rq_disk);
  }
  if (!disk) return 0;
  __u32 dev = ((__u32)BPF_CORE_READ(disk, major) << MINORBITS) | (__u32)BPF_CORE_READ(disk, first_minor);
  *dev_out = dev;
  return bpf_map_lookup_elem(&volumes, &dev);
}

// Reads, flushes and driver reads change no data; every other operation may (op_is_write).
static __always_inline int changes_data(struct request *rq) {
  __u32 op = BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK;
  return op & 1;
}

// The 4 KiB blocks of the volume that [sector, sector + nr) touches; false when none do.
static __always_inline int blocks_of(struct volume_slot *slot, __u64 sector, __u64 nr, __u64 *first,
                                     __u64 *last) {
  if (nr == 0) return 0;
  __u64 start = slot->start_sector, end = start + slot->nr_sectors;
  if (sector + nr <= start || sector >= end) return 0;
  if (sector < start) { nr -= start - sector; sector = start; }
  if (sector + nr > end) nr = end - sector;
  *first = (sector - start) >> BLOCK_SHIFT;
  *last = (sector - start + nr - 1) >> BLOCK_SHIFT;
  return 1;
}

static __always_inline void count(__u32 key) {
  __u64 *n = bpf_map_lookup_elem(&stats, &key);
  if (n) __sync_fetch_and_add(n, 1);
}

// Sets the dirty bits of blocks [first, last]; a range too long to mark bit by bit (or a bitmap
// word missing) counts as an overflow, after which the agent reads the whole volume.
static __always_inline void mark(struct volume_slot *slot, __u64 word_base, __u64 first, __u64 last) {
  __u64 w0 = first / 64, w1 = last / 64;
  if (w1 - w0 >= MARK_WORDS_MAX) {
    __sync_fetch_and_add(&slot->overflows, 1);
    return;
  }
  for (int i = 0; i < MARK_WORDS_MAX; i++) {
    __u64 w = w0 + i;
    if (w > w1) break;
    __u64 lo = w == w0 ? first % 64 : 0;
    __u64 hi = w == w1 ? last % 64 : 63;
    __u64 mask = (hi == 63 ? ~0ULL : ((1ULL << (hi + 1)) - 1)) & ~((1ULL << lo) - 1);
    __u32 idx = (__u32)(word_base + w);
    __u64 *word = bpf_map_lookup_elem(&dirty, &idx);
    if (!word) {
      __sync_fetch_and_add(&slot->overflows, 1);
      return;
    }
    __sync_fetch_and_or(word, mask);
  }
}

// BTF-typed raw tracepoints rather than classic ones: classic tracepoint programs run through
// perf and are skipped whenever another BPF program is active on the same CPU. Raw tracepoints
// are skipped only when this very program interrupts itself; the kernel counts those skips
// (recursion_misses) and the agent treats any as a tracking gap.
SEC("tp_btf/block_rq_issue")
int BPF_PROG(blockrep_rq_issue, struct request *rq) {
  __u32 dev;
  struct volume_slot *slot = slot_of(rq, &dev);
  if (!slot || !changes_data(rq)) return 0;
  __u64 key = (__u64)rq;
  struct pending_write *earlier = bpf_map_lookup_elem(&pending, &key);
  if (earlier) {
    // This request's previous write completed without the kernel telling us: mark it now.
    mark(slot, earlier->word_base, earlier->first_block, earlier->last_block);
    count(2);
  }
  struct pending_write p = {};
  __u64 bytes = BPF_CORE_READ(rq, __data_len);
  if (!blocks_of(slot, BPF_CORE_READ(rq, __sector), bytes >> 9, &p.first_block, &p.last_block)) {
    if (earlier) bpf_map_delete_elem(&pending, &key);
    return 0;
  }
  p.word_base = slot->word_base;
  p.issued_ns = bpf_ktime_get_ns();
  if (bpf_map_update_elem(&pending, &key, &p, BPF_ANY) != 0) __sync_fetch_and_add(&slot->overflows, 1);
  return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(blockrep_rq_complete, struct request *rq, int error, unsigned int nr_bytes) {
  __u32 dev;
  struct volume_slot *slot = slot_of(rq, &dev);
  if (!slot) return 0;
  count(1);
  if (!changes_data(rq)) return 0;
  __u64 first, last;
  if (blocks_of(slot, BPF_CORE_READ(rq, __sector), nr_bytes >> 9, &first, &last)) {
    mark(slot, slot->word_base, first, last);
    count(0);
    __u32 key = 3;
    __u64 *written = bpf_map_lookup_elem(&stats, &key);
    if (written) __sync_fetch_and_add(written, (__u64)nr_bytes);
  }
  // The trace comes before the request is updated: __data_len still holds what remained.
  if (nr_bytes >= BPF_CORE_READ(rq, __data_len)) {
    __u64 key = (__u64)rq;
    bpf_map_delete_elem(&pending, &key);
  }
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
