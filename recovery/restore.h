// Materialising recovery points: every record is read, checksum-checked, authenticated with the
// data key and decompressed before a single byte of it reaches the target.
#pragma once

#include <map>
#include <string>

#include "blockrep/base/status.h"
#include "blockrep/store/store.h"
#include "keys.h"
#include "source.h"
#include "verify.h"

namespace blockrep::recovery {

// "latest", a point id, an ISO-8601 UTC time (newest point at or before it), or a label (the newest
// point carrying it).
Result<store::PointInfo> ResolvePoint(const store::Manifest& manifest, const std::string& spec);

// --expect-point N: the operator knows point N was acknowledged (the agent's status.json, its
// log); a chain whose newest point is older was rolled back or replaced (data loss, one line).
// Point ids are never reused, so a head at or past N is the chain N belongs to, or its rescan.
Status CheckChainHead(const store::Manifest& manifest, uint64_t expect_point);

// The chain's current key (the manifest's) must be among the key file's (keys.h), or the file is
// another server's: one line naming the fix.
Status CheckKeyFile(const store::Manifest& manifest, const KeyChain& keys, const std::string& key_file,
                    const std::string& server_id);

// Loads the point's index and opens every pack it names, so that a compaction running on the
// staging meanwhile (which rewrites indexes and deletes packs) cannot pull a pack from under the
// reader: an open file outlives its unlink. If the manifest no longer names the index loaded by
// the time the packs are open, the compaction won that race: load the new index and go again.
// `point` is updated to the manifest's current entry. On an object store (`env` an S3ReadEnv) the
// packs are objects that nothing rewrites in place.
Result<store::PointIndex> LoadAndPin(const std::string& store_dir, const std::string& server_id, store::PointInfo& point,
                                     store::PackReader* packs, bool allow_damaged, Env* env = Env::Default());

struct RestoreRequest {
  std::string store_dir;   // one of store_dir and staging
  std::string staging;     // HOST:PORT: read over the network (the agent's certificate)
  TlsFiles tls;            // with staging; empty fields default beside key_file
  std::string server_id;
  std::string key_file;
  std::string point_spec = "latest";
  std::string output_dir;                   // writes vol-<INDEX>.img
  std::map<uint16_t, std::string> targets;  // VOLINDEX -> block device or file
  // Damaged records do not stop the restore: their extents are left as zeros and listed.
  bool allow_damaged = false;
  // Failback: read each target first and write only the 4 KiB blocks that differ from the point
  // (delta.h); targets must exist.
  bool delta = false;
  // With delta: the original agent's --state-dir on this host; its pinned eBPF tracker then says
  // which blocks can differ, and only those are read (tracked_delta.h).
  std::string agent_state_dir;
  SealLink expect_point;  // CheckDescent before anything is written; id 0: no expectation
  S3Flags s3;             // with a store_dir of s3://BUCKET/PREFIX
  SourceSpec Source() const;
};

struct RestoreSummary {
  store::PointInfo point;
  uint64_t bytes_written = 0;
  uint64_t records = 0;
  double seconds = 0;
  std::map<uint16_t, std::string> written;  // volume -> path
  std::vector<Damage> damaged;               // with allow_damaged: extents left as zeros
  uint64_t seal_regions_matched = 0;         // regions whose data adds up to the agent's seal
  uint64_t bytes_fetched = 0;                // stored record bytes read from the store or staging
  uint64_t target_bytes_read = 0;            // --delta: bytes of the targets read to compare
  uint64_t blocks_differing = 0;             // --delta: 4 KiB blocks that differed
  uint64_t tracked_base_point = 0;           // --agent-state: the point the tracker is relative to
  uint64_t tracked_volumes = 0;              // --agent-state: volumes restored by the tracker
  std::string untracked_why;                 // --agent-state: why the whole targets were read
};

Result<RestoreSummary> Restore(const RestoreRequest& req);

}  // namespace blockrep::recovery
