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

#include "blockrep/base/status.h"

namespace blockrep {

inline constexpr uint64_t UserData(uint64_t id, uint8_t op) { return (id << 8) | op; }
inline constexpr uint64_t UserDataId(uint64_t ud) { return ud >> 8; }
inline constexpr uint8_t UserDataOp(uint64_t ud) { return static_cast<uint8_t>(ud & 0xff); }

class Ring {
 public:
  static Result<std::unique_ptr<Ring>> Create(unsigned entries);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // True when one more request may be queued without risking CQ overflow.
  bool HasRoom(unsigned n = 1) const { return inflight_ + n <= max_inflight_; }
  unsigned inflight() const { return inflight_; }

  // Returns a zeroed SQE counted as in flight; callers must check HasRoom() first.
  io_uring_sqe* Sqe();
  Status Submit();

  // Waits for at least one completion if `wait` (bounded by timeout_ms if >= 0), then hands every
  // available completion to `fn(user_data, res, flags)`. Returns the number handled.
  using Handler = std::function<void(uint64_t user_data, int res, uint32_t flags)>;
  Result<unsigned> Reap(const Handler& fn, bool wait, int timeout_ms = -1);

  // Synchronous single operations, for code paths with nothing else to overlap. Short reads and
  // writes are resubmitted. Only valid while no other request is in flight.
  Status ReadFull(int fd, uint8_t* buf, size_t len, uint64_t offset);
  Status WriteFull(int fd, const uint8_t* buf, size_t len, uint64_t offset);
  Status Fsync(int fd);

 private:
  Ring() = default;
  Result<int> RunOne(io_uring_sqe* sqe);
  io_uring ring_{};
  bool initialized_ = false;
  unsigned inflight_ = 0;
  unsigned max_inflight_ = 0;
};

}  // namespace blockrep
