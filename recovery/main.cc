// blockrep-recover: lists and materialises recovery points. See BRIEF §3.4.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "blockrep/cli.h"
#include "blockrep/options.h"
#include "blockrep/store.h"
#include "restore.h"
#include "verify.h"

namespace po = boost::program_options;
using namespace blockrep;

namespace {

constexpr const char* kProg = "blockrep-recover";
constexpr const char* kUsage =
    "Usage:\n"
    "  blockrep-recover list    --store DIR --server-id ID [--json]\n"
    "  blockrep-recover restore --store DIR --server-id ID --key FILE --point latest|ID|TIME\n"
    "                           --output DIR | --target VOLINDEX=PATH ... [--allow-damaged]\n"
    "  blockrep-recover verify  --store DIR [--server-id ID] [--key FILE]\n";

int List(int argc, char** argv) {
  std::string store_dir, server_id;
  po::options_description desc("list options");
  desc.add_options()("help,h", "")("store", po::value(&store_dir))("server-id", po::value(&server_id))("json", "");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (store_dir.empty() || server_id.empty())
    return ReportFatal(kProg, InvalidArgument("list needs --store DIR and --server-id ID"));
  Status st = store::InitStoreRoot(store_dir, false);
  if (!st.ok()) return ReportFatal(kProg, st);
  auto s = store::ServerStore::Open(store_dir, server_id, false);
  if (!s.ok()) return ReportFatal(kProg, s.status());
  const auto& points = (*s)->manifest().points;
  if (vm.count("json")) {
    std::printf("[");
    for (size_t i = 0; i < points.size(); ++i) {
      const auto& p = points[i];
      std::printf("%s\n  {\"id\": %llu, \"time\": \"%s\", \"consistent\": %s, \"volumes\": %u, \"bytes\": %llu}",
                  i ? "," : "", static_cast<unsigned long long>(p.id), FormatUtc(p.time_ns).c_str(),
                  p.consistent() ? "true" : "false", p.volume_count,
                  static_cast<unsigned long long>(p.bytes_added));
    }
    std::printf("%s]\n", points.empty() ? "" : "\n");
    return 0;
  }
  std::printf("%-8s %-21s %-11s %-8s %14s\n", "ID", "TIME (UTC)", "CONSISTENT", "VOLUMES", "BYTES");
  for (const auto& p : points)
    std::printf("%-8llu %-21s %-11s %-8u %14llu\n", static_cast<unsigned long long>(p.id),
                FormatUtc(p.time_ns).c_str(), p.consistent() ? "yes" : "no", p.volume_count,
                static_cast<unsigned long long>(p.bytes_added));
  if (points.empty()) std::printf("(no recovery points)\n");
  return 0;
}

int RestoreCmd(int argc, char** argv) {
  recovery::RestoreRequest req;
  std::vector<std::string> targets;
  po::options_description desc("restore options");
  desc.add_options()("store", po::value(&req.store_dir))("server-id", po::value(&req.server_id))(
      "key", po::value(&req.key_file))("point", po::value(&req.point_spec))(
      "output", po::value(&req.output_dir))("target", po::value(&targets))("allow-damaged", "")("help,h", "");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (req.store_dir.empty() || req.server_id.empty() || req.key_file.empty())
    return ReportFatal(kProg, InvalidArgument("restore needs --store, --server-id and --key"));
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
  auto sum = recovery::Restore(req);
  if (!sum.ok()) return ReportFatal(kProg, sum.status());
  std::printf("restored point %llu (%s, %s) in %.2f s: %llu records, %.1f MiB of data\n",
              static_cast<unsigned long long>(sum->point.id), FormatUtc(sum->point.time_ns).c_str(),
              sum->point.consistent() ? "consistent" : "not consistent", sum->seconds,
              static_cast<unsigned long long>(sum->records), sum->bytes_written / 1048576.0);
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
  po::options_description desc("verify options");
  desc.add_options()("store", po::value(&req.store_dir))("server-id", po::value(&req.server_id))(
      "key", po::value(&req.key_file))("help,h", "");
  po::variables_map vm;
  if (auto rc = ParseCommandLine(kProg, desc, argc, argv, &vm)) return *rc;
  if (req.store_dir.empty()) return ReportFatal(kProg, InvalidArgument("verify needs --store DIR"));
  auto reports = recovery::Verify(req);
  if (!reports.ok()) return ReportFatal(kProg, reports.status());
  size_t damaged = 0, unreadable = 0;
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
    for (const auto& d : r.damage) std::printf("  damaged: %s\n", recovery::DescribeDamage(r.server_id, d).c_str());
    damaged += r.damage.size();
    unreadable += r.unreadable.empty() ? 0 : 1;
  }
  if (damaged == 0 && unreadable == 0) return 0;
  return ReportFatal(kProg, DataLoss("verify found " + std::to_string(damaged) + " damaged extent(s)" +
                                     (unreadable ? " and " + std::to_string(unreadable) + " unreadable server(s)" : "") +
                                     " (listed above); restore those points with --allow-damaged, or from another copy"));
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
  return ReportFatal(kProg, InvalidArgument("unknown command '" + cmd + "' (commands: list, restore, verify)"));
}
