#!/usr/bin/env bash
# Consistent points: with eBPF tracking and every volume mounted, each point ends with the
# filesystem frozen (FIFREEZE) while the last dirty blocks are read, and is listed consistent.
# Under a write workload, every point restores to an image that e2fsck finds clean without
# replaying anything and that holds exactly the files the test saw at that point: the pre-hook
# stops the workload (SIGSTOP) and records a sha256 of every file, the post-hook resumes it.
# Freeze times are reported. The same volume unmounted gives points that are stored but listed
# not consistent.
source "$(dirname "$0")/lib.sh"
need_root "consistent"
need_fio

tracked_ext4 cons 256M
mount_dev
cp -r /usr/include/linux "$WORK/mnt/src"
start_staging

mkdir -p "$WORK/sums"
cat >"$WORK/pre.sh" <<EOF
#!/bin/bash
# Stops the workload top-down (a stopped parent forks no more), then records what each file holds.
echo "pre \$BLOCKREP_POINT_ID" >>"$WORK/hooks.log"
stop_tree() { kill -STOP "\$1" 2>/dev/null || return 0; local c; for c in \$(pgrep -P "\$1"); do stop_tree "\$c"; done; }
for p in \$(cat "$WORK/workload.pids" 2>/dev/null); do stop_tree "\$p"; done
cd "$WORK/mnt" && find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0r sha256sum >"$WORK/sums/\$BLOCKREP_POINT_ID"
EOF
cat >"$WORK/post.sh" <<EOF
#!/bin/bash
echo "post \$BLOCKREP_POINT_ID" >>"$WORK/hooks.log"
cont_tree() { kill -CONT "\$1" 2>/dev/null || return 0; local c; for c in \$(pgrep -P "\$1"); do cont_tree "\$c"; done; }
for p in \$(cat "$WORK/workload.pids" 2>/dev/null); do cont_tree "\$p"; done
EOF
printf '#!/bin/sh\nexit 3\n' >"$WORK/failing.sh"
chmod +x "$WORK/pre.sh" "$WORK/post.sh" "$WORK/failing.sh"
seconds=${CONSISTENT_SECONDS:-22}
churn_files "$seconds" 0.05 &
WPID=$!
fio_randwrite "$seconds" &
FPID=$!
echo "$WPID $FPID" >"$WORK/workload.pids"
STATE=$WORK/agent-state
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --volume "$dev" --tracker ebpf --state-dir "$STATE" --point-interval 1s \
  --pre-hook "$WORK/pre.sh" --post-hook "$WORK/post.sh" 2>"$WORK/agent.log" &
APID=$!
PIDS+=("$APID")
wait "$WPID" || fail "filesystem workload failed"
wait "$FPID" || fail "fio failed"
stop_agent
freezes=$(status_field freezes)
p50=$(status_field freeze_ms_p50)
p99=$(status_field freeze_ms_p99)
[[ ${freezes:-0} -ge 5 ]] || fail "only ${freezes:-0} freezes: $(grep -m1 'sending point' "$WORK/agent.log")"

list=$(recover list --store "$STORE" --server-id "$ID" --json)
total=$(grep -c '"id"' <<<"$list")
consistent=$(grep -c '"consistent": true' <<<"$list")
[[ $consistent -eq $total ]] || fail "$consistent of $total points are consistent"
[[ $total -ge 12 ]] || fail "only $total points in ${seconds} s"
# The check below means something only if the points differ from one another.
distinct=$(for f in "$WORK"/sums/*; do sha256sum <"$f"; done | sort -u | wc -l)
[[ $distinct -ge $((total * 2 / 3)) ]] || fail "only $distinct of $total points hold distinct file sets"
for p in $(grep -o '"id": [0-9]*' <<<"$list" | awk '{print $2}'); do
  rm -rf "$WORK/out"
  recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point "$p" \
    --output "$WORK/out" >/dev/null || fail "point $p does not restore"
  # -n: nothing may need fixing, not even a journal to replay: the freeze flushed it.
  e2fsck -fn "$WORK/out/vol-0.img" >"$WORK/fsck.out" 2>&1 || fail "point $p: e2fsck: $(tail -n 3 "$WORK/fsck.out")"
  # Every file as the pre-hook saw it when the workload was stopped for this point.
  [[ -s $WORK/sums/$p ]] || fail "point $p: the pre-hook recorded nothing"
  loop_attach "$WORK/out/vol-0.img"
  mkdir -p "$WORK/check"
  MOUNTS+=("$WORK/check")
  mount -o ro,noload "$LOOP" "$WORK/check"
  (cd "$WORK/check" && find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0r sha256sum) >"$WORK/got.sums"
  umount "$WORK/check"
  unset 'MOUNTS[-1]'
  losetup -d "$LOOP"
  unset 'LOOPS[-1]'
  diff -q "$WORK/sums/$p" "$WORK/got.sums" >/dev/null ||
    fail "point $p holds other files than the test saw at that point: $(diff "$WORK/sums/$p" "$WORK/got.sums" | head -n 4)"
  files=$(wc -l <"$WORK/got.sums")
done
echo "$total points ($distinct distinct file sets), all consistent, e2fsck-clean and holding the expected files ($files files in the last); $freezes freezes, p50 ${p50} ms, p99 ${p99} ms"
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
pass "consistent: $total frozen points e2fsck-clean with the expected content (freeze p50 ${p50} ms, p99 ${p99} ms), hooks around each" \
  "freeze; failing pre-hook and unmounted device give points flagged not consistent"
