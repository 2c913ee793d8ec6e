// blockrep-recover: lists and materialises recovery points. See README.md (What works today, Failover and failback).
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <unistd.h>

#include "blockrep/base/cli.h"
#include "blockrep/base/json.h"
#include "blockrep/crypto/keyfile.h"
#include "blockrep/base/options.h"
#include "blockrep/store/store.h"
#include "drill.h"
#include "fleet.h"
#include "mount.h"
#include "descent.h"
#include "restore.h"
#include "verify.h"

namespace po = boost::program_options;
using namespace blockrep;

namespace {

constexpr const char* kProg = "blockrep-recover";

// --staging and the agent's TLS files, shared by the commands that can read over the network.
void AddStagingOptions(po::options_description* desc, std::string* staging, TlsFiles* tls) {
  desc->add_options()("staging", po::value(staging))("tls-cert", po::value(&tls->cert))("tls-key", po::value(&tls->key))(
      "tls-ca", po::value(&tls->ca));
}
// --s3-*: where the bucket of --store s3://BUCKET/PREFIX is and how to reach it.
void AddS3Options(po::options_description* desc, S3Flags* s3) {
  desc->add_options()("s3-endpoint", po::value(&s3->endpoint))("s3-credentials", po::value(&s3->credentials_file))(
      "s3-ca", po::value(&s3->ca_file))("s3-region", po::value(&s3->region));
}
constexpr const char* kUsage =
    "Usage:\n"
    "  blockrep-recover list    (--store DIR | --staging HOST:PORT) --server-id ID [--key FILE] [--json]\n"
    "  blockrep-recover restore (--store DIR | --staging HOST:PORT) --server-id ID --key FILE\n"
    "                           --point latest|ID|TIME|LABEL --output DIR | --target VOLINDEX=PATH ...\n"
    "                           [--delta [--agent-state DIR]] [--allow-damaged]\n"
    "  blockrep-recover verify  --store DIR [--server-id ID] [--key FILE]\n"
    "  blockrep-recover mount   (--store DIR | --staging HOST:PORT) --server-id ID --key FILE\n"
    "                           [--overlay DIR] [--point P]\n"
    "                           [--cache-mib N] MOUNTPOINT\n"
    "  blockrep-recover drill   (--store DIR | --staging HOST:PORT) --server-id ID --key FILE\n"
    "                           [--point P] [--hook SCRIPT]\n"
    "                           [--hook-timeout SECONDS] [--copy] [--keep] [--scratch DIR] [--json]\n"
    "  blockrep-recover servers (--store DIR | --staging HOST:PORT --tls-cert F --tls-key F --tls-ca F) [--json]\n"
    "Over --staging, the agent's TLS files are used: --tls-cert, --tls-key, --tls-ca, by default\n"
    "agent-ID.crt, agent-ID.key and ca.crt beside --key.\n"
    "list, restore, verify, mount, drill and servers also read a store kept in a bucket: --store s3://BUCKET/PREFIX\n"
    "--s3-endpoint https://HOST[:PORT] [--s3-credentials FILE (0600; else AWS_ACCESS_KEY_ID and\n"
    "AWS_SECRET_ACCESS_KEY)] [--s3-ca FILE] [--s3-region R (us-east-1)]. They only read it.\n";

int List(int argc, char** argv) {
  recovery::SourceSpec spec;
  po::options_description desc("list options");
  desc.add_options()("help,h", "")("store", po::value(&spec.store_dir))("server-id", po::value(&spec.server_id))(
      "key", po::value(&spec.key_file))("json", "");
  AddStagingOptions(&desc, &spec.staging, &spec.tls);
  AddS3Options(&desc, &spec.s3);
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  Status flags = recovery::CheckSourceFlags(spec, "list");
  if (!flags.ok()) return ReportFatal(kProg, flags);
  std::vector<DataKey> keys;
  if (!spec.staging.empty()) {
    // The staging checks the reader's key id (its data key stays here): list needs --key then.
    // Listing needs no data key; the agent's TLS files default beside --key when it is given.
    if (!spec.key_file.empty()) {
      auto loaded = LoadDataKeys(spec.key_file);
      if (!loaded.ok()) return ReportFatal(kProg, loaded.status());
      keys = std::move(loaded).value();
      recovery::FillTlsDefaults(&spec);
    } else if (spec.tls.cert.empty() || spec.tls.key.empty() || spec.tls.ca.empty()) {
      return ReportFatal(kProg, InvalidArgument("list --staging needs the agent's TLS files: --key FILE (they sit beside "
                                                "it) or --tls-cert, --tls-key and --tls-ca"));
    }
  }
  auto source = recovery::OpenSource(spec, keys);
  if (!source.ok()) return ReportFatal(kProg, source.status());
  auto manifest = (*source)->LoadManifest();
  if (!manifest.ok()) return ReportFatal(kProg, manifest.status());
  const auto& points = manifest->points;
  if (vm.count("json")) {
    std::printf("[");
    for (size_t i = 0; i < points.size(); ++i) {
      const auto& p = points[i];
      std::printf("%s\n  {\"id\": %llu, \"time\": \"%s\", \"consistent\": %s, \"volumes\": %u, \"bytes\": %llu, "
                  "\"label\": %s}",
                  i ? "," : "", static_cast<unsigned long long>(p.id), FormatUtc(p.time_ns).c_str(),
                  p.consistent() ? "true" : "false", p.volume_count,
                  static_cast<unsigned long long>(p.bytes_added), p.label.empty() ? "null" : JsonString(p.label).c_str());
    }
    std::printf("%s]\n", points.empty() ? "" : "\n");
    return 0;
  }
  std::printf("%-8s %-21s %-11s %-8s %14s  %s\n", "ID", "TIME (UTC)", "CONSISTENT", "VOLUMES", "BYTES", "LABEL");
  for (const auto& p : points)
    std::printf("%-8llu %-21s %-11s %-8u %14llu  %s\n", static_cast<unsigned long long>(p.id),
                FormatUtc(p.time_ns).c_str(), p.consistent() ? "yes" : "no", p.volume_count,
                static_cast<unsigned long long>(p.bytes_added), p.label.c_str());
  if (points.empty()) std::printf("(no recovery points)\n");
  return 0;
}

int ServersCmd(int argc, char** argv) {
  recovery::SourceSpec spec;
  po::options_description desc("servers options");
  desc.add_options()("help,h", "")("store", po::value(&spec.store_dir))("json", "");
  AddStagingOptions(&desc, &spec.staging, &spec.tls);
  AddS3Options(&desc, &spec.s3);
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (spec.store_dir.empty() == spec.staging.empty())
    return ReportFatal(kProg, InvalidArgument("servers needs exactly one of --store DIR or --staging HOST:PORT"));
  if (!spec.staging.empty() && (spec.tls.cert.empty() || spec.tls.key.empty() || spec.tls.ca.empty()))
    return ReportFatal(kProg, InvalidArgument("servers --staging needs an operator's TLS files: --tls-cert operator-NAME.crt "
                                              "--tls-key operator-NAME.key --tls-ca ca.crt (blockrep-keygen --operator NAME)"));
  auto rows = spec.staging.empty() ? recovery::ReadFleet(spec.store_dir, spec.s3) : recovery::ReadFleetFromStaging(spec);
  if (!rows.ok()) return ReportFatal(kProg, rows.status());
  std::string out = vm.count("json") ? recovery::FleetJson(*rows, NowUtcNs()) : recovery::FleetTable(*rows, NowUtcNs());
  std::fputs(out.c_str(), stdout);
  return 0;
}

int RestoreCmd(int argc, char** argv) {
  recovery::RestoreRequest req;
  std::vector<std::string> targets;
  std::string expect;
  po::options_description desc("restore options");
  desc.add_options()("store", po::value(&req.store_dir))("server-id", po::value(&req.server_id))(
      "key", po::value(&req.key_file))("point", po::value(&req.point_spec))(
      "output", po::value(&req.output_dir))("target", po::value(&targets))("allow-damaged", "")("delta", "")(
      "expect-point", po::value(&expect))("agent-state", po::value(&req.agent_state_dir))("help,h", "");
  AddStagingOptions(&desc, &req.staging, &req.tls);
  AddS3Options(&desc, &req.s3);
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (!expect.empty()) {
    auto e = recovery::ParseExpectPoint(expect);
    if (!e.ok()) return ReportFatal(kProg, e.status());
    req.expect_point = *e;
  }
  if (req.store_dir.empty() == req.staging.empty() || req.server_id.empty() || req.key_file.empty())
    return ReportFatal(kProg, InvalidArgument("restore needs exactly one of --store DIR or --staging HOST:PORT, and --server-id and --key"));
  if (req.output_dir.empty() == targets.empty())
    return ReportFatal(kProg, InvalidArgument("restore needs exactly one of --output DIR or --target VOLINDEX=PATH"));
  for (const std::string& t : targets) {
    size_t eq = t.find('=');
    char* end = nullptr;
    unsigned long idx = eq == std::string::npos ? 0 : std::strtoul(t.c_str(), &end, 10);
    if (eq == std::string::npos || eq == 0 || end != t.c_str() + eq || idx > 65535 || eq + 1 == t.size())
      return ReportFatal(kProg, InvalidArgument("--target " + t + ": expected VOLINDEX=PATH, e.g. 0=/dev/sdb"));
    req.targets[static_cast<uint16_t>(idx)] = t.substr(eq + 1);
  }
  req.allow_damaged = vm.count("allow-damaged") != 0;
  req.delta = vm.count("delta") != 0;
  if (req.delta && !req.output_dir.empty())
    return ReportFatal(kProg, InvalidArgument("--delta writes onto existing copies: give --target VOLINDEX=PATH, not --output"));
  if (req.delta && req.allow_damaged)
    return ReportFatal(kProg, InvalidArgument("--delta and --allow-damaged do not go together (a delta restore stops at damage)"));
  if (!req.agent_state_dir.empty() && !req.delta)
    return ReportFatal(kProg, InvalidArgument("--agent-state goes with --delta (a failback onto the agent's own volumes)"));
  auto sum = recovery::Restore(req);
  if (!sum.ok()) return ReportFatal(kProg, sum.status());
  if (req.delta) {
    std::printf("delta-restored point %llu (%s, %s) in %.2f s: target bytes read %llu, bytes fetched %llu, "
                "bytes written %llu (%llu differing 4 KiB blocks, %llu records opened)\n",
                static_cast<unsigned long long>(sum->point.id), FormatUtc(sum->point.time_ns).c_str(),
                sum->point.consistent() ? "consistent" : "not consistent", sum->seconds,
                static_cast<unsigned long long>(sum->target_bytes_read), static_cast<unsigned long long>(sum->bytes_fetched),
                static_cast<unsigned long long>(sum->bytes_written), static_cast<unsigned long long>(sum->blocks_differing),
                static_cast<unsigned long long>(sum->records));
    if (!sum->untracked_why.empty())
      std::printf("  --agent-state: the tracker could not be used, so the whole target was read: %s\n", sum->untracked_why.c_str());
    else if (sum->tracked_base_point != 0)
      std::printf("  --agent-state: %llu of %zu volume(s) by the tracker (blocks written since point %llu, extents changed "
                  "since it on the chain)\n",
                  static_cast<unsigned long long>(sum->tracked_volumes), sum->written.size(),
                  static_cast<unsigned long long>(sum->tracked_base_point));
    for (const auto& [vol, path] : sum->written) std::printf("  volume %u -> %s\n", vol, path.c_str());
    std::printf("  sealed: %llu region(s) of the targets add up to the agent's seal\n",
                static_cast<unsigned long long>(sum->seal_regions_matched));
    return 0;
  }
  std::printf("restored point %llu%s (%s, %s) in %.2f s: %llu records, %.1f MiB of data, %.1f MiB fetched from %s\n",
              static_cast<unsigned long long>(sum->point.id),
              sum->point.label.empty() ? "" : (" '" + sum->point.label + "'").c_str(), FormatUtc(sum->point.time_ns).c_str(),
              sum->point.consistent() ? "consistent" : "not consistent", sum->seconds,
              static_cast<unsigned long long>(sum->records), sum->bytes_written / 1048576.0,
              sum->bytes_fetched / 1048576.0, req.staging.empty() ? "the store" : "the staging");
  for (const auto& [vol, path] : sum->written) std::printf("  volume %u -> %s\n", vol, path.c_str());
  std::printf("  sealed: %llu region(s) add up to the agent's seal (every record there, none older)\n",
              static_cast<unsigned long long>(sum->seal_regions_matched));
  if (!sum->damaged.empty()) {
    std::printf("%zu damaged extent(s) left as zeros (--allow-damaged):\n", sum->damaged.size());
    for (const auto& d : sum->damaged) std::printf("  %s\n", recovery::DescribeDamage(req.server_id, d).c_str());
  }
  return 0;
}

int VerifyCmd(int argc, char** argv) {
  recovery::VerifyRequest req;
  std::string expect;
  po::options_description desc("verify options");
  desc.add_options()("store", po::value(&req.store_dir))("server-id", po::value(&req.server_id))(
      "key", po::value(&req.key_file))("expect-point", po::value(&expect))("help,h", "");
  AddS3Options(&desc, &req.s3);
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (!expect.empty()) {
    auto e = recovery::ParseExpectPoint(expect);
    if (!e.ok()) return ReportFatal(kProg, e.status());
    req.expect_point = *e;
  }
  if (req.store_dir.empty()) return ReportFatal(kProg, InvalidArgument("verify needs --store DIR"));
  auto reports = recovery::Verify(req);
  if (!reports.ok()) return ReportFatal(kProg, reports.status());
  size_t damaged = 0, unreadable = 0, rolled_back = 0;
  for (const auto& r : *reports) {
    std::printf("server '%s': %llu point(s), %llu record(s), %.1f MiB stored, %s", r.server_id.c_str(),
                static_cast<unsigned long long>(r.points), static_cast<unsigned long long>(r.records),
                r.record_bytes / 1048576.0,
                r.authenticated ? "authenticated and decompressed with the key" : "checksums and structure (no key)");
    if (r.authenticated)
      std::printf(" (%.1f MiB of data; %llu volume seal(s) add up)", r.plain_bytes / 1048576.0,
                  static_cast<unsigned long long>(r.seals_matched));
    std::printf(": %s\n", r.clean() ? "ok" : "DAMAGED");
    if (!r.note.empty()) std::printf("  note: %s\n", r.note.c_str());
    if (!r.unreadable.empty()) std::printf("  unreadable: %s\n", r.unreadable.c_str());
    if (!r.rolled_back.empty()) std::printf("  ROLLED BACK: %s\n", r.rolled_back.c_str());
    for (const auto& d : r.damage) std::printf("  damaged: %s\n", recovery::DescribeDamage(r.server_id, d).c_str());
    damaged += r.damage.size();
    unreadable += r.unreadable.empty() ? 0 : 1;
    rolled_back += r.rolled_back.empty() ? 0 : 1;
  }
  if (rolled_back != 0)
    return ReportFatal(kProg, DataLoss(std::to_string(rolled_back) + " server(s) end before --expect-point or do not descend from it (ROLLED BACK above)" +
                                       (damaged + unreadable ? "; and damage is listed above" : "") +
                                       ": find out what happened to the store before trusting it"));
  if (damaged == 0 && unreadable == 0) return 0;
  return ReportFatal(kProg, DataLoss("verify found " + std::to_string(damaged) + " damaged extent(s)" +
                                     (unreadable ? " and " + std::to_string(unreadable) + " unreadable server(s)" : "") +
                                     " (listed above); restore those points with --allow-damaged, or from another copy"));
}

int MountCmd(int argc, char** argv) {
  recovery::MountRequest req;
  uint64_t cache_mib = 64;
  po::options_description desc("mount options");
  desc.add_options()("store", po::value(&req.store_dir))("server-id", po::value(&req.server_id))(
      "key", po::value(&req.key_file))("overlay", po::value(&req.overlay_dir))("point", po::value(&req.point_spec))(
      "cache-mib", po::value(&cache_mib))("mountpoint", po::value(&req.mountpoint))("help,h", "");
  AddStagingOptions(&desc, &req.staging, &req.tls);
  AddS3Options(&desc, &req.s3);
  po::positional_options_description pos;
  pos.add("mountpoint", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    return ReportFatal(kProg, InvalidArgument(std::string(e.what()) + " (see blockrep-recover --help)"));
  }
  if (vm.count("help")) return std::printf("%s", kUsage), 0;
  if (req.store_dir.empty() == req.staging.empty() || req.server_id.empty() || req.key_file.empty() || req.mountpoint.empty())
    return ReportFatal(kProg, InvalidArgument("mount needs exactly one of --store DIR or --staging HOST:PORT, and --server-id, --key and a MOUNTPOINT directory"));
  if (cache_mib < 1 || cache_mib > 65536)
    return ReportFatal(kProg, InvalidArgument("--cache-mib must be 1..65536 (MiB of decoded regions kept)"));
  req.cache_bytes = cache_mib << 20;
  Status st = recovery::Mount(req, [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  });
  if (!st.ok()) return ReportFatal(kProg, st);
  return 0;
}

int DrillCmd(int argc, char** argv) {
  recovery::DrillRequest req;
  po::options_description desc("drill options");
  desc.add_options()("store", po::value(&req.store_dir))("server-id", po::value(&req.server_id))(
      "key", po::value(&req.key_file))("point", po::value(&req.point_spec))("hook", po::value(&req.hook))(
      "hook-timeout", po::value(&req.hook_timeout_s))("scratch", po::value(&req.scratch_parent))("copy", "")(
      "keep", "")("json", "")("help,h", "");
  AddStagingOptions(&desc, &req.staging, &req.tls);
  AddS3Options(&desc, &req.s3);
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (req.store_dir.empty() == req.staging.empty() || req.server_id.empty() || req.key_file.empty())
    return ReportFatal(kProg, InvalidArgument("drill needs exactly one of --store DIR or --staging HOST:PORT, and --server-id and --key"));
  req.copy = vm.count("copy") != 0;
  req.keep = vm.count("keep") != 0;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return ReportFatal(kProg, Internal("cannot find this program's path (/proc/self/exe)"));
  req.self_exe.assign(self, static_cast<size_t>(n));
  auto rep = recovery::Drill(req);
  if (!rep.ok()) return ReportFatal(kProg, rep.status());
  if (vm.count("json")) {
    std::printf("%s\n", rep->ToJson().c_str());
  } else {
    std::printf("drill of server '%s' point %llu (%s, %s): %s\n", rep->server_id.c_str(),
                static_cast<unsigned long long>(rep->point_id), rep->point_time.c_str(),
                rep->consistent ? "consistent" : "not consistent", rep->pass() ? "PASS" : "FAIL");
    std::printf("  RPO %.1f s (age of the point), RTO %.2f s (to every volume checked and mounted; images in %.2f s, %s)\n",
                rep->rpo_seconds, rep->rto_seconds, rep->mount_seconds, rep->mode.c_str());
    for (const auto& v : rep->volumes)
      std::printf("  volume %u: %s, %s in %.2f s%s%s\n", v.index, v.fs.c_str(), v.check.c_str(), v.seconds,
                  v.detail.empty() ? "" : ": ", v.detail.substr(0, 200).c_str());
    if (rep->hook_run) std::printf("  hook: exit %d in %.2f s\n", rep->hook_exit, rep->hook_seconds);
    for (const auto& p : rep->problems) std::printf("  problem: %s\n", p.c_str());
  }
  std::fflush(stdout);
  if (!rep->pass()) return ReportFatal(kProg, DataLoss("drill failed: " + rep->problems.front()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "list") return List(argc - 1, argv + 1);
  if (cmd == "restore") return RestoreCmd(argc - 1, argv + 1);
  if (cmd == "verify") return VerifyCmd(argc - 1, argv + 1);
  if (cmd == "mount") return MountCmd(argc - 1, argv + 1);
  if (cmd == "drill") return DrillCmd(argc - 1, argv + 1);
  if (cmd == "servers") return ServersCmd(argc - 1, argv + 1);
  return ReportFatal(kProg, InvalidArgument("unknown command '" + cmd +
                                            "' (commands: list, restore, verify, mount, drill, servers)"));
}
