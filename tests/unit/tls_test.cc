// TLS engine tests: two TlsSessions joined by copying ciphertext between their memory BIOs.
#include <algorithm>

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "blockrep/net/channel.h"
#include "blockrep/net/tls.h"
#include "blockrep/net/uring.h"
#include "blockrep/net/wire.h"

namespace blockrep {
namespace {

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/blockrep-tlstest.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::string keygen = std::string(BLOCKREP_BIN_DIR) + "/blockrep-keygen";
    ASSERT_EQ(std::system((keygen + " --out " + dir_ + "/pki --server-id web1 >/dev/null").c_str()), 0);
    ASSERT_EQ(std::system((keygen + " --out " + dir_ + "/rogue --server-id web1 >/dev/null").c_str()), 0);
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }

  static TlsFiles Agent(const std::string& pki) {
    return {dir_ + "/" + pki + "/agent-web1.crt", dir_ + "/" + pki + "/agent-web1.key", dir_ + "/pki/ca.crt", ""};
  }
  static TlsFiles Staging() {
    return {dir_ + "/pki/staging.crt", dir_ + "/pki/staging.key", dir_ + "/pki/ca.crt", ""};
  }

  // Shuttles ciphertext until both sides stop producing it. Returns the first error.
  static Status Pump(TlsSession& a, TlsSession& b) {
    for (int round = 0; round < 20; ++round) {
      bool moved = false;
      for (auto [from, to] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
        if (!from->outgoing().empty()) {
          BR_RETURN_IF_ERROR(to->PushCiphertext(from->outgoing()));
          from->outgoing().clear();
          moved = true;
        }
        if (!to->handshake_done()) {
          auto r = to->Handshake();
          if (!r.ok()) return r.status();
        }
      }
      if (!moved) break;
    }
    return Status::Ok();
  }
  // A staging session and an agent session (keygen's PKI) with their handshake done.
  struct Connected {
    std::unique_ptr<TlsContext> sctx, cctx;
    std::unique_ptr<TlsSession> server, client;
  };
  static void Connect(Connected* c) {
    auto sctx = TlsContext::Create(Staging(), true);
    auto cctx = TlsContext::Create(Agent("pki"), false);
    ASSERT_TRUE(sctx.ok() && cctx.ok()) << sctx.status().message() << cctx.status().message();
    c->sctx = std::move(sctx).value();
    c->cctx = std::move(cctx).value();
    auto server = TlsSession::Create(c->sctx.get(), "");
    auto client = TlsSession::Create(c->cctx.get(), "127.0.0.1");
    ASSERT_TRUE(server.ok() && client.ok());
    c->server = std::move(server).value();
    c->client = std::move(client).value();
    ASSERT_TRUE(c->client->Handshake().ok());
    ASSERT_TRUE(Pump(*c->client, *c->server).ok());
    ASSERT_TRUE(c->client->handshake_done() && c->server->handshake_done());
  }
  // keygen's agent certificate for web1 with its subject replaced by CNs of the given bytes and
  // signed again by the CA (what a CA that signs whatever it is sent would issue); its files.
  static TlsFiles AgentWithCns(const std::string& name, const std::vector<std::string>& cns) {
    auto read_pem = [](const std::string& path, auto reader) {
      FILE* f = std::fopen(path.c_str(), "r");
      EXPECT_NE(f, nullptr) << path;
      auto* v = reader(f, nullptr, nullptr, nullptr);
      std::fclose(f);
      return v;
    };
    X509* cert = read_pem(dir_ + "/pki/agent-web1.crt", PEM_read_X509);
    EVP_PKEY* ca_key = read_pem(dir_ + "/pki/ca.key", PEM_read_PrivateKey);
    X509_NAME* subject = X509_NAME_new();
    for (const std::string& cn : cns)
      EXPECT_EQ(X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                           reinterpret_cast<const unsigned char*>(cn.data()), static_cast<int>(cn.size()), -1, 0),
                1);
    EXPECT_EQ(X509_set_subject_name(cert, subject), 1);
    EXPECT_GT(X509_sign(cert, ca_key, EVP_sha256()), 0);
    std::string path = dir_ + "/" + name + ".crt";
    FILE* out = std::fopen(path.c_str(), "w");
    EXPECT_EQ(PEM_write_X509(out, cert), 1);
    std::fclose(out);
    X509_NAME_free(subject);
    EVP_PKEY_free(ca_key);
    X509_free(cert);
    return {path, dir_ + "/pki/agent-web1.key", dir_ + "/pki/ca.crt", ""};
  }
  // The server-id the staging reads from a client presenting `files`.
  static std::string PeerIdentity(const TlsFiles& files) {
    auto sctx = TlsContext::Create(Staging(), true);
    auto cctx = TlsContext::Create(files, false);
    EXPECT_TRUE(sctx.ok() && cctx.ok()) << sctx.status().message() << cctx.status().message();
    auto server = TlsSession::Create(sctx->get(), "");
    auto client = TlsSession::Create(cctx->get(), "127.0.0.1");
    EXPECT_TRUE((*client)->Handshake().ok());
    EXPECT_TRUE(Pump(**client, **server).ok());
    EXPECT_TRUE((*server)->handshake_done());
    return (*server)->PeerCommonName();
  }
  static std::string dir_;
};
std::string TlsTest::dir_;

// The identity is the certificate's one CN, whole: a CN with an embedded NUL is not cut to the
// part before it, and a certificate with two CNs names nobody (a server-id can be neither).
TEST_F(TlsTest, CommonNameIsTakenWholeOrNotAtAll) {
  EXPECT_EQ(PeerIdentity(AgentWithCns("plain", {"web1"})), "web1");
  EXPECT_EQ(PeerIdentity(AgentWithCns("nul", {std::string("web1\0db1", 8)})), "");
  EXPECT_EQ(PeerIdentity(AgentWithCns("two", {"web1", "db1"})), "");
}

// Mutual authentication succeeds with keygen's PKI; the staging learns the agent's server-id.
TEST_F(TlsTest, HandshakeAndDataBothWays) {
  Connected c;
  ASSERT_NO_FATAL_FAILURE(Connect(&c));
  EXPECT_EQ(c.server->PeerCommonName(), "web1");

  Bytes msg(300000, 0x5a);
  RawBytes got;
  ASSERT_TRUE(c.client->WritePlaintext(msg).ok());
  ASSERT_TRUE(Pump(*c.client, *c.server).ok());
  ASSERT_TRUE(c.server->ReadPlaintext(&got, 1 << 20).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), msg.begin(), msg.end()));
}

// Ciphertext lent in pieces that cut records anywhere, with the reader stopping early, decrypts
// whole: what TLS did not read is kept when the loan ends, and the lender's buffer is then reused.
TEST_F(TlsTest, LentCiphertextIsKeptWhereTlsStopped) {
  Connected c;
  ASSERT_NO_FATAL_FAILURE(Connect(&c));
  TlsSession* client = c.client.get();
  TlsSession* server = c.server.get();

  Bytes msg(200000);
  for (size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<uint8_t>(i * 131 + (i >> 9));
  ASSERT_TRUE(client->WritePlaintext(msg).ok());
  RawBytes wire = client->outgoing();
  client->outgoing().clear();
  ASSERT_GT(wire.size(), msg.size());
  RawBytes got;
  std::vector<uint8_t> lender(7001);  // one "receive buffer", refilled for every piece
  for (size_t at = 0; at < wire.size(); at += lender.size()) {
    size_t n = std::min(lender.size(), wire.size() - at);
    std::copy_n(wire.begin() + static_cast<ptrdiff_t>(at), n, lender.begin());
    server->LendCiphertext(ByteSpan(lender.data(), n));
    ASSERT_TRUE(server->ReadPlaintext(&got, 3000).ok());  // less than a piece: some is left lent
    server->KeepUnread();
    std::fill(lender.begin(), lender.end(), 0xee);  // the loan is over: TLS must not read this
  }
  while (got.size() < msg.size()) {
    size_t before = got.size();
    ASSERT_TRUE(server->ReadPlaintext(&got, 3000).ok());
    ASSERT_GT(got.size(), before) << "kept ciphertext ran out at " << before << " of " << msg.size() << " bytes";
  }
  EXPECT_TRUE(std::equal(got.begin(), got.end(), msg.begin(), msg.end()));
}

// A client certificate from another CA is refused by the staging.
TEST_F(TlsTest, ForeignClientCertificateIsRefused) {
  auto sctx = TlsContext::Create(Staging(), true);
  auto cctx = TlsContext::Create(Agent("rogue"), false);
  ASSERT_TRUE(sctx.ok() && cctx.ok());
  auto server = TlsSession::Create(sctx->get(), "");
  auto client = TlsSession::Create(cctx->get(), "127.0.0.1");
  ASSERT_TRUE((*client)->Handshake().ok());
  Status s = Pump(**client, **server);
  EXPECT_EQ(s.code(), Code::kUnauthenticated);
  EXPECT_FALSE((*server)->handshake_done());
}

// The agent checks the staging's name: a certificate for another host is refused.
TEST_F(TlsTest, StagingNameIsVerified) {
  auto sctx = TlsContext::Create(Staging(), true);
  auto cctx = TlsContext::Create(Agent("pki"), false);
  auto server = TlsSession::Create(sctx->get(), "");
  auto client = TlsSession::Create(cctx->get(), "dr.example.com");
  ASSERT_TRUE((*client)->Handshake().ok());
  Status s = Pump(**client, **server);
  EXPECT_EQ(s.code(), Code::kUnauthenticated);
  EXPECT_FALSE((*client)->handshake_done());
}

// Missing TLS files are named with the fix.
TEST_F(TlsTest, MissingFilesAreNamed) {
  TlsFiles f = Staging();
  f.cert = dir_ + "/nope.crt";
  auto ctx = TlsContext::Create(f, true);
  EXPECT_EQ(ctx.status().code(), Code::kNotFound);
  EXPECT_NE(ctx.status().message().find("blockrep-keygen"), std::string::npos);
}

// A Channel whose inbox share is smaller than the peer's next frame grows to hold that frame
// whole when told its size (NeedWhole), and shrinks back to its share once it is consumed:
// without it the inbox would fill with a partial frame and the session would stall.
TEST_F(TlsTest, ChannelInboxGrowsForOneLargeFrame) {
  auto sctx = TlsContext::Create(Staging(), true);
  auto cctx = TlsContext::Create(Agent("pki"), false);
  ASSERT_TRUE(sctx.ok() && cctx.ok());
  auto server = TlsSession::Create(sctx->get(), "");
  auto client = TlsSession::Create(cctx->get(), "127.0.0.1");
  ASSERT_TRUE(server.ok() && client.ok());
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  auto ring = Ring::Create(16);
  ASSERT_TRUE(ring.ok());
  constexpr size_t kShare = 64u << 10, kFrame = 600u << 10;
  Channel ch(ring->get(), fds[0], std::move(*server), 1, kShare);
  // The client side, by hand: ciphertext both ways over the socket's other end.
  Bytes pending;  // ciphertext the socket did not take yet
  auto shuttle = [&]() {
    RawBytes& out = (*client)->outgoing();
    pending.insert(pending.end(), out.begin(), out.end());
    out.clear();
    ssize_t sent = pending.empty() ? 0 : send(fds[1], pending.data(), pending.size(), MSG_DONTWAIT);
    if (sent > 0) pending.erase(pending.begin(), pending.begin() + sent);
    uint8_t buf[65536];
    ssize_t n;
    while ((n = recv(fds[1], buf, sizeof(buf), MSG_DONTWAIT)) > 0)
      ASSERT_TRUE((*client)->PushCiphertext(ByteSpan(buf, static_cast<size_t>(n))).ok());
    if (!(*client)->handshake_done()) {
      ASSERT_TRUE((*client)->Handshake().ok());
    }
  };
  auto turn = [&]() {
    ASSERT_TRUE(ch.Pump().ok());
    ASSERT_TRUE((*ring)->Submit().ok());
    auto reaped = (*ring)->Reap([&](uint64_t ud, int res, uint32_t) { ASSERT_TRUE(ch.OnCompletion(UserDataOp(ud), res).ok()); },
                                true, 50);
    ASSERT_TRUE(reaped.ok());
    shuttle();
  };
  ASSERT_TRUE((*client)->Handshake().ok());
  for (int i = 0; i < 50 && !(ch.handshake_done() && (*client)->handshake_done()); ++i) turn();
  ASSERT_TRUE(ch.handshake_done() && (*client)->handshake_done());
  // One frame of 600 KiB, then a small one.
  Bytes frames;
  wire::AppendFrame(&frames, wire::MsgType::kSeal, Bytes(kFrame - wire::kFrameHeaderSize, 0x42));
  wire::AppendFrame(&frames, wire::MsgType::kAck, wire::Ack{7}.Encode());
  ASSERT_TRUE((*client)->WritePlaintext(frames).ok());
  shuttle();
  for (int i = 0; i < 100 && ch.inbox().size() < kShare; ++i) turn();
  EXPECT_GE(ch.inbox().size(), kShare);
  EXPECT_LT(ch.inbox().size(), kFrame) << "held to its share until told the frame's size";
  ch.NeedWhole(wire::FrameBytes(ch.inbox()));
  for (int i = 0; i < 200 && ch.inbox().size() < kFrame; ++i) turn();
  auto big = wire::ParseFrame(ch.inbox());
  ASSERT_TRUE(big.ok() && big->has_value()) << "the whole large frame arrived";
  EXPECT_EQ((*big)->total_size, kFrame);
  ch.Consume(kFrame);
  for (int i = 0; i < 50 && !wire::ParseFrame(ch.inbox()).value().has_value(); ++i) turn();
  auto small = wire::ParseFrame(ch.inbox());
  ASSERT_TRUE(small.ok() && small->has_value());
  EXPECT_EQ((*small)->type, wire::MsgType::kAck);
  close(fds[1]);
}

}  // namespace
}  // namespace blockrep
