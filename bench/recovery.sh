#!/usr/bin/env bash
# P9, P10 and recovery over the network (issue 12e). Two ext4 volumes, 1 GiB and 16 GiB, holding
# the same 512 MiB of random data, each replicated once (a 1-point chain). For each:
#   - time to a mounted filesystem through `blockrep-recover mount` (start the FUSE mount, loop-
#     mount its image read-only, list the root) and through `drill` (its RTO: mounted, journal
#     replayed, e2fsck -fn run, mounted again), against a full `restore` to a sparse image;
#   - `restore --staging` against `restore --store` of the same point (MB/s of data restored);
#   - failback: 1 % of the volume rewritten on the source, a second point taken, then
#     `restore --delta` of it onto a loop device holding the first point, against a full restore
#     of it onto the same device (seconds, and bytes written by the block layer).
# Page cache dropped before every timed step; the median of BENCH_RUNS (5) runs is reported.
# Needs root. Usage: sudo bench/recovery.sh. With BENCH_ROWS=FILE it appends its rows there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "bench/recovery.sh: needs root (loop devices, mounts, FUSE)" >&2; exit 1; }
"$root/scripts/setup.sh"
"$root/scripts/build.sh" "$root/build" >/dev/null
BIN=$root/build/bin
source "$root/bench/lib.sh"
RUNS=${BENCH_RUNS:-5}
W=$(mktemp -d "${BENCH_DIR:-/tmp}/blockrep-recovery.XXXXXX")
SPID= MPID= PINNED=
LOOPS=()
cleanup() {
  [[ -n $MPID ]] && kill "$MPID" 2>/dev/null || true
  umount "$W/fs" 2>/dev/null || true
  umount "$W/mp" 2>/dev/null || true
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null || true
  wait 2>/dev/null || true
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  [[ -n $PINNED ]] && rm -rf "/sys/fs/bpf/blockrep/$PINNED"   # the original agent's tracker
  [[ -n ${BENCH_KEEP:-} ]] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
sectors_written() { awk '{print $7}' "/sys/block/$(basename "$1")/stat"; }

"$BIN/blockrep-keygen" --out "$W/keys" --server-id v1g --server-id v16g >/dev/null
head -c 512M /dev/urandom >"$W/data.bin"
mkdir -p "$W/fs" "$W/mp" "$W/drill"
for v in v1g:1G v16g:16G; do
  id=${v%%:*}
  truncate -s "${v##*:}" "$W/$id.img"
  mkfs.ext4 -q -F "$W/$id.img"
  mount -o loop "$W/$id.img" "$W/fs"
  cp "$W/data.bin" "$W/fs/data.bin"
  umount "$W/fs"
done
rm -f "$W/data.bin"
start_staging --retention all
S=127.0.0.1:$PORT
agent() {  # server-id [args]
  local id=$1
  shift
  "$BIN/blockrep-agent" --staging "$S" --server-id "$id" --key "$W/keys/data-$id.key" --volume "$W/$id.img" \
    --tracker scan --once "$@" >"$W/agent-$id.out" 2>>"$W/agent.log" || { echo "agent $id failed: $(tail -n 2 "$W/agent.log")" >&2; exit 1; }
}
for id in v1g v16g; do agent "$id"; done

key() { echo "$W/keys/data-$1.key"; }
# mount_s ID: seconds from starting `mount` to a listed root of the loop-mounted filesystem.
mount_s() {
  drop_caches
  local t0
  : >"$W/mount.out"
  t0=$(now)
  "$BIN/blockrep-recover" mount --store "$W/store" --server-id "$1" --key "$(key "$1")" "$W/mp" >"$W/mount.out" 2>"$W/mount.err" &
  MPID=$!
  until grep -q '^mounted' "$W/mount.out"; do
    kill -0 "$MPID" 2>/dev/null || { echo "mount failed: $(cat "$W/mount.err")" >&2; exit 1; }
    sleep 0.005
  done
  dd if="$W/mp/latest/vol-0.img" of=/dev/null bs=4k count=1 status=none
  since "$t0" >>"$W/image-times-$1"   # blockrep's part: a readable image, first block checked
  mount -o ro,noload "$W/mp/latest/vol-0.img" "$W/fs"
  ls "$W/fs" >/dev/null
  since "$t0"
  umount "$W/fs"
  kill -TERM "$MPID"
  wait "$MPID"
  MPID=
}
fsck_s() {  # ID: seconds of `e2fsck -fn` on the source image itself (no blockrep): the check's own part
  drop_caches
  local l t0
  l=$(losetup --find --show -r "$W/$1.img")
  t0=$(now)
  e2fsck -fn "$l" >/dev/null 2>&1 || { losetup -d "$l"; echo "e2fsck of $1.img failed" >&2; exit 1; }
  since "$t0"
  losetup -d "$l"
}
drill_s() {  # ID: the drill's RTO (mounted, replayed, checked, mounted again)
  drop_caches
  "$BIN/blockrep-recover" drill --store "$W/store" --server-id "$1" --key "$(key "$1")" --scratch "$W/drill" --json >"$W/drill.json" ||
    { echo "drill failed: $(cat "$W/drill.json")" >&2; exit 1; }
  grep -o '"rto_seconds": [0-9.]*' "$W/drill.json" | grep -o '[0-9.]*$'
}
restore_s() {  # ID store|staging: seconds of a full restore of the latest point to a sparse image
  rm -rf "$W/out"
  drop_caches
  local t0 src=(--store "$W/store")
  [[ $2 == staging ]] && src=(--staging "$S")
  t0=$(now)
  "$BIN/blockrep-recover" restore "${src[@]}" --server-id "$1" --key "$(key "$1")" --point latest --output "$W/out" >"$W/restore.out"
  since "$t0"
  cmp -s "$W/out/vol-0.img" "$W/$1.img" || { echo "restore of $1 from $2 differs from the source" >&2; exit 1; }
}

# Interleaved (1 GiB then 16 GiB, --store then --staging, in every run), so that a slow spell of
# the machine lands on both sides of a ratio rather than on one.
declare -A T R
for _ in $(seq 1 "$RUNS"); do
  for id in v1g v16g; do
    R[$id.mount]+=" $(mount_s "$id")"
    R[$id.drill]+=" $(drill_s "$id")"
    R[$id.fsck]+=" $(fsck_s "$id")"
  done
  for id in v1g v16g; do
    R[$id.store]+=" $(restore_s "$id" store)"
    R[$id.staging]+=" $(restore_s "$id" staging)"
  done
done
for k in "${!R[@]}"; do T[$k]=$(tr ' ' '\n' <<<"${R[$k]}" | grep . | median); done
data_mb=$(awk 'BEGIN { printf "%.0f", 512 * 1.048576 }')

# Failback of a 1 % change on the 1 GiB volume, as it happens: the original host's disk (a loop
# device) is protected by an eBPF agent (--once, state in $W/state-orig), which leaves its tracker
# pinned; then the chain moves on without it — 1 % of the volume rewritten at scattered places of
# the data file on the DR copy (the source image), and a point of it taken by a scanning agent of
# the same server-id. Timed, each with the page cache dropped and onto the same device:
#   - `restore --delta --agent-state` (the tracker says what changed on the device since its
#     agent's last point, the chain's indexes what changed since it there: only that is read);
#   - `restore --delta` (the whole device read and compared);
#   - a full restore.
# Twice: with the loop device in direct-I/O mode (requests go to the backing file without a second
# page cache and are served concurrently, as by a disk: the P10 figure), then buffered (one loop
# worker serves requests one by one from the backing file's page cache: shown too).
id=v1g
"$BIN/blockrep-recover" restore --store "$W/store" --server-id $id --key "$(key $id)" --point 1 --output "$W/p1" >/dev/null
loop=$(losetup --find --show "$W/p1/vol-0.img")
LOOPS+=("$loop")
PINNED=$id
change_mib=$((1024 / 100))   # 1 % of 1 GiB, in 64 KiB pieces spread over the data file
point_of() { grep -o 'point [0-9]*' "$1" | head -n 1 | grep -o '[0-9]*'; }
declare -A FB   # MODE.figure -> value (runs: space-separated seconds)
for dio in on off; do
losetup --direct-io=$dio "$loop"
delta_runs=() tracked_runs=() full_runs=() delta_written=0 tracked_written=0 tracked_read=0 full_written=0 diff_bytes=0
for run in $(seq 1 "$RUNS"); do
  # The original disk at the chain's latest point (not timed), its agent's point of it (a rescan:
  # ships nothing).
  "$BIN/blockrep-recover" restore --store "$W/store" --server-id $id --key "$(key $id)" --point latest --target 0="$loop" >/dev/null
  "$BIN/blockrep-agent" --staging "$S" --server-id $id --key "$(key $id)" --volume "$loop" --state-dir "$W/state-orig" \
    --tracker ebpf --once >"$W/agent-orig.out" 2>>"$W/agent.log" || { echo "original agent failed: $(tail -n 2 "$W/agent.log")" >&2; exit 1; }
  # The DR copy changes by 1 % and its point moves the chain on.
  mount -o loop "$W/$id.img" "$W/fs"
  for i in $(seq 0 $((change_mib * 16 - 1))); do
    dd if=/dev/urandom of="$W/fs/data.bin" bs=64k count=1 seek=$(((i * 50 + run * 7) % 8192)) conv=notrunc status=none
  done
  umount "$W/fs"
  agent $id
  cp "$W/$id.img" "$W/latest.img" --sparse=always
  diff_bytes=$({ cmp -l "$loop" "$W/latest.img" || true; } | awk '{b = int(($1 - 1) / 4096); if (b != last) {n++; last = b}} END {print n * 4096}')
  # 1. --delta --agent-state
  drop_caches
  before=$(sectors_written "$loop")
  read_before=$(awk '{print $3}' "/sys/block/$(basename "$loop")/stat")
  t0=$(now)
  "$BIN/blockrep-recover" restore --store "$W/store" --server-id $id --key "$(key $id)" --point latest --delta \
    --agent-state "$W/state-orig" --target 0="$loop" >"$W/tracked.out"
  tracked_runs+=("$(since "$t0")")
  tracked_written=$((($(sectors_written "$loop") - before) * 512))
  tracked_read=$((($(awk '{print $3}' "/sys/block/$(basename "$loop")/stat") - read_before) * 512))
  grep -q "1 of 1 volume(s) by the tracker" "$W/tracked.out" || { echo "the tracker was not used: $(cat "$W/tracked.out")" >&2; exit 1; }
  cmp -s "$loop" "$W/latest.img" || { echo "--delta --agent-state result differs from the source" >&2; exit 1; }
  # 2. --delta, the whole device compared, from the same starting point.
  "$BIN/blockrep-recover" restore --store "$W/store" --server-id $id --key "$(key $id)" --point "$(point_of "$W/agent-orig.out")" \
    --target 0="$loop" >/dev/null
  drop_caches
  before=$(sectors_written "$loop")
  t0=$(now)
  "$BIN/blockrep-recover" restore --store "$W/store" --server-id $id --key "$(key $id)" --point latest --delta --target 0="$loop" >"$W/delta.out"
  delta_runs+=("$(since "$t0")")
  delta_written=$((($(sectors_written "$loop") - before) * 512))
  cmp -s "$loop" "$W/latest.img" || { echo "--delta result differs from the source" >&2; exit 1; }
  # 3. A full restore.
  drop_caches
  before=$(sectors_written "$loop")
  t0=$(now)
  "$BIN/blockrep-recover" restore --store "$W/store" --server-id $id --key "$(key $id)" --point latest --target 0="$loop" >/dev/null
  full_runs+=("$(since "$t0")")
  full_written=$((($(sectors_written "$loop") - before) * 512))
done
FB[$dio.tracked]="${tracked_runs[*]}" FB[$dio.delta]="${delta_runs[*]}" FB[$dio.full]="${full_runs[*]}"
FB[$dio.tracked_written]=$tracked_written FB[$dio.tracked_read]=$tracked_read FB[$dio.delta_written]=$delta_written
FB[$dio.full_written]=$full_written FB[$dio.diff]=$diff_bytes
done
med() { tr ' ' '\n' <<<"$1" | median; }
tracked_s=$(med "${FB[on.tracked]}") delta_s=$(med "${FB[on.delta]}") full_s=$(med "${FB[on.full]}")
tracked_written=${FB[on.tracked_written]} tracked_read=${FB[on.tracked_read]} delta_written=${FB[on.delta_written]}
full_written=${FB[on.full_written]} diff_bytes=${FB[on.diff]}
btracked_s=$(med "${FB[off.tracked]}") bdelta_s=$(med "${FB[off.delta]}") bfull_s=$(med "${FB[off.full]}")

yes_no() { awk -v c="$1" 'BEGIN { print (c ? "yes" : "NO") }'; }
m1=${T[v1g.mount]} m16=${T[v16g.mount]} d1=${T[v1g.drill]} d16=${T[v16g.drill]}
printf '\n%-58s %10s %10s %10s %14s %6s\n' "figure" "1 GiB" "16 GiB" "16/1" "target" "met"
printf '%-58s %10s %10s %10s %14s %6s\n' "P9 time to a mounted filesystem via mount (s)" "$m1" "$m16" "$(ratio "$m16" "$m1")" "<=1 s, <=1.2x" \
  "$(yes_no "$(awk -v a="$m1" -v b="$m16" 'BEGIN { print (a <= 1 && b <= 1 && b <= 1.2 * a) }')")"
i1=$(median <"$W/image-times-v1g") i16=$(median <"$W/image-times-v16g")
printf '%-58s %10s %10s %10s %14s %6s\n' "  of which to a readable image (mount up, first block) (s)" "$i1" "$i16" "$(ratio "$i16" "$i1")" "" ""
printf '%-58s %10s %10s %10s %14s %6s\n' "P9 drill RTO: mounted, replayed, e2fsck -fn, mounted (s)" "$d1" "$d16" "$(ratio "$d16" "$d1")" "<=1 s, <=1.2x" \
  "$(yes_no "$(awk -v a="$d1" -v b="$d16" 'BEGIN { print (a <= 1 && b <= 1 && b <= 1.2 * a) }')")"
f1=${T[v1g.fsck]} f16=${T[v16g.fsck]}
printf '%-58s %10s %10s %10s\n' "  e2fsck -fn of the source image itself, no blockrep (s)" "$f1" "$f16" "$(ratio "$f16" "$f1")"
dr1=$(awk -v a="$d1" -v b="$f1" 'BEGIN { printf "%.3f", a - b }') dr16=$(awk -v a="$d16" -v b="$f16" 'BEGIN { printf "%.3f", a - b }')
printf '%-58s %10s %10s %10s\n' "  drill RTO less that e2fsck (s)" "$dr1" "$dr16" "$(ratio "$dr16" "$dr1")"
printf '%-58s %10s %10s\n' "full restore to a sparse image, --store (s)" "${T[v1g.store]}" "${T[v16g.store]}"
printf '%-58s %10s %10s\n' "full restore to a sparse image, --staging (s)" "${T[v1g.staging]}" "${T[v16g.staging]}"
for id in v1g v16g; do
  local_mbs=$(awk -v s="${T[$id.store]}" -v d="$data_mb" 'BEGIN { printf "%.0f", d / s }')
  remote_mbs=$(awk -v s="${T[$id.staging]}" -v d="$data_mb" 'BEGIN { printf "%.0f", d / s }')
  r=$(ratio "$remote_mbs" "$local_mbs")
  printf '%-58s %10s %10s %10s %14s %6s\n' "restore --staging vs --store, $id (MB/s of data)" "$remote_mbs" "$local_mbs" "$r" ">=0.8" \
    "$(yes_no "$(awk -v r="$r" 'BEGIN { print (r >= 0.8) }')")"
done
speedup=$(ratio "$full_s" "$tracked_s")
printf '%-58s %10s %10s %10s %14s %6s\n' "P10 failback of a 1 % change: --delta --agent-state vs full (s)" "$tracked_s" "$full_s" "$speedup" ">=10x" \
  "$(yes_no "$(awk -v r="$speedup" 'BEGIN { print (r >= 10) }')")"
wr=$(ratio "$tracked_written" "$diff_bytes")
printf '%-58s %10s %10s %10s %14s %6s\n' "P10 bytes written: --delta --agent-state vs full (block layer)" "$tracked_written" "$full_written" "$wr" "<=1.2x diff" \
  "$(yes_no "$(awk -v r="$wr" 'BEGIN { print (r <= 1.2) }')")"
printf '%-58s %10s %10s\n' "  bytes of the device read by --delta --agent-state" "$tracked_read" "1073741824"
printf '%-58s %10s %10s %10s\n' "  --delta without the tracker (whole device compared) (s)" "$delta_s" "$full_s" "$(ratio "$full_s" "$delta_s")"
printf '%-58s %10s %10s %10s\n' "  buffered loop device: --delta --agent-state vs full (s)" "$btracked_s" "$bfull_s" "$(ratio "$bfull_s" "$btracked_s")"
printf '%-58s %10s %10s %10s\n' "  buffered loop device: --delta vs full (s)" "$bdelta_s" "$bfull_s" "$(ratio "$bfull_s" "$bdelta_s")"
echo "difference between the points: $diff_bytes bytes ($(awk -v d="$diff_bytes" 'BEGIN { printf "%.2f", d / 1073741824 * 100 }') % of 1 GiB); written/difference $wr (whole-device --delta wrote $delta_written)"
for k in mount drill fsck store staging; do
  echo "runs of $k (s): 1 GiB${R[v1g.$k]}; 16 GiB${R[v16g.$k]}"
done
for dio in on off; do
  echo "runs, loop direct-io $dio (median of $RUNS, page cache dropped before each): --delta --agent-state ${FB[$dio.tracked]} s, --delta ${FB[$dio.delta]} s, full ${FB[$dio.full]} s"
done
if [[ -n ${BENCH_ROWS:-} ]]; then
  {
    printf '| P9 time to a mounted filesystem via mount, 1 GiB / 16 GiB volume (s) | %s / %s | | | | | 16/1 %s (to a readable image %s / %s s) | <= 1 s, <= 1.2 | %s |\n' \
      "$m1" "$m16" "$(ratio "$m16" "$m1")" "$i1" "$i16" "$(yes_no "$(awk -v a="$m1" -v b="$m16" 'BEGIN { print (a <= 1 && b <= 1 && b <= 1.2 * a) }')")"
    printf '| P9 drill RTO (mounted, e2fsck -fn), 1 GiB / 16 GiB volume (s) | %s / %s | | | | | 16/1 %s (e2fsck -fn of the raw images alone %s / %s s, 16/1 %s; RTO less it 16/1 %s); full restore %s / %s s | <= 1 s, <= 1.2 | %s |\n' \
      "$d1" "$d16" "$(ratio "$d16" "$d1")" "$f1" "$f16" "$(ratio "$f16" "$f1")" "$(ratio "$dr16" "$dr1")" "${T[v1g.store]}" "${T[v16g.store]}" \
      "$(yes_no "$(awk -v a="$d1" -v b="$d16" 'BEGIN { print (a <= 1 && b <= 1 && b <= 1.2 * a) }')")"
    printf '| P10 failback of a 1 %% change, --delta --agent-state vs full restore (s) | %s | | | | | full/delta %s (full %s s; whole-device --delta %s s; buffered loop: %s vs %s s) | >= 10 | %s |\n' \
      "$tracked_s" "$speedup" "$full_s" "$delta_s" "$btracked_s" "$bfull_s" "$(yes_no "$(awk -v r="$speedup" 'BEGIN { print (r >= 10) }')")"
    printf '| P10 bytes written by --delta --agent-state / bytes differing | %s | | | | | %s (full restore wrote %s) | <= 1.2 | %s |\n' \
      "$tracked_written" "$wr" "$full_written" "$(yes_no "$(awk -v r="$wr" 'BEGIN { print (r <= 1.2) }')")"
    printf '| P9b restore --staging / --store, 16 GiB volume (MB/s) | %s | | | | | %s | >= 0.8 | %s |\n' \
      "$(awk -v s="${T[v16g.staging]}" -v d="$data_mb" 'BEGIN { printf "%.0f", d / s }')" \
      "$(ratio "$(awk -v s="${T[v16g.staging]}" -v d="$data_mb" 'BEGIN { printf "%.0f", d / s }')" "$(awk -v s="${T[v16g.store]}" -v d="$data_mb" 'BEGIN { printf "%.0f", d / s }')")" \
      "$(yes_no "$(awk -v a="${T[v16g.staging]}" -v b="${T[v16g.store]}" 'BEGIN { print (b / a >= 0.8) }')")"
  } >>"$BENCH_ROWS"
fi
