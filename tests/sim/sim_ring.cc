#include "sim_ring.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "blockrep/base/check.h"
#include "blockrep/base/cli.h"

namespace blockrep::sim {

SimRing::SimRing(SimWorld* world, FaultEnv* env, unsigned entries, bool drives)
    : Ring(entries * 2), world_(world), env_(env), drives_(drives) {}

SimRing::~SimRing() = default;

io_uring_sqe* SimRing::NextSqe() {
  // The caller filled the previous SQE (and its IOSQE_IO_LINK) before asking for this one.
  Op* prev = pending_.empty() ? nullptr : &pending_.back();
  Op& op = pending_.emplace_back();
  if (prev != nullptr && (prev->sqe.flags & IOSQE_IO_LINK) != 0) op.after = prev;
  return &op.sqe;
}

Result<int> SimRing::RunOne(io_uring_sqe* sqe) {
  BR_CHECK(pending_.size() == 1 && &pending_.front().sqe == sqe);
  for (;;) {
    std::optional<int> res = dead_ ? std::optional<int>(-ECANCELED) : Attempt(*sqe);
    if (res) {
      pending_.clear();
      --inflight_;
      return *res;
    }
    BR_CHECK_MSG(drives_, "SimRing: a synchronous request that cannot finish on a ring that may not wait");
    world_->Wait(MonotonicNs() + 1000000);
  }
}

int SimRing::FileOp(File* f, const io_uring_sqe& sqe) {
  auto* buf = reinterpret_cast<uint8_t*>(sqe.addr);
  auto err = [](const Status& st) { return st.code() == Code::kNoSpace ? -ENOSPC : -EIO; };
  switch (sqe.opcode) {
    case IORING_OP_READ: {
      auto n = f->ReadAt(sqe.off, buf, sqe.len);
      return n.ok() ? static_cast<int>(*n) : err(n.status());
    }
    case IORING_OP_WRITE: {
      Status st = f->WriteAt(sqe.off, ByteSpan(buf, sqe.len));
      return st.ok() ? static_cast<int>(sqe.len) : err(st);
    }
    case IORING_OP_FSYNC: {
      Status st = f->Sync();
      return st.ok() ? 0 : err(st);
    }
    default:
      BR_UNREACHABLE("SimRing: opcode " + std::to_string(sqe.opcode) + " on a FaultEnv file");
  }
}

std::optional<int> SimRing::Attempt(const io_uring_sqe& sqe) {
  std::mt19937_64& rng = world_->rng();
  auto* buf = reinterpret_cast<uint8_t*>(sqe.addr);
  auto result = [](ssize_t n) -> std::optional<int> {
    if (n >= 0) return static_cast<int>(n);
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
    return -errno;
  };
  if (env_ != nullptr && sqe.fd >= FaultEnv::kFdBase) {
    File* f = env_->FileForFd(sqe.fd);
    BR_CHECK_MSG(f != nullptr, "SimRing: a request on a FaultEnv file that is closed");
    return FileOp(f, sqe);
  }
  switch (sqe.opcode) {
    case IORING_OP_READ: {
      size_t len = sqe.len;
      // A short read, as a kernel may give: whole 4 KiB blocks, so O_DIRECT rules still hold.
      if (len > 8192 && rng() % 8 == 0) len = 4096 * (1 + rng() % (len / 4096 - 1));
      ssize_t n = pread(sqe.fd, buf, len, static_cast<off_t>(sqe.off));
      if (n < 0 && errno == ESPIPE) n = read(sqe.fd, buf, len);  // an eventfd
      return result(n);
    }
    case IORING_OP_WRITE:
      return result(pwrite(sqe.fd, buf, sqe.len, static_cast<off_t>(sqe.off)));
    case IORING_OP_FSYNC:
      return result(fsync(sqe.fd));
    case IORING_OP_SEND: {
      if (world_->Stalled(sqe.fd)) return std::nullopt;
      size_t len = sqe.len;
      if (len > 1 && rng() % 8 == 0) len = 1 + rng() % (len - 1);  // a short send
      return result(send(sqe.fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL));
    }
    case IORING_OP_RECV:
      if (world_->Stalled(sqe.fd)) return std::nullopt;
      return result(recv(sqe.fd, buf, sqe.len, MSG_DONTWAIT));
    case IORING_OP_ACCEPT:
      return result(accept4(sqe.fd, nullptr, nullptr, static_cast<int>(sqe.accept_flags)));
    default:
      BR_UNREACHABLE("SimRing: unsupported opcode " + std::to_string(sqe.opcode));
  }
}

void SimRing::Finish(Op* op, int res) {
  ready_.emplace_back(op->sqe.user_data, res);
  finished_.push_back(op);
  bool ok = res >= 0 && !(op->sqe.opcode == IORING_OP_WRITE && static_cast<unsigned>(res) != op->sqe.len);
  Op* linked = nullptr;
  for (Op& o : pending_)
    if (o.after == op) linked = &o;
  pending_.remove_if([op](const Op& o) { return &o == op; });
  if (linked == nullptr) return;
  linked->after = nullptr;
  if (!ok) Finish(linked, -ECANCELED);  // a broken link cancels the rest of its chain
}

void SimRing::Progress() {
  if (dead_) {
    for (Op& op : pending_) ready_.emplace_back(op.sqe.user_data, -ECANCELED);
    pending_.clear();
    return;
  }
  finished_.clear();
  // Cancels first: they name requests by user_data.
  std::vector<Op*> cancels;
  for (Op& op : pending_)
    if (op.sqe.opcode == IORING_OP_ASYNC_CANCEL) cancels.push_back(&op);
  for (Op* c : cancels) {
    uint64_t target = c->sqe.addr;
    Op* victim = nullptr;
    for (Op& o : pending_)
      if (o.sqe.user_data == target && o.sqe.opcode != IORING_OP_ASYNC_CANCEL) victim = &o;
    if (victim != nullptr) Finish(victim, -ECANCELED);
    Finish(c, victim != nullptr ? 0 : -ENOENT);
  }
  // Each request gets one try, in a seeded order; some wait a turn (latency), which reorders
  // completions as a real device and network do.
  std::vector<Op*> order;
  for (Op& op : pending_) order.push_back(&op);
  std::shuffle(order.begin(), order.end(), world_->rng());
  for (Op* op : order) {
    if (std::find(finished_.begin(), finished_.end(), op) != finished_.end()) continue;
    if (op->after != nullptr || world_->rng()() % 4 == 0) continue;
    std::optional<int> res = Attempt(op->sqe);
    if (res) Finish(op, *res);
  }
}

Result<unsigned> SimRing::Reap(const Handler& fn, bool wait, int timeout_ms) {
  uint64_t deadline = MonotonicNs() + (timeout_ms >= 0 ? static_cast<uint64_t>(timeout_ms) * 1000000ull : 3600ull * 1000000000ull);
  for (;;) {
    Progress();
    if (!ready_.empty() || !wait || !drives_ || dead_) break;
    if (!world_->Wait(deadline)) {
      Progress();
      break;
    }
  }
  std::vector<std::pair<uint64_t, int>> done;
  done.swap(ready_);
  for (auto& [ud, res] : done) {
    --inflight_;
    fn(ud, res, 0);
  }
  return static_cast<unsigned>(done.size());
}

}  // namespace blockrep::sim
