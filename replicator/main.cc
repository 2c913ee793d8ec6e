// blockrep-agent: the protected-server side. See BRIEF §3.1.
#include <boost/program_options.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "agent.h"
#include "blockrep/cli.h"
#include "blockrep/options.h"

namespace po = boost::program_options;
using namespace blockrep;

namespace {
volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }
constexpr const char* kProg = "blockrep-agent";

std::string DirOf(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}
}  // namespace

int main(int argc, char** argv) {
  po::options_description desc(
      "Usage: blockrep-agent --staging HOST:PORT --server-id ID --volume PATH [--volume PATH ...]\n"
      "                      --key FILE --once [options]\nOptions");
  std::string staging, server_id, key, cert, tls_key, ca, state_dir, compress = "lz4", tracker = "auto";
  std::vector<std::string> volumes;
  desc.add_options()("help,h", "show this help")(
      "staging", po::value(&staging), "staging address HOST:PORT")(
      "server-id", po::value(&server_id), "this server's stable id (must match its certificate)")(
      "volume", po::value(&volumes), "block device or image file to protect (repeatable; index = order)")(
      "key", po::value(&key), "data key file (mode 0600), e.g. data-ID.key from blockrep-keygen")(
      "tls-cert", po::value(&cert), "agent certificate (default: agent-ID.crt beside --key)")(
      "tls-key", po::value(&tls_key), "agent private key (default: agent-ID.key beside --key)")(
      "tls-ca", po::value(&ca), "CA certificate (default: ca.crt beside --key)")(
      "state-dir", po::value(&state_dir), "directory for the agent's small state")(
      "compress", po::value(&compress), "lz4 (default) | zstd[:LEVEL] | none")(
      "tracker", po::value(&tracker), "auto (default: ebpf where it loads) | ebpf | none")(
      "once", "sync all volumes to one recovery point, wait for the durable ack, exit");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (staging.empty() || server_id.empty() || key.empty())
    return ReportFatal(kProg, InvalidArgument("--staging, --server-id, --key and --volume are required (see --help)"));
  if (!vm.count("once"))
    return ReportFatal(kProg, InvalidArgument("continuous replication is not built yet; run with --once "
                                              "(one recovery point, then exit)"));
  if (tracker == "scan")
    return ReportFatal(kProg, InvalidArgument("--tracker scan is not built yet; use auto, ebpf or none"));
  if (tracker != "auto" && tracker != "ebpf" && tracker != "none")
    return ReportFatal(kProg, InvalidArgument("--tracker " + tracker + ": use auto, ebpf or none"));
  auto codec = ParseCodec(compress);
  if (!codec.ok()) return ReportFatal(kProg, codec.status());
  auto hp = ParseHostPort(staging, "--staging");
  if (!hp.ok()) return ReportFatal(kProg, hp.status());

  agent::Options opts;
  opts.staging = *hp;
  opts.server_id = server_id;
  opts.volumes = volumes;
  opts.key_file = key;
  std::string dir = DirOf(key);
  opts.tls.cert = cert.empty() ? dir + "/agent-" + server_id + ".crt" : cert;
  opts.tls.key = tls_key.empty() ? dir + "/agent-" + server_id + ".key" : tls_key;
  opts.tls.ca = ca.empty() ? dir + "/ca.crt" : ca;
  opts.state_dir = state_dir;
  opts.codec = *codec;
  opts.tracker = tracker;
  opts.once = true;

  std::signal(SIGPIPE, SIG_IGN);
  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  agent::Agent a(std::move(opts));
  Status st = a.Prepare();
  if (!st.ok()) return ReportFatal(kProg, st);
  auto sum = a.SyncOnce(&g_stop);
  if (!sum.ok()) return ReportFatal(kProg, sum.status());
  const agent::SyncSummary& s = *sum;
  double mib = 1024.0 * 1024.0;
  std::printf("point %llu acknowledged (durable on staging)\n", static_cast<unsigned long long>(s.point_id));
  if (s.base_point != 0)
    std::printf("  kind        incremental on point %llu (%s)\n", static_cast<unsigned long long>(s.base_point),
                s.mode_reason.c_str());
  else
    std::printf("  kind        full (%s)\n", s.mode_reason.c_str());
  std::printf("  tracker     %s\n", s.tracker.c_str());
  std::printf("  read        %10.1f MiB  (%.1f MiB all-zero: %s)\n", s.bytes_read / mib, s.bytes_zero / mib,
              s.base_point != 0 ? "sent as 80-byte zero records" : "not shipped");
  std::printf("  shipped     %10.1f MiB of data in %llu records (%llu stored raw: incompressible)\n",
              s.bytes_shipped_plain / mib, static_cast<unsigned long long>(s.records),
              static_cast<unsigned long long>(s.records_raw));
  std::printf("  stored      %10.1f MiB sealed (ratio %.2f of shipped data)\n", s.bytes_stored / mib,
              s.bytes_shipped_plain ? static_cast<double>(s.bytes_stored) / s.bytes_shipped_plain : 0.0);
  std::printf("  on the wire %10.1f MiB before TLS\n", s.bytes_wire / mib);
  std::printf("  time        %10.2f s  (%.1f MB/s read)\n", s.seconds,
              s.seconds > 0 ? s.bytes_read / 1e6 / s.seconds : 0.0);
  return 0;
}
