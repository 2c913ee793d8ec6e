// The agent's connection to the staging (docs/PROTOCOL.md): TCP connect, the TLS handshake and
// HELLO, liveness (a PING after kPingAfterNs of silence, a reconnect after kPeerSilentNs), the
// window of unacknowledged RECORDs, and the frames the link answers itself (HELLO_OK, ERROR,
// PONG). The frames that drive a point (ACK, POINT_ACK, FINGERPRINTS, BASE_SEAL) go to the agent.
// The ring is the agent's, shared with the read pipeline: the agent reaps it and hands the
// channel's completions here.
#pragma once

#include <csignal>
#include <functional>
#include <memory>
#include <optional>

#include "blockrep/base/fs.h"
#include "blockrep/net/channel.h"
#include "blockrep/base/cli.h"
#include "blockrep/net/tls.h"
#include "blockrep/net/uring.h"
#include "blockrep/net/wire.h"
#include "ack_window.h"

namespace blockrep::agent {

class StagingLink {
 public:
  static constexpr uint64_t kChannelId = 1;             // io_uring user-data id of the channel
  static constexpr size_t kInboxBytesMax = 1u << 20;  // the staging sends small frames only

  // Makes the connection's socket: a TCP connect to the staging unless a test replaces it.
  using Connector = std::function<Result<UniqueFd>()>;
  // `send_reserve`: bytes of send buffer to keep (the most the agent queues at once). `stagings`:
  // one or more addresses (frontends of one bucket), tried in turn (NextStaging).
  StagingLink(Ring* ring, std::vector<HostPort> stagings, size_t send_reserve, Connector connect = nullptr);
  // The next Connect goes to the next staging of the list (after a failed session).
  void NextStaging() { current_ = (current_ + 1) % stagings_.size(); }
  size_t staging_count() const { return stagings_.size(); }
  std::string staging_name() const { return stagings_[current_].host + ":" + std::to_string(stagings_[current_].port); }
  Status Init(const TlsFiles& tls);

  // A new connection: TCP connected, the TLS session set up, the session's state forgotten.
  Status Connect();
  // The TLS handshake, then HELLO until HELLO_OK. `step` runs the agent's event loop once.
  Status Handshake(const volatile std::sig_atomic_t* term, const wire::Hello& hello,
                   const std::function<Status()>& step);
  // An error once the staging has been silent too long; a PING when one is due.
  Status CheckLiveness();
  Status Pump() { return ch_->Pump(); }
  Status OnCompletion(uint8_t op, int res);
  // Parses the inbox: HELLO_OK, ERROR and PONG are taken here, every other frame goes to
  // `handler` in order. A staging's ERROR is kept in peer_error().
  Status HandleInbox(const std::function<Status(const wire::Frame&)>& handler);
  Status Send(ByteSpan frames) { return ch_->Send(frames); }
  Status SendFrame(wire::MsgType type, const Bytes& payload);
  // Shuts the connection down; the caller then reaps the ring (OnCompletion ignoring errors)
  // and calls Drop once nothing is in flight.
  void Close();
  void Drop() { ch_.reset(); }

  bool connected() const { return ch_ != nullptr; }
  size_t unsent_bytes() const { return ch_->unsent_bytes(); }
  const std::optional<wire::HelloOk>& hello() const { return hello_ok_; }
  // Only the first point of a session can resume the staging's interrupted point.
  void ForgetPendingPoint() {
    if (hello_ok_) hello_ok_->pending_point_id = 0;
  }
  const std::optional<Status>& peer_error() const { return peer_error_; }
  // This session was refused in a way that heals by itself (at capacity, handshake evicted).
  bool refused_retryable() const { return refused_retryable_; }
  AckWindow& window() { return window_; }
  const AckWindow& window() const { return window_; }

 private:
  Ring* ring_;
  std::vector<HostPort> stagings_;  // at least one
  size_t current_ = 0;
  Connector connect_;
  size_t send_reserve_;
  std::unique_ptr<TlsContext> tls_;
  std::unique_ptr<Channel> ch_;
  std::optional<wire::HelloOk> hello_ok_;
  uint64_t last_heard_ns_ = 0;  // last bytes from the staging
  bool ping_outstanding_ = false;
  std::optional<Status> peer_error_;
  bool refused_retryable_ = false;
  AckWindow window_;  // RECORDs not yet acknowledged durable
};

}  // namespace blockrep::agent
