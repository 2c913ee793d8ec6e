#include "ack_window.h"

#include <string>

namespace blockrep::agent {

void AckWindow::Reset() {
  next_seq_ = 1;
  acked_seq_ = 0;
  unacked_.clear();
  unacked_bytes_ = 0;
}

uint64_t AckWindow::Sent(uint64_t frame_bytes) {
  unacked_.emplace_back(next_seq_, frame_bytes);
  unacked_bytes_ += frame_bytes;
  return next_seq_++;
}

Status AckWindow::Acked(uint64_t durable_seq) {
  if (durable_seq < acked_seq_ || durable_seq >= next_seq_)
    return ProtocolError("staging acknowledged sequence " + std::to_string(durable_seq) + " out of order");
  acked_seq_ = durable_seq;
  while (!unacked_.empty() && unacked_.front().first <= acked_seq_) {
    unacked_bytes_ -= unacked_.front().second;
    acked_bytes_total_ += unacked_.front().second;
    unacked_.pop_front();
  }
  return Status::Ok();
}

}  // namespace blockrep::agent
