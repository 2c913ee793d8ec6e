#!/usr/bin/env bash
# Resumable full sync: the first sync of a 2 GiB volume (1.5 GiB of data) is killed (-9) three
# times at seeded moments, the staging is killed and restarted between the first two tries, and
# blocks already sent are overwritten between the second and third; every try goes on from the
# agent's checkpoint instead of reading everything again. Over all runs the device is read at most
# 1.25x its size; the point restores identical to the device and verifies clean. Then the same
# without eBPF (--tracker scan) on a sparse image file, whose holes a full point does not read,
# and a rescan of each, killed and resumed. Last, the staging is killed (-9) in the middle of a full
# sync, and the next try resumes from the point the staging kept live.
# Replay: SEED=N tests/e2e/full_resume.sh
source "$(dirname "$0")/lib.sh"
need_root "full_resume"

SEED=${SEED:-$(( $(date +%s%N) % 1000000 ))}
echo "seed $SEED (replay: SEED=$SEED $0)"
tracked_raw fullresume 2G
VOL=$((2 << 30))
# 768 MiB random, 768 MiB compressible text, 512 MiB never written (zeros: read, not sent).
head -c 768M /dev/urandom | dd of="$dev" bs=4M oflag=direct status=none
(yes "blockrep full resume $SEED" || true) | head -c 768M | dd of="$dev" bs=4M seek=192 oflag=direct status=none
STATE=$WORK/state
name=$(basename "$dev")
sectors_read() { awk '{print $3}' "/sys/block/$name/stat"; }
start_staging

# run_until KILL_AT_BYTES LOG: one --once agent; killed -9 once it has read KILL_AT_BYTES of the
# device (0: let it finish). Sets RUN_READ to the bytes it read.
run_until() {
  local before now pid
  before=$(sectors_read)
  "$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
    --volume "$dev" --tracker ebpf --state-dir "$STATE" --once >"$2.out" 2>"$2" &
  pid=$!
  PIDS+=("$pid")
  if [[ $1 -gt 0 ]]; then
    while kill -0 "$pid" 2>/dev/null; do
      now=$(sectors_read)
      (( (now - before) * 512 >= $1 )) && break
      sleep 0.01
    done
    kill -9 "$pid" 2>/dev/null || fail "the agent finished before its kill point ($1 bytes): $(tail -n 3 "$2")"
    wait "$pid" 2>/dev/null || true
    ! grep -q "internal error" "$2" || fail "the agent failed a check before its kill: $(grep "internal error" "$2")"
  else
    wait "$pid" || fail "the last run failed: $(tail -n 5 "$2")"
  fi
  RUN_READ=$(( ($(sectors_read) - before) * 512 ))
}
# kept N: waits until the staging has kept the interrupted point N times in all.
kept() {
  local i
  for i in $(seq 1 100); do
    [[ $(grep -c "kept for the agent to resume" "$WORK/staging.log") -ge $1 ]] && return 0
    sleep 0.05
  done
  fail "the staging did not keep the interrupted point (kill $1)"
}

# read_ratio BYTES: BYTES over the volume's size, as N.NN; fails past 1.25 (WHAT: which tries).
read_ratio() {
  local r
  r=$(awk -v t="$1" -v v="$VOL" 'BEGIN { printf "%.2f", t / v }')
  awk -v r="$r" 'BEGIN { exit !(r <= 1.25) }' || fail "$2 read ${r}x the volume: they started over"
  echo "$r"
}
# restores_as SERVER OUT SOURCE WHAT: the latest point of SERVER, restored to OUT, equals SOURCE.
restores_as() {
  recover restore --store "$STORE" --server-id "$1" --key "$KEYS/data-$1.key" --point latest --output "$2" >/dev/null
  cmp "$3" "$2/vol-0.img" || fail "$4 differs from $3"
}

total=0
mapfile -t KILL_AT < <(awk -v s="$SEED" -v vol="$VOL" 'BEGIN { srand(s); for (i = 0; i < 3; i++) printf "%d\n", vol * (0.12 + rand() * 0.12) }')
for k in 0 1 2; do
  run_until "${KILL_AT[$k]}" "$WORK/agent$k.log"
  total=$((total + RUN_READ))
  kept $((k + 1))
  if [[ $k -gt 0 ]]; then
    grep -q "resuming full point" "$WORK/agent$k.log" || fail "try $((k + 1)) did not resume: $(grep -m3 'point\|checkpoint' "$WORK/agent$k.log")"
  fi
  echo "try $((k + 1)): killed after reading $((RUN_READ >> 20)) MiB (kill point $((KILL_AT[k] >> 20)) MiB)"
  if [[ $k -eq 0 ]]; then
    kill9_staging
    STAGING_LISTEN_PORT=$STAGING_PORT start_staging
    grep -q "interrupted point 1 found with" "$WORK/staging.log" || fail "the restarted staging lost the interrupted point"
  fi
  if [[ $k -eq 1 ]]; then
    # Blocks the earlier tries already sent change (with the agent down: the pinned tracker sees it).
    head -c 4M /dev/urandom | dd of="$dev" bs=1M seek=8 oflag=direct status=none
    dd if=/dev/zero of="$dev" bs=1M seek=40 count=2 oflag=direct status=none
  fi
done
run_until 0 "$WORK/agent3.log"
total=$((total + RUN_READ))
grep -q "kind        resumed full" "$WORK/agent3.log.out" || { cat "$WORK/agent3.log.out"; fail "the last try did not resume"; }
echo "last try: read $((RUN_READ >> 20)) MiB; $(grep 'kind' "$WORK/agent3.log.out" | sed 's/^ *//')"
ratio=$(read_ratio "$total" "the 4 full-sync tries") || exit 1
echo "read over all 4 runs: $((total >> 20)) MiB = ${ratio}x the volume (allowed 1.25x)"
restores_as "$ID" "$WORK/out" "$dev" "the resumed full point"
recover verify --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" >"$WORK/verify.out" 2>&1 ||
  { cat "$WORK/verify.out"; fail "verify --key is not clean"; }
echo "ok: eBPF: read ${ratio}x the volume over 4 runs, restores identical, verifies clean"

# The pin is lost (as at a reboot): the next point is a rescan of the whole device. Killed at a
# seeded moment, it resumes on the new pin, which began it, and reads on from its checkpoint.
rm -rf "/sys/fs/bpf/blockrep/$ID"
head -c 8M /dev/urandom | dd of="$dev" bs=1M seek=1000 oflag=direct status=none
KILL_R=$(awk -v s="$SEED" -v vol="$VOL" 'BEGIN { srand(s + 1); printf "%d\n", vol * (0.3 + rand() * 0.3) }')
run_until "$KILL_R" "$WORK/erescan0.log"
rtotal=$RUN_READ
grep -q "rescan against point 1" "$WORK/erescan0.log" || fail "the run after a lost pin was not a rescan: $(grep -m2 'sending point' "$WORK/erescan0.log")"
kept 4
run_until 0 "$WORK/erescan1.log"
rtotal=$((rtotal + RUN_READ))
grep -q "kind        resumed rescan on point 1" "$WORK/erescan1.log.out" || { cat "$WORK/erescan1.log.out"; fail "the eBPF rescan did not resume"; }
rratio=$(read_ratio "$rtotal" "the 2 rescan tries") || exit 1
echo "eBPF rescan after a lost pin, killed after $((KILL_R >> 20)) MiB and resumed: read ${rratio}x the volume over 2 runs"
restores_as "$ID" "$WORK/out-erescan" "$dev" "the resumed eBPF rescan"

# Without a tracker, on a sparse image: data at 0, 100 and 300 MiB of 512 MiB, the rest holes.
SID=fullscan$$
make_keys "$SID"
IMG=$WORK/sparse.img
truncate -s 512M "$IMG"
head -c 96M /dev/urandom | dd of="$IMG" bs=1M conv=notrunc status=none
head -c 64M /dev/urandom | dd of="$IMG" bs=1M seek=100 conv=notrunc status=none
head -c 32M /dev/urandom | dd of="$IMG" bs=1M seek=300 conv=notrunc status=none
SSTATE=$WORK/state-scan
# (exec: in the background, $! is the agent itself, not a subshell around it that kill -9 would
# leave it running without; call it in the foreground from a subshell)
scan_agent() {
  exec "$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$SID" --key "$KEYS/data-$SID.key" \
    --volume "$IMG" --tracker scan --state-dir "$SSTATE" --once --json "$@"
}
# wait_cursor_past STATE_DIR BYTES: until the agent's checkpoint cursor passed BYTES (15 s at most).
wait_cursor_past() {
  for _ in $(seq 1 300); do
    # the checkpoint's cursor: the 4th-last u64 of full-point (replicator/full_progress.cc, WriteHeader)
    [[ -f $1/full-point ]] && [[ $(od -An -tu8 -j $(( $(stat -c %s "$1/full-point") - 32 )) -N8 "$1/full-point" | tr -d ' ') -gt $2 ]] && return 0
    sleep 0.05
  done
}
# json_field FILE KEY: the integer KEY holds in an agent's --json summary.
json_field() { grep -o "\"$2\": [0-9]*" "$1" | grep -o '[0-9]*$'; }
# scan_killed_past BYTES NAME: a scan agent (40 MB/s) killed -9 once its checkpoint's cursor passed
# BYTES; its output in $WORK/NAME.out and .log.
scan_killed_past() {
  local pid
  scan_agent --bandwidth-limit 40M >"$WORK/$2.out" 2>"$WORK/$2.log" &
  pid=$!
  PIDS+=("$pid")
  wait_cursor_past "$SSTATE" "$1"
  kill -9 "$pid" 2>/dev/null || fail "the scan agent ($2) ended before its kill: $(tail -n 2 "$WORK/$2.log")"
  wait "$pid" 2>/dev/null || true
  ! grep -q "internal error" "$WORK/$2.log" || fail "the scan agent ($2) failed a check: $(grep "internal error" "$WORK/$2.log")"
}
# resumed_full AGENT NAME DATA_MIB: runs AGENT (one of the functions above) to its end; it must
# resume the full point and read less than 150 MiB of the image's DATA_MIB. Sets READ.
resumed_full() {
  ("$1") >"$WORK/$2.out" 2>"$WORK/$2.log" || fail "try $2 failed: $(tail -n 3 "$WORK/$2.log")"
  grep -q '"kind": "resumed full"' "$WORK/$2.out" || { cat "$WORK/$2.out"; fail "try $2 did not resume"; }
  READ=$(json_field "$WORK/$2.out" bytes_read)
  echo "try $2 resumed and read $((READ >> 20)) MiB of the $3 MiB of data"
  [[ $READ -lt $((150 << 20)) ]] || fail "try $2 read $((READ >> 20)) MiB: it started over"
}
scan_killed_past $((100 << 20)) scan0
kept 5
resumed_full scan_agent scan1 192
restores_as "$SID" "$WORK/out-scan" "$IMG" "the resumed scan point"

# A rescan (with the scan tracker, every point after the first) resumes the same way. Since the
# point: 128 MiB of new data at 0 (over the 96 MiB there and the hole after it), 32 MiB at 300 MiB.
head -c 128M /dev/urandom | dd of="$IMG" bs=1M conv=notrunc status=none
head -c 32M /dev/urandom | dd of="$IMG" bs=1M seek=300 conv=notrunc status=none
scan_killed_past $((140 << 20)) rescan0
grep -q "rescan against point 1" "$WORK/rescan0.log" || fail "the second point was not a rescan: $(grep -m2 'sending point' "$WORK/rescan0.log")"
kept 6
(scan_agent) >"$WORK/rescan1.out" 2>"$WORK/rescan1.log" || fail "the rescan's resume failed: $(tail -n 3 "$WORK/rescan1.log")"
grep -q '"kind": "resumed rescan"' "$WORK/rescan1.out" || { cat "$WORK/rescan1.out"; grep -m3 "checkpoint\|point 2" "$WORK/rescan1.log"; fail "the rescan was not resumed"; }
read2=$(json_field "$WORK/rescan1.out" bytes_read)
shipped2=$(json_field "$WORK/rescan1.out" bytes_shipped)
echo "rescan killed past 140 MiB and resumed: the resumed try read $((read2 >> 20)) MiB of 196 MiB of data, shipped $((shipped2 >> 20)) MiB of the 160 MiB changed"
[[ $read2 -lt $((100 << 20)) ]] || fail "the resumed rescan read $((read2 >> 20)) MiB: it started over"
[[ $shipped2 -lt $((100 << 20)) ]] || fail "the resumed rescan shipped $((shipped2 >> 20)) MiB: it sent the first try's blocks again"
restores_as "$SID" "$WORK/out-rescan" "$IMG" "the resumed rescan"
recover verify --store "$STORE" --server-id "$SID" --key "$KEYS/data-$SID.key" >"$WORK/verify-scan.out" 2>&1 ||
  { cat "$WORK/verify-scan.out"; fail "verify --key of the scanned server is not clean"; }

# The staging is killed (-9) while the agent sends: no session end tells it to keep the point, but
# a large open point's PENDING file grows with every group commit (docs/FORMAT.md, PENDING), so
# the restarted staging offers it and the agent's next try resumes. A new server, the image as it
# now is: 196 MiB of data in 512 MiB.
KID=stagingkill$$
make_keys "$KID"
KSTATE=$WORK/state-kill
kill_agent() {
  exec "$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$KID" --key "$KEYS/data-$KID.key" \
    --volume "$IMG" --tracker scan --state-dir "$KSTATE" --once --json "$@"
}
kill_agent --bandwidth-limit 40M >"$WORK/kill0.out" 2>"$WORK/kill0.log" &
kpid=$!
PIDS+=("$kpid")
wait_cursor_past "$KSTATE" $((140 << 20))
grep -q "server '$KID': point 1 is kept live" "$WORK/staging.log" || fail "the staging did not keep the open point live: $(grep -c . "$WORK/staging.log") log lines"
kill9_staging
! wait "$kpid" || fail "the agent's try succeeded although its staging was killed"
grep -q "run again" "$WORK/kill0.log" || fail "the agent did not say its point was not acknowledged: $(tail -n 2 "$WORK/kill0.log")"
STAGING_LISTEN_PORT=$STAGING_PORT start_staging
found=$(grep "server '$KID': interrupted point 1 found with" "$WORK/staging.log") ||
  fail "the staging restarted after kill -9 does not offer the open point: $(grep "$KID" "$WORK/staging.log" | tail -n 3)"
echo "staging killed -9 mid-point, restarted: ${found#*blockrep-staging: }"
resumed_full kill_agent kill1 196
restores_as "$KID" "$WORK/out-kill" "$IMG" "the point resumed after the staging's kill"
recover verify --store "$STORE" --server-id "$KID" --key "$KEYS/data-$KID.key" >"$WORK/verify-kill.out" 2>&1 ||
  { cat "$WORK/verify-kill.out"; fail "verify --key after the staging's kill is not clean"; }
pass "full sync killed 3 times (seed $SEED) and resumed: read ${ratio}x the volume, restores identical, verifies clean; rescans killed and resumed: eBPF read ${rratio}x the volume, scan shipped $((shipped2 >> 20)) of 160 MiB; after a staging kill -9 mid-point the next try read $((READ >> 20)) of 196 MiB"
