// The agent's window of RECORDs the staging has not yet acknowledged durable (docs/PROTOCOL.md,
// Window): sequence numbers start at 1 on each connection; an ACK names the newest durable one
// and must not go backwards or past what was sent. The agent stops reading volumes while the
// window holds its limit of frame bytes.
#pragma once

#include <cstdint>
#include <deque>
#include <utility>

#include "blockrep/base/status.h"

namespace blockrep::agent {

class AckWindow {
 public:
  // A new connection: nothing is in flight, numbering starts over.
  void Reset();
  // A RECORD frame of `frame_bytes` is queued; returns its sequence number.
  uint64_t Sent(uint64_t frame_bytes);
  // The staging's ACK of `durable_seq`: a protocol error when it goes backwards or names a
  // record never sent.
  Status Acked(uint64_t durable_seq);

  uint64_t last_sent() const { return next_seq_ - 1; }
  uint64_t acked() const { return acked_seq_; }
  uint64_t unacked_bytes() const { return unacked_bytes_; }
  bool empty() const { return unacked_.empty(); }
  uint64_t acked_bytes_total() const { return acked_bytes_total_; }  // over every connection

 private:
  uint64_t next_seq_ = 1;
  uint64_t acked_seq_ = 0;
  std::deque<std::pair<uint64_t, uint64_t>> unacked_;  // (seq, frame bytes)
  uint64_t unacked_bytes_ = 0;
  uint64_t acked_bytes_total_ = 0;
};

}  // namespace blockrep::agent
