#!/usr/bin/env bash
# The agent is killed (-9) and restarted 3 times during a live workload (file churn + fio 4 KiB
# random writes with verify). Around each kill the workload is paused and exactly 4 MiB are
# written while the agent is down, so "bytes changed" is known: the restarted agent must read at
# most 1.1 x 4 MiB + 1 % of the volume. The final point restores identical and e2fsck-clean.
source "$(dirname "$0")/lib.sh"
need_root "kill_loop"
need_fio

ID=killloop$$
make_keys "$ID"
# Only live children are killed: a PID already reaped may belong to another test by now.
stop_all() {
  local p
  for p in ${WPID:-} ${FPID:-} ${APID:-}; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  WPID= FPID= APID=
}
trap 'rc=$?; stop_all; cleanup "$rc"' EXIT  # keep the test's status: stop_all's would hide a failure
PINS+=("$ID")
VOL_MIB=256
ext4_loop ${VOL_MIB}M
dev=$DEV
mount_dev
fio --name=w --filename="$WORK/mnt/fio.dat" --size=32M --create_only=1 >/dev/null
start_staging
STATE=$WORK/state
start_agent() {
  "$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
    --volume "$dev" --tracker ebpf --state-dir "$STATE" --point-interval 4s 2>>"$WORK/agent.log" &
  APID=$!
}
field() { grep "\"$1\":" "$STATE/status.json" 2>/dev/null | sed 's/.*: *\([0-9]*\).*/\1/'; }
# Caught up: nothing queued or unacknowledged, seen three times over a second (status is
# rewritten every 250 ms, polls run every 100 ms, so a stale idle moment cannot pass).
drained() {
  local i good=0
  for i in $(seq 1 300); do
    if [[ $(field backlog_bytes) == 0 && $(field lag_ms) == 0 ]]; then
      good=$((good + 1))
      [[ $good -ge 3 ]] && return 0
    else
      good=0
    fi
    sleep 0.35
  done
  fail "the agent did not catch up"
}
wait_continuous() {
  local i
  for i in $(seq 1 300); do
    grep -q '"state": "CONTINUOUS"' "$STATE/status.json" 2>/dev/null && return 0
    kill -0 "$APID" 2>/dev/null || fail "agent died: $(tail -n 3 "$WORK/agent.log")"
    sleep 0.1
  done
  fail "the agent never reached CONTINUOUS"
}
start_agent
wait_continuous

# Stopped by a flag file, not a signal: a killed loop would leave its current child (head, sync,
# sleep) running inside the mount, and the unmount below would find it busy.
( cd "$WORK/mnt"; for r in $(seq 1 100000); do [[ -e $WORK/stop-churn ]] && break; head -c $((RANDOM * 4)) /dev/urandom >"churn-$((r % 5))"; echo "$r" >>log.txt; rm -f "churn-$(((r + 2) % 5))"; sync -f log.txt; sleep 0.05; done ) &
WPID=$!
# --thread: one process, so SIGSTOP/SIGCONT and kill reach the writer itself.
fio --thread --name=w --filename="$WORK/mnt/fio.dat" --size=32M --rw=randwrite --bs=4k --direct=1 --ioengine=psync \
  --rate=4m --runtime=600 --time_based --verify=crc32c --verify_state_save=0 --do_verify=1 --output="$WORK/fio.out" >/dev/null 2>&1 &
FPID=$!

allow_mib=$(awk -v v="$VOL_MIB" 'BEGIN { printf "%.2f", 1.1 * 4 + 0.01 * v }')
for k in 1 2 3; do
  sleep 3
  kill -STOP "$WPID" "$FPID"
  sync
  drained
  kill -9 "$APID"
  wait "$APID" 2>/dev/null || true
  APID=
  dd if=/dev/urandom of="$WORK/mnt/down-$k.bin" bs=1M count=4 conv=fsync status=none
  sync
  rm -f "$STATE/status.json"  # what follows must come from the restarted agent
  start_agent
  wait_continuous
  drained
  sent=$(field wire_bytes)
  sent_mib=$(awk -v s="$sent" 'BEGIN { printf "%.2f", s / 1048576 }')
  echo "kill $k: restarted agent sent ${sent_mib} MiB for a 4 MiB change (allowed ${allow_mib})"
  awk -v s="$sent_mib" -v a="$allow_mib" 'BEGIN { exit !(s <= a) }' || fail "kill $k: sent ${sent_mib} MiB, allowed ${allow_mib}"
  kill -CONT "$WPID" "$FPID"
done

sleep 2
touch "$WORK/stop-churn"
wait "$WPID" || fail "the file churn loop failed"
WPID=
kill -INT "$FPID" 2>/dev/null || true
wait "$FPID" 2>/dev/null || true
FPID=
grep -q "verify: bad" "$WORK/fio.out" && fail "fio verify failed on the source"
kill -TERM "$APID"
wait "$APID" || fail "agent did not exit 0 on SIGTERM"
APID=
umount "$WORK/mnt"
MOUNTS=()
agent "$ID" --volume "$dev" --tracker ebpf >/dev/null 2>&1 || fail "final point failed"
recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point latest \
  --output "$WORK/out" >/dev/null
if ! cmp -s "$dev" "$WORK/out/vol-0.img"; then
  cmp -l "$dev" "$WORK/out/vol-0.img" | awk '{print int(($1 - 1) / 4096)}' | uniq -c | head -n 8 >&2
  b=$(cmp "$dev" "$WORK/out/vol-0.img" | awk '{print int(($5 - 1) / 4096)}')
  debugfs -R "icheck $b" "$dev" >&2 2>/dev/null
  ino=$(debugfs -R "icheck $b" "$dev" 2>/dev/null | awk 'NR == 2 {print $2}')
  [[ -n $ino ]] && debugfs -R "ncheck $ino" "$dev" >&2 2>/dev/null
  fail "the final point differs from the device"
fi
e2fsck -fn "$WORK/out/vol-0.img" >/dev/null 2>&1 || fail "e2fsck finds the restored filesystem damaged"
stop_staging
pass "kill_loop: 3 kills under load, each restart within bounds; final image identical"
