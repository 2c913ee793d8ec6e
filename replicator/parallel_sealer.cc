#include "parallel_sealer.h"

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

void ParallelSealer::SealRange(RecordSealer& sealer, Bytes& scratch, const CodecChoice& codec, uint64_t point_id,
                               std::span<SealJob> jobs) {
  for (SealJob& job : jobs) {
    job.record.clear();
    Result<RecordHeader> h = sealer.Seal(codec, job.volume, job.offset, point_id, job.plain, &scratch, &job.record);
    job.status = h.status();
    if (h.ok()) job.header = *h;
  }
}

void ParallelSealer::HelperLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || helper_busy_; });
    if (stop_) return;
    std::span<SealJob> jobs = helper_jobs_;
    const CodecChoice* codec = helper_codec_;
    uint64_t point_id = helper_point_;
    lock.unlock();
    SealRange(*helper_sealer_, helper_scratch_, *codec, point_id, jobs);
    lock.lock();
    helper_busy_ = false;
    helper_done_ = true;
    cv_.notify_all();
  }
}

void ParallelSealer::SealAll(const CodecChoice& codec, uint64_t point_id, std::span<SealJob> jobs) {
  if (jobs.size() < kMinJobsToShare) {
    SealRange(*own_sealer_, own_scratch_, codec, point_id, jobs);
    return;
  }
  // Jobs are about the same size (64 KiB extents of one read): an even split.
  size_t shared = jobs.size() / 2;
  {
    std::lock_guard<std::mutex> lock(mu_);
    helper_jobs_ = jobs.first(shared);
    helper_codec_ = &codec;
    helper_point_ = point_id;
    helper_busy_ = true;
    helper_done_ = false;
  }
  cv_.notify_all();
  SealRange(*own_sealer_, own_scratch_, codec, point_id, jobs.subspan(shared));
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return helper_done_; });
  helper_done_ = false;
}

}  // namespace blockrep::agent
