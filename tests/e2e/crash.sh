#!/usr/bin/env bash
# SIGKILL of the staging at seeded random moments during ingest: after every restart, each point
# the agent saw acknowledged restores byte-identical, and every listed point is whole.
# Reproduce a failure with BLOCKREP_SEED=<seed printed below>.
# BLOCKREP_CRASH_KEEP_LAST=N runs the staging with --keep-last N, so kills also land in the expiry
# and compaction after each commit: then the acknowledged points among the newest N must be listed.
# With E2E_STORE=s3 (lib.sh) the store is a bucket; the staging keeps one --frontend-name across
# its restarts, as a service would, so it takes its own lease back instead of waiting it out.
source "$(dirname "$0")/lib.sh"
KEEP_LAST=${BLOCKREP_CRASH_KEEP_LAST:-0}
STAGING_ARGS=()
if ((KEEP_LAST > 0)); then
  STAGING_RETENTION=none
  STAGING_ARGS+=(--keep-last "$KEEP_LAST")
fi
[[ ${#STORE_S3[@]} -eq 0 ]] || STAGING_ARGS+=(--frontend-name e2e-crash)

SEED=${BLOCKREP_SEED:-$(( $(date +%s%N) % 1000000 ))}
ITERATIONS=${BLOCKREP_CRASH_ITERATIONS:-20}
echo "crash test: seed $SEED, $ITERATIONS iterations${STAGING_ARGS[*]:+, staging ${STAGING_ARGS[*]}}"
RANDOM=$SEED
trap 'echo "crash test failed with seed $SEED" >&2' ERR

make_keys crash1
head -c 12M /dev/urandom >"$WORK/vol.img"
truncate -s 16M "$WORK/vol.img"
declare -A expected  # point id -> sha256 of the volume that point was taken from
declare -A acked     # point id -> 1 when the agent saw it acknowledged
verified_total=0
interrupted=0

# Calibrate the kill window to this build's speed (sanitizers are several times slower): one
# uninterrupted sync, timed; kills then land anywhere from connect to well after the commit.
# The loop's syncs are rescans (a chain exists, image files have no eBPF tracker), so the
# second sync, not the first full one, is what gets timed.
start_staging "${STAGING_ARGS[@]}"
agent crash1 --volume "$WORK/vol.img" >"$WORK/agent.out" 2>/dev/null || fail "first sync failed"
expected[1]=$(sha "$WORK/vol.img")
acked[1]=1
# Timed on a fresh start, as in the loop (a staging on a bucket first takes the server's lease).
stop_staging
start_staging "${STAGING_ARGS[@]}"
dd if=/dev/urandom of="$WORK/vol.img" bs=64K count=16 seek=$((RANDOM % 240)) conv=notrunc status=none
t0=$(date +%s%N)
agent crash1 --volume "$WORK/vol.img" >"$WORK/agent.out" 2>/dev/null || fail "calibration sync failed"
sync_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
# When the staging let the agent in (its log's timestamp): half the kills fall after it, in the
# data and the commit, not in the connection (a staging on a bucket takes the lease meanwhile).
in_at=$(grep "server 'crash1' connected from" "$WORK/staging.log" | tail -n 1 | cut -d' ' -f1)
connect_ms=$(( ($(date -d "$in_at" +%s%N) - t0) / 1000000 ))
((connect_ms >= 0 && connect_ms < sync_ms)) || connect_ms=0
expected[2]=$(sha "$WORK/vol.img")
acked[2]=1
stop_staging
window_ms=$(( sync_ms * 3 / 2 + 20 ))
echo "one sync takes ${sync_ms} ms (connected after ${connect_ms} ms); kills fall in 0..${window_ms} ms, every other one in ${connect_ms}..${sync_ms} ms"

for i in $(seq 1 "$ITERATIONS"); do
  start_staging "${STAGING_ARGS[@]}"
  # Change 1 MiB somewhere, so each point differs.
  dd if=/dev/urandom of="$WORK/vol.img" bs=64K count=16 seek=$((RANDOM % 240)) conv=notrunc status=none
  sum=$(sha "$WORK/vol.img")
  agent crash1 --volume "$WORK/vol.img" --compress "$([[ $((RANDOM % 2)) -eq 0 ]] && echo lz4 || echo none)" \
    >"$WORK/agent.out" 2>"$WORK/agent.err" &
  agent_pid=$!
  # Odd iterations anywhere in the window (connect, data, commit, after the acknowledgement); even
  # ones between the connection and the calibrated sync's end, so that kills land in the data and
  # the commit: once all 10 fell after the acknowledgement (each about even odds) and tested nothing.
  if ((i % 2)); then delay_ms=$((RANDOM % window_ms)); else delay_ms=$((connect_ms + RANDOM % (sync_ms - connect_ms))); fi
  sleep "$(awk -v ms="$delay_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
  kill9_staging
  rc=0
  wait "$agent_pid" || rc=$?
  id=$(grep -o 'sending point [0-9]*' "$WORK/agent.err" | awk '{print $3}' || true)
  if [[ -n $id ]]; then expected[$id]=$sum; fi
  if [[ $rc -eq 0 ]]; then
    id=$(awk '/acknowledged/ {print $2}' "$WORK/agent.out")
    acked[$id]=1
    outcome="acknowledged point $id"
  else
    outcome="agent failed (exit $rc): $(tail -n1 "$WORK/agent.err")"
    interrupted=$((interrupted + 1))
  fi
  echo "iteration $i: kill after ${delay_ms} ms: $outcome"

  # Restart: the store must open, and every point it lists must be whole.
  start_staging "${STAGING_ARGS[@]}"
  listed=$(recover list --store "$STORE" --server-id crash1 --json 2>/dev/null | grep -o '"id": [0-9]*' | awk '{print $2}' || true)
  # Retention keeps the newest KEEP_LAST points: an acknowledged point older than the oldest listed
  # may have gone, none newer (the newest acknowledged point is always kept).
  oldest_kept=$(sort -n <<<"$listed" | head -n 1)
  for a in "${!acked[@]}"; do
    ((KEEP_LAST > 0 && a < ${oldest_kept:-0})) && continue
    grep -qx "$a" <<<"$listed" || fail "acknowledged point $a is missing after restart (seed $SEED)"
  done
  if ((KEEP_LAST > 0)); then
    n_listed=$(grep -c . <<<"$listed" || true)
    want=$((${#acked[@]} < KEEP_LAST ? ${#acked[@]} : KEEP_LAST))
    ((n_listed >= want)) || fail "$n_listed points listed with --keep-last $KEEP_LAST, ${#acked[@]} acknowledged (seed $SEED)"
  fi
  for p in $listed; do
    [[ -n ${expected[$p]:-} ]] || fail "point $p listed but never sent (seed $SEED)"
    rm -rf "$WORK/out"
    recover restore --store "$STORE" --server-id crash1 --key "$KEYS/data-crash1.key" --point "$p" \
      --output "$WORK/out" >/dev/null || fail "point $p does not restore (seed $SEED)"
    [[ $(sha "$WORK/out/vol-0.img") == "${expected[$p]}" ]] || fail "point $p restores different data (seed $SEED)"
    verified_total=$((verified_total + 1))
  done
  stop_staging
done
echo "acknowledged points: ${#acked[@]}; syncs interrupted: $interrupted; restores verified: $verified_total"
[[ $interrupted -ge 1 ]] || fail "no kill landed before an acknowledgement; nothing was tested (seed $SEED)"
pass "crash: $ITERATIONS kills, no acknowledged point lost, no partial point listed (seed $SEED)"
