// Loading the base of an incremental point (docs/PROTOCOL.md, Seals): a process that did not
// send the chain's last point does not hold its block fingerprints, which the point's seal is
// built on. It asks the staging for the base's seals, takes the fingerprints from the state
// directory's cache or asks the staging for them too, and adopts them only if the seals (MAC'd
// with the data key) vouch for them. A stale cache is replaced by the staging's copy; a staging
// copy that does not match is not trusted: the point becomes a rescan. Reads wait meanwhile.
//
// A rescan compares every block read with the base's fingerprints. The staging answers for
// them by reading the fingerprints stored after every record of the point, in nearly every pack:
// about half of the packs' bytes, through readahead (597 MiB of 1206 for a usr-4g rescan, which
// took 3.4-4.6 s against 2.2-2.8 s when the staging found them in its page cache). So a rescan
// compares with what this agent knows of the base: the fingerprints it kept of the point it just
// sent (continuous --tracker scan), or the state directory's cache when the base's seals vouch
// for it, as a base load does; the staging reads no pack. Without either, or with a cache the
// seals refuse, it compares with the staging's copy as it arrives.
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
    kCompare,     // a rescan's: the inbox holds (or is being sent) the fingerprints to compare with
  };

  // Asks for point `base`'s seals, and for its fingerprints unless `state_dir` holds a cache of
  // them (state_dir may be empty).
  Status Start(uint64_t base, const std::vector<uint64_t>& volume_bytes, const std::string& state_dir,
               const std::string& server_id, const SendFn& send);
  // A rescan on point `base`: compares with `sent`, the base's fingerprints as this process sent
  // the base (PointSeal::TakeBase), when there are any; else takes the cache in `state_dir` (may
  // be empty) and asks for the base's seals to judge it, loading() until they arrive; else asks
  // the staging for its fingerprints and is not loading() (the reads go on as they arrive).
  Status StartRescan(uint64_t base, const std::vector<uint64_t>& volume_bytes, std::vector<FingerprintTable> sent,
                     const std::string& state_dir, const std::string& server_id, const SendFn& send);
  // Asks the staging for the fingerprints of every block of every volume (also a rescan's).
  Status RequestFingerprints(const std::vector<uint64_t>& volume_bytes, const SendFn& send);
  bool loading() const { return loading_; }
  // Everything asked for has arrived.
  bool ready() const { return loading_ && inbox_.SealsComplete() && inbox_.FingerprintsComplete(); }
  // Judges what arrived (ready() must hold). kAdopted: `seal` holds the base, and `link` gets
  // the base's MAC when it names the base without one. A rescan's: kCompare, `seal` untouched
  // (it starts empty), and the staging's fingerprints asked for if the cache did not match.
  Result<Outcome> Finish(PointSeal* seal, SealLink* link, const SendFn& send);
  void Cancel() { loading_ = false; }

  BaseInbox& inbox() { return inbox_; }
  const BaseInbox& inbox() const { return inbox_; }

 private:
  void Begin(uint64_t base, const std::vector<uint64_t>& volume_bytes, const std::string& state_dir, bool rescan);
  Status RequestSeals(const SendFn& send);
  // The state directory's cache of the base's fingerprints into the inbox, if it holds one.
  bool TakeCache(const std::string& server_id);

  BaseInbox inbox_;
  bool loading_ = false;
  bool from_cache_ = false;
  bool rescan_ = false;
  uint64_t base_ = 0;
  std::vector<uint64_t> volume_bytes_;
  std::string state_dir_;
};

}  // namespace blockrep::agent
