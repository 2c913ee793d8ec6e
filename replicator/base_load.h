// Loading the base of an incremental point (docs/TRACKING.md, Base load): a process that did not
// send the chain's last point does not hold its block fingerprints, which the point's seal is
// built on. It asks the staging for the base's seals, takes the fingerprints from the state
// directory's cache or asks the staging for them too, and adopts them only if the seals (MAC'd
// with the data key) vouch for them. A stale cache is replaced by the staging's copy; a staging
// copy that does not match is not trusted: the point becomes a rescan. Reads wait meanwhile.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "blockrep/crypto/seal.h"
#include "blockrep/net/wire.h"
#include "base_inbox.h"
#include "point_seal.h"

namespace blockrep::agent {

class BaseLoad {
 public:
  using SendFn = std::function<Status(wire::MsgType, const Bytes&)>;
  enum class Outcome {
    kAdopted,     // the point's seal now rests on the base's fingerprints
    kRefetching,  // the cache did not match: the staging's copy was asked for; wait again
    kUntrusted,   // the staging's copy did not match: rescan against it instead
  };

  // Asks for point `base`'s seals, and for its fingerprints unless `state_dir` holds a cache of
  // them (state_dir may be empty).
  Status Start(uint64_t base, const std::vector<uint64_t>& volume_bytes, const std::string& state_dir,
               const std::string& server_id, const SendFn& send);
  // Asks the staging for the fingerprints of every block of every volume (also a rescan's).
  Status RequestFingerprints(const std::vector<uint64_t>& volume_bytes, const SendFn& send);
  bool loading() const { return loading_; }
  // Everything asked for has arrived.
  bool ready() const { return loading_ && inbox_.SealsComplete() && inbox_.FingerprintsComplete(); }
  // Judges what arrived (ready() must hold). kAdopted: `seal` holds the base, and `link` gets
  // the base's MAC when it names the base without one.
  Result<Outcome> Finish(PointSeal* seal, SealLink* link, const SendFn& send);
  void Cancel() { loading_ = false; }

  BaseInbox& inbox() { return inbox_; }
  const BaseInbox& inbox() const { return inbox_; }

 private:
  BaseInbox inbox_;
  bool loading_ = false;
  bool from_cache_ = false;
  uint64_t base_ = 0;
  std::vector<uint64_t> volume_bytes_;
  std::string state_dir_;
};

}  // namespace blockrep::agent
