// Data-key files: "blockrep-data-key-v1\n" then one line of 64 hex digits per key, oldest first,
// mode 0600. The last key is the current one (agents seal with it); the earlier ones are retired
// by rotation and kept so that the points sealed under them stay restorable. The keys never leave
// the customer's hosts: agents and the recovery tool read them, the staging never does.
#pragma once

#include <string>
#include <vector>

#include "blockrep/crypto/record.h"
#include "blockrep/base/status.h"

namespace blockrep {

inline constexpr size_t kDataKeysPerFileMax = 64;

// Every key of the file, oldest first (the current one last). Refuses files readable or writable by
// group/others, with the chmod that fixes it.
Result<std::vector<DataKey>> LoadDataKeys(const std::string& path);
// The current key (the file's last).
Result<DataKey> LoadDataKey(const std::string& path);
// Creates a new random key at `path` with mode 0600; fails if the file exists.
Status WriteNewDataKey(const std::string& path);
// Appends a new random key to an existing key file (atomically): it becomes the current key.
// Returns it.
Result<DataKey> RotateDataKey(const std::string& path);

}  // namespace blockrep
