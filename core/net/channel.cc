#include "blockrep/net/channel.h"

#include "blockrep/base/check.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace blockrep {

Channel::Channel(Ring* ring, int fd, std::unique_ptr<TlsSession> tls, uint64_t id, size_t inbox_max)
    : ring_(ring), fd_(fd), tls_(std::move(tls)), id_(id), inbox_max_(inbox_max),
      recv_buf_(kRecvChunk) {}

Channel::~Channel() {
  if (fd_ >= 0) close(fd_);
}

void Channel::Consume(size_t n) {
  // More than is held would corrupt the stream: a caller bug.
  BR_CHECK_MSG(n <= inbox_.size() - inbox_start_,
               "Channel::Consume(" + std::to_string(n) + ") with " + std::to_string(inbox_.size() - inbox_start_) + " bytes held");
  inbox_start_ += n;
  inbox_need_ = 0;
  if (inbox_start_ == inbox_.size()) {
    inbox_.clear();
    inbox_start_ = 0;
  } else if (inbox_start_ > inbox_.size() / 2) {
    inbox_.erase(inbox_.begin(), inbox_.begin() + static_cast<ptrdiff_t>(inbox_start_));
    inbox_start_ = 0;
  }
}

Status Channel::DrainTls() {
  if (!tls_->handshake_done()) {
    BR_ASSIGN_OR_RETURN(bool done, tls_->Handshake());
    if (!done) return Status::Ok();
  }
  const size_t held = inbox_.size() - inbox_start_, limit = InboxLimit();
  if (held >= limit) return Status::Ok();
  // The inbox never needs more than its limit: consumed bytes go first, and it grows to that
  // size at once rather than doubling past it (many sessions share the process's memory); once
  // a large frame is consumed, it shrinks back.
  if (inbox_start_ > 0) {
    inbox_.erase(inbox_.begin(), inbox_.begin() + static_cast<ptrdiff_t>(inbox_start_));
    inbox_start_ = 0;
  }
  if (inbox_.capacity() > 2 * limit) {
    RawBytes smaller;
    smaller.reserve(limit);
    smaller.assign(inbox_.begin(), inbox_.end());
    inbox_.swap(smaller);
  }
  if (inbox_.capacity() < limit) inbox_.reserve(limit);
  return tls_->ReadPlaintext(&inbox_, limit - held);
}

void Channel::ReserveSend(size_t bytes) {
  tls_->outgoing().reserve(bytes);
  send_buf_.reserve(bytes);
}

void Channel::ReleaseBuffers() {
  if (inbox_start_ == inbox_.size()) {
    RawBytes().swap(inbox_);
    inbox_start_ = 0;
  }
  if (!send_inflight_ && send_done_ == send_buf_.size()) {
    RawBytes().swap(send_buf_);
    send_done_ = 0;
  }
  if (tls_->outgoing().empty()) RawBytes().swap(tls_->outgoing());
}

Status Channel::Pump() {
  if (closing_) return Status::Ok();
  BR_RETURN_IF_ERROR(DrainTls());
  if (sending_stopped_) tls_->outgoing().clear();
  if (!send_inflight_ && !sending_stopped_) {
    RawBytes& out = tls_->outgoing();
    if (send_done_ == send_buf_.size() && !out.empty()) {
      // Everything TLS produced goes in one send, by swapping buffers: taking a chunk off the
      // front of `out` moved the rest of it (up to the owner's unsent limit) on every send.
      send_buf_.clear();
      send_buf_.swap(out);
      send_done_ = 0;
    }
    if (send_done_ < send_buf_.size() && ring_->HasRoom()) {
      io_uring_sqe* sqe = ring_->Sqe();
      io_uring_prep_send(sqe, fd_, send_buf_.data() + send_done_, send_buf_.size() - send_done_,
                         MSG_NOSIGNAL);
      io_uring_sqe_set_data64(sqe, UserData(id_, kOpSend));
      send_inflight_ = true;
    }
  }
  size_t held = inbox_.size() - inbox_start_;
  if (!recv_inflight_ && !peer_closed_ && held < InboxLimit() && ring_->HasRoom()) {
    if (recv_buf_.size() != recv_chunk_) RawBytes(recv_chunk_).swap(recv_buf_);  // none in flight: safe
    io_uring_sqe* sqe = ring_->Sqe();
    io_uring_prep_recv(sqe, fd_, recv_buf_.data(), recv_buf_.size(), 0);
    io_uring_sqe_set_data64(sqe, UserData(id_, kOpRecv));
    recv_inflight_ = true;
  }
  return Status::Ok();
}

Status Channel::OnCompletion(uint8_t op, int res) {
  if (op == kOpSend) {
    send_inflight_ = false;
    if (closing_) return Status::Ok();
    if (res == -EINTR || res == -EAGAIN) return Status::Ok();  // Pump resubmits
    if (res < 0) return ErrnoStatus("send", -res);
    send_done_ += static_cast<size_t>(res);  // a short send is resubmitted by Pump
    if (send_done_ == send_buf_.size()) {
      send_buf_.clear();
      send_done_ = 0;
    }
    return Status::Ok();
  }
  if (op == kOpRecv) {
    recv_inflight_ = false;
    if (closing_) return Status::Ok();
    if (res == -EINTR || res == -EAGAIN) return Status::Ok();
    if (res < 0) {
      peer_closed_ = true;
      return ErrnoStatus("receive", -res);
    }
    if (res == 0) {
      peer_closed_ = true;
      // Plaintext already buffered may still hold the peer's last frames (an ERROR, say).
      BR_RETURN_IF_ERROR(DrainTls());
      return Unavailable("connection closed by peer");
    }
    // TLS reads the received bytes where they are; what it leaves (a record's start, or all when
    // the inbox is full) is copied before recv_buf_ takes the next receive.
    tls_->LendCiphertext(ByteSpan(recv_buf_.data(), static_cast<size_t>(res)));
    Status drained = DrainTls();
    tls_->KeepUnread();
    return drained;
  }
  BR_UNREACHABLE("channel got a completion for unknown op " + std::to_string(op));
}

void Channel::FlushBestEffort() {
  if (send_inflight_ || closing_) return;
  RawBytes& out = tls_->outgoing();
  if (send_done_ < send_buf_.size() || out.empty()) return;
  ssize_t n = send(fd_, out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)n;  // best effort by design: the connection is being dropped either way
  out.clear();
}

void Channel::StopSending() {
  sending_stopped_ = true;
  tls_->outgoing().clear();
  if (!send_inflight_) {
    send_buf_.clear();
    send_done_ = 0;
  }
}

void Channel::Shutdown() {
  if (closing_) return;
  closing_ = true;
  // Makes in-flight recv/send complete, so the owner can reap them before freeing buffers.
  shutdown(fd_, SHUT_RDWR);
}

}  // namespace blockrep
