#include "keys.h"

#include <algorithm>

#include "blockrep/crypto/keyfile.h"

namespace blockrep::recovery {

Result<std::unique_ptr<KeyChain>> KeyChain::Load(const std::string& key_file, const std::string& server_id) {
  BR_ASSIGN_OR_RETURN(std::vector<DataKey> keys, LoadDataKeys(key_file));
  return Create(keys, server_id);
}

Result<std::unique_ptr<KeyChain>> KeyChain::Create(const std::vector<DataKey>& keys, const std::string& server_id) {
  if (keys.empty()) return InvalidArgument("no data key");
  std::unique_ptr<KeyChain> c(new KeyChain());
  c->keys_ = keys;
  for (const DataKey& k : keys) {
    BR_ASSIGN_OR_RETURN(auto seal_keys, SealKeys::Create(k, server_id));
    BR_ASSIGN_OR_RETURN(BlockFingerprinter fp, BlockFingerprinter::Create(k));
    c->derived_.push_back(Derived{k, std::move(seal_keys), fp});
  }
  return c;
}

bool KeyChain::Holds(uint64_t key_id) const {
  return std::any_of(keys_.begin(), keys_.end(), [&](const DataKey& k) { return k.key_id == key_id; });
}

const KeyChain::Derived& KeyChain::ForSeal(const VolumeSeal& seal) const {
  for (size_t i = derived_.size(); i-- > 0;)  // the newest first: most points are under it
    if (derived_[i].seal_keys->Authentic(seal)) return derived_[i];
  return derived_.back();
}

const KeyChain::Derived& KeyChain::ForIndex(const store::PointIndex& index) const {
  return index.seals.empty() ? derived_.back() : ForSeal(index.seals[0]);
}

}  // namespace blockrep::recovery
