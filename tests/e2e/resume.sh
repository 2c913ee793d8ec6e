#!/usr/bin/env bash
# Resume: records the staging acknowledged are not sent again. A continuous agent ships 40 MiB
# into an open point and is killed (-9); 2 MiB more are written; the restarted agent resumes the
# interrupted point and sends only what is not yet durable. Then the same across a staging
# restart: 40 MiB acknowledged inside an open point, the staging stopped and started again; the
# agent resumes the point the staging saved. Then a point whose acknowledgement the agent never
# saw: the restarted agent reads only what changed after it. Each result restores byte-identical.
source "$(dirname "$0")/lib.sh"
need_root "resume"

ID=resume$$
make_keys "$ID"
PINS+=("$ID")
ext4_loop 256M
dev=$DEV
start_staging
agent "$ID" --volume "$dev" --tracker ebpf >/dev/null 2>&1 || fail "initial sync failed"

STATE=$WORK/state
field() { grep "\"$1\":" "$STATE/status.json" 2>/dev/null | sed 's/.*: *\([0-9]*\).*/\1/'; }
# continuous_agent LOG: a continuous agent that takes no point by itself (sets APID).
continuous_agent() {
  "$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
    --volume "$dev" --tracker ebpf --state-dir "$STATE" --point-interval 1h 2>"$1" &
  APID=$!
  rm -f "$STATE/status.json"  # what is read below comes from this agent
}
# write_caught_up MIB FILE WHEN: writes MIB random MiB to the mounted FILE and waits until all of
# it is acknowledged (durable on the staging) inside the open point.
write_caught_up() {
  head -c "$1M" /dev/urandom >"$WORK/mnt/$2"
  sync
  for _ in $(seq 1 300); do
    w=$(field wire_bytes); b=$(field backlog_bytes)
    [[ -n $w && $w -gt $(($1 * 1048576)) && $b == 0 ]] && break
    sleep 0.1
  done
  [[ $(field backlog_bytes) == 0 ]] || fail "the agent never caught up $3"
}
mount_dev
continuous_agent "$WORK/agent.log"
write_caught_up 40 big.bin "before the kill"
kill -9 "$APID"
wait "$APID" 2>/dev/null || true
head -c 2M /dev/urandom >"$WORK/mnt/small.bin"
umount "$WORK/mnt"
MOUNTS=()
for _ in $(seq 1 50); do grep -q "kept for the agent to resume" "$WORK/staging.log" && break; sleep 0.1; done
grep -q "kept for the agent to resume" "$WORK/staging.log" || fail "the staging did not keep the interrupted point"

agent "$ID" --volume "$dev" --tracker ebpf >"$WORK/agent.out" 2>&1 || fail "resume run failed: $(cat "$WORK/agent.out")"
grep -q "kind        resumed incremental" "$WORK/agent.out" || { cat "$WORK/agent.out"; fail "the point was not resumed"; }
read_mib=$(awk '/^  read/ {print $2}' "$WORK/agent.out")
reread_mib=$(awk '/^  re-read/ {print $2}' "$WORK/agent.out")
echo "after the kill: read ${read_mib} MiB (40 MiB already durable, 2 MiB new); re-read ${reread_mib:-0} MiB to seal the kept records"
# A new process did not read the kept records: it reads their blocks again (sending nothing) so
# its seal covers them (docs/PROTOCOL.md, Seals).
awk -v r="${reread_mib:-0}" 'BEGIN { exit !(r >= 40) }' || fail "re-read ${reread_mib:-0} MiB: the seal cannot cover the 40 MiB kept"
awk -v r="$read_mib" 'BEGIN { exit !(r < 12) }' || fail "read ${read_mib} MiB: acknowledged data was sent again"
recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point latest \
  --output "$WORK/out" >/dev/null
cmp "$dev" "$WORK/out/vol-0.img" || fail "the resumed point differs from the device"
e2fsck -fn "$WORK/out/vol-0.img" >/dev/null 2>&1 || fail "e2fsck finds the restored filesystem damaged"

# Across a staging restart.
mount_dev
continuous_agent "$WORK/agent2.log"
PIDS+=("$APID")
write_caught_up 40 big2.bin "before the staging restart"
before=$(field wire_bytes)
stop_staging
grep -q "kept for the agent to resume" "$WORK/staging.log" || fail "the stopping staging did not keep the open point"
"$BIN/blockrep-staging" --listen "127.0.0.1:$STAGING_PORT" --store "$STORE" --tls-cert "$KEYS/staging.crt" \
  --tls-key "$KEYS/staging.key" --tls-ca "$KEYS/ca.crt" --retention all >>"$WORK/staging.log" 2>&1 &
STAGING_PID=$!
for _ in $(seq 1 300); do grep -q "resuming point" "$WORK/agent2.log" && break; sleep 0.1; done
grep -q "resuming point" "$WORK/agent2.log" || fail "the agent did not resume after the staging restart: $(tail -n 3 "$WORK/agent2.log")"
grep -q "found with" "$WORK/staging.log" || fail "the restarted staging did not offer the saved point"
for _ in $(seq 1 300); do [[ $(field backlog_bytes) == 0 && $(field state) != 0 ]] && break; sleep 0.1; done
sleep 0.5
after=$(field wire_bytes)
resent_mib=$(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.2f", (a - b) / 1048576 }')
echo "after the staging restart: ${resent_mib} MiB sent again (40 MiB were acknowledged before it)"
awk -v r="$resent_mib" 'BEGIN { exit !(r < 4) }' || fail "sent ${resent_mib} MiB after the staging restart: acknowledged data was sent again"
kill -TERM "$APID"
wait "$APID" || fail "agent did not exit 0 on SIGTERM: $(tail -n 3 "$WORK/agent2.log")"
umount "$WORK/mnt"
MOUNTS=()
agent "$ID" --volume "$dev" --tracker ebpf >/dev/null 2>&1 || fail "final point failed"
rm -rf "$WORK/out"
recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point latest \
  --output "$WORK/out" >/dev/null
cmp "$dev" "$WORK/out/vol-0.img" || fail "the point resumed after a staging restart differs from the device"

# A lost acknowledgement: the agent is killed after END_POINT, before POINT_ACK (the staging is
# stopped meanwhile, then commits what its socket holds). The restarted agent finds the chain one
# point past its tracker; that point holds every block in flight, so only the new 2 MiB are read.
mount_dev
continuous_agent "$WORK/agent3.log"
PIDS+=("$APID")
write_caught_up 24 big3.bin "before the lost acknowledgement"
umount "$WORK/mnt"  # no freeze, no writes: the point ends at once
MOUNTS=()
kill -STOP "$STAGING_PID"
kill -USR1 "$APID"
for _ in $(seq 1 100); do grep -q -- "-> ended" "$WORK/agent3.log" && break; sleep 0.05; done
grep -q -- "-> ended" "$WORK/agent3.log" || { kill -CONT "$STAGING_PID"; fail "the agent did not end the point: $(tail -n 3 "$WORK/agent3.log")"; }
# END_POINT is in the staging's socket once the agent's send queue is empty and what waits in
# the stopped staging's receive queue has stopped growing (a fixed sleep lost this race once,
# under the sanitizers on a loaded CI machine).
socket_settled "$STAGING_PORT" ||
  { kill -CONT "$STAGING_PID"; fail "the agent's END_POINT never reached the staging's socket (send queue $SOCKET_TX, receive queue $SOCKET_RX bytes)"; }
kill -0 "$APID" 2>/dev/null || { kill -CONT "$STAGING_PID"; fail "the agent exited before the kill: $(tail -n 5 "$WORK/agent3.log")"; }
kill -9 "$APID"
wait "$APID" 2>/dev/null || true
kill -CONT "$STAGING_PID"
ended=$(grep -o "point [0-9]*: [a-z ]* -> ended" "$WORK/agent3.log" | tail -n 1 | awk '{print $2}' | tr -d :) || true
[[ -n $ended ]] || fail "no point ended in the agent's log: $(tail -n 5 "$WORK/agent3.log")"
for _ in $(seq 1 300); do grep -q "point $ended committed" "$WORK/staging.log" && break; sleep 0.05; done
grep -q "point $ended committed" "$WORK/staging.log" || fail "the staging did not commit point $ended after its END_POINT"
grep -q "point $ended .*acknowledged" "$WORK/agent3.log" && fail "the agent saw point $ended acknowledged: the test missed its moment"
mount_dev
head -c 2M /dev/urandom >"$WORK/mnt/small3.bin"
umount "$WORK/mnt"
MOUNTS=()
agent "$ID" --volume "$dev" --tracker ebpf --state-dir "$STATE" >"$WORK/agent3.out" 2>&1 || fail "run after the lost acknowledgement failed: $(cat "$WORK/agent3.out")"
grep -q "its acknowledgement came after the last process ended" "$WORK/agent3.out" || { cat "$WORK/agent3.out"; fail "the agent did not adopt point $ended"; }
lost_mib=$(awk '/^  read/ {print $2}' "$WORK/agent3.out")
echo "after a lost acknowledgement of point $ended (24 MiB): read ${lost_mib} MiB for a 2 MiB change"
awk -v r="$lost_mib" 'BEGIN { exit !(r < 6) }' || fail "read ${lost_mib} MiB: the acknowledged point's blocks were read again"
rm -rf "$WORK/out"
recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point latest \
  --output "$WORK/out" >/dev/null
cmp "$dev" "$WORK/out/vol-0.img" || fail "the point after a lost acknowledgement differs from the device"
stop_staging
pass "resume: ${read_mib} MiB read and sent after the agent kill instead of 42 (${reread_mib} MiB re-read to seal); ${resent_mib} MiB sent again" \
  "after a staging restart instead of 40; ${lost_mib} MiB read after a lost acknowledgement instead of 26; restores identical"
