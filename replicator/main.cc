// blockrep-agent: the protected-server side. See README.md.
#include <boost/program_options.hpp>
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/file.h>

#include <csignal>
#include <cstdio>
#include <unistd.h>
#include <iostream>

#include "agent.h"
#include "point_request.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/base/cli.h"
#include "blockrep/base/json.h"
#include "blockrep/base/fs.h"
#include "blockrep/base/options.h"

namespace po = boost::program_options;
using namespace blockrep;

namespace {
volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_point_now = 0;
volatile std::sig_atomic_t g_reload = 0;
void OnHup(int) { g_reload = 1; }
void OnSignal(int) { g_stop = 1; }
void OnUsr1(int) { g_point_now = 1; }
constexpr const char* kProg = "blockrep-agent";

std::string DirOf(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}
}  // namespace

// --once's summary, for a person.
static void PrintSummary(const agent::SyncSummary& s) {
  double mib = 1024.0 * 1024.0;
  std::printf("point %llu%s acknowledged (durable on staging)\n", static_cast<unsigned long long>(s.point_id),
              s.label.empty() ? "" : (" '" + s.label + "'").c_str());
  if (s.resumed && s.base_point == 0)
    std::printf("  kind        resumed full (%s)\n", s.mode_reason.c_str());
  else if (s.resumed_rescan)
    std::printf("  kind        resumed rescan on point %llu (%s)\n", static_cast<unsigned long long>(s.base_point),
                s.mode_reason.c_str());
  else if (s.resumed)
    std::printf("  kind        resumed incremental on point %llu (%s)\n", static_cast<unsigned long long>(s.base_point),
                s.mode_reason.c_str());
  else if (s.base_point != 0)
    std::printf("  kind        incremental on point %llu (%s)\n", static_cast<unsigned long long>(s.base_point),
                s.mode_reason.c_str());
  else
    std::printf("  kind        full (%s)\n", s.mode_reason.c_str());
  std::printf("  tracker     %s\n", s.tracker.c_str());
  // All-zero extents are left out of a full point's first sweep; elsewhere an extent that is zero
  // where the base may hold data goes as a zero record (a rescan: only where the base's is not).
  std::printf("  read        %10.1f MiB  (%.1f MiB all-zero; %.1f MiB sent as 80-byte zero records)\n", s.bytes_read / mib,
              s.bytes_zero / mib, s.bytes_zero_sent / mib);
  if (s.bytes_holes != 0)
    std::printf("  holes       %10.1f MiB  (of image files: not read, compared with the base as zeros)\n", s.bytes_holes / mib);
  if (s.bytes_reread_to_seal != 0)
    std::printf("  re-read     %10.1f MiB  (blocks of the kept records, to seal the resumed point; not sent)\n",
                s.bytes_reread_to_seal / mib);
  std::printf("  shipped     %10.1f MiB of data in %llu records (%llu stored raw: incompressible)\n",
              s.bytes_shipped_plain / mib, static_cast<unsigned long long>(s.records),
              static_cast<unsigned long long>(s.records_raw));
  std::printf("  stored      %10.1f MiB sealed (ratio %.2f of shipped data)\n", s.bytes_stored / mib,
              s.bytes_shipped_plain ? static_cast<double>(s.bytes_stored) / s.bytes_shipped_plain : 0.0);
  std::printf("  on the wire %10.1f MiB before TLS\n", s.bytes_wire / mib);
  std::printf("  time        %10.2f s  (%.1f MB/s read)\n", s.seconds,
              s.seconds > 0 ? s.bytes_read / 1e6 / s.seconds : 0.0);
}

// --once --json: the same summary as one JSON object on stdout (the log stays on stderr).
static void PrintSummaryJson(const agent::SyncSummary& s) {
  const char* kind = s.resumed ? (s.base_point == 0 ? "resumed full" : s.resumed_rescan ? "resumed rescan" : "resumed")
                    : s.base_point != 0 ? "incremental" : "full";
  auto u = [](uint64_t v) { return std::to_string(v); };
 std::string j = "{\"point\": " + u(s.point_id) + ", \"label\": " + (s.label.empty() ? "null" : JsonString(s.label)) +
                  ", \"kind\": " + JsonString(kind) + ", \"base_point\": " +
                  u(s.base_point) + ", \"reason\": " + JsonString(s.mode_reason) + ", \"tracker\": " +
                  JsonString(s.tracker) + ", \"bytes_read\": " + u(s.bytes_read) + ", \"bytes_zero\": " +
                   u(s.bytes_zero) + ", \"bytes_zero_sent\": " + u(s.bytes_zero_sent) + ", \"bytes_holes\": " + u(s.bytes_holes) + ", \"bytes_reread_to_seal\": " + u(s.bytes_reread_to_seal) +
                  ", \"bytes_shipped\": " + u(s.bytes_shipped_plain) + ", \"records\": " + u(s.records) +
                  ", \"records_raw\": " + u(s.records_raw) + ", \"bytes_stored\": " + u(s.bytes_stored) +
                  ", \"bytes_wire\": " + u(s.bytes_wire);
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.3f", s.seconds);
  j += std::string(", \"seconds\": ") + secs + ", \"alarm\": " + (s.alarm.empty() ? "null" : JsonString(s.alarm)) + "}\n";
  std::fputs(j.c_str(), stdout);
}

int StatusCommand(int argc, char** argv) {
  std::string state_dir;
  po::options_description desc("Usage: blockrep-agent status --state-dir DIR [--json]\nOptions");
  desc.add_options()("help,h", "show this help")("state-dir", po::value(&state_dir), "the agent's --state-dir")(
      "json", "print the raw JSON");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (state_dir.empty()) return ReportFatal(kProg, InvalidArgument("status needs --state-dir DIR"));
  auto text = ReadSmallFile(state_dir + "/status.json", 1 << 20);
  if (!text.ok())
    return ReportFatal(kProg, NotFound("no status in " + state_dir +
                                       " (is a continuous agent running with this --state-dir?)"));
  if (vm.count("json")) {
    std::fputs(text->c_str(), stdout);
    return 0;
  }
  // Plain view: one "key: value" per line, without JSON punctuation.
  for (char c : *text)
    if (c != '{' && c != '}' && c != '"' && c != '[' && c != ']') std::putchar(c == ',' ? ' ' : c);
  return 0;
}

int SetBandwidthCommand(int argc, char** argv) {
  std::string state_dir, rate_text;
  po::options_description desc("Usage: blockrep-agent set-bandwidth --state-dir DIR RATE\nOptions");
  desc.add_options()("help,h", "show this help")("state-dir", po::value(&state_dir), "the agent's --state-dir")(
      "rate", po::value(&rate_text), "bytes/s (K/M/G decimal), 0 = unlimited");
  po::positional_options_description pos;
  pos.add("rate", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return ReportFatal(kProg, InvalidArgument(std::string(e.what()) + " (see set-bandwidth --help)"));
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (state_dir.empty() || rate_text.empty())
    return ReportFatal(kProg, InvalidArgument("set-bandwidth needs --state-dir DIR and a RATE such as 20M"));
  auto rate = ParseRate(rate_text, "RATE");
  if (!rate.ok()) return ReportFatal(kProg, rate.status());
  auto pid_text = ReadSmallFile(state_dir + "/agent.pid", 64);
  if (!pid_text.ok()) return ReportFatal(kProg, NotFound("no running agent with --state-dir " + state_dir));
  pid_t pid = static_cast<pid_t>(std::strtol(pid_text->c_str(), nullptr, 10));
  std::string line = rate_text + "\n";
  Status st = WriteFileAtomic(state_dir + "/bandwidth-limit",
                              ByteSpan(reinterpret_cast<const uint8_t*>(line.data()), line.size()));
  if (!st.ok()) return ReportFatal(kProg, st);
  if (pid <= 0 || kill(pid, SIGHUP) != 0)
    return ReportFatal(kProg, Unavailable("the agent (pid " + std::to_string(pid) + ") is not running; the limit "
                                          "applies at its next start only if given with --bandwidth-limit"));
  std::printf("bandwidth limit of the agent (pid %d) set to %s bytes/s\n", static_cast<int>(pid),
              *rate ? std::to_string(*rate).c_str() : "unlimited");
  return 0;
}

// blockrep-agent point: a point now from the running agent, optionally labelled; waits for the
// staging's durable acknowledgement (point_request.h).
int PointCommand(int argc, char** argv) {
  std::string state_dir, label, timeout = "10m";
  po::options_description desc("Usage: blockrep-agent point --state-dir DIR [--label TEXT] [--no-wait]\nOptions");
  desc.add_options()("help,h", "show this help")("state-dir", po::value(&state_dir), "the running agent's --state-dir")(
      "label", po::value(&label),
      "label the point (1..64 of A-Z a-z 0-9 . _ -, starting with a letter): kept beyond the retention tiers "
      "(staging --keep-labelled) and named by it in restore, mount and drill --point")(
      "timeout", po::value(&timeout)->default_value("10m"), "how long to wait for the acknowledgement")(
      "no-wait", "return once the agent was asked, without waiting")("json", "print the result as one JSON object");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (state_dir.empty()) return ReportFatal(kProg, InvalidArgument("point needs --state-dir DIR (the running agent's)"));
  if (!label.empty())
    if (Status st = CheckPointLabel(label); !st.ok()) return ReportFatal(kProg, st.Annotate("--label"));
  auto timeout_ns = ParseDurationNs(timeout, "--timeout");
  if (!timeout_ns.ok()) return ReportFatal(kProg, timeout_ns.status());
  auto pid_text = ReadSmallFile(state_dir + "/agent.pid", 64);
  if (!pid_text.ok()) return ReportFatal(kProg, NotFound("no running agent with --state-dir " + state_dir + " (no agent.pid)"));
  pid_t pid = static_cast<pid_t>(std::strtol(pid_text->c_str(), nullptr, 10));
  // One request at a time per agent: a second command waits here for the first to finish.
  UniqueFd lock(open((state_dir + "/point.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.valid() || flock(lock.get(), LOCK_EX) != 0)
    return ReportFatal(kProg, ErrnoStatus("lock " + state_dir + "/point.lock", errno));
  uint8_t raw[8];
  if (RAND_bytes(raw, sizeof raw) != 1) return ReportFatal(kProg, Internal("RAND_bytes failed"));
  agent::PointRequest rq;
  rq.id = HexEncode(ByteSpan(raw, sizeof raw));
  rq.label = label;
  if (Status st = agent::SendPointRequest(state_dir, rq, pid); !st.ok()) return ReportFatal(kProg, st);
  if (vm.count("no-wait")) {
    std::printf("asked the agent (pid %d) for a point%s\n", static_cast<int>(pid),
                label.empty() ? "" : (" labelled '" + label + "'").c_str());
    return 0;
  }
  auto reply = agent::AwaitPointReply(state_dir, rq.id, pid, *timeout_ns);
  if (!reply.ok()) return ReportFatal(kProg, reply.status());
  if (!reply->error.empty()) return ReportFatal(kProg, Unavailable("the agent refused the request: " + reply->error));
  if (vm.count("json")) {
    std::printf("{\"point\": %llu, \"time\": \"%s\", \"consistent\": %s, \"label\": %s}\n",
                static_cast<unsigned long long>(reply->point_id), FormatUtc(reply->time_ns).c_str(),
                reply->consistent ? "true" : "false", reply->label.empty() ? "null" : JsonString(reply->label).c_str());
  } else {
    std::printf("point %llu%s acknowledged (durable on staging): %s, %s\n", static_cast<unsigned long long>(reply->point_id),
                reply->label.empty() ? "" : (" '" + reply->label + "'").c_str(), FormatUtc(reply->time_ns).c_str(),
                reply->consistent ? "consistent" : "not consistent");
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "status") return StatusCommand(argc - 1, argv + 1);
  if (argc > 1 && std::string(argv[1]) == "point") return PointCommand(argc - 1, argv + 1);
  if (argc > 1 && std::string(argv[1]) == "set-bandwidth") return SetBandwidthCommand(argc - 1, argv + 1);
  po::options_description desc(
      "Usage: blockrep-agent --staging HOST:PORT --server-id ID --volume PATH [--volume PATH ...]\n"
      "                      --key FILE --once [options]\nOptions");
  std::string staging, server_id, key, cert, tls_key, ca, state_dir, compress = "lz4", tracker = "auto";
  std::string point_interval, rpo_target, bandwidth = "0", pre_hook, post_hook, metrics, metrics_textfile, label;
  std::vector<std::string> volumes;
  desc.add_options()("help,h", "show this help")("config", po::value<std::string>(), kConfigHelp)(
      "staging", po::value(&staging),
      "staging address HOST:PORT, or several, HOST:PORT,HOST:PORT,...: frontends sharing one bucket, "
      "tried in turn when a session fails")(
      "server-id", po::value(&server_id), "this server's stable id (must match its certificate)")(
      "volume", po::value(&volumes), "block device or image file to protect (repeatable; index = order)")(
      "key", po::value(&key), "data key file (mode 0600), e.g. data-ID.key from blockrep-keygen")(
      "tls-cert", po::value(&cert), "agent certificate (default: agent-ID.crt beside --key)")(
      "tls-key", po::value(&tls_key), "agent private key (default: agent-ID.key beside --key)")(
      "tls-ca", po::value(&ca), "CA certificate (default: ca.crt beside --key)")(
      "state-dir", po::value(&state_dir), "directory for the agent's small state")(
      "compress", po::value(&compress), "lz4 (default) | zstd[:LEVEL] | none")(
      "tracker", po::value(&tracker), "auto (default: ebpf where it loads, else scan) | ebpf | scan")(
      "point-interval", po::value(&point_interval)->default_value("10m"),
      "continuous mode: take a recovery point this often (SIGUSR1: now)")(
      "rpo-target", po::value(&rpo_target)->default_value("30s"), "warn before lag would pass this")(
      "bandwidth-limit", po::value(&bandwidth), "bytes/s, e.g. 50M (K/M/G decimal); change it live with "
      "blockrep-agent set-bandwidth")(
      "pre-hook", po::value(&pre_hook), "executable run before each point's freeze (quiesce applications); "
      "BLOCKREP_POINT_ID is set; failing or taking over 30 s makes the point not consistent")(
      "post-hook", po::value(&post_hook), "executable run after each point's thaw")(
      "metrics", po::value(&metrics),
      "serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9401 (no authentication)")(
      "metrics-textfile", po::value(&metrics_textfile),
      "write the same metrics to PATH (*.prom) about once a second, for node_exporter's textfile collector")(
      "once", "sync all volumes to one recovery point, wait for the durable ack, exit")(
      "label", po::value(&label), "with --once: label the point (kept beyond the retention tiers; restore --point LABEL)")(
      "json", "with --once: print the summary as one JSON object");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (staging.empty() || server_id.empty() || key.empty())
    return ReportFatal(kProg, InvalidArgument("--staging, --server-id, --key and --volume are required (see --help)"));
  if (tracker != "auto" && tracker != "ebpf" && tracker != "scan")
    return ReportFatal(kProg, InvalidArgument("--tracker " + tracker + ": use auto, ebpf or scan"));
  auto codec = ParseCodec(compress);
  if (!codec.ok()) return ReportFatal(kProg, codec.status());
  // --staging A,B,...: frontends of one bucket, tried in turn.
  std::vector<HostPort> stagings;
  for (size_t from = 0; from <= staging.size();) {
    size_t comma = std::min(staging.find(',', from), staging.size());
    auto one = ParseHostPort(staging.substr(from, comma - from), "--staging");
    if (!one.ok()) return ReportFatal(kProg, one.status());
    stagings.push_back(*one);
    from = comma + 1;
  }
  const HostPort* hp = &stagings.front();

  agent::Options opts;
  opts.staging = *hp;
  opts.other_stagings.assign(stagings.begin() + 1, stagings.end());
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
  opts.once = vm.count("once") > 0;
  opts.progress = opts.once && !vm.count("json") && ProgressBar::StderrIsTerminal();
  if (!label.empty()) {
    if (!opts.once)
      return ReportFatal(kProg, InvalidArgument("--label goes with --once; a running agent takes a labelled point with "
                                                "`blockrep-agent point --state-dir DIR --label TEXT`"));
    if (Status st = CheckPointLabel(label); !st.ok()) return ReportFatal(kProg, st.Annotate("--label"));
    opts.label = label;
  }
  auto interval = ParseDurationNs(point_interval, "--point-interval");
  if (!interval.ok()) return ReportFatal(kProg, interval.status());
  opts.point_interval_ns = *interval;
  auto rpo = ParseDurationNs(rpo_target, "--rpo-target");
  if (!rpo.ok()) return ReportFatal(kProg, rpo.status());
  opts.rpo_target_ns = *rpo;
  if (!opts.once && opts.state_dir.empty()) opts.state_dir = "/var/lib/blockrep/agent-" + server_id;
  auto rate = ParseRate(bandwidth, "--bandwidth-limit");
  if (!rate.ok()) return ReportFatal(kProg, rate.status());
  opts.bandwidth_bps = *rate;
  for (const std::string* hook : {&pre_hook, &post_hook}) {
    if (!hook->empty() && access(hook->c_str(), X_OK) != 0)
      return ReportFatal(kProg, InvalidArgument("hook " + *hook + " is not an executable file (chmod +x it, or fix the path)"));
  }
  opts.pre_hook = pre_hook;
  opts.post_hook = post_hook;
  if (!metrics.empty()) {
    auto mhp = ParseHostPort(metrics, "--metrics");
    if (!mhp.ok()) return ReportFatal(kProg, mhp.status());
    opts.metrics = *mhp;
  }
  opts.metrics_textfile = metrics_textfile;

  std::signal(SIGPIPE, SIG_IGN);
  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  struct sigaction su{};
  su.sa_handler = OnUsr1;
  sigaction(SIGUSR1, &su, nullptr);
  struct sigaction sh{};
  sh.sa_handler = OnHup;
  sigaction(SIGHUP, &sh, nullptr);

  agent::Signals sig{&g_stop, &g_point_now, &g_reload};
  bool once = opts.once;
  std::string state_dir_for_pid = opts.state_dir;
  agent::Agent a(std::move(opts));
  Status st = a.Prepare();
  if (!st.ok()) return ReportFatal(kProg, st);
  std::string pid_file = state_dir_for_pid.empty() ? "" : state_dir_for_pid + "/agent.pid";
  if (!pid_file.empty()) {
    std::string pid = std::to_string(getpid()) + "\n";
    // set-bandwidth finds the agent through it; a stale file only makes set-bandwidth fail clearly.
    Status written = WriteFileAtomic(pid_file, ByteSpan(reinterpret_cast<const uint8_t*>(pid.data()), pid.size()));
    if (!written.ok())
      Log(kProg, "warning: " + written.message() + "; set-bandwidth will not find this agent (check --state-dir)");
  }
  if (!once) {
    st = a.RunContinuous(sig);
    if (!st.ok()) return ReportFatal(kProg, st);
    Log(kProg, "stopped");
    return 0;
  }
  auto sum = a.SyncOnce(sig);
  if (!sum.ok()) return ReportFatal(kProg, sum.status());
  const agent::SyncSummary& s = *sum;
  if (vm.count("json")) PrintSummaryJson(s);
  else PrintSummary(s);
  if (!s.alarm.empty()) {
    // The volumes are protected again, but the staging lost acknowledged history: not a success.
    std::fprintf(stderr, "%s: error: ALARM: %s; point %llu now holds the volumes (rescan), but find out what "
                 "happened to the staging's store before trusting its older points\n",
                 kProg, s.alarm.c_str(), static_cast<unsigned long long>(s.point_id));
    return 3;
  }
  return 0;
}
