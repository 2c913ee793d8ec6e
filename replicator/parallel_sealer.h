// Seals (compresses and encrypts) a batch of records on two threads: the caller's and one helper.
// On the 2-core reference machine compression alone was 56 % of the agent's CPU on its one
// thread (bench P1), while the staging beside it used well under a core.
//
// Fork-join per batch: SealAll hands the helper the first part of the batch, seals the rest
// itself, and returns once both are done, so the caller frames the records in order as before.
// Each thread seals with its own RecordSealer: its own random session id, session key and nonce
// counter, so nonces stay unique without the threads sharing anything but the batch.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include "blockrep/crypto/codec.h"
#include "blockrep/crypto/record.h"
#include "blockrep/base/status.h"

namespace blockrep::agent {

struct SealJob {
  uint16_t volume = 0;
  uint64_t offset = 0;
  ByteSpan plain;
  // Filled by SealAll.
  Status status;
  RecordHeader header;
  Bytes record;  // header + ciphertext + tag; its capacity is reused from batch to batch
};

class ParallelSealer {
 public:
  // Batches smaller than this are sealed on the caller's thread alone: a hand-off costs more
  // than one record.
  static constexpr size_t kMinJobsToShare = 2;

  static Result<std::unique_ptr<ParallelSealer>> Create(const DataKey& key, const std::string& server_id);
  ~ParallelSealer();  // stops and joins the helper
  ParallelSealer(const ParallelSealer&) = delete;
  ParallelSealer& operator=(const ParallelSealer&) = delete;

  // Seals every job for point `point_id`. Each job's status says whether it worked.
  void SealAll(const CodecChoice& codec, uint64_t point_id, std::span<SealJob> jobs);

 private:
  ParallelSealer() = default;
  void HelperLoop();
  static void SealRange(RecordSealer& sealer, Bytes& scratch, const CodecChoice& codec, uint64_t point_id,
                        std::span<SealJob> jobs);

  std::unique_ptr<RecordSealer> own_sealer_, helper_sealer_;
  Bytes own_scratch_, helper_scratch_;

  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_: the helper's share of the current batch, until it sets `helper_done_`.
  std::span<SealJob> helper_jobs_;
  const CodecChoice* helper_codec_ = nullptr;
  uint64_t helper_point_ = 0;
  bool helper_busy_ = false, helper_done_ = false, stop_ = false;
  std::thread helper_;
};

}  // namespace blockrep::agent
