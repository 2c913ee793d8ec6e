#!/usr/bin/env bash
# run.sh TARGET RUNS: fuzzes TARGET for RUNS executions, starting from the seeds it writes into a
# fresh corpus directory; prints libFuzzer's final coverage and exits non-zero on any finding
# (the crashing input is kept in the current directory as crash-*, and its path printed). An input
# that runs over 10 s is a finding too (a hang), not a stalled CI job.
set -euo pipefail
target=$1
runs=$2
work=$(mktemp -d "/tmp/blockrep-fuzz-$(basename "$target").XXXXXX")
trap 'rm -rf "$work"' EXIT
corpus=$work/corpus
log=$work/log
mkdir "$corpus"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
rc=0
BLOCKREP_FUZZ_SEEDS=$corpus "$target" -runs="$runs" -seed="${BLOCKREP_FUZZ_SEED:-1}" -max_len=65536 \
  -timeout=10 -print_final_stats=1 "$corpus" >"$log" 2>&1 || rc=$?
{ grep -E "^#[0-9]+[[:space:]]+(DONE|INITED)" "$log" || true; } | sed "s|^|$(basename "$target"): |"
if [[ $rc -ne 0 ]]; then
  tail -n 40 "$log" >&2
  echo "$(basename "$target"): FINDING after fuzzing (exit $rc); reproduce with: $target crash-<id>" >&2
fi
exit $rc
