// Data-key files: "blockrep-data-key-v1\n<64 hex digits>\n", mode 0600. The key never leaves the
// customer's hosts: agents and the recovery tool read it, the staging never does.
#pragma once

#include <string>

#include "blockrep/record.h"
#include "blockrep/status.h"

namespace blockrep {

// Refuses files readable or writable by group/others, with the chmod that fixes it.
Result<DataKey> LoadDataKey(const std::string& path);
// Creates a new random key at `path` with mode 0600; fails if the file exists.
Status WriteNewDataKey(const std::string& path);

}  // namespace blockrep
