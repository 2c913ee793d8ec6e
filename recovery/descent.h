// Whether a chain descends from a point an agent saw acknowledged (`--expect-point N`), by the
// links the agent MAC'd into every seal (blockrep/crypto/seal.h, VolumeSeal::prev; docs/FORMAT.md, Seal
// links). A staging cannot forge a link, so a store rolled back and then extended (a fork: the
// ids after the rollback name other points than those the agent saw) is caught even where the
// head's id is not older than N.
#pragma once

#include <functional>

#include "blockrep/crypto/seal.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"
#include "keys.h"

namespace blockrep::recovery {

// The volume-0 seal of a retained point (from its index).
using SealOf = std::function<Result<VolumeSeal>(const store::PointInfo&)>;

// `--expect-point N` or `N:MAC`: the point id, and the MAC of its volume-0 seal (64 hex digits,
// as the agent's state file `last-point` holds it under last-acked-seal-mac). With the MAC, a
// point N that is another than the one the agent saw (a fork under the same id) is caught too.
Result<SealLink> ParseExpectPoint(const std::string& text);

// Walks the links from the chain's head down to point `expect.point_id` and returns OK when they
// reach it; kDataLoss when the head is older (CheckChainHead), a link passes it by (the chain does
// not descend from it), a link's MAC differs from the retained point it names or from
// `expect.mac` (a fork), a seal is not authentic, or a point on the way has expired so the walk
// cannot go on (pass a later point). `expect.point_id` 0: nothing expected, OK at once.
Status CheckDescent(const store::Manifest& manifest, const SealLink& expect, const KeyChain& keys, const SealOf& seal_of);

}  // namespace blockrep::recovery
