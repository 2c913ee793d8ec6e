// The simulation's ring (blockrep/net/uring.h): the staging's and the agent's code prepare SQEs
// as they do for io_uring, and this ring carries them out itself, in one thread, in an order its
// world's seeded generator chooses: reads and writes of real files (the volumes) and of FaultEnv
// files (the store, through FaultEnv::FileForFd), sends and receives on the world's Unix sockets,
// accepts, eventfd reads, cancels and linked write + fsync pairs. Any other opcode is a BR_CHECK.
// Short reads, writes and sends happen as the kernel's may, so the resubmission paths run.
//
// A Reap that must wait hands the thread to the world (SimWorld::Wait), which runs the rest of
// the system a step and moves the simulated clock: waiting is where the actors interleave.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "blockrep/net/uring.h"
#include "fault_env.h"

namespace blockrep::sim {

// What a ring needs of the world it runs in.
class SimWorld {
 public:
  virtual ~SimWorld() = default;
  // The ring's owner has nothing to do until monotonic `deadline_ns`: the rest of the world runs
  // one step, then time moves on (never past the deadline). False once the deadline is reached.
  virtual bool Wait(uint64_t deadline_ns) = 0;
  // Socket operations on `fd` do not complete for now (a stalled connection).
  virtual bool Stalled(int fd) = 0;
  virtual std::mt19937_64& rng() = 0;
};

class SimRing final : public Ring {
 public:
  // `env`: where FaultEnv descriptors lead (null: none); `drives`: a Reap that waits may run the
  // world (the agent's ring; the staging's is stepped by the world and never waits).
  SimRing(SimWorld* world, FaultEnv* env, unsigned entries, bool drives);
  ~SimRing() override;

  Status Submit() override { return Status::Ok(); }
  Result<unsigned> Reap(const Handler& fn, bool wait, int timeout_ms) override;
  // The process died: nothing in flight touches memory or files again; a later Reap hands each
  // request back as cancelled (so an owner's teardown can drain).
  void Kill() { dead_ = true; }

 protected:
  io_uring_sqe* NextSqe() override;
  Result<int> RunOne(io_uring_sqe* sqe) override;

 private:
  struct Op {
    io_uring_sqe sqe{};
    Op* after = nullptr;  // IOSQE_IO_LINK: runs once this request succeeded (cancelled if it failed)
  };
  // Tries every pending request once, in a seeded order; finished ones go to ready_.
  void Progress();
  // The request's result now, or nothing when it cannot finish yet.
  std::optional<int> Attempt(const io_uring_sqe& sqe);
  int FileOp(File* f, const io_uring_sqe& sqe);
  // Hands the request's result out, and starts or cancels what was linked after it.
  void Finish(Op* op, int res);

  SimWorld* world_;
  FaultEnv* env_;
  bool drives_;
  bool dead_ = false;
  std::vector<Op*> finished_;  // in this Progress pass
  std::list<Op> pending_;  // submission order (stable addresses: the caller fills the SQE after NextSqe)
  std::vector<std::pair<uint64_t, int>> ready_;  // user_data, res
};

}  // namespace blockrep::sim
