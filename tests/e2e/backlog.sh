#!/usr/bin/env bash
# Status that tells the truth under backlog: fio writes 4 KiB random blocks at 12 MB/s onto a raw
# device that a continuous agent ships through a 4 MB/s limit (RPO target 20 s). Each second the
# test reads status.json and the device's own write counter (/sys/block/loopN/stat):
#   - the reported write rate is within 30 % of the device's in every sample after fio's first 3 s;
#   - while the lag is past the target the state is BACKLOG, never CONTINUOUS;
#   - the "writes outrun shipping" warning comes before the breach, and the time it forecasts is
#     within 30 % of the time the lag really took to pass the target;
#   - the initial sync was point 1 within 2 s of its sweep's end.
source "$(dirname "$0")/lib.sh"
need_root "backlog"
need_fio
if [[ -n ${BLOCKREP_SANITIZED:-} ]]; then
  # It measures rates and times against the device's own; the sanitizer build's memory checks of
  # the same code paths come from e2e_continuous, e2e_bandwidth and e2e_freeze_limit.
  echo "SKIP: backlog measures times (the normal build runs it); this is the sanitizer build" >&2
  exit 77
fi

tracked_raw backlog 2G
SYSSTAT=/sys/block/${dev#/dev/}/stat
start_staging
STATE=$WORK/agent-state
"$BIN/blockrep-agent" --staging "127.0.0.1:$STAGING_PORT" --server-id "$ID" --key "$KEYS/data-$ID.key" \
  --volume "$dev" --tracker ebpf --state-dir "$STATE" --bandwidth-limit 4M --rpo-target 20s 2>"$WORK/agent.log" &
APID=$!
PIDS+=("$APID")
for _ in $(seq 1 300); do
  grep -q "point 1 acknowledged" "$WORK/agent.log" && break
  kill -0 "$APID" 2>/dev/null || fail "the agent died: $(tail -n 3 "$WORK/agent.log")"
  sleep 0.1
done
grep -q "point 1 acknowledged" "$WORK/agent.log" || fail "no point 1 within 30 s"
epoch() { date -d "$(echo "$1" | sed 's/T/ /; s/Z$//') UTC" +%s.%N; }
logtime() { epoch "$(grep -m1 "$1" "$WORK/agent.log" | awk '{print $1}')"; }
first_gap=$(awk -v a="$(logtime "point 1: reading -> final take")" -v b="$(logtime "point 1 acknowledged")" \
  'BEGIN { printf "%.3f", b - a }')
echo "point 1 (initial sync) acknowledged ${first_gap} s after its sweep ended"
awk -v g="$first_gap" 'BEGIN { exit !(g <= 2) }' || fail "the first point came ${first_gap} s after the sweep"

RUN_S=${BACKLOG_SECONDS:-36}
fio --name=w --filename="$dev" --size=2G --rw=randwrite --bs=4k --direct=1 --ioengine=psync --rate=12m \
  --runtime="$RUN_S" --time_based --output="$WORK/fio.out" >/dev/null 2>&1 &
FIO=$!
PIDS+=("$FIO")
start=$(date +%s.%N)
sectors() { awk '{print $7}' "$SYSSTAT"; }
prev_s=$(sectors)
prev_t=$start
: >"$WORK/samples"
while kill -0 "$FIO" 2>/dev/null; do
  sleep 1
  now=$(date +%s.%N)
  s=$(sectors)
  j=$(cat "$STATE/status.json")
  w=$(echo "$j" | grep -o '"write_bytes_per_s": [0-9]*' | grep -o '[0-9]*$')
  lag=$(echo "$j" | grep -o '"lag_ms": [0-9]*' | grep -o '[0-9]*$')
  state=$(echo "$j" | grep -o '"state": "[A-Z_]*"' | cut -d'"' -f4)
  backlog=$(echo "$j" | grep -o '"backlog_bytes": [0-9]*' | grep -o '[0-9]*$')
  # t (since fio start), the device's rate over the last second, the reported rate, lag, state, backlog
  awk -v t="$now" -v t0="$start" -v pt="$prev_t" -v s="$s" -v ps="$prev_s" -v w="$w" -v lag="$lag" -v st="$state" -v b="$backlog" \
    'BEGIN { printf "%.1f %.0f %s %s %s %s\n", t - t0, (s - ps) * 512 / (t - pt), w, lag, st, b }' >>"$WORK/samples"
  prev_s=$s
  prev_t=$now
done
wait "$FIO" || true
echo "t(s)  device B/s  reported B/s  lag ms  state  backlog B"
cat "$WORK/samples"

# 1. The write rate, after fio's first 3 s (and while fio still wrote the whole second).
awk -v run="$RUN_S" '$1 >= 3 && $1 <= run - 0.5 && $2 > 0 {
       d = $3 - $2; if (d < 0) d = -d
       if (d > 0.3 * $2) { printf "sample at %s s: reported %s B/s, device %s B/s\n", $1, $3, $2; bad = 1 } }
     END { exit bad }' "$WORK/samples" || fail "the reported write rate strayed over 30 % from the device's"
# 2. BACKLOG whenever the lag is past the target.
awk '$4 > 20000 && $5 != "BACKLOG" { printf "sample at %s s: lag %s ms, state %s\n", $1, $4, $5; bad = 1 } END { exit bad }' \
  "$WORK/samples" || fail "lag past the 20 s target but the state is not BACKLOG"
breach=$(awk '$4 > 20000 { print $1; exit }' "$WORK/samples")
[[ -n $breach ]] || fail "the lag never passed the 20 s target (the scenario did not happen)"
# 3. The warning: before the breach, forecasting it within 30 %.
line=$(grep -m1 "outrun shipping" "$WORK/agent.log") || fail "no 'outrun shipping' warning"
echo "$line"
forecast=$(echo "$line" | grep -o 'in about [0-9]* s' | grep -o '[0-9]*')
warned=$(awk -v a="$(epoch "$(echo "$line" | awk '{print $1}')")" -v t0="$start" 'BEGIN { printf "%.1f", a - t0 }')
actual=$(awk -v b="$breach" -v w="$warned" 'BEGIN { printf "%.1f", b - w }')
echo "warned at ${warned} s forecasting the breach in ${forecast} s; the lag passed 20 s at ${breach} s (${actual} s later)"
awk -v a="$actual" 'BEGIN { exit !(a > 0) }' || fail "the warning came after the breach"
awk -v a="$actual" -v f="$forecast" 'BEGIN { d = f - a; if (d < 0) d = -d; exit !(d <= 0.3 * a) }' ||
  fail "forecast ${forecast} s vs actual ${actual} s: more than 30 % off"
kill -9 "$APID"
pass "under backlog: write rate within 30 %, BACKLOG while lag > target, warning ${actual} s ahead (forecast ${forecast} s)"
