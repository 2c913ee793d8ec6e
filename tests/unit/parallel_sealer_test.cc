#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "parallel_sealer.h"
#include "test_data.h"

namespace blockrep::agent {
namespace {

// Records sealed on two threads each open to their own extent, in the batch's order, over many
// batches; no (session, counter) nonce repeats. (Which thread takes which job is the scheduler's
// choice, so the test does not insist that both did.)
TEST(ParallelSealer, EveryRecordOpensToItsExtentAndNoNonceRepeats) {
  auto sealer = ParallelSealer::Create(FilledKey(3), "web1");
  ASSERT_TRUE(sealer.ok()) << sealer.status().message();
  RecordOpener opener(FilledKey(3), "web1");
  Bytes data = RandomBytes(16 * 65536, 11);
  for (size_t i = 0; i < data.size() / 2; ++i) data[i] = static_cast<uint8_t>(i % 7);  // half compressible
  std::set<std::pair<SessionId, uint64_t>> nonces;
  std::set<SessionId> sessions;
  std::vector<SealJob> jobs(16);
  for (uint64_t batch = 0; batch < 50; ++batch) {
    size_t count = 1 + batch % jobs.size();  // 1..16 jobs: alone and shared
    for (size_t j = 0; j < count; ++j) {
      jobs[j].volume = 2;
      jobs[j].offset = (batch * 16 + j) * 65536;
      jobs[j].plain = ByteSpan(data.data() + j * 65536, 65536);
    }
    ASSERT_TRUE((*sealer)->SealAll(CodecChoice{Codec::kLz4, 0}, 9, std::span<SealJob>(jobs.data(), count)).ok());
    for (size_t j = 0; j < count; ++j) {
      ASSERT_TRUE(jobs[j].status.ok()) << jobs[j].status.message();
      RecordHeader h;
      Bytes plain;
      Status st = opener.Open(jobs[j].record(), &h, &plain);
      ASSERT_TRUE(st.ok()) << "batch " << batch << " job " << j << ": " << st.message();
      EXPECT_EQ(h.offset, jobs[j].offset);
      EXPECT_EQ(h.point_id, 9u);
      ASSERT_EQ(plain.size(), 65536u);
      EXPECT_TRUE(std::equal(plain.begin(), plain.end(), data.begin() + j * 65536)) << "batch " << batch << " job " << j;
      sessions.insert(h.session);
      EXPECT_TRUE(nonces.emplace(h.session, h.counter).second) << "nonce reused: batch " << batch << " job " << j;
    }
  }
  EXPECT_GE(sessions.size(), 1u);
  EXPECT_LE(sessions.size(), 2u);
}

// Jobs asked to fingerprint their blocks get what BlockFingerprinter gives for each block at its
// offset (0 for an all-zero block), whichever thread took them; a short last block too.
TEST(ParallelSealer, JobsFingerprintTheirBlocksAsTheFingerprinterDoes) {
  auto sealer = ParallelSealer::Create(FilledKey(3), "web1");
  ASSERT_TRUE(sealer.ok());
  auto fingerprinter = BlockFingerprinter::Create(FilledKey(3));
  ASSERT_TRUE(fingerprinter.ok());
  Bytes data = RandomBytes(8 * 65536, 6);
  std::fill(data.begin() + 65536, data.begin() + 65536 + 4096, 0);  // one zero block in job 1
  std::vector<SealJob> jobs(8);
  std::vector<uint64_t> fps(8 * 16, 7);
  for (size_t j = 0; j < jobs.size(); ++j) {
    jobs[j].offset = 1048576 + j * 65536;
    jobs[j].plain = ByteSpan(data.data() + j * 65536, j == 7 ? 65536 - 1000 : 65536);
    jobs[j].fps = &fps[j * 16];
    jobs[j].fingerprint = true;
  }
  ASSERT_TRUE((*sealer)->SealAll(CodecChoice{Codec::kLz4, 0}, 1, jobs, &*fingerprinter).ok());
  for (size_t j = 0; j < jobs.size(); ++j) {
    ASSERT_TRUE(jobs[j].status.ok()) << jobs[j].status.message();
    for (size_t b = 0; b < 16; ++b) {
      const size_t at = b * 4096, len = std::min<size_t>(4096, jobs[j].plain.size() - at);
      EXPECT_EQ(fps[j * 16 + b], fingerprinter->Block(jobs[j].offset + at, jobs[j].plain.subspan(at, len)))
          << "job " << j << " block " << b;
    }
  }
  EXPECT_EQ(fps[16], 0u);  // the zero block (job 1, block 0)
}

// A record the sealer refuses (an empty extent) reports its error in its own job, not others'.
TEST(ParallelSealer, AFailedJobCarriesItsOwnError) {
  auto sealer = ParallelSealer::Create(FilledKey(3), "web1");
  ASSERT_TRUE(sealer.ok());
  Bytes data = RandomBytes(65536, 5);
  std::vector<SealJob> jobs(4);
  for (size_t j = 0; j < jobs.size(); ++j) {
    jobs[j].offset = j * 65536;
    jobs[j].plain = j == 1 ? ByteSpan() : ByteSpan(data);
  }
  EXPECT_TRUE((*sealer)->SealAll(CodecChoice{Codec::kLz4, 0}, 1, jobs).ok());  // no in-order step to fail
  EXPECT_TRUE(jobs[0].status.ok());
  EXPECT_FALSE(jobs[1].status.ok());
  EXPECT_TRUE(jobs[2].status.ok());
  EXPECT_TRUE(jobs[3].status.ok());
}

// Each sealed job reaches the in-order step once, in batch order, already sealed, whichever
// thread sealed it; an error there stops the calls and is returned after the batch is done.
TEST(ParallelSealer, SealedJobsArePassedOnInBatchOrder) {
  auto sealer = ParallelSealer::Create(FilledKey(3), "web1");
  ASSERT_TRUE(sealer.ok());
  RecordOpener opener(FilledKey(3), "web1");
  Bytes data = RandomBytes(64 * 65536, 8);
  std::vector<SealJob> jobs(64);
  for (int round = 0; round < 20; ++round) {
    for (size_t j = 0; j < jobs.size(); ++j) {
      jobs[j].offset = j * 65536;
      jobs[j].plain = ByteSpan(data.data() + j * 65536, 65536);
    }
    std::vector<size_t> order;
    Status st = (*sealer)->SealAll(CodecChoice{Codec::kLz4, 0}, 1, jobs, nullptr, [&](SealJob& job) -> Status {
      RecordHeader h;
      Bytes plain;
      BR_RETURN_IF_ERROR(opener.Open(job.record(), &h, &plain));  // sealed before it is passed on
      order.push_back(static_cast<size_t>(&job - jobs.data()));
      return order.size() == 40 && round % 2 == 1 ? Internal("the wire is gone") : Status::Ok();
    });
    ASSERT_EQ(order.size(), round % 2 == 1 ? 40u : jobs.size()) << "round " << round;
    for (size_t k = 0; k < order.size(); ++k) ASSERT_EQ(order[k], k) << "round " << round;
    EXPECT_EQ(st.ok(), round % 2 == 0) << st.message();
    for (const SealJob& job : jobs) EXPECT_TRUE(job.status.ok());  // every job was sealed all the same
  }
}

}  // namespace
}  // namespace blockrep::agent
