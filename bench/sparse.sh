#!/usr/bin/env bash
# The agent's part of P6 and scope 3 of SEEK_DATA (docs/PERFORMANCE.md): a 1 TiB sparse image file
# (BENCH_TIB_GIB, default 1024 GiB) holding BENCH_DATA_MIB (default 1024) MiB of random data in
# 16 runs spread over it. The agent (scan tracker, --once, TLS to 127.0.0.1) makes a full point,
# then a rescan after 16 MiB were rewritten and 8 MiB of data punched out (a hole where the base
# holds data). For each: wall time, MiB read, and the agent's peak RSS against
# 64 MiB + 40 MiB per TiB protected. The rescan's point is restored and compared with the image
# over every run of data and the punched hole (the rest is holes in both). Needs only a
# filesystem with sparse files and SEEK_DATA (the store and the image share BENCH_DIR).
# Usage: bench/sparse.sh   With BENCH_ROWS=FILE it appends its rows to FILE (bench/run.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh" "$root/build" >/dev/null
BIN=$root/build/bin
source "$root/bench/lib.sh"
GIB=${BENCH_TIB_GIB:-1024}
DATA_MIB=${BENCH_DATA_MIB:-1024}
W=$(mktemp -d "${BENCH_DIR:-/tmp}/blockrep-sparse.XXXXXX")
ID=sparse$$
SPID=
cleanup() {
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

"$BIN/blockrep-keygen" --out "$W/keys" --server-id "$ID" >/dev/null
truncate -s "${GIB}G" "$W/vol.img"
run_mib=$((DATA_MIB / 16))
stride_mib=$((GIB * 1024 / 16))
for i in $(seq 0 15); do
  dd if=/dev/urandom of="$W/vol.img" bs=1M count="$run_mib" seek=$((i * stride_mib)) conv=notrunc status=none
done
start_staging
AGENT=("$BIN/blockrep-agent" --staging "127.0.0.1:$PORT" --server-id "$ID" --key "$W/keys/data-$ID.key"
       --tls-cert "$W/keys/agent-$ID.crt" --tls-key "$W/keys/agent-$ID.key" --tls-ca "$W/keys/ca.crt"
       --volume "$W/vol.img" --state-dir "$W/state" --tracker scan --once)
# run_agent NAME: one --once run; sets secs, rss_mib (peak), read_mib.
run_agent() {
  local t0 t1
  t0=$(now)
  /usr/bin/time -f "%M" -o "$W/$1.rss" "${AGENT[@]}" >"$W/$1.out" 2>"$W/$1.err" ||
    { echo "bench/sparse.sh: the agent's $1 run failed: $(tail -n 2 "$W/$1.err")" >&2; exit 1; }
  t1=$(now)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  rss_mib=$(awk '{ printf "%.0f", $1 / 1024 }' "$W/$1.rss")
  read_mib=$(awk '/^  read/ { print $2 }' "$W/$1.out")
}
run_agent full
full_s=$secs full_rss=$rss_mib full_read=$read_mib
# 16 MiB rewritten in two runs, and 8 MiB of data punched out of a third.
for i in 3 7; do dd if=/dev/urandom of="$W/vol.img" bs=1M count=8 seek=$((i * stride_mib + 4)) conv=notrunc status=none; done
fallocate --punch-hole --keep-size --offset $(((11 * stride_mib + 2) << 20)) --length $((8 << 20)) "$W/vol.img"
run_agent rescan
rescan_s=$secs rescan_rss=$rss_mib rescan_read=$read_mib
rescan_holes=$(awk '/^  holes/ { print $2 }' "$W/rescan.out")
rescan_sent=$(awk '/^  on the wire/ { print $4 }' "$W/rescan.out")
grep -q "rescan against point 1" "$W/rescan.out" ||
  { echo "bench/sparse.sh: the second run was not a rescan: $(grep kind "$W/rescan.out")" >&2; exit 1; }

"$BIN/blockrep-recover" restore --store "$W/store" --server-id "$ID" --key "$W/keys/data-$ID.key" --point latest \
  --output "$W/restored" >/dev/null 2>"$W/restore.err" ||
  { echo "bench/sparse.sh: restore failed: $(tail -n 2 "$W/restore.err")" >&2; exit 1; }
for i in $(seq 0 15); do
  cmp -i $((i * stride_mib << 20)) -n $((run_mib << 20)) "$W/vol.img" "$W/restored/vol-0.img" >/dev/null ||
    { echo "bench/sparse.sh: the restored point differs in data run $i" >&2; exit 1; }
done
cmp -i $(((11 * stride_mib + 2) << 20)):0 -n $((8 << 20)) "$W/restored/vol-0.img" /dev/zero >/dev/null ||
  { echo "bench/sparse.sh: the punched hole is not zeros in the restored point" >&2; exit 1; }

limit=$(awk -v g="$GIB" 'BEGIN { printf "%.0f", 64 + 40 * g / 1024 }')
met_full=$(awk -v r="$full_rss" -v l="$limit" 'BEGIN { print (r <= l ? "yes" : "NO") }')
met_rescan=$(awk -v r="$rescan_rss" -v l="$limit" 'BEGIN { print (r <= l ? "yes" : "NO") }')
printf '\n%-58s %12s %10s %6s\n' "figure ($GIB GiB sparse image, $DATA_MIB MiB of data)" "blockrep" "target" "met"
printf '%-58s %12s %10s %6s\n' "full sync: time (s) / MiB read" "$full_s / $full_read" "-" ""
printf '%-58s %12s %10s %6s\n' "full sync: agent peak RSS (MiB)" "$full_rss" "<= $limit" "$met_full"
printf '%-58s %12s %10s %6s\n' "rescan (16 MiB rewritten, 8 MiB punched): time (s)" "$rescan_s" "-" ""
printf '%-58s %12s %10s %6s\n' "  MiB read / MiB of holes compared / MiB sent" "$rescan_read / $rescan_holes / $rescan_sent" "-" ""
printf '%-58s %12s %10s %6s\n' "rescan: agent peak RSS (MiB)" "$rescan_rss" "<= $limit" "$met_rescan"
echo "restored point 2: the $DATA_MIB MiB of data runs and the punched hole equal the image"
if [[ -n ${BENCH_ROWS:-} ]]; then
  printf '| P6 agent peak RSS, full sync of a %s GiB sparse image with %s MiB of data (MiB) | %s | | | | | %s s, %s MiB read | <= %s | %s |\n' \
    "$GIB" "$DATA_MIB" "$full_rss" "$full_s" "$full_read" "$limit" "$met_full" >>"$BENCH_ROWS"
  printf '| P6 agent peak RSS, rescan of it (MiB) | %s | | | | | %s s, %s MiB read, %s MiB of holes compared unread, %s MiB sent | <= %s | %s |\n' \
    "$rescan_rss" "$rescan_s" "$rescan_read" "$rescan_holes" "$rescan_sent" "$limit" "$met_rescan" >>"$BENCH_ROWS"
fi
