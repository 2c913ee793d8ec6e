// blockrep-agent: reads volumes with io_uring, seals 64 KiB extents into records and streams them
// to the staging over one TLS channel, with at most `window_bytes_max` unacknowledged.
#pragma once

#include <csignal>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blockrep/channel.h"
#include "blockrep/cli.h"
#include "blockrep/codec.h"
#include "blockrep/record.h"
#include "blockrep/tls.h"
#include "blockrep/tracker.h"
#include "blockrep/uring.h"
#include "blockrep/wire.h"
#include "volume.h"

namespace blockrep::agent {

struct Options {
  HostPort staging;
  std::string server_id;
  std::vector<std::string> volumes;
  std::string key_file;
  TlsFiles tls;
  std::string state_dir;
  CodecChoice codec;
  std::string tracker = "auto";  // auto | ebpf | none
  bool once = false;
};

struct SyncSummary {
  uint64_t point_id = 0;
  uint64_t base_point = 0;        // 0: full point
  std::string tracker;            // which tracker ran, and why a full read happened if one did
  std::string mode_reason;
  uint64_t bytes_read = 0;
  uint64_t bytes_zero = 0;        // all-zero extents skipped
  uint64_t bytes_shipped_plain = 0;
  uint64_t bytes_stored = 0;      // sealed record bytes
  uint64_t bytes_wire = 0;        // frame bytes before TLS
  uint64_t records = 0;
  uint64_t records_raw = 0;       // incompressible, stored raw
  double seconds = 0;
};

class Agent {
 public:
  explicit Agent(Options opts);
  ~Agent();
  // Validates everything local (key, volumes, TLS files) before touching the network.
  Status Prepare();
  // One full sync to a new recovery point, waiting for its durable acknowledgement.
  Result<SyncSummary> SyncOnce(const volatile std::sig_atomic_t* stop);

 private:
  struct Read;
  Status OpenTracker();
  // Chooses full or incremental for the next point and fills `work_`.
  void PlanPoint(uint64_t last_point);
  Status Connect();
  Status Handshake(const volatile std::sig_atomic_t* stop);
  Status Step(bool wait);
  Status HandleInbox();
  Status IssueReads();
  Status ProcessRead(Read& r);
  Status SendFrame(wire::MsgType type, const Bytes& payload);
  void Teardown();

  Options opts_;
  DataKey key_;
  std::vector<std::unique_ptr<Volume>> volumes_;
  std::unique_ptr<TlsContext> tls_;
  std::unique_ptr<Ring> ring_;
  std::unique_ptr<Channel> ch_;
  std::unique_ptr<RecordSealer> sealer_;
  std::unique_ptr<EbpfTracker> tracker_;
  std::string tracker_note_;

  // Protocol state.
  std::optional<wire::HelloOk> hello_ok_;
  std::optional<Status> peer_error_;
  uint64_t point_id_ = 0;
  uint64_t point_acked_ = 0;
  uint64_t next_seq_ = 1;
  uint64_t acked_seq_ = 0;
  std::deque<std::pair<uint64_t, uint64_t>> unacked_;  // (seq, frame bytes)
  uint64_t unacked_bytes_ = 0;

  // Read pipeline: per volume, the extents this point ships, walked in order.
  bool full_point_ = true;
  std::vector<std::vector<Extent>> work_;
  std::vector<std::unique_ptr<Read>> reads_;
  size_t cur_volume_ = 0;
  size_t cur_run_ = 0;
  uint64_t cur_offset_ = 0;  // within the current run
  unsigned reads_inflight_ = 0;
  Bytes scratch_;
  Bytes frames_;
  SyncSummary summary_;
};

// Writes the last acknowledged point into the state directory (atomically).
Status RecordAckedPoint(const std::string& state_dir, const std::string& server_id, uint64_t point_id,
                        uint64_t time_ns);

}  // namespace blockrep::agent
