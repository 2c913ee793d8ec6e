// The block fingerprints of the agent's last acknowledged point, kept in its state directory
// (`<state-dir>/fingerprints`, written after a process's last point), so that the next process
// sealing an incremental point on it, or rescanning against it, need not fetch them all from the
// staging. Fetching them meant reading every pack: they sit after each record, and an eBPF
// incremental of 48 MiB on usr-4g spent 1.1 s of its 1.45 s on it.
//
// Trust: none. The cache is only a candidate; CheckBaseFingerprints (point_seal.h) checks it
// against the base point's seal (MAC'd with the data key) exactly as it checks the staging's copy,
// and on any mismatch the agent fetches the staging's copy instead. Losing or damaging the file
// costs that fetch, never correctness.
//
// Format (little-endian): "BRFPC001", u64 point id, u16 server-id length + bytes, u32 volume
// count, per volume u64 size in bytes, then per volume ceil(size / 4 KiB) u64 fingerprints, then
// u64 XXH3-64 of everything before it. Written and read in 64 KiB chunks: the cache costs no
// memory beyond the fingerprint tables the agent holds anyway.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "blockrep/base/env.h"
#include "blockrep/base/status.h"
#include "fingerprint_table.h"

namespace blockrep::agent {

// Writes the cache atomically (temporary file, rename).
Status SaveFingerprintCache(const std::string& state_dir, const std::string& server_id, uint64_t point_id,
                            const std::vector<uint64_t>& volume_bytes, const std::vector<FingerprintTable>& fps,
                            Env* env = Env::Default());

// The cached fingerprints if the file exists, is whole, and is of `point_id` of this server with
// these volume sizes; nullopt otherwise, with `why` saying why not (empty when there is no file).
// Large volumes' tables live in `spill_dir` (fingerprint_table.h).
std::optional<std::vector<FingerprintTable>> LoadFingerprintCache(const std::string& state_dir,
                                                                 const std::string& server_id, uint64_t point_id,
                                                                 const std::vector<uint64_t>& volume_bytes, std::string* why,
                                                                 const std::string& spill_dir = {},
                                                                 Env* env = Env::Default());

}  // namespace blockrep::agent
