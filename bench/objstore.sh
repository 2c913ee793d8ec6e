#!/usr/bin/env bash
# The store in a bucket against the store in a directory, same machine, same run: one 1 GiB image
# holding 512 MiB of data (384 MiB random, 128 MiB of text) replicated by a full sync (agent
# --once) into a staging on a store directory, and into a staging on a real single-node Ceph RGW
# (tests/rgw/start.sh: one OSD on a sparse file, HTTPS on 127.0.0.1; the staging's --s3-cache on
# the same disk); then `restore` of the point from each. Page cache dropped before each run (the
# OSD's file included), median of BENCH_RUNS (3). Needs root.
# Usage: sudo bench/objstore.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "bench/objstore.sh: needs root (a Ceph cluster, dropping the page cache)" >&2; exit 1; }
"$root/scripts/setup.sh"
"$root/scripts/build.sh" "$root/build" >/dev/null
BIN=$root/build/bin
source "$root/bench/lib.sh"
RUNS=${BENCH_RUNS:-3}
W=$(mktemp -d "${BENCH_DIR:-/tmp}/blockrep-objstore.XXXXXX")
SPID=
cleanup() {
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null || true
  wait 2>/dev/null || true
  bash "$root/tests/rgw/stop.sh" "$W/rgw"
  [[ -n ${BENCH_KEEP:-} ]] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT

"$BIN/blockrep-keygen" --out "$W/keys" --server-id obj1 >/dev/null
truncate -s 1G "$W/obj1.img"
head -c 384M /dev/urandom | dd of="$W/obj1.img" bs=1M conv=notrunc status=none
{ seq 1 20000000 || true; } | head -c 128M | dd of="$W/obj1.img" bs=1M seek=512 conv=notrunc status=none

echo "starting a single-node Ceph RGW ..." >&2
bash "$root/tests/rgw/start.sh" "$W/rgw"
source "$W/rgw/env"
S3=(--s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-ca "$BLOCKREP_S3_CA" --s3-credentials "$BLOCKREP_S3_CREDENTIALS" --s3-region default)
mkdir -p "$W/empty"
bash "$root/tests/rgw/put_tree.sh" "$W/empty" blockrep-bench unused >/dev/null  # creates the bucket

# ingest STORE [staging args]: seconds of a full sync (agent --once, scan tracker) into a new store.
ingest() {
  local store=$1 t
  shift
  drop_caches
  STAGING_STORE=$store start_staging --retention all "$@"
  t=$(now)
  "$BIN/blockrep-agent" --staging "127.0.0.1:$PORT" --server-id obj1 --key "$W/keys/data-obj1.key" --volume "$W/obj1.img" \
    --tracker scan --once >/dev/null 2>>"$W/agent.log" || { echo "agent failed: $(tail -n 2 "$W/agent.log")" >&2; exit 1; }
  since "$t"
  kill "$SPID"
  wait "$SPID" || true
  SPID=
}
restore() {  # restore STORE [args]: seconds
  rm -rf "$W/out"
  drop_caches
  local t
  t=$(now)
  "$BIN/blockrep-recover" restore --store "$@" --server-id obj1 --key "$W/keys/data-obj1.key" --point latest \
    --output "$W/out" >/dev/null 2>"$W/restore.err" || { echo "restore failed: $(cat "$W/restore.err")" >&2; exit 1; }
  since "$t"
  cmp "$W/out/vol-0.img" "$W/obj1.img" || { echo "bench/objstore.sh: the restored image differs" >&2; exit 1; }
}
in_dir=() in_s3=() dir_s=() s3_s=()
for r in $(seq 1 "$RUNS"); do
  rm -rf "$W/store" "$W/cache"
  in_dir+=("$(ingest "$W/store")")
  in_s3+=("$(ingest "s3://blockrep-bench/run-$r" "${S3[@]}" --s3-cache "$W/cache")")
done
stored=$(du -sb "$W/store" | cut -f1)
for r in $(seq 1 "$RUNS"); do
  dir_s+=("$(restore "$W/store")")
  s3_s+=("$(restore "s3://blockrep-bench/run-$RUNS" "${S3[@]}")")
done
mbs() { awk -v t="$1" 'BEGIN { printf "%.0f", 512 * 1.048576 / t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
di=$(printf '%s\n' "${in_dir[@]}" | median)
si=$(printf '%s\n' "${in_s3[@]}" | median)
d=$(printf '%s\n' "${dir_s[@]}" | median)
s=$(printf '%s\n' "${s3_s[@]}" | median)

echo
echo "| figure (1 GiB image, 512 MiB of data; store $(awk -v b="$stored" 'BEGIN { printf "%.0f", b / 1048576 }') MiB) | store directory | bucket (RGW on this machine) | bucket/directory speed |"
echo "| --- | --- | --- | --- |"
echo "| ingest: full sync, agent --once over TLS (s, MB/s of data) | $di ($(mbs "$di")) | $si ($(mbs "$si")) | $(ratio "$di" "$si") |"
echo "| restore of the point (s, MB/s of data) | $d ($(mbs "$d")) | $s ($(mbs "$s")) | $(ratio "$d" "$s") |"
echo "runs: ingest directory ${in_dir[*]} s, bucket ${in_s3[*]} s; restore directory ${dir_s[*]} s, bucket ${s3_s[*]} s"
