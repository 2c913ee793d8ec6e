#!/usr/bin/env bash
# The whole disaster-recovery cycle on loop devices with ext4 and a live workload, moving only
# what differs at every step: a continuous agent -> "disaster" (agent killed) -> drill --json of
# the latest point over --staging passes while another server's agent keeps replicating ->
# failover: restore --staging onto a second loop device (the DR host) -> new files written there
# -> an agent with the same server-id on the DR device ships about what changed (a rescan) ->
# failback: restore --delta --staging onto the original device, which then equals the DR device
# byte for byte, with the bytes written to it (block layer counters) about the differing bytes ->
# the original agent resumes and ships almost nothing. Each step prints bytes and seconds.
source "$(dirname "$0")/lib.sh"
need_root cycle
[[ -e /dev/fuse ]] || { echo "SKIP: cycle needs /dev/fuse (drill)" >&2; exit 77; }

ID=cyc$$
OTHER=oth$$
make_keys "$ID" "$OTHER"
PINS+=("$ID")
SIZE_MB=256
VOL=$((SIZE_MB * 1048576))
KEY=$KEYS/data-$ID.key
now() { date +%s.%N; }
secs() { printf '%.2f' "$(echo "$(now) - $1" | bc)"; }
# sectors_written DEV: the block layer's count of 512-byte sectors written to DEV.
sectors_written() { awk '{print $7}' "/sys/block/$(basename "$1")/stat"; }
# diff_bytes A B: bytes in the 4 KiB blocks where A and B differ.
diff_bytes() { { cmp -l "$1" "$2" 2>/dev/null || true; } | awk '{b = int(($1 - 1) / 4096); if (b != last) {n++; last = b}} END {print n * 4096}'; }
# shipped LOG: bytes the agent put on the wire in its last summary ("on the wire N MiB").
shipped_bytes() { awk '/on the wire/ {v = $4} END {printf "%d", v * 1048576}' "$1"; }

# The production server: ext4 on a loop device, files being written.
ext4_loop ${SIZE_MB}M
DEV_A=$DEV
mount_dev
cp -r /usr/include/linux "$WORK/mnt/src"
start_staging
STATE_A=$WORK/state-a
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEY" --volume "$DEV_A" \
  --tracker ebpf --state-dir "$STATE_A" --point-interval 2s 2>"$WORK/agent-a.log" &
AGENT_A=$!
PIDS+=("$AGENT_A")
# Another server replicating all along (an image file, continuous).
head -c 64M /dev/urandom >"$WORK/other.img"
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$OTHER" --key "$KEYS/data-$OTHER.key" \
  --volume "$WORK/other.img" --state-dir "$WORK/state-o" --point-interval 1s 2>"$WORK/agent-o.log" &
AGENT_O=$!
PIDS+=("$AGENT_O")
churn_files 8 0.05 &
WPID=$!
wait "$WPID"
sync
sleep 3   # a point after the last write
points() { recover list --store "$STORE" --server-id "$1" --json | grep -c '"id"'; }
[[ $(points "$ID") -ge 2 ]] || fail "the agent made no points: $(tail -n 3 "$WORK/agent-a.log")"

# Disaster: the production agent dies (kill -9); the server is "gone".
kill -9 "$AGENT_A"
wait "$AGENT_A" 2>/dev/null || true
# The agent's freeze watchdog (a child that outlives it to thaw) may hold the mount a moment more.
for _ in $(seq 1 100); do umount "$WORK/mnt" 2>/dev/null && break; sleep 0.1; done
if mountpoint -q "$WORK/mnt"; then
  ls -l /proc/[0-9]*/cwd /proc/[0-9]*/fd 2>/dev/null | grep -F "$WORK/mnt" >&2 || true
  fail "$WORK/mnt still busy 10 s after the agent was killed"
fi
MOUNTS=()
last=$(recover list --store "$STORE" --server-id "$ID" --json | grep -o '"id": [0-9]*' | tail -n 1 | grep -o '[0-9]*$')
echo "ok: disaster after point $last ($(points "$ID") points)"

# Drill of the latest point over the network while the other server keeps replicating.
other_before=$(points "$OTHER")
t=$(now)
"$BIN/blockrep-recover" drill --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEY" \
  --scratch "$WORK" --json >"$WORK/drill.json" 2>"$WORK/drill.err" || fail "drill failed: $(cat "$WORK/drill.json" "$WORK/drill.err")"
grep -q '"result": "pass"' "$WORK/drill.json" && grep -q '"check": "clean"' "$WORK/drill.json" || fail "drill did not pass"
sleep 2
other_after=$(points "$OTHER")
((other_after > other_before)) || fail "server $OTHER made no point during the drill ($other_before -> $other_after)"
echo "ok: drill --staging passed in $(secs "$t") s ($(grep -o '"rpo_seconds": [0-9.]*, "rto_seconds": [0-9.]*' "$WORK/drill.json")); $OTHER went on: $other_before -> $other_after points"
grep -q '"result": "pass"' "$STORE/servers/$ID/drills.jsonl" || fail "the staging did not append the drill report"

# Failover: restore the latest point over the network onto the DR host's device.
truncate -s ${SIZE_MB}M "$WORK/dr.img"
loop_attach "$WORK/dr.img"
DEV_DR=$LOOP
t=$(now)
recover restore --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEY" --point latest \
  --target 0="$DEV_DR" >"$WORK/failover.out" || fail "failover restore failed"
echo "ok: failover restore --staging of point $last onto $DEV_DR in $(secs "$t") s: $(head -n 1 "$WORK/failover.out")"
e2fsck -fn "$DEV_DR" >/dev/null 2>&1 || fail "the DR copy is not a clean ext4"
dd if="$DEV_DR" of="$WORK/point.img" bs=4M status=none   # the point as restored, for the diffs below

# Run in the DR region: new files, edits, deletions.
mkdir -p "$WORK/dr"
mount "$DEV_DR" "$WORK/dr"
MOUNTS+=("$WORK/dr")
head -c 6M /dev/urandom >"$WORK/dr/new-in-dr.bin"
cp -r /usr/include/asm-generic "$WORK/dr/"
rm -rf "$WORK/dr/src/netfilter"
echo "written in DR" >>"$WORK/dr/src/fs.h"
umount "$WORK/dr"
MOUNTS=()
changed=$(diff_bytes "$WORK/point.img" "$DEV_DR")
# Reverse replication: the DR host's agent under the same server-id, no state of its own. (It
# scans: an eBPF agent of the same server-id would replace the original host's pinned tracker,
# which a real DR host, another machine, never shares.)
t=$(now)
agent "$ID" --volume "$DEV_DR" --state-dir "$WORK/state-dr" --tracker scan >"$WORK/agent-dr.out" 2>>"$WORK/agent-dr.log" ||
  fail "DR agent failed: $(tail -n 3 "$WORK/agent-dr.log")"
sent=$(shipped_bytes "$WORK/agent-dr.out")
limit=$((changed * 12 / 10 + VOL / 100))
grep -q "rescan against point $last" "$WORK/agent-dr.out" || fail "the DR agent did not rescan: $(grep kind "$WORK/agent-dr.out")"
((sent <= limit)) || fail "DR agent shipped $sent bytes for $changed changed (limit $limit)"
echo "ok: DR agent (rescan) shipped $sent bytes for $changed bytes changed in DR (limit $limit) in $(secs "$t") s"

# Failback: only what differs goes back onto the original (repaired) device. The original host's
# pinned tracker (it outlived the agent) and the agent's state say which blocks can differ: only
# those are read.
differ=$(diff_bytes "$DEV_A" "$DEV_DR")
before=$(sectors_written "$DEV_A")
read_before=$(awk '{print $3}' "/sys/block/$(basename "$DEV_A")/stat")
t=$(now)
recover restore --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEY" --point latest --delta \
  --agent-state "$STATE_A" --target 0="$DEV_A" >"$WORK/failback.out" || fail "failback failed: $(cat "$WORK/failback.out")"
fb_secs=$(secs "$t")
written=$((($(sectors_written "$DEV_A") - before) * 512))
read_bytes=$((($(awk '{print $3}' "/sys/block/$(basename "$DEV_A")/stat") - read_before) * 512))
grep -q -- "--agent-state: 1 of 1 volume(s) by the tracker" "$WORK/failback.out" ||
  fail "the failback did not use the original host's tracker: $(cat "$WORK/failback.out")"
cmp "$DEV_A" "$DEV_DR" || fail "after failback the original device differs from the DR device"
limit=$((differ * 12 / 10 + VOL / 100))
((written <= limit)) || fail "failback wrote $written bytes for $differ differing (limit $limit)"
((read_bytes <= VOL / 4)) || fail "the tracked failback read $read_bytes bytes of the device (limit $((VOL / 4)))"
echo "ok: failback restore --delta --agent-state --staging in $fb_secs s: $differ bytes differed, block layer read $read_bytes and wrote $written (limit $limit); $(head -n 1 "$WORK/failback.out")"
# The same failback without the tracker reads the whole device, writes nothing more, and agrees.
recover restore --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEY" --point latest --delta \
  --target 0="$DEV_A" >"$WORK/failback2.out" || fail "whole-device failback failed: $(cat "$WORK/failback2.out")"
grep -q "target bytes read $VOL, .*bytes written 0 " "$WORK/failback2.out" ||
  fail "the whole-device delta after the tracked one: $(head -n 1 "$WORK/failback2.out")"
echo "ok: the whole-device delta then read $VOL bytes and wrote 0"

# The original agent resumes on the original device with its own state and pinned tracker.
t=$(now)
agent "$ID" --volume "$DEV_A" --state-dir "$STATE_A" --tracker ebpf >"$WORK/agent-a2.out" 2>>"$WORK/agent-a.log" ||
  fail "original agent failed: $(tail -n 3 "$WORK/agent-a.log")"
sent=$(shipped_bytes "$WORK/agent-a2.out")
((sent <= VOL / 100)) || fail "the original agent shipped $sent bytes after failback (limit $((VOL / 100)))"
echo "ok: original agent resumed ($(grep -o 'kind.*' "$WORK/agent-a2.out" | head -n 1)), shipped $sent bytes (limit $((VOL / 100))) in $(secs "$t") s"
recover restore --store "$STORE" --server-id "$ID" --key "$KEY" --point latest --output "$WORK/final" >/dev/null
cmp "$WORK/final/vol-0.img" "$DEV_A" || fail "the latest point is not the original device"
kill -TERM "$AGENT_O"
wait "$AGENT_O" || fail "the other agent did not exit 0"
pass "cycle: replicate -> drill -> fail over -> run in DR -> fail back -> replicate, latest point == original device"
