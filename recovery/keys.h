// The data keys a recovery command holds: a key file's, oldest first (after blockrep-keygen
// --rotate-key it holds several; the last is the current one). Each point is sealed under one of
// them, which its seal's MAC tells; its records open under whichever key their agent session used
// (RecordOpener finds it). This class derives, once per key, what checking a point needs.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"

namespace blockrep::recovery {

class KeyChain {
 public:
  struct Derived {
    DataKey key;
    std::unique_ptr<SealKeys> seal_keys;
    BlockFingerprinter fingerprinter;
  };

  static Result<std::unique_ptr<KeyChain>> Load(const std::string& key_file, const std::string& server_id);
  static Result<std::unique_ptr<KeyChain>> Create(const std::vector<DataKey>& keys, const std::string& server_id);

  const std::vector<DataKey>& keys() const { return keys_; }
  const Derived& newest() const { return derived_.back(); }
  const Derived& at(size_t i) const { return derived_.at(i); }
  bool Holds(uint64_t key_id) const;
  // The key `seal` authenticates under; the newest when none does (the caller's seal check then
  // reports the seal as forged or damaged, naming the key file).
  const Derived& ForSeal(const VolumeSeal& seal) const;
  // The key a point is sealed under (its first seal's); the newest when it has no seal.
  const Derived& ForIndex(const store::PointIndex& index) const;

 private:
  KeyChain() = default;
  std::vector<DataKey> keys_;
  std::vector<Derived> derived_;  // parallel to keys_
};

}  // namespace blockrep::recovery
