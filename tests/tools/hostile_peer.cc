// blockrep_hostile_peer: an agent gone bad, for the tests. It holds a server's real certificate
// and data key (what ransomware holds on the day it strikes) and speaks the wire protocol
// (docs/PROTOCOL.md) to the real staging, but sends what a genuine agent never would:
//   points  commits one empty, consistent point per --time (on top of the chain's last point),
//           each in a session of its own, and prints one line per point:
//             "point ID time NS: acknowledged" or "point ID time NS: refused: MESSAGE"
//           --time is NS (UTC nanoseconds), "now", "now-SECONDS" or "now+SECONDS".
//   flood   sends --requests FINGERPRINT_REQUESTs (64 MiB of volume 0 each) and never reads a
//           reply, holding the session open for --hold-seconds; prints "flooded N requests".
//   big     one session that commits a point of --records 4 KiB records (genuinely sealed, one
//           per 8 KiB of volume 0, so none coalesce), then --points empty incremental points on
//           top: each commit loads and rebuilds an index of --records entries. Prints
//           "point ID: N records acknowledged in MS ms" per point.
//   hangup  one session that sends a point of --records 4 KiB records, its SEAL and END_POINT,
//           and, once the staging's kernel has them all, closes the socket without reading a
//           reply (an agent killed right after END_POINT: the unread replies make it a reset); then, in a new session, prints "hung up after END_POINT of point P; the
//           chain ends at point L".
//   stall   one session: HELLO, prints "hello ok", waits until the file --go-file exists, then
//           sends a point of --records 4 KiB records, its SEAL and END_POINT and prints the
//           answer: "point ID acknowledged", "point ID refused: MESSAGE" or "point ID: session closed".
//   ping    a well-behaved session of another server that sends a PING every 20 ms for
//           --seconds (or until SIGINT or SIGTERM) and prints "pings N p50 MS p99 MS max MS" (round trips).
// Usage: blockrep_hostile_peer MODE --staging HOST:PORT --server-id ID --key FILE
//          --tls-cert F --tls-key F --tls-ca F [--volume-bytes N ...] [--time T ...]
//          [--requests N] [--hold-seconds S] [--seconds S] [--records N] [--points N]
// Blocking sockets and plain OpenSSL: it is a test's attacker, not part of the product.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/cli.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/keyfile.h"
#include "blockrep/crypto/record.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/store/store.h"
#include "blockrep/net/tls.h"
#include "blockrep/net/wire.h"

namespace blockrep {
namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "blockrep_hostile_peer: error: %s\n", what.c_str());
  std::exit(2);
}

struct Options {
  std::string mode, staging, server_id, key, cert, tls_key, ca;
  std::vector<uint64_t> volume_bytes;
  std::vector<std::string> times;
  uint64_t requests = 10000, hold_seconds = 5, seconds = 5, records = 100000, points = 3;
  std::string go_file;
};

// One TLS session to the staging over a blocking socket.
class Peer {
 public:
  Peer(TlsContext* ctx, const HostPort& hp) {
    fd_ = socket(hp.addr.ss_family, SOCK_STREAM, 0);
    if (fd_ < 0 || connect(fd_, reinterpret_cast<const sockaddr*>(&hp.addr), hp.addr_len) != 0)
      Die("cannot connect to the staging " + hp.host + ":" + std::to_string(hp.port));
    ssl_ = SSL_new(ctx->ctx());
    SSL_set_fd(ssl_, fd_);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), hp.host.c_str());
    if (SSL_connect(ssl_) != 1) Die("TLS handshake failed: " + TakeOpenSslError());
  }
  ~Peer() { HangUp(); }
  // Closes the socket as a killed process does: no TLS close_notify, replies left unread.
  void HangUp() {
    if (fd_ < 0) return;
    SSL_free(ssl_);
    ssl_ = nullptr;
    close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }
  void Send(wire::MsgType type, ByteSpan payload) {
    Bytes frame;
    wire::AppendFrame(&frame, type, payload);
    if (SSL_write(ssl_, frame.data(), static_cast<int>(frame.size())) != static_cast<int>(frame.size()))
      Die("TLS write failed: " + TakeOpenSslError());
  }
  // False when the write failed or timed out (SO_SNDTIMEO): the staging stopped reading.
  bool TrySend(const Bytes& frame) {
    return SSL_write(ssl_, frame.data(), static_cast<int>(frame.size())) == static_cast<int>(frame.size());
  }
  // The next frame; nullopt when the staging closed the session.
  std::optional<std::pair<wire::MsgType, Bytes>> Receive() {
    for (;;) {
      auto f = wire::ParseFrame(in_);
      if (!f.ok()) Die("staging sent a malformed frame: " + f.status().message());
      if (f->has_value()) {
        const wire::Frame& fr = **f;
        std::pair<wire::MsgType, Bytes> out{fr.type, Bytes(fr.payload.begin(), fr.payload.end())};
        in_.erase(in_.begin(), in_.begin() + static_cast<ptrdiff_t>(fr.total_size));
        return out;
      }
      uint8_t buf[16384];
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      in_.insert(in_.end(), buf, buf + n);
    }
  }

 private:
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  Bytes in_;
};

uint64_t ParseTime(const std::string& t, uint64_t now_ns) {
  if (t == "now") return now_ns;
  if (t.rfind("now-", 0) == 0) return now_ns - std::stoull(t.substr(4)) * 1000000000ull;
  if (t.rfind("now+", 0) == 0) return now_ns + std::stoull(t.substr(4)) * 1000000000ull;
  return std::stoull(t);
}

// The SEALs of point `b`, one per volume, linked to point `prev`: well formed, but their MACs are
// not the agent's (zeros), which only a recovery with the key can tell.
void SendSeals(Peer& peer, const wire::BeginPoint& b, uint64_t prev) {
  for (size_t v = 0; v < b.volume_sizes.size(); ++v) {
    wire::SealMsg m;
    m.seal.point_id = b.point_id;
    m.seal.time_ns = b.time_ns;
    m.seal.flags = b.flags;
    m.seal.volume = static_cast<uint16_t>(v);
    m.seal.volume_count = static_cast<uint16_t>(b.volume_sizes.size());
    m.seal.volume_bytes = b.volume_sizes[v];
    m.seal.region_bytes = SealRegionBytes(b.volume_sizes[v]);
    m.seal.regions.assign(SealRegionCount(b.volume_sizes[v]), Digest128{});
    m.seal.region_points.assign(m.seal.regions.size(), 0);
    m.seal.prev.point_id = prev;  // the staging checks the id (it cannot check the MAC)
    peer.Send(wire::MsgType::kSeal, m.Encode());
  }
}

// One forged point in a session of its own; prints its line.
void ForgePoint(TlsContext* ctx, const HostPort& hp, const Options& o, const DataKey& key, const std::string& time) {
  Peer peer(ctx, hp);
  wire::Hello h;
  h.server_id = o.server_id;
  h.key_id = key.key_id;
  peer.Send(wire::MsgType::kHello, h.Encode());
  auto reply = peer.Receive();
  if (!reply) Die("the staging closed the session after HELLO");
  if (reply->first == wire::MsgType::kError) {
    auto e = wire::ErrorMsg::Decode(reply->second);
    std::printf("hello refused: %s\n", e.ok() ? e->message.c_str() : "?");
    return;
  }
  auto ok = wire::HelloOk::Decode(reply->second);
  if (!ok.ok()) Die("bad HELLO_OK: " + ok.status().message());
  wire::BeginPoint b;
  b.point_id = ok->last_point_id + 1;
  b.time_ns = ParseTime(time, NowUtcNs());
  b.base_point = ok->last_point_id;
  b.flags = store::kPointConsistent;
  b.volume_sizes = o.volume_bytes;
  peer.Send(wire::MsgType::kBeginPoint, b.Encode());
  SendSeals(peer, b, ok->last_point_id);
  wire::EndPoint e;
  e.point_id = b.point_id;
  e.flags = b.flags;
  peer.Send(wire::MsgType::kEndPoint, e.Encode());
  for (;;) {
    auto f = peer.Receive();
    if (!f) {
      std::printf("point %llu time %llu: refused: session closed\n", static_cast<unsigned long long>(b.point_id),
                  static_cast<unsigned long long>(b.time_ns));
      return;
    }
    if (f->first == wire::MsgType::kPointAck) {
      std::printf("point %llu time %llu: acknowledged\n", static_cast<unsigned long long>(b.point_id),
                  static_cast<unsigned long long>(b.time_ns));
      return;
    }
    if (f->first == wire::MsgType::kError) {
      auto err = wire::ErrorMsg::Decode(f->second);
      std::printf("point %llu time %llu: refused: %s\n", static_cast<unsigned long long>(b.point_id),
                  static_cast<unsigned long long>(b.time_ns), err.ok() ? err->message.c_str() : "?");
      return;
    }
  }
}

// HELLO as o.server_id; dies unless the staging answers HELLO_OK.
std::unique_ptr<Peer> Open(TlsContext* ctx, const HostPort& hp, const Options& o, const DataKey& key,
                           uint64_t* last_point_id = nullptr) {
  auto peer = std::make_unique<Peer>(ctx, hp);
  wire::Hello h;
  h.server_id = o.server_id;
  h.key_id = key.key_id;
  peer->Send(wire::MsgType::kHello, h.Encode());
  auto reply = peer->Receive();
  if (!reply || reply->first != wire::MsgType::kHelloOk) Die("the staging did not accept HELLO");
  if (last_point_id != nullptr) {
    auto ok = wire::HelloOk::Decode(reply->second);
    if (!ok.ok()) Die("bad HELLO_OK: " + ok.status().message());
    *last_point_id = ok->last_point_id;
  }
  return peer;
}

void Flood(TlsContext* ctx, const HostPort& hp, const Options& o, const DataKey& key) {
  auto peer = Open(ctx, hp, o, key);
  // Blocking writes: once the staging stops reading us, they stop too. A writer thread is not
  // needed; an alarm ends a write stuck for good.
  wire::FingerprintRequest rq;
  rq.volume = 0;
  rq.offset = 0;
  rq.length = wire::kMaxFingerprintSpan;
  Bytes enc = rq.Encode();
  timeval tv{static_cast<time_t>(o.hold_seconds), 0};
  setsockopt(peer->fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  uint64_t sent = 0;
  for (; sent < o.requests; ++sent) {
    Bytes frame;
    wire::AppendFrame(&frame, wire::MsgType::kFingerprintRequest, enc);
    if (!peer->TrySend(frame)) break;
  }
  std::printf("flooded %llu requests\n", static_cast<unsigned long long>(sent));
  std::fflush(stdout);
  sleep(static_cast<unsigned>(o.hold_seconds));
}

void BigPoint(TlsContext* ctx, const HostPort& hp, const Options& o, const DataKey& key) {
  uint64_t last = 0;
  auto peer = Open(ctx, hp, o, key, &last);
  auto sealer = RecordSealer::Create(key, o.server_id);
  if (!sealer.ok()) Die(sealer.status().message());
  uint64_t seq = 0;
  for (uint64_t p = 0; p <= o.points; ++p) {
    uint64_t t0 = MonotonicNs();
    wire::BeginPoint b;
    b.point_id = ++last;
    b.time_ns = NowUtcNs();
    b.base_point = p == 0 ? 0 : b.point_id - 1;
    b.flags = store::kPointConsistent;
    b.volume_sizes = {o.records * 8192};
    peer->Send(wire::MsgType::kBeginPoint, b.Encode());
    uint64_t n = p == 0 ? o.records : 0;
    Bytes plain(4096, 0x5a), record, frame, fps(kFingerprintBytes, 0);  // never all zero
    wire::EndPoint e;
    for (uint64_t i = 0; i < n; ++i) {
      std::memcpy(plain.data(), &i, sizeof i);  // lz4 makes the rest small: the index is the load
      record.clear();
      auto h = (*sealer)->Seal(CodecChoice{}, 0, i * 8192, b.point_id, plain, &record);
      if (!h.ok()) Die(h.status().message());
      wire::RecordMsg::AppendEncoded(&frame, ++seq, record, fps);
      if (frame.size() >= (1u << 20) || i + 1 == n) {
        if (!peer->TrySend(frame)) Die("the staging stopped reading records");
        frame.clear();
      }
    }
    e.point_id = b.point_id;
    e.flags = b.flags;
    e.record_count = n;
    e.last_seq = seq;  // sequence numbers run on through the session
    SendSeals(*peer, b, b.point_id - 1);  // the staging commits once the records are durable
    peer->Send(wire::MsgType::kEndPoint, e.Encode());
    for (;;) {
      auto f = peer->Receive();
      if (!f) Die("the staging closed the session during point " + std::to_string(b.point_id));
      if (f->first == wire::MsgType::kError) {
        auto err = wire::ErrorMsg::Decode(f->second);
        Die("point " + std::to_string(b.point_id) + " refused: " + (err.ok() ? err->message : "?"));
      }
      if (f->first == wire::MsgType::kPointAck) break;
    }
    std::printf("point %llu: %llu records acknowledged in %.0f ms\n", static_cast<unsigned long long>(b.point_id),
                static_cast<unsigned long long>(n), static_cast<double>(MonotonicNs() - t0) / 1e6);
    std::fflush(stdout);
    usleep(100000);  // point times only move forward; and the pinging session gets a clean window
  }
}

// BEGIN_POINT, `records` sealed 4 KiB records, the SEAL and END_POINT of the point after `last`.
void SendPoint(Peer& peer, const Options& o, const DataKey& key, uint64_t last, wire::BeginPoint* begun) {
  auto sealer = RecordSealer::Create(key, o.server_id);
  if (!sealer.ok()) Die(sealer.status().message());
  wire::BeginPoint& b = *begun;
  b.point_id = last + 1;
  b.time_ns = NowUtcNs();
  b.base_point = last;
  b.flags = store::kPointConsistent;
  b.volume_sizes = {o.records * 8192};
  peer.Send(wire::MsgType::kBeginPoint, b.Encode());
  Bytes plain(4096, 0x5a), record, frame, fps(kFingerprintBytes, 0);
  for (uint64_t i = 0; i < o.records; ++i) {
    std::memcpy(plain.data(), &i, sizeof i);
    record.clear();
    auto h = (*sealer)->Seal(CodecChoice{}, 0, i * 8192, b.point_id, plain, &record);
    if (!h.ok()) Die(h.status().message());
    wire::RecordMsg::AppendEncoded(&frame, i + 1, record, fps);
  }
  if (!peer.TrySend(frame)) Die("the staging stopped reading records");
  SendSeals(peer, b, last);
  wire::EndPoint e;
  e.point_id = b.point_id;
  e.flags = b.flags;
  e.record_count = o.records;
  e.last_seq = o.records;
  peer.Send(wire::MsgType::kEndPoint, e.Encode());
}

void StallThenSend(TlsContext* ctx, const HostPort& hp, const Options& o, const DataKey& key) {
  uint64_t last = 0;
  auto peer = Open(ctx, hp, o, key, &last);
  std::printf("hello ok\n");
  std::fflush(stdout);
  for (int waited_ms = 0; access(o.go_file.c_str(), F_OK) != 0; waited_ms += 10) {
    if (waited_ms >= 60000) Die("no " + o.go_file + " within 60 s");
    usleep(10000);
  }
  wire::BeginPoint b;
  SendPoint(*peer, o, key, last, &b);
  const auto id = static_cast<unsigned long long>(b.point_id);
  for (;;) {
    auto f = peer->Receive();
    if (!f) {
      std::printf("point %llu: session closed\n", id);
      return;
    }
    if (f->first == wire::MsgType::kPointAck) {
      std::printf("point %llu acknowledged\n", id);
      return;
    }
    if (f->first == wire::MsgType::kError) {
      auto err = wire::ErrorMsg::Decode(f->second);
      std::printf("point %llu refused: %s\n", id, err.ok() ? err->message.c_str() : "?");
      return;
    }
  }
}

void HangUpAfterEndPoint(TlsContext* ctx, const HostPort& hp, const Options& o, const DataKey& key) {
  uint64_t last = 0;
  auto peer = Open(ctx, hp, o, key, &last);
  wire::BeginPoint b;
  SendPoint(*peer, o, key, last, &b);
  // Every byte reaches the staging's socket first (the kernel has it acknowledged): closing with
  // bytes unsent would lose them in the reset that unread replies cause, as a killed agent does.
  for (int waited_ms = 0;; ++waited_ms) {
    int outq = 0;
    if (ioctl(peer->fd(), SIOCOUTQ, &outq) != 0) Die(std::string("ioctl SIOCOUTQ: ") + std::strerror(errno));
    if (outq == 0) break;
    if (waited_ms == 10000) Die("the staging did not take the point's bytes within 10 s");
    usleep(1000);
  }
  peer->HangUp();
  // The staging may still be finishing the old session: it refuses a second one meanwhile.
  uint64_t chain_end = 0;
  for (int attempt = 0;; ++attempt) {
    Peer again(ctx, hp);
    wire::Hello h;
    h.server_id = o.server_id;
    h.key_id = key.key_id;
    again.Send(wire::MsgType::kHello, h.Encode());
    auto reply = again.Receive();
    if (reply && reply->first == wire::MsgType::kHelloOk) {
      auto ok = wire::HelloOk::Decode(reply->second);
      if (!ok.ok()) Die("bad HELLO_OK: " + ok.status().message());
      chain_end = ok->last_point_id;
      break;
    }
    if (attempt == 100) Die("the staging refused every new session for 10 s after the hang-up");
    usleep(100000);
  }
  std::printf("hung up after END_POINT of point %llu; the chain ends at point %llu\n",
              static_cast<unsigned long long>(b.point_id), static_cast<unsigned long long>(chain_end));
}

volatile std::sig_atomic_t g_ping_stop = 0;

void Ping(TlsContext* ctx, const HostPort& hp, const Options& o, const DataKey& key) {
  auto peer = Open(ctx, hp, o, key);
  std::signal(SIGINT, [](int) { g_ping_stop = 1; });  // end the run early, still with its line
  std::signal(SIGTERM, [](int) { g_ping_stop = 1; });
  std::vector<double> rtt_ms;
  uint64_t end = NowUtcNs() + o.seconds * 1000000000ull;
  while (NowUtcNs() < end && !g_ping_stop) {
    uint64_t t0 = MonotonicNs();
    peer->Send(wire::MsgType::kPing, ByteSpan());
    for (;;) {
      auto f = peer->Receive();
      if (!f) Die("the staging closed the pinging session");
      if (f->first == wire::MsgType::kPong) break;
    }
    rtt_ms.push_back(static_cast<double>(MonotonicNs() - t0) / 1e6);
    usleep(20000);
  }
  std::sort(rtt_ms.begin(), rtt_ms.end());
  auto pct = [&](double q) { return rtt_ms[std::min(rtt_ms.size() - 1, static_cast<size_t>(q * rtt_ms.size()))]; };
  std::printf("pings %zu p50 %.2f p99 %.2f max %.2f\n", rtt_ms.size(), pct(0.5), pct(0.99), rtt_ms.back());
}

Options Parse(int argc, char** argv) {
  Options o;
  if (argc < 2) Die("usage: blockrep_hostile_peer points --staging HOST:PORT ... (see the source)");
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) Die(a + " needs a value");
    std::string v = argv[++i];
    if (a == "--staging") o.staging = v;
    else if (a == "--server-id") o.server_id = v;
    else if (a == "--key") o.key = v;
    else if (a == "--tls-cert") o.cert = v;
    else if (a == "--tls-key") o.tls_key = v;
    else if (a == "--tls-ca") o.ca = v;
    else if (a == "--volume-bytes") o.volume_bytes.push_back(std::stoull(v));
    else if (a == "--time") o.times.push_back(v);
    else if (a == "--requests") o.requests = std::stoull(v);
    else if (a == "--hold-seconds") o.hold_seconds = std::stoull(v);
    else if (a == "--seconds") o.seconds = std::stoull(v);
    else if (a == "--records") o.records = std::stoull(v);
    else if (a == "--points") o.points = std::stoull(v);
    else if (a == "--go-file") o.go_file = v;
    else Die("unknown flag " + a);
  }
  if (o.mode != "points" && o.mode != "flood" && o.mode != "ping" && o.mode != "big" && o.mode != "hangup" &&
      o.mode != "stall")
    Die("unknown mode " + o.mode + " (points, flood, ping, big, hangup, stall)");
  if (o.mode == "stall" && o.go_file.empty()) Die("stall needs --go-file");
  if (o.mode == "points" && (o.volume_bytes.empty() || o.times.empty())) Die("points needs --volume-bytes and --time");
  return o;
}

}  // namespace
}  // namespace blockrep

int main(int argc, char** argv) {
  using namespace blockrep;
  Options o = Parse(argc, argv);
  auto hp = ParseHostPort(o.staging, "--staging");
  if (!hp.ok()) Die(hp.status().message());
  auto key = LoadDataKey(o.key);
  if (!key.ok()) Die(key.status().message());
  auto ctx = TlsContext::Create(TlsFiles{o.cert, o.tls_key, o.ca, ""}, false);
  if (!ctx.ok()) Die(ctx.status().message());
  if (o.mode == "flood") {
    Flood(ctx->get(), *hp, o, *key);
    return 0;
  }
  if (o.mode == "ping") {
    Ping(ctx->get(), *hp, o, *key);
    return 0;
  }
  if (o.mode == "big") {
    BigPoint(ctx->get(), *hp, o, *key);
    return 0;
  }
  if (o.mode == "hangup") {
    HangUpAfterEndPoint(ctx->get(), *hp, o, *key);
    return 0;
  }
  if (o.mode == "stall") {
    StallThenSend(ctx->get(), *hp, o, *key);
    return 0;
  }
  for (const std::string& t : o.times) {
    ForgePoint(ctx->get(), *hp, o, *key, t);
    std::fflush(stdout);
  }
  return 0;
}
