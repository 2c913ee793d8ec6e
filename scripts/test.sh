#!/usr/bin/env bash
# Runs every test: unit (GoogleTest) and end-to-end (real programs, loop devices, TLS), first in a
# normal build, then under AddressSanitizer + UBSan. Root-only tests skip (exit 77) elsewhere.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"

# Each phase says when it starts (seconds since this script began): CI's budget is 25 minutes.
phase() { echo "== $* (at ${SECONDS} s) =="; }

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

phase "build (RelWithDebInfo)"
"$root/scripts/build.sh" "$root/build"
phase "tests"
(cd "$root/build" && ctest --output-on-failure -j2 --timeout 900)

phase "build (AddressSanitizer + UBSan)"
"$root/scripts/build.sh" "$root/build-asan" -DBLOCKREP_SANITIZE=ON
phase "tests under sanitizers"
(cd "$root/build-asan" && ctest --output-on-failure -j2 --timeout 1200)

# libFuzzer targets (clang, ASan + UBSan): frame parser, handshake, store index/manifest parsers,
# decrypt + decompress, and restore's whole read path over a hostile index: BLOCKREP_FUZZ_RUNS
# executions each (20000 by default).
phase "build (libFuzzer targets)"
CC=clang CXX=clang++ "$root/scripts/build.sh" "$root/build-fuzz" -DBLOCKREP_FUZZ=ON \
  -DBLOCKREP_FUZZ_RUNS="${BLOCKREP_FUZZ_RUNS:-20000}"
phase "fuzzing"
(cd "$root/build-fuzz" && ctest -V --timeout 900)
phase "done"
