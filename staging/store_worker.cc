#include "store_worker.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "blockrep/base/check.h"

namespace blockrep::staging {

Result<std::unique_ptr<StoreWorker>> StoreWorker::Create(unsigned threads) {
  if (threads > kThreadsMax) return InvalidArgument("store worker threads must be 0.." + std::to_string(kThreadsMax));
  std::unique_ptr<StoreWorker> w(new StoreWorker());
  w->event_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!w->event_fd_.valid()) return ErrnoStatus("eventfd", errno);
  for (unsigned i = 0; i < threads; ++i) w->threads_.emplace_back([p = w.get()] { p->ThreadMain(); });
  return w;
}

StoreWorker::~StoreWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

bool StoreWorker::Post(Work work) {
  BR_CHECK(work);
  if (outstanding_ >= kJobsMax) return false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(work));
  }
  ++outstanding_;
  cv_.notify_one();
  return true;
}

size_t StoreWorker::RunCompletions() {
  std::vector<Done> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done.swap(finished_);
  }
  BR_CHECK(done.size() <= outstanding_);
  for (Done& d : done) {
    --outstanding_;  // before `d`, which may post the next job
    if (d) d();
  }
  return done.size();
}

bool StoreWorker::RunQueuedJob() {
  BR_CHECK_MSG(threads_.empty(), "RunQueuedJob is for a worker without threads");
  Work work;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.empty()) return false;
    work = std::move(queue_.front());
    queue_.pop_front();
  }
  Finish(work());
  return true;
}

void StoreWorker::ThreadMain() {
  for (;;) {
    Work work;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    Finish(work());
  }
}

void StoreWorker::Finish(Done done) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished_.push_back(std::move(done));
    }
    uint64_t one = 1;
    // The counter only saturates after 2^64-2 unread wake-ups (EAGAIN: retried); any other
    // failure would leave the loop asleep with a finished job.
    while (write(event_fd_.get(), &one, sizeof one) != static_cast<ssize_t>(sizeof one))
    BR_CHECK_MSG(errno == EINTR || errno == EAGAIN, std::string("write the store worker's eventfd: ") + std::strerror(errno));
}

}  // namespace blockrep::staging
