#!/usr/bin/env bash
# Recovery from a bucket against recovery from a store directory (issue 17 d, its restore half):
# one 1 GiB image holding 512 MiB of data (384 MiB random, 128 MiB of text) replicated once; the
# store copied into a real single-node Ceph RGW on this machine (tests/rgw/start.sh: one OSD on a
# sparse file, HTTPS on 127.0.0.1); then `restore` of the point from the directory and from the
# bucket, page cache dropped before each (the OSD's file included), median of BENCH_RUNS (3).
# The ingest half waits for the staging to write to a bucket itself. Needs root.
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
start_staging --retention all
"$BIN/blockrep-agent" --staging "127.0.0.1:$PORT" --server-id obj1 --key "$W/keys/data-obj1.key" --volume "$W/obj1.img" \
  --tracker scan --once >/dev/null 2>>"$W/agent.log" || { echo "agent failed: $(tail -n 2 "$W/agent.log")" >&2; exit 1; }
kill "$SPID"
wait "$SPID" || true
SPID=
stored=$(du -sb "$W/store" | cut -f1)

echo "starting a single-node Ceph RGW ..." >&2
bash "$root/tests/rgw/start.sh" "$W/rgw"
source "$W/rgw/env"
t0=$(now)
objects=$(bash "$root/tests/rgw/put_tree.sh" "$W/store" blockrep-bench store)
upload_s=$(since "$t0")
S3=(--s3-endpoint "$BLOCKREP_S3_ENDPOINT" --s3-ca "$BLOCKREP_S3_CA" --s3-credentials "$BLOCKREP_S3_CREDENTIALS" --s3-region default)

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
dir_s=() s3_s=()
for _ in $(seq 1 "$RUNS"); do
  dir_s+=("$(restore "$W/store")")
  s3_s+=("$(restore s3://blockrep-bench/store "${S3[@]}")")
done
d=$(printf '%s\n' "${dir_s[@]}" | median)
s=$(printf '%s\n' "${s3_s[@]}" | median)
mbs() { awk -v t="$1" 'BEGIN { printf "%.0f", 512 * 1.048576 / t }'; }
ratio=$(awk -v a="$d" -v b="$s" 'BEGIN { printf "%.2f", a / b }')

echo
echo "| figure (1 GiB image, 512 MiB of data; store $(awk -v b="$stored" 'BEGIN { printf "%.0f", b / 1048576 }') MiB in $objects objects) | blockrep | ratio |"
echo "| --- | --- | --- |"
echo "| restore from the store directory (s, MB/s of data) | $d ($(mbs "$d")) | |"
echo "| restore from the bucket, RGW on this machine (s, MB/s of data) | $s ($(mbs "$s")) | bucket/directory speed $ratio |"
echo "| copy of the store into the bucket with curl, one PUT per file (s) | $upload_s | |"
echo "runs: directory ${dir_s[*]} s; bucket ${s3_s[*]} s"
