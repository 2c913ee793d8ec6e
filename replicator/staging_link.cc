#include "staging_link.h"

#include "blockrep/base/check.h"
#include "blockrep/base/fs.h"
#include "blockrep/net/tcp.h"
#include "blockrep/base/cli.h"

namespace blockrep::agent {

StagingLink::StagingLink(Ring* ring, std::vector<HostPort> stagings, size_t send_reserve, Connector connect)
    : ring_(ring), stagings_(std::move(stagings)), connect_(std::move(connect)), send_reserve_(send_reserve) {
  BR_CHECK(!stagings_.empty());
}

Status StagingLink::Init(const TlsFiles& tls) {
  BR_ASSIGN_OR_RETURN(tls_, TlsContext::Create(tls, false));
  return Status::Ok();
}

Status StagingLink::Connect() {
  hello_ok_.reset();
  peer_error_.reset();
  refused_retryable_ = false;
  window_.Reset();
  const HostPort& staging = stagings_[current_];
  std::string where = staging_name();
  BR_ASSIGN_OR_RETURN(UniqueFd owned, connect_ ? connect_() : ConnectToStaging(staging, where));
  BR_ASSIGN_OR_RETURN(auto tls, TlsSession::Create(tls_.get(), staging.host));
  ch_ = std::make_unique<Channel>(ring_, owned.Release(), std::move(tls), kChannelId, kInboxBytesMax);
  ch_->ReserveSend(send_reserve_);
  return Status::Ok();
}

Status StagingLink::SendFrame(wire::MsgType type, const Bytes& payload) {
  Bytes frame;
  wire::AppendFrame(&frame, type, payload);
  return ch_->Send(frame);
}

Status StagingLink::CheckLiveness() {
  uint64_t silent_ns = MonotonicNs() - last_heard_ns_;
  if (silent_ns > wire::kPeerSilentNs)
    return Unavailable("no word from the staging for " + std::to_string(silent_ns / 1000000000) +
                       " s (connection half-open, or the staging is stuck); reconnecting");
  if (hello_ok_ && silent_ns > wire::kPingAfterNs && !ping_outstanding_) {
    BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kPing, Bytes()));
    ping_outstanding_ = true;
  }
  return Status::Ok();
}

Status StagingLink::OnCompletion(uint8_t op, int res) {
  if (op == Channel::kOpRecv && res > 0) {
    last_heard_ns_ = MonotonicNs();
    ping_outstanding_ = false;
  }
  return ch_->OnCompletion(op, res);
}

Status StagingLink::HandleInbox(const std::function<Status(const wire::Frame&)>& handler) {
  for (;;) {
    auto frame = wire::ParseFrame(ch_->inbox());
    if (!frame.ok()) return frame.status().Annotate("staging sent a malformed frame");
    if (!frame->has_value()) return Status::Ok();
    const wire::Frame& f = **frame;
    switch (f.type) {
      case wire::MsgType::kHelloOk: {
        BR_ASSIGN_OR_RETURN(auto ok, wire::HelloOk::Decode(f.payload));
        hello_ok_ = ok;
        break;
      }
      case wire::MsgType::kError: {
        BR_ASSIGN_OR_RETURN(auto e, wire::ErrorMsg::Decode(f.payload));
        if (e.code == wire::ErrorCode::kAtCapacity) refused_retryable_ = true;
        peer_error_ = Status(wire::AgentStatusCode(e.code), "staging refused: " + e.message);
        break;
      }
      case wire::MsgType::kPong:
        BR_RETURN_IF_ERROR(wire::DecodeEmpty(f.payload, "PONG"));
        break;
      default:
        BR_RETURN_IF_ERROR(handler(f));
    }
    ch_->Consume(f.total_size);
  }
}

Status StagingLink::Handshake(const volatile std::sig_atomic_t* term, const wire::Hello& hello,
                              const std::function<Status()>& step) {
  last_heard_ns_ = MonotonicNs();  // the connection is new: silence counts from here
  ping_outstanding_ = false;
  while (!ch_->handshake_done()) {
    if (*term) return Unavailable("interrupted");
    Status st = step();
    if (!st.ok() && st.code() == Code::kUnavailable) refused_retryable_ = true;  // cut off mid-handshake
    if (!st.ok()) return st.Annotate("cannot establish TLS with staging " + stagings_[current_].host);
  }
  BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kHello, hello.Encode()));
  while (!hello_ok_) {
    if (*term) return Unavailable("interrupted");
    Status st = step();
    if (!st.ok()) {
      // In TLS 1.3 a rejected client certificate surfaces only at our first read.
      if (st.code() == Code::kUnauthenticated && st.message().find("revoked") != std::string::npos)
        return Unauthenticated("the staging refused our TLS certificate: it was revoked (" + st.message() +
                               "); issue a new one with blockrep-keygen --server-id " + hello.server_id);
      if (st.code() == Code::kUnauthenticated)
        return Unauthenticated("the staging rejected our TLS certificate (" + st.message() +
                               "); is it signed by the staging's CA? check --tls-cert/--tls-ca");
      if (st.message().find("closed by peer") != std::string::npos) {
        refused_retryable_ = true;  // at capacity, or evicted from the handshake budget: try again
        return Unavailable("the staging closed the connection before accepting us (it may have "
                           "rejected our TLS certificate; see the staging's log)");
      }
      return st;
    }
  }
  if (hello_ok_->version != wire::kVersion)
    return ProtocolError("staging chose protocol version " + std::to_string(hello_ok_->version));
  return Status::Ok();
}

void StagingLink::Close() {
  if (!ch_) return;
  ch_->tls().Shutdown();
  ch_->Pump().IgnoreError();  // close_notify is a courtesy; the point is already durable or lost
  ch_->Shutdown();
}

}  // namespace blockrep::agent
