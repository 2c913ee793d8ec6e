#include "blockrep/net/uring.h"

#include "blockrep/base/check.h"

#include <cerrno>
#include <cstring>

namespace blockrep {

namespace {

// The real ring: one io_uring instance.
class UringRing final : public Ring {
 public:
  UringRing() : Ring(0) {}
  ~UringRing() override {
    if (initialized_) io_uring_queue_exit(&ring_);
  }
  void set_max_inflight(unsigned n) { max_inflight_ = n; }
  io_uring ring_{};
  bool initialized_ = false;

  Status Submit() override {
    int rc = io_uring_submit(&ring_);
    if (rc < 0) return ErrnoStatus("io_uring_submit", -rc);
    return Status::Ok();
  }

  Result<unsigned> Reap(const Handler& fn, bool wait, int timeout_ms) override {
    io_uring_cqe* cqe = nullptr;
    if (wait) {
      int rc;
      if (timeout_ms >= 0) {
        __kernel_timespec ts{};
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
        rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
      } else {
        rc = io_uring_submit_and_wait(&ring_, 1);
      }
      if (rc < 0 && rc != -ETIME && rc != -EINTR) return ErrnoStatus("io_uring wait", -rc);
    } else {
      BR_RETURN_IF_ERROR(Submit());
    }
    unsigned handled = 0;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
      uint64_t ud = cqe->user_data;
      int res = cqe->res;
      uint32_t flags = cqe->flags;
      io_uring_cqe_seen(&ring_, cqe);
      --inflight_;
      ++handled;
      fn(ud, res, flags);
    }
    return handled;
  }

 protected:
  io_uring_sqe* NextSqe() override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      // SQ full: push what is queued to the kernel and retry; the SQ drains on submit.
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  Result<int> RunOne(io_uring_sqe*) override {
    BR_RETURN_IF_ERROR(Submit());
    io_uring_cqe* cqe = nullptr;
    int rc;
    do {
      rc = io_uring_wait_cqe(&ring_, &cqe);
    } while (rc == -EINTR);
    if (rc < 0) return ErrnoStatus("io_uring_wait_cqe", -rc);
    int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    --inflight_;
    return res;
  }
};

}  // namespace

Result<std::unique_ptr<Ring>> Ring::Create(unsigned entries) {
  auto r = std::make_unique<UringRing>();
  io_uring_params params{};
  int rc = io_uring_queue_init_params(entries, &r->ring_, &params);
  if (rc < 0)
    return ErrnoStatus("io_uring_queue_init (io_uring disabled? check "
                       "/proc/sys/kernel/io_uring_disabled)",
                       -rc);
  r->initialized_ = true;
  r->set_max_inflight(params.cq_entries);
  return std::unique_ptr<Ring>(std::move(r));
}

Status Ring::ReadFull(int fd, uint8_t* buf, size_t len, uint64_t offset) {
  BR_CHECK_MSG(inflight_ == 0, "Ring::ReadFull with requests in flight");
  size_t done = 0;
  while (done < len) {
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_read(sqe, fd, buf + done, static_cast<unsigned>(len - done), offset + done);
    BR_ASSIGN_OR_RETURN(int res, RunOne(sqe));
    if (res == -EINTR || res == -EAGAIN) continue;
    if (res < 0) return ErrnoStatus("read", -res);
    if (res == 0) return DataLoss("unexpected end of file at offset " + std::to_string(offset + done));
    done += static_cast<size_t>(res);
  }
  return Status::Ok();
}

Status Ring::WriteFull(int fd, const uint8_t* buf, size_t len, uint64_t offset) {
  BR_CHECK_MSG(inflight_ == 0, "Ring::WriteFull with requests in flight");
  size_t done = 0;
  while (done < len) {
    io_uring_sqe* sqe = Sqe();
    io_uring_prep_write(sqe, fd, buf + done, static_cast<unsigned>(len - done), offset + done);
    BR_ASSIGN_OR_RETURN(int res, RunOne(sqe));
    if (res == -EINTR || res == -EAGAIN) continue;
    if (res < 0) return ErrnoStatus("write", -res);
    if (res == 0) return IoError("write made no progress");
    done += static_cast<size_t>(res);
  }
  return Status::Ok();
}

Status Ring::Fsync(int fd) {
  BR_CHECK_MSG(inflight_ == 0, "Ring::Fsync with requests in flight");
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_fsync(sqe, fd, 0);
  BR_ASSIGN_OR_RETURN(int res, RunOne(sqe));
  if (res < 0) return ErrnoStatus("fsync", -res);
  return Status::Ok();
}

}  // namespace blockrep
