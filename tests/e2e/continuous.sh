#!/usr/bin/env bash
# Continuous replication with eBPF tracking under a live filesystem workload (creates, overwrites,
# appends, deletes, fsyncs, fio 4 KiB random writes with verify), a staging outage in the middle
# (DISCONNECTED, reconnect with backoff, convergence), SIGUSR1 and SIGTERM. The final point restores
# byte-identical to the device and passes e2fsck; no acknowledged point is lost.
source "$(dirname "$0")/lib.sh"
need_root "continuous"
need_fio

tracked_ext4 cont 256M
mount_dev
start_staging

STATE=$WORK/agent-state
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --volume "$dev" --tracker ebpf --state-dir "$STATE" --point-interval 2s 2>"$WORK/agent.log" &
APID=$!

status_field() { "$BIN/blockrep-agent" status --state-dir "$STATE" --json 2>/dev/null | grep "\"$1\"" | sed 's/.*: *"\{0,1\}\([^",]*\)"\{0,1\},\{0,1\}/\1/'; }
wait_state() {
  local want=$1 i
  for i in $(seq 1 200); do
    [[ $(status_field state) == "$want" ]] && return 0
    kill -0 "$APID" 2>/dev/null || fail "agent died: $(tail -n 3 "$WORK/agent.log")"
    sleep 0.1
  done
  fail "agent never reached $want (state $(status_field state))"
}
wait_state CONTINUOUS

# Filesystem workload in the background for the whole test (CONT_SECONDS, 30 by default).
seconds=${CONT_SECONDS:-30}
cp -r /usr/include/linux "$WORK/mnt/src"
churn_files "$seconds" &
WPID=$!
fio_randwrite "$seconds" &
FPID=$!

sleep 2
kill -USR1 "$APID"
sleep 1
stop_staging
outage_start=$SECONDS
wait_state DISCONNECTED
sleep $((10 - (SECONDS - outage_start)))  # the staging stays down 10 s

# The agent dials the old port: restart the staging on it.
"$BIN/blockrep-staging" --listen "127.0.0.1:$STAGING_PORT" --store "$STORE" --tls-cert "$KEYS/staging.crt" \
  --tls-key "$KEYS/staging.key" --tls-ca "$KEYS/ca.crt" --retention all >>"$WORK/staging.log" 2>&1 &
STAGING_PID=$!
echo "staging was down $((SECONDS - outage_start)) s"
wait_state CONTINUOUS
wait "$WPID" || fail "filesystem workload failed"
wait "$FPID" || fail "fio failed: $(tail -n 5 "$WORK/fio.out")"
grep -q "verify" "$WORK/fio.out" || true

kill -TERM "$APID"
wait "$APID" || fail "agent did not exit 0 on SIGTERM: $(tail -n 3 "$WORK/agent.log")"
umount "$WORK/mnt"
MOUNTS=()

# The final point: whatever happened since the agent stopped, then compare.
agent "$ID" --volume "$dev" --tracker ebpf >"$WORK/final.out" 2>/dev/null || fail "final --once failed"
grep -q "kind        incremental" "$WORK/final.out" || fail "final point was not incremental: $(cat "$WORK/final.out")"
recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point latest \
  --output "$WORK/out" >/dev/null
cmp "$dev" "$WORK/out/vol-0.img" || { cmp -l "$dev" "$WORK/out/vol-0.img" | awk "{print int((\$1-1)/4096)}" | uniq -c | head -20; b=$(cmp "$dev" "$WORK/out/vol-0.img" | awk "{print int((\$5-1)/4096)}"); debugfs -R "icheck $b" "$dev"; fail "the final point differs from the device"; }
e2fsck -fn "$WORK/out/vol-0.img" >/dev/null 2>&1 || fail "e2fsck finds the restored filesystem damaged"

points=$(recover list --store "$STORE" --server-id "$ID" --json | grep -c '"id"')
# Every point the agent saw acknowledged is in the chain, the outage notwithstanding.
listed=$(recover list --store "$STORE" --server-id "$ID" --json | grep -o '"id": [0-9]*' | awk '{print $2}')
for p in $(grep -o 'point [0-9]* acknowledged' "$WORK/agent.log" | awk '{print $2}'); do
  grep -qx "$p" <<<"$listed" || fail "acknowledged point $p is missing from the chain"
done
grep -q "SIGUSR1: taking a recovery point now" "$WORK/agent.log" || fail "SIGUSR1 was not honoured"
grep -q "reconnecting in" "$WORK/agent.log" || fail "no reconnect was logged"
grep -q "state CONTINUOUS -> DISCONNECTED" "$WORK/agent.log" || fail "DISCONNECTED was not logged"
echo "points: $points; lag p50/p99 at exit: $(status_field lag_ms_p50)/$(status_field lag_ms_p99) ms"
stop_staging
pass "continuous: $points points, outage survived, final image identical and e2fsck-clean"
