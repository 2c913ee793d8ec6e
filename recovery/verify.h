// Checking stored records (README, verify). Without the data key: the manifest, every retained
// point's index, and every record they name (present, checksum, header, placement). With it, also:
// every record authenticates and decompresses, and the fingerprints stored after it match its data.
// Damage is reported per server / volume / point / extent, never just "something is wrong".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "blockrep/objstore/s3_env.h"
#include "blockrep/crypto/record.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"

namespace blockrep::recovery {

// Why `h` (the header of the record `e` names) cannot be the data of extent `e` in point
// `point_id`; empty when it fits. A staging that moves, splices or replays records is caught here
// (and by the AEAD tag, which binds the header).
std::string PlacementProblem(const RecordHeader& h, const store::IndexEntry& e, uint64_t point_id);

// One damaged extent of a volume, as some retained points see it.
struct Damage {
  uint16_t volume = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::vector<uint64_t> points;  // ascending; the points whose image includes this extent
  std::string problem;           // names the record (pack, offset) and what is wrong with it
};

// "server 'S' volume V point(s) 3-5,9 offset O length L: PROBLEM"
std::string DescribeDamage(const std::string& server_id, const Damage& d);

struct VerifyRequest {
  std::string store_dir;
  std::string server_id;  // empty: every server in the store
  std::string key_file;   // empty: structure and checksums only
  // A chain ending before this point is reported (restore.h, CheckChainHead); with a key, one that
  // does not descend from it too (descent.h). Id 0: no expectation.
  SealLink expect_point;
  S3Flags s3;  // with a store_dir of s3://BUCKET/PREFIX
};

struct ServerVerifyReport {
  std::string server_id;
  bool authenticated = false;  // records were opened with the data key
  uint64_t points = 0;
  uint64_t records = 0;  // distinct stored records checked
  uint64_t record_bytes = 0;
  uint64_t plain_bytes = 0;  // with the key: bytes decompressed
  uint64_t seals_matched = 0;  // with the key: volume seals (one per volume per point) that add up
  std::string unreadable;    // the manifest or an index could not be read (then damage may be partial)
  std::vector<Damage> damage;
  std::string note;  // e.g. why the key was not used for this server
  bool raced = false;  // the chain changed under the check (a compaction on the staging)
  std::string rolled_back;  // --expect-point: the chain ends before the point expected
  bool clean() const { return unreadable.empty() && damage.empty() && rolled_back.empty(); }
};

// Fails only when the request itself is wrong (no such store or server, unreadable key file, a
// key that belongs to none of the servers asked for); damage is reported, not returned as an error.
Result<std::vector<ServerVerifyReport>> Verify(const VerifyRequest& req);

}  // namespace blockrep::recovery
