// A thin owner of one io_uring instance. It keeps the number of requests in flight at or below
// the completion queue's size (so completions are never dropped) and submits pending SQEs when
// the submission queue fills up.
//
// user_data convention: callers pack (object id << 8 | op) so that completions can be routed.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "blockrep/base/check.h"
#include "blockrep/base/status.h"

namespace blockrep {

inline constexpr uint64_t UserData(uint64_t id, uint8_t op) { return (id << 8) | op; }
inline constexpr uint64_t UserDataId(uint64_t ud) { return ud >> 8; }
inline constexpr uint8_t UserDataOp(uint64_t ud) { return static_cast<uint8_t>(ud & 0xff); }

// The ring's interface: the staging and the agent prepare io_uring SQEs (io_uring_prep_*) into
// what Sqe() hands out and learn results through Reap. Create() makes the real one (io_uring); the
// deterministic simulation (tests/sim/sim_ring.h) carries the same SQEs out itself, in an order
// and with failures its seed chooses.
class Ring {
 public:
  static Result<std::unique_ptr<Ring>> Create(unsigned entries);
  virtual ~Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // True when one more request may be queued without risking CQ overflow.
  bool HasRoom(unsigned n = 1) const { return inflight_ + n <= max_inflight_; }
  unsigned inflight() const { return inflight_; }

  // Returns a zeroed SQE counted as in flight; callers must check HasRoom() first.
  io_uring_sqe* Sqe() {
    BR_CHECK_MSG(HasRoom(), "Ring::Sqe without room: check HasRoom() first");
    io_uring_sqe* sqe = NextSqe();
    if (sqe != nullptr) ++inflight_;
    return sqe;
  }
  virtual Status Submit() = 0;

  // Waits for at least one completion if `wait` (bounded by timeout_ms if >= 0), then hands every
  // available completion to `fn(user_data, res, flags)`. Returns the number handled.
  using Handler = std::function<void(uint64_t user_data, int res, uint32_t flags)>;
  virtual Result<unsigned> Reap(const Handler& fn, bool wait, int timeout_ms = -1) = 0;

  // Synchronous single operations, for code paths with nothing else to overlap. Short reads and
  // writes are resubmitted. Only valid while no other request is in flight.
  Status ReadFull(int fd, uint8_t* buf, size_t len, uint64_t offset);
  Status WriteFull(int fd, const uint8_t* buf, size_t len, uint64_t offset);
  Status Fsync(int fd);

 protected:
  explicit Ring(unsigned max_inflight) : max_inflight_(max_inflight) {}
  // A zeroed SQE, or null when none can be had.
  virtual io_uring_sqe* NextSqe() = 0;
  // Submits `sqe` (the only request in flight), waits for its result and counts it out.
  virtual Result<int> RunOne(io_uring_sqe* sqe) = 0;

  unsigned inflight_ = 0;  // implementations count each completion they hand out
  unsigned max_inflight_;
};

// Makes a ring with at least `entries` SQ entries; Ring::Create unless a test replaces it.
using RingFactory = std::function<Result<std::unique_ptr<Ring>>(unsigned entries)>;

}  // namespace blockrep
