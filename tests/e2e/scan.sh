#!/usr/bin/env bash
# Continuous replication with --tracker scan (no eBPF): every point reads the whole volume and
# ships only blocks whose keyed fingerprint differs from the last point's. A filesystem
# workload (creates, overwrites, appends, deletes, fsyncs) and fio 4 KiB random writes with verify
# run for SCAN_SECONDS (30 by default); the final point restores byte-identical and e2fsck-clean.
source "$(dirname "$0")/lib.sh"
need_root "scan"
need_fio

ID=scan$$
make_keys "$ID"
ext4_loop 256M
dev=$DEV
mount_dev
cp -r /usr/include/linux "$WORK/mnt/src"
start_staging
agent "$ID" --volume "$dev" --tracker scan >"$WORK/first.out" 2>&1 || fail "first point: $(tail -n 1 "$WORK/first.out")"

STATE=$WORK/agent-state
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --volume "$dev" --tracker scan --state-dir "$STATE" --point-interval 2s 2>"$WORK/agent.log" &
APID=$!

seconds=${SCAN_SECONDS:-30}
churn_files "$seconds" &
WPID=$!
fio_randwrite "$seconds" &
FPID=$!
wait "$WPID" || fail "filesystem workload failed"
wait "$FPID" || fail "fio failed: $(tail -n 5 "$WORK/fio.out")"
kill -0 "$APID" 2>/dev/null || fail "agent died: $(tail -n 3 "$WORK/agent.log")"

kill -TERM "$APID"
wait "$APID" || fail "agent did not exit 0 on SIGTERM: $(tail -n 3 "$WORK/agent.log")"
umount "$WORK/mnt"
MOUNTS=()
points=$(grep -c 'acknowledged (durable' "$WORK/agent.log")
wire=$(grep -o '"wire_bytes": [0-9]*' "$STATE/status.json" | grep -o '[0-9]*$')
grep -q "rescan against point" "$WORK/agent.log" || fail "the agent never rescanned: $(head -n 3 "$WORK/agent.log")"
# Its first point compares with the staging's fingerprints of the last point (the state directory
# is new); every later one with those it kept of the point it had just sent. The final point below,
# a new process, compares with the state directory's (vouched for by the last point's seal).
grep -q "rescanning against point [0-9]*'s fingerprints as this process sent it" "$WORK/agent.log" ||
  fail "no rescan compared with the fingerprints the agent kept: $(grep -m 3 -i fingerprint "$WORK/agent.log")"

agent "$ID" --volume "$dev" --tracker scan --state-dir "$STATE" >"$WORK/final.out" 2>&1 ||
  fail "final point: $(tail -n 1 "$WORK/final.out")"
grep -q "fingerprints in $STATE match its seal: rescanning against them" "$WORK/final.out" ||
  fail "the final point did not use the state directory's fingerprints: $(grep -m 3 -i fingerprint "$WORK/final.out")"
recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point latest \
  --output "$WORK/out" >/dev/null
if ! cmp -s "$dev" "$WORK/out/vol-0.img"; then
  cmp -l "$dev" "$WORK/out/vol-0.img" | awk '{print int(($1 - 1) / 4096)}' | uniq -c | head >&2
  fail "the final point differs from the device"
fi
e2fsck -fn "$WORK/out/vol-0.img" >/dev/null 2>&1 || fail "e2fsck finds the restored filesystem damaged"
wire_mib=$(awk -v w="$wire" 'BEGIN { printf "%.1f", w / 1048576 }')
pass "scan: ${seconds} s of workload, $points rescan points sent $wire_mib MiB in all (each read 256 MiB);" \
  "final image identical and e2fsck-clean"
