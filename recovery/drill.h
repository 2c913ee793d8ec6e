// `blockrep-recover drill`: proves a recovery point usable without stopping replication.
//
// Mounts the point with a writable overlay in a scratch directory (a `mount` child process; with
// --copy, restores full images there instead), attaches each volume image to a loop device,
// detects its filesystem (libblkid), replays its journal/log on the overlay (a mount and an
// unmount: a point taken under FIFREEZE still carries a covered log), checks it (`e2fsck -fn`,
// `xfs_repair -n`; other filesystems "unchecked"), mounts it, runs the operator's hook, and
// reports RPO, RTO and each step as JSON. Cleans up every mount, loop device, FUSE mount and
// scratch file whatever happens (SIGINT/SIGTERM included), unless --keep. Each report is
// appended to <store>/servers/<id>/drills.jsonl.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blockrep/base/status.h"
#include "blockrep/net/tls.h"
#include "blockrep/objstore/s3_env.h"

namespace blockrep::recovery {

struct DrillRequest {
  std::string store_dir;  // one of store_dir and staging
  std::string staging;    // HOST:PORT (the report is appended by the staging)
  TlsFiles tls;
  std::string server_id;
  std::string key_file;
  std::string point_spec = "latest";
  std::string hook;                // executable run once every volume is mounted; empty: none
  uint64_t hook_timeout_s = 600;
  std::string scratch_parent = "/tmp";
  bool copy = false;  // restore full images instead of mounting the point through FUSE
  bool keep = false;  // leave everything mounted and in place (for a look by hand)
  std::string self_exe;  // blockrep-recover, for the mount child
  S3Flags s3;            // with a store_dir of s3://BUCKET/PREFIX (the report is then not recorded)
};

struct DrillVolume {
  uint16_t index = 0;
  std::string fs;     // "ext4", "xfs", ..., or "unknown"
  std::string check;  // "clean", "errors", "unchecked", "failed"
  std::string detail;  // what failed, or the checker's output tail
  std::string mount_path;  // where it is mounted; empty if not
  double seconds = 0;
};

struct DrillReport {
  std::string server_id;
  uint64_t point_id = 0;
  std::string point_time;
  bool consistent = false;
  std::string started;
  double rpo_seconds = 0;
  double rto_seconds = 0;
  double mount_seconds = 0;  // until the images were there (FUSE mounted, or --copy restored)
  std::string mode;          // "overlay" or "copy"
  std::vector<DrillVolume> volumes;
  bool hook_run = false;
  int hook_exit = 0;  // exit status; -signal when killed; 124 on time-out
  double hook_seconds = 0;
  std::string hook_output_tail;
  std::vector<std::string> problems;  // why the drill failed
  std::string scratch;
  bool pass() const { return problems.empty(); }
  std::string ToJson() const;
};

// Runs the drill. A report comes back whenever the drill got as far as a scratch directory, pass
// or fail; an error Status only when it could not start (bad flags, no such point, no key).
Result<DrillReport> Drill(const DrillRequest& req);

}  // namespace blockrep::recovery
