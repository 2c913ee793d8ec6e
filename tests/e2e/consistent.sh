#!/usr/bin/env bash
# Consistent points: with eBPF tracking and every volume mounted, each point ends with the
# filesystem frozen (FIFREEZE) while the last dirty blocks are read, and is listed consistent.
# Under a write workload, every point restores to an image that e2fsck finds clean without
# replaying anything; freeze times are reported. The same volume unmounted gives points that are
# stored but listed not consistent.
source "$(dirname "$0")/lib.sh"
need_root "consistent"
command -v fio >/dev/null || { echo "SKIP: fio is not installed (scripts/setup.sh installs it)" >&2; exit 77; }

ID=cons$$
make_keys "$ID"
PINS+=("$ID")
ext4_loop 256M
dev=$DEV
mount_dev
cp -r /usr/include/linux "$WORK/mnt/src"
start_staging

printf '#!/bin/sh\necho "pre $BLOCKREP_POINT_ID" >>%s\n' "$WORK/hooks.log" >"$WORK/pre.sh"
printf '#!/bin/sh\necho "post $BLOCKREP_POINT_ID" >>%s\n' "$WORK/hooks.log" >"$WORK/post.sh"
printf '#!/bin/sh\nexit 3\n' >"$WORK/failing.sh"
chmod +x "$WORK/pre.sh" "$WORK/post.sh" "$WORK/failing.sh"
STATE=$WORK/agent-state
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --volume "$dev" --tracker ebpf --state-dir "$STATE" --point-interval 1s \
  --pre-hook "$WORK/pre.sh" --post-hook "$WORK/post.sh" 2>"$WORK/agent.log" &
APID=$!
PIDS+=("$APID")
seconds=${CONSISTENT_SECONDS:-12}
churn_files "$seconds" 0.05 &
WPID=$!
fio_randwrite "$seconds" &
FPID=$!
wait "$WPID" || fail "filesystem workload failed"
wait "$FPID" || fail "fio failed"
kill -TERM "$APID"
wait "$APID" || fail "agent did not exit 0 on SIGTERM: $(tail -n 3 "$WORK/agent.log")"
field() { grep -o "\"$1\": [0-9]*" "$STATE/status.json" | grep -o '[0-9]*$'; }
freezes=$(field freezes)
p50=$(field freeze_ms_p50)
p99=$(field freeze_ms_p99)
[[ ${freezes:-0} -ge 5 ]] || fail "only ${freezes:-0} freezes: $(grep -m1 'sending point' "$WORK/agent.log")"

list=$(recover list --store "$STORE" --server-id "$ID" --json)
total=$(grep -c '"id"' <<<"$list")
consistent=$(grep -c '"consistent": true' <<<"$list")
[[ $consistent -eq $total ]] || fail "$consistent of $total points are consistent"
for p in $(grep -o '"id": [0-9]*' <<<"$list" | awk '{print $2}'); do
  rm -rf "$WORK/out"
  recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point "$p" \
    --output "$WORK/out" >/dev/null || fail "point $p does not restore"
  # -n: nothing may need fixing, not even a journal to replay: the freeze flushed it.
  e2fsck -fn "$WORK/out/vol-0.img" >"$WORK/fsck.out" 2>&1 || fail "point $p: e2fsck: $(tail -n 3 "$WORK/fsck.out")"
done
echo "$total points, all consistent and e2fsck-clean; $freezes freezes, p50 ${p50} ms, p99 ${p99} ms"
pre=$(grep -c '^pre ' "$WORK/hooks.log")
post=$(grep -c '^post ' "$WORK/hooks.log")
[[ $pre -eq $freezes && $post -eq $freezes ]] || fail "hooks ran $pre/$post times for $freezes freezes"

# A failing pre-hook: the point is stored, but not consistent.
agent "$ID" --volume "$dev" --tracker ebpf --pre-hook "$WORK/failing.sh" >"$WORK/hookfail.out" 2>&1 ||
  fail "point with a failing pre-hook: $(tail -n 1 "$WORK/hookfail.out")"
grep -q "pre-hook .* failed (exit 3)" "$WORK/hookfail.out" || fail "the failing pre-hook was not reported"
recover list --store "$STORE" --server-id "$ID" --json | tail -n 2 | grep -q '"consistent": false' ||
  fail "a point whose pre-hook failed is listed consistent"

# Unmounted, the same device gives a point that is stored but not consistent.
umount "$WORK/mnt"
MOUNTS=()
agent "$ID" --volume "$dev" --tracker ebpf >"$WORK/raw.out" 2>&1 || fail "raw point: $(tail -n 1 "$WORK/raw.out")"
recover list --store "$STORE" --server-id "$ID" --json | tail -n 2 | grep -q '"consistent": false' ||
  fail "a point of an unmounted device is listed consistent"
pass "consistent: $total frozen points e2fsck-clean (freeze p50 ${p50} ms, p99 ${p99} ms), hooks around each" \
  "freeze; failing pre-hook and unmounted device give points flagged not consistent"
