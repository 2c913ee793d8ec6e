#!/usr/bin/env bash
# Runs every test: unit (GoogleTest) and end-to-end (real programs, loop devices, TLS), first in a
# normal build, then under AddressSanitizer + UBSan. Root-only tests skip (exit 77) elsewhere.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

echo "== build (RelWithDebInfo) =="
"$root/scripts/build.sh" "$root/build"
echo "== tests =="
(cd "$root/build" && ctest --output-on-failure -j2 --timeout 900)

echo "== build (AddressSanitizer + UBSan) =="
"$root/scripts/build.sh" "$root/build-asan" -DBLOCKREP_SANITIZE=ON
echo "== tests under sanitizers =="
(cd "$root/build-asan" && ctest --output-on-failure -j2 --timeout 1200)
