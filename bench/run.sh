#!/usr/bin/env bash
# The whole benchmark suite (P1-P10, targets in docs/PERFORMANCE.md) in one run, about 25 minutes on 2 cores:
#   bench/peers.sh       P1 P2 P3 P4 P6  usr-4g vs. borg, restic, zstd|openssl, rsync
#   bench/continuous.sh  P5              lag and bytes sent under fio 4 KiB random writes
#   bench/chain.sh       P7              newest point of a 1000-point chain vs. a 1-point chain
#   bench/fleet.sh       P8 P6 staging   64 agents at once vs. one alone; staging memory
#   bench/sparse.sh      P6 agent        a 1 TiB sparse image: full sync and rescan, peak RSS
#   bench/recovery.sh    P9 P10          time to a mounted point, remote restore, failback --delta
# Each script prints its own table as it goes; at the end this prints the one table of every
# figure and writes it, with the machine and the command, to docs/PERFORMANCE.md (BENCH_DOC=0:
# don't). Needs root (loop devices, mounts, eBPF, dropping the page cache).
# Usage: sudo bench/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "bench/run.sh: needs root (loop devices, mounts, eBPF, dropping the page cache)" >&2; exit 1; }
"$root/scripts/setup.sh" --bench
"$root/scripts/build.sh" "$root/build" >/dev/null
rows=$(mktemp "${BENCH_DIR:-/tmp}/blockrep-rows.XXXXXX")
log=$(mktemp "${BENCH_DIR:-/tmp}/blockrep-suite-log.XXXXXX")
trap 'rm -f "$rows"' EXIT
start=$SECONDS
for script in peers continuous chain fleet sparse recovery; do
  echo "== bench/$script.sh ($(( (SECONDS - start) / 60 )) min in) ==" >&2
  BENCH_ROWS=$rows BENCH_DOC=0 "$root/bench/$script.sh" 2>&1 | tee -a "$log" ||
    { echo "bench/run.sh: bench/$script.sh failed (its output: $log)" >&2; exit 1; }
done
minutes=$(awk -v s="$((SECONDS - start))" 'BEGIN { printf "%.1f", s / 60 }')
table=$(
  printf '| figure | blockrep | borg | restic | zstd-pipe | rsync | ratio | target | met |\n'
  printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
  # by P number (P10 after P9), a row's own order kept within one P
  awk -F'|' '{ match($2, /P[0-9]+/); print substr($2, RSTART + 1, RLENGTH - 1) "\t" $0 }' "$rows" | sort -s -n -k1,1 | cut -f2-
)
machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)"
peers="$(borg --version), $(restic version | cut -d' ' -f1-2), $(zstd --version | grep -o 'v[0-9.]*' | awk 'NR == 1 {print "zstd " $0}'), $(rsync --version | awk 'NR == 1 {print "rsync " $3}')"
extra=$(grep -E '^(P1 rounds|same-input rounds|P2 read by|alone rounds|chain: [0-9]+ points)' "$log" || true)
echo
echo "$table"
echo "$extra"
echo "suite: $minutes min on $machine; $peers"
if [[ ${BENCH_DOC:-1} != 0 ]]; then
  doc=$root/docs/PERFORMANCE.md
  begin='<!-- run.sh begin -->' end='<!-- run.sh end -->'
  section=$(
    echo "$begin"
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) by \`sudo bench/run.sh\` ($minutes min) on $machine."
    echo "Peers: $peers."
    echo
    echo "$table"
    echo
    printf '%s\n' "$extra" | sed 's/^/- /'
    echo "$end"
  )
  if [[ -f $doc ]] && grep -q "$begin" "$doc"; then
    awk -v b="$begin" -v e="$end" -v s="$section" '$0 == b { print s; skip = 1; next } $0 == e { skip = 0; next } !skip' \
      "$doc" >"$doc.tmp" && mv "$doc.tmp" "$doc"
  else
    printf '\n%s\n' "$section" >>"$doc"
  fi
  echo "table written to docs/PERFORMANCE.md" >&2
fi
rm -f "$log"
