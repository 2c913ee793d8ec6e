// The staging store (docs/FORMAT.md). Per server:
//
//   servers/<id>/packs/<N>.pack   append-only ciphertext records, written by the staging
//   servers/<id>/index/<P>-<C>.idx immutable full index of point P (C: its checksum, which the
//                                  manifest holds): extent -> record location
//   servers/<id>/MANIFEST         the committed chain; replaced atomically
//
// Write order for a point: records (pack, fsync) -> index (tmp, fsync, rename) -> manifest (tmp,
// fsync, rename, directory fsync). A point exists exactly when the manifest lists it; files the
// manifest does not reach are leftovers of a crash and are removed at startup.
//
// Each point's index is complete, so materialising a point reads one index whatever the chain's
// length, and expiring a point deletes its index without touching any pack. Compaction copies
// the records that retained points still use out of mostly-dead packs, verbatim, then swaps in
// new index files with one manifest commit (store_compact.cc).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/env.h"
#include "blockrep/base/fs.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/base/status.h"

namespace blockrep::store {

inline constexpr size_t kPackHeaderSize = 16;
inline constexpr size_t kIndexEntrySize = 48;
inline constexpr size_t kMaxManifestBytes = 64u << 20;
inline constexpr size_t kMaxIndexBytes = 1u << 30;
inline constexpr uint32_t kPointConsistent = kSealFlagConsistent;
inline constexpr uint32_t kPointLabelled = kSealFlagLabelled;  // PointInfo::label is set
// Bounds every reader holds an index entry to before it touches a pack (a store is input: a damaged
// disk or a hostile staging host may have written it). A stored record is at most a header, 1 MiB
// of plaintext stored raw and a tag; packs roll at 64 MiB, so 1 TiB leaves room and keeps every
// sum of offset, record and fingerprints far from overflow.
inline constexpr uint64_t kRecordBytesMin = kRecordHeaderSize + kTagSize;
inline constexpr uint64_t kRecordBytesMax = kRecordHeaderSize + kMaxRecordPlainBytes + kTagSize;
inline constexpr uint64_t kPackBytesMax = 1ull << 40;
static_assert(kPackBytesMax + kRecordBytesMax + kRecordFingerprintBytesMax < (1ull << 63));
// Never a real fingerprint (those are odd) nor zero: matches nothing, so the block is resent.
inline constexpr uint64_t kFingerprintUnknown = 2;

struct IndexEntry {
  uint16_t volume = 0;
  uint32_t length = 0;  // bytes of the volume covered
  uint64_t offset = 0;  // byte offset in the volume
  uint32_t pack = 0;
  uint32_t record_bytes = 0;  // whole stored record: header + ciphertext + tag
  uint64_t pack_offset = 0;
  uint32_t offset_in_record = 0;  // where this extent starts inside the record's plaintext
  uint64_t checksum = 0;          // XXH3-64 of the stored record bytes
};

struct PointIndex {
  uint64_t point_id = 0;
  std::vector<uint64_t> volume_sizes;
  std::vector<IndexEntry> entries;  // sorted by (volume, offset); extents never overlap
  // The agent's seal of each volume (blockrep/crypto/seal.h), in volume order; empty when the point has
  // none (the staging stores what the agent sent; restore refuses an unsealed point).
  std::vector<VolumeSeal> seals;

  Bytes Encode() const;
  static Result<PointIndex> Decode(ByteSpan data);
  Status Validate() const;
};

struct PointInfo {
  uint64_t id = 0;
  uint64_t time_ns = 0;
  uint32_t flags = 0;
  uint32_t volume_count = 0;
  uint64_t bytes_added = 0;     // stored record bytes this point added
  uint64_t index_checksum = 0;  // XXH3-64 of the index file
  std::string label;            // the operator's (blockrep-agent point --label); empty: none
  bool consistent() const { return (flags & kPointConsistent) != 0; }
};

// Whether the agent's seal of a volume names this point as the manifest lists it: the same time,
// flags and label (a staging that relabels or re-flags a point in its manifest is caught here).
inline bool SealNamesPoint(const VolumeSeal& seal, const PointInfo& p) {
  return seal.point_id == p.id && seal.time_ns == p.time_ns && seal.flags == p.flags && seal.label == p.label;
}

struct Manifest {
  std::string server_id;
  uint64_t key_id = 0;  // data key the chain is sealed with; 0 before the first point
  std::vector<PointInfo> points;  // ascending id
  // In a bucket: the lease token of the staging frontend that wrote it last (0: never in a
  // bucket with leases). A frontend that takes a server's lease over rewrites the manifest with its
  // own token, so a conditional PUT by the frontend it replaced can no longer match.
  uint64_t writer_token = 0;

  // id, time, flags, volume count, bytes added, index checksum, label length (then the label)
  static constexpr size_t kPointBytes = 41;
  Bytes Encode() const;
  // Encode().size(), without encoding: magic, server-id, key id, count, points, checksum.
  size_t EncodedSize() const {
    size_t labels = 0;
    for (const PointInfo& p : points) labels += p.label.size();
    return 8 + 2 + server_id.size() + 8 + (writer_token != 0 ? 8 : 0) + 8 + points.size() * kPointBytes + labels + 8;
  }
  static Result<Manifest> Decode(ByteSpan data);
  uint64_t last_point_id() const { return points.empty() ? 0 : points.back().id; }
  // The newest consistent (frozen) point's time; 0 when there is none.
  uint64_t last_consistent_time_ns() const {
    for (auto it = points.rbegin(); it != points.rend(); ++it)
      if (it->consistent()) return it->time_ns;
    return 0;
  }
};

// One record received for a point, in arrival order.
struct NewExtent {
  IndexEntry entry;
  bool zero = false;  // a zero record: the range reads as zeros, nothing is indexed for it
};

// The full index of a point: `base` (the previous point's index; null for a full point) overlaid
// with `extents` in arrival order, a later extent winning where extents overlap. Older entries
// that are partly overwritten are split (offset_in_record moves into the record). Zero extents
// punch holes. Entries beyond `volume_sizes` (a volume removed or shrunk) are dropped. The result
// satisfies PointIndex::Validate().
PointIndex BuildPointIndex(uint64_t point_id, const std::vector<uint64_t>& volume_sizes,
                           const PointIndex* base, const std::vector<NewExtent>& extents);

// Opens (and with `create`, initialises) a store root directory.
Status InitStoreRoot(const std::string& root, bool create, Env* env = Env::Default());
Result<std::vector<std::string>> ListServers(const std::string& root, Env* env = Env::Default());

Bytes EncodePackHeader(uint32_t pack_id);
// File names inside a server's directory: index/<IndexFileName>, packs/<PackFileName>.
std::string IndexFileName(const PointInfo& point);
std::string PackFileName(uint32_t pack);
// One index entry in its kIndexEntrySize-byte stored form (docs/FORMAT.md, Point index).
void AppendIndexEntry(ByteWriter* w, const IndexEntry& e);
IndexEntry ReadIndexEntry(ByteReader* r);

class ServerStore;

// Where a store's commits must also land before they count: the staging's bucket
// (blockrep/objstore/bucket_mirror.h). Called on the thread that commits.
class ManifestPublisher {
 public:
  virtual ~ManifestPublisher() = default;
  // `next` is about to replace the chain; the index files it names and the packs they name are
  // durable on local disk. Publishes them, then `next` as the shared manifest. An error: nothing
  // is committed locally either (so nothing is acknowledged).
  virtual Status Publish(const ServerStore& store, const Manifest& next) = 0;
};

class ServerStore {
 public:
  // Every file operation goes through `env` (the real filesystem unless a test says otherwise).
  static Result<std::unique_ptr<ServerStore>> Open(const std::string& root, const std::string& server_id,
                                                   bool create, Env* env = Env::Default());
  Env* env() const { return env_; }
  // Every manifest commit from now on is published there first (null: local only).
  void set_publisher(std::unique_ptr<ManifestPublisher> publisher) { publisher_ = std::move(publisher); }
  bool published() const { return publisher_ != nullptr; }
  ManifestPublisher* publisher() const { return publisher_.get(); }
  std::unique_ptr<ManifestPublisher> TakePublisher() { return std::move(publisher_); }
  // The server's pack files now: their bytes and count (the quota's measure, the fleet view's).
  struct PackUsage {
    uint64_t bytes = 0, count = 0;
  };
  PackUsage CountPacks() const;

  const Manifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  std::string PackPath(uint32_t pack) const;
  // Named by point id and index checksum, so a rewritten index (compaction) never replaces the
  // file the committed manifest names: the manifest commit is what switches to it.
  std::string IndexPath(const PointInfo& point) const;
  // <server dir>/PENDING: an interrupted point's durable records (blockrep/store/pending.h).
  std::string PendingPath() const { return dir_ + "/PENDING"; }

  // Creates the next pack (header written and fsync'd, directory fsync'd), open for appending.
  Result<std::unique_ptr<File>> CreatePack(uint32_t* pack_id) const;

  // The next unused pack number: larger than every pack file present when first asked (one
  // directory listing per process), and never handed out twice, even for a pack since deleted.
  Result<uint32_t> NextPackId() const;
  Result<PointIndex> LoadIndex(const PointInfo& point) const;
  // Records referenced by `index` must already be durable. Writes the index, then the manifest.
  Status CommitPoint(const PointInfo& info, const PointIndex& index, uint64_t key_id);
  // Removes index files and temporaries that the manifest does not reference.
  Status RemoveOrphans();

  // Drops `ids` from the chain: one manifest commit, then their index files are deleted. Never
  // the newest point (the base of the agent's next one). No pack is read or written, so the cost
  // does not depend on the data; the records only they used become garbage for Compact.
  Status ExpirePoints(const std::vector<uint64_t>& ids);

  // Packs smaller than this are merged into one once there are kSmallPacksToMerge of them.
  static constexpr uint64_t kSmallPackBytes = 4ull << 20;
  static constexpr size_t kSmallPacksToMerge = 8;
  struct CompactionOptions {
    // A pack is rewritten once at least this share of its bytes is garbage (or all of it is).
    double garbage_share_min = 0.25;
    // Live bytes copied per call at most (the staging calls it between client I/O).
    uint64_t copy_bytes_max = 256ull << 20;
    // Packs still being appended or referenced from outside the manifest (a live session's open
    // point, PENDING): never touched.
    std::vector<uint32_t> pinned_packs;
    // Also copy small packs (under kSmallPackBytes) into one, garbage or not, once there are
    // kSmallPacksToMerge of them: short sessions leave a pack each, and a server at its pack
    // quota needs fewer files. Off by default: merged packs would hold garbage below
    // garbage_share_min for longer, and live data would be copied again for no space.
    bool merge_small_packs = false;
  };
  struct CompactionStats {
    uint32_t packs_rewritten = 0;  // live records copied out, then deleted
    uint32_t packs_deleted = 0;    // all garbage: deleted without copying
    uint64_t records_copied = 0;
    uint64_t bytes_copied = 0;
    uint64_t bytes_reclaimed = 0;  // pack bytes deleted minus bytes copied
    uint32_t indexes_rewritten = 0;
    bool more = false;  // stopped at copy_bytes_max with candidates left
  };
  // Copies the live records of mostly-garbage packs, verbatim (ciphertext, tag and
  // fingerprints), into one new pack; rewrites the indexes that name them; commits the manifest;
  // then deletes the old packs and indexes. A crash at any step leaves the old manifest (and
  // orphans that the next run removes) or the new one. A record whose checksum fails is never
  // copied: the compaction stops with kDataLoss and changes nothing.
  Result<CompactionStats> Compact(const CompactionOptions& options);

 private:
  Status CommitManifest(Manifest next);
  // kNoSpace when `next` would pass kMaxManifestBytes (a reader could not load it back).
  Status CheckManifestSize(const Manifest& next) const;
  Env* env_ = Env::Default();
  std::string dir_;
  Manifest manifest_;
  mutable uint32_t next_pack_id_ = 0;  // 0: not counted yet
  std::unique_ptr<ManifestPublisher> publisher_;
};

// Reads stored records by location, keeping pack files open.
class PackReader {
 public:
  explicit PackReader(std::string server_dir, Env* env = Env::Default()) : env_(env), dir_(std::move(server_dir)) {}
  // Opens every pack `index` names now (raising the open-file limit if it must). An open pack
  // stays readable after a compaction deletes it, so a reader that opened them all and then
  // finds the manifest still naming the same index reads a consistent point to the end. Returns
  // false, with nothing failed, when there are too many packs to hold open (then they open one
  // by one, as before).
  Result<bool> OpenAll(const PointIndex& index);
  // Reads the record of `e` and checks its checksum (kDataLoss on mismatch).
  Status Read(const IndexEntry& e, Bytes* out);
  // Bytes read at once by a caller that visits records in pack order (recovery/stretch_reader.h).
  static constexpr size_t kWindowBytes = 4u << 20;
  // Fills `out` (its size says how many) with the stored fingerprints of the 4 KiB blocks of
  // `volume` from `offset` in the point `index`: 0 where the point holds zeros,
  // kFingerprintUnknown where none was stored.
  Status ReadFingerprints(const PointIndex& index, uint16_t volume, uint64_t offset, std::vector<uint64_t>* out);

  // The open pack file, for reading the bytes stored after a record.
  Result<File*> Pack(uint32_t pack);
  // Its descriptor, for io_uring and kernel advice (the real Env only; kUnavailable elsewhere).
  Result<int> Fd(uint32_t pack);

 private:
  Env* env_;
  std::string dir_;
  std::map<uint32_t, std::unique_ptr<File>> files_;
};

}  // namespace blockrep::store
