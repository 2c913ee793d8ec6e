// Where recovery reads a server's chain from: a store directory (`--store DIR`) or a staging over
// TLS (`--staging HOST:PORT`, the agent's certificate: its own server only). Either way the
// reader gets ciphertext and checks everything itself: the manifest's and indexes' checksums,
// each record's checksum and AES-GCM tag, and the agent's seals. A staging that lies is caught
// exactly as a tampered store is.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"
#include "blockrep/net/tls.h"
#include "blockrep/net/wire.h"
#include "blockrep/objstore/s3_env.h"

namespace blockrep::recovery {

struct SourceSpec {
  std::string store_dir;  // one of store_dir and staging
  std::string staging;    // HOST:PORT
  TlsFiles tls;           // with staging; defaults beside the key file (FillTlsDefaults)
  std::string server_id;
  std::string key_file;
  S3Flags s3;             // with a store_dir of s3://BUCKET/PREFIX
};

// The agent's defaults: agent-<ID>.crt/.key and ca.crt in the key file's directory.
void FillTlsDefaults(SourceSpec* spec);
// "one of --store DIR or --staging HOST:PORT" and the like, for the commands' flag checks.
Status CheckSourceFlags(const SourceSpec& spec, const char* command);

class PointSource {
 public:
  virtual ~PointSource() = default;
  // "store /srv/blockrep" or "staging dr-host:7070", for messages.
  virtual std::string Describe() const = 0;
  virtual Result<store::Manifest> LoadManifest() = 0;
  // Loads the point's index (checked against the manifest's checksum) and keeps every record it
  // names readable for the life of the source, whatever the staging compacts meanwhile. `point`
  // is updated to the manifest's current entry.
  virtual Result<store::PointIndex> OpenPoint(store::PointInfo& point, bool allow_damaged) = 0;
  // Reads the stored records `entries` name (of a point opened before), each checked against its
  // index checksum, and calls fn(i, status, record) for each in order. Entries sorted by (pack,
  // pack_offset) read fastest. A failed read is passed to fn; fn's error stops the reading.
  using RecordFn = std::function<Status(size_t i, const Status& read, ByteSpan record)>;
  virtual Status ReadRecords(uint64_t point_id, const std::vector<const store::IndexEntry*>& entries,
                             const RecordFn& fn) = 0;
  // A hint that `entries` (of an opened point) will be read soon: a store directory asks the
  // kernel to start reading them (up to 32 MiB), so that the reads overlap other work.
  virtual void AdviseRecords(uint64_t /*point_id*/, const std::vector<const store::IndexEntry*>& /*entries*/) {}
  // Bytes of packs, by location (the fingerprints stored after records, say): fn(i, bytes) in
  // order; a range the pack does not hold whole is an error.
  struct PackRange {
    uint32_t pack = 0;
    uint64_t offset = 0;
    uint32_t length = 0;
  };
  using RangeFn = std::function<Status(size_t i, const Status& read, ByteSpan bytes)>;
  virtual Status ReadRanges(uint64_t point_id, const std::vector<PackRange>& ranges, const RangeFn& fn) = 0;
  // Appends one line (a drill report) to the server's drills.jsonl, durably.
  virtual Status AppendDrillReport(const std::string& line) = 0;
};

// The stored keyed fingerprints of every 4 KiB block of `volume` in the opened point `index`
// (0 where it holds zeros, store::kFingerprintUnknown where none is stored). Unauthenticated as
// they come: a caller that acts on them checks its result against the point's seal.
Status ReadVolumeFingerprints(PointSource& source, const store::PointIndex& index, uint16_t volume,
                              std::vector<uint64_t>* out);

// The filesystem a store is read through: the real one for a directory, a read-only S3ReadEnv
// (probed once) for s3://BUCKET/PREFIX. `*root` is the store root to hand the store code.
Result<std::shared_ptr<Env>> OpenStoreEnv(const std::string& store_dir, const S3Flags& s3, std::string* root);
// Opens the source `spec` names. For a staging: connects, TLS, HELLO as a reader naming the ids of
// `keys` (a key file's, oldest first; none: a reader without a key, e.g. list).
Result<std::unique_ptr<PointSource>> OpenSource(const SourceSpec& spec, const std::vector<DataKey>& keys);

// Every server's figures from the staging `spec.staging`, as an operator (wire::Role::kOperator:
// `spec.tls` holds an operator certificate, blockrep-keygen --operator NAME).
Result<wire::Fleet> FetchFleet(const SourceSpec& spec);

}  // namespace blockrep::recovery
