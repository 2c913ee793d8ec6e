// AckWindow (replicator/ack_window.h): the agent's unacknowledged RECORDs.
#include <gtest/gtest.h>

#include "ack_window.h"

namespace blockrep::agent {
namespace {

// ACKs free the bytes of every record up to the named one; the total acknowledged survives a
// reconnect, which numbers records from 1 again.
TEST(AckWindow, AcksFreeBytesInOrder) {
  AckWindow w;
  EXPECT_EQ(w.Sent(100), 1u);
  EXPECT_EQ(w.Sent(200), 2u);
  EXPECT_EQ(w.Sent(300), 3u);
  EXPECT_EQ(w.unacked_bytes(), 600u);
  ASSERT_TRUE(w.Acked(2).ok());
  EXPECT_EQ(w.unacked_bytes(), 300u);
  EXPECT_EQ(w.acked_bytes_total(), 300u);
  ASSERT_TRUE(w.Acked(2).ok()) << "a repeated ACK is harmless";
  ASSERT_TRUE(w.Acked(3).ok());
  EXPECT_TRUE(w.empty());
  w.Reset();
  EXPECT_EQ(w.Sent(50), 1u);
  EXPECT_EQ(w.acked_bytes_total(), 600u);
  EXPECT_EQ(w.last_sent(), 1u);
}

// An ACK that goes backwards, or names a record never sent, is the staging breaking the protocol.
TEST(AckWindow, ImpossibleAcksAreProtocolErrors) {
  AckWindow w;
  w.Sent(10);
  w.Sent(10);
  EXPECT_EQ(w.Acked(3).code(), Code::kProtocol);
  ASSERT_TRUE(w.Acked(2).ok());
  EXPECT_EQ(w.Acked(1).code(), Code::kProtocol);
  EXPECT_EQ(w.acked(), 2u);
}

}  // namespace
}  // namespace blockrep::agent
