// The staging's start on a store a crash left behind (staging/server.h), on a FaultEnv.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdlib>
#include <string>

#include "blockrep/store/store.h"
#include "fault_env.h"
#include "server.h"
#include "temp_dir.h"

namespace blockrep {
namespace {

class ServerStartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string keygen = std::string(BLOCKREP_BIN_DIR) + "/blockrep-keygen";
    ASSERT_EQ(std::system((keygen + " --out " + pki_.path() + " --server-id web1 >/dev/null").c_str()), 0);
    ASSERT_TRUE(store::InitStoreRoot("/store", true, &env_).ok());
  }

  Status Start() {
    staging::Options o;
    o.listen = ParseHostPort("127.0.0.1:1", "--listen").value();
    o.store_dir = "/store";
    o.tls = TlsFiles{pki_ / "staging.crt", pki_ / "staging.key", pki_ / "ca.crt", ""};
    o.env = &env_;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);  // never listened on: the start is what is tested
    EXPECT_GE(fd, 0);
    o.listen_fd = fd;
    staging::Server server(o);
    return server.Start();
  }

  TempDir pki_{"serverstart"};
  sim::FaultEnv env_{7};
};

// A server whose first HELLO a crash cut short (its directory made, no MANIFEST yet) does not keep
// the staging from starting.
TEST_F(ServerStartTest, StartsBesideAServerDirectoryWithoutManifest) {
  ASSERT_TRUE(env_.MakeDirs("/store/servers/web1/packs", 0700).ok());
  Status st = Start();
  EXPECT_TRUE(st.ok()) << st.ToString();
}

// A damaged MANIFEST still stops the start, naming the server: that is data, not a half-made directory.
TEST_F(ServerStartTest, RefusesADamagedManifest) {
  ASSERT_TRUE(env_.MakeDirs("/store/servers/web1/packs", 0700).ok());
  ASSERT_TRUE(env_.WriteFileAtomic("/store/servers/web1/MANIFEST", Bytes(40, 0x5a)).ok());
  Status st = Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("server 'web1'"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace blockrep
