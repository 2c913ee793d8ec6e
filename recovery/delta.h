// `restore --delta`: failback that moves only what differs. The target (the original disk,
// repaired, or any copy of the volume) is read once, on two threads, and each 4 KiB block's keyed
// fingerprint (the agent's) is compared with the point's stored one; only the records covering
// differing blocks are fetched and opened, and only differing blocks are written. Then the target
// is checked against the point's seal: the stored fingerprints come from the store or staging
// unauthenticated, so a lie about one (to skip a block) shows there as a region that does not add
// up, and the restore fails naming it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/base/fs.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"
#include "restore.h"
#include "source.h"

namespace blockrep::recovery {

// The point's seal of `volume`, checked: present, authentic under `seal_keys`, naming the point
// and the volume's size. Without it nothing could prove a delta restore's result.
Result<const VolumeSeal*> CheckedDeltaSeal(const std::string& where, const store::PointInfo& point,
                                          const store::PointIndex& idx, uint16_t volume, const SealKeys& seal_keys);

// Opens a delta restore's target read-write: a block device (exclusively: not mounted, not in
// use) of at least `volume_bytes`, or an image file, which takes that size.
Result<UniqueFd> OpenDeltaTarget(const std::string& target, uint64_t volume_bytes);

// Entries in the order their records sit in the packs (pack, then offset): read front to back.
void SortInPackOrder(std::vector<const store::IndexEntry*>* entries);

// Fetches and opens the records of `pieces` (entries of the opened point `point_id`), each stored
// record once and in pack order, and calls fn(entry, the plaintext of its extent) per piece. A
// damaged or misplaced record stops it with one error naming server, volume, point and offset.
using DeltaPieceFn = std::function<Status(const store::IndexEntry& e, ByteSpan extent)>;
Status ForEachDeltaPiece(PointSource& source, const std::string& where, uint64_t point_id,
                         std::vector<const store::IndexEntry*> pieces, RecordOpener& opener, RestoreSummary* sum,
                         const DeltaPieceFn& fn);

// Reads the whole target, compares every block's fingerprint with the point's stored ones and
// writes the differing blocks.
Status RestoreDelta(PointSource& source, const std::string& server_id, const store::PointInfo& point,
                    const store::PointIndex& idx, uint16_t volume, const std::string& target, RecordOpener& opener,
                    const SealKeys& seal_keys, const BlockFingerprinter& fingerprinter, RestoreSummary* sum);

}  // namespace blockrep::recovery
