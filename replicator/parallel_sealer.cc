#include "parallel_sealer.h"

#include <algorithm>

#include "blockrep/base/check.h"

namespace blockrep::agent {

Result<std::unique_ptr<ParallelSealer>> ParallelSealer::Create(const DataKey& key, const std::string& server_id) {
  std::unique_ptr<ParallelSealer> p(new ParallelSealer());
  BR_ASSIGN_OR_RETURN(p->own_sealer_, RecordSealer::Create(key, server_id));
  BR_ASSIGN_OR_RETURN(p->helper_sealer_, RecordSealer::Create(key, server_id));
  p->helper_ = std::thread([raw = p.get()] { raw->HelperLoop(); });
  return p;
}

ParallelSealer::~ParallelSealer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (helper_.joinable()) helper_.join();
}

void ParallelSealer::SealOne(RecordSealer& sealer, const CodecChoice& codec, uint64_t point_id,
                             const BlockFingerprinter* fingerprinter, SealJob& job) {
  if (job.fingerprint) {
    BR_CHECK(fingerprinter != nullptr && job.fps != nullptr);
    for (size_t at = 0, b = 0; at < job.plain.size(); at += kFingerprintBlockBytes, ++b)
      job.fps[b] = fingerprinter->Block(job.offset + at,
                                        job.plain.subspan(at, std::min(kFingerprintBlockBytes, job.plain.size() - at)));
  }
  const size_t need = RecordSealer::MaxSealedBytes(job.plain.size());
  if (job.buf_bytes < need) {
    job.buf.reset(new uint8_t[need]);  // default-initialised: SealInto writes every byte of the record
    job.buf_bytes = need;
  }
  const bool zero = job.zero_known ? job.zero : IsAllZero(job.plain);
  Result<RecordHeader> h = sealer.SealInto(codec, job.volume, job.offset, point_id, job.plain, zero, job.buf.get());
  job.status = h.status();
  job.header = h.ok() ? *h : RecordHeader{};
}

void ParallelSealer::MarkSealed(size_t i) {
  sealed_[i].store(true);  // seq_cst with caller_waits_ below: one of the two threads sees the other
  if (caller_waits_.load()) {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
}

void ParallelSealer::SealShare(RecordSealer& sealer) {
  for (;;) {
    const size_t i = next_job_.fetch_add(1);
    if (i >= jobs_.size()) return;
    SealOne(sealer, *codec_, point_id_, fingerprinter_, jobs_[i]);
    MarkSealed(i);
  }
}

void ParallelSealer::PassSealed(size_t* passed, const InOrder& in_order, Status* first_error) {
  for (; *passed < jobs_.size() && sealed_[*passed].load(); ++*passed)
    if (in_order && first_error->ok()) *first_error = in_order(jobs_[*passed]);
}

void ParallelSealer::HelperLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || helper_busy_; });
    if (stop_) return;
    lock.unlock();
    SealShare(*helper_sealer_);
    lock.lock();
    helper_busy_ = false;
    helper_done_ = true;
    cv_.notify_all();
  }
}

Status ParallelSealer::SealAll(const CodecChoice& codec, uint64_t point_id, std::span<SealJob> jobs,
                               const BlockFingerprinter* fingerprinter, const InOrder& in_order) {
  if (jobs.size() > sealed_capacity_) {
    sealed_capacity_ = std::max(jobs.size(), 2 * sealed_capacity_);
    sealed_.reset(new std::atomic<bool>[sealed_capacity_]);
  }
  for (size_t i = 0; i < jobs.size(); ++i) sealed_[i].store(false, std::memory_order_relaxed);
  jobs_ = jobs;
  codec_ = &codec;
  point_id_ = point_id;
  fingerprinter_ = fingerprinter;
  next_job_.store(0, std::memory_order_relaxed);
  const bool shared = jobs.size() >= kMinJobsToShare;
  if (shared) {
    std::lock_guard<std::mutex> lock(mu_);  // publishes the batch to the helper
    helper_busy_ = true;
    helper_done_ = false;
  }
  if (shared) cv_.notify_all();
  Status first_error;
  size_t passed = 0;
  for (;;) {
    PassSealed(&passed, in_order, &first_error);
    const size_t i = next_job_.fetch_add(1);
    if (i >= jobs.size()) break;
    SealOne(*own_sealer_, codec, point_id, fingerprinter, jobs[i]);
    sealed_[i].store(true);
  }
  // Every job is taken; the helper may still be sealing its last ones.
  while (passed < jobs.size()) {
    PassSealed(&passed, in_order, &first_error);
    if (passed == jobs.size()) break;
    std::unique_lock<std::mutex> lock(mu_);
    caller_waits_.store(true);
    cv_.wait(lock, [&] { return sealed_[passed].load(); });
    caller_waits_.store(false);
  }
  if (shared) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return helper_done_; });
    helper_done_ = false;
  }
  return first_error;
}

}  // namespace blockrep::agent
