// Seals (compresses and encrypts) a batch of records on two threads: the caller's and one helper.
// On the 2-core reference machine compression alone was 56 % of the agent's CPU on its one
// thread (bench P1), while the staging beside it used well under a core.
//
// Fork-join per batch: SealAll wakes the helper, and both threads take the batch's jobs one at a
// time from a shared cursor until none is left (a thread the scheduler pauses — the staging shares
// these cores — leaves its share to the other instead of holding the batch up). Between its own
// jobs the caller's thread hands each sealed job, in batch order, to `in_order` (the pipeline frames
// and encrypts it for the wire there), so that serial work overlaps the helper's sealing instead of
// leaving the helper idle after the join. A job may fingerprint its blocks too (for the point's
// seal), so that work is shared as well.
// Each thread seals with its own RecordSealer: its own random session id, session key and nonce
// counter, so nonces stay unique without the threads sharing anything but the batch.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>

#include "blockrep/crypto/codec.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/base/status.h"

namespace blockrep::agent {

struct SealJob {
  uint16_t volume = 0;
  uint64_t offset = 0;
  ByteSpan plain;
  bool zero_known = false, zero = false;  // whether `plain` is all zeros, when the caller knows
  uint64_t* fps = nullptr;  // the blocks' fingerprints, carried in the record's frame
  bool fingerprint = false;  // SealAll computes `fps` first (else they are already there)
  // Filled by SealAll.
  Status status;
  RecordHeader header;
  ByteSpan record() const { return ByteSpan(buf.get(), header.total_size()); }  // once sealed

  // Header + ciphertext + tag; reused from batch to batch, grown (never zero-filled) as needed.
  std::unique_ptr<uint8_t[]> buf;
  size_t buf_bytes = 0;
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

  // Seals every job for point `point_id`; a job with `fingerprint` set is fingerprinted first with
  // `fingerprinter` (which must then be given). Each job's status says whether it worked. Every
  // job is passed to `in_order` (if given), in batch order, on the caller's thread, once sealed;
  // after it fails, it is not called again and its error is returned once the batch is done.
  using InOrder = std::function<Status(SealJob& job)>;
  [[nodiscard]] Status SealAll(const CodecChoice& codec, uint64_t point_id, std::span<SealJob> jobs,
                               const BlockFingerprinter* fingerprinter = nullptr, const InOrder& in_order = nullptr);

 private:
  ParallelSealer() = default;
  void HelperLoop();
  // Takes jobs from the shared cursor until none is left (the helper's share).
  void SealShare(RecordSealer& sealer);
  // Marks job `i` sealed, waking the caller's thread if it waits for it.
  void MarkSealed(size_t i);
  // The caller's thread: passes on the sealed jobs from `*passed` in order.
  void PassSealed(size_t* passed, const InOrder& in_order, Status* first_error);
  static void SealOne(RecordSealer& sealer, const CodecChoice& codec, uint64_t point_id,
                      const BlockFingerprinter* fingerprinter, SealJob& job);

  std::unique_ptr<RecordSealer> own_sealer_, helper_sealer_;

  // The current batch: set by SealAll before it wakes the helper, read by both threads until
  // the helper reports done; each job is taken by exactly one thread (next_job_).
  std::span<SealJob> jobs_;
  const CodecChoice* codec_ = nullptr;
  uint64_t point_id_ = 0;
  const BlockFingerprinter* fingerprinter_ = nullptr;
  std::atomic<size_t> next_job_{0};
  std::unique_ptr<std::atomic<bool>[]> sealed_;  // per job of the batch
  size_t sealed_capacity_ = 0;
  std::atomic<bool> caller_waits_{false};  // the caller's thread sleeps on cv_ for a sealed job

  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  bool helper_busy_ = false, helper_done_ = false, stop_ = false;
  std::thread helper_;
};

}  // namespace blockrep::agent
