// Store work that can take long — a point commit (load the base index, merge, write index and
// manifest), an index load and the preads of a fingerprint request, retention and compaction —
// runs on worker threads, so that the event loop keeps serving every other session meanwhile
// (one agent's million-entry commit must not delay another agent's acknowledgement).
//
// A job is two halves: `work` runs on a worker thread and returns `done`, which runs later on the
// loop thread (RunCompletions), where it may touch loop state again. The worker never touches
// loop state; the loop never touches what a running job owns. The staging keeps that second rule
// per server: while a job of a server is in flight, none of its sessions is serviced (Server::
// ServerState::jobs), so a server's store is used by one thread at a time.
//
// Wake-up: a job that finished writes to an eventfd; the loop keeps a read on it in its io_uring.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "blockrep/base/fs.h"
#include "blockrep/base/status.h"

namespace blockrep::staging {

class StoreWorker {
 public:
  using Done = std::function<void()>;
  using Work = std::function<Done()>;

  // At most this many jobs wait or run at once (a bound like every other: one per server in
  // practice, since a server's sessions wait while its job runs).
  static constexpr size_t kJobsMax = 4096;
  static constexpr unsigned kThreadsMax = 16;

  // With 0 threads, jobs run only when RunQueuedJob is called (the deterministic simulation's
  // scheduler decides when: tests/sim/).
  static Result<std::unique_ptr<StoreWorker>> Create(unsigned threads);
  ~StoreWorker();  // waits for running jobs; jobs still queued are dropped with their `done`
  StoreWorker(const StoreWorker&) = delete;
  StoreWorker& operator=(const StoreWorker&) = delete;

  // Loop thread. Queues `work`; false (and nothing queued) at kJobsMax.
  [[nodiscard]] bool Post(Work work);
  // Loop thread. Runs the `done` of every job that finished since the last call; returns how many.
  size_t RunCompletions();
  // Loop thread. Jobs posted whose `done` has not run yet.
  size_t outstanding() const { return outstanding_; }
  // A worker without threads: runs the oldest queued job on this thread; false when none waits.
  bool RunQueuedJob();
  // Readable (8 bytes, the eventfd counter) once a job finished.
  int event_fd() const { return event_fd_.get(); }

 private:
  StoreWorker() = default;
  void ThreadMain();
  // A job's work returned `done`: queues it for the loop and wakes the loop.
  void Finish(Done done);

  UniqueFd event_fd_;
  std::vector<std::thread> threads_;
  size_t outstanding_ = 0;  // loop thread only

  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  bool stop_ = false;
  std::deque<Work> queue_;
  std::vector<Done> finished_;
};

}  // namespace blockrep::staging
