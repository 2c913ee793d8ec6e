#!/usr/bin/env bash
# P7 (issue 4e): restore time of the newest point of a 1000-point chain vs. a 1-point chain that
# holds the same final data. A 1 GiB raw loop device with 512 MiB of random data; a continuous
# eBPF agent takes a point every 50 ms while fio writes 4 KiB blocks at random offsets, until the
# chain has BENCH_POINTS points (default 1000); then a second server-id syncs the same, now
# quiet, device once. Each restore runs BENCH_RUNS times (default 3) with the page cache dropped
# first; the median is reported. Needs root. Usage: sudo bench/chain.sh
# With BENCH_ROWS=FILE it appends its P7 row to FILE (bench/run.sh collects them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "bench/chain.sh: needs root (loop devices, eBPF)" >&2; exit 1; }
"$root/scripts/setup.sh"
"$root/scripts/build.sh" "$root/build" >/dev/null
BIN=$root/build/bin
source "$root/bench/lib.sh"
POINTS=${BENCH_POINTS:-1000}
RUNS=${BENCH_RUNS:-3}
W=$(mktemp -d "${BENCH_DIR:-/tmp}/blockrep-chain.XXXXXX")
ID=chain$$
FLAT=flat$$
SPID= APID= FPID= DEV=
cleanup() {
  for p in $FPID $APID $SPID; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n $DEV ]] && losetup -d "$DEV" 2>/dev/null || true
  rm -rf "/sys/fs/bpf/blockrep/$ID" "/sys/fs/bpf/blockrep/$FLAT"
  [[ -n ${BENCH_KEEP:-} ]] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
points() { "$BIN/blockrep-recover" list --store "$W/store" --server-id "$1" --json 2>/dev/null | grep -c '"id"' || true; }

"$BIN/blockrep-keygen" --out "$W/keys" --server-id "$ID" --server-id "$FLAT" >/dev/null
truncate -s 1G "$W/disk.img"
DEV=$(losetup --find --show "$W/disk.img")
dd if=/dev/urandom of="$DEV" bs=1M count=512 oflag=direct status=none
start_staging --retention all
agent_args() {  # server-id
  AGENT=("$BIN/blockrep-agent" --staging "127.0.0.1:$PORT" --server-id "$1" --key "$W/keys/data-$1.key"
    --tls-cert "$W/keys/agent-$1.crt" --tls-key "$W/keys/agent-$1.key" --tls-ca "$W/keys/ca.crt"
    --volume "$DEV" --tracker ebpf)
}

start=$(date +%s)
agent_args "$ID"
"${AGENT[@]}" --state-dir "$W/state" --point-interval 50ms 2>"$W/agent.log" &
APID=$!
until [[ $(points "$ID") -ge 1 ]]; do sleep 0.5; done
# --refill_buffers: fresh random bytes for every write. fio's default reuses one buffer, which
# the 1-point chain's 64 KiB records compress 16:1 and the chain's 4 KiB records cannot: that
# compared 0.4 GB of packs with 1.3 GB, not chain depth.
fio --name=chain --filename="$DEV" --size=1G --rw=randwrite --bs=4k --direct=1 --ioengine=psync --refill_buffers \
  --rate=8m --time_based --runtime=3600 --output="$W/fio.out" >/dev/null 2>&1 &
FPID=$!
until [[ $(points "$ID") -ge $((POINTS - 1)) ]]; do sleep 1; done
kill "$FPID"
wait "$FPID" 2>/dev/null || true
FPID=
kill -TERM "$APID"  # takes the final point and exits
wait "$APID" || { echo "agent failed: $(tail -n 3 "$W/agent.log")" >&2; exit 1; }
APID=
chain_points=$(points "$ID")
echo "built a $chain_points-point chain in $(( $(date +%s) - start )) s"
agent_args "$FLAT"
"${AGENT[@]}" --once >/dev/null 2>"$W/flat.log" || { echo "one-point sync failed: $(tail -n 1 "$W/flat.log")" >&2; exit 1; }
want=$(sha256sum <"$DEV" | cut -d' ' -f1)

restore_s() {  # server-id: prints seconds of one restore of its newest point
  rm -rf "$W/out"
  drop_caches
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN/blockrep-recover" restore --store "$W/store" --server-id "$1" --key "$W/keys/data-$1.key" \
    --point latest --output "$W/out" >"$W/restore.out"
  t1=$(date +%s.%N)
  if [[ $(sha256sum <"$W/out/vol-0.img" | cut -d' ' -f1) != "$want" ]]; then
    echo "restore of $1 differs from the device; first differing bytes (offset, restored, device):" >&2
    cmp -l "$W/out/vol-0.img" "$DEV" | head -n 5 >&2 || true
    exit 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
chain_runs=() flat_runs=()
for _ in $(seq 1 "$RUNS"); do
  chain_runs+=("$(restore_s "$ID")")
  flat_runs+=("$(restore_s "$FLAT")")
done
chain_s=$(printf '%s\n' "${chain_runs[@]}" | median)
flat_s=$(printf '%s\n' "${flat_runs[@]}" | median)
records_chain=$("$BIN/blockrep-recover" restore --store "$W/store" --server-id "$ID" --key "$W/keys/data-$ID.key" \
  --point latest --output "$W/out" | grep -o '[0-9]* records')
records_flat=$("$BIN/blockrep-recover" restore --store "$W/store" --server-id "$FLAT" --key "$W/keys/data-$FLAT.key" \
  --point latest --output "$W/out" | grep -o '[0-9]* records')
ratio=$(awk -v a="$chain_s" -v b="$flat_s" 'BEGIN { printf "%.2f", a / b }')
met=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.5 ? "yes" : "no") }')
printf '\n%-44s %12s %12s %8s %8s %5s\n' "figure" "chain" "1-point" "ratio" "target" "met"
printf '%-44s %12s %12s %8s %8s %5s\n' "P7 restore newest point, 1 GiB volume (s)" "$chain_s" "$flat_s" "$ratio" "<=1.5" "$met"
printf '%-44s %12s %12s\n' "records read" "${records_chain% records}" "${records_flat% records}"
echo "chain: $chain_points points; runs: chain ${chain_runs[*]} s, 1-point ${flat_runs[*]} s (median of $RUNS, page cache dropped before each)"
if [[ -n ${BENCH_ROWS:-} ]]; then
  printf '| P7 restore newest point of a %s-point chain, 1 GiB volume (s) | %s | | | | | chain/1-point (%s s) %s | <= 1.5 | %s |\n' \
    "$chain_points" "$chain_s" "$flat_s" "$ratio" "$(awk -v r="$ratio" 'BEGIN { print (r <= 1.5 ? "yes" : "NO") }')" >>"$BENCH_ROWS"
fi
