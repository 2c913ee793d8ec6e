#!/usr/bin/env bash
# A low --bandwidth-limit does not lengthen freezes: with --bandwidth-limit 1M and fio writing
# 4 KiB blocks at 2 MB/s (faster than the limit) into an 8 MiB file on the frozen ext4, each point
# reads its last blocks into memory while the filesystem is frozen and sends them after the thaw.
# Freeze p99 (status.json) must stay below 200 ms; the points restore to filesystems e2fsck finds
# clean without a journal replay.
source "$(dirname "$0")/lib.sh"
need_root "freeze_limit"
need_fio

tracked_ext4 frz 128M
mount_dev
start_staging
# One full sync first, unlimited, so that the limited run starts from an incremental chain.
agent "$ID" --volume "$dev" --tracker ebpf >/dev/null 2>"$WORK/agent.log" || fail "first sync: $(tail -n 2 "$WORK/agent.log")"
seconds=${FREEZE_LIMIT_SECONDS:-20}
fio --name=rand --filename="$WORK/mnt/fio.dat" --size=8M --rw=randwrite --bs=4k --direct=1 --ioengine=psync \
  --runtime="$seconds" --time_based --rate=2m --output="$WORK/fio.out" >/dev/null 2>&1 &
FPID=$!
PIDS+=("$FPID")
STATE=$WORK/agent-state
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --volume "$dev" --tracker ebpf --state-dir "$STATE" --point-interval 2s --bandwidth-limit 1M 2>>"$WORK/agent.log" &
APID=$!
PIDS+=("$APID")
wait "$FPID" || fail "fio failed: $(tail -n 3 "$WORK/fio.out")"
stop_agent
freezes=$(status_field freezes)
p50=$(status_field freeze_ms_p50)
p99=$(status_field freeze_ms_p99)
shipped=$(status_field wire_bytes)
echo "freezes: $freezes, p50 $p50 ms, p99 $p99 ms, with --bandwidth-limit 1M under 2 MB/s of writes ($((shipped / 1048576)) MiB sent)"
[[ ${freezes:-0} -ge 3 ]] || fail "only ${freezes:-0} freezes in ${seconds} s"
((p99 < 200)) || fail "freeze p99 $p99 ms with --bandwidth-limit 1M (target < 200 ms)"
list=$(recover list --store "$STORE" --server-id "$ID" --json)
consistent=$(grep -c '"consistent": true' <<<"$list" || true)
((consistent >= 3)) || fail "only $consistent consistent points: $list"
p=$(grep -o '"id": [0-9]*' <<<"$list" | tail -n 1 | awk '{print $2}')
recover restore --store "$STORE" --server-id "$ID" --key "$KEYS/data-$ID.key" --point "$p" --output "$WORK/out" >/dev/null ||
  fail "point $p does not restore"
e2fsck -fn "$WORK/out/vol-0.img" >"$WORK/fsck.out" 2>&1 || fail "point $p: e2fsck: $(tail -n 3 "$WORK/fsck.out")"
pass "freezes stay short with a bandwidth limit below the write rate"
