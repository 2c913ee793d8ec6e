#!/usr/bin/env bash
# eBPF tracking with --once: the first run is full, later runs ship only what the filesystem
# changed (also across agent restarts and an agent killed mid-point); a removed pin ("reboot")
# makes the next run a rescan: it reads everything but ships only blocks whose keyed fingerprint
# differs from the staging's last point. Every point restores byte-identical and e2fsck-clean.
source "$(dirname "$0")/lib.sh"
need_root "ebpf_incremental"

tracked_ext4 ebpf 256M
mount_dev
cp -r /usr/include/linux "$WORK/mnt/include"
head -c 40M /dev/urandom >"$WORK/mnt/big.bin"
umount "$WORK/mnt"

start_staging
declare -A point_sum
# run_agent EXPECT [agent args...]: runs --once, checks the kind (full|incremental), remembers
# the point's hash.
run_agent() {
  local expect=$1
  shift
  local sum
  sum=$(sha "$dev")
  agent "$ID" --volume "$dev" --tracker ebpf "$@" >"$WORK/agent.out" 2>"$WORK/agent.err" ||
    fail "agent failed: $(cat "$WORK/agent.err")"
  local id kind read_mib
  id=$(awk '/acknowledged/ {print $2}' "$WORK/agent.out")
  kind=$(awk '/^  kind/ {print $2}' "$WORK/agent.out")
  read_mib=$(awk '/^  read/ {print $2}' "$WORK/agent.out")
  [[ $kind =~ ^($expect)$ ]] || { cat "$WORK/agent.out"; fail "point $id: expected a $expect point, got $kind"; }
  point_sum[$id]=$sum
  LAST_READ_MIB=$read_mib
  echo "point $id: $kind, read $read_mib MiB"
}
# change DESCRIPTION: mounts, runs the rest of the arguments in the mount, unmounts.
change() {
  mount "$dev" "$WORK/mnt"
  (cd "$WORK/mnt" && eval "$1")
  umount "$WORK/mnt"
}

run_agent full
change 'head -c 8M /dev/urandom > new.bin; for f in include/*.h; do echo "// edited" >> "$f"; done; rm -f big.bin'
run_agent incremental
awk -v r="$LAST_READ_MIB" 'BEGIN { exit !(r < 40) }' || fail "incremental read $LAST_READ_MIB MiB for an 8 MiB change"

# Agent restarts between runs reuse the pin: still incremental.
change 'head -c 4M /dev/urandom > more.bin; sync'
run_agent incremental

# With a state directory, the next process takes the base's block fingerprints from it (checked
# against the base's seal) instead of fetching them all from the staging; a damaged copy is
# refused and the staging's is fetched.
change 'head -c 2M /dev/urandom > cached1.bin'
run_agent incremental --state-dir "$WORK/state"
grep -q "fingerprints on the staging match its seal" "$WORK/agent.err" || fail "no state yet, but the base did not come from the staging: $(cat "$WORK/agent.err")"
[[ -s $WORK/state/fingerprints ]] || fail "no fingerprint cache in the state directory after a point"
change 'head -c 2M /dev/urandom > cached2.bin'
run_agent incremental --state-dir "$WORK/state"
grep -q "fingerprints in $WORK/state match its seal" "$WORK/agent.err" || fail "the cached fingerprints were not used: $(cat "$WORK/agent.err")"
flip_byte "$WORK/state/fingerprints" 300
change 'head -c 2M /dev/urandom > cached3.bin'
run_agent incremental --state-dir "$WORK/state"
grep -q "fingerprint cache not used: .*damaged" "$WORK/agent.err" || fail "a damaged cache was not named: $(cat "$WORK/agent.err")"
grep -q "fingerprints on the staging match its seal" "$WORK/agent.err" || fail "after a damaged cache the base was not fetched: $(cat "$WORK/agent.err")"
echo "fingerprint cache: used when whole, refused when damaged (base fetched from the staging)"

# An agent killed mid-point: the bits it took come back, nothing is lost.
change 'head -c 120M /dev/urandom > killed.bin'
before_kill=$(sha "$dev")
# The binary itself, not the agent() helper: kill -9 must reach the agent, not a subshell.
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --once --volume "$dev" --tracker ebpf >/dev/null 2>"$WORK/killed.err" &
apid=$!
for _ in $(seq 1 200); do grep -q "sending point" "$WORK/killed.err" && break; sleep 0.01; done
kill -9 "$apid" 2>/dev/null || true
wait "$apid" 2>/dev/null || true
killed_id=$(grep -o 'sending point [0-9]*' "$WORK/killed.err" | awk '{print $3}')
[[ -n $killed_id ]] || fail "the agent never started its point"
point_sum[$killed_id]=$before_kill  # verified below if the staging committed it after all
# Resumed if the staging kept durable records of the killed point, else a fresh incremental.
run_agent "resumed|incremental"
awk -v r="$LAST_READ_MIB" 'BEGIN { exit !(r >= 120) }' || fail "after the kill only $LAST_READ_MIB MiB were read: taken bits were lost"

# "Reboot": the pin is gone; the next run rescans: reads everything, ships only what differs.
rm -rf "/sys/fs/bpf/blockrep/$ID"
change 'head -c 4M /dev/urandom > after-reboot.bin; echo after-reboot > reboot.txt'
run_agent incremental
grep -q "rescan against point" "$WORK/agent.out" || { cat "$WORK/agent.out"; fail "the run after a lost pin was not a rescan"; }
awk -v r="$LAST_READ_MIB" 'BEGIN { exit !(r >= 255) }' || fail "the rescan read only $LAST_READ_MIB MiB of 256"
wire_mib=$(awk '/^  on the wire/ {print $4}' "$WORK/agent.out")
allow_mib=$(awk 'BEGIN { printf "%.2f", 1.1 * 4 + 0.01 * 256 }')
echo "rescan after a lost pin: read $LAST_READ_MIB MiB, sent $wire_mib MiB for a 4 MiB change (allowed $allow_mib)"
awk -v s="$wire_mib" -v a="$allow_mib" 'BEGIN { exit !(s <= a) }' || fail "the rescan sent $wire_mib MiB, allowed $allow_mib"

listed=$(recover list --store "$STORE" --server-id "$ID" --json | grep -o '"id": [0-9]*' | awk '{print $2}')
for p in "${!point_sum[@]}"; do
  grep -qx "$p" <<<"$listed" || continue  # only the killed point may be absent
  rm -rf "$WORK/out"
  recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point "$p" \
    --output "$WORK/out" >/dev/null
  [[ $(sha "$WORK/out/vol-0.img") == "${point_sum[$p]}" ]] || fail "point $p restores different data"
  e2fsck -fn "$WORK/out/vol-0.img" >/dev/null 2>&1 || fail "point $p: e2fsck finds damage"
done
stop_staging
pass "ebpf_incremental: ${#point_sum[@]} points, each byte-identical and e2fsck-clean"
