// `blockrep-recover mount`: instant access to every retained point as image files (libfuse3).
//
//   MOUNTPOINT/<point-id>/vol-<i>.img   one per volume, the volume's size
//   MOUNTPOINT/latest -> <newest id>
//
// Reads are decrypted, authenticated and checked against the point's seal on demand
// (point_image.h); a damaged region gives EIO and one log line naming server, volume, point and
// byte range. Read-only, or with an overlay directory: writes go to sparse files
// OVERLAY/<point-id>/vol-<i>.img, never to the store.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "blockrep/base/status.h"
#include "blockrep/net/tls.h"
#include "blockrep/objstore/s3_env.h"

namespace blockrep::recovery {

struct MountRequest {
  std::string store_dir;     // one of store_dir and staging
  std::string staging;       // HOST:PORT, the agent's certificate (tls; defaults beside key_file)
  TlsFiles tls;
  std::string server_id;
  std::string key_file;
  std::string mountpoint;
  std::string overlay_dir;   // empty: read-only
  std::string point_spec;    // empty: every retained point; else only this one (drill)
  uint64_t cache_bytes = 64ull << 20;
  S3Flags s3;                // with a store_dir of s3://BUCKET/PREFIX
};

// Mounts, calls `ready` once the filesystem is mounted, serves until unmounted (fusermount3 -u,
// umount) or SIGINT/SIGTERM/SIGHUP, then unmounts. Nothing in the store is ever written.
Status Mount(const MountRequest& req, const std::function<void(const std::string&)>& ready);

}  // namespace blockrep::recovery
