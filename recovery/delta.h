// `restore --delta`: failback that moves only what differs. The target (the original disk,
// repaired, or any copy of the volume) is read once, on two threads, and each 4 KiB block's keyed
// fingerprint (the agent's) is compared with the point's stored one; only the records covering
// differing blocks are fetched and opened, and only differing blocks are written. Then the target
// is checked against the point's seal: the stored fingerprints come from the store or staging
// unauthenticated, so a lie about one (to skip a block) shows there as a region that does not add
// up, and the restore fails naming it.
#pragma once

#include <string>

#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"
#include "restore.h"
#include "source.h"

namespace blockrep::recovery {

Status RestoreDelta(PointSource& source, const std::string& server_id, const store::PointInfo& point,
                    const store::PointIndex& idx, uint16_t volume, const std::string& target, RecordOpener& opener,
                    const SealKeys& seal_keys, const BlockFingerprinter& fingerprinter, RestoreSummary* sum);

}  // namespace blockrep::recovery
