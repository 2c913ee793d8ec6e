// TLS engine tests: two TlsSessions joined by copying ciphertext between their memory BIOs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "blockrep/tls.h"

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
    return {dir_ + "/" + pki + "/agent-web1.crt", dir_ + "/" + pki + "/agent-web1.key", dir_ + "/pki/ca.crt"};
  }
  static TlsFiles Staging() {
    return {dir_ + "/pki/staging.crt", dir_ + "/pki/staging.key", dir_ + "/pki/ca.crt"};
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
  static std::string dir_;
};
std::string TlsTest::dir_;

// Mutual authentication succeeds with keygen's PKI; the staging learns the agent's server-id.
TEST_F(TlsTest, HandshakeAndDataBothWays) {
  auto sctx = TlsContext::Create(Staging(), true);
  auto cctx = TlsContext::Create(Agent("pki"), false);
  ASSERT_TRUE(sctx.ok() && cctx.ok()) << sctx.status().message() << cctx.status().message();
  auto server = TlsSession::Create(sctx->get(), "");
  auto client = TlsSession::Create(cctx->get(), "127.0.0.1");
  ASSERT_TRUE(server.ok() && client.ok());
  ASSERT_TRUE((*client)->Handshake().ok());
  ASSERT_TRUE(Pump(**client, **server).ok());
  ASSERT_TRUE((*client)->handshake_done() && (*server)->handshake_done());
  EXPECT_EQ((*server)->PeerCommonName(), "web1");

  Bytes msg(300000, 0x5a), got;
  ASSERT_TRUE((*client)->WritePlaintext(msg).ok());
  ASSERT_TRUE(Pump(**client, **server).ok());
  ASSERT_TRUE((*server)->ReadPlaintext(&got, 1 << 20).ok());
  EXPECT_EQ(got, msg);
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

}  // namespace
}  // namespace blockrep
