#include "base_load.h"

#include "blockrep/base/check.h"
#include "blockrep/base/cli.h"
#include "fingerprint_cache.h"

namespace blockrep::agent {
namespace {
constexpr const char* kProg = "blockrep-agent";
}  // namespace

Status BaseLoad::RequestFingerprints(const std::vector<uint64_t>& volume_bytes, const SendFn& send) {
  BR_RETURN_IF_ERROR(inbox_.ExpectFingerprints(volume_bytes));
  for (size_t v = 0; v < volume_bytes.size(); ++v) {
    // All requests at once: the replies come back in order, and the channel's inbox limit paces them.
    for (uint64_t off = 0; off < volume_bytes[v]; off += wire::kMaxFingerprintSpan) {
      wire::FingerprintRequest rq{static_cast<uint16_t>(v), off,
                                  std::min(wire::kMaxFingerprintSpan, volume_bytes[v] - off)};
      BR_RETURN_IF_ERROR(send(wire::MsgType::kFingerprintRequest, rq.Encode()));
    }
  }
  return Status::Ok();
}

Status BaseLoad::RequestSeals(const SendFn& send) {
  inbox_.ExpectSeals(volume_bytes_.size());
  for (size_t v = 0; v < volume_bytes_.size(); ++v)
    BR_RETURN_IF_ERROR(send(wire::MsgType::kSealRequest, wire::SealRequest{static_cast<uint16_t>(v)}.Encode()));
  return Status::Ok();
}

bool BaseLoad::TakeCache(const std::string& server_id) {
  if (state_dir_.empty()) return false;
  std::string why;
  auto cached = LoadFingerprintCache(state_dir_, server_id, base_, volume_bytes_, &why, inbox_.spill_dir());
  if (!cached) {
    if (!why.empty()) Log(kProg, "fingerprint cache not used: " + why + "; fetching them from the staging");
    return false;
  }
  // Checked against the base's seal in Finish, like the staging's copy would be.
  inbox_.TakeFingerprints(std::move(*cached), volume_bytes_);
  from_cache_ = true;
  return true;
}

void BaseLoad::Begin(uint64_t base, const std::vector<uint64_t>& volume_bytes, const std::string& state_dir, bool rescan) {
  rescan_ = rescan;
  loading_ = !rescan;
  from_cache_ = false;
  base_ = base;
  volume_bytes_ = volume_bytes;
  state_dir_ = state_dir;
}

Status BaseLoad::StartRescan(uint64_t base, const std::vector<uint64_t>& volume_bytes, std::vector<FingerprintTable> sent,
                             const std::string& state_dir, const std::string& server_id, const SendFn& send) {
  Begin(base, volume_bytes, state_dir, /*rescan=*/true);
  if (!sent.empty()) {
    BR_CHECK(sent.size() == volume_bytes.size());
    inbox_.TakeFingerprints(std::move(sent), volume_bytes);
    Log(kProg, "rescanning against point " + std::to_string(base) +
                   "'s fingerprints as this process sent it (the staging reads no pack for them)");
    return Status::Ok();
  }
  if (!TakeCache(server_id)) return RequestFingerprints(volume_bytes, send);
  loading_ = true;  // nothing is compared before the seals vouch for the cache
  return RequestSeals(send);
}

Status BaseLoad::Start(uint64_t base, const std::vector<uint64_t>& volume_bytes, const std::string& state_dir,
                       const std::string& server_id, const SendFn& send) {
  Begin(base, volume_bytes, state_dir, /*rescan=*/false);
  BR_RETURN_IF_ERROR(RequestSeals(send));
  if (TakeCache(server_id)) return Status::Ok();
  return RequestFingerprints(volume_bytes, send);
}

Result<BaseLoad::Outcome> BaseLoad::Finish(PointSeal* seal, SealLink* link, const SendFn& send) {
  BR_CHECK(ready());
  loading_ = false;
  if (rescan_) {
    BR_CHECK(from_cache_);  // without a cache a rescan does not wait for anything
    from_cache_ = false;
    std::string why = CheckBaseFingerprints(seal->keys(), base_, volume_bytes_, *inbox_.mutable_fingerprints(), inbox_.seals());
    if (why.empty()) {
      const auto& seals = inbox_.seals();
      if (!link->KnowsMac() && !seals.empty() && seals[0] && seals[0]->point_id == link->point_id)
        link->mac = seals[0]->mac;
      inbox_.ReleaseSeals();
      Log(kProg, "point " + std::to_string(base_) + "'s fingerprints in " + state_dir_ +
                     " match its seal: rescanning against them (the staging reads no pack for them)");
      return Outcome::kCompare;
    }
    inbox_.ReleaseSeals();
    Log(kProg, "fingerprint cache in " + state_dir_ + " does not match point " + std::to_string(base_) + "'s seal (" + why +
                   "); rescanning against the staging's fingerprints");
    BR_RETURN_IF_ERROR(RequestFingerprints(volume_bytes_, send));
    return Outcome::kCompare;
  }
  std::string why = seal->AdoptBase(base_, volume_bytes_, inbox_.mutable_fingerprints(), inbox_.seals());
  if (why.empty()) {
    // The base's seals are ours (AdoptBase checked their MACs): the link gets its MAC.
    const auto& seals = inbox_.seals();
    if (!link->KnowsMac() && !seals.empty() && seals[0] && seals[0]->point_id == link->point_id)
      link->mac = seals[0]->mac;
    inbox_.ReleaseSeals();
    inbox_.ReleaseFingerprints();
    Log(kProg, "point " + std::to_string(base_) + "'s fingerprints " +
                   (from_cache_ ? "in " + state_dir_ + " match its seal" : "on the staging match its seal") +
                   ": sealing the next point on it");
    return Outcome::kAdopted;
  }
  if (from_cache_) {
    // Our own copy is stale or damaged: the staging's is the one to judge.
    Log(kProg, "fingerprint cache in " + state_dir_ + " does not match point " + std::to_string(base_) +
                   "'s seal (" + why + "); fetching them from the staging");
    from_cache_ = false;
    loading_ = true;
    BR_RETURN_IF_ERROR(RequestFingerprints(volume_bytes_, send));
    return Outcome::kRefetching;
  }
  inbox_.ReleaseSeals();
  // The staging's copy of the base is not what we sealed (damaged, or not ours): the caller
  // compares every block with it instead of trusting it, so the point is whole whatever it holds.
  Log(kProg, "warning: point " + std::to_string(base_) + " on the staging does not match its seal (" + why +
                 "); rescanning every volume against it (blockrep-recover verify on the staging host names the damage)");
  return Outcome::kUntrusted;
}

}  // namespace blockrep::agent
