// One TLS connection driven by io_uring. Invariants: at most one send and one recv in flight
// (never two unlinked sends on one socket); the plaintext inbox never grows past `inbox_max`
// (recv is not re-posted until the consumer makes room), so a fast peer cannot exhaust memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"
#include "blockrep/net/tls.h"
#include "blockrep/net/uring.h"

namespace blockrep {

class Channel {
 public:
  static constexpr uint8_t kOpRecv = 1;
  static constexpr uint8_t kOpSend = 2;
  static constexpr size_t kRecvChunk = 256 * 1024;

  Channel(Ring* ring, int fd, std::unique_ptr<TlsSession> tls, uint64_t id, size_t inbox_max);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Posts the recv/send requests the channel needs now. Call after handling any event.
  Status Pump();
  // Handles a completion whose UserDataId is this channel's id.
  Status OnCompletion(uint8_t op, int res);

  bool handshake_done() const { return tls_->handshake_done(); }
  TlsSession& tls() { return *tls_; }

  // Plaintext received and not yet consumed.
  ByteSpan inbox() const { return ByteSpan(inbox_).subspan(inbox_start_); }
  void Consume(size_t n);
  // The inbox holds at most this much; lowered when many sessions share the process's memory.
  void set_inbox_max(size_t bytes) { inbox_max_ = bytes; }
  // The owner's next frame is `bytes` long in all (its header is in the inbox): the inbox may grow
  // to hold it whole, past inbox_max, until the next Consume (then it shrinks back).
  void NeedWhole(size_t bytes) { inbox_need_ = bytes; }
  // The size of the receive buffer, from the next receive on (one is kept per connection).
  void set_recv_chunk(size_t bytes) { recv_chunk_ = bytes; }
  // Gives back the memory of empty buffers (the inbox, the send buffers) that grew while the peer
  // was busy; an idle connection keeps only its receive chunk.
  void ReleaseBuffers();

  Status Send(ByteSpan plaintext) { return tls_->WritePlaintext(plaintext); }
  // Sizes both outgoing buffers (TLS output, the send in flight) for an owner that keeps
  // unsent_bytes() under about `bytes`, once: left to grow, each doubles past the owner's limit.
  void ReserveSend(size_t bytes);
  // Ciphertext not yet handed to the kernel.
  size_t unsent_bytes() const { return tls_->outgoing().size() + (send_buf_.size() - send_done_); }

  // Error path only: hands queued ciphertext (a TLS alert, say) to the socket without waiting,
  // so the peer learns why it is being dropped. Skipped while a send is in flight.
  void FlushBestEffort();
  // The peer is gone but its last frames are still wanted: from now on nothing is sent (what
  // waits is dropped; a send in flight completes on its own), and Pump only receives, until the
  // peer's close or a receive error ends it (receive_ended()).
  void StopSending();
  bool receive_ended() const { return peer_closed_ && !recv_inflight_; }
  // Stops reading and writes; in-flight requests complete with errors, after which idle() holds.
  void Shutdown();
  bool idle() const { return !send_inflight_ && !recv_inflight_; }
  bool closing() const { return closing_; }
  int fd() const { return fd_; }
  uint64_t id() const { return id_; }

 private:
  Status DrainTls();
  size_t InboxLimit() const { return std::max(inbox_max_, inbox_need_); }
  Ring* ring_;
  int fd_;
  std::unique_ptr<TlsSession> tls_;
  uint64_t id_;
  size_t inbox_max_;
  size_t inbox_need_ = 0;
  size_t recv_chunk_ = kRecvChunk;
  RawBytes inbox_;
  size_t inbox_start_ = 0;
  RawBytes recv_buf_;
  RawBytes send_buf_;
  size_t send_done_ = 0;
  bool send_inflight_ = false;
  bool recv_inflight_ = false;
  bool closing_ = false;
  bool peer_closed_ = false;  // by its close or a receive error: nothing more is received
  bool sending_stopped_ = false;
};

}  // namespace blockrep
