// The deterministic simulation's driver: runs seeded scenarios of one kind, prints a failing
// scenario's seed with the command that replays it, and the count at the end.
//
//   blockrep_simulation store|replication|system --scenarios N [--first-seed S]
//   blockrep_simulation store|replication|system --seed S --verbose    one scenario, every step logged
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "scenarios.h"

namespace blockrep::sim {
namespace {

int Main(int argc, char** argv) {
  // Scenarios copy volumes and pack files of a few hundred KiB all the time: from the heap, not
  // a fresh mmap each (that was half the run time, in page faults).
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  const char* usage = "usage: blockrep_simulation store|replication|system (--scenarios N [--first-seed S] | --seed S [--verbose])";
  if (argc < 2) {
    std::fprintf(stderr, "blockrep_simulation: name the kind of scenario\n%s\n", usage);
    return 2;
  }
  std::string kind = argv[1];
  SimOutcome (*run)(uint64_t, bool) = kind == "store"         ? RunStoreScenario
                                      : kind == "replication" ? RunReplicationScenario
                                      : kind == "system"      ? RunSystemScenario
                                                              : nullptr;
  if (run == nullptr) {
    std::fprintf(stderr, "blockrep_simulation: unknown kind '%s'\n%s\n", kind.c_str(), usage);
    return 2;
  }
  uint64_t scenarios = 1, first = 1;
  bool verbose = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> uint64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "blockrep_simulation: %s needs a number\n%s\n", a.c_str(), usage);
        std::exit(2);
      }
      return std::strtoull(argv[++i], nullptr, 10);
    };
    if (a == "--scenarios") {
      scenarios = next();
    } else if (a == "--first-seed") {
      first = next();
    } else if (a == "--seed") {
      first = next();
      scenarios = 1;
    } else if (a == "--verbose") {
      verbose = true;
    } else {
      std::fprintf(stderr, "blockrep_simulation: unknown argument %s\n%s\n", a.c_str(), usage);
      return 2;
    }
  }
  uint64_t failed = 0, ops = 0, ran = 0;
  for (uint64_t s = first; s < first + scenarios && failed < 5; ++s) {
    SimOutcome o = run(s, verbose);
    ++ran;
    ops += o.ops;
    if (!o.ok) {
      ++failed;
      std::printf("FAIL %s seed %llu: %s\n  replay: blockrep_simulation %s --seed %llu --verbose\n", kind.c_str(),
                  static_cast<unsigned long long>(s), o.why.c_str(), kind.c_str(), static_cast<unsigned long long>(s));
    }
  }
  std::printf("%llu %s scenarios (seeds %llu..%llu), %llu store I/O operations, %llu failed%s\n",
              static_cast<unsigned long long>(ran), kind.c_str(), static_cast<unsigned long long>(first),
              static_cast<unsigned long long>(first + ran - 1), static_cast<unsigned long long>(ops),
              static_cast<unsigned long long>(failed), failed >= 5 ? " (stopped after 5 failures)" : "");
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace blockrep::sim

int main(int argc, char** argv) { return blockrep::sim::Main(argc, argv); }
